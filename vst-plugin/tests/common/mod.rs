//! Shared test helpers: bundles, model paths, test signals, and a minimal in-process CLAP host
//! (clack-host) that drives the plugin the way a DAW does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use clack_extensions::latency::{HostLatency, HostLatencyImpl};
use clack_extensions::params::{HostParams, HostParamsImplMainThread, HostParamsImplShared};
use clack_extensions::params::{ParamClearFlags, ParamRescanFlags};
use clack_host::prelude::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn tiny_model() -> String {
    repo()
        .join("tests/data/tiny_causal_ds640/model_steps")
        .to_string_lossy()
        .into_owned()
}

pub fn default_model() -> String {
    repo().join("models/default").to_string_lossy().into_owned()
}

/// The cargo profile folder this test binary was built into (target/debug).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf() // .../deps/<test> -> .../<profile>
}

static BUNDLE: Once = Once::new();

/// Builds the plugin library for this test profile and makes the `.clap` and `.vst3` bundles from
/// it (`vst-plugin/bundle.sh`; `cargo test` itself builds only the rlib, so the cdylib is built
/// here, which is a no-op when it is up to date); returns (clap file, vst3 folder).
pub fn bundles() -> (PathBuf, PathBuf) {
    let out = profile_dir().parent().unwrap().join("bundles");
    let lib = profile_dir().join("libfuncodec_monitor.so");
    BUNDLE.call_once(|| {
        // Bundle the library the workspace build made; building it here, for this package alone,
        // would unify features differently and rebuild the whole dependency tree.
        assert!(
            lib.exists(),
            "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
            lib.display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("vst-plugin/bundle.sh"))
            .arg("--no-build");
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd
            .arg("--lib")
            .arg(&lib)
            .arg("--out")
            .arg(&out)
            .env("CARGO_TARGET_DIR", profile_dir().parent().unwrap())
            .status()
            .expect("run bundle.sh");
        assert!(st.success(), "bundle.sh failed");
    });
    (
        out.join("funcodec-monitor.clap"),
        out.join("FunCodec Monitor.vst3"),
    )
}

/// Deterministic band-limited speech-like test signal (harmonics of a gliding f0 under a
/// syllable envelope, plus unvoiced bursts from random-phase partials), all below `max_hz`.
pub fn voice(rate: u32, seconds: f64, max_hz: f64) -> Vec<f32> {
    let n = (rate as f64 * seconds) as usize;
    let mut out = vec![0f32; n];
    let mut phase = 0.0f64;
    let mut seed = 0x1234_5678u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 11) as f64) / ((1u64 << 53) as f64)
    };
    // Unvoiced partials (fixed random frequencies and phases in 2..max_hz).
    let hiss: Vec<(f64, f64)> = (0..40)
        .map(|_| {
            (
                2000.0 + rnd() * (max_hz - 2100.0),
                rnd() * std::f64::consts::TAU,
            )
        })
        .collect();
    for (i, o) in out.iter_mut().enumerate() {
        let t = i as f64 / rate as f64;
        let f0 = 120.0 + 30.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
        phase += 2.0 * std::f64::consts::PI * f0 / rate as f64;
        let syl = (2.0 * std::f64::consts::PI * 3.0 * t).sin();
        let env = (syl.max(0.0)).powf(0.7);
        let mut v = 0.0;
        let mut h = 1.0;
        while h * f0 < max_hz {
            let f = h * f0;
            // Two formant-like bumps.
            let a = 1.0 / h
                * (1.0 + 3.0 * (-((f - 700.0) / 300.0).powi(2)).exp())
                * (1.0 + 2.0 * (-((f - 2200.0) / 500.0).powi(2)).exp());
            v += a * (h * phase).sin();
            h += 1.0;
        }
        let un = (-syl).max(0.0);
        let mut s = 0.0;
        for (f, p) in &hiss {
            s += (2.0 * std::f64::consts::PI * f * t + p).sin();
        }
        *o = (0.12 * env * v + 0.01 * un * s) as f32;
    }
    out
}

pub fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len() as f64).sqrt()
}

pub fn db(ratio: f64) -> f64 {
    20.0 * ratio.max(1e-300).log10()
}

/// Block sizes 1..=max, varying from call to call (deterministic).
pub fn varying_blocks(total: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut v = Vec::new();
    let mut left = total;
    while left > 0 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (s >> 33) as usize;
        // Mix of tiny, odd and large blocks.
        let b = match r % 4 {
            0 => 1 + r % 8,
            1 => 1 + r % 97,
            2 => 1 + r % 1024,
            _ => max - r % 3,
        }
        .clamp(1, max)
        .min(left);
        v.push(b);
        left -= b;
    }
    v
}

// ---------------------------------------------------------------------------------------------
// The test host.

pub struct TestHost;

pub struct HostShared {
    pub restarts: AtomicU32,
}

pub struct HostMain {
    pub latency_changed: AtomicU32,
    pub rescans: AtomicU32,
}

impl<'a> SharedHandler<'a> for HostShared {
    fn request_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

impl<'a> MainThreadHandler<'a> for HostMain {}

impl HostLatencyImpl for HostMain {
    fn changed(&self) {
        self.latency_changed.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostParamsImplMainThread for HostMain {
    fn rescan(&self, _flags: ParamRescanFlags) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
    }
    fn clear(&self, _param_id: ClapId, _flags: ParamClearFlags) {}
}

impl HostParamsImplShared for HostShared {
    fn request_flush(&self) {}
}

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = HostMain;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _: &Self::Shared<'_>) {
        builder.register::<HostLatency>().register::<HostParams>();
    }
}

pub fn host_info() -> HostInfo {
    HostInfo::new(
        "funcodec-monitor tests",
        "funcodec-rs",
        "https://example.invalid",
        "0.1",
    )
    .unwrap()
}

pub fn new_instance(entry: &PluginEntry) -> PluginInstance<TestHost> {
    PluginInstance::<TestHost>::new(
        |_| HostShared {
            restarts: AtomicU32::new(0),
        },
        |_| HostMain {
            latency_changed: AtomicU32::new(0),
            rescans: AtomicU32::new(0),
        },
        entry,
        c"rs.funcodec.monitor",
        &host_info(),
    )
    .expect("instantiate")
}

pub fn load_bundle(path: &Path) -> PluginEntry {
    // SAFETY: loading our own plugin library.
    unsafe { PluginEntry::load(path) }.expect("load .clap")
}

// ---------------------------------------------------------------------------------------------
// Driving an instance.

use clack_extensions::audio_ports_config::PluginAudioPortsConfig;
use clack_extensions::latency::PluginLatency;
use clack_extensions::params::PluginParams;
use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::ParamValueEvent;
use clack_host::process::StartedPluginAudioProcessor;
use funcodec_monitor::state::{self, SavedState};

fn no_hook(_: bool) {}

pub struct Runner {
    pub plugin: PluginInstance<TestHost>,
    pub proc: Option<StartedPluginAudioProcessor<TestHost>>,
    pub channels: usize,
    ins: Vec<Vec<f32>>,
    outs: Vec<Vec<f32>>,
    in_ports: AudioPorts,
    out_ports: AudioPorts,
    in_events: EventBuffer,
    out_events: EventBuffer,
    /// Called with `true` right before each `process` call and `false` right after.
    pub hook: fn(bool),
}

impl Runner {
    pub fn new(entry: &PluginEntry) -> Runner {
        Runner {
            plugin: new_instance(entry),
            proc: None,
            channels: 2,
            ins: Vec::new(),
            outs: Vec::new(),
            in_ports: AudioPorts::with_capacity(2, 1),
            out_ports: AudioPorts::with_capacity(2, 1),
            in_events: EventBuffer::with_capacity(256),
            out_events: EventBuffer::with_capacity(256),
            hook: no_hook,
        }
    }

    /// Loads a state made of `params` and a model choice, through the state extension.
    pub fn set_state(&mut self, model: &str, params: &[(u32, f64)]) {
        let bytes = state::encode(&SavedState {
            params: params.to_vec(),
            model: model.to_string(),
        });
        self.load_state_bytes(&bytes).expect("state load");
    }

    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        let h = self.plugin.plugin_handle();
        let ext = h.get_extension::<PluginState>().expect("state extension");
        ext.load(&h, &mut &bytes[..]).map_err(|e| format!("{e:?}"))
    }

    pub fn save_state(&mut self) -> Vec<u8> {
        let h = self.plugin.plugin_handle();
        let ext = h.get_extension::<PluginState>().expect("state extension");
        let mut v = Vec::new();
        ext.save(&h, &mut v).expect("state save");
        v
    }

    /// Selects the stereo (2) or mono (1) port configuration (while inactive).
    pub fn select_channels(&mut self, ch: usize) {
        let h = self.plugin.plugin_handle();
        let ext = h
            .get_extension::<PluginAudioPortsConfig>()
            .expect("ports config");
        ext.select(&h, ClapId::new(if ch == 1 { 1 } else { 0 }))
            .expect("select config");
        self.channels = ch;
    }

    pub fn set_offline(&mut self, offline: bool) {
        let h = self.plugin.plugin_handle();
        let ext = h.get_extension::<PluginRender>().expect("render extension");
        let mode = if offline {
            RenderMode::Offline
        } else {
            RenderMode::Realtime
        };
        ext.set(&h, mode).expect("render mode");
    }

    pub fn latency(&mut self) -> u32 {
        let h = self.plugin.plugin_handle();
        h.get_extension::<PluginLatency>().expect("latency").get(&h)
    }

    pub fn param(&mut self, id: u32) -> f64 {
        let h = self.plugin.plugin_handle();
        let ext = h.get_extension::<PluginParams>().expect("params");
        ext.get_value(&h, ClapId::new(id)).expect("param value")
    }

    pub fn activate(&mut self, rate: f64, max_block: u32) {
        let cfg = PluginAudioConfiguration {
            sample_rate: rate,
            min_frames_count: 1,
            max_frames_count: max_block,
        };
        let stopped = self.plugin.activate(|_, _| (), cfg).expect("activate");
        self.proc = Some(
            stopped
                .start_processing()
                .unwrap_or_else(|_| panic!("start processing")),
        );
        let mb = max_block as usize;
        self.ins = vec![vec![0.0; mb]; self.channels];
        self.outs = vec![vec![0.0; mb]; self.channels];
    }

    pub fn deactivate(&mut self) {
        if let Some(p) = self.proc.take() {
            self.plugin.deactivate(p.stop_processing());
        }
    }

    pub fn reset(&mut self) {
        self.proc.as_mut().expect("active").reset();
    }

    /// Processes `input` (one Vec per channel) in blocks of the given sizes, with parameter
    /// events `(absolute sample, id, plain value)` (sorted); returns the output.
    pub fn process(
        &mut self,
        input: &[Vec<f32>],
        blocks: &[usize],
        events: &[(usize, u32, f64)],
    ) -> Vec<Vec<f32>> {
        let total: usize = blocks.iter().sum();
        let mut out = vec![vec![0f32; total]; self.channels];
        let mut pos = 0;
        let mut ev = 0;
        let proc = self.proc.as_mut().expect("active");
        for &b in blocks {
            for (buf, inp) in self.ins.iter_mut().zip(input) {
                buf[..b].copy_from_slice(&inp[pos..pos + b]);
            }
            self.in_events.clear();
            while ev < events.len() && events[ev].0 < pos + b {
                let (t, id, v) = events[ev];
                self.in_events.push(&ParamValueEvent::new(
                    t.saturating_sub(pos) as u32,
                    ClapId::new(id),
                    Pckn::match_all(),
                    v,
                ));
                ev += 1;
            }
            self.out_events.clear();
            let inb = self.in_ports.with_input_buffers([AudioPortBuffer {
                channels: AudioPortBufferType::f32_input_only(
                    self.ins
                        .iter_mut()
                        .map(|v| InputChannel::variable(&mut v[..b])),
                ),
                latency: 0,
            }]);
            let mut outb = self.out_ports.with_output_buffers([AudioPortBuffer {
                channels: AudioPortBufferType::f32_output_only(
                    self.outs.iter_mut().map(|v| &mut v[..b]),
                ),
                latency: 0,
            }]);
            (self.hook)(true);
            let r = proc.process(
                &inb,
                &mut outb,
                &self.in_events.as_input(),
                &mut self.out_events.as_output(),
                None,
                None,
            );
            (self.hook)(false);
            r.expect("process");
            for (o, buf) in out.iter_mut().zip(&self.outs) {
                o[pos..pos + b].copy_from_slice(&buf[..b]);
            }
            pos += b;
        }
        out
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.deactivate();
    }
}
