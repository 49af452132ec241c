"""Write the runtime model folder: manifest.json, encoder_*.onnx segments, decoder.onnx, codebooks.f32."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import numpy as np
import torch
from torch import nn

from . import EXPORTER_VERSION
from .config import CodecConf, UnsupportedModel, load_config
from .stream import decoder_step, encoder_step, export_step, run_steps
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


def round_weights_to_half(modules) -> int:
    """Rounds every conv and LSTM weight (after weight norm is folded in; biases stay) to the nearest
    half-precision value, kept as float32 (`export_model` rounds the codebooks too). The runtime stores
    a matrix whose values are all half-precision numbers in half precision (exactly: the same values,
    the same sums), which halves what a streaming step reads for its largest layers and the RVQ
    search. Returns how many tensors were rounded."""
    n = 0
    with torch.no_grad():
        for m in modules:
            for name, p in m.named_parameters():
                if name.split(".")[-1].startswith("weight"):
                    p.copy_(_to_half_values(p, name))
                    n += 1
    return n


def round_weights_to_int8(modules) -> int:
    """Rounds every conv and LSTM weight (after weight norm is folded in; biases stay) to an integer in
    -127..127 times a power of two, one power per output channel (Conv1d: dim 0; ConvTranspose1d: dim 1;
    LSTM: each gate row), chosen so that the channel's largest value maps to 64..127. The runtime keeps
    a matrix made only of such rows as 8-bit integers and one scale per row, a quarter of the bytes,
    with the same sums as the float values (a power-of-two scale commutes with rounding). Returns how
    many tensors were rounded."""
    n = 0
    with torch.no_grad():
        for m in modules:
            for sub in m.modules():
                if isinstance(sub, nn.ConvTranspose1d):
                    params = [(sub.weight, 1)]
                elif isinstance(sub, nn.Conv1d):
                    params = [(sub.weight, 0)]
                elif isinstance(sub, nn.LSTM):
                    params = [(p, 0) for name, p in sub.named_parameters() if name.startswith("weight")]
                else:
                    continue
                for p, dim in params:
                    if not torch.isfinite(p).all():
                        raise UnsupportedModel("a weight is not finite: export without --weights int8")
                    p.copy_(_to_int8_values(p, dim))
                    n += 1
    return n


def _to_int8_values(t: torch.Tensor, dim: int) -> torch.Tensor:
    rows = t.movedim(dim, 0)
    flat = rows.reshape(rows.shape[0], -1)
    peak = flat.abs().amax(1)
    # 2^(floor(log2 peak) - 6) puts the peak at 64..127 steps; the runtime accepts scales down to 2^-100.
    scale = torch.exp2(torch.floor(torch.log2(peak.clamp(min=2.0 ** -90))) - 6)
    q = torch.round(flat / scale[:, None]).clamp(-127, 127)
    return (q * scale[:, None]).reshape(rows.shape).movedim(0, dim)


WEIGHTS = {"checkpoint": "as in the checkpoint", "half": "rounded to half precision",
           "int8": "rounded to 8-bit integers times a power of two per output channel; codebooks to half precision"}


def _to_half_values(t: torch.Tensor, name: str) -> torch.Tensor:
    rounded = t.half().float()
    if not torch.isfinite(rounded).all():
        raise UnsupportedModel(f"{name} has values beyond half precision's range (65504): export without "
                               "--half-weights")
    return rounded


def export_model(config_path: str, checkpoint_path: str, out_dir: str, model_id: str | None = None,
                 offline_graphs: bool = True, weights: str = "checkpoint") -> dict:
    """offline_graphs=False (causal models only) ships just the step graphs: the runtime then runs offline
    coding frame by frame too, and the folder holds the weights once instead of twice.
    weights="half" rounds the weights and codebooks to half-precision values first
    (`round_weights_to_half`); "int8" rounds the weights to 8-bit integers times a power of two per
    output channel (`round_weights_to_int8`) and the codebooks to halves. The exported model then differs
    from the checkpoint by that rounding, so these are for the project's own models, never for a
    FunCodec checkpoint that must match FunCodec."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    conf = load_config(config_path)
    sd = load_state_dict(checkpoint_path)
    segments, decoder, embed = build_modules(conf, sd)
    if weights == "half":
        round_weights_to_half(segments + [decoder])
    elif weights == "int8":
        round_weights_to_int8(segments + [decoder])
    if weights != "checkpoint":
        embed = _to_half_values(embed, "the codebooks")
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

    streaming = None
    if enc.causal and enc.pad_mode == "constant" and enc.norm == "weight_norm":
        streaming = export_streaming(conf, segments, decoder, enc_entries, dspec, out_dir)

    if not offline_graphs:
        if streaming is None:
            raise UnsupportedModel("only causal zero-padded weight-norm models can ship without offline graphs")
        for name in [e["file"] for e in enc_entries] + ["decoder.onnx"]:
            os.remove(os.path.join(out_dir, name))
        enc_entries = []

    codebooks = "codebooks.f32"
    embed.numpy().astype("<f4").tofile(os.path.join(out_dir, codebooks))

    files = [e["file"] for e in enc_entries] + (["decoder.onnx"] if offline_graphs else []) + [codebooks]
    if streaming:
        files += [streaming["encoder"]["file"], streaming["decoder"]["file"]]
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
        encoder=dict(segments=enc_entries) if offline_graphs else None,
        decoder=dict(file="decoder.onnx", in_channels=conf.dimension, pad=dspec, out_samples_per_frame=conf.hop)
        if offline_graphs else None,
        streaming=streaming,
        weights=WEIGHTS[weights],
        files={f: dict(sha256=hashes[f], bytes=os.path.getsize(os.path.join(out_dir, f))) for f in files},
        source=dict(config_sha256=sha256_file(config_path), checkpoint_sha256=sha256_file(checkpoint_path),
                    config_file=os.path.basename(config_path), checkpoint_file=os.path.basename(checkpoint_path)),
    )
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _offline(segments_or_decoder, x: torch.Tensor, specs: list[dict]) -> torch.Tensor:
    """The offline graphs with the runtime's causal zero padding (frame-aligned input: no extra pad)."""
    mods = segments_or_decoder if isinstance(segments_or_decoder, list) else [segments_or_decoder]
    with torch.no_grad():
        for m, spec in zip(mods, specs):
            x = m(torch.nn.functional.pad(x, (spec["left"], spec["right"])))
    return x


def export_streaming(conf: CodecConf, segments, decoder, enc_entries, dspec, out_dir: str) -> dict:
    """Step graphs (one frame per call, explicit state) and a check that they reproduce the offline graphs."""
    estep, dstep = encoder_step(segments), decoder_step(decoder)
    e_states = export_step(estep, torch.zeros(1, 1, conf.hop), os.path.join(out_dir, "encoder_step.onnx"), OPSET)
    d_states = export_step(dstep, torch.zeros(1, conf.dimension, 1), os.path.join(out_dir, "decoder_step.onnx"),
                           OPSET)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, conf.hop * 7, generator=g) * 0.1
    z_off = _offline(segments, x, [e["pad"] for e in enc_entries])
    z_str = run_steps(estep, x, conf.hop)
    y_off = _offline(decoder, z_off, [dspec])
    y_str = run_steps(dstep, z_off, 1)
    e_diff, d_diff = float((z_off - z_str).abs().max()), float((y_off - y_str).abs().max())
    if e_diff > 1e-4 or d_diff > 1e-4:
        raise ValueError(f"step graphs disagree with the offline graphs: encoder {e_diff:.2e}, decoder {d_diff:.2e}")
    return dict(
        frames_per_step=1, lookahead_samples=0,
        encoder=dict(file="encoder_step.onnx", input="x", output="y", in_shape=[1, 1, conf.hop],
                     out_shape=[1, conf.dimension, 1], states=e_states),
        decoder=dict(file="decoder_step.onnx", input="x", output="y", in_shape=[1, conf.dimension, 1],
                     out_shape=[1, 1, conf.hop], states=d_states),
        check=dict(encoder_max_abs_diff=e_diff, decoder_max_abs_diff=d_diff),
    )
