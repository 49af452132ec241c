"""Write the runtime model folder: manifest.json, encoder_*.onnx segments, decoder.onnx, codebooks.f32."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import torch

from . import EXPORTER_VERSION
from .config import CodecConf, UnsupportedModel, load_config
from .network import (Decoder, build_encoder_segments, conv_padding, decoder_key_map, encoder_key_map,
                      load_module)

OPSET = 17


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path: str) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torch zip or legacy pickle we cannot read safely
        raise UnsupportedModel(f"{path}: cannot read checkpoint: {e}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not sd:
        raise UnsupportedModel(f"{path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def build_modules(conf: CodecConf, sd: dict):
    segments = build_encoder_segments(conf)
    decoder = Decoder(conf)
    missing: list[str] = []
    for prefix, mod in {**encoder_key_map(conf, segments), **decoder_key_map(conf, decoder)}.items():
        load_module(mod, sd, prefix, missing)
    if missing:
        raise UnsupportedModel(f"checkpoint lacks {len(missing)} tensors the config needs, e.g. {missing[:4]} "
                               "(does config.yaml belong to this model.pth?)")
    embed = sd.get("quantizer.rq.model.embed")
    if embed is None:
        raise UnsupportedModel("checkpoint lacks quantizer.rq.model.embed (the codebooks)")
    want = (conf.num_quantizers, conf.codebook_size, conf.dimension)
    if tuple(embed.shape) != want:
        raise UnsupportedModel(f"codebooks have shape {tuple(embed.shape)}, config says {want}")
    inited = sd.get("quantizer.rq.model.inited")
    if inited is not None and not bool((inited > 0).all()):
        warnings.warn("some codebooks were never initialised (inited=0): FunCodec would run k-means on the input")
    for m in segments + [decoder]:
        m.eval()
    return segments, decoder, embed.float().contiguous()


def _export(module: torch.nn.Module, example: torch.Tensor, path: str) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {2: "n"}, "y": {2: "m"}}, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def pad_spec(kernel: int, stride: int, causal: bool, mode: str) -> dict:
    left, right = conv_padding(kernel, stride, 1, causal)
    return dict(kernel=kernel, stride=stride, dilation=1, causal=causal, mode=mode, left=left, right=right)


def export_model(config_path: str, checkpoint_path: str, out_dir: str, model_id: str | None = None) -> dict:
    conf = load_config(config_path)
    sd = load_state_dict(checkpoint_path)
    segments, decoder, embed = build_modules(conf, sd)
    os.makedirs(out_dir, exist_ok=True)
    enc, dec = conf.encoder, conf.decoder

    # Trace with a length that exercises every stage; all shapes stay symbolic in the graph.
    x = torch.randn(1, 1, conf.hop * 3 + 17)
    enc_entries = []
    heads = [(enc.kernel_size, 1)] + [(2 * r, r) for r in reversed(enc.ratios)] + [(enc.last_kernel_size, 1)]
    for i, (seg, (k, s)) in enumerate(zip(segments, heads)):
        spec = pad_spec(k, s, enc.causal, enc.pad_mode)
        n = x.shape[-1]
        extra = (-(-n // s) * s - n) if s > 1 else 0  # only to build the trace input
        xp = torch.nn.functional.pad(x, (spec["left"], spec["right"] + extra),
                                     mode="reflect" if enc.pad_mode == "reflect" else "constant")
        name = f"encoder_{i}.onnx"
        _export(seg, xp, os.path.join(out_dir, name))
        with torch.no_grad():
            x = seg(xp)
        enc_entries.append(dict(file=name, in_channels=int(xp.shape[1]), out_channels=int(x.shape[1]),
                                pad=spec))
    dspec = pad_spec(dec.kernel_size, 1, dec.causal, dec.pad_mode)
    z = torch.randn(1, conf.dimension, 5 + dspec["left"] + dspec["right"])
    _export(decoder, z, os.path.join(out_dir, "decoder.onnx"))

    codebooks = "codebooks.f32"
    embed.numpy().astype("<f4").tofile(os.path.join(out_dir, codebooks))

    files = [e["file"] for e in enc_entries] + ["decoder.onnx", codebooks]
    hashes = {f: sha256_file(os.path.join(out_dir, f)) for f in files}
    model_hash = hashlib.sha256("".join(hashes[f] for f in sorted(hashes)).encode()).hexdigest()[:32]
    manifest = dict(
        format="funcodec-rs-model", format_version=1, exporter_version=EXPORTER_VERSION,
        model_id=model_id or os.path.basename(os.path.abspath(out_dir)), model_hash=model_hash,
        sample_rate=conf.sample_rate, hop=conf.hop, channels=1,
        frame_rate=conf.sample_rate / conf.hop,
        norm=enc.norm, causal=enc.causal, pad_mode=enc.pad_mode,
        # Non-causal models normalise over the whole input: no finite look-ahead makes them exact.
        lookahead_samples=0 if enc.causal else None,
        input_normalization=dict(kind="utterance_rms" if conf.audio_normalize else "none", eps=1e-8),
        quantizer=dict(num_quantizers=conf.num_quantizers, codebook_size=conf.codebook_size,
                       dim=conf.dimension, file=codebooks, dtype="f32le",
                       bitrate_sample_rate=conf.quant_sample_rate, bitrate_hop=conf.quant_hop,
                       bits_per_quantizer=conf.bits_per_quantizer),
        encoder=dict(segments=enc_entries),
        decoder=dict(file="decoder.onnx", in_channels=conf.dimension, pad=dspec, out_samples_per_frame=conf.hop),
        files={f: dict(sha256=hashes[f], bytes=os.path.getsize(os.path.join(out_dir, f))) for f in files},
        source=dict(config_sha256=sha256_file(config_path), checkpoint_sha256=sha256_file(checkpoint_path),
                    config_file=os.path.basename(config_path), checkpoint_file=os.path.basename(checkpoint_path)),
    )
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest
