//! The project's code-stream format, "FCDC": a self-describing header followed by one packet per
//! frame. A packet's length follows from its first byte, so a byte stream can be cut into frames
//! without any index (GStreamer carries one packet per buffer; a `.fcdc` file is header + packets).
//!
//! All integers are little-endian. CRC-32 is IEEE 802.3 (reflected, polynomial 0xEDB88320, init and
//! final XOR 0xFFFFFFFF; check value 0xCBF43926). CRC-8 uses polynomial 0x07, init 0, no reflection,
//! no final XOR (check value 0xF4).
//!
//! # Header (version 1)
//!
//! | offset | size | field                                                              |
//! |--------|------|--------------------------------------------------------------------|
//! | 0      | 4    | magic `"FCDC"`                                                     |
//! | 4      | 1    | version, `1`                                                       |
//! | 5      | 2    | `header_len`: u16, whole header in bytes, magic and CRC included   |
//! | 7      | 1    | flags: bit0 `total_samples` present, bit1 `level` present          |
//! | 8      | 4    | `sample_rate`: u32, > 0                                            |
//! | 12     | 4    | `hop`: u32, samples per frame, > 0                                 |
//! | 16     | 4    | `codebook_size`: u32, 2..=65536                                    |
//! | 20     | 1    | `max_quantizers`: u8, 1..=64                                       |
//! | 21     | 16   | `model_hash`                                                       |
//! | 37     | 1    | `L`: model id length in bytes, 0..=255                             |
//! | 38     | L    | `model_id`, UTF-8                                                  |
//! | 38+L   | 8    | `total_samples`: u64, only if flag bit0                            |
//! | next   | 4    | `level`: f32, finite and >= 0, only if flag bit1                   |
//! | next   | any  | fields appended by later revisions (skipped by this reader)        |
//! | len-4  | 4    | CRC-32 of bytes `0..header_len-4`                                  |
//!
//! The smallest header (empty model id, no optional fields) is 42 bytes. Flag bits 2..=7 are
//! reserved: written as zero and ignored on read, so a later revision can announce new fields in the
//! appended area and version-1 readers still decode its streams. The version byte changes only for
//! incompatible layouts; this reader rejects any version other than 1.
//!
//! # Frame packet
//!
//! | offset | size              | field                                                         |
//! |--------|-------------------|---------------------------------------------------------------|
//! | 0      | 1                 | bit7 sync (always 1), bit6 gain present, bits 0..=5 `n_q - 1` |
//! | 1      | 0 or 1            | gain byte, only if bit6                                       |
//! | next   | ceil(n_q × B / 8) | `n_q` codes in quantizer order, `B` bits each, MSB first, zero bits padding to a byte |
//! | last   | 1                 | CRC-8 of all preceding packet bytes                           |
//!
//! `B` = [`StreamHeader::bits_per_code`] = ceil(log2(`codebook_size`)), 10 for 1024 codes, so a
//! 32-quantizer frame is 42 bytes and a 1-quantizer frame 4. `n_q` is 1..=`max_quantizers` and may
//! change from packet to packet.
//!
//! A stream is the header followed directly by packets, with nothing between or after them. When
//! `total_samples` is present the stream holds exactly ceil(`total_samples` / `hop`) packets.

use std::fmt;

const MAGIC: [u8; 4] = *b"FCDC";
/// The only layout version this reader understands.
pub const VERSION: u8 = 1;
const FLAG_TOTAL_SAMPLES: u8 = 1 << 0;
const FLAG_LEVEL: u8 = 1 << 1;
/// Smallest valid header: fixed fields (38 bytes, through the model id length), empty id, CRC.
const MIN_HEADER_LEN: usize = 38 + 4;
const SYNC: u8 = 0x80;
const HAS_GAIN: u8 = 0x40;
const NQ_MASK: u8 = 0x3F;
/// `n_q - 1` lives in 6 bits.
const MAX_PACKET_QUANTIZERS: usize = 64;
/// A packet is at least its first byte, one payload byte and the CRC.
const MIN_PACKET_LEN: usize = 3;

/// Describes a stream; written once at its start.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHeader {
    /// Human-readable model name, at most 255 bytes of UTF-8 (e.g. `"funcodec-default-v1"`).
    pub model_id: String,
    /// Fingerprint of the model folder; a decoder checks it matches its model.
    pub model_hash: [u8; 16],
    pub sample_rate: u32,
    /// Samples per frame.
    pub hop: u32,
    /// Codes per codebook, 2..=65536.
    pub codebook_size: u32,
    /// Most quantizers any packet may carry, 1..=64.
    pub max_quantizers: u8,
    /// Sample count of the source, so a decoder can trim; `None` when streaming or unknown.
    pub total_samples: Option<u64>,
    /// Whole-utterance RMS for level restore.
    pub level: Option<f32>,
}

impl StreamHeader {
    /// Bits per packed code: ceil(log2(codebook_size)).
    pub fn bits_per_code(&self) -> u32 {
        u32::BITS - self.codebook_size.saturating_sub(1).leading_zeros()
    }

    /// Packets a complete stream must hold, when `total_samples` is known.
    pub fn expected_frames(&self) -> Option<u64> {
        match (self.total_samples, self.hop) {
            (Some(n), hop) if hop > 0 => Some(n.div_ceil(u64::from(hop))),
            _ => None,
        }
    }

    /// Checks every field against the format's limits (what [`StreamHeader::decode`] enforces,
    /// plus the model id length that [`StreamHeader::encode`] would otherwise cut).
    pub fn validate(&self) -> Result<(), BitstreamError> {
        if self.model_id.len() > usize::from(u8::MAX) {
            return Err(BitstreamError::ModelIdTooLong {
                len: self.model_id.len(),
            });
        }
        self.validate_values()
    }

    fn validate_values(&self) -> Result<(), BitstreamError> {
        if self.sample_rate == 0 {
            return Err(BitstreamError::ZeroSampleRate);
        }
        if self.hop == 0 {
            return Err(BitstreamError::ZeroHop);
        }
        if !(2..=65536).contains(&self.codebook_size) {
            return Err(BitstreamError::CodebookSize {
                size: self.codebook_size,
            });
        }
        if self.max_quantizers == 0 || usize::from(self.max_quantizers) > MAX_PACKET_QUANTIZERS {
            return Err(BitstreamError::MaxQuantizers {
                max: self.max_quantizers,
            });
        }
        match self.level {
            Some(level) if !level.is_finite() || level < 0.0 => {
                Err(BitstreamError::BadLevel { level })
            }
            _ => Ok(()),
        }
    }

    /// Serialises the header. Never fails: a model id over 255 bytes is cut at the last character
    /// boundary that fits (call [`StreamHeader::validate`] to refuse it instead); other fields are
    /// written as they are, so an invalid header is caught by the reader.
    pub fn encode(&self) -> Vec<u8> {
        let id = truncate_utf8(&self.model_id, usize::from(u8::MAX));
        let mut flags = 0;
        let mut len = MIN_HEADER_LEN + id.len();
        if self.total_samples.is_some() {
            flags |= FLAG_TOTAL_SAMPLES;
            len += 8;
        }
        if self.level.is_some() {
            flags |= FLAG_LEVEL;
            len += 4;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // At most 42 + 255 + 12 bytes, far below u16::MAX.
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.push(flags);
        out.extend_from_slice(&self.sample_rate.to_le_bytes());
        out.extend_from_slice(&self.hop.to_le_bytes());
        out.extend_from_slice(&self.codebook_size.to_le_bytes());
        out.push(self.max_quantizers);
        out.extend_from_slice(&self.model_hash);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        if let Some(n) = self.total_samples {
            out.extend_from_slice(&n.to_le_bytes());
        }
        if let Some(level) = self.level {
            out.extend_from_slice(&level.to_le_bytes());
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and validates the header at the start of `bytes`; returns it and its length in bytes
    /// (where the first packet starts).
    pub fn decode(bytes: &[u8]) -> Result<(StreamHeader, usize), BitstreamError> {
        let have = bytes.len();
        let magic = &bytes[..have.min(MAGIC.len())];
        if magic != &MAGIC[..magic.len()] {
            return Err(BitstreamError::BadMagic {
                found: magic.to_vec(),
            });
        }
        // Version before length and CRC: another version may lay those out differently.
        let &version = bytes.get(4).ok_or(BitstreamError::HeaderTruncated {
            need: MIN_HEADER_LEN,
            have,
        })?;
        if version != VERSION {
            return Err(BitstreamError::UnsupportedVersion { version });
        }
        let declared = match bytes.get(5..7) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => {
                return Err(BitstreamError::HeaderTruncated {
                    need: MIN_HEADER_LEN,
                    have,
                });
            }
        };
        let len = usize::from(declared);
        if len < MIN_HEADER_LEN {
            return Err(BitstreamError::HeaderLength {
                declared,
                needed: MIN_HEADER_LEN,
            });
        }
        let header = bytes
            .get(..len)
            .ok_or(BitstreamError::HeaderTruncated { need: len, have })?;
        let (body, crc_bytes) = header.split_at(len - 4);
        let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let computed = crc32(body);
        if stored != computed {
            return Err(BitstreamError::HeaderCrc { stored, computed });
        }

        let mut r = Reader {
            buf: body,
            pos: 8,
            declared,
        }; // magic, version, length, flags
        let flags = body[7];
        let sample_rate = u32::from_le_bytes(r.array()?);
        let hop = u32::from_le_bytes(r.array()?);
        let codebook_size = u32::from_le_bytes(r.array()?);
        let [max_quantizers] = r.array()?;
        let model_hash = r.array()?;
        let [id_len] = r.array()?;
        let model_id = std::str::from_utf8(r.take(usize::from(id_len))?)
            .map_err(|_| BitstreamError::ModelIdNotUtf8)?
            .to_owned();
        let total_samples = match flags & FLAG_TOTAL_SAMPLES {
            0 => None,
            _ => Some(u64::from_le_bytes(r.array()?)),
        };
        let level = match flags & FLAG_LEVEL {
            0 => None,
            _ => Some(f32::from_le_bytes(r.array()?)),
        };
        // Bytes after `r.pos` belong to a later revision and are skipped.
        let header = StreamHeader {
            model_id,
            model_hash,
            sample_rate,
            hop,
            codebook_size,
            max_quantizers,
            total_samples,
            level,
        };
        header.validate_values()?;
        Ok((header, len))
    }
}

/// Bounds-checked cursor over CRC-covered header bytes; running out means the declared header
/// length is too small for the fields the flags announce.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    declared: u16,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BitstreamError> {
        let end = self.pos + n;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(BitstreamError::HeaderLength {
                declared: self.declared,
                needed: end + 4,
            })?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BitstreamError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One decoded frame packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FramePacket {
    /// The frame's codes, one per quantizer, in quantizer order.
    pub codes: Vec<u16>,
    /// Optional per-frame level code (causal models with framewise level).
    pub gain: Option<u8>,
}

/// Packets may carry at most this many codes under `header`.
fn packet_quantizer_limit(header: &StreamHeader) -> usize {
    usize::from(header.max_quantizers).min(MAX_PACKET_QUANTIZERS)
}

fn payload_len(n_q: usize, bits: u32) -> usize {
    (n_q * bits as usize).div_ceil(8)
}

fn low_bits(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Appends one frame packet holding `codes` (quantizer order) and an optional gain byte. On error
/// nothing is appended.
pub fn encode_frame(
    header: &StreamHeader,
    codes: &[u16],
    gain: Option<u8>,
    out: &mut Vec<u8>,
) -> Result<(), BitstreamError> {
    let n_q = codes.len();
    let max = packet_quantizer_limit(header);
    if n_q == 0 {
        return Err(BitstreamError::EmptyFrame);
    }
    if n_q > max {
        return Err(BitstreamError::TooManyQuantizers { n_q, max });
    }
    if let Some((quantizer, &code)) = codes
        .iter()
        .enumerate()
        .find(|&(_, &c)| u32::from(c) >= header.codebook_size)
    {
        return Err(BitstreamError::CodeOutOfRange {
            quantizer,
            code: u32::from(code),
            codebook_size: header.codebook_size,
        });
    }
    let bits = header.bits_per_code();
    let start = out.len();
    out.reserve(2 + usize::from(gain.is_some()) + payload_len(n_q, bits));
    // n_q <= 64 was checked above, so n_q - 1 fits the 6-bit field.
    let gain_flag = if gain.is_some() { HAS_GAIN } else { 0 };
    out.push(SYNC | gain_flag | (n_q - 1) as u8);
    out.extend(gain);
    // MSB-first packing; fewer than 8 bits stay pending in `acc` between codes.
    let (mut acc, mut pending) = (0u64, 0u32);
    for &code in codes {
        acc = (acc << bits) | u64::from(code);
        pending += bits;
        while pending >= 8 {
            pending -= 8;
            out.push((acc >> pending) as u8);
        }
        acc &= low_bits(pending);
    }
    if pending > 0 {
        out.push((acc << (8 - pending)) as u8);
    }
    let crc = crc8(&out[start..]);
    out.push(crc);
    Ok(())
}

/// Total length in bytes of the packet whose first byte is `first_byte`.
pub fn packet_len(header: &StreamHeader, first_byte: u8) -> Result<usize, BitstreamError> {
    if first_byte & SYNC == 0 {
        return Err(BitstreamError::MissingSync { byte: first_byte });
    }
    let n_q = usize::from(first_byte & NQ_MASK) + 1;
    let max = packet_quantizer_limit(header);
    if n_q > max {
        return Err(BitstreamError::TooManyQuantizers { n_q, max });
    }
    let gain = usize::from(first_byte & HAS_GAIN != 0);
    Ok(1 + gain + payload_len(n_q, header.bits_per_code()) + 1)
}

/// Decodes the packet at the start of `bytes` into `codes_out` (cleared first, capacity kept);
/// returns the gain byte, if any, and the packet length.
pub fn decode_frame_into(
    header: &StreamHeader,
    bytes: &[u8],
    codes_out: &mut Vec<u16>,
) -> Result<(Option<u8>, usize), BitstreamError> {
    let &first = bytes
        .first()
        .ok_or(BitstreamError::FrameTruncated { need: 1, have: 0 })?;
    let len = packet_len(header, first)?;
    let packet = bytes.get(..len).ok_or(BitstreamError::FrameTruncated {
        need: len,
        have: bytes.len(),
    })?;
    let (body, crc) = packet.split_at(len - 1);
    let (stored, computed) = (crc[0], crc8(body));
    if stored != computed {
        return Err(BitstreamError::FrameCrc { stored, computed });
    }
    let (gain, payload) = if first & HAS_GAIN != 0 {
        (Some(body[1]), &body[2..])
    } else {
        (None, &body[1..])
    };

    let n_q = usize::from(first & NQ_MASK) + 1;
    let bits = header.bits_per_code();
    codes_out.clear();
    codes_out.reserve(n_q);
    // `payload` holds exactly ceil(n_q × bits / 8) bytes, so the refill never runs dry.
    let mut next_bytes = payload.iter();
    let (mut acc, mut pending) = (0u64, 0u32);
    for quantizer in 0..n_q {
        while pending < bits {
            acc = (acc << 8) | u64::from(next_bytes.next().copied().unwrap_or(0));
            pending += 8;
        }
        pending -= bits;
        let value = acc >> pending;
        acc &= low_bits(pending);
        match u16::try_from(value) {
            Ok(code) if value < u64::from(header.codebook_size) => codes_out.push(code),
            _ => {
                let codebook_size = header.codebook_size;
                return Err(BitstreamError::CodeOutOfRange {
                    quantizer,
                    code: value as u32,
                    codebook_size,
                });
            }
        }
    }
    if acc != 0 {
        return Err(BitstreamError::NonZeroPadding);
    }
    Ok((gain, len))
}

/// Decodes the packet at the start of `bytes`; returns it and its length.
pub fn decode_frame(
    header: &StreamHeader,
    bytes: &[u8],
) -> Result<(FramePacket, usize), BitstreamError> {
    let mut codes = Vec::new();
    let (gain, len) = decode_frame_into(header, bytes, &mut codes)?;
    Ok((FramePacket { codes, gain }, len))
}

/// Appends a whole stream: the header, then one gain-less packet per frame. Refuses what
/// [`read_stream`] would reject (invalid header, frame count not matching `total_samples`).
pub fn write_stream(
    header: &StreamHeader,
    frames: &[Vec<u16>],
    out: &mut Vec<u8>,
) -> Result<(), BitstreamError> {
    header.validate()?;
    check_frame_count(header, frames.len())?;
    let start = out.len();
    out.extend_from_slice(&header.encode());
    for (index, codes) in frames.iter().enumerate() {
        let offset = out.len() - start;
        if let Err(e) = encode_frame(header, codes, None, out) {
            out.truncate(start);
            return Err(BitstreamError::Frame {
                index,
                offset,
                source: Box::new(e),
            });
        }
    }
    Ok(())
}

/// Parses a whole stream; a bad packet is reported with its index and byte offset in `bytes`.
pub fn read_stream(bytes: &[u8]) -> Result<(StreamHeader, Vec<FramePacket>), BitstreamError> {
    let (header, mut offset) = StreamHeader::decode(bytes)?;
    // Cap the guess by what the bytes can hold, so a forged total_samples cannot force a huge allocation.
    let room = (bytes.len() - offset) / MIN_PACKET_LEN;
    let guess = header
        .expected_frames()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX).min(room));
    let mut frames = Vec::with_capacity(guess);
    while offset < bytes.len() {
        let index = frames.len();
        let (packet, len) =
            decode_frame(&header, &bytes[offset..]).map_err(|e| BitstreamError::Frame {
                index,
                offset,
                source: Box::new(e),
            })?;
        frames.push(packet);
        offset += len;
    }
    check_frame_count(&header, frames.len())?;
    Ok((header, frames))
}

fn check_frame_count(header: &StreamHeader, found: usize) -> Result<(), BitstreamError> {
    match header.expected_frames() {
        Some(expected) if expected != found as u64 => Err(BitstreamError::FrameCountMismatch {
            expected,
            found: found as u64,
        }),
        _ => Ok(()),
    }
}

/// Everything that can be wrong with a header, a packet or a whole stream.
///
/// `BadMagic` holds the (up to 4) bytes found; `HeaderLength` means the length field is below the
/// minimum or too small for the fields the flags announce; `Frame` wraps a packet error inside a
/// stream with the packet's index and the offset of its first byte.
#[derive(Debug, Clone, PartialEq)]
pub enum BitstreamError {
    BadMagic {
        found: Vec<u8>,
    },
    UnsupportedVersion {
        version: u8,
    },
    HeaderTruncated {
        need: usize,
        have: usize,
    },
    HeaderLength {
        declared: u16,
        needed: usize,
    },
    HeaderCrc {
        stored: u32,
        computed: u32,
    },
    ZeroSampleRate,
    ZeroHop,
    CodebookSize {
        size: u32,
    },
    MaxQuantizers {
        max: u8,
    },
    ModelIdNotUtf8,
    ModelIdTooLong {
        len: usize,
    },
    BadLevel {
        level: f32,
    },
    EmptyFrame,
    TooManyQuantizers {
        n_q: usize,
        max: usize,
    },
    CodeOutOfRange {
        quantizer: usize,
        code: u32,
        codebook_size: u32,
    },
    FrameTruncated {
        need: usize,
        have: usize,
    },
    MissingSync {
        byte: u8,
    },
    FrameCrc {
        stored: u8,
        computed: u8,
    },
    NonZeroPadding,
    Frame {
        index: usize,
        offset: usize,
        source: Box<BitstreamError>,
    },
    FrameCountMismatch {
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for BitstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BitstreamError::*;
        match self {
            BadMagic { found } => {
                write!(f, "not a FunCodec stream: bad magic ")?;
                found.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
                write!(f, " (expected 'FCDC')")
            }
            UnsupportedVersion { version } => write!(
                f,
                "unsupported stream version {version} (this reader knows version {VERSION})"
            ),
            HeaderTruncated { need, have } => {
                write!(f, "truncated stream header: need {need} bytes, have {have}")
            }
            HeaderLength { declared, needed } => {
                write!(
                    f,
                    "corrupt stream header: length field says {declared} bytes, but the header needs at least {needed}"
                )
            }
            HeaderCrc { stored, computed } => {
                write!(
                    f,
                    "corrupt stream header: CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"
                )
            }
            ZeroSampleRate => write!(f, "invalid stream header: sample rate is 0"),
            ZeroHop => write!(f, "invalid stream header: hop (samples per frame) is 0"),
            CodebookSize { size } => write!(
                f,
                "invalid stream header: codebook size {size} is outside 2..=65536"
            ),
            MaxQuantizers { max } => write!(
                f,
                "invalid stream header: max quantizers {max} is outside 1..=64"
            ),
            ModelIdNotUtf8 => write!(f, "invalid stream header: model id is not UTF-8"),
            ModelIdTooLong { len } => write!(
                f,
                "invalid stream header: model id is {len} bytes, at most 255 fit"
            ),
            BadLevel { level } => write!(
                f,
                "invalid stream header: level {level} is not a finite non-negative number"
            ),
            EmptyFrame => write!(f, "a frame needs at least one code"),
            TooManyQuantizers { n_q, max } => write!(
                f,
                "frame has {n_q} quantizers, the stream allows at most {max}"
            ),
            CodeOutOfRange {
                quantizer,
                code,
                codebook_size,
            } => {
                write!(
                    f,
                    "code {code} of quantizer {quantizer} is outside the codebook (size {codebook_size})"
                )
            }
            FrameTruncated { need, have } => {
                write!(f, "truncated frame: need {need} bytes, have {have}")
            }
            MissingSync { byte } => write!(
                f,
                "no frame starts here: byte {byte:#04x} lacks the sync bit"
            ),
            FrameCrc { stored, computed } => write!(
                f,
                "corrupt frame: CRC-8 mismatch (stored {stored:02x}, computed {computed:02x})"
            ),
            NonZeroPadding => write!(
                f,
                "corrupt frame: padding bits after the last code are not zero"
            ),
            Frame {
                index,
                offset,
                source,
            } => match **source {
                FrameTruncated { need, have } => write!(
                    f,
                    "truncated frame {index} at byte {offset}: need {need} bytes, have {have}"
                ),
                ref other => write!(f, "frame {index} at byte {offset}: {other}"),
            },
            FrameCountMismatch { expected, found } => {
                write!(
                    f,
                    "stream holds {found} frames, but its header's total_samples needs {expected}"
                )
            }
        }
    }
}

// `Frame`'s message already includes its cause, so `source()` stays `None`: reporters that walk the
// chain (anyhow's `{:#}`) would otherwise print the cause twice.
impl std::error::Error for BitstreamError {}

const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC32_TABLE[usize::from(c as u8 ^ b)] ^ (c >> 8)
    })
}

const CRC8_TABLE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u8;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x07
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc8(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |c, &b| CRC8_TABLE[usize::from(c ^ b)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(codebook_size: u32, max_quantizers: u8) -> StreamHeader {
        StreamHeader {
            model_id: "funcodec-default-v1".into(),
            model_hash: [0xA5; 16],
            sample_rate: 16000,
            hop: 640,
            codebook_size,
            max_quantizers,
            total_samples: None,
            level: None,
        }
    }

    /// Small header whose bytes are spelled out in `header_layout_is_exact`.
    fn small_header() -> StreamHeader {
        StreamHeader {
            model_id: "ab".into(),
            model_hash: std::array::from_fn(|i| i as u8),
            ..header(1024, 8)
        }
    }

    /// Recomputes the header CRC after a test edits header bytes.
    fn reseal_header(bytes: &mut [u8]) {
        let len = usize::from(u16::from_le_bytes([bytes[5], bytes[6]]));
        let crc = crc32(&bytes[..len - 4]);
        bytes[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }

    fn reseal_packet(packet: &mut [u8]) {
        let n = packet.len();
        packet[n - 1] = crc8(&packet[..n - 1]);
    }

    /// Deterministic pseudo-random codes below `size`.
    fn codes(n: usize, size: u32, seed: u64) -> Vec<u16> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) % u64::from(size)) as u16
            })
            .collect()
    }

    fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        b
    }

    #[test]
    fn crc_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc8(b""), 0);
    }

    #[test]
    fn bits_per_code_is_ceil_log2() {
        for (size, bits) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1000, 10),
            (1024, 10),
            (1025, 11),
            (65535, 16),
            (65536, 16),
        ] {
            assert_eq!(
                header(size, 1).bits_per_code(),
                bits,
                "codebook size {size}"
            );
        }
    }

    #[test]
    fn header_layout_is_exact() {
        let mut expected = vec![
            b'F', b'C', b'D', b'C', // magic
            1,    // version
            44, 0, // header length
            0, // flags
            0x80, 0x3E, 0, 0, // sample rate 16000
            0x80, 0x02, 0, 0, // hop 640
            0x00, 0x04, 0, 0, // codebook size 1024
            8, // max quantizers
        ];
        expected.extend(0u8..16); // model hash
        expected.extend([2, b'a', b'b']); // model id
        expected.extend([0xEF, 0x97, 0xEA, 0xAB]); // CRC-32 of the 40 bytes above (Python zlib.crc32)
        assert_eq!(small_header().encode(), expected);

        let full = StreamHeader {
            total_samples: Some(1300),
            level: Some(0.5),
            ..small_header()
        };
        let bytes = full.encode();
        assert_eq!(bytes.len(), 56);
        assert_eq!(bytes[5..8], [56, 0, 0b11]);
        assert_eq!(bytes[8..40], expected[8..40]);
        assert_eq!(bytes[40..48], [0x14, 0x05, 0, 0, 0, 0, 0, 0]); // 1300
        assert_eq!(bytes[48..52], [0, 0, 0, 0x3F]); // 0.5f32
        assert_eq!(bytes[52..], [0x01, 0x94, 0x9D, 0x5F]); // zlib.crc32 of bytes[..52]
    }

    #[test]
    fn header_round_trips() {
        for (total_samples, level) in [
            (None, None),
            (Some(0), None),
            (None, Some(0.0)),
            (Some(u64::MAX), Some(0.123_f32)),
        ] {
            let h = StreamHeader {
                total_samples,
                level,
                ..header(1024, 32)
            };
            let mut bytes = h.encode();
            let len = bytes.len();
            bytes.extend([0x80, 1, 2]); // what follows the header is not consumed
            assert_eq!(StreamHeader::decode(&bytes), Ok((h, len)));
        }
        let h = StreamHeader {
            model_id: String::new(),
            ..header(2, 1)
        };
        let bytes = h.encode();
        assert_eq!(bytes.len(), 42);
        assert_eq!(StreamHeader::decode(&bytes), Ok((h, 42)));
        let h = StreamHeader {
            model_id: "ü".repeat(127),
            ..header(65536, 64)
        }; // 254 bytes
        assert_eq!(StreamHeader::decode(&h.encode()), Ok((h, 42 + 254)));
    }

    #[test]
    fn long_model_id_is_cut_at_a_char_boundary_or_refused() {
        let h = StreamHeader {
            model_id: "é".repeat(200),
            ..small_header()
        }; // 400 bytes
        assert_eq!(
            h.validate(),
            Err(BitstreamError::ModelIdTooLong { len: 400 })
        );
        let (back, _) = StreamHeader::decode(&h.encode()).unwrap();
        assert_eq!(back.model_id, "é".repeat(127));
        let mut out = vec![7];
        assert_eq!(
            write_stream(&h, &[], &mut out),
            Err(BitstreamError::ModelIdTooLong { len: 400 })
        );
        assert_eq!(out, [7]);
    }

    #[test]
    fn appended_header_fields_are_skipped() {
        let mut bytes = small_header().encode();
        bytes.splice(40..40, [9, 9, 9]);
        bytes[5] = 47;
        bytes[7] |= 0x80; // a reserved flag announcing them
        reseal_header(&mut bytes);
        assert_eq!(StreamHeader::decode(&bytes), Ok((small_header(), 47)));
    }

    #[test]
    fn header_truncations_fail() {
        let bytes = StreamHeader {
            total_samples: Some(5),
            level: Some(1.0),
            ..small_header()
        }
        .encode();
        for cut in 0..bytes.len() {
            let need = if cut < 7 { 42 } else { bytes.len() };
            assert_eq!(
                StreamHeader::decode(&bytes[..cut]),
                Err(BitstreamError::HeaderTruncated { need, have: cut }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn header_bit_flips_fail() {
        let bytes = StreamHeader {
            total_samples: Some(5),
            level: Some(1.0),
            ..small_header()
        }
        .encode();
        for bit in 0..bytes.len() * 8 {
            assert!(
                StreamHeader::decode(&flip(&bytes, bit)).is_err(),
                "flip of bit {bit} accepted"
            );
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let err = StreamHeader::decode(b"RIFF1234").unwrap_err();
        assert_eq!(
            err,
            BitstreamError::BadMagic {
                found: b"RIFF".to_vec()
            }
        );
        assert_eq!(
            err.to_string(),
            "not a FunCodec stream: bad magic 52494646 (expected 'FCDC')"
        );
        assert_eq!(
            StreamHeader::decode(b"FX"),
            Err(BitstreamError::BadMagic {
                found: b"FX".to_vec()
            })
        );
        assert_eq!(
            StreamHeader::decode(b"FC"),
            Err(BitstreamError::HeaderTruncated { need: 42, have: 2 })
        );

        let mut bytes = small_header().encode();
        bytes[4] = 2;
        reseal_header(&mut bytes);
        let err = StreamHeader::decode(&bytes).unwrap_err();
        assert_eq!(err, BitstreamError::UnsupportedVersion { version: 2 });
        assert_eq!(
            err.to_string(),
            "unsupported stream version 2 (this reader knows version 1)"
        );
        bytes[4] = 0;
        assert_eq!(
            StreamHeader::decode(&bytes),
            Err(BitstreamError::UnsupportedVersion { version: 0 })
        );
    }

    #[test]
    fn header_length_and_crc_errors() {
        let bytes = small_header().encode();
        let mut b = bytes.clone();
        b[5] = 41;
        assert_eq!(
            StreamHeader::decode(&b),
            Err(BitstreamError::HeaderLength {
                declared: 41,
                needed: 42
            })
        );
        // Declared length one byte short for the 2-byte model id, CRC placed to match.
        let mut b = bytes[..39].to_vec();
        b[5] = 43;
        b.extend(crc32(&b).to_le_bytes());
        assert_eq!(
            StreamHeader::decode(&b),
            Err(BitstreamError::HeaderLength {
                declared: 43,
                needed: 44
            })
        );
        // Flags announce total_samples that the declared length leaves no room for.
        let mut b = bytes.clone();
        b[7] = FLAG_TOTAL_SAMPLES;
        reseal_header(&mut b);
        assert_eq!(
            StreamHeader::decode(&b),
            Err(BitstreamError::HeaderLength {
                declared: 44,
                needed: 52
            })
        );

        let b = flip(&bytes, 8 * 10);
        let err = StreamHeader::decode(&b).unwrap_err();
        assert_eq!(
            err,
            BitstreamError::HeaderCrc {
                stored: 0xABEA_97EF,
                computed: crc32(&b[..40])
            }
        );
        assert!(
            err.to_string()
                .starts_with("corrupt stream header: CRC-32 mismatch (stored abea97ef, computed ")
        );
    }

    #[test]
    fn header_field_validation() {
        let check = |h: StreamHeader, want: BitstreamError| {
            assert_eq!(h.validate(), Err(want.clone()));
            assert_eq!(StreamHeader::decode(&h.encode()), Err(want));
        };
        let h = small_header;
        check(
            StreamHeader {
                sample_rate: 0,
                ..h()
            },
            BitstreamError::ZeroSampleRate,
        );
        check(StreamHeader { hop: 0, ..h() }, BitstreamError::ZeroHop);
        check(
            StreamHeader {
                codebook_size: 1,
                ..h()
            },
            BitstreamError::CodebookSize { size: 1 },
        );
        check(
            StreamHeader {
                codebook_size: 65537,
                ..h()
            },
            BitstreamError::CodebookSize { size: 65537 },
        );
        check(
            StreamHeader {
                max_quantizers: 0,
                ..h()
            },
            BitstreamError::MaxQuantizers { max: 0 },
        );
        check(
            StreamHeader {
                max_quantizers: 65,
                ..h()
            },
            BitstreamError::MaxQuantizers { max: 65 },
        );
        check(
            StreamHeader {
                level: Some(-1.0),
                ..h()
            },
            BitstreamError::BadLevel { level: -1.0 },
        );
        check(
            StreamHeader {
                level: Some(f32::INFINITY),
                ..h()
            },
            BitstreamError::BadLevel {
                level: f32::INFINITY,
            },
        );
        let nan = StreamHeader {
            level: Some(f32::NAN),
            ..h()
        }
        .encode();
        assert!(
            matches!(StreamHeader::decode(&nan), Err(BitstreamError::BadLevel { level }) if level.is_nan())
        );

        let mut bytes = h().encode();
        bytes[38..40].copy_from_slice(&[0xFF, 0xFE]);
        reseal_header(&mut bytes);
        assert_eq!(
            StreamHeader::decode(&bytes),
            Err(BitstreamError::ModelIdNotUtf8)
        );
    }

    #[test]
    fn frame_layout_is_exact() {
        let h = small_header();
        let mut out = vec![0xEE]; // appends, leaving earlier bytes alone
        encode_frame(&h, &[1, 2, 1023], None, &mut out).unwrap();
        // 0000000001 0000000010 1111111111 00 -> 00 40 2F FC; CRC-8 of 82 00 40 2F FC is 42.
        assert_eq!(out, [0xEE, 0x82, 0x00, 0x40, 0x2F, 0xFC, 0x42]);

        let mut out = Vec::new();
        encode_frame(&h, &[0x3FF], Some(0xAB), &mut out).unwrap();
        assert_eq!(out, [0xC0, 0xAB, 0xFF, 0xC0, 0x97]);

        let mut out = Vec::new();
        encode_frame(&header(2, 8), &[1, 0, 1, 1, 0, 0, 0, 1], None, &mut out).unwrap();
        assert_eq!(out, [0x87, 0b1011_0001, 0xC3]);

        // Sizes quoted in the module docs.
        let h = header(1024, 32);
        let mut out = Vec::new();
        encode_frame(&h, &[0; 32], None, &mut out).unwrap();
        assert_eq!(out.len(), 42);
        assert_eq!(packet_len(&h, 0x80), Ok(4));
    }

    #[test]
    fn frames_round_trip() {
        for size in [2, 3, 1000, 1024, 65536] {
            let h = header(size, 64);
            for n_q in [1, 7, 32, 64] {
                for gain in [None, Some(0), Some(200)] {
                    let c = codes(n_q, size, u64::from(size) * 100 + n_q as u64);
                    let mut out = Vec::new();
                    encode_frame(&h, &c, gain, &mut out).unwrap();
                    let want_len = 2
                        + usize::from(gain.is_some())
                        + (n_q * h.bits_per_code() as usize).div_ceil(8);
                    assert_eq!(out.len(), want_len);
                    assert_eq!(packet_len(&h, out[0]), Ok(want_len));
                    out.extend([0x81, 0x00]); // the next packet's start is not consumed
                    assert_eq!(
                        decode_frame(&h, &out),
                        Ok((FramePacket { codes: c, gain }, want_len))
                    );
                }
            }
        }
        let h = header(65536, 3);
        let mut out = Vec::new();
        encode_frame(&h, &[0, 65535, 32768], None, &mut out).unwrap();
        assert_eq!(decode_frame(&h, &out).unwrap().0.codes, [0, 65535, 32768]);
    }

    #[test]
    fn decode_frame_into_reuses_the_vector() {
        let h = header(1024, 32);
        let mut out = Vec::new();
        encode_frame(&h, &[5, 6, 7], Some(9), &mut out).unwrap();
        let mut v: Vec<u16> = Vec::with_capacity(64);
        v.extend([1, 1, 1, 1, 1]);
        let ptr = v.as_ptr();
        assert_eq!(
            decode_frame_into(&h, &out, &mut v),
            Ok((Some(9), out.len()))
        );
        assert_eq!(v, [5, 6, 7]);
        assert_eq!(v.capacity(), 64);
        assert_eq!(v.as_ptr(), ptr);
    }

    #[test]
    fn frame_encode_errors() {
        let h = small_header();
        let mut out = vec![1, 2];
        assert_eq!(
            encode_frame(&h, &[], None, &mut out),
            Err(BitstreamError::EmptyFrame)
        );
        assert_eq!(
            encode_frame(&h, &[0; 9], None, &mut out),
            Err(BitstreamError::TooManyQuantizers { n_q: 9, max: 8 })
        );
        assert_eq!(
            encode_frame(&h, &[0, 1024], None, &mut out),
            Err(BitstreamError::CodeOutOfRange {
                quantizer: 1,
                code: 1024,
                codebook_size: 1024
            })
        );
        assert_eq!(
            encode_frame(&header(1000, 8), &[999, 1000], None, &mut out),
            Err(BitstreamError::CodeOutOfRange {
                quantizer: 1,
                code: 1000,
                codebook_size: 1000
            })
        );
        assert_eq!(out, [1, 2], "failed encodes must not append");
    }

    #[test]
    fn frame_decode_errors() {
        let h = small_header();
        let mut pkt = Vec::new();
        encode_frame(&h, &[1, 2, 1023], Some(3), &mut pkt).unwrap();
        for cut in 0..pkt.len() {
            let want = BitstreamError::FrameTruncated {
                need: if cut == 0 { 1 } else { pkt.len() },
                have: cut,
            };
            assert_eq!(decode_frame(&h, &pkt[..cut]), Err(want), "cut {cut}");
        }
        for bit in 0..pkt.len() * 8 {
            assert!(
                decode_frame(&h, &flip(&pkt, bit)).is_err(),
                "flip of bit {bit} accepted"
            );
        }
        assert_eq!(
            decode_frame(&h, &[0x02, 0, 0]),
            Err(BitstreamError::MissingSync { byte: 0x02 })
        );
        assert_eq!(
            packet_len(&h, 0x02),
            Err(BitstreamError::MissingSync { byte: 0x02 })
        );
        assert_eq!(
            packet_len(&h, 0x88),
            Err(BitstreamError::TooManyQuantizers { n_q: 9, max: 8 })
        );
        assert_eq!(
            decode_frame(&h, &[0x88; 20]),
            Err(BitstreamError::TooManyQuantizers { n_q: 9, max: 8 })
        );

        let mut b = pkt.clone();
        *b.last_mut().unwrap() ^= 0xFF;
        assert_eq!(
            decode_frame(&h, &b),
            Err(BitstreamError::FrameCrc {
                stored: pkt[6] ^ 0xFF,
                computed: pkt[6]
            })
        );

        // Valid CRC but a padding bit set (3 × 10 bits leave 2 padding bits).
        let mut b = pkt.clone();
        b[5] |= 0x01;
        reseal_packet(&mut b);
        assert_eq!(decode_frame(&h, &b), Err(BitstreamError::NonZeroPadding));

        // Valid CRC but a code beyond a non-power-of-two codebook: 1111111111 = 1023 >= 1000.
        let h1000 = header(1000, 8);
        let mut b = vec![0x80, 0xFF, 0xC0, 0];
        reseal_packet(&mut b);
        assert_eq!(
            decode_frame(&h1000, &b),
            Err(BitstreamError::CodeOutOfRange {
                quantizer: 0,
                code: 1023,
                codebook_size: 1000
            })
        );
    }

    fn stream_header() -> StreamHeader {
        StreamHeader {
            total_samples: Some(1300),
            level: Some(0.1),
            ..header(1024, 8)
        }
    }

    fn stream_frames() -> Vec<Vec<u16>> {
        vec![vec![1, 2, 3], vec![1023, 0, 5], vec![9, 9, 9]]
    }

    #[test]
    fn stream_round_trip_and_layout() {
        let h = stream_header();
        let mut bytes = Vec::new();
        write_stream(&h, &stream_frames(), &mut bytes).unwrap();
        let mut expected = h.encode();
        for f in stream_frames() {
            encode_frame(&h, &f, None, &mut expected).unwrap();
        }
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), h.encode().len() + 3 * 6);
        let want: Vec<FramePacket> = stream_frames()
            .into_iter()
            .map(|codes| FramePacket { codes, gain: None })
            .collect();
        assert_eq!(read_stream(&bytes), Ok((h, want)));

        // Packets may change n_q and carry gains.
        let h = StreamHeader {
            total_samples: Some(641),
            ..header(1024, 32)
        };
        let mut bytes = h.encode();
        encode_frame(&h, &[7; 32], Some(1), &mut bytes).unwrap();
        encode_frame(&h, &[8], None, &mut bytes).unwrap();
        let want = vec![
            FramePacket {
                codes: vec![7; 32],
                gain: Some(1),
            },
            FramePacket {
                codes: vec![8],
                gain: None,
            },
        ];
        assert_eq!(read_stream(&bytes), Ok((h, want)));
    }

    #[test]
    fn empty_streams() {
        for total_samples in [None, Some(0)] {
            let h = StreamHeader {
                total_samples,
                ..stream_header()
            };
            let mut bytes = Vec::new();
            write_stream(&h, &[], &mut bytes).unwrap();
            assert_eq!(bytes, h.encode());
            assert_eq!(read_stream(&bytes), Ok((h, Vec::new())));
        }
    }

    #[test]
    fn frame_count_must_match_total_samples() {
        let h = StreamHeader {
            total_samples: Some(1281),
            ..stream_header()
        }; // ceil(1281 / 640) = 3
        let mut bytes = Vec::new();
        write_stream(&h, &stream_frames(), &mut bytes).unwrap();
        assert!(read_stream(&bytes).is_ok());

        let short = StreamHeader {
            total_samples: Some(1280),
            ..stream_header()
        };
        let mut out = Vec::new();
        assert_eq!(
            write_stream(&short, &stream_frames(), &mut out),
            Err(BitstreamError::FrameCountMismatch {
                expected: 2,
                found: 3
            })
        );
        assert!(out.is_empty());
        let mut forged = short.encode();
        forged.extend_from_slice(&bytes[h.encode().len()..]);
        let err = read_stream(&forged).unwrap_err();
        assert_eq!(
            err,
            BitstreamError::FrameCountMismatch {
                expected: 2,
                found: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "stream holds 3 frames, but its header's total_samples needs 2"
        );

        let zero = StreamHeader {
            total_samples: Some(0),
            ..stream_header()
        };
        assert_eq!(
            write_stream(&zero, &[vec![1]], &mut out),
            Err(BitstreamError::FrameCountMismatch {
                expected: 0,
                found: 1
            })
        );
        // A huge forged total_samples is a count mismatch, not a huge allocation.
        let huge = StreamHeader {
            total_samples: Some(u64::MAX),
            ..stream_header()
        };
        let expected = u64::MAX.div_ceil(640);
        assert_eq!(
            read_stream(&huge.encode()),
            Err(BitstreamError::FrameCountMismatch { expected, found: 0 })
        );
    }

    #[test]
    fn stream_truncations_and_bit_flips_fail() {
        for total_samples in [Some(1300), None] {
            let mut bytes = Vec::new();
            write_stream(
                &StreamHeader {
                    total_samples,
                    ..stream_header()
                },
                &stream_frames(),
                &mut bytes,
            )
            .unwrap();
            for cut in 0..bytes.len() {
                // Without total_samples a cut exactly between packets is a valid shorter stream.
                let boundary = total_samples.is_none()
                    && cut >= bytes.len() - 18
                    && (bytes.len() - cut) % 6 == 0;
                assert_eq!(
                    read_stream(&bytes[..cut]).is_ok(),
                    boundary,
                    "cut {cut} ({total_samples:?})"
                );
            }
            for bit in 0..bytes.len() * 8 {
                assert!(
                    read_stream(&flip(&bytes, bit)).is_err(),
                    "flip of bit {bit} accepted ({total_samples:?})"
                );
            }
        }
    }

    #[test]
    fn stream_errors_name_frame_and_offset() {
        let h = stream_header();
        let hl = h.encode().len();
        let mut bytes = Vec::new();
        write_stream(&h, &stream_frames(), &mut bytes).unwrap();

        let err = read_stream(&bytes[..bytes.len() - 2]).unwrap_err();
        let source = Box::new(BitstreamError::FrameTruncated { need: 6, have: 4 });
        assert_eq!(
            err,
            BitstreamError::Frame {
                index: 2,
                offset: hl + 12,
                source
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "truncated frame 2 at byte {}: need 6 bytes, have 4",
                hl + 12
            )
        );

        let mut b = bytes.clone();
        b[hl + 6] &= 0x7F;
        let err = read_stream(&b).unwrap_err();
        let source = Box::new(BitstreamError::MissingSync { byte: 0x02 });
        assert_eq!(
            err,
            BitstreamError::Frame {
                index: 1,
                offset: hl + 6,
                source
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "frame 1 at byte {}: no frame starts here: byte 0x02 lacks the sync bit",
                hl + 6
            )
        );

        let mut out = vec![0xAA];
        let err = write_stream(&h, &[vec![1], vec![2, 2000], vec![3]], &mut out).unwrap_err();
        let source = Box::new(BitstreamError::CodeOutOfRange {
            quantizer: 1,
            code: 2000,
            codebook_size: 1024,
        });
        assert_eq!(
            err,
            BitstreamError::Frame {
                index: 1,
                offset: hl + 4,
                source
            }
        );
        assert_eq!(out, [0xAA], "a failed write leaves `out` as it was");
    }
}
