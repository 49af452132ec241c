//! Audio files in and out: WAV (hound, bit-exact for PCM), FLAC and Ogg Vorbis (symphonia); any rate
//! is resampled to the model rate with rubato's FFT resampler.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Deinterleaved audio: one Vec per channel.
pub struct Audio {
    pub rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Audio {
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / self.rate as f64
    }
}

pub fn read(path: &Path) -> Result<Audio> {
    let is_wav = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    let audio = if is_wav {
        read_wav(path)?
    } else {
        read_symphonia(path)?
    };
    if audio.frames() == 0 {
        bail!("{}: the file holds no audio samples", path.display());
    }
    Ok(audio)
}

fn read_wav(path: &Path) -> Result<Audio> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("{}: not a readable WAV file", path.display()))?;
    let spec = r.spec();
    let n_ch = spec.channels as usize;
    if n_ch == 0 || spec.sample_rate == 0 {
        bail!(
            "{}: WAV header has {} channels at {} Hz",
            path.display(),
            n_ch,
            spec.sample_rate
        );
    }
    let corrupt = || format!("{}: truncated or corrupt WAV data", path.display());
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => r
            .samples::<f32>()
            .collect::<Result<Vec<f32>, _>>()
            .with_context(corrupt)?,
        (hound::SampleFormat::Int, b @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (b - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<Vec<f32>, _>>()
                .with_context(corrupt)?
        }
        (f, b) => bail!(
            "{}: unsupported WAV sample format {f:?} {b}-bit",
            path.display()
        ),
    };
    Ok(Audio {
        rate: spec.sample_rate,
        channels: deinterleave(&interleaved, n_ch),
    })
}

fn read_symphonia(path: &Path) -> Result<Audio> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| {
            anyhow!(
                "{}: unsupported or corrupt audio file ({e}); WAV, FLAC and Ogg Vorbis are read",
                path.display()
            )
        })?;
    let mut format = probed.format;
    let track = format
        .default_track()
        .ok_or_else(|| anyhow!("{}: no audio track", path.display()))?;
    let (track_id, params) = (track.id, track.codec_params.clone());
    let rate = params
        .sample_rate
        .ok_or_else(|| anyhow!("{}: unknown sample rate", path.display()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| anyhow!("{}: unsupported codec ({e})", path.display()))?;
    let mut interleaved = Vec::new();
    let mut n_ch = params.channels.map(|c| c.count()).unwrap_or(0);
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => bail!("{}: corrupt audio stream ({e})", path.display()),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder
            .decode(&packet)
            .map_err(|e| anyhow!("{}: corrupt audio packet ({e})", path.display()))?;
        n_ch = decoded.spec().channels.count();
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, *decoded.spec());
        buf.copy_interleaved_ref(decoded);
        interleaved.extend_from_slice(buf.samples());
    }
    if n_ch == 0 {
        bail!("{}: no channels", path.display());
    }
    Ok(Audio {
        rate,
        channels: deinterleave(&interleaved, n_ch),
    })
}

fn deinterleave(x: &[f32], n_ch: usize) -> Vec<Vec<f32>> {
    (0..n_ch)
        .map(|c| x.iter().skip(c).step_by(n_ch).copied().collect())
        .collect()
}

/// Band-limited resampling of every channel; output length is round(len × to / from), aligned
/// (the resampler's delay is removed).
pub fn resample(audio: Audio, to: u32) -> Result<Audio> {
    if audio.rate == to {
        return Ok(audio);
    }
    let n_ch = audio.channels.len();
    let frames = audio.frames();
    let want = ((frames as u64 * to as u64 + audio.rate as u64 / 2) / audio.rate as u64) as usize;
    let chunk = 1024;
    let mut rs = FftFixedIn::<f32>::new(audio.rate as usize, to as usize, chunk, 2, n_ch)
        .map_err(|e| anyhow!("resampler {} -> {to} Hz: {e}", audio.rate))?;
    let delay = rs.output_delay();
    let mut out: Vec<Vec<f32>> = vec![Vec::with_capacity(want + delay); n_ch];
    let mut pos = 0;
    while out[0].len() < want + delay {
        let block: Vec<&[f32]> = audio
            .channels
            .iter()
            .map(|c| &c[pos.min(frames)..(pos + chunk).min(frames)])
            .collect();
        let produced = if block[0].len() == chunk {
            rs.process(&block, None)
        } else if block[0].is_empty() {
            rs.process_partial(None::<&[&[f32]]>, None)
        } else {
            rs.process_partial(Some(&block), None)
        }
        .map_err(|e| anyhow!("resampling failed: {e}"))?;
        pos += chunk;
        for (o, p) in out.iter_mut().zip(produced) {
            o.extend_from_slice(&p);
        }
    }
    let channels = out
        .into_iter()
        .map(|c| c[delay..delay + want].to_vec())
        .collect();
    Ok(Audio { rate: to, channels })
}

/// Writes 16-bit PCM WAV, like FunCodec's `save_audio`.
pub fn write_wav(path: &Path, rate: u32, channels: &[Vec<f32>]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let frames = channels.first().map_or(0, Vec::len);
    for t in 0..frames {
        for c in channels {
            // FunCodec (torchaudio PCM_S 16) scales by 32768 and saturates.
            w.write_sample((c[t] * 32768.0).round().clamp(-32768.0, 32767.0) as i16)?;
        }
    }
    w.finalize()
        .with_context(|| format!("cannot finish {}", path.display()))?;
    Ok(())
}

/// Writes mono 32-bit float WAV, untouched.
pub fn write_wav_f32(path: &Path, rate: u32, y: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create {}", path.display()))?;
    for &v in y {
        w.write_sample(v)?;
    }
    w.finalize()
        .with_context(|| format!("cannot finish {}", path.display()))?;
    Ok(())
}
