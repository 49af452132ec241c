//! `funcodecparse`: an FCDC byte stream (a `.fcdc` file: header, then packets) in, one
//! `audio/x-funcodec, framed=true` packet per buffer out, timestamped from the frame count.
//!
//! ```sh
//! gst-launch-1.0 filesrc location=speech.fcdc ! funcodecparse ! funcodecdec ! audioconvert ! \
//!     autoaudiosink
//! ```
//!
//! * The header goes into the caps' `streamheader` and out as the first buffer (HEADER), so
//!   `filesrc ! funcodecparse ! filesink` copies a file byte for byte.
//! * A header with `total_samples` (files made by the CLI) gives the duration, and the last
//!   packet carries an `AudioClippingMeta` for its padding, so the decoder outputs exactly the
//!   source's sample count.
//! * A packet whose CRC fails but is followed by a valid packet start is passed on (the decoder
//!   conceals it and warns); bytes that cannot start a packet are skipped with a warning until the
//!   stream is in sync again; a truncated last packet is passed on for concealment.

use std::sync::LazyLock;

use funcodec_core::bitstream::{self, StreamHeader};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use parking_lot::Mutex;

use crate::common;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funcodecparse",
        gst::DebugColorFlags::empty(),
        Some("FunCodec FCDC stream parser"),
    )
});

/// Bytes needed to read a header's length field (magic, version, length).
const HEADER_PREFIX: usize = 7;
/// The shortest possible packet (first byte, one payload byte, CRC).
const MIN_PACKET: usize = 3;
/// The longest: first byte, gain byte, 64 codes of 16 bits, CRC.
const MAX_PACKET: usize = 3 + 128;

/// Packet sizes seen since the header: while every packet has the same size (a fixed `n-q`), a
/// byte offset maps exactly to a frame, so seeking and timestamps after a seek are exact.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum PacketSize {
    #[default]
    Unknown,
    Constant(u64),
    Variable,
}

impl PacketSize {
    fn observe(&mut self, len: u64) {
        *self = match *self {
            PacketSize::Unknown => PacketSize::Constant(len),
            PacketSize::Constant(l) if l == len => PacketSize::Constant(l),
            _ => PacketSize::Variable,
        };
    }
}

#[derive(Default)]
struct State {
    header: Option<StreamHeader>,
    header_bytes: Vec<u8>,
    /// Byte offset of the header in the upstream stream (a file may hold streams back to back).
    header_offset: u64,
    packet_size: PacketSize,
    /// Whether the duration has been given to the base class (from the header or the file size).
    duration_known: bool,
    /// Packets pushed since the header.
    frames: u64,
    /// `n-q` announced in the current caps.
    caps_n_q: Option<usize>,
    /// Bytes skipped since sync was lost (0 while in sync).
    skipped: u64,
    codes: Vec<u16>,
}

#[derive(Default)]
pub struct FuncodecParse {
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for FuncodecParse {
    const NAME: &'static str = "GstFuncodecParse";
    type Type = super::FuncodecParse;
    type ParentType = gst_base::BaseParse;
}

impl ObjectImpl for FuncodecParse {}
impl GstObjectImpl for FuncodecParse {}

impl ElementImpl for FuncodecParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FunCodec stream parser",
                "Codec/Parser/Audio",
                "Splits an FCDC byte stream (.fcdc file) into timestamped frame packets",
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
                &gst::Caps::builder(common::MEDIA_TYPE).build(),
            )
            .expect("valid template");
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::builder(common::MEDIA_TYPE)
                    .field("framed", true)
                    .build(),
            )
            .expect("valid template");
            vec![src, sink]
        });
        TEMPLATES.as_ref()
    }
}

/// Whether a packet of `header` can start at `data[0]` (sync bit and a valid quantizer count).
fn packet_start(header: &StreamHeader, data: &[u8]) -> Option<usize> {
    bitstream::packet_len(header, *data.first()?).ok()
}

enum Step {
    /// Not enough data: wait for this many bytes.
    Need(usize),
    /// Skip bytes (out of sync).
    Skip(usize),
    /// A packet of this many bytes (`corrupt`: it failed its CRC but the next packet starts after it).
    Packet {
        len: usize,
        corrupt: bool,
    },
    Header(Result<(StreamHeader, usize), String>),
}

impl FuncodecParse {
    fn step(&self, state: &mut State, data: &[u8], draining: bool) -> Step {
        let Some(header) = state.header.as_ref() else {
            return Self::header_step(data, draining);
        };
        if data.starts_with(b"FCDC") {
            // A second stream appended (e.g. concatenated files): take its header.
            return Self::header_step(data, draining);
        }
        let Some(len) = packet_start(header, data) else {
            return Step::Skip(Self::next_start(header, data));
        };
        if data.len() < len {
            return if draining {
                Step::Packet {
                    len: data.len(),
                    corrupt: true,
                }
            } else {
                Step::Need(len)
            };
        }
        match bitstream::decode_frame_into(header, &data[..len], &mut state.codes) {
            Ok(_) => Step::Packet {
                len,
                corrupt: false,
            },
            Err(_) if data.len() == len && draining => Step::Packet { len, corrupt: true },
            Err(_) if data.len() == len => Step::Need(len + 1),
            Err(_) if packet_start(header, &data[len..]).is_some() => {
                Step::Packet { len, corrupt: true }
            }
            Err(_) => Step::Skip(Self::next_start(header, data)),
        }
    }

    /// Bytes to skip to the next byte that could start a packet.
    fn next_start(header: &StreamHeader, data: &[u8]) -> usize {
        (1..data.len())
            .find(|&i| packet_start(header, &data[i..]).is_some())
            .unwrap_or(data.len().max(1))
    }

    fn header_step(data: &[u8], draining: bool) -> Step {
        let magic = &data[..data.len().min(4)];
        if magic != &b"FCDC"[..magic.len()] {
            return Step::Header(Err(format!(
                "not a FunCodec stream: it starts with {magic:02x?}, not the FCDC magic"
            )));
        }
        if data.len() < HEADER_PREFIX {
            return if draining {
                Step::Header(Err(format!(
                    "truncated stream header ({} bytes)",
                    data.len()
                )))
            } else {
                Step::Need(HEADER_PREFIX)
            };
        }
        let declared = usize::from(u16::from_le_bytes([data[5], data[6]]));
        if data.len() < declared && !draining {
            return Step::Need(declared);
        }
        Step::Header(StreamHeader::decode(data).map_err(|e| format!("bad stream header: {e}")))
    }

    fn caps(&self, state: &State) -> Option<gst::Caps> {
        let header = state.header.as_ref()?;
        Some(common::caps_for(
            header,
            &state.header_bytes,
            state.caps_n_q,
            None,
        ))
    }
}

impl BaseParseImpl for FuncodecParse {
    /// Exact byte <-> time conversion while packets have one size (what seeking and the duration
    /// estimate of a file without `total_samples` use); the base class's estimate otherwise.
    fn convert(
        &self,
        src_val: impl gst::format::FormattedValue,
        dest_format: gst::Format,
    ) -> Option<gst::GenericFormattedValue> {
        let exact = {
            let state = self.state.lock();
            match (&state.header, state.packet_size) {
                (Some(h), PacketSize::Constant(size)) => Some((
                    state.header_offset + state.header_bytes.len() as u64,
                    size,
                    u64::from(h.hop),
                    h.sample_rate,
                )),
                _ => None,
            }
        };
        if let Some((header_len, size, hop, rate)) = exact {
            match (src_val.into(), dest_format) {
                (gst::GenericFormattedValue::Bytes(Some(b)), gst::Format::Time) => {
                    let frames = u64::from(b).saturating_sub(header_len) / size;
                    return Some(common::samples_to_time(frames * hop, rate).into());
                }
                (gst::GenericFormattedValue::Time(Some(t)), gst::Format::Bytes) => {
                    let frames = common::time_to_samples(t, rate) / hop;
                    return Some(gst::format::Bytes::from_u64(header_len + frames * size).into());
                }
                _ => {}
            }
        }
        self.parent_convert(src_val, dest_format)
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = State::default();
        self.obj().set_min_frame_size(HEADER_PREFIX as u32);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock() = State::default();
        Ok(())
    }

    fn handle_frame(
        &self,
        mut frame: gst_base::BaseParseFrame,
    ) -> Result<(gst::FlowSuccess, u32), gst::FlowError> {
        let obj = self.obj();
        let draining = obj.is_draining();
        // A copy of what one step can look at: a whole header, or a packet and the byte after it
        // (the base class may hand over far more).
        let data = {
            let Some(buf) = frame.buffer() else {
                return Ok((gst::FlowSuccess::Ok, 0));
            };
            let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
            let keep = if map.starts_with(b"FCDC") || self.state.lock().header.is_none() {
                map.len()
            } else {
                map.len().min(MAX_PACKET + 1)
            };
            map[..keep].to_vec()
        };
        let mut state = self.state.lock();
        match self.step(&mut state, &data, draining) {
            Step::Need(n) => {
                drop(state);
                obj.set_min_frame_size(n as u32);
                Ok((gst::FlowSuccess::Ok, 0))
            }
            Step::Skip(n) => {
                if state.skipped == 0 {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Demux,
                        [
                            "lost sync after frame {}: skipping bytes that cannot start a packet",
                            state.frames
                        ]
                    );
                }
                state.skipped += n as u64;
                // Packets no longer sit on a grid of one size from the header.
                state.packet_size = PacketSize::Variable;
                Ok((gst::FlowSuccess::Ok, n as u32))
            }
            Step::Header(Err(msg)) => {
                drop(state);
                gst::element_imp_error!(self, gst::StreamError::Format, ["{msg}"]);
                Err(gst::FlowError::Error)
            }
            Step::Header(Ok((header, len))) => {
                gst::debug!(CAT, imp = self, "stream header {header:?}");
                let rate = header.sample_rate;
                let hop = header.hop;
                let total = header.total_samples;
                state.header_bytes = data[..len].to_vec();
                state.header = Some(header);
                state.packet_size = PacketSize::Unknown;
                state.header_offset = match frame.offset() {
                    u64::MAX => 0,
                    o => o,
                };
                state.frames = 0;
                state.caps_n_q = None;
                state.skipped = 0;
                let caps = self.caps(&state).expect("header was just set");
                drop(state);
                obj.src_pad().push_event(gst::event::Caps::new(&caps));
                let gcd = gcd(rate, hop).max(1);
                obj.set_frame_rate(
                    gst::Fraction::new((rate / gcd) as i32, (hop / gcd) as i32),
                    0,
                    0,
                );
                if let Some(n) = total {
                    obj.set_duration(common::samples_to_time(n, rate), 0);
                }
                self.state.lock().duration_known = total.is_some();
                obj.set_min_frame_size(MIN_PACKET as u32);
                // A header takes no time: zero duration keeps it out of the timestamp count.
                let mut out = gst::Buffer::from_slice(data[..len].to_vec());
                {
                    let out = out.get_mut().expect("new buffer is writable");
                    out.set_flags(gst::BufferFlags::HEADER);
                    out.set_duration(gst::ClockTime::ZERO);
                }
                if let Some(b) = frame.buffer_mut() {
                    b.set_duration(gst::ClockTime::ZERO);
                }
                frame.set_output_buffer(out);
                frame.set_flags(gst_base::BaseParseFrameFlags::NO_FRAME);
                obj.finish_frame(frame, len as u32)?;
                Ok((gst::FlowSuccess::Ok, 0))
            }
            Step::Packet { len, corrupt } => {
                if state.skipped > 0 {
                    gst::info!(
                        CAT,
                        imp = self,
                        "in sync again after {} bytes",
                        state.skipped
                    );
                    state.skipped = 0;
                }
                let header = state.header.clone().expect("packets only after a header");
                if !corrupt {
                    state.packet_size.observe(len as u64);
                }
                // After a seek the base class resumes at a byte offset: the frame index follows
                // from it while packets have one size.
                let index = match (state.packet_size, frame.offset()) {
                    (PacketSize::Constant(size), offset) if offset != u64::MAX => offset
                        .checked_sub(state.header_offset + state.header_bytes.len() as u64)
                        .map_or(state.frames, |o| o / size),
                    _ => state.frames,
                };
                state.frames = index + 1;
                // A file without `total_samples` (written by a pipeline): its size gives the
                // duration, packets being of one size.
                let duration_from_size = !state.duration_known
                    && matches!(state.packet_size, PacketSize::Constant(_))
                    && {
                        state.duration_known = true;
                        true
                    };
                let n_q = (!corrupt).then_some(state.codes.len());
                let new_caps = match n_q {
                    Some(n) if state.caps_n_q != Some(n) => {
                        state.caps_n_q = Some(n);
                        self.caps(&state)
                    }
                    _ => None,
                };
                drop(state);
                if corrupt {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "frame {index} is corrupt; passing it on for concealment"
                    );
                }
                if let Some(caps) = new_caps {
                    obj.src_pad().push_event(gst::event::Caps::new(&caps));
                }
                if duration_from_size
                    && let Some(bytes) = obj.sink_pad().peer_query_duration::<gst::format::Bytes>()
                    && let Some(gst::GenericFormattedValue::Time(Some(t))) =
                        self.convert(bytes, gst::Format::Time)
                {
                    gst::debug!(CAT, imp = self, "duration {t} from {bytes}");
                    obj.set_duration(t, 0);
                }
                let hop = u64::from(header.hop);
                let pts = common::samples_to_time(index * hop, header.sample_rate);
                if let Some(b) = frame.buffer_mut() {
                    b.set_pts(pts);
                }
                // The last frame of a stream of known length: tell the decoder to drop its padding.
                if let (Some(total), Some(frames)) =
                    (header.total_samples, header.expected_frames())
                    && index + 1 == frames
                    && total % hop != 0
                {
                    let mut out = gst::Buffer::from_slice(data[..len].to_vec());
                    out.get_mut().expect("new buffer is writable").set_pts(pts);
                    gst_audio::AudioClippingMeta::add(
                        out.get_mut().expect("new buffer is writable"),
                        gst::format::Default::ZERO,
                        gst::format::Default::from_u64(hop - total % hop),
                    );
                    frame.set_output_buffer(out);
                }
                obj.finish_frame(frame, len as u32)?;
                Ok((gst::FlowSuccess::Ok, 0))
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
