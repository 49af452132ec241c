"""Step graphs for causal models: one frame in, one frame out, every piece of history as explicit state.

A causal model with zero padding (`pad_mode: constant`) streams exactly: a conv's only dependence on
the past is its last `(k-1)*d - (s-1)` inputs, a transposed conv's is the overlap tail it has not yet
emitted, an LSTM's is (h, c). The graphs take those as inputs `s0..sN` and return the updated values
as outputs `n0..nN`; a fresh stream starts from zeros, which equals the zero left padding offline.
Fixed shapes (one frame) let the runtime optimise each graph once.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .network import Decoder, NormConv, ResBlock, Segment, SeqLSTM


class StepConv(nn.Module):
    def __init__(self, nc: NormConv):
        super().__init__()
        if nc.norm is not None:
            raise ValueError("GroupNorm over time cannot stream")
        self.conv = nc.conv
        self.hist = (nc.kernel - 1) * nc.dilation - (nc.stride - 1)

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(1, self.conv.in_channels, self.hist)] if self.hist > 0 else []

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.hist == 0:
            return self.conv(x), []
        xx = torch.cat([states[0], x], dim=-1)
        return self.conv(xx), [xx[..., xx.shape[-1] - self.hist:]]


class StepConvTr(nn.Module):
    """Causal transposed conv: emit T*s samples, keep the (k - s)-sample overlap tail (without bias)."""

    def __init__(self, nc: NormConv):
        super().__init__()
        self.conv = nc.conv
        self.tail = nc.kernel - nc.stride

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(1, self.conv.out_channels, self.tail)]

    def forward(self, x, states):
        y = F.conv_transpose1d(x, self.conv.weight, None, self.conv.stride)
        y = torch.cat([y[..., : self.tail] + states[0], y[..., self.tail:]], dim=-1)
        n = x.shape[-1] * self.conv.stride[0]
        return y[..., :n] + self.conv.bias.view(1, -1, 1), [y[..., n:]]


class StepLSTM(nn.Module):
    def __init__(self, m: SeqLSTM):
        super().__init__()
        self.lstm, self.skip = m.lstm, m.skip

    def state_shapes(self):
        shape = (self.lstm.num_layers, 1, self.lstm.hidden_size)
        return [shape, shape]

    def forward(self, x, states):
        t = x.permute(2, 0, 1)
        y, (h, c) = self.lstm(t, (states[0], states[1]))
        if self.skip:
            y = y + t
        return y.permute(1, 2, 0), [h, c]


class StepELU(nn.Module):
    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def state_shapes(self):
        return []

    def forward(self, x, states):
        return F.elu(x, self.alpha), []


class StepRes(nn.Module):
    def __init__(self, r: ResBlock):
        super().__init__()
        self.elu = StepELU(r.alpha)
        self.conv1, self.conv2 = StepConv(r.conv1), StepConv(r.conv2)
        self.shortcut = None if r.shortcut is None else StepConv(r.shortcut)

    def state_shapes(self):
        return self.conv1.state_shapes() + self.conv2.state_shapes()

    def forward(self, x, states):
        n1 = len(self.conv1.state_shapes())
        h, s1 = self.conv1(F.elu(x, self.elu.alpha), states[:n1])
        h, s2 = self.conv2(F.elu(h, self.elu.alpha), states[n1:])
        skip = x if self.shortcut is None else self.shortcut(x, [])[0]
        return skip + h, s1 + s2


class StepChain(nn.Module):
    """A list of step layers; forward(x, *states) -> (y, *new_states), the signature that gets exported."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.counts = [len(m.state_shapes()) for m in layers]

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [s for m in self.layers for s in m.state_shapes()]

    def forward(self, x, *states):
        out, i = [], 0
        for m, n in zip(self.layers, self.counts):
            x, new = m(x, list(states[i:i + n]))
            out += new
            i += n
        return (x, *out)

    def zero_states(self) -> list[torch.Tensor]:
        return [torch.zeros(s) for s in self.state_shapes()]

    def batch_axes(self) -> list[int]:
        """Axis of each state that holds the stream index (the runtime batches streams on it)."""
        return [1 if isinstance(m, StepLSTM) else 0 for m in self.layers for _ in m.state_shapes()]


def _tail_step(m: nn.Module, alpha: float) -> nn.Module:
    if isinstance(m, ResBlock):
        return StepRes(m)
    if isinstance(m, SeqLSTM):
        return StepLSTM(m)
    raise TypeError(type(m))


def encoder_step(segments: list[Segment]) -> StepChain:
    layers: list[nn.Module] = []
    for seg in segments:
        layers.append(StepConv(seg.head))
        layers += [_tail_step(m, seg.alpha) for m in seg.tail]
        if seg.elu_after:
            layers.append(StepELU(seg.alpha))
    return StepChain(layers)


def decoder_step(dec: Decoder) -> StepChain:
    layers: list[nn.Module] = [StepConv(dec.conv0), StepLSTM(dec.lstm)]
    for up in dec.ups:
        layers += [StepELU(up.alpha), StepConvTr(up.convtr), StepRes(up.res)]
    layers += [StepELU(dec.alpha), StepConv(dec.conv_last)]
    return StepChain(layers)


def export_step(chain: StepChain, example: torch.Tensor, path: str, opset: int) -> list[dict]:
    """Export with fixed shapes; returns the state table for the manifest."""
    import warnings

    states = chain.zero_states()
    names_in = ["x"] + [f"s{i}" for i in range(len(states))]
    names_out = ["y"] + [f"n{i}" for i in range(len(states))]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(chain, (example, *states), path, input_names=names_in, output_names=names_out,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    return [dict(input=f"s{i}", output=f"n{i}", shape=list(s.shape), batch_axis=a)
            for i, (s, a) in enumerate(zip(states, chain.batch_axes()))]


def run_steps(chain: StepChain, x: torch.Tensor, block: int) -> torch.Tensor:
    """Reference streaming run in PyTorch, `block` samples (or latent frames) per call."""
    states = chain.zero_states()
    ys = []
    with torch.no_grad():
        for i in range(0, x.shape[-1], block):
            y, *states = chain(x[..., i:i + block], *states)
            ys.append(y)
    return torch.cat(ys, dim=-1)
