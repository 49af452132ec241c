"""The runtime algorithm in numpy + onnxruntime: FunCodec padding between segments, RVQ outside.

This mirrors what core/ does in Rust. It exists to check the exported folder against FunCodec before
any Rust runs, and to time onnxruntime on the very same graphs in the benchmarks.
"""

from __future__ import annotations

import json
import os

import numpy as np


def pad1d(x: np.ndarray, left: int, right: int, mode: str) -> np.ndarray:
    """FunCodec `pad1d` on the last axis, including its zero-append guard for short reflect inputs."""
    if mode != "reflect":
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])
    n = x.shape[-1]
    guard = max(left, right) - n + 1 if n <= max(left, right) else 0
    if guard:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, guard)])
    y = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)], mode="reflect")
    return y[..., : y.shape[-1] - guard]


def conv_pad(x: np.ndarray, spec: dict) -> np.ndarray:
    k, s = spec["kernel"], spec["stride"]
    n = x.shape[-1]
    extra = -(-n // s) * s - n if s > 1 else 0  # FunCodec's get_extra_padding_for_conv1d, k = 2s or s = 1
    return pad1d(x, spec["left"], spec["right"] + extra, spec["mode"])


class OrtCodec:
    def __init__(self, folder: str, threads: int = 1):
        import onnxruntime as ort

        self.m = json.load(open(os.path.join(folder, "manifest.json")))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        mk = lambda f: ort.InferenceSession(os.path.join(folder, f), so, providers=["CPUExecutionProvider"])
        self.enc = [(mk(s["file"]), s["pad"]) for s in self.m["encoder"]["segments"]]
        self.dec = mk(self.m["decoder"]["file"])
        q = self.m["quantizer"]
        self.codebooks = np.fromfile(os.path.join(folder, q["file"]), "<f4").reshape(
            q["num_quantizers"], q["codebook_size"], q["dim"])

    def encode(self, wav: np.ndarray, n_q: int) -> tuple[np.ndarray, float]:
        x = wav.astype(np.float32)[None, None]
        scale = 1.0
        if self.m["input_normalization"]["kind"] == "utterance_rms":
            scale = np.float32(np.sqrt(np.mean(np.square(x, dtype=np.float32), dtype=np.float32)) + np.float32(1e-8))
            x = x / scale
        for sess, spec in self.enc:
            x = sess.run(None, {"x": conv_pad(x, spec)})[0]
        z = x[0].T  # (T, D)
        codes = np.zeros((n_q, z.shape[0]), np.int64)
        r = z.copy()
        for q in range(n_q):
            e = self.codebooks[q]
            d = -((r ** 2).sum(1, keepdims=True) - 2 * r @ e.T + (e ** 2).sum(1)[None])
            codes[q] = d.argmax(1)
            r = r - e[codes[q]]
        return codes, float(scale)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        z = sum(self.codebooks[q][codes[q]] for q in range(codes.shape[0])).T[None].astype(np.float32)
        return self.dec.run(None, {"x": conv_pad(z, self.m["decoder"]["pad"])})[0][0, 0]


class OrtStepCodec:
    """The step graphs of a causal model on onnxruntime, one frame per call, state carried: the loop
    core/src/stream runs in Rust."""

    def __init__(self, folder: str, threads: int = 1):
        import onnxruntime as ort

        self.m = json.load(open(os.path.join(folder, "manifest.json")))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        st = self.m["streaming"]
        mk = lambda f: ort.InferenceSession(os.path.join(folder, f), so, providers=["CPUExecutionProvider"])
        self.enc, self.dec = mk(st["encoder"]["file"]), mk(st["decoder"]["file"])
        self.enc_states, self.dec_states = st["encoder"]["states"], st["decoder"]["states"]
        q = self.m["quantizer"]
        self.codebooks = np.fromfile(os.path.join(folder, q["file"]), "<f4").reshape(
            q["num_quantizers"], q["codebook_size"], q["dim"])
        self.hop = self.m["hop"]

    @staticmethod
    def _run(sess, specs, x, states):
        feed = {"x": x, **{s["input"]: v for s, v in zip(specs, states)}}
        out = sess.run(None, feed)
        return out[0], out[1:]

    def encode(self, wav: np.ndarray, n_q: int) -> tuple[np.ndarray, float]:
        n = -(-len(wav) // self.hop)
        x = np.zeros(n * self.hop, np.float32)
        x[: len(wav)] = wav
        states = [np.zeros(s["shape"], np.float32) for s in self.enc_states]
        codes = np.zeros((n_q, n), np.int64)
        for t in range(n):
            z, states = self._run(self.enc, self.enc_states, x[None, None, t * self.hop:(t + 1) * self.hop], states)
            r = z[0, :, 0].copy()
            for q in range(n_q):
                e = self.codebooks[q]
                codes[q, t] = int(((r[None] - e) ** 2).sum(1).argmin())
                r -= e[codes[q, t]]
        return codes, 1.0

    def decode(self, codes: np.ndarray) -> np.ndarray:
        states = [np.zeros(s["shape"], np.float32) for s in self.dec_states]
        out = []
        for t in range(codes.shape[1]):
            z = sum(self.codebooks[q][codes[q, t]] for q in range(codes.shape[0])).astype(np.float32)
            y, states = self._run(self.dec, self.dec_states, z[None, :, None], states)
            out.append(y[0, 0])
        return np.concatenate(out)
