"""The trainable codec: FunCodec's SEANet + LSTM + RVQ architecture, made causal.

Module paths reproduce FunCodec's state-dict keys (`encoder.model.{i}.conv.conv.weight_g`, ...,
`quantizer.rq.model.embed`), so a checkpoint saved from here is a FunCodec `model.pth` that both
FunCodec and our exporter (`models/export.py`) read. Differences from the released FunCodec models,
all chosen so that the model streams exactly:

* causal convolutions: all padding on the left, in zeros (`pad_mode: constant`), so a conv's state
  between frames is just its last inputs and the stream start equals an all-zero past;
* weight norm instead of GroupNorm over the whole utterance;
* no whole-utterance RMS normalisation (`audio_normalize: false`): level robustness is learnt from
  a 40 dB range of training levels instead, which needs no side information in the bitstream.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class NetConf:
    n_filters: int = 8
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2, 2])
    dimension: int = 64
    lstm_layers: int = 2
    num_quantizers: int = 32
    codebook_size: int = 1024
    sample_rate: int = 16000

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)

    def funcodec_config(self) -> dict:
        """The FunCodec `config.yaml` that describes this network (read by FunCodec and our exporter)."""
        seanet = dict(n_filters=self.n_filters, ratios=list(self.ratios), norm="weight_norm", causal=True,
                      pad_mode="constant", seq_model="lstm", seq_layer_num=self.lstm_layers, res_seq=True,
                      true_skip=True, compress=2, kernel_size=7, last_kernel_size=7, residual_kernel_size=3,
                      n_residual_layers=1, activation="ELU", activation_params={"alpha": 1.0})
        return dict(
            model="encodec", sampling_rate=self.sample_rate, input_size=1,
            encoder="encodec_seanet_encoder", encoder_conf=dict(seanet, dimension=self.dimension),
            decoder="encodec_seanet_decoder", decoder_conf=dict(seanet, channels=1, trim_right_ratio=1.0),
            quantizer="costume_quantizer",
            quantizer_conf=dict(codebook_size=self.codebook_size, num_quantizers=self.num_quantizers,
                                sampling_rate=self.sample_rate, encoder_hop_length=self.hop,
                                ema_decay=0.99, kmeans_init=True, quantize_dropout=True, rand_num_quant=[1, 2, 4, 8, 16, 32]),
            model_conf=dict(audio_normalize=False, segment_dur=None, codec_domain="time",
                            target_sample_hz=self.sample_rate),
            # FunCodec's builder needs a discriminator section even for inference.
            discriminator="multiple_disc",
            discriminator_conf=dict(disc_conf_list=[dict(name="encodec_multi_scale_stft_discriminator",
                                                         filters=32)]),
        )

    def to_dict(self) -> dict:
        return asdict(self)


class _Holder(nn.Module):
    """Empty module used to reproduce FunCodec's nesting (`conv.conv`, `convtr.convtr`)."""


class WNConv(nn.Module):
    """Weight-normalised causal (transposed) conv holding FunCodec's weight_g / weight_v / bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, transpose: bool = False):
        super().__init__()
        ref = (nn.ConvTranspose1d if transpose else nn.Conv1d)(cin, cout, kernel, stride)
        v = ref.weight.detach().clone()
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, 1, 1))
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.kernel, self.stride, self.transpose = kernel, stride, transpose

    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return self.weight_g * v / v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        if self.transpose:
            y = F.conv_transpose1d(x, self.weight(), self.bias, s)
            return y[..., : y.shape[-1] - (k - s)]  # causal: the whole trim on the right
        total = k - s
        n = x.shape[-1]
        frames = (n - k + total) / s + 1
        extra = (math.ceil(frames) - 1) * s + (k - total) - n  # FunCodec's right pad for full windows
        return F.conv1d(F.pad(x, (total, extra)), self.weight(), self.bias, s)


class SConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, transpose: bool = False):
        super().__init__()
        name = "convtr" if transpose else "conv"
        holder = _Holder()
        holder.add_module(name, WNConv(cin, cout, kernel, stride, transpose))
        self.add_module(name, holder)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(getattr(self, self.name), self.name)(x)


class ResBlock(nn.Module):
    """FunCodec's residual block with `true_skip` (identity shortcut: no 1x1 conv, ~15 % fewer MACs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(nn.ELU(), SConv(dim, dim // 2, 3), nn.ELU(), SConv(dim // 2, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SLSTM(nn.Module):
    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(2, 0, 1)
        y, _ = self.lstm(t)
        return (y + t).permute(1, 2, 0)


class Encoder(nn.Module):
    def __init__(self, c: NetConf):
        super().__init__()
        layers: list[nn.Module] = [SConv(1, c.n_filters, 7)]
        ch = c.n_filters
        for r in reversed(c.ratios):
            layers += [ResBlock(ch), nn.ELU(), SConv(ch, ch * 2, 2 * r, r)]
            ch *= 2
        layers += [SLSTM(ch, c.lstm_layers), nn.ELU(), SConv(ch, c.dimension, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    def __init__(self, c: NetConf):
        super().__init__()
        ch = c.n_filters * 2 ** len(c.ratios)
        layers: list[nn.Module] = [SConv(c.dimension, ch, 7), SLSTM(ch, c.lstm_layers)]
        for r in c.ratios:
            layers += [nn.ELU(), SConv(ch, ch // 2, 2 * r, r, transpose=True), ResBlock(ch // 2)]
            ch //= 2
        layers += [nn.ELU(), SConv(ch, 1, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class RVQ(nn.Module):
    """Residual VQ with EMA codebooks, k-means initialisation and dead-code replacement.

    Buffers use FunCodec's names and shapes (`embed` [Q, K, D], `embed_avg`, `cluster_size`, `inited`).
    """

    def __init__(self, c: NetConf, decay: float = 0.99, eps: float = 1e-5, dead_ratio: float = 0.1):
        super().__init__()
        q, k, d = c.num_quantizers, c.codebook_size, c.dimension
        self.register_buffer("embed", torch.randn(q, k, d) * 0.1)
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(q, k))
        self.register_buffer("inited", torch.zeros(q, 1))
        # A codeword is dead when its EMA count falls below `dead_ratio` of the uniform share of a
        # batch (a fixed threshold of 2, EnCodec's, would mark every code dead at our small batches).
        self.decay, self.eps, self.dead_ratio = decay, eps, dead_ratio
        self.usage: list[torch.Tensor] = []  # per layer: codes seen since the last `take_usage`

    @staticmethod
    def nearest(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.pow(2).sum(1)[None]
        return dist.argmin(1)

    @torch.no_grad()
    def _kmeans(self, x: torch.Tensor, k: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, x.shape[0], (k,), device=x.device)
        means = x[idx].clone()
        for _ in range(iters):
            codes = self.nearest(x, means)
            counts = torch.bincount(codes, minlength=k).float()
            sums = torch.zeros_like(means).index_add_(0, codes, x)
            keep = counts == 0
            means = torch.where(keep[:, None], means, sums / counts.clamp(min=1)[:, None])
        return means, counts

    @torch.no_grad()
    def _update(self, q: int, x: torch.Tensor, codes: torch.Tensor) -> None:
        k = self.embed.shape[1]
        if self.inited[q, 0] == 0:
            means, counts = self._kmeans(x, k)
            self.embed[q].copy_(means)
            self.embed_avg[q].copy_(means * counts[:, None])  # EMA of sums, so embed = avg / count
            self.cluster_size[q].copy_(counts)
            self.inited[q, 0] = 1
            return
        onehot_sum = torch.bincount(codes, minlength=k).float()
        sums = torch.zeros(k, x.shape[1], device=x.device).index_add_(0, codes, x)
        self.cluster_size[q].mul_(self.decay).add_(onehot_sum, alpha=1 - self.decay)
        self.embed_avg[q].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size[q].sum()
        smoothed = (self.cluster_size[q] + self.eps) / (n + k * self.eps) * n
        self.embed[q].copy_(self.embed_avg[q] / smoothed[:, None])
        threshold = self.dead_ratio * x.shape[0] / k
        dead = self.cluster_size[q] < threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = x[torch.randint(0, x.shape[0], (n_dead,), device=x.device)]
            self.embed[q][dead] = pick
            self.embed_avg[q][dead] = pick * threshold
            self.cluster_size[q][dead] = threshold

    def forward(self, z: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, D, T) -> (quantized with straight-through gradient, codes (n_q, B, T), commitment loss)."""
        b, d, t = z.shape
        x = z.permute(0, 2, 1).reshape(-1, d)
        residual = x.detach()
        total = torch.zeros_like(x)
        codes = []
        for q in range(n_q):
            if self.training:
                if self.inited[q, 0] == 0:
                    self._update(q, residual, torch.empty(0, dtype=torch.long))
                c = self.nearest(residual, self.embed[q])
                self._update(q, residual, c)
                while len(self.usage) <= q:
                    self.usage.append(torch.zeros(self.embed.shape[1]))
                self.usage[q] += torch.bincount(c, minlength=self.embed.shape[1]).float().cpu()
            else:
                c = self.nearest(residual, self.embed[q])
            quant = self.embed[q][c]
            total = total + quant
            residual = residual - quant
            codes.append(c.reshape(b, t))
        commit = F.mse_loss(x, total.detach())
        out = x + (total - x).detach()
        return out.reshape(b, t, d).permute(0, 2, 1), torch.stack(codes), commit

    def take_usage(self) -> list[float]:
        """Share of each layer's codewords used since the last call (codebook utilisation)."""
        used = [float((u > 0).float().mean()) for u in self.usage]
        self.usage = []
        return used


class Quantizer(nn.Module):
    def __init__(self, c: NetConf):
        super().__init__()
        self.rq = _Holder()
        self.rq.add_module("model", RVQ(c))

    @property
    def rvq(self) -> RVQ:
        return self.rq._modules["model"]  # type: ignore[return-value]


class Codec(nn.Module):
    def __init__(self, c: NetConf):
        super().__init__()
        self.conf = c
        self.encoder = Encoder(c)
        self.quantizer = Quantizer(c)
        self.decoder = Decoder(c)

    def forward(self, wav: torch.Tensor, n_q: int):
        z = self.encoder(wav)
        zq, codes, commit = self.quantizer.rvq(z, n_q)
        y = self.decoder(zq)
        return y[..., : wav.shape[-1]], codes, commit

    def funcodec_state_dict(self) -> dict:
        """Only what FunCodec's Encodec model holds for inference (no discriminator, no optimiser)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}
