//! Step graphs: one frame in, one frame out, with every piece of history passed as explicit state.
//!
//! The graph (shared, immutable, one per model) is separate from the per-stream [`StepRunner`], which
//! owns the state tensors and tract's execution state, so one loaded model serves any number of streams.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::State;

use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, StepGraphInfo};
use crate::model::{Plan, plan_from_facts};
use crate::profile::{NodeTimes, run_timed};
use crate::tract_ops::small_conv::Streams;

pub struct StepGraph {
    plan: Plan,
    states: Vec<Vec<usize>>,
    /// How each stream's input, output and states sit in a batch of streams.
    batch: BatchLayout,
    in_shape: Vec<usize>,
    in_len: usize,
    out_len: usize,
    stage: &'static str,
    /// Bytes of state one stream carries through this graph.
    pub state_bytes: usize,
    /// Where the graph was read from, to build batched plans on demand (not kept in memory).
    source: (Arc<Manifest>, PathBuf, String),
    engine: Engine,
    /// Plans for several streams per run, by batch size (built when first asked for).
    batch_plans: Mutex<Vec<(usize, Plan)>>,
}

impl StepGraph {
    pub(crate) fn load(
        manifest: &Arc<Manifest>,
        dir: &Path,
        info: &StepGraphInfo,
        stage: &'static str,
        engine: Engine,
    ) -> Result<StepGraph> {
        let bytes = manifest.read_checked(dir, &info.file)?;
        let edit = |g: &mut tract_onnx::pb::GraphProto| {
            crate::tract_ops::small_conv::rewrite(g, Streams::One);
            crate::tract_ops::overlap_add::rewrite(g);
        };
        let plan =
            plan_from_facts(&bytes, &[], engine, Some(&edit)).map_err(|msg| Error::ModelFile {
                path: dir.to_path_buf(),
                file: info.file.clone(),
                msg,
            })?;
        let (n_in, n_out) = (plan.input_count(), plan.output_count());
        if n_in != 1 + info.states.len() || n_out != 1 + info.states.len() {
            return Err(Error::ModelFile {
                path: dir.to_path_buf(),
                file: info.file.clone(),
                msg: format!(
                    "graph has {n_in} inputs and {n_out} outputs, manifest lists {} states",
                    info.states.len()
                ),
            });
        }
        let states: Vec<Vec<usize>> = info.states.iter().map(|s| s.shape.clone()).collect();
        let state_bytes = states.iter().map(|s| s.iter().product::<usize>() * 4).sum();
        Ok(StepGraph {
            plan,
            in_len: info.in_shape.iter().product(),
            out_len: info.out_shape.iter().product(),
            in_shape: info.in_shape.clone(),
            batch: BatchLayout::new(info, engine),
            states,
            stage,
            state_bytes,
            source: (manifest.clone(), dir.to_path_buf(), info.file.clone()),
            engine,
            batch_plans: Mutex::new(Vec::new()),
        })
    }

    pub fn in_len(&self) -> usize {
        self.in_len
    }
    pub fn out_len(&self) -> usize {
        self.out_len
    }

    /// A fresh stream through this graph, starting from zero state (the stream start).
    pub fn start(&self) -> Result<StepRunner> {
        let exec = self.plan.spawn().map_err(|e| self.err(e))?;
        let mut r = StepRunner {
            exec,
            states: Vec::with_capacity(self.states.len()),
        };
        self.zero(&mut r)?;
        Ok(r)
    }

    fn zero(&self, r: &mut StepRunner) -> Result<()> {
        r.states.clear();
        for shape in &self.states {
            r.states
                .push(Tensor::zero::<f32>(shape).map_err(|e| self.err(e))?);
        }
        Ok(())
    }

    fn err(&self, e: TractError) -> Error {
        self.msg(format!("{e:#}"))
    }

    fn msg(&self, msg: String) -> Error {
        Error::Inference {
            stage: self.stage.into(),
            msg,
        }
    }

    /// Runs one step: `x` (in_len values) in, `out` (out_len values) out, state advanced.
    /// On failure the stream is reset to zero state so that it stays usable.
    pub fn step(&self, r: &mut StepRunner, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.step_with(r, x, out, |exec, inputs| exec.run(inputs))
    }

    /// One step, like [`Self::step`], adding each graph node's run time to `profile` under the
    /// node's name (op name, runs, total). For `funcodec bench --profile`; CPU engine only.
    pub fn step_profiled(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        profile: &mut NodeTimes,
    ) -> Result<()> {
        self.step_with(r, x, out, |exec, inputs| {
            run_timed(exec, inputs, profile, "")
        })
    }

    fn step_with(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        run: impl FnOnce(&mut dyn State, TVec<TValue>) -> TractResult<TVec<TValue>>,
    ) -> Result<()> {
        debug_assert_eq!(x.len(), self.in_len);
        debug_assert_eq!(out.len(), self.out_len);
        let result = self.try_step(r, x, out, run);
        if result.is_err() || r.states.len() != self.states.len() {
            self.zero(r)?;
        }
        result
    }

    fn try_step(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        run: impl FnOnce(&mut dyn State, TVec<TValue>) -> TractResult<TVec<TValue>>,
    ) -> Result<()> {
        let input = Tensor::from_shape(&self.in_shape, x).map_err(|e| self.err(e))?;
        let mut inputs: TVec<TValue> = TVec::with_capacity(1 + self.states.len());
        inputs.push(input.into());
        inputs.extend(r.states.drain(..).map(TValue::from));
        let outputs = run(r.exec.as_mut(), inputs).map_err(|e| self.err(e))?;
        let mut outputs = outputs.into_iter();
        let y = outputs.next().ok_or_else(|| self.msg("no output".into()))?;
        let view = y.try_as_plain_ram().map_err(|e| self.err(e))?;
        let y = view.as_slice::<f32>().map_err(|e| self.err(e))?;
        if y.len() != out.len() {
            return Err(self.msg(format!(
                "output has {} values, expected {}",
                y.len(),
                out.len()
            )));
        }
        out.copy_from_slice(y);
        r.states.extend(outputs.map(|t| t.into_tensor()));
        Ok(())
    }

    pub fn reset(&self, r: &mut StepRunner) -> Result<()> {
        self.zero(r)
    }

    /// The plans that run `sizes` streams per call, cached: the missing ones are built from one
    /// read (and checksum) of the model file, which is not kept in memory.
    fn batch_plans(&self, sizes: &[usize]) -> Result<Vec<Plan>> {
        let mut cache = self.batch_plans.lock().unwrap_or_else(|p| p.into_inner());
        let cached = |cache: &[(usize, Plan)], n| cache.iter().find(|(b, _)| *b == n).cloned();
        if sizes.iter().any(|&n| cached(&cache, n).is_none()) {
            let (manifest, dir, file) = &self.source;
            let bytes = manifest.read_checked(dir, file)?;
            let b = &self.batch;
            // On the CUDA engine `read_onnx` drops the edit, and the layout is the exported one.
            let edit = |g: &mut tract_onnx::pb::GraphProto| {
                crate::tract_ops::small_conv::rewrite(g, Streams::Batched);
                b.edit(g);
            };
            for &n in sizes {
                if cached(&cache, n).is_some() {
                    continue;
                }
                let shapes: Vec<Vec<usize>> = std::iter::once(&b.x)
                    .chain(&b.states)
                    .map(|io| io.batched(n))
                    .collect();
                let plan = plan_from_facts(&bytes, &shapes, self.engine, Some(&edit))
                    .map_err(|msg| self.msg(format!("no plan for {n} streams per run: {msg}")))?;
                cache.push((n, plan));
            }
        }
        Ok(sizes
            .iter()
            .map(|&n| cached(&cache, n).expect("built above").1)
            .collect())
    }

    /// Runs one step of several streams in one call of the graph: stream `runners[ix[j]]` takes
    /// `x[j * in_len..][..in_len]` and writes `out[j * out_len..][..out_len]`. Their states are
    /// gathered into one batch and scattered back; rows beyond `ix.len()` up to the plan's batch
    /// size are zeros whose results are dropped. On failure the streams in `ix` restart from zero
    /// state, as with [`Self::step`]. Equal to stepping each stream alone up to float rounding
    /// (a batched matrix product may sum in another order).
    pub fn step_batch(
        &self,
        exec: &mut BatchExec,
        runners: &mut [StepRunner],
        ix: &[usize],
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        debug_assert_eq!(x.len(), ix.len() * self.in_len);
        debug_assert_eq!(out.len(), ix.len() * self.out_len);
        match ix {
            [] => return Ok(()),
            [i] => return self.step(&mut runners[*i], x, out),
            _ => {}
        }
        let n = exec.size_for(ix.len());
        let result = exec
            .state(self, n)
            .and_then(|st| self.try_step_batch(st, n, runners, ix, x, out));
        if result.is_err() {
            for &i in ix {
                self.zero(&mut runners[i])?;
            }
        }
        result
    }

    fn try_step_batch(
        &self,
        exec: &mut dyn State,
        n: usize,
        runners: &mut [StepRunner],
        ix: &[usize],
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let e = |e: TractError| self.err(e);
        let b = &self.batch;
        let mut inputs: TVec<TValue> = TVec::with_capacity(1 + self.states.len());
        let mut xin = Tensor::zero::<f32>(&b.x.batched(n)).map_err(e)?;
        let dst = plain_mut(&mut xin).map_err(e)?;
        for row in 0..ix.len() {
            let src = &x[row * self.in_len..(row + 1) * self.in_len];
            b.x.rows(n, row, |b, s| dst[b].copy_from_slice(&src[s]));
        }
        inputs.push(xin.into());
        for (j, io) in b.states.iter().enumerate() {
            let mut batch = Tensor::zero::<f32>(&io.batched(n)).map_err(e)?;
            let dst = plain_mut(&mut batch).map_err(e)?;
            for (row, &i) in ix.iter().enumerate() {
                let src = plain(&runners[i].states[j]).map_err(e)?;
                io.rows(n, row, |b, s| dst[b].copy_from_slice(&src[s]));
            }
            inputs.push(batch.into());
        }
        let outputs = exec.run(inputs).map_err(e)?;
        if outputs.len() != 1 + self.states.len() {
            return Err(self.msg(format!("{} outputs", outputs.len())));
        }
        let y = plain(&outputs[0]).map_err(e)?;
        if y.len() != n * self.out_len {
            return Err(self.msg(format!(
                "batched output has {} values, expected {}",
                y.len(),
                n * self.out_len
            )));
        }
        for row in 0..ix.len() {
            let dst = &mut out[row * self.out_len..(row + 1) * self.out_len];
            b.y.rows(n, row, |b, s| dst[s].copy_from_slice(&y[b]));
        }
        for (j, io) in b.states.iter().enumerate() {
            let src = plain(&outputs[1 + j]).map_err(e)?;
            for (row, &i) in ix.iter().enumerate() {
                let dst = plain_mut(&mut runners[i].states[j]).map_err(e)?;
                io.rows(n, row, |b, s| dst[s].copy_from_slice(&src[b]));
            }
        }
        Ok(())
    }
}

/// How one stream's tensor sits in a batch: its shape as the batched graph sees it, with the
/// stream axis (of size 1 here) that the batch extends.
#[derive(Debug, Clone)]
struct BatchIo {
    shape: Vec<usize>,
    axis: usize,
}

impl BatchIo {
    /// `[1, C, L]` seen as `[C, 1, L]`: the same values in the same order, batched on axis 1.
    fn new(shape: &[usize], axis: usize, stream_second: bool) -> BatchIo {
        let mut shape = shape.to_vec();
        if stream_second && axis == 0 && shape.len() == 3 {
            shape.swap(0, 1);
            return BatchIo { shape, axis: 1 };
        }
        BatchIo { shape, axis }
    }

    fn is_moved(&self, original_axis: usize) -> bool {
        self.axis != original_axis
    }

    fn batched(&self, n: usize) -> Vec<usize> {
        let mut s = self.shape.clone();
        s[self.axis] = n;
        s
    }

    /// Calls `f(batch_range, stream_range)` for each contiguous run of values that stream `row`
    /// of a batch of `n` owns.
    fn rows(&self, n: usize, row: usize, mut f: impl FnMut(Range<usize>, Range<usize>)) {
        let outer: usize = self.shape[..self.axis].iter().product();
        let inner: usize = self.shape[self.axis + 1..].iter().product();
        for o in 0..outer {
            let b = (o * n + row) * inner;
            f(b..b + inner, o * inner..(o + 1) * inner);
        }
    }
}

/// The batch layout of a step graph. On the CPU, rank-3 tensors batched on axis 0 go
/// stream-second and the graph is rewritten to match (see `tract_ops::batch_layout`); the CUDA
/// engine gets the graph as exported, batched on the manifest's axes.
#[derive(Debug, Clone)]
struct BatchLayout {
    x: BatchIo,
    y: BatchIo,
    states: Vec<BatchIo>,
    /// Which graph inputs (x, then the states) and outputs (y, then the states) moved.
    moved_inputs: Vec<bool>,
    moved_outputs: Vec<bool>,
}

impl BatchLayout {
    fn new(info: &StepGraphInfo, engine: Engine) -> BatchLayout {
        let second = !engine.is_gpu();
        let x = BatchIo::new(&info.in_shape, 0, second);
        let y = BatchIo::new(&info.out_shape, 0, second);
        let states: Vec<BatchIo> = info
            .states
            .iter()
            .map(|s| BatchIo::new(&s.shape, s.batch_axis(), second))
            .collect();
        let moved_states = info
            .states
            .iter()
            .zip(&states)
            .map(|(s, io)| io.is_moved(s.batch_axis()));
        BatchLayout {
            moved_inputs: std::iter::once(x.is_moved(0))
                .chain(moved_states.clone())
                .collect(),
            moved_outputs: std::iter::once(y.is_moved(0)).chain(moved_states).collect(),
            x,
            y,
            states,
        }
    }

    /// Rewrites the graph for this layout: inputs and outputs by position (initializers that an
    /// older exporter lists among the inputs are skipped).
    fn edit(&self, g: &mut tract_onnx::pb::GraphProto) {
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = g.input.iter().filter(|i| !inits.contains(i.name.as_str()));
        let mut moved: HashSet<String> = inputs
            .zip(&self.moved_inputs)
            .filter(|(_, m)| **m)
            .map(|(i, _)| i.name.clone())
            .collect();
        moved.extend(
            g.output
                .iter()
                .zip(&self.moved_outputs)
                .filter(|(_, m)| **m)
                .map(|(o, _)| o.name.clone()),
        );
        let moved: HashSet<&str> = moved.iter().map(String::as_str).collect();
        crate::tract_ops::batch_layout::rewrite(g, &moved);
    }
}

fn plain(t: &Tensor) -> TractResult<&[f32]> {
    t.try_as_plain_ram()?.as_slice::<f32>()
}

fn plain_mut(t: &mut Tensor) -> TractResult<&mut [f32]> {
    t.to_plain_array_view_mut::<f32>()?
        .into_slice()
        .ok_or_else(|| TractError::msg("state tensor is not contiguous"))
}

/// tract's execution states for the batched plans of one group of streams (one per batch size).
pub struct BatchExec {
    capacity: usize,
    states: Vec<(usize, Box<dyn State>)>,
}

impl BatchExec {
    /// For groups of up to `capacity` streams per run.
    pub fn new(capacity: usize) -> Self {
        BatchExec {
            capacity: capacity.max(1),
            states: Vec::new(),
        }
    }

    /// Batch sizes that get a plan: powers of two, and the capacity itself, so a group needs
    /// about log2(capacity) plans (each holds its own packed weights) and wastes at most half a
    /// run on zero rows.
    fn size_for(&self, k: usize) -> usize {
        k.next_power_of_two().min(self.capacity.max(k))
    }

    /// Builds every plan a run of 2..=capacity streams will use, so that no live run stalls on one.
    pub fn prepare(&mut self, graph: &StepGraph) -> Result<()> {
        let mut sizes = Vec::new();
        let mut k = 2;
        while k <= self.capacity {
            let n = self.size_for(k);
            sizes.push(n);
            k = n + 1;
        }
        // All sizes from one read of the model file; `state` then finds them cached.
        graph.batch_plans(&sizes)?;
        for n in sizes {
            self.state(graph, n)?;
        }
        Ok(())
    }

    fn state(&mut self, graph: &StepGraph, n: usize) -> Result<&mut dyn State> {
        let ix = match self.states.iter().position(|(b, _)| *b == n) {
            Some(ix) => ix,
            None => {
                let plan = graph.batch_plans(&[n])?.remove(0);
                let st = plan.spawn().map_err(|e| graph.err(e))?;
                self.states.push((n, st));
                self.states.len() - 1
            }
        };
        Ok(self.states[ix].1.as_mut())
    }
}

/// Per-stream execution state of one step graph.
pub struct StepRunner {
    exec: Box<dyn State>,
    states: Vec<Tensor>,
}
