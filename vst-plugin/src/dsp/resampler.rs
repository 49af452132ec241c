//! Fixed-ratio rational polyphase resampler (Kaiser-windowed sinc) with an exactly known delay.
//!
//! Both directions (host rate -> model rate and back) are described on one common time grid of
//! `R = host_rate * model_rate / gcd` ticks per second: a host sample lasts `L = model_rate / gcd`
//! ticks, a model sample `M = host_rate / gcd` ticks. A filter is a function of the tick offset
//! between an output instant and an input instant; its centre (in ticks) is its exact group delay,
//! which is what makes the plugin's latency an exact integer number of host samples.
//!
//! Output `o` is taken at tick `o * out_step`; it sums inputs `i` with
//! `0 <= o * out_step - i * in_step <= span`, so it only needs inputs up to
//! `floor(o * out_step / in_step)` (causal, streaming, sample by sample). Everything is allocated
//! at construction; `push` and `next_output` never allocate.

/// Stop-band attenuation of the anti-alias / anti-image filter, in dB.
pub const STOPBAND_DB: f64 = 90.0;
/// Pass band edge and stop band edge as fractions of the lower of the two rates.
pub const PASS_EDGE: f64 = 0.4375; // 7 kHz at 16 kHz
pub const STOP_EDGE: f64 = 0.5; // 8 kHz at 16 kHz

/// Filter taps for one direction, shared by all channels.
pub struct Design {
    /// `phases * k` taps; each phase's taps are stored oldest-input first (reversed).
    taps: Vec<f32>,
    k: usize,
    in_step: u64,
    out_step: u64,
}

/// Per-channel streaming state of one direction.
#[derive(Clone)]
pub struct State {
    /// Double-written history: the last `k` inputs are always `hist[pos..pos + k]`.
    hist: Vec<f32>,
    pos: usize,
    /// Inputs pushed so far.
    inputs: u64,
    /// Next output: the newest input it needs, and its phase (tick offset) within that input.
    need: u64,
    phase: u64,
}

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..200 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Kaiser beta for a given stop-band attenuation (Kaiser's formula).
fn kaiser_beta(att_db: f64) -> f64 {
    if att_db > 50.0 {
        0.1102 * (att_db - 8.7)
    } else if att_db > 21.0 {
        0.5842 * (att_db - 21.0).powf(0.4) + 0.07886 * (att_db - 21.0)
    } else {
        0.0
    }
}

/// Half length, in ticks, of the prototype filter for a conversion between `host_rate` and
/// `model_rate` on a grid of `ticks_per_s` ticks per second (0 when the rates are equal).
pub fn half_span(host_rate: u32, model_rate: u32, ticks_per_s: f64) -> u64 {
    if host_rate == model_rate {
        return 0;
    }
    let low = host_rate.min(model_rate) as f64;
    let width_hz = (STOP_EDGE - PASS_EDGE) * low;
    // Kaiser's length estimate, in seconds, then in ticks.
    let len_s = (STOPBAND_DB - 7.95) / (2.285 * 2.0 * std::f64::consts::PI * width_hz);
    (len_s * ticks_per_s / 2.0).ceil() as u64
}

impl Design {
    /// A filter centred `shift + half` ticks after the input instant, spanning
    /// `[shift, shift + 2 * half]` ticks. `in_step` / `out_step`: input and output sample periods
    /// in ticks; `ticks_per_s`: the grid rate; `low_rate`: the lower of the two sample rates.
    pub fn new(
        in_step: u64,
        out_step: u64,
        half: u64,
        shift: u64,
        ticks_per_s: f64,
        low_rate: f64,
    ) -> Design {
        let span = shift + 2 * half;
        let k = (span / in_step) as usize + 1;
        let phases = in_step as usize;
        let mut taps = vec![0f32; phases * k];
        let fc = 0.5 * (PASS_EDGE + STOP_EDGE) * low_rate; // cut-off in Hz
        let beta = kaiser_beta(STOPBAND_DB);
        let i0b = bessel_i0(beta);
        let proto = |t: u64| -> f64 {
            if t < shift || t > span {
                return 0.0;
            }
            if half == 0 {
                return if t == shift { 1.0 } else { 0.0 };
            }
            let x = (t - shift) as f64 - half as f64; // ticks from the centre
            let r = x / half as f64;
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0b;
            let arg = 2.0 * fc * x / ticks_per_s;
            let sinc = if arg.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            sinc * w
        };
        let mut row = vec![0f64; k];
        for p in 0..phases {
            let mut sum = 0.0;
            for (t, v) in row.iter_mut().enumerate() {
                *v = proto(p as u64 + t as u64 * in_step);
                sum += *v;
            }
            // Each phase sums to exactly 1: unity DC gain with no phase-dependent ripple.
            let norm = if sum.abs() > 1e-12 { 1.0 / sum } else { 0.0 };
            for (t, v) in row.iter().enumerate() {
                taps[p * k + (k - 1 - t)] = (*v * norm) as f32;
            }
        }
        Design {
            taps,
            k,
            in_step,
            out_step,
        }
    }

    pub fn taps_per_output(&self) -> usize {
        self.k
    }

    pub fn new_state(&self) -> State {
        State {
            hist: vec![0.0; 2 * self.k],
            pos: 0,
            inputs: 0,
            need: 0,
            phase: 0,
        }
    }

    /// Appends one input sample.
    #[inline]
    pub fn push(&self, s: &mut State, x: f32) {
        let k = self.k;
        s.hist[s.pos] = x;
        s.hist[s.pos + k] = x;
        s.pos += 1;
        if s.pos == k {
            s.pos = 0;
        }
        s.inputs += 1;
    }

    /// Whether the next output's inputs have all been pushed.
    #[inline]
    pub fn ready(&self, s: &State) -> bool {
        s.need < s.inputs
    }

    /// Computes the next output (call only when [`Self::ready`]).
    #[inline]
    pub fn next_output(&self, s: &mut State) -> f32 {
        let k = self.k;
        let p = s.phase as usize;
        let taps = &self.taps[p * k..p * k + k];
        let hist = &s.hist[s.pos..s.pos + k];
        let mut acc = [0f32; 4];
        let mut tc = taps.chunks_exact(4);
        let mut hc = hist.chunks_exact(4);
        for (t, h) in (&mut tc).zip(&mut hc) {
            acc[0] += t[0] * h[0];
            acc[1] += t[1] * h[1];
            acc[2] += t[2] * h[2];
            acc[3] += t[3] * h[3];
        }
        let mut y = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (t, h) in tc.remainder().iter().zip(hc.remainder()) {
            y += t * h;
        }
        s.phase += self.out_step;
        s.need += s.phase / self.in_step;
        s.phase %= self.in_step;
        y
    }

    /// Back to the initial (silent) state.
    pub fn reset(&self, s: &mut State) {
        s.hist.fill(0.0);
        s.pos = 0;
        s.inputs = 0;
        s.need = 0;
        s.phase = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    /// A 1 kHz tone through 48 kHz -> 16 kHz -> 48 kHz comes back delayed by the designed amount.
    #[test]
    fn round_trip_delay_is_the_designed_centre() {
        for &fs in &[48_000u32, 44_100, 96_000, 22_050] {
            let fm = 16_000u32;
            let g = gcd(fs as u64, fm as u64);
            let (l, m) = (fm as u64 / g, fs as u64 / g);
            let ticks = fs as f64 * l as f64;
            let half = half_span(fs, fm, ticks);
            // Choose the second filter's shift so that the total is a whole number of host samples.
            let shift = (l - (2 * half) % l) % l;
            let total = 2 * half + shift;
            assert_eq!(total % l, 0);
            let delay = (total / l) as usize;
            let low = fs.min(fm) as f64;
            let down = Design::new(l, m, half, 0, ticks, low);
            let up = Design::new(m, l, half, shift, ticks, low);
            let (mut sd, mut su) = (down.new_state(), up.new_state());
            let n = fs as usize / 2;
            let x: Vec<f32> = (0..n)
                .map(|i| (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / fs as f64).sin() as f32)
                .collect();
            let mut mid = Vec::new();
            let mut out = Vec::new();
            let mut mi = 0;
            for &v in &x {
                down.push(&mut sd, v);
                while down.ready(&sd) {
                    mid.push(down.next_output(&mut sd));
                }
                while !up.ready(&su) {
                    up.push(&mut su, mid[mi]);
                    mi += 1;
                }
                out.push(up.next_output(&mut su));
            }
            let err = (delay + 2000..n)
                .map(|i| (out[i] - x[i - delay]).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-3, "fs {fs}: max error {err} at delay {delay}");
        }
    }
}
