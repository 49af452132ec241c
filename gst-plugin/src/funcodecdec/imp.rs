//! `funcodecdec`: FCDC frame packets in, mono PCM out, with packet-loss concealment.
//!
//! ```sh
//! gst-launch-1.0 filesrc location=tone.fcdc ! funcodecparse ! funcodecdec ! audioconvert ! \
//!     wavenc ! filesink location=tone.wav
//! ```
//!
//! * Input: `audio/x-funcodec, framed=true` (from `funcodecenc`, `funcodecparse` or
//!   `rtpgstdepay`). The stream header comes from the caps' `streamheader` or in-band (a buffer
//!   starting with `FCDC`); without one the decoder's own model defines it. A stream made with
//!   another model (the header's model hash) is refused with an error.
//! * Output: F32LE or S16LE (whichever downstream prefers), mono, at the model's rate. Each
//!   decoded frame is stamped with its own packet's timestamp: a decoder with look-ahead (the
//!   windowed mode) returns a frame's audio later, but never shifted, so no priming is left in
//!   the output and it lines up with the encoder's input sample for sample.
//! * Packet loss: a GAP event (e.g. from `rtpjitterbuffer do-lost=true` through a depayloader),
//!   a gap of whole frames in the input timestamps, or a corrupt/truncated packet is concealed
//!   (the core repeats the last latent, fading, so neither a click nor hard silence) and, for
//!   corrupt packets, reported as a warning. Base-class property `plc` (on by default here)
//!   switches GAP concealment off.
//! * A DISCONT without a timestamp gap, a FLUSH, or a timestamp jump of more than a second resets
//!   the decoder state. `AudioClippingMeta` on a packet (the encoder's padded last frame, or the
//!   last frame of a CLI-made file via `funcodecparse`) trims the output.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use funcodec_core::bitstream::{self, StreamHeader};
use funcodec_core::{CodecModel, StreamDecoder};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_audio::prelude::*;
use gst_audio::subclass::prelude::*;
use parking_lot::Mutex;

use crate::common::{self, StreamSettings};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funcodecdec",
        gst::DebugColorFlags::empty(),
        Some("FunCodec neural speech decoder"),
    )
});

/// Lost frames concealed in a row at most (1 s at 25 frames/s); a longer loss continues in
/// silence, and a timestamp gap longer than this resets the decoder instead.
const MAX_PLC_FRAMES: u64 = 25;
/// A GAP longer than this (10 s at 25 frames/s) is not filled with samples at all.
const MAX_GAP_FILL_FRAMES: u64 = 250;

#[derive(Debug, Clone, Default)]
struct Settings {
    stream: StreamSettings,
}

/// Frames whose audio has not (all) come out of the core yet, in order. A slot with `input` ends
/// an input buffer of the base class (which stays pending there until its audio is out); frames
/// concealed before a packet are a slot of their own without `input`, a header is an input with
/// no frames.
#[derive(Debug)]
struct Slot {
    pts: Option<gst::ClockTime>,
    frames: u64,
    done: u64,
    clip_start: usize,
    clip_end: usize,
    input: bool,
}

impl Slot {
    fn new(pts: Option<gst::ClockTime>, frames: u64, input: bool) -> Slot {
        Slot {
            pts,
            frames,
            done: 0,
            clip_start: 0,
            clip_end: 0,
            input,
        }
    }
}

/// What one call hands to the base class.
struct Output {
    chunks: Vec<(gst::Buffer, Option<(gst::ClockTime, gst::ClockTime)>)>,
    inputs: usize,
}

/// One output buffer's worth of samples and its timestamp.
struct Chunk {
    pts: Option<gst::ClockTime>,
    pcm: Vec<f32>,
}

struct State {
    model: Arc<CodecModel>,
    dec: StreamDecoder,
    /// How packets are parsed: the stream's header once known, else the model's own.
    header: StreamHeader,
    /// Output sample format; `None` until `set_format` has negotiated one.
    out_format: Option<gst_audio::AudioFormat>,
    rate: u32,
    hop: usize,
    frame_dur: gst::ClockTime,
    /// Timestamp the next input packet should carry if none was lost.
    next_pts: Option<gst::ClockTime>,
    /// Timestamp just past the last output sample.
    out_end: Option<gst::ClockTime>,
    /// A DISCONT arrived; the next packet decides between concealment (a gap) and a reset.
    discont: bool,
    /// A frame was decoded since the last reset (concealment has something to repeat).
    have_audio: bool,
    slots: VecDeque<Slot>,
    codes: Vec<u16>,
    /// PCM frames out of the core, not yet assigned to slots.
    pcm: Vec<f32>,
}

impl State {
    /// Drops the stream state; returns how many pending input buffers lost their audio with it
    /// (the caller finishes them with the base class).
    fn reset(&mut self, why: &str, imp: &FuncodecDec) -> usize {
        gst::debug!(CAT, imp = imp, "resetting decoder state ({why})");
        let pending = self.slots.iter().filter(|s| s.input).count();
        if let Err(e) = self.dec.reset() {
            gst::error!(CAT, imp = imp, "reset failed: {e}");
        }
        self.next_pts = None;
        self.discont = false;
        self.have_audio = false;
        self.slots.clear();
        self.pcm.clear();
        pending
    }

    fn core_sink(pcm: &mut Vec<f32>) -> impl FnMut(&[f32]) -> funcodec_core::Result<()> + '_ {
        |p| {
            pcm.extend_from_slice(p);
            Ok(())
        }
    }

    /// Conceals `frames` lost frames: the core's concealment for up to [`MAX_PLC_FRAMES`], then
    /// silence (after draining the core, so the order of frames is kept) from a clean state.
    fn conceal(&mut self, frames: u64) -> funcodec_core::Result<()> {
        let plc = if self.have_audio {
            frames.min(MAX_PLC_FRAMES)
        } else {
            0
        };
        for _ in 0..plc {
            self.dec.conceal(Self::core_sink(&mut self.pcm))?;
        }
        if plc < frames {
            if self.have_audio {
                self.dec.flush(Self::core_sink(&mut self.pcm))?;
                self.dec.reset()?;
                self.have_audio = false;
            }
            let silent = (frames - plc) as usize * self.hop;
            self.pcm.resize(self.pcm.len() + silent, 0.0);
        }
        Ok(())
    }

    /// Decodes every packet in `data`; returns the number of frames and the first error (the
    /// frame it hit, and the rest of the buffer, count as one concealed frame).
    fn decode_packets(&mut self, data: &[u8]) -> (u64, Option<String>) {
        let mut offset = 0;
        let mut frames = 0;
        while offset < data.len() {
            frames += 1;
            let r = bitstream::decode_frame_into(&self.header, &data[offset..], &mut self.codes)
                .map_err(funcodec_core::Error::from)
                .and_then(|(_gain, len)| {
                    self.dec
                        .push_frame(&self.codes, Self::core_sink(&mut self.pcm))?;
                    Ok(len)
                });
            match r {
                Ok(len) => {
                    offset += len;
                    self.have_audio = true;
                }
                Err(e) => {
                    let msg = format!(
                        "corrupt frame ({} bytes at offset {offset} of a {}-byte buffer): {e}",
                        data.len() - offset,
                        data.len()
                    );
                    return match self.conceal(1) {
                        Ok(()) => (frames, Some(msg)),
                        Err(e2) => (frames, Some(format!("{msg}; concealment failed: {e2}"))),
                    };
                }
            }
        }
        (frames, None)
    }

    /// Pops the finished slots at the head; returns how many input buffers they complete.
    fn pop_finished(&mut self) -> usize {
        let mut inputs = 0;
        while let Some(slot) = self.slots.front() {
            if slot.done < slot.frames {
                break;
            }
            inputs += usize::from(slot.input);
            self.slots.pop_front();
        }
        inputs
    }

    /// Assigns the core's output frames to their slots: drops clipped samples, timestamps each
    /// run of contiguous audio; returns the chunks and how many input buffers are now complete.
    /// Frames with no slot left (cannot happen unless the core returns more frames than it was
    /// given) continue the output timeline.
    fn take_output(&mut self) -> (Vec<Chunk>, usize) {
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut inputs = self.pop_finished();
        let pcm = std::mem::take(&mut self.pcm);
        for frame in pcm.chunks(self.hop) {
            let (pts, s, e) = match self.slots.front_mut() {
                Some(slot) => {
                    let i = slot.done;
                    let s = if i == 0 {
                        slot.clip_start.min(frame.len())
                    } else {
                        0
                    };
                    let e = if i + 1 == slot.frames {
                        frame.len().saturating_sub(slot.clip_end).max(s)
                    } else {
                        frame.len()
                    };
                    let pts = slot.pts.map(|p| {
                        p.saturating_add(self.frame_dur.saturating_mul(i))
                            .saturating_add(common::samples_to_time(s as u64, self.rate))
                    });
                    slot.done += 1;
                    inputs += self.pop_finished();
                    (pts, s, e)
                }
                None => (None, 0, frame.len()),
            };
            if s == e {
                continue;
            }
            let pts = pts.or(self.out_end);
            let contiguous = match (chunks.last(), pts, self.out_end) {
                (Some(_), Some(p), Some(end)) => {
                    p.nseconds().abs_diff(end.nseconds()) < self.frame_dur.nseconds() / 2
                }
                (Some(_), _, _) => true,
                (None, _, _) => false,
            };
            if !contiguous {
                chunks.push(Chunk {
                    pts,
                    pcm: Vec::with_capacity(self.hop),
                });
            }
            let chunk = chunks.last_mut().expect("pushed above");
            chunk.pcm.extend_from_slice(&frame[s..e]);
            self.out_end =
                pts.map(|p| p.saturating_add(common::samples_to_time((e - s) as u64, self.rate)));
        }
        (chunks, inputs)
    }

    fn to_buffer(&self, chunk: &Chunk) -> gst::Buffer {
        let bytes: Vec<u8> = match self.out_format.unwrap_or(gst_audio::AudioFormat::F32le) {
            gst_audio::AudioFormat::S16le => chunk
                .pcm
                .iter()
                .flat_map(|v| ((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes())
                .collect(),
            _ => chunk.pcm.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        gst::Buffer::from_mut_slice(bytes)
    }
}

#[derive(Default)]
pub struct FuncodecDec {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Timestamp and duration for the buffer being finished: the base class would stamp it with
    /// the first pending input packet's timestamp, which is wrong after concealing frames lost
    /// before that packet or when the core returns a frame's audio later (look-ahead).
    restamp: Mutex<Option<(gst::ClockTime, gst::ClockTime)>>,
}

/// Checks input caps against the decoder's model; returns the stream header they describe.
fn check_caps(state: &State, caps: &gst::Caps) -> Result<StreamHeader, String> {
    let s = caps
        .structure(0)
        .ok_or_else(|| format!("empty caps {caps}"))?;
    let model = &state.model;
    let rate = model.sample_rate();
    if let Ok(r) = s.get::<i32>("rate")
        && r != rate as i32
    {
        return Err(format!(
            "the stream is {r} Hz but model {:?} is {rate} Hz",
            model.manifest.model_id
        ));
    }
    if let Ok(c) = s.get::<i32>("channels")
        && c != 1
    {
        return Err(format!(
            "the stream has {c} channels; FunCodec streams are mono"
        ));
    }
    let header = match common::streamheader_of(caps) {
        Some(bytes) => {
            StreamHeader::decode(&bytes)
                .map_err(|e| format!("corrupt streamheader in caps: {e}"))?
                .0
        }
        None => {
            let own = common::header_for(model);
            if let Ok(hash) = s.get::<&str>("model-hash")
                && hash != common::hash_hex(&own.model_hash)
            {
                return Err(format!(
                    "the stream was encoded with model hash {hash}, the decoder's model {:?} is \
                     {}; set the decoder's `model` to the encoder's model folder",
                    model.manifest.model_id,
                    common::hash_hex(&own.model_hash)
                ));
            }
            own
        }
    };
    common::check_header(&header, model)?;
    Ok(header)
}

fn is_header(data: &[u8]) -> bool {
    data.starts_with(b"FCDC")
}

/// Samples an `AudioClippingMeta` on `buffer` asks to drop at the start and the end.
fn clipping(buffer: &gst::BufferRef, rate: u32) -> (usize, usize) {
    let Some(meta) = buffer.meta::<gst_audio::AudioClippingMeta>() else {
        return (0, 0);
    };
    let to_samples = |v: gst::GenericFormattedValue| -> usize {
        match v {
            gst::GenericFormattedValue::Default(Some(n)) => *n as usize,
            gst::GenericFormattedValue::Time(Some(t)) => common::time_to_samples(t, rate) as usize,
            _ => 0,
        }
    };
    (to_samples(meta.start()), to_samples(meta.end()))
}

impl FuncodecDec {
    /// Pushes output chunks and finishes `inputs` input buffers with them (a chunk that completes
    /// none goes out as a subframe of the pending input).
    fn push(&self, out: Output) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        let Output { chunks, inputs } = out;
        if chunks.is_empty() {
            return if inputs > 0 {
                obj.finish_frame(None, inputs as i32)
            } else {
                Ok(gst::FlowSuccess::Ok)
            };
        }
        let last = chunks.len() - 1;
        for (i, (buf, stamp)) in chunks.into_iter().enumerate() {
            *self.restamp.lock() = stamp;
            let r = if i == last && inputs > 0 {
                obj.finish_frame(Some(buf), inputs as i32)
            } else {
                obj.finish_subframe(Some(buf))
            };
            self.restamp.lock().take();
            r?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Converts the state's pending output into buffers with their timestamps.
    fn collect(state: &mut State) -> Output {
        let (chunks, inputs) = state.take_output();
        let chunks = chunks
            .iter()
            .map(|c| {
                let dur = common::samples_to_time(c.pcm.len() as u64, state.rate);
                (state.to_buffer(c), c.pts.map(|p| (p, dur)))
            })
            .collect();
        Output { chunks, inputs }
    }

    fn handle_header(&self, data: &[u8]) -> Result<gst::FlowSuccess, gst::FlowError> {
        let parsed = StreamHeader::decode(data);
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        match parsed {
            Ok((header, _)) => {
                if let Err(msg) = common::check_header(&header, &state.model) {
                    drop(guard);
                    gst::element_imp_error!(self, gst::StreamError::WrongType, ["{msg}"]);
                    return Err(gst::FlowError::NotNegotiated);
                }
                state.header = header;
                state.slots.push_back(Slot::new(None, 0, true));
                let out = Self::collect(state);
                drop(guard);
                self.push(out)
            }
            Err(e) => {
                state.slots.push_back(Slot::new(None, 0, true));
                let out = Self::collect(state);
                drop(guard);
                self.decode_error(format!("ignoring a corrupt in-band stream header: {e}"))?;
                self.push(out)
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FuncodecDec {
    const NAME: &'static str = "GstFuncodecDec";
    type Type = super::FuncodecDec;
    type ParentType = gst_audio::AudioDecoder;
}

impl ObjectImpl for FuncodecDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            StreamSettings::properties(
                "; must be the encoder's model (the stream header's model hash is checked)",
            )
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if !self.settings.lock().stream.set(name, value) {
            unimplemented!("property {name}")
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let name = pspec.name();
        self.settings
            .lock()
            .stream
            .get(name)
            .unwrap_or_else(|| unimplemented!("property {name}"))
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_needs_format(true);
        obj.set_drainable(true);
        obj.set_plc_aware(true);
        obj.set_plc(true);
    }
}

impl GstObjectImpl for FuncodecDec {}

impl ElementImpl for FuncodecDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FunCodec decoder",
                "Codec/Decoder/Audio",
                "Decodes FunCodec FCDC frame packets to mono speech, concealing lost or corrupt \
                 frames",
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
                &gst::Caps::builder(common::MEDIA_TYPE)
                    .field("framed", true)
                    .build(),
            )
            .expect("valid template");
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &common::raw_caps(),
            )
            .expect("valid template");
            vec![src, sink]
        });
        TEMPLATES.as_ref()
    }
}

impl AudioDecoderImpl for FuncodecDec {
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
        let mode = settings.stream.core_mode(&model);
        let dec = StreamDecoder::with_mode(model.clone(), mode).map_err(|e| {
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
        gst::info!(
            CAT,
            imp = self,
            "model {:?} from {}, {mode:?}: latency {} samples",
            model.manifest.model_id,
            dir.display(),
            dec.latency_samples()
        );
        let rate = model.sample_rate();
        let hop = model.hop();
        *self.state.lock() = Some(State {
            header: common::header_for(&model),
            model,
            dec,
            out_format: None,
            rate,
            hop,
            frame_dur: common::samples_to_time(hop as u64, rate),
            next_pts: None,
            out_end: None,
            discont: false,
            have_audio: false,
            slots: VecDeque::new(),
            codes: Vec::new(),
            pcm: Vec::new(),
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = None;
        Ok(())
    }

    fn set_format(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let checked = match self.state.lock().as_mut() {
            None => return Err(gst::loggable_error!(CAT, "set_format before start")),
            Some(state) => check_caps(state, caps).map(|header| {
                // A caps update of the same stream (e.g. a new n-q) keeps the decoder state.
                state.header = header;
                (
                    state.rate,
                    common::samples_to_time(state.dec.latency_samples() as u64, state.rate),
                )
            }),
        };
        let (rate, latency) = match checked {
            Ok(v) => v,
            Err(msg) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ["{msg}"]);
                return Err(gst::loggable_error!(CAT, "{msg}"));
            }
        };

        // Output F32LE unless downstream prefers S16LE.
        let mut want = common::raw_caps();
        want.make_mut().set("rate", rate as i32);
        let peer = self.obj().src_pad().peer_query_caps(Some(&want));
        let first_format = |s: &gst::StructureRef| -> Option<String> {
            if let Ok(f) = s.get::<String>("format") {
                return Some(f);
            }
            let list = s.get::<gst::List>("format").ok()?;
            list.iter().next()?.get::<String>().ok()
        };
        let format = peer
            .iter()
            .find_map(first_format)
            .map(|f| gst_audio::AudioFormat::from_string(&f))
            .filter(|f| *f == gst_audio::AudioFormat::S16le)
            .unwrap_or(gst_audio::AudioFormat::F32le);
        let info = gst_audio::AudioInfo::builder(format, rate, 1)
            .build()
            .map_err(|_| gst::loggable_error!(CAT, "cannot build output info"))?;
        if let Some(state) = self.state.lock().as_mut() {
            state.out_format = Some(format);
        }
        gst::debug!(CAT, imp = self, "input {caps}, output {format:?}");
        let obj = self.obj();
        obj.set_latency(latency, Some(latency));
        obj.set_output_format(&info)
            .map_err(|_| gst::loggable_error!(CAT, "cannot set output format"))?;
        Ok(())
    }

    fn handle_frame(
        &self,
        buffer: Option<&gst::Buffer>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(buffer) = buffer else {
            return self.drain();
        };
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["cannot map input"]);
            gst::FlowError::Error
        })?;
        if is_header(&map) {
            return self.handle_header(&map);
        }

        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let pts = buffer.pts();
        let frame_ns = state.frame_dur.nseconds().max(1);

        if map.is_empty() && state.out_format.is_none() {
            // A GAP before any caps: nothing to conceal yet, and no output format of ours.
            drop(guard);
            return self.push(Output {
                chunks: Vec::new(),
                inputs: 1,
            });
        }
        if map.is_empty() {
            // The base class hands over an empty buffer for a GAP event: conceal its duration.
            let samples = buffer
                .duration()
                .map_or(state.hop as u64, |d| common::time_to_samples(d, state.rate));
            let frames = samples.div_ceil(state.hop as u64).max(1);
            if frames > MAX_GAP_FILL_FRAMES {
                // Whatever the core holds is lost with the reset; so are the pending inputs.
                let pending = state.reset("gap too long to fill", self);
                drop(guard);
                return self.push(Output {
                    chunks: Vec::new(),
                    inputs: pending + 1,
                });
            }
            gst::debug!(
                CAT,
                imp = self,
                "GAP at {pts:?}: concealing {frames} frame(s)"
            );
            let r = state.conceal(frames);
            state
                .slots
                .push_back(Slot::new(pts.or(state.next_pts), frames, true));
            state.next_pts = pts
                .or(state.next_pts)
                .map(|p| p.saturating_add(state.frame_dur.saturating_mul(frames)));
            state.discont = false;
            let out = Self::collect(state);
            drop(guard);
            if let Err(e) = r {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decode,
                    ["concealment failed: {e}"]
                );
                return Err(gst::FlowError::Error);
            }
            return self.push(out);
        }

        // Frames missing before this packet (from its timestamp), or a reason to reset (inputs
        // still pending when it happens are finished with this one).
        let mut lost = 0u64;
        let mut dropped = 0;
        match (pts, state.next_pts) {
            (Some(pts), Some(next)) => {
                let diff = pts.nseconds() as i128 - next.nseconds() as i128;
                let half = i128::from(frame_ns / 2);
                if diff >= half {
                    let k = ((diff + half) / i128::from(frame_ns)) as u64;
                    if k <= MAX_PLC_FRAMES {
                        lost = k;
                    } else {
                        dropped = state.reset("timestamps jumped forward", self);
                    }
                } else if diff <= -half {
                    dropped = state.reset("timestamps went back", self);
                } else if state.discont {
                    dropped = state.reset("discontinuity", self);
                }
            }
            _ if state.discont => dropped = state.reset("discontinuity", self),
            _ => {}
        }
        state.discont = false;
        if lost > 0 {
            gst::debug!(
                CAT,
                imp = self,
                "{lost} frame(s) missing before {pts:?}: concealing"
            );
            state
                .slots
                .push_back(Slot::new(state.next_pts, lost, false));
            if let Err(e) = state.conceal(lost) {
                drop(guard);
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decode,
                    ["concealment failed: {e}"]
                );
                return Err(gst::FlowError::Error);
            }
        }
        let (frames, error) = state.decode_packets(&map);
        let (clip_start, clip_end) = clipping(buffer, state.rate);
        let pts = pts.or(state.next_pts);
        state.slots.push_back(Slot {
            clip_start,
            clip_end,
            ..Slot::new(pts, frames, true)
        });
        state.next_pts = pts.map(|p| p.saturating_add(state.frame_dur.saturating_mul(frames)));
        let mut out = Self::collect(state);
        out.inputs += dropped;
        drop(guard);
        drop(map);
        if let Some(msg) = error {
            self.decode_error(format!("{msg}; concealed"))?;
        }
        self.push(out)
    }

    fn pre_push(&self, mut buffer: gst::Buffer) -> Result<Option<gst::Buffer>, gst::FlowError> {
        if let Some((mut pts, mut duration)) = *self.restamp.lock() {
            // The base class has already clipped the buffer to the output segment (after an
            // accurate seek, say): a shorter buffer lost its head if it began before the segment.
            if let Some(d) = buffer.duration()
                && d < duration
            {
                let start = self
                    .obj()
                    .src_pad()
                    .sticky_event::<gst::event::Segment>(0)
                    .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned())
                    .and_then(|s| s.start());
                if let Some(start) = start
                    && pts < start
                {
                    pts = start.min(pts + duration - d);
                }
                duration = d;
            }
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_duration(duration);
        }
        Ok(Some(buffer))
    }

    fn flush(&self, hard: bool) {
        if let Some(state) = self.state.lock().as_mut() {
            if hard {
                // The base class drops its pending inputs itself.
                state.reset("flush", self);
            } else {
                // Decide on the next packet: a timestamp gap is loss (conceal), else reset.
                state.discont = true;
            }
        }
    }
}

impl FuncodecDec {
    /// Reports a corrupt frame: a warning on the bus, counted against the base class's
    /// `max-errors` (an error once exceeded; never by default).
    fn decode_error(&self, msg: String) -> Result<gst::FlowSuccess, gst::FlowError> {
        gst::element_imp_warning!(self, gst::StreamError::Decode, ["{msg}"]);
        gst_audio::audio_decoder_error!(self.obj(), 1, gst::StreamError::Decode, ("{msg}"))
    }

    /// Drain (EOS, or before a DISCONT): a decoder with look-ahead returns the audio it holds;
    /// the causal one holds none and keeps its state (so concealment can follow a DISCONT).
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock();
        let Some(state) = guard.as_mut() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        if state.dec.latency_samples() == 0 {
            return Ok(gst::FlowSuccess::Ok);
        }
        let r = state.dec.flush(State::core_sink(&mut state.pcm));
        state.have_audio = false;
        let mut out = Self::collect(state);
        // Anything still pending (nothing, unless the core returned fewer frames than it took).
        out.inputs += state.slots.iter().filter(|s| s.input).count();
        state.slots.clear();
        drop(guard);
        if let Err(e) = r {
            gst::element_imp_error!(self, gst::StreamError::Decode, ["drain failed: {e}"]);
            return Err(gst::FlowError::Error);
        }
        self.push(out)
    }
}
