"""Recover trainable weights from a shipped model folder, so training can continue from it.

    python models/codec_train/from_model.py --model models/default --out models/work/init.pt
    python models/codec_train/train.py --run gpu-r1 --init models/work/init.pt ...

Training checkpoints live with the machine that made them (`models/work/` is not committed), but
the shipped folder is: its step graphs hold every conv's weight (weight norm folded) and bias and
both LSTMs, and `codebooks.f32` the RVQ. This script rebuilds the training network (`net.Codec`)
from them:

* which ONNX initializer belongs to which parameter is found, not assumed: a fresh network with
  random weights (weight_g = |weight_v|, so its folded weight is weight_v) goes through the same
  exporter, and each of its parameters is matched to the initializer that holds its values;
* a conv gets weight_v = the folded weight and weight_g = its norm per output channel (so the
  function is the same; the split between g and v that training had is not recoverable);
* an LSTM's ONNX weights [1, 4H, in] (gates i, o, f, c) and bias [1, 8H] go back to PyTorch's
  weight_ih/weight_hh (gates i, f, g, o) and bias_ih/bias_hh;
* the codebooks become `embed`, `embed_avg = embed · count` and `cluster_size = count` with a
  uniform count (the EMA counts are not in the folder), all layers marked initialised.

The result is checked: it is exported again and its step graphs must give the shipped graphs'
outputs (onnxruntime, random input, 20 frames). The discriminator and optimiser states are not in
the folder; a run started with `--init` begins them afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from codec_train.net import Codec, NetConf, SLSTM, WNConv  # noqa: E402
from fcexport.export import export_model  # noqa: E402

# ONNX LSTM gate blocks in PyTorch's order (PyTorch i, f, g, o; ONNX i, o, f, c).
ONNX_FROM_TORCH = [0, 3, 1, 2]


def export(model: Codec, out: str) -> None:
    fc = os.path.join(out, "funcodec")
    os.makedirs(fc, exist_ok=True)
    cfg, pth = os.path.join(fc, "config.yaml"), os.path.join(fc, "model.pth")
    with open(cfg, "w", encoding="utf-8") as f:
        yaml.safe_dump(model.conf.funcodec_config(), f, sort_keys=False)
    torch.save(model.funcodec_state_dict(), pth)
    export_model(cfg, pth, os.path.join(out, "model"), "reconstruction-check", offline_graphs=False)


def initializers(folder: str) -> dict[str, np.ndarray]:
    st = json.load(open(os.path.join(folder, "manifest.json")))["streaming"]
    out = {}
    for part in ("encoder", "decoder"):
        m = onnx.load(os.path.join(folder, st[part]["file"]))
        out.update({f"{part}:{t.name}": numpy_helper.to_array(t) for t in m.graph.initializer})
    return out


def gates(w: np.ndarray, order: list[int]) -> np.ndarray:
    """Reorders the 4 gate blocks along axis 0."""
    blocks = np.split(w, 4, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def onnx_lstm(lstm: torch.nn.LSTM, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch layer weights in the exported ONNX form (W, R, B)."""
    p = {n: v.detach().numpy() for n, v in lstm.named_parameters()}
    w = gates(p[f"weight_ih_l{layer}"], ONNX_FROM_TORCH)[None]
    r = gates(p[f"weight_hh_l{layer}"], ONNX_FROM_TORCH)[None]
    b = np.concatenate([gates(p[f"bias_ih_l{layer}"], ONNX_FROM_TORCH),
                        gates(p[f"bias_hh_l{layer}"], ONNX_FROM_TORCH)])[None]
    return w, r, b


def find(value: np.ndarray, inits: dict[str, np.ndarray], used: set[str]) -> str:
    """The one initializer holding `value` (to float rounding; a bias may be stored as [1, C, 1])."""
    hits = [n for n, t in inits.items() if n not in used and t.squeeze().shape == value.squeeze().shape
            and np.allclose(t.reshape(value.shape), value, rtol=1e-5, atol=1e-7)]
    if len(hits) != 1:
        raise SystemExit(f"{len(hits)} initializers match a parameter of shape {value.shape}: {hits[:4]}")
    used.add(hits[0])
    return hits[0]


def mapping(conf: NetConf, work: str) -> tuple[Codec, dict]:
    """A fresh network and, per parameter, the initializer name its exported values land in."""
    torch.manual_seed(0)
    fresh = Codec(conf)
    fresh.quantizer.rvq.inited.fill_(1)
    export(fresh, work)
    inits = initializers(os.path.join(work, "model"))
    used: set[str] = set()
    where: dict = {}
    for name, mod in fresh.named_modules():
        if isinstance(mod, WNConv):
            where[name] = ("conv", find(mod.weight().detach().numpy(), inits, used),
                           find(mod.bias.detach().numpy(), inits, used))
        elif isinstance(mod, SLSTM):
            where[name] = ("lstm", [tuple(find(a, inits, used) for a in onnx_lstm(mod.lstm, k))
                                    for k in range(mod.lstm.num_layers)])
    return fresh, where


def rebuild(conf: NetConf, where: dict, inits: dict[str, np.ndarray], books: np.ndarray) -> Codec:
    model = Codec(conf)
    mods = dict(model.named_modules())
    back = np.argsort(ONNX_FROM_TORCH)
    with torch.no_grad():
        for name, spec in where.items():
            mod = mods[name]
            if spec[0] == "conv":
                w = torch.from_numpy(inits[spec[1]].copy())
                mod.weight_v.copy_(w)
                mod.weight_g.copy_(w.reshape(w.shape[0], -1).norm(dim=1).reshape(-1, 1, 1))
                mod.bias.copy_(torch.from_numpy(inits[spec[2]].reshape(-1).copy()))
                continue
            for k, (wn, rn, bn) in enumerate(spec[1]):
                h4 = inits[wn].shape[1]
                b = inits[bn][0]
                vals = {f"weight_ih_l{k}": gates(inits[wn][0], back), f"weight_hh_l{k}": gates(inits[rn][0], back),
                        f"bias_ih_l{k}": gates(b[:h4], back), f"bias_hh_l{k}": gates(b[h4:], back)}
                for pn, v in vals.items():
                    getattr(mod.lstm, pn).copy_(torch.from_numpy(np.ascontiguousarray(v)))
        rvq = model.quantizer.rvq
        rvq.embed.copy_(torch.from_numpy(books))
        count = torch.full_like(rvq.cluster_size, 1.0)
        rvq.cluster_size.copy_(count)
        rvq.embed_avg.copy_(rvq.embed * count[..., None])
        rvq.inited.fill_(1)
    return model


def check(a: str, b: str, frames: int = 20) -> float:
    """Largest output difference between two model folders' step graphs on the same random input."""
    import onnxruntime as ort

    worst = 0.0
    rng = np.random.default_rng(0)
    st = json.load(open(os.path.join(a, "manifest.json")))["streaming"]
    for part in ("encoder", "decoder"):
        info = st[part]
        sess = [ort.InferenceSession(os.path.join(f, info["file"]), providers=["CPUExecutionProvider"])
                for f in (a, b)]
        states = [[np.zeros(s["shape"], np.float32) for s in info["states"]] for _ in sess]
        for _ in range(frames):
            x = (rng.standard_normal(info["in_shape"]) * 0.3).astype(np.float32)
            outs = []
            for i, s in enumerate(sess):
                o = s.run(None, {"x": x, **{d["input"]: v for d, v in zip(info["states"], states[i])}})
                outs.append(o[0])
                states[i] = o[1:]
            worst = max(worst, float(np.abs(outs[0] - outs[1]).max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--out", required=True, help="state dict to write (FunCodec keys), for train.py --init")
    a = ap.parse_args()
    training = json.load(open(os.path.join(a.model, "training.json")))
    conf = NetConf(**training["net"])
    manifest = json.load(open(os.path.join(a.model, "manifest.json")))
    q = manifest["quantizer"]
    books = np.fromfile(os.path.join(a.model, q["file"]), "<f4").reshape(
        q["num_quantizers"], q["codebook_size"], q["dim"])
    with tempfile.TemporaryDirectory() as work:
        _, where = mapping(conf, os.path.join(work, "fresh"))
        model = rebuild(conf, where, initializers(a.model), books)
        export(model, os.path.join(work, "again"))
        diff = check(a.model, os.path.join(work, "again", "model"))
    print(f"{len(where)} convs and LSTMs recovered; re-exported step graphs differ from {a.model} by "
          f"at most {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("the recovered network does not reproduce the model folder")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.save(dict(conf=conf.to_dict(), model=model.state_dict(),
                    source=dict(model=a.model, model_id=manifest["model_id"], step=training.get("step"),
                                run=training.get("run"), check_max_abs_diff=diff)), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
