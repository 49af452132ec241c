"""Paired comparison of two `eval_quality.py` reports on the same clips: for each group of clips
(synthetic, real, as `eval_quality.py` reports them) and each score, the mean difference (B - A) over
the clips both scored, its standard error, and on how many clips B is better.

    python models/compare_eval.py models/eval/A.json models/eval/B.json [--condition "ours 2 kbit/s"]

Each clip is its own control, so a difference far smaller than the spread of the scores across clips
can still be told from noise: the project ships a new default model only when no score is worse by
more than two standard errors and the scores are not all within them.
"""

from __future__ import annotations

import argparse
import json
import statistics

from eval_quality import groups

SCORES = ("pesq_wb", "stoi", "visqol")


def paired(a: list[dict], b: list[dict], condition: str) -> dict[str, dict]:
    """Per score over clips `a` and `b` (reports' clip lists): mean of B - A, its standard error,
    clips compared, clips where B is higher."""
    clips_a = {c["id"]: c["scores"] for c in a}
    both = [(clips_a[c["id"]], c["scores"]) for c in b if c["id"] in clips_a]
    out = {}
    for score in SCORES:
        diffs = [sb[condition][score] - sa[condition][score] for sa, sb in both
                 if condition in sa and condition in sb]
        if len(diffs) < 2:
            raise SystemExit(f"fewer than two clips scored {score} at {condition!r} in both reports")
        out[score] = dict(mean=statistics.mean(diffs), se=statistics.stdev(diffs) / len(diffs) ** 0.5,
                          clips=len(diffs), b_better=sum(d > 0 for d in diffs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="eval_quality.py report (the reference, e.g. the shipped model)")
    ap.add_argument("b", help="eval_quality.py report on the same corpus (the candidate)")
    ap.add_argument("--condition", default="ours 2 kbit/s")
    args = ap.parse_args()
    with open(args.a, encoding="utf-8") as fa, open(args.b, encoding="utf-8") as fb:
        a, b = groups(json.load(fa)["clips"]), groups(json.load(fb)["clips"])
    worse = better = False
    for group, clips in a.items():
        if len(clips) < 2:
            print(f"{group}: {len(clips)} clip(s), not compared")
            continue
        print(f"{group}:")
        for score, r in paired(clips, b[group], args.condition).items():
            print(f"  {score:8s} B - A {r['mean']:+.3f} ± {r['se']:.3f} (standard error), "
                  f"B higher on {r['b_better']} of {r['clips']} clips")
            worse |= r["mean"] < -2 * r["se"]
            better |= r["mean"] > 2 * r["se"]
    verdict = "worse on some score" if worse else ("better" if better else "no difference beyond noise")
    print(f"B against A at {args.condition}: {verdict}")


if __name__ == "__main__":
    main()
