//! Many causal streams on one model, stepped together: each tick runs the step graph once for every
//! stream that has a frame, instead of once per stream. The networks' matrix-vector products become
//! matrix-matrix products that reuse each weight they load, which is where a single stream's step
//! spends most of its time (see `funcodec bench`: `multi_stream.batched`).
//!
//! The API is a tick: `stage` at most one frame per stream, then `run`. Streams are independent
//! (each has its own state, quantizer count and start time); a stream that stages nothing in a tick
//! keeps its state. [`encode_batched`] and [`decode_batched`] code whole utterances this way, a new
//! one taking a stream as soon as another ends (what `funcodec encode --scp` uses).

use std::sync::Arc;

use super::decoder::Concealer;
use super::step::{BatchExec, StepGraph, StepRunner};
use crate::codec::{Codes, check_audio};
use crate::error::{Error, Result};
use crate::model::CodecModel;
use crate::rvq::SearchScratch;

fn graphs(model: &CodecModel) -> Result<(&StepGraph, &StepGraph)> {
    match (model.encoder_step(), model.decoder_step()) {
        (Some(e), Some(d)) => Ok((e, d)),
        _ => Err(Error::Argument(format!(
            "model {} has no step graphs, so its streams cannot be batched (only causal models \
             stream exactly)",
            model.manifest.model_id
        ))),
    }
}

/// The part shared by both directions: per-stream step state, the staged rows of this tick, and
/// tract's batched execution states.
struct Group {
    exec: BatchExec,
    runners: Vec<StepRunner>,
    staged: Vec<usize>,
    is_staged: Vec<bool>,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Group {
    fn new(graph: &StepGraph, streams: usize) -> Result<Group> {
        if streams == 0 {
            return Err(Error::Argument("a batch needs at least one stream".into()));
        }
        let mut exec = BatchExec::new(streams);
        exec.prepare(graph)?;
        Ok(Group {
            exec,
            runners: (0..streams).map(|_| graph.start()).collect::<Result<_>>()?,
            staged: Vec::with_capacity(streams),
            is_staged: vec![false; streams],
            x: vec![0.0; streams * graph.in_len()],
            y: vec![0.0; streams * graph.out_len()],
        })
    }

    /// The input row for `stream` in this tick, or an error if it already has one.
    fn stage(&mut self, graph: &StepGraph, stream: usize) -> Result<&mut [f32]> {
        let n = self.runners.len();
        if stream >= n {
            return Err(Error::Argument(format!(
                "stream {stream} out of range: the batch has {n} streams"
            )));
        }
        if self.is_staged[stream] {
            return Err(Error::Argument(format!(
                "stream {stream} already has a frame in this tick; call run first"
            )));
        }
        let row = self.staged.len();
        Ok(&mut self.x[row * graph.in_len()..(row + 1) * graph.in_len()])
    }

    fn commit(&mut self, stream: usize) {
        self.staged.push(stream);
        self.is_staged[stream] = true;
    }

    /// Steps the staged streams, then hands `outputs(staged streams, their output rows)` the
    /// results in staging order (one row of `out_len` per stream); the tick then ends.
    fn run(
        &mut self,
        graph: &StepGraph,
        model: &CodecModel,
        outputs: impl FnOnce(&[usize], &mut [f32]) -> Result<()>,
    ) -> Result<usize> {
        let k = self.staged.len();
        let (il, ol) = (graph.in_len(), graph.out_len());
        let result = model.scoped(|| {
            graph.step_batch(
                &mut self.exec,
                &mut self.runners,
                &self.staged,
                &self.x[..k * il],
                &mut self.y[..k * ol],
            )
        });
        // The tick is over whatever happened; a failed step has reset its streams.
        let result = result.and_then(|()| outputs(&self.staged, &mut self.y[..k * ol]));
        for &s in &self.staged {
            self.is_staged[s] = false;
        }
        self.staged.clear();
        result.map(|()| k)
    }

    fn reset(&mut self, graph: &StepGraph, stream: usize) -> Result<()> {
        let r = self.runners.get_mut(stream).ok_or_else(|| {
            Error::Argument(format!("stream {stream} out of range for this batch"))
        })?;
        graph.reset(r)
    }
}

/// Audio frames of many streams in, a frame of codes per stream out, one batched step per tick.
pub struct BatchEncoder {
    model: Arc<CodecModel>,
    group: Group,
    /// Quantizers per stream.
    n_q: Vec<usize>,
    /// This tick's quantizer counts and codes (stride: the model's quantizer count), in staging
    /// order, and the search's scratch.
    tick_n_q: Vec<usize>,
    codes: Vec<u16>,
    search: SearchScratch,
}

impl BatchEncoder {
    /// `streams` independent streams, each starting with `n_q` quantizers. Builds every batched
    /// plan the group can need now (a fraction of a second per batch size), so no tick stalls.
    pub fn new(model: Arc<CodecModel>, streams: usize, n_q: usize) -> Result<Self> {
        model.check_n_q(n_q)?;
        let group = Group::new(graphs(&model)?.0, streams)?;
        let codes = vec![0; streams * model.num_quantizers()];
        let search = model.codebooks.scratch();
        Ok(BatchEncoder {
            model,
            group,
            n_q: vec![n_q; streams],
            tick_n_q: Vec::with_capacity(streams),
            codes,
            search,
        })
    }

    pub fn streams(&self) -> usize {
        self.n_q.len()
    }

    /// Changes a stream's quantizer count from its next frame on.
    pub fn set_n_q(&mut self, stream: usize, n_q: usize) -> Result<()> {
        self.model.check_n_q(n_q)?;
        *self
            .n_q
            .get_mut(stream)
            .ok_or_else(|| Error::Argument(format!("stream {stream} out of range")))? = n_q;
        Ok(())
    }

    /// Stages one frame of `stream` for the next [`Self::run`]: `hop` samples, or fewer for the
    /// last frame of a stream (zero-padded, as [`super::StreamEncoder::flush`] does). NaN or
    /// infinite samples are refused and nothing is staged.
    pub fn stage(&mut self, stream: usize, pcm: &[f32]) -> Result<()> {
        let hop = self.model.hop();
        if pcm.len() > hop {
            return Err(Error::Argument(format!(
                "a frame is at most {hop} samples, got {}",
                pcm.len()
            )));
        }
        if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
            return Err(Error::Audio(format!(
                "sample {i} of stream {stream}'s frame is {} (NaN/inf audio cannot be encoded)",
                pcm[i]
            )));
        }
        let graph = graphs(&self.model)?.0;
        let row = self.group.stage(graph, stream)?;
        row[..pcm.len()].copy_from_slice(pcm);
        row[pcm.len()..].fill(0.0);
        self.group.commit(stream);
        Ok(())
    }

    /// Encodes every staged frame in one step (and one pass of the residual search over the
    /// codebooks); `sink(stream, codes)` gets each stream's frame. Returns how many streams ran.
    pub fn run(&mut self, mut sink: impl FnMut(usize, &[u16]) -> Result<()>) -> Result<usize> {
        let graph = graphs(&self.model)?.0;
        let (books, stride) = (&self.model.codebooks, self.model.num_quantizers());
        let (n_q, tick_n_q) = (&self.n_q, &mut self.tick_n_q);
        let (codes, search) = (&mut self.codes, &mut self.search);
        self.group.run(graph, &self.model, |staged, z| {
            tick_n_q.clear();
            tick_n_q.extend(staged.iter().map(|&s| n_q[s]));
            books.encode_frames(z, tick_n_q, codes, stride, search);
            for (row, &s) in staged.iter().enumerate() {
                sink(s, &codes[row * stride..][..n_q[s]])?;
            }
            Ok(())
        })
    }

    /// Starts `stream` over from zero state (a new utterance, a seek).
    pub fn reset(&mut self, stream: usize) -> Result<()> {
        self.group.reset(graphs(&self.model)?.0, stream)
    }
}

/// Frames of codes of many streams in, a frame of PCM per stream out, one batched step per tick.
pub struct BatchDecoder {
    model: Arc<CodecModel>,
    group: Group,
    plc: Vec<Concealer>,
}

impl BatchDecoder {
    pub fn new(model: Arc<CodecModel>, streams: usize) -> Result<Self> {
        let group = Group::new(graphs(&model)?.1, streams)?;
        let plc = (0..streams)
            .map(|_| Concealer::new(model.latent_dim()))
            .collect();
        Ok(BatchDecoder { model, group, plc })
    }

    pub fn streams(&self) -> usize {
        self.group.runners.len()
    }

    /// Stages one frame of 1..=N codes for `stream`; a bad code is refused and nothing is staged.
    pub fn stage(&mut self, stream: usize, codes: &[u16]) -> Result<()> {
        self.model.check_n_q(codes.len())?;
        let graph = graphs(&self.model)?.1;
        let row = self.group.stage(graph, stream)?;
        self.model.codebooks.decode_frame(codes, row)?;
        self.plc[stream].good(row);
        self.group.commit(stream);
        Ok(())
    }

    /// Stages a lost frame of `stream`: its last good latent again, fading over a burst, as
    /// [`super::StreamDecoder::conceal`] does.
    pub fn stage_lost(&mut self, stream: usize) -> Result<()> {
        let graph = graphs(&self.model)?.1;
        let row = self.group.stage(graph, stream)?;
        self.plc[stream].lost(row);
        self.group.commit(stream);
        Ok(())
    }

    /// Decodes every staged frame in one step; `sink(stream, pcm)` gets `hop` samples per stream.
    pub fn run(&mut self, mut sink: impl FnMut(usize, &[f32]) -> Result<()>) -> Result<usize> {
        let graph = graphs(&self.model)?.1;
        let hop = graph.out_len();
        self.group.run(graph, &self.model, |staged, y| {
            for (row, &s) in staged.iter().enumerate() {
                sink(s, &y[row * hop..(row + 1) * hop])?;
            }
            Ok(())
        })
    }

    pub fn reset(&mut self, stream: usize) -> Result<()> {
        self.group.reset(graphs(&self.model)?.1, stream)?;
        self.plc[stream].reset();
        Ok(())
    }
}

/// One utterance occupying a stream of a batch.
struct Job<I, O> {
    index: usize,
    input: I,
    pos: usize,
    output: O,
}

/// Runs whole utterances through a batch of `streams`: fills free streams from `inputs`, stages one
/// frame per busy stream per tick, hands each finished utterance to `done(index, output)`.
fn run_jobs<I, O, E: From<Error>>(
    streams: usize,
    inputs: impl Iterator<Item = std::result::Result<I, E>>,
    mut start: impl FnMut(usize, &I) -> Result<O>,
    mut stage: impl FnMut(usize, &mut Job<I, O>) -> Result<bool>,
    mut tick: impl FnMut(&mut [Option<Job<I, O>>]) -> Result<()>,
    mut done: impl FnMut(usize, O) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut slots: Vec<Option<Job<I, O>>> = (0..streams).map(|_| None).collect();
    let mut inputs = inputs.enumerate();
    let mut more = true;
    loop {
        for (s, slot) in slots.iter_mut().enumerate() {
            while slot.is_none() && more {
                match inputs.next() {
                    Some((index, input)) => {
                        let input = input?;
                        let output = start(s, &input).map_err(E::from)?;
                        *slot = Some(Job {
                            index,
                            input,
                            pos: 0,
                            output,
                        });
                    }
                    None => more = false,
                }
            }
        }
        if slots.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut finished = Vec::new();
        for (s, slot) in slots.iter_mut().enumerate() {
            if let Some(job) = slot
                && stage(s, job).map_err(E::from)?
            {
                finished.push(s);
            }
        }
        tick(&mut slots).map_err(E::from)?;
        for s in finished {
            let job = slots[s].take().expect("finished job");
            done(job.index, job.output)?;
        }
    }
}

/// Encodes whole utterances `streams` at a time (see the module doc); `done(i, codes)` gets the
/// codes of the `i`-th input: the same codes [`super::encode_all`] gives, up to float rounding
/// of the batched products (which can flip a code that sits on a tie). Errors of `inputs` and
/// `done` (the caller's type, e.g. reading a file) stop the job and are returned as they are.
pub fn encode_batched<E: From<Error>>(
    model: &Arc<CodecModel>,
    n_q: usize,
    streams: usize,
    inputs: impl Iterator<Item = std::result::Result<Vec<f32>, E>>,
    done: impl FnMut(usize, Codes) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let hop = model.hop();
    let enc = std::cell::RefCell::new(BatchEncoder::new(model.clone(), streams, n_q)?);
    run_jobs(
        streams,
        inputs,
        |s, pcm: &Vec<f32>| {
            check_audio(pcm)?;
            enc.borrow_mut().reset(s)?;
            Ok(Codes::new(n_q))
        },
        |s, job| {
            let end = (job.pos + hop).min(job.input.len());
            enc.borrow_mut().stage(s, &job.input[job.pos..end])?;
            job.pos = end;
            Ok(end == job.input.len())
        },
        |slots| {
            enc.borrow_mut().run(|s, codes| {
                slots[s]
                    .as_mut()
                    .expect("staged stream has a job")
                    .output
                    .push_frame(codes)
            })?;
            Ok(())
        },
        done,
    )
}

/// Decodes whole code streams `streams` at a time; `done(i, pcm)` gets `hop × frames` samples.
pub fn decode_batched<E: From<Error>>(
    model: &Arc<CodecModel>,
    streams: usize,
    inputs: impl Iterator<Item = std::result::Result<Codes, E>>,
    done: impl FnMut(usize, Vec<f32>) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let hop = model.hop();
    let dec = std::cell::RefCell::new(BatchDecoder::new(model.clone(), streams)?);
    run_jobs(
        streams,
        inputs,
        |s, codes: &Codes| {
            model.check_n_q(codes.n_q)?;
            dec.borrow_mut().reset(s)?;
            Ok(Vec::with_capacity(codes.frames * hop))
        },
        |s, job| {
            if job.pos < job.input.frames {
                dec.borrow_mut().stage(s, job.input.frame(job.pos))?;
                job.pos += 1;
            }
            Ok(job.pos == job.input.frames)
        },
        |slots| {
            dec.borrow_mut().run(|s, pcm| {
                slots[s]
                    .as_mut()
                    .expect("staged stream has a job")
                    .output
                    .extend_from_slice(pcm);
                Ok(())
            })?;
            Ok(())
        },
        done,
    )
}
