//! Real-time safety: heap allocations made on the audio thread inside the CLAP process call (and
//! reset) are counted with a global allocator and a thread-local flag, over long runs with
//! parameter automation, monitor switches, packet loss, resets, real-time dropouts and offline
//! waits. The plugin is linked into this test binary (`load_from_clack`), so its allocations go
//! through the counting allocator; the worker thread's (tract's) allocations are not counted
//! because they happen on another thread, which is the point of the design.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use clack_host::prelude::*;
use clack_plugin::entry::SinglePluginEntry;
use common::*;
use funcodec_monitor::clap_shell::MonitorPlugin;
use funcodec_monitor::params;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn counting() -> bool {
    ON.try_with(|c| c.get()).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counting() {
            // A free on the audio thread is as bad as an allocation (it can take a lock).
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn hook(on: bool) {
    ON.with(|c| c.set(on));
}

/// Automation every ~50 ms over all parameters.
fn automation(n: usize, rate: u32) -> Vec<(usize, u32, f64)> {
    let step = rate as usize / 20;
    let mut v = Vec::new();
    let mut t = step;
    let mut k = 0u32;
    while t < n {
        let (id, val) = match k % 7 {
            0 => (params::BITRATE, 250.0 * (1 + (k % 32)) as f64),
            1 => (params::MONITOR, (k % 3) as f64),
            2 => (params::MIX, (k * 37 % 101) as f64),
            3 => (params::GAIN, (k % 13) as f64 - 6.0),
            4 => (params::LOSS, (k % 5) as f64 * 10.0),
            5 => (params::BYPASS, (k % 2) as f64),
            _ => (params::MONITOR, 2.0),
        };
        v.push((t, id, val));
        t += step + (k as usize * 31) % 97;
        k += 1;
    }
    v
}

#[test]
fn no_allocation_on_the_audio_thread() {
    let entry = PluginEntry::load_from_clack::<SinglePluginEntry<MonitorPlugin>>(c"").unwrap();
    let cases: &[(&str, u32, usize, usize, bool, &str)] = &[
        // model, rate, channels, max block, offline, block pattern
        ("tiny", 48_000, 2, 64, false, "64"),
        ("tiny", 48_000, 2, 64, true, "64"),
        ("tiny", 44_100, 1, 4096, true, "varying"),
        ("tiny", 96_000, 2, 4096, false, "varying"),
        ("identity", 22_050, 2, 512, true, "varying"),
        ("broken", 48_000, 2, 256, false, "varying"),
    ];
    let mut total_calls = 0usize;
    for &(model, rate, ch, max_block, offline, pattern) in cases {
        let model = match model {
            "tiny" => tiny_model(),
            "identity" => "@identity".to_string(),
            _ => "/nonexistent/model".to_string(),
        };
        let x = voice(rate, 3.0, 6000.0);
        let input: Vec<Vec<f32>> = (0..ch).map(|_| x.clone()).collect();
        let blocks = if pattern == "64" {
            vec![64; x.len() / 64]
        } else {
            varying_blocks(x.len(), max_block, rate as u64)
        };
        let n: usize = blocks.iter().sum();
        let events = automation(n, rate);
        let mut r = Runner::new(&entry);
        r.select_channels(ch);
        r.set_state(&model, &[]);
        r.set_offline(offline);
        r.activate(rate as f64, max_block as u32);
        r.hook = hook;
        let before = ALLOCS.load(Ordering::Relaxed);
        let half = blocks.len() / 2;
        let out1 = r.process(&input, &blocks[..half], &events);
        hook(true);
        r.reset();
        hook(false);
        let out2 = r.process(&input, &blocks[half..], &[]);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        total_calls += blocks.len();
        let status = r.param(params::STATUS);
        println!(
            "{model} {rate} Hz {ch} ch, blocks {pattern} (max {max_block}), {}: {} process calls, \
             {} automation events, 1 reset: {allocs} allocations/frees on the audio thread \
             (status after: {})",
            if offline {
                "offline"
            } else {
                "real-time, unpaced"
            },
            blocks.len(),
            events.len(),
            params::STATUS_NAMES[status as usize]
        );
        assert_eq!(allocs, 0, "the audio thread allocated");
        assert!(
            out1.iter()
                .chain(&out2)
                .all(|c| c.iter().all(|v| v.is_finite()))
        );
    }
    // The counter works: an allocation with the flag on is seen.
    hook(true);
    let v: Vec<u8> = Vec::with_capacity(10);
    hook(false);
    drop(v);
    assert!(ALLOCS.load(Ordering::Relaxed) >= 1);
    println!("{total_calls} process calls in all, 0 allocations");
}
