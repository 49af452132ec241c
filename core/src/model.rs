//! A loaded model folder: tract plans for the offline encoder segments and decoder and/or the step
//! graphs of a causal model, plus the codebooks. Everything is optimised once at load; the plans are
//! shared, immutable, and safe across threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::Runnable;

use crate::backend::{Backend, Engine};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, Segment};
use crate::padding::{PadSpec, pad1d};
use crate::profile::{NodeTimes, run_timed};
use crate::rvq::Codebooks;
use crate::stream::step::StepGraph;

pub(crate) type Plan = Arc<dyn Runnable>;

/// Cloning is cheap (every part is shared), so a stream can hold its own `Arc<CodecModel>`.
#[derive(Clone)]
pub struct CodecModel {
    pub manifest: Arc<Manifest>,
    pub dir: PathBuf,
    encoder: Arc<Vec<(Segment, OfflineGraph)>>,
    decoder: Option<Arc<OfflineGraph>>,
    steps: Option<Arc<(StepGraph, StepGraph)>>,
    pub codebooks: Arc<Codebooks>,
    executor: Executor,
    threads: usize,
    engine: Engine,
}

/// A (channels × length) activation, row-major; reused across calls to avoid reallocating.
#[derive(Default, Clone)]
pub struct Activation {
    pub data: Vec<f32>,
    pub channels: usize,
}

impl Activation {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.channels).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl CodecModel {
    /// Loads and optimises a model folder written by `models/export.py`, for the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<CodecModel> {
        Self::load_on(dir, Engine::CPU)
    }

    /// Loads a model folder for a backend. With [`Backend::Auto`], a GPU that fails to take the
    /// model falls back to the CPU; the returned note says which engine runs and why (log it).
    pub fn load_with_backend(
        dir: impl AsRef<Path>,
        backend: Backend,
    ) -> Result<(CodecModel, Option<String>)> {
        let (engine, note) = Engine::resolve(backend)?;
        match Self::load_on(dir.as_ref(), engine) {
            Err(e) if backend == Backend::Auto && engine.is_gpu() => {
                let model = Self::load_on(dir, Engine::CPU)?;
                Ok((
                    model,
                    Some(format!("backend auto: using the CPU (the GPU failed: {e})")),
                ))
            }
            other => other.map(|m| (m, note)),
        }
    }

    fn load_on(dir: impl AsRef<Path>, engine: Engine) -> Result<CodecModel> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir,
                msg: "not a directory".into(),
            });
        }
        let manifest = Arc::new(Manifest::load(&dir)?);
        let mut encoder = Vec::new();
        for seg in manifest.encoder.iter().flat_map(|e| &e.segments) {
            let graph = OfflineGraph::load(&manifest, &dir, &seg.file, engine)?;
            encoder.push((seg.clone(), graph));
        }
        let decoder = match &manifest.decoder {
            Some(d) => Some(Arc::new(OfflineGraph::load(
                &manifest, &dir, &d.file, engine,
            )?)),
            None => None,
        };
        let steps = match &manifest.streaming {
            Some(st) => Some((
                StepGraph::load(&manifest, &dir, &st.encoder, "encoder step", engine)?,
                StepGraph::load(&manifest, &dir, &st.decoder, "decoder step", engine)?,
            )),
            None => None,
        };
        let q = &manifest.quantizer;
        let bytes = manifest.read_checked(&dir, &q.file)?;
        let codebooks = Codebooks::from_le_bytes(&bytes, q.num_quantizers, q.codebook_size, q.dim)
            .map_err(|e| Error::ModelFile {
                path: dir.clone(),
                file: q.file.clone(),
                msg: e.to_string(),
            })?;
        Ok(CodecModel {
            manifest,
            dir,
            encoder: Arc::new(encoder),
            decoder,
            steps: steps.map(Arc::new),
            codebooks: Arc::new(codebooks),
            executor: Executor::SingleThread,
            threads: 1,
            engine,
        })
    }

    /// Threads for tract's matrix products in every call made through this handle (1 = the
    /// calling thread only, the default). Streams made from this handle share its pool. Helps
    /// large models offline; the small default model's products are below tract's threading
    /// threshold, so many streams are better spread over threads instead.
    pub fn with_threads(mut self, threads: usize) -> Self {
        let threads = threads.max(1);
        self.executor = if threads == 1 {
            Executor::SingleThread
        } else {
            // rayon panics only if the OS refuses threads; then stay single-threaded.
            std::panic::catch_unwind(|| Executor::multithread(threads)).unwrap_or_default()
        };
        self.threads = match self.executor {
            Executor::SingleThread => 1,
            _ => threads,
        };
        self
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The engine this handle's plans run on ("cpu" or "cuda").
    pub fn backend(&self) -> &'static str {
        self.engine.name()
    }

    /// Runs `f` with this handle's thread pool for tract.
    pub(crate) fn scoped<R>(&self, f: impl FnOnce() -> R) -> R {
        multithread_tract_scope(self.executor.clone(), f)
    }

    /// A shared handle to this model for a stream.
    pub fn shared(&self) -> Arc<CodecModel> {
        Arc::new(self.clone())
    }

    /// Whether the folder has graphs that take a whole utterance at once (FunCodec's offline path).
    pub fn has_offline_graphs(&self) -> bool {
        self.decoder.is_some()
    }
    /// Step graphs of a causal model (exact streaming), if the folder has them.
    pub fn encoder_step(&self) -> Option<&StepGraph> {
        self.steps.as_ref().map(|s| &s.0)
    }
    pub fn decoder_step(&self) -> Option<&StepGraph> {
        self.steps.as_ref().map(|s| &s.1)
    }

    pub fn sample_rate(&self) -> u32 {
        self.manifest.sample_rate
    }
    pub fn hop(&self) -> usize {
        self.manifest.hop
    }
    pub fn num_quantizers(&self) -> usize {
        self.manifest.quantizer.num_quantizers
    }
    pub fn latent_dim(&self) -> usize {
        self.manifest.quantizer.dim
    }

    /// Runs the encoder segments on `x` (1 channel, already level-normalised); returns the latent,
    /// `dim` channels × `ceil(len / hop)` frames.
    pub fn encode_latent(&self, x: Activation, scratch: &mut Vec<f32>) -> Result<Activation> {
        self.encode_latent_with(x, scratch, false)
    }

    /// [`Self::encode_latent`]; `length_repeats`: the caller runs this length again and again
    /// (windowed streaming), so plans specialised to it are worth building whatever the length.
    pub fn encode_latent_with(
        &self,
        x: Activation,
        scratch: &mut Vec<f32>,
        length_repeats: bool,
    ) -> Result<Activation> {
        let concrete = length_repeats || self.worth_concrete_plans(x.len());
        self.scoped(|| self.encode_latent_here(x, scratch, concrete, None))
    }

    fn encode_latent_here(
        &self,
        x: Activation,
        scratch: &mut Vec<f32>,
        concrete: bool,
        mut times: Option<&mut NodeTimes>,
    ) -> Result<Activation> {
        let mut act = x;
        for (i, (seg, graph)) in self.encoder.iter().enumerate() {
            if act.channels != seg.in_channels {
                return Err(Error::Inference {
                    stage: format!("encoder segment {i}"),
                    msg: format!("{} channels in, {} expected", act.channels, seg.in_channels),
                });
            }
            let stage = format!("encoder segment {i}");
            let timed = times.as_deref_mut().map(|t| (t, format!("seg{i}/")));
            act = run_padded(graph, concrete, &act, &seg.pad, scratch, &stage, timed)?;
        }
        Ok(act)
    }

    /// Runs the decoder on a latent (`dim` × frames); returns `hop × frames` samples.
    pub fn decode_latent(&self, z: &Activation, scratch: &mut Vec<f32>) -> Result<Vec<f32>> {
        self.decode_latent_with(z, scratch, false)
    }

    /// [`Self::decode_latent`]; `length_repeats` as for [`Self::encode_latent_with`].
    pub fn decode_latent_with(
        &self,
        z: &Activation,
        scratch: &mut Vec<f32>,
        length_repeats: bool,
    ) -> Result<Vec<f32>> {
        let concrete = length_repeats || self.worth_concrete_plans(z.len() * self.hop());
        self.scoped(|| self.decode_latent_here(z, scratch, concrete, None))
    }

    fn decode_latent_here(
        &self,
        z: &Activation,
        scratch: &mut Vec<f32>,
        concrete: bool,
        times: Option<&mut NodeTimes>,
    ) -> Result<Vec<f32>> {
        let (Some(graph), Some(info)) = (&self.decoder, &self.manifest.decoder) else {
            return Err(Error::Argument("model has no offline decoder graph".into()));
        };
        let timed = times.map(|t| (t, String::new()));
        Ok(run_padded(graph, concrete, z, &info.pad, scratch, "decoder", timed)?.data)
    }

    /// Times every node of the offline encoder and decoder graphs on `x` (one channel), run as
    /// [`Self::encode_latent`] and [`Self::decode_latent`] run it, plans built beforehand; for
    /// `funcodec bench --profile` on models without step graphs. Encoder nodes are named
    /// `seg<i>/<node>`. CPU engine only.
    pub fn profile_offline(&self, x: &[f32]) -> Result<(NodeTimes, NodeTimes)> {
        let concrete = self.worth_concrete_plans(x.len());
        let x = Activation {
            data: x.to_vec(),
            channels: 1,
        };
        let mut scratch = Vec::new();
        // A first pass builds (and caches) the plans, so that building is not timed.
        let z = self.scoped(|| self.encode_latent_here(x.clone(), &mut scratch, concrete, None))?;
        self.scoped(|| self.decode_latent_here(&z, &mut scratch, concrete, None))?;
        let (mut enc, mut dec) = (NodeTimes::new(), NodeTimes::new());
        let z =
            self.scoped(|| self.encode_latent_here(x, &mut scratch, concrete, Some(&mut enc)))?;
        self.scoped(|| self.decode_latent_here(&z, &mut scratch, concrete, Some(&mut dec)))?;
        Ok((enc, dec))
    }

    /// Plans specialised to a concrete length ran 1.9x faster than the symbolic-length plans on the
    /// full-size model (10 s: 1.74 s vs 3.26 s for the encoder) but cost ~0.3 s to build, so they are
    /// built for inputs of 2 s and more, or when the caller says the length repeats.
    fn worth_concrete_plans(&self, samples: usize) -> bool {
        samples >= 2 * self.sample_rate() as usize
    }
}

/// Concrete-length plans kept per graph: a windowed stream's window and the last offline length
/// (each plan holds its own packed weights: about the model's size).
const CONCRETE_PLANS: usize = 2;

/// An offline graph: its symbolic-length plan, plus plans specialised to the last concrete input
/// shapes it was asked for (kept, because windowed streaming and batch jobs repeat lengths).
pub(crate) struct OfflineGraph {
    file: String,
    bytes: Vec<u8>,
    engine: Engine,
    symbolic: Plan,
    /// Most recently used first.
    concrete: Mutex<Vec<(Vec<usize>, Plan)>>,
}

impl OfflineGraph {
    fn load(manifest: &Manifest, dir: &Path, file: &str, engine: Engine) -> Result<OfflineGraph> {
        let bytes = manifest.read_checked(dir, file)?;
        let symbolic = plan_from_bytes(&bytes, None, engine).map_err(|msg| Error::ModelFile {
            path: dir.to_path_buf(),
            file: file.into(),
            msg,
        })?;
        Ok(OfflineGraph {
            file: file.into(),
            bytes,
            engine,
            symbolic,
            concrete: Mutex::new(Vec::with_capacity(CONCRETE_PLANS)),
        })
    }

    /// The plan to run an input of `shape` with: the concrete one when cached or wanted, else (or if
    /// specialising fails) the symbolic one, which is always correct.
    fn plan_for(&self, shape: &[usize], want_concrete: bool) -> Plan {
        let mut cache = self.concrete.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ix) = cache.iter().position(|(s, _)| s == shape) {
            cache[..=ix].rotate_right(1);
            return cache[0].1.clone();
        }
        if !want_concrete {
            return self.symbolic.clone();
        }
        let plan = plan_from_bytes(&self.bytes, Some(shape), self.engine).unwrap_or_else(|msg| {
            eprintln!(
                "funcodec: {}: no plan for shape {shape:?} ({msg}); using the symbolic one",
                self.file
            );
            self.symbolic.clone()
        });
        // A failure is cached too, so a repeated length (a windowed stream) is not retried
        // every window.
        cache.truncate(CONCRETE_PLANS - 1);
        cache.insert(0, (shape.to_vec(), plan.clone()));
        plan
    }
}

pub(crate) fn plan_from_bytes(
    bytes: &[u8],
    shape: Option<&[usize]>,
    engine: Engine,
) -> std::result::Result<Plan, String> {
    let shapes: Vec<Vec<usize>> = shape.iter().map(|s| s.to_vec()).collect();
    plan_from_facts(bytes, &shapes, engine, None)
}

/// A plan with the first `shapes.len()` inputs fixed to those f32 shapes; the outputs' shapes
/// declared in the file are dropped, since they follow from the inputs. `edit` rewrites the graph
/// first on the CPU engine.
pub(crate) fn plan_from_facts(
    bytes: &[u8],
    shapes: &[Vec<usize>],
    engine: Engine,
    edit: Option<&dyn Fn(&mut tract_onnx::pb::GraphProto)>,
) -> std::result::Result<Plan, String> {
    let mut model = engine
        .read_onnx(bytes, edit)
        .map_err(|e| format!("not a loadable ONNX graph: {e:#}"))?;
    if !shapes.is_empty() {
        for (i, shape) in shapes.iter().enumerate() {
            model
                .set_input_fact(i, f32::fact(shape).into())
                .map_err(|e| format!("cannot set the shape of input {i}: {e:#}"))?;
        }
        for o in 0..model.output_outlets().map_or(0, |o| o.len()) {
            model
                .set_output_fact(o, InferenceFact::default())
                .map_err(|e| format!("cannot clear output {o}: {e:#}"))?;
        }
    }
    engine
        .prepare(model)
        .map_err(|e| format!("cannot optimise graph for {engine:?}: {e:#}"))
}

/// FunCodec pads the input of the segment's first conv by a length-dependent amount; do that, run.
fn run_padded(
    graph: &OfflineGraph,
    concrete: bool,
    x: &Activation,
    pad: &PadSpec,
    scratch: &mut Vec<f32>,
    stage: &str,
    timed: Option<(&mut NodeTimes, String)>,
) -> Result<Activation> {
    let ierr = |e: TractError| Error::Inference {
        stage: stage.into(),
        msg: format!("{e:#}"),
    };
    let (left, right) = pad.amounts(x.len());
    pad1d(&x.data, x.channels, left, right, pad.mode, scratch);
    let padded_len = x.len() + left + right;
    let shape = [1, x.channels, padded_len];
    let input = Tensor::from_shape(&shape, scratch).map_err(ierr)?;
    let plan = graph.plan_for(&shape, concrete);
    let out = match timed {
        None => plan.run(tvec!(input.into())),
        Some((times, prefix)) => plan
            .spawn()
            .and_then(|mut st| run_timed(st.as_mut(), tvec!(input.into()), times, &prefix)),
    }
    .map_err(ierr)?;
    let view = out[0].to_plain_array_view::<f32>().map_err(ierr)?;
    let shape = view.shape().to_vec();
    if shape.len() != 3 || shape[0] != 1 {
        return Err(Error::Inference {
            stage: stage.into(),
            msg: format!("unexpected output shape {shape:?}"),
        });
    }
    Ok(Activation {
        data: view.iter().copied().collect(),
        channels: shape[1],
    })
}
