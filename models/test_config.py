"""Exporter config rules: FunCodec's class defaults and the refusals. Needs only PyYAML (runs in CI).

    python -m unittest discover -s models -p 'test_*.py'
"""

import os
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fcexport.config import UnsupportedModel, load_config, parse_config  # noqa: E402

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "funcodec_ds640.yaml")


def recipe(**sections):
    cfg = yaml.safe_load(open(RECIPE))
    for k, v in sections.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return cfg


class ConfigTest(unittest.TestCase):
    def test_released_recipe(self):
        c = load_config(RECIPE)
        self.assertEqual((c.hop, c.sample_rate, c.num_quantizers, c.codebook_size), (640, 16000, 32, 1024))
        self.assertEqual(c.encoder.norm, "time_group_norm")
        self.assertEqual(c.bits_per_quantizer, 250.0)
        self.assertTrue(c.audio_normalize)
        self.assertEqual(c.encoder.ratios, [8, 5, 4, 2, 2])

    def test_class_defaults_fill_missing_keys(self):
        cfg = recipe()
        cfg["encoder_conf"] = {}
        cfg["decoder_conf"] = {}
        del cfg["quantizer_conf"]["encoder_hop_length"]
        c = parse_config(cfg)
        self.assertEqual(c.encoder.norm, "weight_norm")  # SEANet's default
        self.assertEqual(c.hop, 320)  # ratios default [8, 5, 4, 2]
        self.assertEqual(c.quant_hop, 320)
        self.assertEqual(c.bits_per_quantizer, 500.0)

    def test_segment_dur_default_is_refused(self):
        cfg = recipe()
        del cfg["model_conf"]["segment_dur"]
        with self.assertRaisesRegex(UnsupportedModel, "segment_dur=1.0"):
            parse_config(cfg)

    def test_refusals_name_the_reason(self):
        cases = [
            (dict(model="freq_codec"), "freq_codec"),
            (dict(encoder_conf={"seq_model": "transformer"}), "seq_model"),
            (dict(encoder_conf={"add_snake_activation": True}), "snake"),
            (dict(quantizer_conf={"codec_dim": 64}), "codec_dim"),
            (dict(encoder_conf={"norm": "layer_norm"}), "layer_norm"),
            (dict(encoder_conf={"n_residual_layers": 2}), "n_residual_layers"),
            (dict(input_size=2), "mono"),
            (dict(decoder_conf={"ratios": [8, 5, 4, 2]}), "differ"),
            (dict(encoder_conf={"pad_mode": "replicate"}), "pad_mode"),
            (dict(model_conf={"codec_domain": "stft"}), "codec_domain"),
        ]
        for sections, needle in cases:
            with self.subTest(needle=needle), self.assertRaisesRegex(UnsupportedModel, needle):
                parse_config(recipe(**sections))


if __name__ == "__main__":
    unittest.main()
