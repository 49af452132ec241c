"""The FunCodec SEANet codec rebuilt as export-friendly segments.

FunCodec pads every conv input by an amount that depends on the input length (reflect mode, plus an
`extra` right pad so the last strided window is full, plus a zero-append guard for very short inputs).
ONNX/tract graphs with a symbolic length cannot express length-dependent pads, so the network is cut
into segments that each *start* with such a conv; the runtime applies FunCodec's exact padding rule
between segments (described per segment in the manifest). Pads that never depend on the length stay
inside the graphs, written so that they are exact for every input length >= 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import CodecConf, SeanetConf


def conv_padding(kernel: int, stride: int, dilation: int, causal: bool) -> tuple[int, int]:
    """(left, right) before FunCodec's length-dependent `extra` right pad."""
    total = (kernel - 1) * dilation - (stride - 1)
    if causal:
        return total, 0
    return total - total // 2, total // 2


def static_pad(x: torch.Tensor, left: int, right: int, mode: str, min_len: int) -> torch.Tensor:
    """FunCodec `pad1d` for a stride-1 conv, as fixed-size graph ops, exact for any length >= min_len."""
    if left == 0 and right == 0:
        return x
    if mode == "constant":
        return F.pad(x, (left, right))
    if min_len > max(left, right):
        return F.pad(x, (left, right), mode="reflect")
    if right == 0 or (left <= 1 and right <= 1):
        # Short-input guard: FunCodec appends zeros before reflecting. The left reflection then reads
        # x[l..1] of the zero-extended input, and for a 1-sample right pad x[n-2] or a zero when n=1.
        zext = F.pad(x, (0, max(left, right)))
        parts = [zext[..., i:i + 1] for i in range(left, 0, -1)] + [x]
        if right:
            parts.append(F.pad(x, (2, 0))[..., -2:-1])
        return torch.cat(parts, dim=-1)
    raise NotImplementedError(f"reflect pad ({left},{right}) at inputs as short as {min_len}")


def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.elu(x, alpha)


class GroupNorm1(nn.GroupNorm):
    """GroupNorm(1, C) over channels × time whose statistics are reduced in float64.

    One group spans the whole utterance: millions of values for a long file. A float32 running sum
    over that many terms (tract's reduction) drifts by ~1e-3 on a 10 s input; float64 statistics keep
    the runtime within float rounding of FunCodec at any length. Normalisation stays float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = x.double()
        mean = xd.mean(dim=(1, 2), keepdim=True)
        var = (xd - mean).square().mean(dim=(1, 2), keepdim=True)
        inv = torch.rsqrt(var + self.eps).float()
        return (x - mean.float()) * inv * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)


class NormConv(nn.Module):
    """Conv1d (+ GroupNorm(1, C) for time_group_norm) without padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 norm: str = "time_group_norm", transpose: bool = False):
        super().__init__()
        cls = nn.ConvTranspose1d if transpose else nn.Conv1d
        self.conv = cls(cin, cout, kernel, stride, dilation=dilation)
        self.norm = GroupNorm1(1, cout, eps=1e-5) if norm == "time_group_norm" else None
        self.kernel, self.stride, self.dilation = kernel, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) if self.norm is not None else y


class ResBlock(nn.Module):
    def __init__(self, dim: int, c: SeanetConf, min_len: int):
        super().__init__()
        hidden = dim // c.compress
        self.conv1 = NormConv(dim, hidden, c.residual_kernel_size, norm=c.norm)
        self.conv2 = NormConv(hidden, dim, 1, norm=c.norm)
        self.shortcut = None if c.true_skip else NormConv(dim, dim, 1, norm=c.norm)
        self.pad = conv_padding(c.residual_kernel_size, 1, 1, c.causal)
        self.mode, self.min_len, self.alpha = c.pad_mode, min_len, c.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = static_pad(elu(x, self.alpha), *self.pad, self.mode, self.min_len)
        h = self.conv2(elu(self.conv1(h), self.alpha))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class SeqLSTM(nn.Module):
    def __init__(self, dim: int, layers: int, skip: bool):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(2, 0, 1)
        y, _ = self.lstm(t)
        if self.skip:
            y = y + t
        return y.permute(1, 2, 0)


class Segment(nn.Module):
    """One ONNX graph: a conv whose padding the runtime applies, then fixed-shape layers."""

    def __init__(self, head: NormConv, tail: list[nn.Module], alpha: float, elu_after: bool):
        super().__init__()
        self.head = head
        self.tail = nn.ModuleList(tail)
        self.alpha, self.elu_after = alpha, elu_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        for m in self.tail:
            x = m(x)
        return elu(x, self.alpha) if self.elu_after else x


class Upsample(nn.Module):
    """ELU, SConvTranspose1d with FunCodec's fixed trim, residual block."""

    def __init__(self, cin: int, cout: int, ratio: int, c: SeanetConf, trim_right_ratio: float, min_len: int):
        super().__init__()
        self.convtr = NormConv(cin, cout, 2 * ratio, ratio, norm=c.norm, transpose=True)
        total = ratio  # kernel - stride
        right = math.ceil(total * trim_right_ratio) if c.causal else total // 2
        self.trim = (total - right, right)
        self.res = ResBlock(cout, c, min_len)
        self.alpha = c.alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(elu(x, self.alpha))
        left, right = self.trim
        y = y[..., left:y.shape[-1] - right] if right else y[..., left:]
        return self.res(y)


class Decoder(nn.Module):
    def __init__(self, conf: CodecConf):
        super().__init__()
        c = conf.decoder
        mult = 2 ** len(c.ratios) if c.grow else 1
        self.conv0 = NormConv(conf.dimension, mult * c.n_filters, c.kernel_size, norm=c.norm)
        self.lstm = SeqLSTM(mult * c.n_filters, c.seq_layer_num, c.res_seq)
        ups, up_len = [], 1
        for ratio in c.ratios:
            cout = mult * c.n_filters // 2 if c.grow else mult * c.n_filters
            up_len *= ratio
            ups.append(Upsample(mult * c.n_filters, cout, ratio, c, conf.trim_right_ratio, up_len))
            if c.grow:
                mult //= 2
        self.ups = nn.ModuleList(ups)
        self.conv_last = NormConv(c.n_filters, conf.decoder_channels, c.last_kernel_size, norm=c.norm)
        self.last_pad = conv_padding(c.last_kernel_size, 1, 1, c.causal)
        self.mode, self.min_len, self.alpha = c.pad_mode, up_len, c.alpha

    def forward(self, z_padded: torch.Tensor) -> torch.Tensor:
        """z_padded: latent (B, D, T) already padded by the runtime for conv0."""
        x = self.lstm(self.conv0(z_padded))
        for up in self.ups:
            x = up(x)
        x = static_pad(elu(x, self.alpha), *self.last_pad, self.mode, self.min_len)
        return self.conv_last(x)


def build_encoder_segments(conf: CodecConf) -> list[Segment]:
    c = conf.encoder
    ratios = list(reversed(c.ratios))
    mult = 1
    heads = [NormConv(conf.input_channels, c.n_filters, c.kernel_size, norm=c.norm)]
    # Input length is only known to be >= 1 at every stage (a 1-sample utterance is legal).
    tails: list[list[nn.Module]] = [[ResBlock(c.n_filters, c, 1)]]
    for i, ratio in enumerate(ratios):
        cout = mult * c.n_filters * (2 if c.grow else 1)
        heads.append(NormConv(mult * c.n_filters, cout, 2 * ratio, ratio, norm=c.norm))
        if c.grow:
            mult *= 2
        is_last = i == len(ratios) - 1
        tails.append([SeqLSTM(mult * c.n_filters, c.seq_layer_num, c.res_seq)] if is_last
                     else [ResBlock(mult * c.n_filters, c, 1)])
    segments = [Segment(h, t, c.alpha, True) for h, t in zip(heads, tails)]
    segments.append(Segment(NormConv(mult * c.n_filters, conf.dimension, c.last_kernel_size, norm=c.norm),
                            [], c.alpha, False))
    return segments


def encoder_key_map(conf: CodecConf, segments: list[Segment]) -> dict[str, nn.Module]:
    """FunCodec state-dict prefix -> our module, following `encoder.model.{i}`."""
    n = len(conf.encoder.ratios)
    m: dict[str, nn.Module] = {"encoder.model.0": segments[0].head}
    for i in range(n):
        res = segments[i].tail[0]
        m[f"encoder.model.{1 + 3 * i}"] = res
        m[f"encoder.model.{3 + 3 * i}"] = segments[i + 1].head
    m[f"encoder.model.{1 + 3 * n}"] = segments[n].tail[0]
    m[f"encoder.model.{3 + 3 * n}"] = segments[n + 1].head
    return m


def decoder_key_map(conf: CodecConf, dec: Decoder) -> dict[str, nn.Module]:
    n = len(conf.decoder.ratios)
    m: dict[str, nn.Module] = {"decoder.model.0": dec.conv0, "decoder.model.1": dec.lstm}
    for i, up in enumerate(dec.ups):
        m[f"decoder.model.{3 + 3 * i}"] = up.convtr
        m[f"decoder.model.{4 + 3 * i}"] = up.res
    m[f"decoder.model.{3 + 3 * n}"] = dec.conv_last
    return m


def _take(sd: dict, key: str, missing: list[str]) -> torch.Tensor | None:
    if key not in sd:
        missing.append(key)
        return None
    return sd[key]


def _conv_weight(sd: dict, prefix: str, missing: list[str]) -> torch.Tensor | None:
    if prefix + ".weight" in sd:
        return sd[prefix + ".weight"]
    g, v = _take(sd, prefix + ".weight_g", missing), _take(sd, prefix + ".weight_v", missing)
    if g is None or v is None:
        return None
    # torch.nn.utils.weight_norm(dim=0): w = g * v / ||v|| with the norm over every axis but 0.
    norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
    return g * v / norm


def load_norm_conv(mod: NormConv, sd: dict, prefix: str, missing: list[str]) -> None:
    inner = "convtr" if isinstance(mod.conv, nn.ConvTranspose1d) else "conv"
    w = _conv_weight(sd, f"{prefix}.{inner}.{inner}", missing)
    b = _take(sd, f"{prefix}.{inner}.{inner}.bias", missing)
    if w is not None:
        if tuple(w.shape) != tuple(mod.conv.weight.shape):
            raise ValueError(f"{prefix}: weight shape {tuple(w.shape)} != expected {tuple(mod.conv.weight.shape)}")
        mod.conv.weight.data.copy_(w)
    if b is not None:
        mod.conv.bias.data.copy_(b)
    if mod.norm is not None:
        for name in ("weight", "bias"):
            t = _take(sd, f"{prefix}.{inner}.norm.{name}", missing)
            if t is not None:
                getattr(mod.norm, name).data.copy_(t)


def load_module(mod: nn.Module, sd: dict, prefix: str, missing: list[str]) -> None:
    if isinstance(mod, NormConv):
        load_norm_conv(mod, sd, prefix, missing)
    elif isinstance(mod, ResBlock):
        load_norm_conv(mod.conv1, sd, prefix + ".block.1", missing)
        load_norm_conv(mod.conv2, sd, prefix + ".block.3", missing)
        if mod.shortcut is not None:
            load_norm_conv(mod.shortcut, sd, prefix + ".shortcut", missing)
    elif isinstance(mod, SeqLSTM):
        for name, p in mod.lstm.named_parameters():
            t = _take(sd, f"{prefix}.lstm.{name}", missing)
            if t is not None:
                if t.shape != p.shape:
                    raise ValueError(f"{prefix}.lstm.{name}: shape {tuple(t.shape)} != {tuple(p.shape)}")
                p.data.copy_(t)
    else:
        raise TypeError(type(mod))
