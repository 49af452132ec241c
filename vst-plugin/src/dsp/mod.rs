//! The processing core shared by the CLAP and VST3 shells.
//!
//! Per channel, on the audio thread: host-rate input -> [`resampler`] down to the model rate ->
//! SPSC ring -> (worker thread: encoder, packet-loss simulation, decoder) -> SPSC ring ->
//! resampler up to the host rate; the dry input goes through a delay line of exactly the
//! reported latency, so dry, codec and difference are aligned sample for sample; then the monitor
//! selection, dry/wet mix, output gain and bypass, all smoothed.
//!
//! # Latency
//! All delays are counted on the common tick grid of [`resampler`] (`L` ticks per host sample,
//! `M` ticks per model sample):
//! * down-sampling filter: `half` ticks (its centre);
//! * codec path: `D` model samples, `D = hop (filling a frame) + codec look-ahead + one host block
//!   at the model rate (the worker only sees a block once the callback has pushed it) + worker
//!   budget (one frame, 40 ms, for the inference itself)`;
//! * up-sampling filter: `half + shift` ticks, `shift < L` chosen so the total is a multiple of `L`.
//!
//! `latency = (2 half + shift + D M) / L` host samples, exactly. The decoded stream is read with
//! that fixed delay; if the worker is late in real-time mode the missing samples are output as
//! silence and counted (`dropouts`), and the timing is kept. In offline mode (host render) the
//! audio thread waits for the worker instead.

pub mod codec;
pub mod resampler;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use codec::CodecSource;
use resampler::{Design, State};
use worker::{Worker, WorkerShared};

/// Time the worker has for coding a frame before its output is due, in ms.
pub const WORKER_BUDGET_MS: u32 = 40;
/// Length of parameter ramps (monitor cross-fade, mix, gain, bypass), in ms.
pub const RAMP_MS: f64 = 20.0;
/// Longest time the audio thread waits for the worker in offline mode before giving up (dropout).
pub const OFFLINE_WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Model rate and frame assumed for the latency when no model is loaded (the dry fallback keeps
/// the latency the default model would have).
pub const FALLBACK_RATE: u32 = 16_000;
pub const FALLBACK_HOP: usize = 640;

/// What to monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// The decoded signal (what listeners will hear).
    Codec,
    /// The input, delay-compensated.
    Dry,
    /// Input minus decoded: the artifacts alone.
    Difference,
}

impl Monitor {
    pub fn from_index(i: u32) -> Monitor {
        match i {
            1 => Monitor::Dry,
            2 => Monitor::Difference,
            _ => Monitor::Codec,
        }
    }
    /// (dry, decoded) weights of this selection.
    fn weights(self) -> (f32, f32) {
        match self {
            Monitor::Codec => (0.0, 1.0),
            Monitor::Dry => (1.0, 0.0),
            Monitor::Difference => (1.0, -1.0),
        }
    }
}

/// Parameter values as the engine uses them (plain units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub bitrate: f64,
    pub monitor: Monitor,
    /// 0..1
    pub mix: f64,
    pub gain_db: f64,
    /// 0..1
    pub loss: f64,
    pub bypass: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bitrate: 2000.0,
            monitor: Monitor::Codec,
            mix: 1.0,
            gain_db: 0.0,
            loss: 0.0,
            bypass: false,
        }
    }
}

/// Engine health, shown as the read-only "Status" parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// No model (missing or broken folder, unsupported rate): the plugin passes audio through.
    NoModel = 1,
    /// The worker missed its deadline at least once since the last reset (real-time mode).
    Dropouts = 2,
}

pub fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The delays of one configuration; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyPlan {
    pub host_rate: u32,
    pub model_rate: u32,
    /// Ticks per host sample and per model sample.
    pub l: u64,
    pub m: u64,
    pub half: u64,
    pub shift: u64,
    /// Codec path delay in model samples.
    pub d: u64,
    /// Total latency in host samples.
    pub latency: u32,
}

/// Largest tick ratio accepted (11025 Hz against 16 kHz needs 640); beyond, the filters' tables
/// would be too large and the rate is treated as unsupported.
const MAX_TICKS: u64 = 4096;

impl LatencyPlan {
    pub fn new(
        host_rate: u32,
        max_block: usize,
        model_rate: u32,
        hop: usize,
        lookahead: usize,
    ) -> Result<LatencyPlan, String> {
        if !(1000..=1_536_000).contains(&host_rate) {
            return Err(format!("unsupported sample rate {host_rate} Hz"));
        }
        let g = gcd(host_rate as u64, model_rate as u64);
        let (l, m) = (model_rate as u64 / g, host_rate as u64 / g);
        if l > MAX_TICKS || m > MAX_TICKS {
            return Err(format!(
                "sample rate {host_rate} Hz has no small ratio to the model's {model_rate} Hz"
            ));
        }
        let ticks = host_rate as f64 * l as f64;
        let half = resampler::half_span(host_rate, model_rate, ticks);
        let block = (max_block.max(1) as u64 * model_rate as u64).div_ceil(host_rate as u64);
        let budget = (model_rate as u64 * WORKER_BUDGET_MS as u64).div_ceil(1000);
        let d = hop as u64 + lookahead as u64 + block + budget;
        let partial = 2 * half + d * m;
        let shift = (l - partial % l) % l;
        let latency = (partial + shift) / l;
        Ok(LatencyPlan {
            host_rate,
            model_rate,
            l,
            m,
            half,
            shift,
            d,
            latency: u32::try_from(latency).map_err(|_| "latency overflow".to_string())?,
        })
    }

    /// The plan the dry fallback uses (no model): the default model's timing.
    pub fn fallback(host_rate: u32, max_block: usize) -> LatencyPlan {
        LatencyPlan::new(host_rate, max_block, FALLBACK_RATE, FALLBACK_HOP, 0).unwrap_or(
            LatencyPlan {
                host_rate,
                model_rate: FALLBACK_RATE,
                l: 1,
                m: 1,
                half: 0,
                shift: 0,
                d: 0,
                latency: 0,
            },
        )
    }
}

/// The plan an engine built with these arguments will have (for hosts that read the latency
/// before activating).
pub fn plan_for(
    sample_rate: f64,
    max_block: usize,
    codec: &Result<CodecSource, String>,
) -> LatencyPlan {
    let rate = host_rate_hz(sample_rate);
    let max_block = max_block.clamp(1, 1 << 16);
    codec
        .as_ref()
        .ok()
        .and_then(|c| {
            let (_, la) = c.make(1).ok()?;
            LatencyPlan::new(rate, max_block, c.sample_rate(), c.hop(), la).ok()
        })
        .unwrap_or_else(|| LatencyPlan::fallback(rate, max_block))
}

/// Host sample rate as an integer (hosts pass f64; fractional rates are rounded).
pub fn host_rate_hz(sample_rate: f64) -> u32 {
    if sample_rate.is_finite() && sample_rate > 0.0 {
        sample_rate.round().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

/// Linear ramp to a target over a fixed time; exact at the end of the ramp.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    value: f32,
    target: f32,
    step: f32,
    left: u32,
    len: u32,
}

impl Ramp {
    fn new(v: f32, len: u32) -> Ramp {
        Ramp {
            value: v,
            target: v,
            step: 0.0,
            left: 0,
            len: len.max(1),
        }
    }
    #[inline]
    fn set(&mut self, t: f32) {
        if t != self.target {
            self.target = t;
            self.left = self.len;
            self.step = (t - self.value) / self.len as f32;
        }
    }
    #[inline]
    fn next(&mut self) -> f32 {
        if self.left > 0 {
            self.left -= 1;
            self.value = if self.left == 0 {
                self.target
            } else {
                self.value + self.step
            };
        }
        self.value
    }
    fn snap(&mut self) {
        self.value = self.target;
        self.left = 0;
    }
}

/// One channel's buffers.
struct Channel {
    down: State,
    up: State,
    delay: Vec<f32>,
    to_worker: Option<rtrb::Producer<f32>>,
    from_worker: Option<rtrb::Consumer<f32>>,
}

/// Statistics for tests and the status parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Model-rate samples output as silence because the worker was late.
    pub dropout_samples: u64,
    /// Times the input ring overflowed (the stream was restarted).
    pub overflows: u64,
    pub frames: u64,
    pub lost_frames: u64,
    pub codec_errors: u64,
}

pub struct EngineConfig {
    pub sample_rate: f64,
    pub max_block: usize,
    pub channels: usize,
}

/// The processing core of one plugin instance (created when the host activates the plugin).
pub struct Engine {
    plan: LatencyPlan,
    channels: Vec<Channel>,
    down: Option<Design>,
    up: Option<Design>,
    hop: usize,
    delay_pos: usize,
    codec: Option<CodecSource>,
    shared: Arc<WorkerShared>,
    worker: Option<(JoinHandle<()>, Thread)>,
    // Audio-thread side of the ring protocol (see worker.rs).
    in_pos: u64,
    popped: u64,
    j: u64,
    epoch: u32,
    out_base: Option<u64>,
    frames_pushed: u64,
    y: [f32; 2],
    stats: Stats,
    overflowed: bool,
    offline: bool,
    // Smoothed controls.
    w_dry: Ramp,
    w_dec: Ramp,
    mix: Ramp,
    gain: Ramp,
    bypass: Ramp,
    settings: Settings,
    error: Option<String>,
}

/// Longest channel count the shells use (mono or stereo).
pub const MAX_CHANNELS: usize = 2;

impl Engine {
    /// Builds the engine: allocates everything, starts the worker. `codec: Err(msg)` (no model)
    /// gives the dry fallback: audio passes through with the same latency and [`Status::NoModel`].
    pub fn new(
        cfg: &EngineConfig,
        codec: Result<CodecSource, String>,
        settings: Settings,
    ) -> Engine {
        let rate = host_rate_hz(cfg.sample_rate);
        let nch = cfg.channels.clamp(1, MAX_CHANNELS);
        let max_block = cfg.max_block.clamp(1, 1 << 16);
        match Self::build(rate, max_block, nch, codec, settings) {
            Ok(e) => e,
            Err((msg, settings)) => {
                eprintln!("FunCodec Monitor: {msg}; passing audio through");
                Self::dry(rate, max_block, nch, settings, msg)
            }
        }
    }

    fn dry(rate: u32, max_block: usize, nch: usize, settings: Settings, msg: String) -> Engine {
        let plan = LatencyPlan::fallback(rate, max_block);
        let channels = (0..nch)
            .map(|_| Channel {
                down: Design::new(1, 1, 0, 0, 1.0, 1.0).new_state(),
                up: Design::new(1, 1, 0, 0, 1.0, 1.0).new_state(),
                delay: vec![0.0; plan.latency as usize],
                to_worker: None,
                from_worker: None,
            })
            .collect();
        let shared = Arc::new(WorkerShared::new(1));
        Self::assemble(
            plan,
            channels,
            None,
            None,
            0,
            None,
            None,
            shared,
            settings,
            Some(msg),
        )
    }

    #[allow(clippy::type_complexity)]
    fn build(
        rate: u32,
        max_block: usize,
        nch: usize,
        codec: Result<CodecSource, String>,
        settings: Settings,
    ) -> Result<Engine, (String, Settings)> {
        let codec = codec.map_err(|e| (e, settings))?;
        let fm = codec.sample_rate();
        let hop = codec.hop();
        let n_q = codec.n_q_for_bitrate(settings.bitrate);
        let mut codecs = Vec::with_capacity(nch);
        let mut lookahead = 0;
        for _ in 0..nch {
            let (c, la) = codec
                .make(n_q)
                .map_err(|e| (format!("cannot start the codec: {e}"), settings))?;
            codecs.push(c);
            lookahead = la;
        }
        let plan =
            LatencyPlan::new(rate, max_block, fm, hop, lookahead).map_err(|e| (e, settings))?;
        let ticks = rate as f64 * plan.l as f64;
        let low = rate.min(fm) as f64;
        let down = Design::new(plan.l, plan.m, plan.half, 0, ticks, low);
        let up = Design::new(plan.m, plan.l, plan.half, plan.shift, ticks, low);
        let block16 = (max_block as u64 * fm as u64).div_ceil(rate as u64) as usize;
        // One second of slack on top of the pipeline's own content.
        let cap = fm as usize + plan.d as usize + block16 + 4 * hop;
        let max_emit = 2 * hop + lookahead;
        let shared = Arc::new(WorkerShared::new(n_q as u32));
        let mut channels = Vec::with_capacity(nch);
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for _ in 0..nch {
            let (tp, tc) = rtrb::RingBuffer::<f32>::new(cap);
            let (fp, fc) = rtrb::RingBuffer::<f32>::new(cap + max_emit);
            ins.push(tc);
            outs.push(fp);
            channels.push(Channel {
                down: down.new_state(),
                up: up.new_state(),
                delay: vec![0.0; plan.latency as usize],
                to_worker: Some(tp),
                from_worker: Some(fc),
            });
        }
        let label = format!("FunCodec Monitor worker [{}]", codec.describe());
        let w = Worker {
            codecs,
            ins,
            outs,
            shared: shared.clone(),
            hop,
            max_emit,
            label,
        };
        let handle = std::thread::Builder::new()
            .name("funcodec-monitor-worker".into())
            .spawn(move || w.run())
            .map_err(|e| (format!("cannot start the worker thread: {e}"), settings))?;
        let thread = handle.thread().clone();
        Ok(Self::assemble(
            plan,
            channels,
            Some(down),
            Some(up),
            hop,
            Some(codec),
            Some((handle, thread)),
            shared,
            settings,
            None,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        plan: LatencyPlan,
        channels: Vec<Channel>,
        down: Option<Design>,
        up: Option<Design>,
        hop: usize,
        codec: Option<CodecSource>,
        worker: Option<(JoinHandle<()>, Thread)>,
        shared: Arc<WorkerShared>,
        settings: Settings,
        error: Option<String>,
    ) -> Engine {
        let ramp = ((plan.host_rate as f64 * RAMP_MS / 1000.0) as u32).max(1);
        let mut e = Engine {
            plan,
            channels,
            down,
            up,
            hop,
            delay_pos: 0,
            codec,
            shared,
            worker,
            in_pos: 0,
            popped: 0,
            j: 0,
            epoch: 0,
            out_base: Some(0),
            frames_pushed: 0,
            y: [0.0; 2],
            stats: Stats::default(),
            overflowed: false,
            offline: false,
            w_dry: Ramp::new(0.0, ramp),
            w_dec: Ramp::new(1.0, ramp),
            mix: Ramp::new(1.0, ramp),
            gain: Ramp::new(1.0, ramp),
            bypass: Ramp::new(0.0, ramp),
            settings,
            error,
        };
        e.apply_settings(&settings);
        e.snap();
        e
    }

    /// Latency in host samples (what the shells report to the host).
    pub fn latency(&self) -> u32 {
        self.plan.latency
    }
    pub fn plan(&self) -> &LatencyPlan {
        &self.plan
    }
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
    /// Why the engine runs dry, if it does.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    pub fn codec(&self) -> Option<&CodecSource> {
        self.codec.as_ref()
    }
    pub fn status(&self) -> Status {
        if self.codec.is_none() {
            Status::NoModel
        } else if self.stats.dropout_samples > 0 || self.stats.overflows > 0 {
            Status::Dropouts
        } else {
            Status::Ok
        }
    }
    pub fn stats(&self) -> Stats {
        Stats {
            frames: self.shared.frames.load(Ordering::Relaxed),
            lost_frames: self.shared.lost_frames.load(Ordering::Relaxed),
            codec_errors: self.shared.errors.load(Ordering::Relaxed),
            ..self.stats
        }
    }
    /// Offline (host render) mode: the audio thread waits for the worker instead of dropping out.
    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
    }

    fn apply_settings(&mut self, s: &Settings) {
        self.settings = *s;
        let (wd, wc) = s.monitor.weights();
        self.w_dry.set(wd);
        self.w_dec.set(wc);
        self.mix.set(s.mix.clamp(0.0, 1.0) as f32);
        self.gain
            .set(10f64.powf(s.gain_db.clamp(-96.0, 48.0) / 20.0) as f32);
        self.bypass.set(if s.bypass { 1.0 } else { 0.0 });
        if let Some(c) = &self.codec {
            let n_q = c.n_q_for_bitrate(s.bitrate) as u32;
            self.shared.n_q.store(n_q, Ordering::Relaxed);
            let ppm = (s.loss.clamp(0.0, 1.0) * 1e6).round() as u32;
            self.shared.loss_ppm.store(ppm, Ordering::Relaxed);
        }
    }

    fn snap(&mut self) {
        self.w_dry.snap();
        self.w_dec.snap();
        self.mix.snap();
        self.gain.snap();
        self.bypass.snap();
    }

    /// Restarts the stream (host reset, discontinuity): clears every buffer; output is silent for
    /// the latency, then aligned again. Audio-thread safe (no allocation, no lock).
    pub fn reset(&mut self) {
        let (down, up) = (&self.down, &self.up);
        for ch in &mut self.channels {
            if let (Some(d), Some(u)) = (down, up) {
                d.reset(&mut ch.down);
                u.reset(&mut ch.up);
            }
            ch.delay.fill(0.0);
        }
        self.delay_pos = 0;
        self.j = 0;
        self.stats.dropout_samples = 0;
        self.stats.overflows = 0;
        self.restart_stream();
        self.snap();
    }

    /// Publishes a stream restart at the current input position (see worker.rs).
    fn restart_stream(&mut self) {
        if self.codec.is_none() {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        self.shared.req_in_pos.store(self.in_pos, Ordering::Release);
        self.shared.req_epoch.store(self.epoch, Ordering::Release);
        self.out_base = None;
        self.frames_pushed = self.in_pos / self.hop as u64;
        if let Some((_, t)) = &self.worker {
            t.unpark();
        }
    }

    /// Processes one block in place: `bufs[c]` holds channel `c`'s input and receives its output.
    /// Channels beyond the engine's are left untouched. Never allocates, locks or blocks (except
    /// waiting for the worker in offline mode).
    pub fn process(&mut self, bufs: &mut [&mut [f32]], settings: &Settings) {
        if *settings != self.settings {
            self.apply_settings(settings);
        }
        let nch = self.channels.len();
        if bufs.len() < nch {
            return; // the shells always pass the activated channel count
        }
        let n = bufs[..nch].iter().map(|b| b.len()).min().unwrap_or(0);
        if n == 0 {
            return;
        }
        let lat = self.channels[0].delay.len();
        let pos0 = self.delay_pos;
        let delayed = lat > 0;
        let coding = self.codec.is_some();

        // 1. Input: the dry delay line (its output replaces the input in the buffer), and the
        //    down-sampler into the worker's ring.
        for (c, buf) in bufs[..nch].iter_mut().enumerate() {
            let ch = &mut self.channels[c];
            let mut pos = pos0;
            let mut pushed = 0u64;
            for v in buf[..n].iter_mut() {
                // NaN/inf would poison the filters and the codec; subnormals are flushed.
                let x = if v.is_normal() { *v } else { 0.0 };
                if delayed {
                    let d = ch.delay[pos];
                    ch.delay[pos] = x;
                    pos += 1;
                    if pos == lat {
                        pos = 0;
                    }
                    *v = d;
                } else {
                    *v = x;
                }
                if let (true, Some(down), Some(tx)) = (coding, &self.down, &mut ch.to_worker) {
                    down.push(&mut ch.down, x);
                    while down.ready(&ch.down) {
                        let y = down.next_output(&mut ch.down);
                        if tx.push(y).is_err() {
                            self.overflowed = true;
                        } else {
                            pushed += 1;
                        }
                    }
                }
            }
            if c == 0 {
                self.in_pos += pushed;
            }
        }
        self.delay_pos = if delayed { (pos0 + n) % lat } else { 0 };
        if !coding {
            self.finish_dry(bufs, nch, n);
            return;
        }
        let frames = self.in_pos / self.hop as u64;
        if frames != self.frames_pushed {
            self.frames_pushed = frames;
            if let Some((_, t)) = &self.worker {
                t.unpark();
            }
        }

        // 2. Output: up-sample the decoded stream and mix with the delayed dry signal.
        let Some(up) = self.up.take() else {
            return;
        };
        for i in 0..n {
            while !up.ready(&self.channels[0].up) {
                self.fetch_decoded(nch);
                for c in 0..nch {
                    up.push(&mut self.channels[c].up, self.y[c]);
                }
            }
            let wd = self.w_dry.next();
            let wc = self.w_dec.next();
            let mix = self.mix.next();
            let g = self.gain.next();
            let byp = self.bypass.next();
            for (c, buf) in bufs[..nch].iter_mut().enumerate() {
                let dec = up.next_output(&mut self.channels[c].up);
                let dry = buf[i];
                let mon = wd * dry + wc * dec;
                let mixed = dry + mix * (mon - dry);
                let out = g * mixed;
                buf[i] = out + byp * (dry - out);
            }
        }
        self.up = Some(up);
        if self.overflowed {
            // The worker stalled for about a second and input was lost: restart everything (the
            // output is silent for one latency), so that the paths are aligned again.
            self.overflowed = false;
            self.reset();
            self.stats.overflows += 1;
        }
    }

    fn finish_dry(&mut self, _bufs: &mut [&mut [f32]], _nch: usize, n: usize) {
        // The delayed dry signal is already in the buffers: pass-through (ramps still advance).
        for _ in 0..n {
            self.w_dry.next();
            self.w_dec.next();
            self.mix.next();
            self.gain.next();
            self.bypass.next();
        }
    }

    /// The decoded sample of model index `j` (since the last restart) for every channel, into
    /// `self.y`: silence before the codec delay, then the worker's output at the matching ring
    /// position.
    #[inline]
    fn fetch_decoded(&mut self, nch: usize) {
        let j = self.j;
        self.j += 1;
        self.y = [0.0; 2];
        if j < self.plan.d {
            return;
        }
        let mut waited: Option<Instant> = None;
        loop {
            if self.out_base.is_none()
                && self.shared.ack_epoch.load(Ordering::Acquire) == self.epoch
            {
                self.out_base = Some(self.shared.ack_out_pos.load(Ordering::Acquire));
            }
            if let Some(base) = self.out_base {
                let want = base + (j - self.plan.d);
                let avail = self.channels[..nch]
                    .iter()
                    .map(|c| c.from_worker.as_ref().map_or(0, |r| r.slots()))
                    .min()
                    .unwrap_or(0) as u64;
                // Drop what belongs to before the restart or was given up as a dropout.
                let skip = want.saturating_sub(self.popped).min(avail);
                if skip > 0 {
                    for ch in &mut self.channels[..nch] {
                        if let Some(r) = &mut ch.from_worker
                            && let Ok(chunk) = r.read_chunk(skip as usize)
                        {
                            chunk.commit_all();
                        }
                    }
                    self.popped += skip;
                }
                if self.popped == want && avail > skip {
                    for (c, ch) in self.channels[..nch].iter_mut().enumerate() {
                        if let Some(r) = &mut ch.from_worker {
                            self.y[c] = r.pop().unwrap_or(0.0);
                        }
                    }
                    self.popped += 1;
                    return;
                }
            }
            // Not there yet.
            if !self.offline {
                self.stats.dropout_samples += 1;
                return;
            }
            let start = *waited.get_or_insert_with(Instant::now);
            if start.elapsed() > OFFLINE_WAIT_LIMIT {
                self.stats.dropout_samples += 1;
                return;
            }
            if let Some((_, t)) = &self.worker {
                t.unpark();
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some((h, t)) = self.worker.take() {
            t.unpark();
            let _ = h.join();
        }
    }
}
