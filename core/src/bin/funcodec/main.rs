//! `funcodec`: encode, decode, round-trip and inspect with FunCodec models.

mod audio;
mod bench;
mod progress;
mod scp;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use funcodec_core::bitstream::{self, StreamHeader};
use funcodec_core::codecs_txt::{self, CodecsEntry};
use funcodec_core::stream::{decode_all, decode_batched, encode_all, encode_batched};
use funcodec_core::{Backend, CodecModel, Codes, Encoded, StreamMode, WindowConfig, peak_limit};

use audio::Audio;
use progress::Progress;
use scp::Shard;

/// The model bundled with the repository, used when neither --model nor FUNCODEC_MODEL is given.
const BUNDLED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default");

#[derive(Parser)]
#[command(
    name = "funcodec",
    version,
    about = "FunCodec neural speech codec: encode, decode, inspect"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ModelArg {
    /// Exported model folder (default: $FUNCODEC_MODEL, else the bundled models/default)
    #[arg(long, env = "FUNCODEC_MODEL")]
    model: Option<PathBuf>,
    /// Threads for the network's matrix products (1 = this thread only); helps large models
    #[arg(long, default_value_t = 1, env = "FUNCODEC_THREADS")]
    threads: usize,
    /// Where the network runs: cpu, cuda (builds with `--features cuda`), or auto (CUDA when a
    /// driver and device answer, else the CPU; the choice is printed)
    #[arg(long, default_value = "cpu", env = "FUNCODEC_BACKEND")]
    backend: Backend,
}

#[derive(Args, Clone)]
struct RateArg {
    /// Bit rate in bit/s; FunCodec's rule: n_q = floor(bitrate / bits-per-quantizer), 1..=N (0 = all)
    #[arg(long, conflicts_with = "n_q")]
    bitrate: Option<i64>,
    /// Number of quantizers (1..=N) instead of --bitrate
    #[arg(long)]
    n_q: Option<usize>,
}

#[derive(Args, Clone)]
struct StreamArg {
    /// Code through the streaming core, as a live stream (GStreamer, plugin) would: exact for
    /// causal models, a windowed approximation for FunCodec's non-causal ones
    #[arg(long)]
    stream: bool,
    /// Window for non-causal models, in frames: CONTEXT:BLOCK:LOOKAHEAD (default 24:4:4)
    #[arg(long, requires = "stream", value_parser = parse_window)]
    window: Option<WindowConfig>,
}

impl StreamArg {
    fn mode(&self) -> Option<StreamMode> {
        self.stream
            .then(|| self.window.map_or(StreamMode::Auto, StreamMode::Windowed))
    }
}

fn parse_window(s: &str) -> std::result::Result<WindowConfig, String> {
    let v: Vec<usize> = s
        .split(':')
        .map(|p| p.parse::<usize>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    match v[..] {
        [context, block, lookahead] if block > 0 => Ok(WindowConfig {
            context,
            block,
            lookahead,
        }),
        _ => Err("expected CONTEXT:BLOCK:LOOKAHEAD frames, BLOCK >= 1".into()),
    }
}

/// How to turn a multi-channel file into the model's mono input.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Channels {
    /// Average all channels (default for single files)
    Mix,
    /// Take the first channel, as FunCodec's own reader does (default for --scp)
    First,
    /// Code every channel on its own (one stream per channel)
    Each,
}

#[derive(Subcommand)]
enum Cmd {
    /// Encode audio (WAV/FLAC/OGG, any rate) to a .fcdc bitstream, or a wav.scp to codecs.txt
    Encode {
        /// Input audio file
        #[arg(required_unless_present = "scp")]
        input: Option<PathBuf>,
        /// Output .fcdc (with --channels each: one file per channel, NAME.chN.fcdc)
        #[arg(short, long, required_unless_present = "scp")]
        output: Option<PathBuf>,
        /// FunCodec wav.scp (`uttid path` per line): write FunCodec's codecs.txt instead
        #[arg(long, requires = "codecs_out", conflicts_with_all = ["input", "output"])]
        scp: Option<PathBuf>,
        /// codecs.txt to write in --scp mode
        #[arg(long)]
        codecs_out: Option<PathBuf>,
        /// Threads in --scp mode
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Utterances coded together per thread in --scp mode, one batched step per frame
        /// (step-graph models, whose offline path is the stream; others code one at a time)
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Only this shard of the wav.scp: i/N, 0-based (for Slurm arrays / Kubernetes indexed Jobs)
        #[arg(long)]
        shard: Option<Shard>,
        #[arg(long, value_enum)]
        channels: Option<Channels>,
        #[command(flatten)]
        stream: StreamArg,
        #[command(flatten)]
        model: ModelArg,
        #[command(flatten)]
        rate: RateArg,
    },
    /// Decode a .fcdc bitstream to WAV, or FunCodec's codecs.txt to one WAV per utterance
    Decode {
        /// .fcdc file, or codecs.txt
        input: PathBuf,
        /// Output WAV (for codecs.txt: a folder)
        #[arg(short, long)]
        output: PathBuf,
        /// Multiply the stored input RMS back (FunCodec's use_scale); default is the model's level
        #[arg(long)]
        restore_level: bool,
        /// Write 32-bit float WAV of the raw decoder output (no peak limiting), for analysis
        #[arg(long)]
        float: bool,
        /// Utterances of a codecs.txt decoded together, as for `encode --batch`
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[command(flatten)]
        model: ModelArg,
        #[command(flatten)]
        rate: RateArg,
    },
    /// Encode and decode in one go: hear what the codec does (output at the input's rate)
    Roundtrip {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "mix")]
        channels: Channels,
        /// Multiply the input RMS back after decoding
        #[arg(long)]
        restore_level: bool,
        #[command(flatten)]
        stream: StreamArg,
        #[command(flatten)]
        model: ModelArg,
        #[command(flatten)]
        rate: RateArg,
    },
    /// Describe a model folder or a .fcdc bitstream
    Info { path: PathBuf },
    /// Time one file on this thread: model load, offline encode/decode, streaming per-frame times
    /// (p50/p99), state and memory per stream, many streams on one model; prints JSON
    Bench {
        input: PathBuf,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Independent streams to run side by side on one model (streaming models only)
        #[arg(long, default_value_t = 16)]
        streams: usize,
        /// Also time every node of the step graphs (offline graphs for models without them) and
        /// report the time per op type
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        model: ModelArg,
        #[command(flatten)]
        rate: RateArg,
    },
    /// Convert FunCodec's codecs.txt into one .fcdc per utterance
    Import {
        codecs: PathBuf,
        #[arg(short, long)]
        out_dir: PathBuf,
        #[command(flatten)]
        model: ModelArg,
    },
    /// Convert .fcdc files into FunCodec's codecs.txt (utterance id = file stem)
    Export {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn model_dir(arg: &ModelArg) -> PathBuf {
    arg.model
        .clone()
        .unwrap_or_else(|| PathBuf::from(BUNDLED_MODEL))
}

fn load_model(arg: &ModelArg) -> Result<CodecModel> {
    let dir = model_dir(arg);
    let (model, note) = CodecModel::load_with_backend(&dir, arg.backend)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(model.with_threads(arg.threads))
}

fn pick_n_q(model: &CodecModel, rate: &RateArg) -> Result<usize> {
    let n = match (rate.n_q, rate.bitrate) {
        (Some(n), _) => n,
        (None, Some(bw)) => model.n_q_for_bitrate(bw),
        (None, None) => model.num_quantizers(),
    };
    model.check_n_q(n)?;
    Ok(n)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Encode {
            input,
            output,
            scp,
            codecs_out,
            jobs,
            batch,
            shard,
            channels,
            stream,
            model,
            rate,
        } => {
            let model = load_model(&model)?;
            let n_q = pick_n_q(&model, &rate)?;
            if stream.stream && scp.is_some() {
                bail!("--stream codes single files; --scp uses the offline path");
            }
            match (scp, codecs_out) {
                (Some(scp), Some(out)) => encode_scp(
                    &model,
                    &scp,
                    &out,
                    n_q,
                    (jobs, batch),
                    shard,
                    channels.unwrap_or(Channels::First),
                ),
                _ => encode_file(
                    &model,
                    &input.unwrap(),
                    &output.unwrap(),
                    n_q,
                    channels.unwrap_or(Channels::Mix),
                    stream.mode(),
                ),
            }
        }
        Cmd::Decode {
            input,
            output,
            restore_level,
            float,
            batch,
            model,
            rate,
        } => {
            let model = load_model(&model)?;
            let sink = WavOut { float };
            if is_fcdc(&input)? {
                decode_file(&model, &input, &output, restore_level, &rate, sink)
            } else {
                decode_codecs_txt(&model, &input, &output, &rate, sink, batch)
            }
        }
        Cmd::Bench {
            input,
            repeat,
            streams,
            profile,
            model,
            rate,
        } => {
            let dir = model_dir(&model);
            let probe = load_model(&model)?;
            let n_q = pick_n_q(&probe, &rate)?;
            let src = to_model_input(&probe, audio::read(&input)?, Channels::First)?;
            drop(probe);
            let opt = bench::Options {
                n_q,
                repeat,
                streams,
                threads: model.threads,
                backend: model.backend,
                profile,
            };
            let report = bench::run(&dir, &src.channels[0], &opt)?;
            println!("{report}");
            Ok(())
        }
        Cmd::Roundtrip {
            input,
            output,
            channels,
            restore_level,
            stream,
            model,
            rate,
        } => {
            let model = load_model(&model)?;
            let n_q = pick_n_q(&model, &rate)?;
            let src = audio::read(&input)?;
            let rate_in = src.rate;
            let mono = to_model_input(&model, src, channels)?;
            let mut out = Vec::new();
            for ch in &mono.channels {
                let enc = encode_with(&model, ch, n_q, stream.mode())?;
                let mut y = decode_with(&model, &enc.codes, stream.mode())?;
                y.truncate(enc.samples);
                if restore_level {
                    y.iter_mut().for_each(|v| *v *= enc.scale);
                }
                out.push(y);
            }
            let mut back = audio::resample(
                Audio {
                    rate: model.sample_rate(),
                    channels: out,
                },
                rate_in,
            )?;
            back.channels.iter_mut().for_each(|c| peak_limit(c));
            audio::write_wav(&output, back.rate, &back.channels)?;
            eprintln!(
                "{}: {:.2} s at {} bit/s ({n_q} quantizers)",
                output.display(),
                back.seconds(),
                bitrate(&model, n_q)
            );
            Ok(())
        }
        Cmd::Info { path } => info(&path),
        Cmd::Import {
            codecs,
            out_dir,
            model,
        } => {
            let model = load_model(&model)?;
            let text = std::fs::read_to_string(&codecs)
                .with_context(|| format!("cannot read {}", codecs.display()))?;
            let entries =
                codecs_txt::read_codecs_txt(&text).with_context(|| codecs.display().to_string())?;
            std::fs::create_dir_all(&out_dir)?;
            for e in &entries {
                let codes = Codes::from_rows(&e.codes)?;
                let path = out_dir.join(format!("{}.fcdc", e.utt_id));
                write_fcdc(&model, &path, &codes, None, None)?;
            }
            eprintln!("wrote {} streams to {}", entries.len(), out_dir.display());
            Ok(())
        }
        Cmd::Export { inputs, output } => {
            let mut entries = Vec::new();
            for p in &inputs {
                let (_, codes) = read_fcdc(p)?;
                let utt_id = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                entries.push(CodecsEntry {
                    utt_id,
                    codes: codes.to_rows(),
                });
            }
            std::fs::write(&output, codecs_txt::write_codecs_txt(&entries))?;
            Ok(())
        }
    }
}

fn bitrate(model: &CodecModel, n_q: usize) -> f64 {
    model.bits_per_quantizer() * n_q as f64
}

/// Resample to the model rate and reduce channels as asked.
fn to_model_input(model: &CodecModel, src: Audio, channels: Channels) -> Result<Audio> {
    let src = match channels {
        Channels::Each => src,
        Channels::First => Audio {
            rate: src.rate,
            channels: vec![src.channels.into_iter().next().unwrap()],
        },
        Channels::Mix => {
            let n = src.channels.len() as f32;
            let mix = (0..src.frames())
                .map(|t| src.channels.iter().map(|c| c[t]).sum::<f32>() / n)
                .collect();
            Audio {
                rate: src.rate,
                channels: vec![mix],
            }
        }
    };
    audio::resample(src, model.sample_rate())
}

fn header_for(model: &CodecModel, total_samples: Option<u64>, level: Option<f32>) -> StreamHeader {
    StreamHeader {
        model_id: model.manifest.model_id.clone(),
        model_hash: model.manifest.hash_bytes(),
        sample_rate: model.sample_rate(),
        hop: model.hop() as u32,
        codebook_size: model.manifest.quantizer.codebook_size as u32,
        max_quantizers: model.num_quantizers() as u8,
        total_samples,
        level,
    }
}

fn write_fcdc(
    model: &CodecModel,
    path: &Path,
    codes: &Codes,
    samples: Option<u64>,
    level: Option<f32>,
) -> Result<()> {
    let header = header_for(model, samples, level);
    let frames: Vec<Vec<u16>> = (0..codes.frames).map(|t| codes.frame(t).to_vec()).collect();
    let mut bytes = Vec::new();
    bitstream::write_stream(&header, &frames, &mut bytes)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn read_fcdc(path: &Path) -> Result<(StreamHeader, Codes)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (header, packets) =
        bitstream::read_stream(&bytes).with_context(|| path.display().to_string())?;
    let n_q = packets
        .first()
        .map_or(header.max_quantizers as usize, |p| p.codes.len());
    let mut codes = Codes::new(n_q);
    for (i, p) in packets.iter().enumerate() {
        // A stream may change n_q between frames; a whole-file decode needs one count.
        if p.codes.len() != n_q {
            bail!(
                "{}: frame {i} has {} quantizers, frame 0 has {n_q}; whole-file decode needs one count",
                path.display(),
                p.codes.len()
            );
        }
        codes.push_frame(&p.codes)?;
    }
    Ok((header, codes))
}

fn is_fcdc(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f.read(&mut magic)?;
    Ok(n == 4 && &magic == b"FCDC")
}

fn encode_file(
    model: &CodecModel,
    input: &Path,
    output: &Path,
    n_q: usize,
    channels: Channels,
    stream: Option<StreamMode>,
) -> Result<()> {
    let src = audio::read(input)?;
    let mono = to_model_input(model, src, channels)?;
    let n_ch = mono.channels.len();
    for (c, ch) in mono.channels.iter().enumerate() {
        let enc =
            encode_with(model, ch, n_q, stream).with_context(|| input.display().to_string())?;
        let path = if n_ch > 1 {
            output.with_extension(format!("ch{c}.fcdc"))
        } else {
            output.to_path_buf()
        };
        write_fcdc(
            model,
            &path,
            &enc.codes,
            Some(enc.samples as u64),
            Some(enc.scale),
        )?;
        eprintln!(
            "{}: {} frames x {n_q} quantizers ({} bit/s)",
            path.display(),
            enc.codes.frames,
            bitrate(model, n_q)
        );
    }
    Ok(())
}

/// Offline (FunCodec's path), or through the streaming core.
fn encode_with(
    model: &CodecModel,
    pcm: &[f32],
    n_q: usize,
    stream: Option<StreamMode>,
) -> Result<Encoded> {
    Ok(match stream {
        None => model.encode(pcm, n_q)?,
        Some(mode) => {
            funcodec_core::check_audio(pcm)?;
            Encoded {
                codes: encode_all(model, pcm, n_q, mode)?,
                samples: pcm.len(),
                scale: 1.0,
            }
        }
    })
}

fn decode_with(model: &CodecModel, codes: &Codes, stream: Option<StreamMode>) -> Result<Vec<f32>> {
    Ok(match stream {
        None => model.decode(codes)?,
        Some(mode) => decode_all(model, codes, mode)?,
    })
}

/// How decoded audio is written: FunCodec's 16-bit peak-limited WAV, or raw float.
#[derive(Clone, Copy)]
struct WavOut {
    float: bool,
}

impl WavOut {
    fn write(self, path: &Path, rate: u32, mut y: Vec<f32>) -> Result<()> {
        if self.float {
            return audio::write_wav_f32(path, rate, &y);
        }
        peak_limit(&mut y);
        audio::write_wav(path, rate, &[y])
    }
}

fn decode_file(
    model: &CodecModel,
    input: &Path,
    output: &Path,
    restore_level: bool,
    rate: &RateArg,
    sink: WavOut,
) -> Result<()> {
    let (header, mut codes) = read_fcdc(input)?;
    if header.model_hash != model.manifest.hash_bytes() {
        bail!(
            "{} was encoded with model {:?}; the loaded model is {:?} ({}): codes of one model mean nothing to another",
            input.display(),
            header.model_id,
            model.manifest.model_id,
            model.dir.display()
        );
    }
    if rate.n_q.is_some() || rate.bitrate.is_some() {
        codes = codes.truncated(pick_n_q(model, rate)?);
    }
    let mut y = model.decode(&codes)?;
    if let Some(n) = header.total_samples {
        y.truncate(n as usize);
    }
    if let (true, Some(level)) = (restore_level, header.level) {
        y.iter_mut().for_each(|v| *v *= level);
    }
    sink.write(output, model.sample_rate(), y)
}

/// FunCodec's `run_mod decode`: one WAV per utterance, hop × frames samples, peak-limited.
fn decode_codecs_txt(
    model: &CodecModel,
    input: &Path,
    out_dir: &Path,
    rate: &RateArg,
    sink: WavOut,
    batch: usize,
) -> Result<()> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let entries =
        codecs_txt::read_codecs_txt(&text).with_context(|| input.display().to_string())?;
    std::fs::create_dir_all(out_dir)?;
    let mut progress = Progress::new("decode", entries.len());
    let codes_of = |e: &CodecsEntry| -> Result<Codes> {
        let mut codes = Codes::from_rows(&e.codes)?;
        if rate.n_q.is_some() || rate.bitrate.is_some() {
            codes = codes.truncated(pick_n_q(model, rate)?);
        }
        model
            .check_n_q(codes.n_q)
            .with_context(|| format!("utterance {}", e.utt_id))?;
        Ok(codes)
    };
    let mut write = |i: usize, y: Vec<f32>| -> Result<()> {
        let seconds = y.len() as f64 / model.sample_rate() as f64;
        let path = out_dir.join(format!("{}.wav", entries[i].utt_id));
        sink.write(&path, model.sample_rate(), y)?;
        progress.step(seconds);
        Ok(())
    };
    let streams = batch_streams(model, batch);
    if streams > 1 {
        return decode_batched(
            &model.shared(),
            streams,
            entries.iter().map(codes_of),
            write,
        );
    }
    for (i, e) in entries.iter().enumerate() {
        let codes = codes_of(e)?;
        let y = model
            .decode(&codes)
            .with_context(|| format!("utterance {}", e.utt_id))?;
        write(i, y)?;
    }
    Ok(())
}

/// Streams a job codes at once: `batch` for a model whose offline path is its step graphs (so the
/// batched stream gives the same result), else 1 (FunCodec's offline graphs, one call each).
fn batch_streams(model: &CodecModel, batch: usize) -> usize {
    if model.has_offline_graphs() || model.encoder_step().is_none() {
        1
    } else {
        batch.max(1)
    }
}

fn encode_scp(
    model: &CodecModel,
    scp_path: &Path,
    out: &Path,
    n_q: usize,
    (jobs, batch): (usize, usize),
    shard: Option<Shard>,
    channels: Channels,
) -> Result<()> {
    if channels == Channels::Each {
        bail!(
            "--channels each is not available with --scp (codecs.txt holds one stream per utterance)"
        );
    }
    let mut items = scp::read_scp(scp_path)?;
    if let Some(s) = shard {
        items = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, x)| x)
            .collect();
    }
    let progress = std::sync::Mutex::new(Progress::new("encode", items.len()));
    let read = |(id, path): &(String, PathBuf)| -> Result<Vec<f32>> {
        let src = audio::read(path).with_context(|| format!("utterance {id}"))?;
        let mut mono = to_model_input(model, src, channels)?;
        let pcm = mono.channels.swap_remove(0);
        funcodec_core::check_audio(&pcm)
            .with_context(|| format!("utterance {id} ({})", path.display()))?;
        Ok(pcm)
    };
    let streams = batch_streams(model, batch);
    let lines = if streams > 1 {
        encode_scp_batched(model, &items, n_q, jobs, streams, read, |secs| {
            progress.lock().unwrap().step(secs)
        })?
    } else {
        scp::run_parallel(
            &items,
            jobs,
            |item| {
                let pcm = read(item)?;
                let enc = model
                    .encode(&pcm, n_q)
                    .with_context(|| format!("utterance {}", item.0))?;
                let secs = pcm.len() as f64 / model.sample_rate() as f64;
                Ok((codecs_txt::format_line(&item.0, &enc.codes.to_rows()), secs))
            },
            |(_, secs)| progress.lock().unwrap().step(*secs),
        )?
    };
    let mut text = String::new();
    for (line, _) in lines {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}

/// `encode_scp` for step-graph models: each of `jobs` threads codes every `jobs`-th utterance,
/// `streams` at a time in one batched step per frame. Lines come back in input order.
fn encode_scp_batched(
    model: &CodecModel,
    items: &[(String, PathBuf)],
    n_q: usize,
    jobs: usize,
    streams: usize,
    read: impl Fn(&(String, PathBuf)) -> Result<Vec<f32>> + Sync,
    progress: impl Fn(f64) + Sync,
) -> Result<Vec<(String, f64)>> {
    let jobs = jobs.clamp(1, items.len().max(1));
    let shared = model.shared();
    let lines = std::sync::Mutex::new(vec![None; items.len()]);
    let seconds = |frames: usize| (frames * model.hop()) as f64 / model.sample_rate() as f64;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|t| {
                let (shared, read, lines, progress) = (&shared, &read, &lines, &progress);
                scope.spawn(move || {
                    let mine: Vec<usize> = (t..items.len()).step_by(jobs).collect();
                    encode_batched(
                        shared,
                        n_q,
                        streams,
                        mine.iter().map(|&i| read(&items[i])),
                        |j, codes| {
                            let i = mine[j];
                            let line = codecs_txt::format_line(&items[i].0, &codes.to_rows());
                            progress(seconds(codes.frames));
                            lines.lock().unwrap()[i] = Some((line, seconds(codes.frames)));
                            Ok(())
                        },
                    )
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| bail!("an encoding thread panicked"))
        })
    })?;
    lines
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|l| l.ok_or_else(|| anyhow::anyhow!("an utterance was not coded")))
        .collect()
}

fn info(path: &Path) -> Result<()> {
    if path.is_dir() {
        let m = CodecModel::load(path)?;
        let man = &m.manifest;
        println!("model       {} ({})", man.model_id, man.model_hash);
        println!("folder      {}", path.display());
        println!(
            "audio       {} Hz mono, hop {} ({} frames/s)",
            man.sample_rate,
            man.hop,
            man.sample_rate as f64 / man.hop as f64
        );
        println!(
            "quantizer   {} x {} codes, dim {}, {} bit/s each, {}..{} bit/s",
            man.quantizer.num_quantizers,
            man.quantizer.codebook_size,
            man.quantizer.dim,
            m.bits_per_quantizer(),
            m.bits_per_quantizer(),
            bitrate(&m, m.num_quantizers())
        );
        println!(
            "network     norm {}, causal {}, input normalisation {}",
            man.norm, man.causal, man.input_normalization.kind
        );
        match &man.encoder {
            Some(e) => println!(
                "offline     {} encoder graph segments + decoder",
                e.segments.len()
            ),
            None => println!("offline     frame by frame (step graphs only)"),
        }
        match &man.streaming {
            Some(s) => println!(
                "streaming   exact, latency {} samples ({:.1} ms), {} + {} state tensors",
                man.hop + s.lookahead_samples,
                (man.hop + s.lookahead_samples) as f64 * 1000.0 / man.sample_rate as f64,
                s.encoder.states.len(),
                s.decoder.states.len()
            ),
            None => println!("streaming   approximate (not causal)"),
        }
        if let Some(w) = &man.weights {
            println!("weights     {w}");
        }
        println!("exporter    {}", man.exporter_version);
        return Ok(());
    }
    let (h, codes) = read_fcdc(path)?;
    println!("stream      {}", path.display());
    println!(
        "model       {} ({})",
        h.model_id,
        h.model_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    println!("audio       {} Hz, hop {}", h.sample_rate, h.hop);
    println!(
        "frames      {} x {} quantizers (codebook {})",
        codes.frames, codes.n_q, h.codebook_size
    );
    if let Some(n) = h.total_samples {
        println!("samples     {n} ({:.3} s)", n as f64 / h.sample_rate as f64);
    }
    if let Some(l) = h.level {
        println!("input rms   {l}");
    }
    Ok(())
}
