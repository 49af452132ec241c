//! Allocations and memory of a stream in its steady state, counted with a global allocator.
//! Our side of `push` allocates nothing; tract allocates its tensors per graph run, so the count is
//! not zero. The test fixes what must hold: the count per frame is constant (nothing accumulates)
//! and live heap does not grow over a long stream; it prints the figures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use common::*;
use funcodec_core::{CodecModel, StreamDecoder, StreamEncoder};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_allocations_are_constant_and_memory_does_not_grow() {
    let m = CodecModel::load(data_dir().join("tiny_causal_ds640").join("model_steps"))
        .unwrap()
        .shared();
    let hop = m.hop();
    let pcm = read_clip("tiny_causal_ds640", "clip7_161234");
    let mut enc = StreamEncoder::new(m.clone(), 8).unwrap();
    let mut dec = StreamDecoder::new(m.clone()).unwrap();
    let mut frame = [0u16; 8];
    let mut out = 0usize;
    let mut run = |chunk: &[f32], enc: &mut StreamEncoder, dec: &mut StreamDecoder| {
        enc.push(chunk, |f| {
            frame.copy_from_slice(f);
            Ok(())
        })
        .unwrap();
        dec.push_frame(&frame, |p| {
            out += p.len();
            Ok(())
        })
        .unwrap();
    };
    // Warm up, then count frame by frame over two halves of a long stream (the clip, 20 times).
    let frames: Vec<&[f32]> = pcm.chunks_exact(hop).collect();
    for f in &frames[..10] {
        run(f, &mut enc, &mut dec);
    }
    let mut per_frame = Vec::with_capacity(20 * frames.len()); // allocated before counting
    let live_start = LIVE.load(Ordering::Relaxed);
    let mut live_mid = 0;
    for rep in 0..20 {
        for f in &frames {
            let a = ALLOCS.load(Ordering::Relaxed);
            run(f, &mut enc, &mut dec);
            per_frame.push(ALLOCS.load(Ordering::Relaxed) - a);
        }
        if rep == 9 {
            live_mid = LIVE.load(Ordering::Relaxed);
        }
    }
    let live_end = LIVE.load(Ordering::Relaxed);
    let (lo, hi) = (
        per_frame.iter().min().unwrap(),
        per_frame.iter().max().unwrap(),
    );
    println!(
        "steady state: {lo}..{hi} heap allocations per frame (encoder + decoder, all inside tract); \
         live heap {live_start} -> {live_mid} -> {live_end} bytes over {} frames",
        per_frame.len()
    );
    assert_eq!(lo, hi, "allocations per frame vary: something accumulates");
    assert!(
        live_end <= live_mid + 4096,
        "live heap grows: {live_mid} -> {live_end}"
    );
}
