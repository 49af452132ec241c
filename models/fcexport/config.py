"""Read a FunCodec `config.yaml`, apply the class defaults, refuse what the runtime cannot run.

Defaults are those of funcodec 0.2.0: SEANetEncoder/SEANetDecoder, CostumeQuantizer and Encodec.
A dumped config normally sets every key; recipe configs rely on these defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import yaml

SEANET_DEFAULTS = dict(
    n_filters=32, n_residual_layers=1, ratios=[8, 5, 4, 2], activation="ELU",
    activation_params={"alpha": 1.0}, norm="weight_norm", norm_params={}, kernel_size=7,
    last_kernel_size=7, residual_kernel_size=3, dilation_base=2, causal=False, pad_mode="reflect",
    true_skip=False, compress=2, seq_model="lstm", seq_layer_num=2, res_seq=True,
    add_snake_activation=False,
)
ENCODER_DEFAULTS = dict(SEANET_DEFAULTS, dimension=128, double_filters=True)
DECODER_DEFAULTS = dict(SEANET_DEFAULTS, channels=1, final_activation=None, trim_right_ratio=1.0,
                        half_filters=True)
QUANTIZER_DEFAULTS = dict(codebook_size=1024, num_quantizers=8, sampling_rate=24000,
                          encoder_hop_length=320, q0_ds_ratio=1, codec_dim=None, codec_range=None)
MODEL_DEFAULTS = dict(audio_normalize=True, segment_dur=1.0, overlap_ratio=0.01, codec_domain="time",
                      bypass_quantizer=False, target_sample_hz=24000)

SUPPORTED_NORMS = ("time_group_norm", "weight_norm")
SUPPORTED_PAD_MODES = ("reflect", "constant")


class UnsupportedModel(ValueError):
    """The checkpoint is valid FunCodec but not something this runtime runs."""


@dataclass
class SeanetConf:
    n_filters: int
    ratios: list[int]
    norm: str
    kernel_size: int
    last_kernel_size: int
    residual_kernel_size: int
    causal: bool
    pad_mode: str
    true_skip: bool
    compress: int
    seq_layer_num: int
    res_seq: bool
    grow: bool  # double_filters (encoder) / half_filters (decoder)
    alpha: float
    extra: dict = field(default_factory=dict)


@dataclass
class CodecConf:
    sample_rate: int
    input_channels: int
    dimension: int
    encoder: SeanetConf
    decoder: SeanetConf
    decoder_channels: int
    trim_right_ratio: float
    num_quantizers: int
    codebook_size: int
    quant_sample_rate: int
    quant_hop: int
    audio_normalize: bool

    @property
    def hop(self) -> int:
        return math.prod(self.encoder.ratios)

    @property
    def bits_per_quantizer(self) -> float:
        """FunCodec's `get_bandwidth_per_quantizer` (encode side): log2(bins) * sr / encoder_hop_length."""
        return math.log2(self.codebook_size) * self.quant_sample_rate / self.quant_hop


def _merged(section: dict | None, defaults: dict, name: str) -> dict:
    section = dict(section or {})
    unknown = set(section) - set(defaults) - {"input_size"}
    if unknown:
        raise UnsupportedModel(f"{name}: unsupported keys {sorted(unknown)}")
    return {**defaults, **section}


def _seanet(d: dict, name: str, grow_key: str) -> SeanetConf:
    if d["norm"] not in SUPPORTED_NORMS:
        raise UnsupportedModel(f"{name}.norm={d['norm']!r}: only {SUPPORTED_NORMS} are supported")
    if d["pad_mode"] not in SUPPORTED_PAD_MODES:
        raise UnsupportedModel(f"{name}.pad_mode={d['pad_mode']!r}: only {SUPPORTED_PAD_MODES} are supported")
    if d["activation"] != "ELU":
        raise UnsupportedModel(f"{name}.activation={d['activation']!r}: only ELU is supported")
    if d["seq_model"] != "lstm":
        raise UnsupportedModel(f"{name}.seq_model={d['seq_model']!r}: only lstm is supported")
    if d["n_residual_layers"] != 1:
        raise UnsupportedModel(f"{name}.n_residual_layers={d['n_residual_layers']}: only 1 is supported")
    if d["add_snake_activation"]:
        raise UnsupportedModel(f"{name}.add_snake_activation: snake activations are not supported")
    if d["norm_params"]:
        raise UnsupportedModel(f"{name}.norm_params={d['norm_params']!r}: only the defaults are supported")
    if any(r < 1 for r in d["ratios"]) or not d["ratios"]:
        raise UnsupportedModel(f"{name}.ratios={d['ratios']!r}: must be positive integers")
    return SeanetConf(
        n_filters=int(d["n_filters"]), ratios=[int(r) for r in d["ratios"]], norm=d["norm"],
        kernel_size=int(d["kernel_size"]), last_kernel_size=int(d["last_kernel_size"]),
        residual_kernel_size=int(d["residual_kernel_size"]), causal=bool(d["causal"]),
        pad_mode=d["pad_mode"], true_skip=bool(d["true_skip"]), compress=int(d["compress"]),
        seq_layer_num=int(d["seq_layer_num"]), res_seq=bool(d["res_seq"]), grow=bool(d[grow_key]),
        alpha=float(d["activation_params"].get("alpha", 1.0)),
    )


def load_config(path: str) -> CodecConf:
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise UnsupportedModel(f"{path}: not a FunCodec config (expected a YAML mapping)")
    return parse_config(cfg)


def parse_config(cfg: dict) -> CodecConf:
    model = cfg.get("model", "encodec")
    if model != "encodec":
        raise UnsupportedModel(f"model={model!r}: only the time-domain 'encodec' model is supported "
                               "(freq_codec and others are not)")
    for key, want in (("encoder", "encodec_seanet_encoder"), ("decoder", "encodec_seanet_decoder"),
                      ("quantizer", "costume_quantizer")):
        got = cfg.get(key, want)
        if got != want:
            raise UnsupportedModel(f"{key}={got!r}: only {want!r} is supported")
    enc = _merged(cfg.get("encoder_conf"), ENCODER_DEFAULTS, "encoder_conf")
    dec = _merged(cfg.get("decoder_conf"), DECODER_DEFAULTS, "decoder_conf")
    qc = {k: v for k, v in (cfg.get("quantizer_conf") or {}).items()
          if k not in ("ema_decay", "kmeans_init", "quantize_dropout", "rand_num_quant", "use_ddp", "input_size")}
    qc = _merged(qc, QUANTIZER_DEFAULTS, "quantizer_conf")
    mc = {k: v for k, v in (cfg.get("model_conf") or {}).items()
          if k in MODEL_DEFAULTS}  # the rest are training losses
    mc = {**MODEL_DEFAULTS, **mc}

    if mc["codec_domain"] != "time":
        raise UnsupportedModel(f"model_conf.codec_domain={mc['codec_domain']!r}: only 'time' is supported")
    if mc["segment_dur"] is not None:
        raise UnsupportedModel(
            f"model_conf.segment_dur={mc['segment_dur']}: segmented FunCodec models are not supported "
            "(note that 1.0 is the Encodec class default when the config omits the key; "
            "the released models set it to null)")
    if mc["bypass_quantizer"]:
        raise UnsupportedModel("model_conf.bypass_quantizer: a codec without quantizer cannot be exported")
    if qc["codec_dim"] is not None or qc["codec_range"] is not None:
        raise UnsupportedModel("quantizer_conf.codec_dim/codec_range (projected or tanh-bounded codes) "
                               "are not supported")
    if qc["q0_ds_ratio"] != 1:
        raise UnsupportedModel("quantizer_conf.q0_ds_ratio != 1 is not supported")
    if dec["final_activation"] is not None:
        raise UnsupportedModel(f"decoder_conf.final_activation={dec['final_activation']!r} is not supported")
    if list(enc["ratios"]) != list(dec["ratios"]):
        raise UnsupportedModel(f"encoder ratios {enc['ratios']} differ from decoder ratios {dec['ratios']}")
    input_size = int(cfg.get("input_size", 1) or 1)
    if input_size != 1 or int(dec["channels"]) != 1:
        raise UnsupportedModel("only mono models (input_size 1, decoder channels 1) are supported")
    sample_rate = int(cfg.get("sampling_rate", mc["target_sample_hz"]))
    conf = CodecConf(
        sample_rate=sample_rate, input_channels=input_size, dimension=int(enc["dimension"]),
        encoder=_seanet(enc, "encoder_conf", "double_filters"),
        decoder=_seanet(dec, "decoder_conf", "half_filters"),
        decoder_channels=int(dec["channels"]), trim_right_ratio=float(dec["trim_right_ratio"]),
        num_quantizers=int(qc["num_quantizers"]), codebook_size=int(qc["codebook_size"]),
        quant_sample_rate=int(qc["sampling_rate"]), quant_hop=int(qc["encoder_hop_length"]),
        audio_normalize=bool(mc["audio_normalize"]),
    )
    if conf.encoder.norm != conf.decoder.norm or conf.encoder.causal != conf.decoder.causal:
        raise UnsupportedModel("encoder and decoder must share norm type and causality")
    if conf.encoder.causal and conf.encoder.norm == "time_group_norm":
        raise UnsupportedModel("causal time_group_norm is rejected by FunCodec itself")
    return conf
