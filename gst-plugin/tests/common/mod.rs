//! Shared helpers for the element tests: the test model, test signals, the core's reference
//! results, and harness plumbing.
#![allow(dead_code)]

use std::path::PathBuf;

#[path = "../../../tests/common/scratch.rs"]
mod scratch;
#[allow(unused_imports)]
pub use scratch::scratch;
use std::sync::{Arc, Once};

use funcodec_core::bitstream::{self, StreamHeader};
use funcodec_core::{CodecModel, StreamDecoder, StreamEncoder};
use gst::prelude::*;

pub const RAW_F32: &str = "audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved";
pub const RAW_S16: &str = "audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved";
pub const RATE: u32 = 16000;
pub const HOP: usize = 640;

pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstfuncodec::plugin_register_static().unwrap();
    });
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tiny causal test model (step graphs: exact streaming).
pub fn model_dir() -> PathBuf {
    repo().join("tests/data/tiny_causal_ds640/model_steps")
}

/// FunCodec's non-causal layout (GroupNorm, offline graphs only).
pub fn noncausal_dir() -> PathBuf {
    repo().join("tests/data/tiny_gn_ds640/model")
}

pub fn model_str() -> String {
    model_dir().to_string_lossy().into_owned()
}

pub fn model() -> Arc<CodecModel> {
    Arc::new(CodecModel::load(model_dir()).unwrap())
}

pub fn header() -> StreamHeader {
    gstfuncodec::common::header_for(&model())
}

/// Speech-like test signal: a few harmonics with a syllable-rate envelope, plus a little noise.
pub fn signal(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = i as f32 / RATE as f32;
            let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let f0 = 140.0 + 20.0 * (seed as f32);
            let tone: f32 = (1..5)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            0.25 * env * tone + 0.01 * ((x % 2001) as f32 / 1000.0 - 1.0)
        })
        .collect()
}

pub fn time_of(samples: u64) -> gst::ClockTime {
    gstfuncodec::common::samples_to_time(samples, RATE)
}

pub fn f32_bytes(pcm: &[f32]) -> Vec<u8> {
    pcm.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A raw F32 buffer starting at sample `at`.
pub fn pcm_buffer(pcm: &[f32], at: u64) -> gst::Buffer {
    let mut b = gst::Buffer::from_mut_slice(f32_bytes(pcm));
    {
        let b = b.get_mut().unwrap();
        b.set_pts(time_of(at));
        b.set_duration(time_of(at + pcm.len() as u64) - time_of(at));
    }
    b
}

pub fn buffer_f32(buf: &gst::BufferRef) -> Vec<f32> {
    let map = buf.map_readable().unwrap();
    map.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Pushes `pcm` in pieces of the given sizes (cycled), timestamped from the sample count.
pub fn push_pcm(h: &mut gst_check::Harness, pcm: &[f32], sizes: &[usize], start: u64) {
    let mut i = 0;
    let mut k = 0;
    while i < pcm.len() {
        let n = sizes[k % sizes.len()].min(pcm.len() - i);
        h.push(pcm_buffer(&pcm[i..i + n], start + i as u64))
            .unwrap();
        i += n;
        k += 1;
    }
}

pub fn pull_all(h: &mut gst_check::Harness) -> Vec<gst::Buffer> {
    std::iter::from_fn(|| h.try_pull()).collect()
}

/// A packet buffer with the given timestamp (frame index).
pub fn packet_buffer(bytes: &[u8], frame: u64) -> gst::Buffer {
    let mut b = gst::Buffer::from_slice(bytes.to_vec());
    {
        let b = b.get_mut().unwrap();
        b.set_pts(time_of(frame * HOP as u64));
        b.set_duration(time_of(HOP as u64));
    }
    b
}

pub fn packet(codes: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    bitstream::encode_frame(&header(), codes, None, &mut out).unwrap();
    out
}

pub fn unpack(bytes: &[u8]) -> Vec<u16> {
    let (p, len) = bitstream::decode_frame(&header(), bytes).unwrap();
    assert_eq!(len, bytes.len(), "one packet per buffer");
    p.codes
}

/// The core's codes for `pcm` (what the encoder element must produce).
pub fn ref_codes(pcm: &[f32], n_q: usize) -> Vec<Vec<u16>> {
    let mut enc = StreamEncoder::new(model(), n_q).unwrap();
    let mut out = Vec::new();
    enc.push(pcm, |c| {
        out.push(c.to_vec());
        Ok(())
    })
    .unwrap();
    enc.flush(|c| {
        out.push(c.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

/// Frame-level operations on the core decoder.
pub enum Op<'a> {
    Decode(&'a [u16]),
    Conceal,
    Reset,
}

/// The core decoder's output for a sequence of operations.
pub fn ref_decode_ops(ops: &[Op]) -> Vec<f32> {
    let mut dec = StreamDecoder::new(model()).unwrap();
    let mut out = Vec::new();
    for op in ops {
        let mut sink = |p: &[f32]| {
            out.extend_from_slice(p);
            Ok(())
        };
        match op {
            Op::Decode(c) => dec.push_frame(c, &mut sink).unwrap(),
            Op::Conceal => dec.conceal(&mut sink).unwrap(),
            Op::Reset => dec.reset().unwrap(),
        }
    }
    out
}

pub fn ref_decode(frames: &[Vec<u16>]) -> Vec<f32> {
    let ops: Vec<Op> = frames.iter().map(|f| Op::Decode(f)).collect();
    ref_decode_ops(&ops)
}

/// Caps a decoder is given for a stream of the test model.
pub fn coded_caps() -> gst::Caps {
    let h = header();
    gstfuncodec::common::caps_for(&h, &h.encode(), Some(8), Some(0))
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Attaches a bus to the harnessed element so its messages can be read.
pub fn bus_of(h: &gst_check::Harness) -> gst::Bus {
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    bus
}

/// Texts of the warning or error messages on `bus`.
pub fn messages(bus: &gst::Bus, kind: gst::MessageType) -> Vec<String> {
    std::iter::from_fn(|| bus.pop_filtered(&[kind]))
        .map(|m| match m.view() {
            gst::MessageView::Warning(w) => format!("{} ({:?})", w.error(), w.debug()),
            gst::MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
            _ => String::new(),
        })
        .collect()
}

pub fn enc_element(extra: &[(&str, glib::Value)]) -> gst::Element {
    let mut b = gst::ElementFactory::make("funcodecenc").property("model", model_str());
    for (k, v) in extra {
        b = b.property(k, v.clone());
    }
    b.build().unwrap()
}

pub fn dec_element() -> gst::Element {
    gst::ElementFactory::make("funcodecdec")
        .property("model", model_str())
        .build()
        .unwrap()
}

pub use gst::glib;
