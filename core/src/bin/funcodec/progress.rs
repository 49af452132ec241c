//! A small progress line on stderr for long jobs: items, audio seconds, speed and ETA.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    audio_s: f64,
    start: Instant,
    live: bool,
    last_pct: usize,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            done: 0,
            audio_s: 0.0,
            start: Instant::now(),
            live: std::io::stderr().is_terminal(),
            last_pct: 0,
        }
    }

    pub fn step(&mut self, audio_seconds: f64) {
        self.done += 1;
        self.audio_s += audio_seconds;
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        // On a terminal redraw in place; in a log print every 10 %.
        if self.live || pct / 10 > self.last_pct / 10 || self.done == self.total {
            self.last_pct = pct;
            let el = self.start.elapsed().as_secs_f64();
            let eta = if self.done > 0 {
                el / self.done as f64 * (self.total - self.done) as f64
            } else {
                0.0
            };
            let speed = if el > 0.0 { self.audio_s / el } else { 0.0 };
            let mut e = std::io::stderr().lock();
            let end = if self.live && self.done < self.total {
                "\r"
            } else {
                "\n"
            };
            let _ = write!(
                e,
                "{} [{}/{}] {pct:3}%  {:.1} s of audio  {speed:.1}x real time  ETA {:.0} s   {end}",
                self.label, self.done, self.total, self.audio_s, eta
            );
        }
    }
}
