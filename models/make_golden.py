#!/usr/bin/env python3
"""Make the small committed test models and their golden vectors with the real FunCodec code.

    python models/make_golden.py --out tests/data

For each variant: build the model with FunCodec's own builder (random weights, seeded), export it with
our exporter, run FunCodec (Speech2Token, batch size 1) on clips of awkward lengths, and run FunCodec's
own command line over a wav.scp to get its codecs.txt. Needs torch + funcodec (see models/README.md);
the Rust tests only read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import funcodec_ref as ref  # noqa: E402
from fcexport.export import export_model  # noqa: E402

VARIANTS = {
    # ds640 / GroupNorm: the released architecture, channels shrunk.
    "tiny_gn_ds640": dict(seed=1, overrides={
        "encoder_conf": {"n_filters": 4, "dimension": 32},
        "decoder_conf": {"n_filters": 4},
        "quantizer_conf": {"num_quantizers": 8},
    }, bit_widths=[16000, 1000]),
    # ds320 / weight_norm taken from the class defaults (norm and ratios omitted from the config).
    "tiny_wn_ds320": dict(seed=2, overrides={
        "encoder_conf": {"n_filters": 2, "dimension": 16, "norm": None, "ratios": None, "causal": None},
        "decoder_conf": {"n_filters": 2, "norm": None, "ratios": None, "causal": None},
        "quantizer_conf": {"num_quantizers": 4, "encoder_hop_length": 320},
    }, bit_widths=[16000, 1000]),
    # The project's streaming architecture (models/codec_train): causal, weight norm, zero padding,
    # identity residual shortcuts, no utterance RMS. Also exported with step graphs only
    # (`model_steps`), the way the default model ships.
    "tiny_causal_ds640": dict(seed=3, overrides={
        "encoder_conf": {"n_filters": 4, "dimension": 16, "norm": "weight_norm", "causal": True,
                         "pad_mode": "constant", "true_skip": True},
        "decoder_conf": {"n_filters": 4, "norm": "weight_norm", "causal": True, "pad_mode": "constant",
                         "true_skip": True},
        "quantizer_conf": {"num_quantizers": 8},
        "model_conf": {"audio_normalize": False},
    }, bit_widths=[16000, 1000], steps_only_copy=True),
}

LENGTHS = [1, 3, 80, 641, 1921, 8000, 16123, 161234]


def speechlike(n: int, seed: int) -> np.ndarray:
    """Voiced/unvoiced bursts with a gliding pitch; deterministic; level varies across the clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t + seed) ** 2
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.6)
    x = 0.15 * env * voiced + 0.03 * noise
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def decision_margins(s2t, wav: np.ndarray, codes: np.ndarray) -> list[list[float]]:
    """Relative gap between the best and second-best codeword distance at every (quantizer, frame),
    following FunCodec's own picks. A gap near float32 resolution is a tie no float32
    implementation can be expected to break the same way; the Rust test reports such ties."""
    import torch

    with torch.no_grad():
        emb, _ = s2t.model._encode_frame(torch.from_numpy(wav)[None, None])
    r = emb[0].double().numpy()  # (T, D)
    embed = s2t.model.quantizer.rq.model.embed.double().numpy()
    out = []
    for q in range(codes.shape[0]):
        d = ((r[:, None, :] - embed[q][None]) ** 2).sum(-1)
        two = np.sort(d, axis=1)[:, :2]
        out.append(((two[:, 1] - two[:, 0]) / np.maximum(two[:, 0], 1e-12)).round(9).tolist())
        r = r - embed[q][codes[q]]
    return out


def clean_overrides(cfg: dict) -> dict:
    """Drop keys set to None so FunCodec's class defaults apply."""
    for section in ("encoder_conf", "decoder_conf"):
        cfg[section] = {k: v for k, v in cfg[section].items() if v is not None}
    return cfg


def make_variant(name: str, spec: dict, out_root: str) -> None:
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "clips"))
    os.makedirs(os.path.join(out, "ref"))
    work = tempfile.mkdtemp(prefix=f"golden_{name}_")
    cfg = clean_overrides(ref.recipe_config(spec["overrides"]))
    config_path, ckpt = ref.build_random_checkpoint(cfg, work, spec["seed"])
    shutil.copy(config_path, os.path.join(out, "config.yaml"))
    manifest = export_model(config_path, ckpt, os.path.join(out, "model"), model_id=name)
    if spec.get("steps_only_copy"):
        export_model(config_path, ckpt, os.path.join(out, "model_steps"), model_id=name + "_steps",
                     offline_graphs=False)
    s2t = ref.load_reference(config_path, ckpt)

    clips, scp = [], []
    for i, n in enumerate(LENGTHS):
        clip = f"clip{i}_{n}"
        wav_path = os.path.join(out, "clips", clip + ".wav")
        sf.write(wav_path, speechlike(n, 100 + i), 16000, subtype="PCM_16")
        wav, _ = sf.read(wav_path, dtype="float32")  # exactly what a reader of the WAV sees
        scp.append(f"{clip} {os.path.abspath(wav_path)}")
        entry = dict(name=clip, samples=n, rms=float(np.sqrt(np.mean(wav.astype(np.float32) ** 2))), runs=[])
        for bw in spec["bit_widths"]:
            codes = ref.reference_encode(s2t, wav, bw)
            decoded = ref.reference_decode(s2t, codes)
            dec_file = f"{clip}_nq{codes.shape[0]}.f32"
            decoded.astype("<f4").tofile(os.path.join(out, "ref", dec_file))
            entry["runs"].append(dict(bit_width=bw, n_q=int(codes.shape[0]), codes=codes.tolist(),
                                      margins=decision_margins(s2t, wav, codes), decoded=dec_file))
        clips.append(entry)

    with open(os.path.join(work, "wav.scp"), "w") as f:
        f.write("\n".join(scp) + "\n")
    job = ref.run_cli(config_path, ckpt, os.path.join(work, "wav.scp"), os.path.join(work, "enc"), "encode",
                      spec["bit_widths"][-1])
    shutil.copy(os.path.join(job, "codecs.txt"), os.path.join(out, "funcodec_codecs.txt"))
    golden = dict(model=name, generator="models/make_golden.py", funcodec="0.2.0", seed=spec["seed"],
                  cli_bit_width=spec["bit_widths"][-1], model_hash=manifest["model_hash"], clips=clips)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f)
    shutil.rmtree(work)
    print(f"{name}: {len(clips)} clips, model {manifest['model_hash']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    ref.patch_funcodec_for_cpu()
    for name, spec in VARIANTS.items():
        if not a.only or name in a.only:
            make_variant(name, spec, a.out)


if __name__ == "__main__":
    main()
