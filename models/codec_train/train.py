"""Train the default causal codec. Resumable: re-running the same command continues from the last checkpoint.

    python models/codec_train/train.py --run cpu-r1 --data models/work/corpus-s1 --max-minutes 150

Every `--log-every` steps a JSON line goes to `models/runs/<run>.jsonl` (losses, codebook utilisation,
steps/s, wall time); checkpoints go to `--work/<run>/ckpt.pt` (atomic rename). `package.py` turns a
checkpoint into the shipped model folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time

import numpy as np
import soundfile as sf
import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from codec_train.losses import (HarmonicSpectrum, MSSTFTDisc, MagnitudeSpectrum, MultiScaleMel,  # noqa: E402
                                disc_loss, gen_adv_losses)
from codec_train.net import Codec, NetConf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(os.path.dirname(HERE), "runs")
NQ_CHOICES = [1, 2, 4, 8, 16, 32]  # structured quantizer dropout: the bit rates the model must serve


def read_manifest(root: str, split: str) -> list[tuple[str, str]]:
    """(id, path) of a split; a corpus still being generated has no manifest yet: take its FLACs."""
    rows = []
    if not os.path.exists(os.path.join(root, "manifest.tsv")):
        folder = os.path.join(root, split)
        names = sorted(n for n in os.listdir(folder) if n.endswith(".flac")) if os.path.isdir(folder) else []
        return [(n[:-5], os.path.join(folder, n)) for n in names]
    with open(os.path.join(root, "manifest.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            if r["split"] == split:
                rows.append((r["id"], os.path.join(root, split, r["id"] + ".flac")))
    return rows


class Corpus:
    """All training audio in memory as int16 (2 h is 230 MB); crops are drawn in proportion to length."""

    def __init__(self, roots: list[str], split: str, sample_rate: int):
        chunks, self.ids = [], []
        for root in roots:
            for cid, path in read_manifest(root, split):
                if not os.path.exists(path):
                    continue
                a, sr = sf.read(path, dtype="int16", always_2d=True)
                if sr != sample_rate:
                    raise ValueError(f"{path}: {sr} Hz, expected {sample_rate}")
                chunks.append(a[:, 0])
                self.ids.append(cid)
        if not chunks:
            raise SystemExit(f"no {split} audio under {roots}")
        self.lengths = np.array([len(c) for c in chunks])
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.audio = np.concatenate(chunks)
        self.clips = chunks

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / 16000

    def batch(self, rng: np.random.Generator, n: int, length: int) -> torch.Tensor:
        out = np.zeros((n, 1, length), dtype=np.float32)
        p = self.lengths / self.lengths.sum()
        for i, c in enumerate(rng.choice(len(self.lengths), size=n, p=p)):
            clip = self.clips[c]
            off = int(rng.integers(0, max(1, len(clip) - length + 1)))
            seg = clip[off:off + length].astype(np.float32) / 32768
            out[i, 0, :len(seg)] = seg
        return torch.from_numpy(level_augment(out, rng))


def level_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random level over 40 dB (RMS -45..-5 dBFS, peak kept below 0.99) and random polarity."""
    for i in range(x.shape[0]):
        rms = float(np.sqrt(np.mean(x[i] ** 2))) + 1e-8
        gain = 10 ** (rng.uniform(-45, -5) / 20) / rms
        peak = float(np.abs(x[i]).max()) * gain
        if peak > 0.99:
            gain *= 0.99 / peak
        x[i] *= gain * (1 if rng.random() < 0.5 else -1)
    return x


def si_snr(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    s = (y * x).sum(-1, keepdim=True) / (x.pow(2).sum(-1, keepdim=True) + 1e-8) * x
    return 10 * torch.log10(s.pow(2).sum(-1) / ((y - s).pow(2).sum(-1) + 1e-8) + 1e-8)


def wav_loss(y: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(y, x)
    if kind == "sisnr":
        return -si_snr(y.squeeze(1), x.squeeze(1)).mean()
    err = (y - x).abs().mean(-1)
    return (err / (x.abs().mean(-1) + 1e-5)).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True, help="comma-separated corpus folders (make_corpus.py output)")
    ap.add_argument("--valid", help="corpus folder(s) whose valid split is scored during training "
                    "(default: --data); keep it fixed across resumes so the curves compare")
    ap.add_argument("--work", default="models/work/train")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (with a checkpoint) after this long")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.28, help="crop length")
    ap.add_argument("--lr", type=float, help="Adam learning rate: 5e-4 for a new run; given on a resumed run, it "
                    "replaces the checkpoint's (to anneal a run that has flattened)")
    ap.add_argument("--adv-start", type=int, default=20000, help="step at which the discriminator joins")
    ap.add_argument("--disc-ch", type=int, default=16,
                    help="channels of each discriminator conv (8 costs about a third of 16's multiply-adds); a "
                    "resumed run whose saved discriminator has other channels starts a fresh one")
    ap.add_argument("--disc-crops", type=int, default=0,
                    help="the discriminator sees only the first N crops of each batch (0: all): a cheaper "
                    "adversarial stage on a CPU")
    ap.add_argument("--wav-weight", type=float, default=0.1, help="weight of the waveform L1 loss")
    ap.add_argument("--wav-loss", choices=["l1", "rel", "sisnr"], default="l1",
                    help="l1: plain L1 (dominated by the loudest crops of the 40 dB level range); "
                         "rel: each crop's L1 divided by its mean absolute level, so every level counts; "
                         "sisnr: minus the scale-invariant SNR in dB (its gradient does not shrink the level)")
    ap.add_argument("--harm-weight", type=float, default=0.0,
                    help="weight of the fine pre-emphasised magnitude loss (losses.HarmonicSpectrum); 0: off")
    ap.add_argument("--validate", action="store_true",
                    help="print the run's validation figures at its checkpoint (as in the log) and exit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-filters", type=int, default=8)
    ap.add_argument("--dimension", type=int, default=64)
    ap.add_argument("--init", help="a new run starts from these weights (from_model.py's output: a shipped "
                    "model folder's network) instead of random ones; ignored when the run resumes")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    conf = NetConf(n_filters=args.n_filters, dimension=args.dimension)
    model = Codec(conf).to(dev)
    disc = MSSTFTDisc(ch=args.disc_ch).to(dev)
    mel, mag = MultiScaleMel(conf.sample_rate).to(dev), MagnitudeSpectrum().to(dev)
    harm = HarmonicSpectrum().to(dev)
    lr = args.lr or 5e-4
    opt_g = torch.optim.Adam(model.parameters(), lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr, betas=(0.5, 0.9))

    run_dir = os.path.join(args.work, args.run)
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(RUNS, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    step, wall = 0, 0.0
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ck["conf"] != conf.to_dict():
            raise SystemExit(f"{ckpt_path} was trained with {ck['conf']}, not {conf.to_dict()}")
        model.load_state_dict(ck["model"])
        opt_g.load_state_dict(ck["opt_g"])
        if all(v.shape == ck["disc"][k].shape for k, v in disc.state_dict().items()):
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])
        else:
            print(f"a fresh discriminator with {args.disc_ch} channels (the checkpoint's has others)", flush=True)
        step, wall = ck["step"], ck["wall"]
        if args.lr:
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = args.lr
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed {args.run} at step {step} ({wall / 3600:.2f} h trained), lr {opt_g.param_groups[0]['lr']}", flush=True)
    elif args.init:
        init = torch.load(args.init, map_location=dev, weights_only=False)
        if init["conf"] != conf.to_dict():
            raise SystemExit(f"{args.init} is a {init['conf']} network, not {conf.to_dict()}")
        model.load_state_dict(init["model"])
        print(f"new run {args.run} from {args.init} ({init['source']})", flush=True)

    roots = args.data.split(",")
    train = Corpus(roots, "train", conf.sample_rate)
    valid = Corpus((args.valid or args.data).split(","), "valid", conf.sample_rate)
    print(f"train {train.seconds / 3600:.2f} h ({len(train.ids)} clips), valid {valid.seconds / 60:.1f} min",
          flush=True)
    vrng = np.random.default_rng(1234)  # the same validation crops every time
    vbatch = valid.batch(vrng, min(32, len(valid.ids)), int(2.56 * conf.sample_rate)).to(dev)

    def validation() -> dict:
        """Validation mel loss, SI-SNR and fine-magnitude loss at 8 and 32 quantizers."""
        rec = {}
        model.eval()
        with torch.no_grad():
            for nq in (8, 32):
                vy, _, _ = model(vbatch, nq)
                rec[f"val_mel_q{nq}"] = round(mel(vy, vbatch).item(), 5)
                rec[f"val_sisnr_q{nq}"] = round(si_snr(vy.squeeze(1), vbatch.squeeze(1)).mean().item(), 3)
                rec[f"val_harm_q{nq}"] = round(harm(vy, vbatch).item(), 5)
        model.train()
        return rec

    if args.validate:
        print(json.dumps({"run": args.run, "step": step, **validation()}), flush=True)
        return

    def save() -> None:
        tmp = ckpt_path + ".tmp"
        torch.save(dict(conf=conf.to_dict(), model=model.state_dict(), disc=disc.state_dict(),
                        opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), step=step, wall=wall,
                        rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(), args=vars(args),
                        data=dict(roots=roots, train_clips=len(train.ids), train_hours=train.seconds / 3600)),
                   tmp)
        os.replace(tmp, ckpt_path)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    length = int(args.seconds * conf.sample_rate) // conf.hop * conf.hop
    n_d = args.disc_crops or args.batch  # crops the discriminator sees
    t_start, t_last = time.time(), time.time()
    acc: dict[str, float] = {}
    log = open(os.path.join(RUNS, f"{args.run}.jsonl"), "a", encoding="utf-8")
    model.train()
    while step < args.steps and not stop["now"]:
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            break
        x = train.batch(rng, args.batch, length).to(dev)
        n_q = int(rng.choice(NQ_CHOICES))
        y, _, commit = model(x, n_q)
        l_mel, l_mag, l_wav = mel(y, x), mag(y, x), wav_loss(y, x, args.wav_loss)
        loss = l_mel + l_mag + args.wav_weight * l_wav + commit
        parts = dict(mel=l_mel.item(), mag=l_mag.item(), wav=l_wav.item(), commit=commit.item())
        if args.harm_weight:
            l_harm = harm(y, x)
            loss = loss + args.harm_weight * l_harm
            parts["harm"] = l_harm.item()
        if step >= args.adv_start:
            fake, real = disc(y[:n_d]), disc(x[:n_d])
            adv, feat = gen_adv_losses(real, fake)
            loss = loss + 0.3 * adv + 1.0 * feat
            parts.update(adv=adv.item(), feat=feat.item())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt_g.step()
        if step >= args.adv_start:
            d = disc_loss(disc(x[:n_d]), disc(y[:n_d].detach()))
            opt_d.zero_grad(set_to_none=True)
            d.backward()
            opt_d.step()
            parts["disc"] = d.item()
        for k, v in parts.items():
            acc[k] = acc.get(k, 0.0) + v
        acc["_n"] = acc.get("_n", 0.0) + 1
        step += 1
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % args.log_every == 0:
            n = acc.pop("_n", 1.0)
            rec = {"step": step, "wall_h": round(wall / 3600, 4), "n": int(n), "lr": opt_g.param_groups[0]["lr"],
                   "wav_loss": f"{args.wav_weight:g}*{args.wav_loss}"}
            if args.harm_weight:
                rec["harm_weight"] = args.harm_weight
            rec.update({k: round(v / n, 5) for k, v in acc.items()})
            rec["usage"] = [round(u, 3) for u in model.quantizer.rvq.take_usage()]
            rec.update(validation())
            acc = {}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps({k: v for k, v in rec.items() if k != "usage"}), flush=True)
        if step % args.ckpt_every == 0:
            save()
    save()
    print(f"stopped at step {step}; checkpoint {ckpt_path}", flush=True)


if __name__ == "__main__":
    random.seed(0)
    main()
