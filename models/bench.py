#!/usr/bin/env python3
"""Speed, side by side in one run, single thread: our Rust runtime (tract) vs onnxruntime on the very
same graphs, vs the PyTorch network, vs the FLOP bound of this core. Prints ratios.

    python models/bench.py --funcodec-bin target/release/funcodec --model models/default
    python models/bench.py --funcodec-bin target/release/funcodec --full-size [--work /tmp/fc_full]

* Rust: `funcodec bench` (offline encode/decode; for streaming models also per-frame p50/p99, state
  per stream, streams per core frame by frame and batched, load time, RSS).
* onnxruntime: the same ONNX files with the same padding/RVQ/stepping logic (`fcexport.runtime_ref`);
  for streaming models also `--streams` streams per call of the step graphs (stream axis made
  symbolic), beside our batched streams.
* PyTorch: FunCodec's network on CPU: the project's training network for the default model (the
  same layers, checked against FunCodec by `codec_train/check_layout.py`), FunCodec's own
  model for `--full-size` (random weights; timing does not depend on them).
* FLOP bound: multiply-adds of every conv, transposed conv and LSTM the PyTorch network runs on the
  clip (forward hooks), x2, divided by this core's measured single-thread SGEMM rate
  (numpy/OpenBLAS, 1024^3): what perfect kernels would take. The RVQ search is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# Before numpy loads OpenBLAS, which reads it once: set inside `sgemm_peak` it came too late, and the
# "single-thread" peak was measured on every core of an idle machine (158 GFLOP/s on this 2-core one).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CLIP_SECONDS = 10.0


from parity_full import timed  # noqa: E402  (median wall time of `repeat` calls)


def sgemm_peak() -> float:
    """Single-thread FLOP/s of a large SGEMM on this core (best of 5)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    best = min(timed(lambda: a @ a, 1) for _ in range(5))
    return 2 * 1024 ** 3 / best


def torch_macs(encode, decode, x) -> tuple[int, int]:
    """Multiply-adds of every conv, transposed conv and LSTM in MODULES while `encode`/`decode` run."""
    import torch
    from torch import nn

    from codec_train.net import WNConv

    count = [0]

    def conv(m, inp, out):
        w = m.weight_v if isinstance(m, WNConv) else m.weight
        if isinstance(m, nn.ConvTranspose1d) or getattr(m, "transpose", False):
            count[0] += inp[0].numel() * w[0].numel()
        else:
            count[0] += out.numel() * w[0].numel()

    def lstm(m, inp, out):
        t = inp[0].shape[0] * inp[0].shape[1]
        count[0] += t * sum(4 * m.hidden_size * (m.hidden_size + (m.input_size if i == 0 else m.hidden_size))
                            for i in range(m.num_layers))

    hooks = []
    for mod in MODULES:
        if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d, WNConv)):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, nn.LSTM):
            hooks.append(mod.register_forward_hook(lstm))
    with torch.no_grad():
        z = encode(x)
        enc = count[0]
        decode(z)
    for h in hooks:
        h.remove()
    return enc, count[0] - enc


MODULES: list = []  # the nn.Modules the timed network is made of (hooked for MAC counting)


def ort_times(folder: str, manifest: dict, wav: np.ndarray, n_q: int, repeat: int) -> tuple[float, float]:
    from fcexport.runtime_ref import OrtCodec, OrtStepCodec

    codec = OrtCodec(folder, threads=1) if manifest.get("encoder") else OrtStepCodec(folder, threads=1)
    codes, _ = codec.encode(wav, n_q)
    return timed(lambda: codec.encode(wav, n_q), repeat), timed(lambda: codec.decode(codes), repeat)


def batch_axis(state: dict) -> int:
    """The stream axis of a step-graph state (the runtime's rule for manifests without the field)."""
    if "batch_axis" in state:
        return state["batch_axis"]
    shape = state["shape"]
    return 1 if len(shape) == 3 and shape[0] > 1 and shape[1] == 1 else 0


def ort_batched_streams(folder: str, manifest: dict, wav: np.ndarray, n_q: int, streams: int) -> float:
    """Real-time streams per core with onnxruntime running `streams` streams per call of the same
    step graphs (their stream axis made symbolic), RVQ in numpy across the streams: the batched
    counterpart of `funcodec bench`'s `multi_stream.batched`."""
    import time

    import onnx
    import onnxruntime as ort

    st, hop = manifest["streaming"], manifest["hop"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1

    def session(info: dict):
        m = onnx.load(os.path.join(folder, info["file"]))
        del m.graph.value_info[:]
        axes = {"x": 0, "y": 0}
        for s in info["states"]:
            axes[s["input"]] = axes[s["output"]] = batch_axis(s)
        for v in list(m.graph.input) + list(m.graph.output):
            if v.name in axes:
                v.type.tensor_type.shape.dim[axes[v.name]].dim_param = "N"
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def zeros(info: dict) -> list:
        out = []
        for s in info["states"]:
            shape = list(s["shape"])
            shape[batch_axis(s)] = streams
            out.append(np.zeros(shape, np.float32))
        return out

    enc, dec = session(st["encoder"]), session(st["decoder"])
    q = manifest["quantizer"]
    books = np.fromfile(os.path.join(folder, q["file"]), "<f4").reshape(q["num_quantizers"], q["codebook_size"], q["dim"])
    norms = (books ** 2).sum(-1)
    es, ds = zeros(st["encoder"]), zeros(st["decoder"])
    frames = len(wav) // hop
    t0 = time.perf_counter()
    for t in range(frames):
        x = np.repeat(wav[None, None, t * hop:(t + 1) * hop], streams, 0).astype(np.float32)
        out = enc.run(None, {"x": x, **{s["input"]: v for s, v in zip(st["encoder"]["states"], es)}})
        r, es = out[0][:, :, 0].copy(), out[1:]
        z = np.zeros_like(r)
        for k in range(n_q):
            c = (norms[k][None] - 2 * r @ books[k].T).argmin(1)
            r -= books[k][c]
            z += books[k][c]
        out = dec.run(None, {"x": z[:, :, None], **{s["input"]: v for s, v in zip(st["decoder"]["states"], ds)}})
        ds = out[1:]
    wall = time.perf_counter() - t0
    return streams * frames * hop / manifest["sample_rate"] / wall


def torch_times(net, wav: np.ndarray, n_q: int, repeat: int) -> tuple[float, float]:
    import torch

    x = torch.from_numpy(wav)[None, None]
    with torch.no_grad():
        z = net["encode"](x)
        return (timed(lambda: net["encode"](x), repeat), timed(lambda: net["decode"](z), repeat))


def default_torch(manifest: dict):
    """The training network of the default model (FunCodec's layers) with random weights."""
    import torch
    from codec_train.net import Codec, NetConf

    info = json.load(open(os.path.join(ARGS.model, "training.json")))
    model = Codec(NetConf(**info["net"])).eval()
    rvq = model.quantizer.rvq
    MODULES.extend(model.modules())

    def encode(x):
        z = model.encoder(x)
        return rvq(z, N_Q)[0]

    return {"encode": encode, "decode": lambda z: model.decoder(z)}


def fullsize_torch(work: str):
    """FunCodec's own model and inference functions (the PyTorch reference of the parity checks)."""
    import funcodec_ref as ref

    s2t = ref.load_reference(os.path.join(work, "funcodec", "config.yaml"), os.path.join(work, "funcodec", "model.pth"))
    MODULES.extend(s2t.model.modules())
    bits = 250 * N_Q  # FunCodec's bit_width for N_Q quantizers of the ds640 recipe
    return {"encode": lambda x: ref.reference_encode(s2t, x[0, 0].numpy(), bits),
            "decode": lambda codes: ref.reference_decode(s2t, codes)}


def main() -> int:
    global ARGS, N_Q
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--funcodec-bin", default="target/release/funcodec")
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--full-size", action="store_true", help="the released FunCodec ds640 architecture")
    ap.add_argument("--work", default="/tmp/fc_full")
    ap.add_argument("--n-q", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--streams", type=int, default=16, help="streams side by side on one model (streaming models)")
    ap.add_argument("--out", help="write the JSON report here")
    ARGS = a = ap.parse_args()
    import soundfile as sf
    import torch
    from make_golden import speechlike

    torch.set_num_threads(1)
    if a.full_size:
        import funcodec_ref as ref
        from fcexport.export import export_model

        ref.patch_funcodec_for_cpu()
        a.model = os.path.join(a.work, "model")
        if not os.path.exists(os.path.join(a.model, "manifest.json")):
            cfg, ckpt = ref.build_random_checkpoint(ref.recipe_config(), os.path.join(a.work, "funcodec"), seed=7)
            export_model(cfg, ckpt, a.model, model_id="funcodec-ds640-random")
    manifest = json.load(open(os.path.join(a.model, "manifest.json")))
    N_Q = min(a.n_q, manifest["quantizer"]["num_quantizers"])
    wav = speechlike(int(CLIP_SECONDS * manifest["sample_rate"]) + 123, 5)
    clip = os.path.join("/tmp", f"bench_clip_{os.getpid()}.wav")
    sf.write(clip, wav, manifest["sample_rate"], subtype="FLOAT")
    audio_s = len(wav) / manifest["sample_rate"]

    rust = json.loads(subprocess.run(
        [a.funcodec_bin, "bench", clip, "--model", a.model, "--n-q", str(N_Q), "--repeat", str(a.repeat),
         "--streams", str(a.streams)],
        check=True, capture_output=True, text=True).stdout)
    ort_enc, ort_dec = ort_times(a.model, manifest, wav, N_Q, a.repeat)
    ort_batched = None
    if "batched" in rust.get("multi_stream", {}):
        ort_batched = ort_batched_streams(a.model, manifest, wav, N_Q, a.streams)
    net = fullsize_torch(a.work) if a.full_size else default_torch(manifest)
    pt_enc, pt_dec = torch_times(net, wav, N_Q, a.repeat)
    enc_macs, dec_macs = torch_macs(net["encode"], net["decode"], torch.from_numpy(wav)[None, None])
    peak = sgemm_peak()
    bound_enc, bound_dec = 2 * enc_macs / peak, 2 * dec_macs / peak
    os.remove(clip)

    rows = [("encode", rust["offline"]["encode_s"], ort_enc, pt_enc, bound_enc),
            ("decode", rust["offline"]["decode_s"], ort_dec, pt_dec, bound_dec)]
    print(f"model {manifest['model_id']}, {audio_s:.1f} s clip, n_q {N_Q}, 1 thread; "
          f"SGEMM peak {peak / 1e9:.1f} GFLOP/s; {(enc_macs + dec_macs) / audio_s / 1e9:.3f} GMAC per s of audio")
    print("| stage | ours (tract) s/s | onnxruntime s/s | PyTorch s/s | FLOP bound s/s | ORT / ours | PyTorch / ours | ours / bound |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ours, ort, pt, bound in rows:
        print(f"| {name} | {ours / audio_s:.4f} | {ort / audio_s:.4f} | {pt / audio_s:.4f} | {bound / audio_s:.4f} "
              f"| {ort / ours:.2f} | {pt / ours:.2f} | {ours / bound:.1f} |")
    if rust.get("streaming", {}).get("mode") == "windowed":
        s = rust["streaming"]
        print(f"windowed streaming (default window): encode {1 / s['encode_rtf']:.2f}x and decode "
              f"{1 / s['decode_rtf']:.2f}x real time; latency {s['latency_samples']} samples")
    elif "streaming" in rust:
        s = rust["streaming"]
        print(f"streaming: encode {1 / s['encode_rtf']:.0f}x and decode {1 / s['decode_rtf']:.0f}x real time "
              f"(together {1 / (s['encode_rtf'] + s['decode_rtf']):.0f}x); per 40 ms frame p50 {s['frame_ms_p50']:.3f} ms, "
              f"p99 {s['frame_ms_p99']:.3f} ms, max {s['frame_ms_max']:.3f} ms; state {s['state_bytes_per_stream'] / 1024:.1f} KiB "
              f"per stream; latency {s['latency_samples']} samples")
    if "multi_stream" in rust:
        ms = rust["multi_stream"]
        print(f"{ms['streams']} streams on one model, one thread, frame by frame in turn: "
              f"{ms['realtime_streams_per_core']:.1f} real-time streams per core; RSS per stream "
              f"{ms['rss_bytes_per_stream'] / 1024:.0f} KiB")
        if "batched" in ms:
            b = ms["batched"]
            print(f"the same {b['streams']} streams batched (one graph run per 40 ms tick): "
                  f"{b['realtime_streams_per_core']:.1f} real-time streams per core "
                  f"({ms['batched_vs_interleaved']:.2f}x frame by frame); tick p50 {b['tick_ms_p50']:.2f} ms, "
                  f"p99 {b['tick_ms_p99']:.2f} ms; batched plans built in {b['plans_build_s']:.2f} s; "
                  f"onnxruntime batched the same way: {ort_batched:.1f} streams per core "
                  f"(ours / ORT {b['realtime_streams_per_core'] / ort_batched:.2f})")
    print(f"model load {rust['load_s'] * 1e3:.0f} ms; RSS of a loaded model {rust['rss_model_bytes'] / 2 ** 20:.1f} MiB")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(rust=rust, ort=dict(encode_s=ort_enc, decode_s=ort_dec, batched_streams_per_core=ort_batched),
                           pytorch=dict(encode_s=pt_enc, decode_s=pt_dec),
                           flop_bound=dict(encode_s=bound_enc, decode_s=bound_dec, peak_flops=peak,
                                           encode_macs=enc_macs, decode_macs=dec_macs)), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
