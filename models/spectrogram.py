#!/usr/bin/env python3
"""Spectrograms of a clip and of what each model makes of it, one above the other, as a PNG.

    python models/spectrogram.py --clip models/work/heldout-s21/train/s21-000018.flac \
        --model models/default --model /tmp/other-model --start 2 --seconds 2 --out spec.png

Each model codes the clip with `funcodec roundtrip --stream` at `--n-q` quantizers (the release
binary, as the README builds it). What a magnitude number hides shows here: whether the harmonics of
a voice survive, and up to which frequency. Needs matplotlib besides the evaluation packages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import soundfile as sf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="16 kHz mono audio file")
    ap.add_argument("--model", action="append", required=True, help="model folder (repeatable)")
    ap.add_argument("--funcodec-bin", default="target/release/funcodec")
    ap.add_argument("--n-q", type=int, default=8)
    ap.add_argument("--start", type=float, default=0.0, help="seconds into the clip")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import stft

    audio, sr = sf.read(a.clip, dtype="float32", always_2d=True)
    rows = [("input", audio[:, 0])]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.wav")
        sf.write(src, audio[:, 0], sr, subtype="FLOAT")
        for i, model in enumerate(a.model):
            out = os.path.join(tmp, f"out{i}.wav")
            subprocess.run([a.funcodec_bin, "roundtrip", "--stream", "--n-q", str(a.n_q), "--model", model,
                            "-o", out, src], check=True, capture_output=True)
            decoded, _ = sf.read(out, dtype="float32", always_2d=True)
            with open(os.path.join(model, "manifest.json"), encoding="utf-8") as f:
                name = json.load(f)["model_id"]
            rows.append((f"{name}, {a.n_q} quantizers", decoded[:, 0]))
    lo, hi = int(a.start * sr), int((a.start + a.seconds) * sr)
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 3 * len(rows)), squeeze=False)
    for ax, (title, x) in zip(axes[:, 0], rows):
        f, t, z = stft(x[lo:hi], sr, nperseg=512, noverlap=512 - 64)
        ax.pcolormesh(t + a.start, f, 20 * np.log10(np.abs(z) + 1e-7), vmin=-100, vmax=-20, shading="auto",
                      cmap="magma")
        ax.set_title(title)
        ax.set_ylabel("Hz")
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(a.out, dpi=60)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
