//! A loaded model folder: tract plans for the offline encoder segments and decoder and/or the step
//! graphs of a causal model, plus the codebooks. Everything is optimised once at load; the plans are
//! shared, immutable, and safe across threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, Segment};
use crate::padding::{PadSpec, pad1d};
use crate::rvq::Codebooks;
use crate::stream::step::StepGraph;

type Plan = Arc<TypedRunnableModel>;

/// Cloning is cheap (every part is shared), so a stream can hold its own `Arc<CodecModel>`.
#[derive(Clone)]
pub struct CodecModel {
    pub manifest: Arc<Manifest>,
    pub dir: PathBuf,
    encoder: Arc<Vec<(Segment, Plan)>>,
    decoder: Option<Plan>,
    steps: Option<Arc<(StepGraph, StepGraph)>>,
    pub codebooks: Arc<Codebooks>,
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
    /// Loads and optimises a model folder written by `models/export.py`.
    pub fn load(dir: impl AsRef<Path>) -> Result<CodecModel> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir,
                msg: "not a directory".into(),
            });
        }
        let manifest = Manifest::load(&dir)?;
        let mut encoder = Vec::new();
        for seg in manifest.encoder.iter().flat_map(|e| &e.segments) {
            encoder.push((seg.clone(), load_plan(&manifest, &dir, &seg.file)?));
        }
        let decoder = match &manifest.decoder {
            Some(d) => Some(load_plan(&manifest, &dir, &d.file)?),
            None => None,
        };
        let steps = match &manifest.streaming {
            Some(st) => Some((
                StepGraph::load(&manifest, &dir, &st.encoder, "encoder step")?,
                StepGraph::load(&manifest, &dir, &st.decoder, "decoder step")?,
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
            manifest: Arc::new(manifest),
            dir,
            encoder: Arc::new(encoder),
            decoder,
            steps: steps.map(Arc::new),
            codebooks: Arc::new(codebooks),
        })
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
        let mut act = x;
        for (i, (seg, plan)) in self.encoder.iter().enumerate() {
            if act.channels != seg.in_channels {
                return Err(Error::Inference {
                    stage: format!("encoder segment {i}"),
                    msg: format!("{} channels in, {} expected", act.channels, seg.in_channels),
                });
            }
            act = run_padded(
                plan,
                &act,
                &seg.pad,
                scratch,
                &format!("encoder segment {i}"),
            )?;
        }
        Ok(act)
    }

    /// Runs the decoder on a latent (`dim` × frames); returns `hop × frames` samples.
    pub fn decode_latent(&self, z: &Activation, scratch: &mut Vec<f32>) -> Result<Vec<f32>> {
        let (Some(plan), Some(info)) = (&self.decoder, &self.manifest.decoder) else {
            return Err(Error::Argument("model has no offline decoder graph".into()));
        };
        Ok(run_padded(plan, z, &info.pad, scratch, "decoder")?.data)
    }
}

pub(crate) fn load_plan(manifest: &Manifest, dir: &Path, file: &str) -> Result<Plan> {
    let bytes = manifest.read_checked(dir, file)?;
    let ferr = |msg: String| Error::ModelFile {
        path: dir.to_path_buf(),
        file: file.into(),
        msg,
    };
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| ferr(format!("not a loadable ONNX graph: {e:#}")))?;
    model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| ferr(format!("cannot optimise graph: {e:#}")))
}

/// FunCodec pads the input of the segment's first conv by a length-dependent amount; do that, run.
fn run_padded(
    plan: &Plan,
    x: &Activation,
    pad: &PadSpec,
    scratch: &mut Vec<f32>,
    stage: &str,
) -> Result<Activation> {
    let ierr = |e: TractError| Error::Inference {
        stage: stage.into(),
        msg: format!("{e:#}"),
    };
    let (left, right) = pad.amounts(x.len());
    pad1d(&x.data, x.channels, left, right, pad.mode, scratch);
    let padded_len = x.len() + left + right;
    let input = Tensor::from_shape(&[1, x.channels, padded_len], scratch).map_err(ierr)?;
    let out = plan.run(tvec!(input.into())).map_err(ierr)?;
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
