//! Shared helpers for the integration tests: the committed golden vectors made by FunCodec itself.
#![allow(dead_code)]

use std::path::PathBuf;

mod scratch;
#[allow(unused_imports)]
pub use scratch::scratch;

use serde::Deserialize;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

pub const VARIANTS: [&str; 3] = ["tiny_gn_ds640", "tiny_wn_ds320", "tiny_causal_ds640"];

#[derive(Deserialize)]
pub struct Golden {
    pub model_hash: String,
    pub cli_bit_width: i64,
    pub clips: Vec<Clip>,
}

#[derive(Deserialize)]
pub struct Clip {
    pub name: String,
    pub samples: usize,
    pub rms: f32,
    pub runs: Vec<Run>,
}

#[derive(Deserialize)]
pub struct Run {
    pub bit_width: i64,
    pub n_q: usize,
    pub codes: Vec<Vec<u16>>, // [n_q][T]
    /// FunCodec's relative best/second-best distance gap per [quantizer][frame].
    pub margins: Vec<Vec<f64>>,
    pub decoded: String,
}

pub fn golden(variant: &str) -> Golden {
    let text = std::fs::read_to_string(data_dir().join(variant).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn model_dir(variant: &str) -> PathBuf {
    data_dir().join(variant).join("model")
}

pub fn clip_path(variant: &str, clip: &str) -> PathBuf {
    data_dir()
        .join(variant)
        .join("clips")
        .join(format!("{clip}.wav"))
}

/// 16-bit WAV -> f32 exactly as soundfile/torchaudio read it (i16 / 32768).
pub fn read_clip(variant: &str, clip: &str) -> Vec<f32> {
    let mut r = hound::WavReader::open(clip_path(variant, clip)).unwrap();
    r.samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect()
}

pub fn read_f32(variant: &str, file: &str) -> Vec<f32> {
    let bytes = std::fs::read(data_dir().join(variant).join("ref").join(file)).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn rows(run: &Run) -> Vec<Vec<u16>> {
    run.codes.clone()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length differs");
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Below this relative gap FunCodec's pick is a float32 tie (different summation orders may break it
/// either way); see models/make_golden.py `decision_margins`.
pub const TIE_MARGIN: f64 = 1e-5;

/// Compares codes frame by frame. Every code must match, except that a mismatch exactly at a recorded
/// tie is accepted (and the rest of that frame, whose residual then differs, is not compared).
/// Returns the number of ties met.
pub fn assert_codes_match(ours: &[Vec<u16>], run: &Run, what: &str) -> usize {
    assert_codes_match_within(ours, run, what, TIE_MARGIN)
}

/// As [`assert_codes_match`], with frames allowed to differ where FunCodec's relative margin is
/// below `margin`; returns how many did.
pub fn assert_codes_match_within(ours: &[Vec<u16>], run: &Run, what: &str, margin: f64) -> usize {
    assert_eq!(ours.len(), run.codes.len(), "{what}: quantizer count");
    let frames = run.codes[0].len();
    let mut ties = 0;
    for t in 0..frames {
        for (q, row) in ours.iter().enumerate() {
            assert_eq!(row.len(), frames, "{what}: frame count");
            if row[t] != run.codes[q][t] {
                let m = run.margins[q][t];
                assert!(
                    m < margin,
                    "{what}: code differs at quantizer {q} frame {t} (FunCodec margin {m:e})"
                );
                ties += 1;
                break;
            }
        }
    }
    ties
}

/// Small deterministic generator for the property tests (no extra dependency).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Codes `pcm` through one stream (push everything, flush) with `n_q` quantizers.
pub fn stream_encode(
    m: &std::sync::Arc<funcodec_core::CodecModel>,
    pcm: &[f32],
    n_q: usize,
) -> funcodec_core::Codes {
    let mut enc = funcodec_core::StreamEncoder::new(m.clone(), n_q).unwrap();
    let mut codes = funcodec_core::Codes::new(n_q);
    enc.push(pcm, |f| codes.push_frame(f)).unwrap();
    enc.flush(|f| codes.push_frame(f)).unwrap();
    codes
}

/// Decodes `codes` through one stream decoder, frame by frame.
pub fn stream_decode(
    m: &std::sync::Arc<funcodec_core::CodecModel>,
    codes: &funcodec_core::Codes,
) -> Vec<f32> {
    let mut dec = funcodec_core::StreamDecoder::new(m.clone()).unwrap();
    let mut out = Vec::new();
    for t in 0..codes.frames {
        dec.push_frame(codes.frame(t), |p| {
            out.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
    }
    out
}
