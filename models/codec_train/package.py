"""Turn a training checkpoint into a FunCodec model folder and then into the runtime model folder.

    python models/codec_train/package.py --ckpt models/work/train/cpu-r1/ckpt.pt --out models/default

Writes `<work>/funcodec/{config.yaml,model.pth}` (a FunCodec checkpoint: FunCodec itself can load it)
and exports it with `models/export.py`'s exporter to `--out`, plus `training.json` (run, step, data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from codec_train.net import Codec, NetConf  # noqa: E402
from fcexport.export import export_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-id")
    ap.add_argument("--weights", choices=["checkpoint", "half", "int8"], default="int8",
                    help="how the exporter rounds the weights (see models/export.py): int8 by default, which "
                         "the runtime streams at a quarter of the bytes; checkpoint keeps them as trained")
    a = ap.parse_args()
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    conf = NetConf(**ck["conf"])
    model = Codec(conf)
    model.load_state_dict(ck["model"])
    fc_dir = os.path.join(os.path.dirname(os.path.abspath(a.ckpt)), "funcodec")
    os.makedirs(fc_dir, exist_ok=True)
    cfg_path, pth_path = os.path.join(fc_dir, "config.yaml"), os.path.join(fc_dir, "model.pth")
    with open(cfg_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(conf.funcodec_config(), f, sort_keys=False)
    torch.save(model.funcodec_state_dict(), pth_path)
    run = ck["args"]["run"]
    model_id = a.model_id or f"funcodec-rs-default-{run}-s{ck['step']}"
    m = export_model(cfg_path, pth_path, a.out, model_id, offline_graphs=False, weights=a.weights)
    info = dict(model_id=model_id, run=run, step=ck["step"], train_hours_wall=round(ck["wall"] / 3600, 3),
                data=ck.get("data"), args=ck["args"], net=conf.to_dict(), streaming_check=m["streaming"]["check"],
                weights=m["weights"])
    with open(os.path.join(a.out, "training.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(a.out, n)) for n in os.listdir(a.out))
    print(f"wrote {a.out}: {model_id}, {size / 1e6:.1f} MB, step check {m['streaming']['check']}")


if __name__ == "__main__":
    main()
