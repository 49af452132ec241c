#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: build the CLI, speak a sentence, encode it to a
# 2 kbit/s FunCodec bitstream, inspect it, decode it, and round-trip it at several bit rates.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v espeak-ng >/dev/null; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null
fi
cargo build --release --locked -p funcodec-core --bin funcodec
BIN=target/release/funcodec

MODEL=models/default   # the project's own causal model (models/default/MODEL_CARD.md)

OUT=target/demo; mkdir -p "$OUT"
espeak-ng -v en-us -s 150 -w "$OUT/input.wav" "The quick brown fox jumps over the lazy dog. Neural codecs carry speech at two kilobits per second."
"$BIN" info "$MODEL"
"$BIN" encode "$OUT/input.wav" -o "$OUT/speech.fcdc" --model "$MODEL" --bitrate 2000
"$BIN" info "$OUT/speech.fcdc"
"$BIN" decode "$OUT/speech.fcdc" -o "$OUT/decoded_16k.wav" --model "$MODEL"
for br in 500 1000 2000 4000 8000; do
  "$BIN" roundtrip "$OUT/input.wav" -o "$OUT/roundtrip_${br}.wav" --model "$MODEL" --bitrate "$br"
done
# The same through the streaming core (what GStreamer and the plugin run): 40 ms frames, exact.
"$BIN" roundtrip "$OUT/input.wav" -o "$OUT/streamed_2000.wav" --model "$MODEL" --bitrate 2000 --stream
"$BIN" bench "$OUT/input.wav" --model "$MODEL" --bitrate 2000 --repeat 3
ls -l "$OUT"
