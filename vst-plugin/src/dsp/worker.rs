//! The inference thread of one plugin instance, and the lock-free protocol between it and the
//! audio thread.
//!
//! * One SPSC ring per channel carries model-rate input from the audio thread to the worker, one
//!   per channel carries decoded audio back (`rtrb`, wait-free, no allocation after creation).
//! * Positions are cumulative sample counts since the engine was created, never reset, so a reset
//!   (host reset, ring overflow) is a pair of numbers: the audio thread publishes "the stream
//!   restarts at input position `r`" (`req_in_pos`, then `req_epoch`); the worker drops input
//!   before `r`, resets the codecs and answers "the restarted stream's output starts at output
//!   position `p`" (`ack_out_pos`, then `ack_epoch`). The audio thread then reads the decoded
//!   sample of model index `i` (since the reset) at output position `p + i`, whatever happened
//!   before, so the latency stays exactly what was reported.
//! * The audio thread wakes the worker with `Thread::unpark` (an atomic and a futex wake: no lock,
//!   no allocation) when a frame has been completed; the worker also polls every 20 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rtrb::{Consumer, Producer};

use super::codec::FrameCodec;

/// State shared by the audio thread and the worker: atomics only.
pub struct WorkerShared {
    pub stop: AtomicBool,
    pub req_epoch: AtomicU32,
    pub req_in_pos: AtomicU64,
    pub ack_epoch: AtomicU32,
    pub ack_out_pos: AtomicU64,
    /// Quantizers per frame (from the bitrate parameter).
    pub n_q: AtomicU32,
    /// Packet-loss probability in parts per million.
    pub loss_ppm: AtomicU32,
    /// Frames the codec failed on (inference error): they were output as silence.
    pub errors: AtomicU64,
    /// Frames coded since the engine started (for tests and statistics).
    pub frames: AtomicU64,
    /// Frames dropped by the packet-loss simulation.
    pub lost_frames: AtomicU64,
}

impl WorkerShared {
    pub fn new(n_q: u32) -> WorkerShared {
        WorkerShared {
            stop: AtomicBool::new(false),
            req_epoch: AtomicU32::new(0),
            req_in_pos: AtomicU64::new(0),
            ack_epoch: AtomicU32::new(0),
            ack_out_pos: AtomicU64::new(0),
            n_q: AtomicU32::new(n_q),
            loss_ppm: AtomicU32::new(0),
            errors: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            lost_frames: AtomicU64::new(0),
        }
    }
}

const LOSS_SEED: u64 = 0x5EED;

/// Deterministic packet-loss decision for frame `t` since the last reset (SplitMix64 of the
/// frame index): the same frames are lost on every run, and in every channel (one packet carries
/// all channels of a frame).
pub fn frame_lost(t: u64, loss_ppm: u32) -> bool {
    if loss_ppm == 0 {
        return false;
    }
    // SplitMix64 of the frame index.
    let mut z = t
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(LOSS_SEED);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % 1_000_000) < loss_ppm as u64
}

pub struct Worker {
    pub codecs: Vec<Box<dyn FrameCodec>>,
    pub ins: Vec<Consumer<f32>>,
    pub outs: Vec<Producer<f32>>,
    pub shared: Arc<WorkerShared>,
    pub hop: usize,
    /// Largest number of samples one frame may emit (room needed in the output rings).
    pub max_emit: usize,
    pub label: String,
}

struct Progress {
    acc: Vec<Vec<f32>>,
    fill: usize,
    consumed: u64,
    out_pos: u64,
    epoch: u32,
    frame: u64,
    logged_error: bool,
}

impl Worker {
    pub fn run(mut self) {
        let ch = self.codecs.len();
        let mut p = Progress {
            acc: vec![vec![0.0; self.hop]; ch],
            fill: 0,
            consumed: 0,
            out_pos: 0,
            epoch: 0,
            frame: 0,
            logged_error: false,
        };
        while !self.shared.stop.load(Ordering::Acquire) {
            self.check_reset(&mut p);
            loop {
                // Fill the frame accumulator from the input rings.
                let avail = self.ins.iter().map(|c| c.slots()).min().unwrap_or(0);
                let take = (self.hop - p.fill).min(avail);
                if take > 0 {
                    for (c, acc) in self.ins.iter_mut().zip(&mut p.acc) {
                        if let Ok(chunk) = c.read_chunk(take) {
                            let (a, b) = chunk.as_slices();
                            acc[p.fill..p.fill + a.len()].copy_from_slice(a);
                            acc[p.fill + a.len()..p.fill + take].copy_from_slice(b);
                            chunk.commit_all();
                        }
                    }
                    p.fill += take;
                    p.consumed += take as u64;
                }
                if p.fill < self.hop {
                    break;
                }
                // A reset published while we were reading may cover part of this frame.
                if self.check_reset(&mut p) {
                    continue;
                }
                let room = self.outs.iter().map(|o| o.slots()).min().unwrap_or(0);
                if room < self.max_emit {
                    break; // the audio thread is behind; keep the frame for later
                }
                self.code_frame(&mut p);
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    fn code_frame(&mut self, p: &mut Progress) {
        let n_q = self.shared.n_q.load(Ordering::Relaxed) as usize;
        let lost = frame_lost(p.frame, self.shared.loss_ppm.load(Ordering::Relaxed));
        let mut emitted = 0usize;
        let mut failed = None;
        for (i, (codec, out)) in self.codecs.iter_mut().zip(&mut self.outs).enumerate() {
            let mut n = 0usize;
            let r = codec.process(&p.acc[i], n_q, lost, &mut |pcm: &[f32]| {
                for &v in pcm {
                    // Room was checked before; a full ring here would be a bug: drop, never block.
                    let _ = out.push(v);
                }
                n += pcm.len();
                Ok(())
            });
            if let Err(e) = r {
                failed = Some(e.to_string());
                // Keep every channel on the same grid: this frame becomes silence.
                for _ in n..self.hop {
                    let _ = out.push(0.0);
                }
                n = n.max(self.hop);
                let _ = codec.reset();
            }
            if i == 0 {
                emitted = n;
            }
        }
        if let Some(e) = failed {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            if !p.logged_error {
                eprintln!("{}: codec error (frame output as silence): {e}", self.label);
                p.logged_error = true;
            }
        }
        if lost {
            self.shared.lost_frames.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.frames.fetch_add(1, Ordering::Relaxed);
        p.out_pos += emitted as u64;
        p.fill = 0;
        p.frame += 1;
    }

    /// Applies the newest reset request, if any; true when one was applied.
    fn check_reset(&mut self, p: &mut Progress) -> bool {
        let e = self.shared.req_epoch.load(Ordering::Acquire);
        if e == p.epoch {
            return false;
        }
        // Published before the epoch (Release/Acquire): at least the position of epoch `e`.
        let r = self.shared.req_in_pos.load(Ordering::Acquire);
        if p.consumed <= r {
            // Everything before `r` was pushed before the request: drop it.
            let mut left = (r - p.consumed) as usize;
            while left > 0 {
                let avail = self.ins.iter().map(|c| c.slots()).min().unwrap_or(0);
                let n = left.min(avail);
                if n == 0 {
                    break; // cannot happen (the samples were pushed before the request)
                }
                for c in &mut self.ins {
                    if let Ok(chunk) = c.read_chunk(n) {
                        chunk.commit_all();
                    }
                }
                left -= n;
                p.consumed += n as u64;
            }
            p.fill = 0;
        } else {
            // The accumulator already holds the first samples of the restarted stream.
            let keep = ((p.consumed - r) as usize).min(p.fill);
            for acc in &mut p.acc {
                acc.copy_within(p.fill - keep..p.fill, 0);
            }
            p.fill = keep;
        }
        for c in &mut self.codecs {
            let _ = c.reset();
        }
        p.frame = 0;
        self.shared.ack_out_pos.store(p.out_pos, Ordering::Release);
        self.shared.ack_epoch.store(e, Ordering::Release);
        p.epoch = e;
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loss_rate_matches_the_setting() {
        for ppm in [0u32, 50_000, 200_000, 500_000] {
            for (from, n) in [(0u64, 100u64), (0, 20_000), (777, 5_000)] {
                let lost = (from..from + n)
                    .filter(|&t| super::frame_lost(t, ppm))
                    .count();
                let p = ppm as f64 / 1e6;
                let sd = (n as f64 * p * (1.0 - p)).sqrt();
                let err = (lost as f64 - n as f64 * p).abs();
                assert!(
                    err <= 4.0 * sd + 1e-9,
                    "ppm {ppm}, frames {from}..+{n}: {lost} lost"
                );
            }
        }
    }
}
