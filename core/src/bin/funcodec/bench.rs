//! `funcodec bench`: one run that times everything a deployment cares about, printed as JSON so that
//! `models/bench.py` can put it beside onnxruntime, PyTorch and the FLOP bound from the same run.
//! Single thread throughout (tract runs on the calling thread).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use funcodec_core::profile::NodeTimes;
use funcodec_core::stream::{BatchDecoder, BatchEncoder};
use funcodec_core::{Backend, CodecModel, Codes, StreamDecoder, StreamEncoder};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Resident set size of this process in bytes (Linux), 0 elsewhere.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What `funcodec bench` measures, and how.
pub struct Options {
    pub n_q: usize,
    pub repeat: usize,
    pub streams: usize,
    pub threads: usize,
    pub backend: Backend,
    /// Time every node of the step graphs (or, for models without them, the offline graphs) and
    /// report the time per op type.
    pub profile: bool,
}

pub fn run(dir: &Path, pcm: &[f32], opt: &Options) -> Result<serde_json::Value> {
    let Options {
        n_q,
        repeat,
        streams,
        threads,
        backend,
        profile,
    } = *opt;
    let repeat = repeat.max(1);
    // A shorter input has no whole frame to stream (found by the CLI test with a 3-sample clip).
    let model = CodecModel::load_with_backend(dir, backend)?.0;
    if pcm.len() < model.hop() {
        anyhow::bail!(
            "bench needs at least one frame ({} samples) of audio; the input has {}",
            model.hop(),
            pcm.len()
        );
    }
    drop(model);
    let rss0 = rss_bytes();
    let mut load_t = Vec::new();
    let mut model = None;
    for _ in 0..repeat.min(3) {
        let t = Instant::now();
        model = Some(
            CodecModel::load_with_backend(dir, backend)?
                .0
                .with_threads(threads),
        );
        load_t.push(t.elapsed().as_secs_f64());
    }
    let model = model.expect("loaded at least once");
    let rss_model = rss_bytes().saturating_sub(rss0);
    let sr = model.sample_rate() as f64;
    let audio_s = pcm.len() as f64 / sr;

    // Offline: one call per utterance (frame by frame for step-graph-only models).
    let (mut enc_t, mut dec_t) = (Vec::new(), Vec::new());
    let mut codes = Codes::default();
    for _ in 0..repeat {
        let t = Instant::now();
        codes = model.encode(pcm, n_q)?.codes;
        enc_t.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        model.decode(&codes)?;
        dec_t.push(t.elapsed().as_secs_f64());
    }
    let mut out = json!({
        "model_id": model.manifest.model_id,
        "threads": model.threads(),
        "backend": model.backend(),
        "audio_s": audio_s, "n_q": n_q, "frames": codes.frames,
        "load_s": median(load_t),
        "offline": {"encode_s": median(enc_t.clone()), "decode_s": median(dec_t.clone()),
                    "encode_rtf": median(enc_t) / audio_s, "decode_rtf": median(dec_t) / audio_s},
        "rss_model_bytes": rss_model,
    });

    // Streaming, one 40 ms frame at a time: encode it, decode its codes; time each frame. A windowed
    // (non-causal) model re-runs the offline graphs per block: time it once, and not many streams.
    let exact = model.encoder_step().is_some();
    let (repeat, streams) = if exact { (repeat, streams) } else { (1, 1) };
    let shared = model.shared();
    let hop = model.hop();
    let (mut frame_enc, mut frame_dec) = (Vec::new(), Vec::new());
    let mut enc = StreamEncoder::new(shared.clone(), n_q)?;
    let mut dec = StreamDecoder::new(shared.clone())?;
    let mut frame = vec![0u16; n_q];
    let mut sink_pcm = 0usize;
    for _ in 0..repeat {
        enc.reset()?;
        dec.reset()?;
        for chunk in pcm.chunks_exact(hop) {
            let t = Instant::now();
            enc.push(chunk, |f| {
                frame.copy_from_slice(f);
                Ok(())
            })?;
            let t1 = Instant::now();
            dec.push_frame(&frame, |p| {
                sink_pcm += p.len();
                Ok(())
            })?;
            let t2 = Instant::now();
            frame_enc.push((t1 - t).as_secs_f64());
            frame_dec.push((t2 - t1).as_secs_f64());
        }
    }
    let frame_s = hop as f64 / sr;
    let mut both: Vec<f64> = frame_enc
        .iter()
        .zip(&frame_dec)
        .map(|(a, b)| a + b)
        .collect();
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let streaming = json!({
        "encode_rtf": sum(&frame_enc) / (frame_enc.len() as f64 * frame_s),
        "decode_rtf": sum(&frame_dec) / (frame_dec.len() as f64 * frame_s),
        "frame_ms_p50": percentile(&mut both, 0.5) * 1e3,
        "frame_ms_p99": percentile(&mut both, 0.99) * 1e3,
        "frame_ms_max": percentile(&mut both, 1.0) * 1e3,
        "state_bytes_per_stream": enc.state_bytes() + dec.state_bytes(),
        "latency_samples": enc.latency_samples() + dec.latency_samples(),
        "mode": if exact { "exact" } else { "windowed" },
    });
    out["streaming"] = streaming;

    // Many independent streams on the one model, interleaved frame by frame on this thread.
    if streams > 1 {
        let rss_before = rss_bytes();
        let mut pairs = Vec::with_capacity(streams);
        for _ in 0..streams {
            pairs.push((
                StreamEncoder::new(shared.clone(), n_q)?,
                StreamDecoder::new(shared.clone())?,
            ));
        }
        let frames = pcm.len() / hop;
        let t = Instant::now();
        for i in 0..frames {
            let chunk = &pcm[i * hop..(i + 1) * hop];
            for (e, d) in pairs.iter_mut() {
                e.push(chunk, |f| {
                    frame.copy_from_slice(f);
                    Ok(())
                })?;
                d.push_frame(&frame, |_| Ok(()))?;
            }
        }
        let wall = t.elapsed().as_secs_f64();
        let rss_streams = rss_bytes().saturating_sub(rss_before);
        let per_core = streams as f64 * frames as f64 * frame_s / wall;
        out["multi_stream"] = json!({
            "streams": streams,
            "wall_s": wall,
            "audio_s_per_stream": frames as f64 * frame_s,
            "realtime_streams_per_core": per_core,
            "rss_bytes_per_stream": rss_streams / streams as u64,
        });
        if exact {
            let batched = bench_batched(&shared, pcm, n_q, streams)?;
            let ratio = batched["realtime_streams_per_core"].as_f64().unwrap_or(0.0) / per_core;
            out["multi_stream"]["batched"] = batched;
            out["multi_stream"]["batched_vs_interleaved"] = json!(ratio);
        }
    }
    if profile {
        out["profile"] = if model.backend() != "cpu" {
            json!("per-op times are measured on the CPU engine only")
        } else if exact {
            profile_steps(&model, pcm, n_q)?
        } else {
            profile_offline(&model, pcm)?
        };
    }
    Ok(out)
}

/// The same streams stepped together: one batched encoder and decoder run per 40 ms tick.
fn bench_batched(
    model: &Arc<CodecModel>,
    pcm: &[f32],
    n_q: usize,
    streams: usize,
) -> Result<serde_json::Value> {
    let hop = model.hop();
    let rss_before = rss_bytes();
    let t = Instant::now();
    let mut enc = BatchEncoder::new(model.clone(), streams, n_q)?;
    let mut dec = BatchDecoder::new(model.clone(), streams)?;
    let prepare_s = t.elapsed().as_secs_f64();
    let frames = pcm.len() / hop;
    let mut ticks = Vec::with_capacity(frames);
    for chunk in pcm.chunks_exact(hop) {
        let t = Instant::now();
        for s in 0..streams {
            enc.stage(s, chunk)?;
        }
        enc.run(|s, codes| dec.stage(s, codes))?;
        dec.run(|_, _| Ok(()))?;
        ticks.push(t.elapsed().as_secs_f64());
    }
    let wall: f64 = ticks.iter().sum();
    let frame_s = hop as f64 / model.sample_rate() as f64;
    Ok(json!({
        "streams": streams,
        "wall_s": wall,
        "realtime_streams_per_core": streams as f64 * frames as f64 * frame_s / wall,
        "tick_ms_p50": percentile(&mut ticks, 0.5) * 1e3,
        "tick_ms_p99": percentile(&mut ticks, 0.99) * 1e3,
        "plans_build_s": prepare_s,
        "rss_bytes_batch": rss_bytes().saturating_sub(rss_before),
    }))
}

/// Nodes listed one by one in the profile, slowest first.
const PROFILE_NODES: usize = 12;

/// Time per op type and in the slowest nodes, sorted by time; `runs`: how many times each node ran
/// (frames); times are shown under `unit`, as seconds × `scale`.
fn time_table(p: NodeTimes, runs: usize, unit: &str, scale: f64) -> serde_json::Value {
    let total: f64 = p.values().map(|v| v.2.as_secs_f64()).sum();
    let share = |t: Duration| t.as_secs_f64() / total.max(1e-12);
    let mut by_op: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for (op, n, t) in p.values() {
        let e = by_op.entry(op).or_default();
        e.0 += n;
        e.1 += *t;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    let ops: Vec<_> = ops
        .into_iter()
        .map(|(op, (n, t))| {
            json!({"op": op, "nodes": n / runs.max(1), unit: t.as_secs_f64() * scale, "share": share(t)})
        })
        .collect();
    let mut nodes: Vec<_> = p.iter().collect();
    nodes.sort_by_key(|r| std::cmp::Reverse(r.1.2));
    let nodes: Vec<_> = nodes
        .into_iter()
        .take(PROFILE_NODES)
        .map(|(name, (op, _, t))| {
            json!({"node": name, "op": op, unit: t.as_secs_f64() * scale, "share": share(*t)})
        })
        .collect();
    json!({unit: total * scale, "ops": ops, "slowest_nodes": nodes})
}

/// Time per second of audio in each op type and the slowest nodes of the offline encoder and
/// decoder graphs, from one pass over `pcm` (for models without step graphs).
fn profile_offline(model: &CodecModel, pcm: &[f32]) -> Result<serde_json::Value> {
    let (enc, dec) = model.profile_offline(pcm)?;
    let scale = 1e3 * model.sample_rate() as f64 / pcm.len() as f64;
    Ok(json!({
        "audio_s": pcm.len() as f64 / model.sample_rate() as f64,
        "encoder": time_table(enc, 1, "ms_per_audio_s", scale),
        "decoder": time_table(dec, 1, "ms_per_audio_s", scale),
    }))
}

/// Time per frame spent in each op type of the encoder and decoder step graphs, and in their
/// slowest nodes, sorted by time, and in the RVQ search of `n_q` quantizers (not part of either
/// graph), from one pass over `pcm`.
fn profile_steps(model: &CodecModel, pcm: &[f32], n_q: usize) -> Result<serde_json::Value> {
    let (Some(enc), Some(dec)) = (model.encoder_step(), model.decoder_step()) else {
        return Ok(serde_json::Value::Null);
    };
    let (mut er, mut dr) = (enc.start()?, dec.start()?);
    let (mut latent, mut wave) = (vec![0f32; enc.out_len()], vec![0f32; dec.out_len()]);
    let (mut ep, mut dp) = (BTreeMap::new(), BTreeMap::new());
    // The search as the stream encoder runs it: on a copy of each step's latent frame.
    let (mut residual, mut codes) = (latent.clone(), vec![0u16; n_q]);
    let mut search = model.codebooks.scratch();
    let mut rvq = Duration::ZERO;
    let frames = pcm.len() / enc.in_len();
    for x in pcm.chunks_exact(enc.in_len()) {
        enc.step_profiled(&mut er, x, &mut latent, &mut ep)?;
        residual.copy_from_slice(&latent);
        let start = Instant::now();
        model
            .codebooks
            .encode_frame(&mut residual, &mut codes, &mut search);
        rvq += start.elapsed();
        dec.step_profiled(&mut dr, &latent, &mut wave, &mut dp)?;
    }
    let per_frame = |t: Duration| t.as_secs_f64() * 1e6 / frames.max(1) as f64;
    let table = |p| time_table(p, frames, "us_per_frame", 1e6 / frames.max(1) as f64);
    Ok(json!({
        "frames": frames,
        "encoder_step": table(ep),
        "decoder_step": table(dp),
        "rvq_search": {"n_q": n_q, "us_per_frame": per_frame(rvq)},
    }))
}
