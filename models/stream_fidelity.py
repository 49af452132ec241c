#!/usr/bin/env python3
"""How far windowed streaming of a non-causal FunCodec model is from its offline result.

    python models/stream_fidelity.py --funcodec-bin target/release/funcodec --corpus models/work/corpus-s1 \
        [--model /tmp/fc_full/model] [--windows 8:4:2,24:4:4,56:4:4,24:8:8]

For each window (CONTEXT:BLOCK:LOOKAHEAD frames) it codes held-out speech clips offline and through
the streaming core (`--stream --window`), then reports: code agreement per quantizer layer (first,
all 32), and the streamed round trip scored against the offline round trip (PESQ-WB, STOI, SNR).
The offline output is the reference because the released weights can't be downloaded here: with
random weights the absolute quality means nothing, but how much streaming departs from offline does.
Default model: the full-size ds640 architecture made by `parity_full.py` (random weights).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_quality import read_valid  # noqa: E402


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def codes_of(binary: str, fcdc: str, tmp: str) -> np.ndarray:
    out = os.path.join(tmp, "codecs.txt")
    run([binary, "export", fcdc, "-o", out])
    line = open(out).read().strip()
    return np.array(ast.literal_eval(line.split(" ", 1)[1]))[0]  # (n_q, T)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--funcodec-bin", default="target/release/funcodec")
    ap.add_argument("--model", default="/tmp/fc_full/model")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--n-q", type=int, default=32)
    ap.add_argument("--windows", default="8:4:2,24:4:4,56:4:4,24:8:8")
    ap.add_argument("--out")
    a = ap.parse_args()
    from pesq import pesq
    from pystoi import stoi

    rows = [r for r in read_valid(a.corpus, 100) if 2.5 <= float(r["seconds"]) <= 8.0]
    rows = rows[: a.clips]
    manifest = json.load(open(os.path.join(a.model, "manifest.json")))
    hop, sr = manifest["hop"], manifest["sample_rate"]
    b, m = a.funcodec_bin, ["--model", a.model, "--n-q", str(a.n_q)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        offline = {}
        for r in rows:
            fc, wav = os.path.join(tmp, r["id"] + ".fcdc"), os.path.join(tmp, r["id"] + ".wav")
            run([b, "encode", r["path"], "-o", fc, *m])
            run([b, "roundtrip", r["path"], "-o", wav, *m])
            offline[r["id"]] = (codes_of(b, fc, tmp), sf.read(wav, dtype="float32")[0])
        for w in a.windows.split(","):
            c, bl, la = (int(v) for v in w.split(":"))
            agree_first, agree_all, pq, st, snr = [], [], [], [], []
            for r in rows:
                fc, wav = os.path.join(tmp, "s.fcdc"), os.path.join(tmp, "s.wav")
                run([b, "encode", r["path"], "-o", fc, "--stream", "--window", w, *m])
                run([b, "roundtrip", r["path"], "-o", wav, "--stream", "--window", w, *m])
                ref_codes, ref_wav = offline[r["id"]]
                codes = codes_of(b, fc, tmp)
                agree_first.append(float((codes[0] == ref_codes[0]).mean()))
                agree_all.append(float((codes == ref_codes).mean()))
                y = sf.read(wav, dtype="float32")[0]
                n = min(len(y), len(ref_wav))
                pq.append(pesq(sr, ref_wav[:n], y[:n], "wb"))
                st.append(stoi(ref_wav[:n], y[:n], sr, extended=False))
                snr.append(10 * np.log10(np.sum(ref_wav[:n] ** 2) / (np.sum((ref_wav[:n] - y[:n]) ** 2) + 1e-12)))
            res = dict(window=w, latency_ms=(bl + la) * hop * 1000 / sr, compute_x=(c + bl + la) / bl,
                       codes_agree_q1=np.mean(agree_first), codes_agree_all=np.mean(agree_all),
                       pesq_vs_offline=np.mean(pq), stoi_vs_offline=np.mean(st), snr_db_vs_offline=np.mean(snr))
            results.append({k: (round(float(v), 3) if not isinstance(v, str) else v) for k, v in res.items()})
            print(json.dumps(results[-1]), flush=True)
    print(f"\nmodel {manifest['model_id']}, {len(rows)} held-out clips, n_q {a.n_q}")
    print("| window C:B:L (frames) | latency past frame start | compute vs offline | codes agree, q1 | codes agree, all | PESQ-WB vs offline | STOI vs offline | SNR vs offline |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['window']} | {r['latency_ms']:.0f} ms | {r['compute_x']:.1f}x | {100 * r['codes_agree_q1']:.1f} % "
              f"| {100 * r['codes_agree_all']:.1f} % | {r['pesq_vs_offline']:.2f} | {r['stoi_vs_offline']:.3f} "
              f"| {r['snr_db_vs_offline']:.1f} dB |")
    if a.out:
        json.dump(results, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
