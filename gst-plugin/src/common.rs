//! What the three elements share: where the model comes from (and a process-wide cache so an
//! encoder and a decoder on the same folder load it once), the `audio/x-funcodec` caps, and exact
//! sample ↔ time arithmetic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};

use funcodec_core::bitstream::StreamHeader;
use funcodec_core::{CodecModel, StreamMode, WindowConfig};
use gst::glib;
use gst::prelude::*;
use parking_lot::Mutex;

/// The coded media type.
pub const MEDIA_TYPE: &str = "audio/x-funcodec";

/// The bundled model folder, compiled in (`models/default` of the repository).
pub const BUNDLED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default");

/// Environment variable that overrides the bundled model when the `model` property is unset.
pub const MODEL_ENV: &str = "FUNCODEC_MODEL";

/// The raw audio the encoder takes and the decoder gives (rate fixed to the model's once loaded).
pub fn raw_caps() -> gst::Caps {
    gst_audio::AudioCapsBuilder::new_interleaved()
        .format_list([gst_audio::AudioFormat::F32le, gst_audio::AudioFormat::S16le])
        .channels(1)
        .build()
}

/// The folder an element uses: the `model` property, else `$FUNCODEC_MODEL`, else the bundled one.
pub fn model_dir(property: Option<&str>) -> PathBuf {
    match property {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => match std::env::var_os(MODEL_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(BUNDLED_MODEL),
        },
    }
}

/// Where the network runs (the `backend` property); the core resolves it when the model loads.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFuncodecBackend")]
pub enum Backend {
    #[default]
    #[enum_value(name = "CPU (tract)", nick = "cpu")]
    Cpu = 0,
    #[enum_value(
        name = "CUDA (tract-cuda; plugin built with the `cuda` feature and a GPU driver)",
        nick = "cuda"
    )]
    Cuda = 1,
    #[enum_value(name = "CUDA when available, else the CPU", nick = "auto")]
    Auto = 2,
}

impl From<Backend> for funcodec_core::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Cpu => funcodec_core::Backend::Cpu,
            Backend::Cuda => funcodec_core::Backend::Cuda,
            Backend::Auto => funcodec_core::Backend::Auto,
        }
    }
}

/// How a stream runs the model (the `mode` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFuncodecMode")]
pub enum Mode {
    #[default]
    #[enum_value(
        name = "Exact for causal models (step graphs), windowed for non-causal ones",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Exact streaming only (causal models; others are refused)",
        nick = "exact"
    )]
    Exact = 1,
    #[enum_value(
        name = "Windowed approximation through the offline graphs (bounded look-ahead)",
        nick = "windowed"
    )]
    Windowed = 2,
}

/// The settings both codec elements share: the model, where and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The `model` property (None: `$FUNCODEC_MODEL`, else the bundled model).
    pub model: Option<String>,
    pub mode: Mode,
    pub window: WindowConfig,
    pub threads: u32,
    pub backend: Backend,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            model: None,
            mode: Mode::Auto,
            window: WindowConfig::default(),
            threads: 1,
            backend: Backend::Cpu,
        }
    }
}

impl StreamSettings {
    /// The core's mode for `model`: `auto` is exact when the model has step graphs, else windowed
    /// with the element's window.
    pub fn core_mode(&self, model: &CodecModel) -> StreamMode {
        match self.mode {
            Mode::Auto if model.encoder_step().is_some() => StreamMode::Exact,
            Mode::Exact => StreamMode::Exact,
            Mode::Auto | Mode::Windowed => StreamMode::Windowed(self.window),
        }
    }

    /// The model folder these settings name.
    pub fn model_dir(&self) -> PathBuf {
        model_dir(self.model.as_deref())
    }

    /// This element's handle on the (shared, cached) model for its backend, with its own thread
    /// pool when `threads` > 1; plus a note on the engine `backend=auto` chose.
    pub fn model_handle(&self) -> Result<(Arc<CodecModel>, Option<String>), String> {
        let (model, note) = load_model(&self.model_dir(), self.backend.into())?;
        if self.threads <= 1 {
            return Ok((model, note));
        }
        let own = (*model).clone().with_threads(self.threads as usize);
        Ok((Arc::new(own), note))
    }

    /// The `model`, `mode`, `window-context`, `window-block`, `window-lookahead`, `threads` and
    /// `backend` properties; `model_note` is the element's own sentence about the folder.
    pub fn properties(model_note: &str) -> Vec<glib::ParamSpec> {
        let d = WindowConfig::default();
        vec![
            glib::ParamSpecString::builder("model")
                .nick("Model folder")
                .blurb(&format!(
                    "Exported FunCodec model folder{model_note}. Unset: ${MODEL_ENV}, else the \
                     bundled {BUNDLED_MODEL}. Reading it gives the folder that will be used"
                ))
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("mode", Mode::default())
                .nick("Streaming mode")
                .blurb(
                    "exact: frame-by-frame step graphs, identical to offline coding (causal \
                     models); windowed: FunCodec's non-causal models coded through windows of \
                     window-context + window-block + window-lookahead frames of the offline graphs \
                     (an approximation; latency grows with window-block and window-lookahead); \
                     auto: exact when the model can, else windowed",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("window-context")
                .nick("Window context")
                .blurb("Windowed mode: frames of past context in each window")
                .maximum(1024)
                .default_value(d.context as u32)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("window-block")
                .nick("Window block")
                .blurb("Windowed mode: frames coded per window (at least 1)")
                .minimum(1)
                .maximum(1024)
                .default_value(d.block as u32)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("window-lookahead")
                .nick("Window look-ahead")
                .blurb("Windowed mode: frames of look-ahead past each block")
                .maximum(1024)
                .default_value(d.lookahead as u32)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("threads")
                .nick("Threads")
                .blurb(
                    "Threads for the network's matrix products (1 = the streaming thread only); \
                     helps large models such as FunCodec's in windowed mode",
                )
                .minimum(1)
                .maximum(64)
                .default_value(1)
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("backend", Backend::default())
                .nick("Backend")
                .blurb(
                    "Where the network runs: cpu; cuda (an error if this build or machine has \
                     none); auto (CUDA when a driver and device answer, else the CPU, logged)",
                )
                .mutable_ready()
                .build(),
        ]
    }

    /// Sets one of [`Self::properties`]; false if `name` is not one of them.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let uint = |v: &glib::Value| v.get::<u32>().expect("type checked upstream") as usize;
        match name {
            "model" => self.model = value.get().expect("type checked upstream"),
            "mode" => self.mode = value.get().expect("type checked upstream"),
            "window-context" => self.window.context = uint(value),
            "window-block" => self.window.block = uint(value).max(1),
            "window-lookahead" => self.window.lookahead = uint(value),
            "threads" => self.threads = value.get::<u32>().expect("type checked upstream").max(1),
            "backend" => self.backend = value.get().expect("type checked upstream"),
            _ => return false,
        }
        true
    }

    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "model" => self.model_dir().to_string_lossy().into_owned().to_value(),
            "mode" => self.mode.to_value(),
            "window-context" => (self.window.context as u32).to_value(),
            "window-block" => (self.window.block as u32).to_value(),
            "window-lookahead" => (self.window.lookahead as u32).to_value(),
            "threads" => self.threads.to_value(),
            "backend" => self.backend.to_value(),
            _ => return None,
        })
    }
}

type ModelCache = HashMap<(PathBuf, funcodec_core::Backend), Weak<CodecModel>>;
static MODELS: LazyLock<Mutex<ModelCache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Loads a model folder for a backend, or returns the one already loaded from the same folder for
/// the same backend in this process (models are immutable and shared across streams). The error
/// says what is wrong and which folder; the note says which engine `auto` chose.
pub fn load_model(
    dir: &Path,
    backend: funcodec_core::Backend,
) -> Result<(Arc<CodecModel>, Option<String>), String> {
    let key = std::fs::canonicalize(dir).map_err(|e| {
        let hint = if dir == Path::new(BUNDLED_MODEL) {
            format!(
                " (this is the bundled default model; set the element's `model` property or \
                 ${MODEL_ENV} to an exported model folder)"
            )
        } else {
            String::new()
        };
        format!("cannot open model folder {}: {e}{hint}", dir.display())
    })?;
    let key = (key, backend);
    let mut cache = MODELS.lock();
    if let Some(model) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok((model, None));
    }
    let (model, note) = CodecModel::load_with_backend(&key.0, backend)
        .map_err(|e| format!("cannot load model {}: {e}", dir.display()))?;
    let model = Arc::new(model);
    cache.retain(|_, m| m.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&model));
    Ok((model, note))
}

/// Lower-case hex of the model's 16-byte fingerprint (what the bitstream header stores).
pub fn hash_hex(hash: &[u8; 16]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stream header a model's streams carry (the CLI builds the same one, plus optional
/// `total_samples`/`level`, which a stream cannot know up front).
pub fn header_for(model: &CodecModel) -> StreamHeader {
    StreamHeader {
        model_id: model.manifest.model_id.clone(),
        model_hash: model.manifest.hash_bytes(),
        sample_rate: model.sample_rate(),
        hop: model.hop() as u32,
        codebook_size: model.manifest.quantizer.codebook_size as u32,
        max_quantizers: model.num_quantizers().min(64) as u8,
        total_samples: None,
        level: None,
    }
}

/// `audio/x-funcodec` caps describing a stream with `header`; `n_q` is the current quantizer
/// count when known; `lookahead` the encoder's look-ahead in samples.
pub fn caps_for(
    header: &StreamHeader,
    header_bytes: &[u8],
    n_q: Option<usize>,
    lookahead: Option<usize>,
) -> gst::Caps {
    let hop = header.hop.max(1) as i32;
    let rate = header.sample_rate.max(1) as i32;
    let mut header_buf = gst::Buffer::from_slice(header_bytes.to_vec());
    header_buf
        .get_mut()
        .expect("new buffer is writable")
        .set_flags(gst::BufferFlags::HEADER);
    let mut s = gst::Structure::builder(MEDIA_TYPE)
        .field("framed", true)
        .field("rate", rate)
        .field("channels", 1i32)
        .field("frame-samples", hop)
        .field("framerate", gst::Fraction::new(rate, hop))
        .field("max-n-q", i32::from(header.max_quantizers))
        .field("codebook-size", header.codebook_size as i32)
        .field("model-id", header.model_id.as_str())
        .field("model-hash", hash_hex(&header.model_hash))
        .build();
    if let Some(n) = n_q {
        s.set("n-q", n as i32);
    }
    if let Some(l) = lookahead {
        s.set("lookahead", l as i32);
    }
    s.set(
        "streamheader",
        gst::Array::new([header_buf.to_send_value()]),
    );
    gst::Caps::builder_full().structure(s).build()
}

/// The first `streamheader` buffer of `caps`, if any.
pub fn streamheader_of(caps: &gst::CapsRef) -> Option<Vec<u8>> {
    let s = caps.structure(0)?;
    let arr = s.get::<gst::ArrayRef>("streamheader").ok()?;
    let buf = arr.iter().next()?.get::<gst::Buffer>().ok()?;
    let map = buf.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

/// Checks that a stream described by `header` can be decoded with `model`.
pub fn check_header(header: &StreamHeader, model: &CodecModel) -> Result<(), String> {
    let want = header_for(model);
    if header.model_hash != want.model_hash {
        return Err(format!(
            "the stream was encoded with model {:?} ({}), but the decoder loaded model {:?} ({}) \
             from {}: codes of one model mean nothing to another; set the decoder's `model` \
             property to the encoder's model folder",
            header.model_id,
            hash_hex(&header.model_hash),
            want.model_id,
            hash_hex(&want.model_hash),
            model.dir.display()
        ));
    }
    if (header.sample_rate, header.hop, header.codebook_size)
        != (want.sample_rate, want.hop, want.codebook_size)
        || header.max_quantizers > want.max_quantizers
    {
        return Err(format!(
            "stream header ({} Hz, hop {}, {} codes, up to {} quantizers) does not match model {:?} \
             ({} Hz, hop {}, {} codes, {} quantizers)",
            header.sample_rate,
            header.hop,
            header.codebook_size,
            header.max_quantizers,
            want.model_id,
            want.sample_rate,
            want.hop,
            want.codebook_size,
            want.max_quantizers
        ));
    }
    Ok(())
}

/// Duration of `samples` at `rate`, rounded down to the nanosecond (exact for 40 ms frames at
/// 16 kHz; never the integer-division slip of computing `samples / rate` in seconds first).
pub fn samples_to_time(samples: u64, rate: u32) -> gst::ClockTime {
    // Saturates (a forged header can claim any sample count) instead of reaching
    // GST_CLOCK_TIME_NONE, which `ClockTime` refuses.
    gst::ClockTime::from_nseconds(
        samples
            .mul_div_floor(gst::ClockTime::SECOND.nseconds(), u64::from(rate.max(1)))
            .map_or(gst::ClockTime::MAX.nseconds(), |ns| {
                ns.min(gst::ClockTime::MAX.nseconds())
            }),
    )
}

/// Samples in `t` at `rate`, rounded to the nearest sample.
pub fn time_to_samples(t: gst::ClockTime, rate: u32) -> u64 {
    t.nseconds()
        .mul_div_round(u64::from(rate), gst::ClockTime::SECOND.nseconds())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_time_arithmetic_is_exact() {
        assert_eq!(
            samples_to_time(640, 16000),
            gst::ClockTime::from_mseconds(40)
        );
        assert_eq!(
            samples_to_time(1, 16000),
            gst::ClockTime::from_nseconds(62_500)
        );
        // 10 minutes of frames: no accumulated rounding.
        assert_eq!(
            samples_to_time(15_000 * 640, 16000),
            gst::ClockTime::from_seconds(600)
        );
        assert_eq!(
            time_to_samples(gst::ClockTime::from_mseconds(40), 16000),
            640
        );
        assert_eq!(
            time_to_samples(gst::ClockTime::from_nseconds(62_499), 16000),
            1
        );
    }

    #[test]
    fn model_dir_prefers_the_property() {
        assert_eq!(model_dir(Some("/x/y")), PathBuf::from("/x/y"));
    }
}
