"""Reconstruction losses and the multi-scale STFT discriminator."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F


class MultiScaleMel(nn.Module):
    """EnCodec-style multi-scale mel loss: L1 on mel magnitudes + L2 on log mel, windows 2^6..2^11.

    Windows shorter than 256 points are zero-padded to 256 so that no mel filter is empty; EnCodec's
    32-point scale is left out because at a hop of 8 it cost more than the codec's own training step.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64):
        super().__init__()
        self.transforms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=max(2 ** i, 256), win_length=2 ** i,
                                                 hop_length=2 ** i // 4, n_mels=n_mels, power=1.0,
                                                 norm="slaney", mel_scale="slaney")
            for i in range(6, 12))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = y.new_zeros(())
        for t in self.transforms:
            my, mx = t(y), t(x)
            loss = loss + F.l1_loss(my, mx) + F.mse_loss(torch.log(my + 1e-5), torch.log(mx + 1e-5)) ** 0.5
        return loss / len(self.transforms)


class MagnitudeSpectrum(nn.Module):
    """Linear-frequency magnitude loss (spectral convergence + log-magnitude L1) at three resolutions."""

    def __init__(self, ffts=(256, 512, 1024)):
        super().__init__()
        self.ffts = ffts
        for n in ffts:
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loss = y.new_zeros(())
        y, x = y.squeeze(1), x.squeeze(1)
        for n in self.ffts:
            w = getattr(self, f"win{n}")
            sy = torch.stft(y, n, n // 4, window=w, return_complex=True).abs()
            sx = torch.stft(x, n, n // 4, window=w, return_complex=True).abs()
            sc = torch.linalg.norm(sx - sy) / (torch.linalg.norm(sx) + 1e-7)
            loss = loss + sc + F.l1_loss(torch.log(sy + 1e-5), torch.log(sx + 1e-5))
        return loss / len(self.ffts)


class HarmonicSpectrum(nn.Module):
    """Relative L1 of fine linear magnitude spectra (1024 and 2048 points: 16 and 8 Hz bins) of
    pre-emphasised signals, per crop: |(|Y| - |X|)| summed over bins and frames, divided by the sum
    of |X|.

    The mel bands above about 1 kHz are wider than the spacing of a voice's harmonics, and the
    spectral-convergence term above is a norm over the whole batch, ruled by the loudest crop's
    strongest low harmonics: neither sees whether the harmonics between 1 and 4 kHz are there or
    smeared into noise, which is what the decoders trained without it do. A linear L1 is ruled by the
    spectral peaks, pre-emphasis (1 - 0.9 z^-1) lifts 1-4 kHz to the level of the fundamental region,
    and the per-crop normalisation gives each crop the same say at any level.
    """

    def __init__(self, ffts=(1024, 2048), emphasis: float = 0.9):
        super().__init__()
        self.ffts, self.emphasis = ffts, emphasis
        for n in ffts:
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y, x = y.squeeze(1), x.squeeze(1)
        y = torch.cat([y[:, :1], y[:, 1:] - self.emphasis * y[:, :-1]], 1)
        x = torch.cat([x[:, :1], x[:, 1:] - self.emphasis * x[:, :-1]], 1)
        loss = y.new_zeros(())
        for n in self.ffts:
            w = getattr(self, f"win{n}")
            sy = torch.stft(y, n, n // 4, window=w, return_complex=True).abs()
            sx = torch.stft(x, n, n // 4, window=w, return_complex=True).abs()
            rel = (sy - sx).abs().sum((1, 2)) / (sx.sum((1, 2)) + 1e-5)
            loss = loss + rel.mean()
        return loss / len(self.ffts)


class STFTDisc(nn.Module):
    """One scale of the EnCodec MS-STFT discriminator: 2-D convs over (real, imag) spectrograms."""

    def __init__(self, n_fft: int, ch: int = 16):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("win", torch.hann_window(n_fft), persistent=False)
        wn = nn.utils.parametrizations.weight_norm
        self.convs = nn.ModuleList([
            wn(nn.Conv2d(2, ch, (3, 9), padding=(1, 4))),
            wn(nn.Conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4))),
            wn(nn.Conv2d(ch, ch, (3, 9), (1, 2), dilation=(2, 1), padding=(2, 4))),
            wn(nn.Conv2d(ch, ch, (3, 9), (1, 2), dilation=(4, 1), padding=(4, 4))),
            wn(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1))),
        ])
        self.out = wn(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s = torch.stft(x.squeeze(1), self.n_fft, self.n_fft // 4, window=self.win, return_complex=True)
        h = torch.stack([s.real, s.imag], 1).transpose(2, 3)  # (B, 2, T, F)
        feats = []
        for c in self.convs:
            h = F.leaky_relu(c(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MSSTFTDisc(nn.Module):
    def __init__(self, ffts=(256, 512, 1024), ch: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(STFTDisc(n, ch) for n in ffts)

    def forward(self, x: torch.Tensor):
        return [d(x) for d in self.discs]


def disc_loss(real, fake) -> torch.Tensor:
    loss = real[0][0].new_zeros(())
    for (lr, _), (lf, _) in zip(real, fake):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(real)


def gen_adv_losses(real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    adv, feat = fake[0][0].new_zeros(()), fake[0][0].new_zeros(())
    for (_, fr), (lf, ff) in zip(real, fake):
        adv = adv + F.relu(1 - lf).mean()
        for a, b in zip(fr, ff):
            feat = feat + F.l1_loss(b, a.detach()) / (a.detach().abs().mean() + 1e-5)
    return adv / len(fake), feat / (len(fake) * len(fake[0][1]))
