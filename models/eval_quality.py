#!/usr/bin/env python3
"""Measure codec quality beside Opus and Codec 2 on the same clips, after delay alignment.

    python models/eval_quality.py --model models/default --corpus models/work/corpus-s1 \
        --funcodec-bin target/release/funcodec --out models/eval/default.json

Clips: the corpus's held-out `valid` split (never trained on), reported separately for synthetic
speech and for the real recordings (`engine=real`); with `--all-held-out`, every clip of a corpus made
with a seed no training run used. Conditions:

* ours at 0.5, 1, 2, 4 and 8 kbit/s through the Rust runtime (`funcodec roundtrip`);
* Opus at 6, 8 and 12 kbit/s (`opusenc --bitrate N --vbr`, decoded at 16 kHz);
* Codec 2 at 3200, 1600 and 700C (`c2enc`/`c2dec` at 8 kHz, resampled back to 16 kHz).

Every degraded clip is aligned to its reference by cross-correlation (±100 ms) before scoring with
PESQ wide-band (`pesq`), STOI (`pystoi`) and ViSQOL speech mode (`visqol-python`). Needs:
`apt install opus-tools codec2` and `pip install pesq pystoi visqol-python soundfile scipy`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SR = 16000
OURS_KBPS = [0.5, 1, 2, 4, 8]
OPUS_KBPS = [6, 8, 12]
CODEC2_MODES = ["3200", "1600", "700C"]


def read_valid(corpus: str, limit: int, splits: tuple[str, ...] = ("valid",)) -> list[dict]:
    rows = []
    with open(os.path.join(corpus, "manifest.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["split"] in splits:
                r["path"] = os.path.join(corpus, r["split"], r["id"] + ".flac")
                rows.append(r)
    synth = [r for r in rows if r["engine"] != "real"][:limit]
    real = [r for r in rows if r["engine"] == "real"][:limit]
    return synth + real


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ours(ref_path: str, tmp: str, kbps: float, model: str, binary: str) -> np.ndarray:
    out = os.path.join(tmp, "ours.wav")
    run([binary, "roundtrip", ref_path, "-o", out, "--model", model, "--bitrate", str(int(kbps * 1000))])
    return sf.read(out, dtype="float32")[0]


def opus(ref: np.ndarray, tmp: str, kbps: int) -> np.ndarray:
    src, enc, dec = (os.path.join(tmp, n) for n in ("in.wav", "o.opus", "o.wav"))
    sf.write(src, ref, SR, subtype="PCM_16")
    run(["opusenc", "--quiet", "--bitrate", str(kbps), "--vbr", src, enc])
    run(["opusdec", "--quiet", "--rate", str(SR), enc, dec])
    return sf.read(dec, dtype="float32")[0]


def codec2(ref: np.ndarray, tmp: str, mode: str) -> np.ndarray:
    src, enc, dec = (os.path.join(tmp, n) for n in ("in.raw", "o.c2", "o.raw"))
    x8 = resample_poly(ref, 1, 2)
    (np.clip(x8, -1, 1) * 32767).astype("<i2").tofile(src)
    run(["c2enc", mode, src, enc])
    run(["c2dec", mode, enc, dec])
    y8 = np.fromfile(dec, "<i2").astype(np.float32) / 32768
    return resample_poly(y8, 2, 1).astype(np.float32)


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int = 1600) -> np.ndarray:
    """Shift `deg` by the lag (±max_lag) that maximises its correlation with `ref`; trim/pad to ref."""
    n = len(ref)
    d = np.zeros(n + 2 * max_lag, np.float32)
    m = min(len(deg), n + max_lag)
    d[max_lag:max_lag + m] = deg[:m]
    spec = np.fft.rfft(d, 2 * len(d)) * np.conj(np.fft.rfft(ref, 2 * len(d)))
    xc = np.fft.irfft(spec)[: 2 * max_lag + 1]
    lag = int(np.argmax(xc))
    return d[lag:lag + n]


def score(ref: np.ndarray, deg: np.ndarray) -> dict:
    from pesq import pesq
    from pystoi import stoi
    from visqol import VisqolApi

    api = VisqolApi()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api.create(mode="speech")
        vq = float(api.measure_from_arrays(ref.astype(np.float64), deg.astype(np.float64), SR).moslqo)
    try:
        p = float(pesq(SR, ref, deg, "wb"))
    except Exception:  # PESQ refuses clips with no detected speech
        p = float("nan")
    return dict(pesq_wb=p, stoi=float(stoi(ref, deg, SR, extended=False)), visqol=vq)


def conditions() -> list[tuple[str, object]]:
    return ([(f"ours {k:g} kbit/s", ("ours", k)) for k in OURS_KBPS]
            + [(f"Opus {k} kbit/s", ("opus", k)) for k in OPUS_KBPS]
            + [(f"Codec 2 {m}", ("codec2", m)) for m in CODEC2_MODES])


def eval_clip(args: tuple) -> dict:
    row, model, binary = args
    ref, sr = sf.read(row["path"], dtype="float32")
    if sr != SR:
        raise SystemExit(f"{row['path']}: {sr} Hz")
    out = dict(id=row["id"], engine=row["engine"], lang=row["lang"], seconds=len(ref) / SR, scores={})
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, arg) in conditions():
            if kind == "ours":
                deg = ours(row["path"], tmp, arg, model, binary)
            elif kind == "opus":
                deg = opus(ref, tmp, arg)
            else:
                deg = codec2(ref, tmp, arg)
            out["scores"][name] = score(ref, align(ref, deg))
    return out


def groups(results: list[dict]) -> dict[str, list[dict]]:
    """The clips reported apart: synthetic speech, and the real recordings (`engine=real`)."""
    return {"held-out synthetic": [r for r in results if r["engine"] != "real"],
            "held-out real (IVR prompts)": [r for r in results if r["engine"] == "real"]}


def summarise(results: list[dict]) -> dict:
    table = {}
    for g, rs in groups(results).items():
        if not rs:
            continue
        table[g] = {"clips": len(rs)}
        for name, _ in conditions():
            vals = {m: float(np.nanmean([r["scores"][name][m] for r in rs])) for m in ("pesq_wb", "stoi", "visqol")}
            table[g][name] = {k: round(v, 3) for k, v in vals.items()}
    return table


def markdown(table: dict) -> str:
    lines = []
    for g, t in table.items():
        lines += [f"**{g}** ({t['clips']} clips)", "", "| condition | PESQ-WB | STOI | ViSQOL |", "|---|---|---|---|"]
        for name, _ in conditions():
            s = t[name]
            lines.append(f"| {name} | {s['pesq_wb']:.2f} | {s['stoi']:.3f} | {s['visqol']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--funcodec-bin", default="target/release/funcodec")
    ap.add_argument("--limit", type=int, default=40, help="clips per group (synthetic, real)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--all-held-out", action="store_true",
                    help="score every clip of --corpus, train split included: for a corpus made with a seed "
                         "that no training run used (all of it is held out)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = read_valid(a.corpus, a.limit, ("valid", "train") if a.all_held_out else ("valid",))
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(eval_clip, [(r, a.model, a.funcodec_bin) for r in rows]))
    table = summarise(results)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(dict(model=a.model, corpus=a.corpus, summary=table, clips=results), f, indent=1)
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
