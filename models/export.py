#!/usr/bin/env python3
"""Convert a FunCodec model folder (config.yaml + model.pth) into a funcodec-rs model folder.

    python models/export.py --config DIR/config.yaml --checkpoint DIR/model.pth --out my-model [--model-id NAME]
"""

import argparse
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from fcexport.config import UnsupportedModel  # noqa: E402
from fcexport.export import export_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="FunCodec config.yaml")
    p.add_argument("--checkpoint", required=True, help="FunCodec model.pth (state dict)")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--model-id", help="identity written into the manifest and every bitstream")
    p.add_argument("--weights", choices=["checkpoint", "half", "int8"], default="checkpoint",
                   help="half: round weights and codebooks to half-precision values; int8: round weights to 8-bit "
                        "integers times a power of two per output channel, codebooks to halves. Both stream "
                        "faster (fewer bytes per step), and the model then differs from the checkpoint by that "
                        "rounding: not for models that must match FunCodec")
    p.add_argument("--half-weights", dest="weights", action="store_const", const="half",
                   help="the same as --weights half")
    a = p.parse_args()
    try:
        m = export_model(a.config, a.checkpoint, a.out, a.model_id, weights=a.weights)
    except (UnsupportedModel, ValueError, FileNotFoundError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {m['model_id']} {m['quantizer']['num_quantizers']}x{m['quantizer']['codebook_size']} "
          f"codebooks, hop {m['hop']}, norm {m['norm']}, causal {m['causal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
