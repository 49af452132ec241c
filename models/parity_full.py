#!/usr/bin/env python3
"""Full-size parity: the official ds640 architecture (57.8 M parameters, random weights) through
FunCodec, our exported graphs on onnxruntime, and our Rust runtime; prints code agreement and
waveform differences per clip, then a speed comparison (single thread, same clips, one run).

    python models/parity_full.py --funcodec-bin target/release/funcodec [--work /tmp/fc_full]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import funcodec_ref as ref  # noqa: E402
from fcexport.export import export_model  # noqa: E402
from fcexport.runtime_ref import OrtCodec  # noqa: E402
from make_golden import decision_margins, speechlike  # noqa: E402

LENGTHS = [8000, 16123, 41293, 161234]  # < 1 s, not multiples of 640, > 10 s


def timed(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/fc_full")
    ap.add_argument("--funcodec-bin", help="our CLI; omit to check the exported graphs on onnxruntime only")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ref.patch_funcodec_for_cpu()
    ckpt_dir, rt_dir = os.path.join(a.work, "funcodec"), os.path.join(a.work, "model")
    if not os.path.exists(os.path.join(rt_dir, "manifest.json")):
        cfg, ckpt = ref.build_random_checkpoint(ref.recipe_config(), ckpt_dir, seed=7)
        export_model(cfg, ckpt, rt_dir, model_id="funcodec-ds640-random")
    cfg, ckpt = os.path.join(ckpt_dir, "config.yaml"), os.path.join(ckpt_dir, "model.pth")
    s2t = ref.load_reference(cfg, ckpt)
    ort = OrtCodec(rt_dir, threads=1)

    clips_dir = os.path.join(a.work, "clips")
    os.makedirs(clips_dir, exist_ok=True)
    scp, refs = [], {}
    print(f"{'clip':>14} {'n_q':>3} {'codes ORT':>10} {'codes Rust':>10} {'max|dwav| ORT':>14} {'max|dwav| Rust':>15}")
    for i, n in enumerate(LENGTHS):
        name = f"clip{i}_{n}"
        path = os.path.join(clips_dir, name + ".wav")
        sf.write(path, speechlike(n, 500 + i), 16000, subtype="PCM_16")
        wav, _ = sf.read(path, dtype="float32")
        scp.append(f"{name} {path}")
        codes = ref.reference_encode(s2t, wav, 16000)
        dec = ref.reference_decode(s2t, codes)
        refs[name] = (wav, codes, dec)
        ours, _ = ort.encode(wav, codes.shape[0])
        d_ort = float(np.abs(ort.decode(codes) - dec).max())
        refs[name] += (int((ours != codes).sum()), d_ort)

    rust = {}
    if a.funcodec_bin:
        scp_path = os.path.join(a.work, "wav.scp")
        open(scp_path, "w").write("\n".join(scp) + "\n")
        out = os.path.join(a.work, "rust_codecs.txt")
        subprocess.run([a.funcodec_bin, "encode", "--model", rt_dir, "--scp", scp_path, "--codecs-out", out], check=True)
        for line in open(out):
            uid, js = line.split(" ", 1)
            rust[uid] = np.array(json.loads(js))[0]
        # Decode FunCodec's own codes with our runtime, as float WAVs.
        golden_txt = os.path.join(a.work, "funcodec_codecs.txt")
        with open(golden_txt, "w") as f:
            for name, (_, codes, *_r) in refs.items():
                f.write(f"{name} {json.dumps([codes.tolist()])}\n")
        dec_dir = os.path.join(a.work, "rust_dec")
        subprocess.run([a.funcodec_bin, "decode", golden_txt, "-o", dec_dir, "--model", rt_dir, "--float"], check=True)
    worst = 0.0
    for name, (wav, codes, dec, mism_ort, d_ort) in refs.items():
        line = f"{name:>14} {codes.shape[0]:>3} {mism_ort:>4}/{codes.size:<5}"
        if name in rust:
            mism = int((rust[name] != codes).sum())
            y, _ = sf.read(os.path.join(a.work, "rust_dec", name + ".wav"), dtype="float32")
            d = float(np.abs(y - dec).max())
            worst = max(worst, d)
            line += f" {mism:>4}/{codes.size:<5} {d_ort:>14.2e} {d:>15.2e}"
            if mism:
                # FunCodec's relative gap between its best and second-best codeword at the first
                # differing quantizer of each differing frame (later quantizers follow from it).
                margins = np.array(decision_margins(s2t, wav, codes))
                diff = rust[name] != codes
                firsts = [(int(np.argmax(diff[:, t])), t) for t in range(diff.shape[1]) if diff[:, t].any()]
                gaps = [float(margins[q, t]) for q, t in firsts]
                line += f"  {len(firsts)} frame(s); FunCodec margin there: {', '.join(f'{g:.1e}' for g in gaps)}"
        else:
            line += f" {'-':>10} {d_ort:>14.2e} {'-':>15}"
        print(line)
    if rust:
        print(f"worst Rust waveform max|diff| {worst:.2e} (decoder output at unit-variance scale)")

    # Speed: one thread each, median of --repeat, seconds of compute per second of audio.
    wav, codes, *_ = refs[f"clip3_{LENGTHS[3]}"]
    secs = len(wav) / 16000
    tok = torch.from_numpy(codes.T.copy())[None].long()
    t_fc_enc = timed(lambda: s2t(torch.from_numpy(wav)[None], bit_width=16000, run_mod="encode"), a.repeat)
    t_fc_dec = timed(lambda: s2t(tok, run_mod="decode"), a.repeat)
    t_ort_enc = timed(lambda: ort.encode(wav, 32), a.repeat)
    t_ort_dec = timed(lambda: ort.decode(codes), a.repeat)
    rows = [("FunCodec PyTorch", t_fc_enc, t_fc_dec), ("onnxruntime (our graphs)", t_ort_enc, t_ort_dec)]
    if a.funcodec_bin:
        out = subprocess.run([a.funcodec_bin, "bench", "--model", rt_dir, os.path.join(clips_dir, f"clip3_{LENGTHS[3]}.wav"),
                              "--repeat", str(a.repeat)], check=True, capture_output=True, text=True).stdout
        b = json.loads(out)
        rows.append(("funcodec-rs (tract)", b["offline"]["encode_s"], b["offline"]["decode_s"]))
    print(f"\nspeed on a {secs:.1f} s clip, 1 thread, 32 quantizers, median of {a.repeat} (s per s of audio):")
    print(f"{'stack':>26} {'encode':>8} {'decode':>8} {'enc vs PyTorch':>15} {'dec vs PyTorch':>15}")
    for label, te, td in rows:
        print(f"{label:>26} {te / secs:8.3f} {td / secs:8.3f} {t_fc_enc / te:14.2f}x {t_fc_dec / td:14.2f}x")


if __name__ == "__main__":
    main()
