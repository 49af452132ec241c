//! `manifest.json` of an exported model folder: what the runtime needs to know, checked on load.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::padding::PadSpec;

pub const FORMAT: &str = "funcodec-rs-model";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub exporter_version: String,
    pub model_id: String,
    pub model_hash: String,
    pub sample_rate: u32,
    pub hop: usize,
    pub norm: String,
    pub causal: bool,
    pub lookahead_samples: Option<u64>,
    pub input_normalization: InputNormalization,
    pub quantizer: QuantizerInfo,
    /// Offline graphs (any length in one call); absent when a causal model ships step graphs only.
    pub encoder: Option<EncoderInfo>,
    pub decoder: Option<DecoderInfo>,
    /// Step graphs of a causal model: one frame per call with explicit state.
    #[serde(default)]
    pub streaming: Option<StreamingInfo>,
    pub files: BTreeMap<String, FileInfo>,
    #[serde(default)]
    pub source: serde_json::Value,
    /// How the exporter wrote the weights: "as in the checkpoint", or how it rounded them
    /// (exporter option `--weights half|int8`); absent in older manifests.
    #[serde(default)]
    pub weights: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputNormalization {
    pub kind: String,
    pub eps: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuantizerInfo {
    pub num_quantizers: usize,
    pub codebook_size: usize,
    pub dim: usize,
    pub file: String,
    /// FunCodec's bit-rate maths uses the quantizer's own rate and hop from the config, which may
    /// differ from the audio hop (the ds640 recipe once lacked `encoder_hop_length`).
    pub bitrate_sample_rate: u32,
    pub bitrate_hop: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    pub file: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub pad: PadSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EncoderInfo {
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DecoderInfo {
    pub file: String,
    pub in_channels: usize,
    pub pad: PadSpec,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamingInfo {
    pub frames_per_step: usize,
    pub lookahead_samples: usize,
    pub encoder: StepGraphInfo,
    pub decoder: StepGraphInfo,
}

/// One step graph: input `x` plus states `s0..sN` in, output `y` plus the new states `n0..nN` out.
#[derive(Debug, Clone, Deserialize)]
pub struct StepGraphInfo {
    pub file: String,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    pub states: Vec<StateInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StateInfo {
    pub input: String,
    pub output: String,
    pub shape: Vec<usize>,
    /// The axis that holds the stream (batch) index: 0 for conv history `[1, C, K]`, 1 for LSTM
    /// `(h, c)` `[layers, 1, hidden]`. Written by exporter 0.2 on; older manifests get
    /// [`StateInfo::batch_axis`]'s rule.
    #[serde(default, rename = "batch_axis")]
    pub batch_axis_field: Option<usize>,
}

impl StateInfo {
    /// The stream axis; without the manifest field, LSTM-shaped `[L > 1, 1, H]` states use axis 1
    /// and everything else axis 0 (the exporter's two layouts).
    pub fn batch_axis(&self) -> usize {
        self.batch_axis_field
            .unwrap_or(match self.shape.as_slice() {
                [l, 1, _] if *l > 1 => 1,
                _ => 0,
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let err = |msg: String| Error::Model {
            path: dir.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                err("no manifest.json (is this an exported model folder? \
                 convert a FunCodec checkpoint with models/export.py)"
                    .into())
            }
            _ => Error::io(&path, e),
        })?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| err(format!("manifest.json: {e}")))?;
        m.validate().map_err(err)?;
        Ok(m)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format is {:?}, expected {FORMAT:?}",
                self.format
            ));
        }
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is newer than this runtime ({FORMAT_VERSION}); upgrade funcodec",
                self.format_version
            ));
        }
        if self.input_normalization.kind != "utterance_rms"
            && self.input_normalization.kind != "none"
        {
            return Err(format!(
                "unknown input normalisation {:?}",
                self.input_normalization.kind
            ));
        }
        let q = &self.quantizer;
        if q.num_quantizers == 0 || q.codebook_size < 2 || q.codebook_size > 65536 || q.dim == 0 {
            return Err(format!(
                "bad quantizer shape {}x{}x{}",
                q.num_quantizers, q.codebook_size, q.dim
            ));
        }
        if self.sample_rate == 0 || self.hop == 0 || q.bitrate_hop == 0 {
            return Err("sample_rate, hop and bitrate_hop must be positive".into());
        }
        let mut files = vec![&q.file];
        match (&self.encoder, &self.decoder) {
            (Some(enc), Some(dec)) => {
                if enc.segments.is_empty() {
                    return Err("encoder has no segments".into());
                }
                for s in enc.segments.iter().map(|s| &s.pad).chain([&dec.pad]) {
                    if s.kernel == 0
                        || s.stride == 0
                        || s.dilation == 0
                        || (s.kernel - 1) * s.dilation + 1 < s.stride
                    {
                        return Err(format!("bad conv padding spec {s:?}"));
                    }
                }
                files.extend(enc.segments.iter().map(|s| &s.file));
                files.push(&dec.file);
            }
            (None, None) if self.streaming.is_some() => {}
            _ => return Err("needs offline encoder and decoder graphs, or step graphs".into()),
        }
        if let Some(st) = &self.streaming {
            if st.frames_per_step != 1 {
                return Err(format!(
                    "step graphs of {} frames are not supported",
                    st.frames_per_step
                ));
            }
            let (hop, dim) = (self.hop, q.dim);
            if st.encoder.in_shape != [1, 1, hop] || st.encoder.out_shape != [1, dim, 1] {
                return Err(format!(
                    "encoder step graph shapes {:?} -> {:?} do not match hop {hop}, dim {dim}",
                    st.encoder.in_shape, st.encoder.out_shape
                ));
            }
            if st.decoder.in_shape != [1, dim, 1] || st.decoder.out_shape != [1, 1, hop] {
                return Err(format!(
                    "decoder step graph shapes {:?} -> {:?} do not match hop {hop}, dim {dim}",
                    st.decoder.in_shape, st.decoder.out_shape
                ));
            }
            for s in st.encoder.states.iter().chain(&st.decoder.states) {
                if s.shape.get(s.batch_axis()) != Some(&1) {
                    return Err(format!(
                        "state {} of shape {:?} has no stream axis {} of size 1",
                        s.input,
                        s.shape,
                        s.batch_axis()
                    ));
                }
            }
            files.push(&st.encoder.file);
            files.push(&st.decoder.file);
        }
        for f in files {
            if !self.files.contains_key(f) {
                return Err(format!("file {f} is not listed with a checksum"));
            }
        }
        Ok(())
    }

    /// Reads a listed file, checking its size and SHA-256 so a truncated or swapped file is caught.
    pub fn read_checked(&self, dir: &Path, file: &str) -> Result<Vec<u8>> {
        let ferr = |msg: String| Error::ModelFile {
            path: dir.to_path_buf(),
            file: file.into(),
            msg,
        };
        let info = self
            .files
            .get(file)
            .ok_or_else(|| ferr("not listed in manifest.json".into()))?;
        let bytes = std::fs::read(dir.join(file)).map_err(|e| ferr(format!("cannot read: {e}")))?;
        if bytes.len() as u64 != info.bytes {
            return Err(ferr(format!(
                "size is {} bytes, manifest says {}",
                bytes.len(),
                info.bytes
            )));
        }
        let digest = hex(&Sha256::digest(&bytes));
        if !digest.eq_ignore_ascii_case(&info.sha256) {
            return Err(ferr(format!(
                "checksum mismatch (sha256 {digest}, manifest says {})",
                info.sha256
            )));
        }
        Ok(bytes)
    }

    /// The 16-byte model fingerprint carried in every bitstream header.
    pub fn hash_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let src = self.model_hash.as_bytes();
        for (i, o) in out.iter_mut().enumerate() {
            let pair = src
                .get(2 * i..2 * i + 2)
                .and_then(|p| std::str::from_utf8(p).ok());
            *o = pair
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .unwrap_or(0);
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::StateInfo;

    fn state(shape: &[usize], field: Option<usize>) -> StateInfo {
        StateInfo {
            input: "s".into(),
            output: "n".into(),
            shape: shape.to_vec(),
            batch_axis_field: field,
        }
    }

    /// Exporter 0.2 writes the stream axis; older manifests get the rule for its two layouts.
    #[test]
    fn stream_axis_from_the_field_or_the_layout() {
        assert_eq!(state(&[1, 64, 6], None).batch_axis(), 0);
        assert_eq!(state(&[1, 1, 6], None).batch_axis(), 0);
        assert_eq!(state(&[2, 1, 256], None).batch_axis(), 1);
        assert_eq!(state(&[1, 1, 256], Some(1)).batch_axis(), 1);
        assert_eq!(state(&[2, 1, 256], Some(0)).batch_axis(), 0);
    }
}
