"""Run the real FunCodec (PyPI funcodec==0.2.0) on CPU: the reference every parity check compares to.

funcodec 0.2.0 needs three patches to run without a GPU (see the model spec): Audio2Mel calls .cuda(),
codec_inference calls torch.cuda.set_device, and torchaudio >= 2.9 has no backend for load/save.
They are applied at run time here; the installed package is not modified.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import soundfile as sf
import torch
import yaml


def patch_funcodec_for_cpu() -> None:
    import torchaudio

    torch.Tensor.cuda = lambda self, *a, **k: self  # Audio2Mel's mel basis; a loss-only buffer
    torch.cuda.set_device = lambda *a, **k: None

    def load(path, *a, **k):
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    def save(path, wav, sample_rate, **k):
        sf.write(path, wav.detach().cpu().numpy().T, sample_rate, subtype="PCM_16")

    torchaudio.load, torchaudio.save = load, save

    from funcodec.models import codec_basic

    init = codec_basic.Audio2Mel.__init__
    init.__defaults__ = tuple("cpu" if d == "cuda" else d for d in init.__defaults__)


def recipe_config(overrides: dict | None = None) -> dict:
    """The model sections of FunCodec's encodec_16k_n32_600k_step_ds640.yaml (LibriTTS recipe)."""
    cfg = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "configs", "funcodec_ds640.yaml")))
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def build_random_checkpoint(cfg: dict, out_dir: str, seed: int) -> tuple[str, str]:
    """Build the model with FunCodec's own builder, randomise it like a trained one, save config+pth."""
    from funcodec.tasks.gan_speech_codec import GANSpeechCodecTask

    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "config.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    torch.manual_seed(seed)
    model, _ = GANSpeechCodecTask.build_model_from_file(config_path, None, "cpu")
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in sd.items():
        if k.endswith("norm.weight"):
            v.copy_(1.0 + 0.2 * torch.randn(v.shape, generator=g))
        elif k.endswith("norm.bias"):
            v.copy_(0.1 * torch.randn(v.shape, generator=g))
        elif k.endswith("weight_g"):
            v.mul_(1.0 + 0.1 * torch.randn(v.shape, generator=g))
    embed = sd["quantizer.rq.model.embed"]
    nq = embed.shape[0]
    # Residual scales shrink with depth, as in a trained RVQ.
    embed.copy_(torch.randn(embed.shape, generator=g) * (0.8 ** torch.arange(nq)).view(nq, 1, 1))
    sd["quantizer.rq.model.inited"].fill_(1.0)
    ckpt = os.path.join(out_dir, "model.pth")
    torch.save(sd, ckpt)
    return config_path, ckpt


def load_reference(config_path: str, ckpt: str):
    from funcodec.bin.codec_inference import Speech2Token

    return Speech2Token(config_file=config_path, model_file=ckpt, device="cpu", batch_size=1)


def reference_encode(s2t, wav: np.ndarray, bit_width: int) -> np.ndarray:
    """FunCodec codes for one utterance: (n_q, T) int."""
    with torch.no_grad():
        idx, _, _, _ = s2t(torch.from_numpy(wav)[None], bit_width=bit_width, run_mod="encode")
    return idx[0][:, 0, :].numpy()


def reference_decode(s2t, codes: np.ndarray) -> np.ndarray:
    """FunCodec codes-only decode (run_mod decode): float waveform of hop*T samples, no level restore."""
    tokens = torch.from_numpy(codes.T.copy())[None].long()  # B x T x n_q
    with torch.no_grad():
        _, _, recon, _ = s2t(tokens, run_mod="decode")
    return recon[0, 0].numpy()


def run_cli(config_path: str, ckpt: str, wav_scp: str, out_dir: str, run_mod: str, bit_width: int) -> str:
    """FunCodec's own command line (codec_inference.main), batch size 1; returns its output folder."""
    from funcodec.bin import codec_inference

    job_dir = os.path.join(out_dir, "output.1")  # codec_inference derives the job id from the suffix
    os.makedirs(job_dir, exist_ok=True)
    kind = "sound" if run_mod == "encode" else "codec_json"
    codec_inference.main([
        "--config_file", config_path, "--model_file", ckpt, "--output_dir", job_dir,
        "--data_path_and_name_and_type", f"{wav_scp},speech,{kind}", "--ngpu", "0", "--gpuid_list", "0",
        "--batch_size", "1", "--sampling_rate", "16000", "--bit_width", str(bit_width),
        "--run_mod", run_mod, "--need_indices", "true", "--use_scale", "false", "--num_workers", "0",
        "--log_level", "WARNING",
    ])
    return job_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="build a random-weight FunCodec checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    patch_funcodec_for_cpu()
    print(build_random_checkpoint(recipe_config(), a.out, a.seed))
    sys.exit(0)
