"""FunCodec checkpoint -> runtime model folder (ONNX segments + codebooks + manifest)."""

EXPORTER_VERSION = "0.4.0"
