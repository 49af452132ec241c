//! `funcodecenc`: mono PCM at the model's rate in, one FCDC frame packet per frame out.
//!
//! ```sh
//! gst-launch-1.0 audiotestsrc num-buffers=100 ! audioconvert ! audioresample ! \
//!     funcodecenc bitrate=2000 ! filesink location=tone.fcdc
//! ```
//!
//! * Input: `audio/x-raw`, F32LE or S16LE, mono, at the model's rate (16 kHz); put
//!   `audioconvert ! audioresample` in front for anything else.
//! * Output: `audio/x-funcodec` (see [`crate::common::caps_for`]): one packet per `hop`-sample
//!   frame (40 ms), the stream header in the caps' `streamheader` and as the first buffer (flagged
//!   HEADER), so `funcodecenc ! filesink` writes a `.fcdc` file the CLI reads.
//! * Timestamps and durations come from the sample count (perfect-timestamp on); the LATENCY query
//!   adds the frame plus the model's look-ahead (exactly, in samples). The last partial frame is
//!   zero-padded at EOS and carries an `AudioClippingMeta` for the padding, so the decoder trims
//!   it. FLUSH, DISCONT (hard-resync on), a new segment or an input-format change reset the stream
//!   state; the first packet after a reset is flagged DISCONT so the decoder resets as well.
//! * `bitrate` / `n-q` may change in PLAYING; the change applies from the next frame and the
//!   output caps' `n-q` follows.

use std::sync::{Arc, LazyLock};

use funcodec_core::bitstream::{self, StreamHeader};
use funcodec_core::{CodecModel, StreamEncoder};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_audio::prelude::*;
use gst_audio::subclass::prelude::*;
use parking_lot::Mutex;

use crate::common::{self, StreamSettings};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funcodecenc",
        gst::DebugColorFlags::empty(),
        Some("FunCodec neural speech encoder"),
    )
});

const DEFAULT_BITRATE: i32 = 0;
const DEFAULT_N_Q: u32 = 0;
/// The bitstream's limit on quantizers per packet.
const MAX_N_Q: u32 = 64;

#[derive(Debug, Clone, Default)]
struct Settings {
    bitrate: i32,
    n_q: u32,
    stream: StreamSettings,
}

impl Settings {
    /// The quantizer count these settings ask of `model`, and whether an explicit `n-q` had to be
    /// clamped to the model's maximum.
    fn n_q_for(&self, model: &CodecModel) -> (usize, bool) {
        let max = model.num_quantizers();
        if self.n_q > 0 {
            let n = self.n_q as usize;
            (n.min(max), n > max)
        } else {
            (model.n_q_for_bitrate(i64::from(self.bitrate)), false)
        }
    }
}

struct State {
    model: Arc<CodecModel>,
    enc: StreamEncoder,
    header: StreamHeader,
    header_bytes: Vec<u8>,
    /// Input format, once negotiated.
    format: Option<gst_audio::AudioFormat>,
    scratch: Vec<f32>,
    /// Samples handed to the core whose packets have not been finished yet.
    unfinished: u64,
    /// The `n-q` announced in the current output caps.
    caps_n_q: usize,
    /// The next packet follows a reset of the stream state.
    discont: bool,
    headers_set: bool,
    warned_clamp: bool,
}

impl State {
    fn caps(&self) -> gst::Caps {
        common::caps_for(
            &self.header,
            &self.header_bytes,
            Some(self.enc.n_q()),
            Some(self.enc.latency_samples().saturating_sub(self.model.hop())),
        )
    }
}

#[derive(Default)]
pub struct FuncodecEnc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// The loaded model's rate, for caps queries (kept apart from `state` so a query never waits
    /// on a frame being encoded).
    rate: Mutex<Option<u32>>,
}

/// One finished packet and the input samples it accounts for.
struct Packet {
    bytes: Vec<u8>,
    samples: u64,
    /// Zero samples of padding at its end (the last frame of a drained stream).
    padding: u64,
    discont: bool,
}

impl FuncodecEnc {
    /// Applies the `bitrate` / `n-q` settings to the stream; returns new caps if `n-q` changed.
    fn apply_rate_settings(&self, state: &mut State) -> Option<gst::Caps> {
        let settings = self.settings.lock().clone();
        let (n_q, clamped) = settings.n_q_for(&state.model);
        if clamped && !state.warned_clamp {
            state.warned_clamp = true;
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                [
                    "n-q={} exceeds the {} quantizers of model {:?}; using {}",
                    settings.n_q,
                    state.model.num_quantizers(),
                    state.model.manifest.model_id,
                    n_q
                ]
            );
        }
        if n_q != state.enc.n_q() {
            gst::info!(CAT, imp = self, "quantizers {} -> {n_q}", state.enc.n_q());
            // 1..=max was ensured above; a failure here would be a core bug, reported as such.
            if let Err(e) = state.enc.set_n_q(n_q) {
                gst::error!(CAT, imp = self, "cannot set n-q {n_q}: {e}");
            }
        }
        if state.format.is_some() && state.enc.n_q() != state.caps_n_q {
            state.caps_n_q = state.enc.n_q();
            return Some(state.caps());
        }
        None
    }

    /// Encodes `pcm` (None: drain) and returns the finished packets.
    fn encode(
        &self,
        state: &mut State,
        pcm: Option<&[f32]>,
    ) -> Result<Vec<Packet>, funcodec_core::Error> {
        let hop = state.model.hop() as u64;
        let header = &state.header;
        let mut bytes: Vec<Vec<u8>> = Vec::new();
        let mut sink = |codes: &[u16]| -> funcodec_core::Result<()> {
            let mut p = Vec::with_capacity(4 + codes.len() * 2);
            bitstream::encode_frame(header, codes, None, &mut p)?;
            bytes.push(p);
            Ok(())
        };
        let mut flushed = None;
        match pcm {
            Some(pcm) => {
                state.enc.push(pcm, &mut sink)?;
                state.unfinished += pcm.len() as u64;
                // The base class hands over less than a frame only when draining.
                if (pcm.len() as u64) < hop {
                    flushed = Some(state.enc.flush(&mut sink)?);
                }
            }
            None => flushed = Some(state.enc.flush(&mut sink)?),
        }
        let count = bytes.len();
        let mut packets = Vec::with_capacity(count);
        for (i, b) in bytes.into_iter().enumerate() {
            let samples = hop.min(state.unfinished);
            state.unfinished -= samples;
            let last_of_flush = flushed.is_some() && i + 1 == count;
            packets.push(Packet {
                bytes: b,
                samples,
                padding: if last_of_flush { hop - samples } else { 0 },
                discont: std::mem::take(&mut state.discont),
            });
        }
        if flushed.is_some() {
            // `flush` reset the core: whatever comes next starts a new stream state.
            state.unfinished = 0;
            state.discont = true;
        }
        Ok(packets)
    }

    fn push_packets(&self, packets: Vec<Packet>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        for p in packets {
            let mut buf = gst::Buffer::from_mut_slice(p.bytes);
            {
                let b = buf.get_mut().expect("new buffer is writable");
                if p.discont {
                    b.set_flags(gst::BufferFlags::DISCONT);
                }
                if p.padding > 0 {
                    gst_audio::AudioClippingMeta::add(
                        b,
                        gst::format::Default::ZERO,
                        gst::format::Default::from_u64(p.padding),
                    );
                }
            }
            obj.finish_frame(Some(buf), p.samples as i32)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FuncodecEnc {
    const NAME: &'static str = "GstFuncodecEnc";
    type Type = super::FuncodecEnc;
    type ParentType = gst_audio::AudioEncoder;
    type Interfaces = (gst::Preset,);
}

impl ObjectImpl for FuncodecEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut v = vec![
                glib::ParamSpecInt::builder("bitrate")
                    .nick("Bit rate")
                    .blurb(
                        "Target bit rate in bit/s; FunCodec's rule picks n-q = clamp(floor(bitrate \
                         / bits per quantizer), 1, max) (250 bit/s per quantizer for 16 kHz, \
                         640-sample-hop models); 0 = all quantizers. Ignored while n-q is set. \
                         Changeable while playing: applies from the next frame",
                    )
                    .minimum(0)
                    .default_value(DEFAULT_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("n-q")
                    .nick("Quantizers")
                    .blurb(
                        "Residual quantizers per frame, 1 to the model's maximum (larger values are \
                         clamped, with a warning); 0 = derive from bitrate. Changeable while \
                         playing: applies from the next frame",
                    )
                    .maximum(MAX_N_Q)
                    .default_value(DEFAULT_N_Q)
                    .mutable_playing()
                    .build(),
            ];
            v.extend(StreamSettings::properties(
                " (manifest.json, ONNX graphs, codebooks)",
            ));
            v
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock();
        match pspec.name() {
            "bitrate" => s.bitrate = value.get().expect("type checked upstream"),
            "n-q" => s.n_q = value.get().expect("type checked upstream"),
            other => {
                if !s.stream.set(other, value) {
                    unimplemented!("property {other}")
                }
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock();
        match pspec.name() {
            "bitrate" => s.bitrate.to_value(),
            "n-q" => s.n_q.to_value(),
            other => s
                .stream
                .get(other)
                .unwrap_or_else(|| unimplemented!("property {other}")),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        // Timestamps from the sample count; a DISCONT or a jump beyond tolerance drains and resets.
        obj.set_perfect_timestamp(true);
        obj.set_hard_resync(true);
    }
}

impl GstObjectImpl for FuncodecEnc {}

impl ElementImpl for FuncodecEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FunCodec encoder",
                "Codec/Encoder/Audio",
                "Encodes mono speech with a FunCodec neural codec model into FCDC frame packets",
                "funcodec-rs developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &common::raw_caps(),
            )
            .expect("valid template");
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::builder(common::MEDIA_TYPE)
                    .field("framed", true)
                    .field("channels", 1i32)
                    .field("rate", gst::IntRange::new(1, i32::MAX))
                    .build(),
            )
            .expect("valid template");
            vec![src, sink]
        });
        TEMPLATES.as_ref()
    }
}

impl AudioEncoderImpl for FuncodecEnc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().clone();
        let dir = settings.stream.model_dir();
        let (model, note) = settings
            .stream
            .model_handle()
            .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ["{e}"]))?;
        if let Some(note) = note {
            gst::info!(CAT, imp = self, "{note}");
        }
        let (n_q, _) = settings.n_q_for(&model);
        let mode = settings.stream.core_mode(&model);
        let enc = StreamEncoder::with_mode(model.clone(), n_q, mode).map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                [
                    "model {:?} ({}) cannot stream in mode {:?}: {e}",
                    model.manifest.model_id,
                    dir.display(),
                    mode
                ]
            )
        })?;
        let header = common::header_for(&model);
        header.validate().map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Settings,
                [
                    "model {} gives an invalid stream header: {e}",
                    dir.display()
                ]
            )
        })?;
        let header_bytes = header.encode();
        gst::info!(
            CAT,
            imp = self,
            "model {:?} from {}, {mode:?}: {} Hz, hop {}, {} of {} quantizers, latency {} samples",
            model.manifest.model_id,
            dir.display(),
            model.sample_rate(),
            model.hop(),
            n_q,
            model.num_quantizers(),
            enc.latency_samples()
        );
        *self.rate.lock() = Some(model.sample_rate());
        *self.state.lock() = Some(State {
            caps_n_q: n_q,
            model,
            enc,
            header,
            header_bytes,
            format: None,
            scratch: Vec::new(),
            unfinished: 0,
            discont: false,
            headers_set: false,
            warned_clamp: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = None;
        *self.rate.lock() = None;
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> gst::Caps {
        let Some(rate) = *self.rate.lock() else {
            return self.parent_caps(filter);
        };
        let mut caps = common::raw_caps();
        caps.make_mut().set("rate", rate as i32);
        self.obj().proxy_getcaps(Some(&caps), filter)
    }

    fn set_format(&self, info: &gst_audio::AudioInfo) -> Result<(), gst::LoggableError> {
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Err(gst::loggable_error!(CAT, "set_format before start"));
        };
        let rate = state.model.sample_rate();
        if info.channels() != 1 || info.rate() != rate {
            let msg = format!(
                "input is {} Hz with {} channel(s); model {:?} takes mono at {rate} Hz \
                 (put audioconvert ! audioresample before funcodecenc)",
                info.rate(),
                info.channels(),
                state.model.manifest.model_id
            );
            drop(guard);
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ["{msg}"]);
            return Err(gst::loggable_error!(CAT, "{msg}"));
        }
        if !matches!(
            info.format(),
            gst_audio::AudioFormat::F32le | gst_audio::AudioFormat::S16le
        ) {
            return Err(gst::loggable_error!(
                CAT,
                "unsupported sample format {:?}",
                info.format()
            ));
        }
        state.format = Some(info.format());
        self.apply_rate_settings(state);
        state.caps_n_q = state.enc.n_q();
        let caps = state.caps();
        let hop = state.model.hop();
        let latency = common::samples_to_time(state.enc.latency_samples() as u64, rate);
        let header = (!state.headers_set).then(|| {
            state.headers_set = true;
            let mut b = gst::Buffer::from_slice(state.header_bytes.clone());
            b.get_mut()
                .expect("new buffer is writable")
                .set_flags(gst::BufferFlags::HEADER);
            b
        });
        drop(guard);

        let obj = self.obj();
        obj.set_frame_samples_min(hop as i32);
        obj.set_frame_samples_max(hop as i32);
        obj.set_frame_max(1);
        // A short EOS tail must reach handle_frame (it is zero-padded there), not be dropped.
        obj.set_hard_min(false);
        // Look-ahead here is only a delay: frame k's codes describe input frame k exactly, so output
        // timestamps must not be shifted (the base class's lookahead would shift them).
        obj.set_lookahead(0);
        obj.set_latency(latency, Some(latency));
        if let Some(h) = header {
            obj.set_headers([h]);
        }
        gst::debug!(CAT, imp = self, "output caps {caps}");
        obj.set_output_format(&caps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot set output caps {caps}"))?;
        Ok(())
    }

    fn handle_frame(
        &self,
        buffer: Option<&gst::Buffer>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let new_caps = self.apply_rate_settings(state);
        let mut nonfinite = 0usize;
        let result = match buffer {
            None => self.encode(state, None),
            Some(buffer) => {
                let map = buffer.map_readable().map_err(|_| {
                    gst::element_imp_error!(self, gst::CoreError::Failed, ["cannot map input"]);
                    gst::FlowError::Error
                })?;
                let mut scratch = std::mem::take(&mut state.scratch);
                scratch.clear();
                match state.format {
                    Some(gst_audio::AudioFormat::S16le) => scratch.extend(
                        map.chunks_exact(2)
                            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
                    ),
                    _ => scratch.extend(
                        map.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    ),
                }
                for v in scratch.iter_mut().filter(|v| !v.is_finite()) {
                    *v = 0.0;
                    nonfinite += 1;
                }
                let r = self.encode(state, Some(&scratch));
                state.scratch = scratch;
                r
            }
        };
        drop(guard);

        if nonfinite > 0 {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Encode,
                ["{nonfinite} NaN/infinite input samples replaced by silence"]
            );
        }
        let packets = result.map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Encode, ["encoding failed: {e}"]);
            gst::FlowError::Error
        })?;
        if let Some(caps) = new_caps {
            gst::debug!(CAT, imp = self, "new output caps {caps}");
            self.obj().set_output_format(&caps)?;
        }
        self.push_packets(packets)
    }

    fn flush(&self) {
        if let Some(state) = self.state.lock().as_mut() {
            gst::debug!(CAT, imp = self, "flush: resetting stream state");
            if let Err(e) = state.enc.reset() {
                gst::error!(CAT, imp = self, "reset failed: {e}");
            }
            state.unfinished = 0;
            state.discont = true;
        }
    }
}

impl PresetImpl for FuncodecEnc {}
