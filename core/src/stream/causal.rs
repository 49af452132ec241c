//! Exact streaming of causal models through their step graphs: the result equals running the whole
//! input at once, for any split, because the graphs carry every piece of history as state.

use std::sync::Arc;

use super::step::StepRunner;
use super::{Emit, LatentDecoder, LatentEncoder};
use crate::error::{Error, Result};
use crate::model::CodecModel;

fn steps_of(model: &CodecModel) -> Result<&super::step::StepGraph> {
    model.encoder_step().ok_or_else(|| {
        Error::Argument(format!(
            "model {} has no step graphs: it is not causal, so it only streams approximately \
             (use the windowed mode)",
            model.manifest.model_id
        ))
    })
}

pub struct CausalEncoder {
    model: Arc<CodecModel>,
    runner: StepRunner,
    latent: Vec<f32>,
}

impl CausalEncoder {
    pub fn new(model: Arc<CodecModel>) -> Result<Self> {
        let runner = steps_of(&model)?.start()?;
        let latent = vec![0.0; model.latent_dim()];
        Ok(CausalEncoder {
            model,
            runner,
            latent,
        })
    }
}

impl LatentEncoder for CausalEncoder {
    fn push_frame(&mut self, frame: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        let g = steps_of(&self.model)?;
        self.model
            .scoped(|| g.step(&mut self.runner, frame, &mut self.latent))?;
        emit(&self.latent)
    }
    fn drain(&mut self, _emit: &mut Emit<'_>) -> Result<()> {
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        steps_of(&self.model)?.reset(&mut self.runner)
    }
    fn lookahead_samples(&self) -> usize {
        0
    }
    fn state_bytes(&self) -> usize {
        steps_of(&self.model).map_or(0, |g| g.state_bytes) + self.latent.len() * 4
    }
}

pub struct CausalDecoder {
    model: Arc<CodecModel>,
    runner: StepRunner,
    pcm: Vec<f32>,
}

impl CausalDecoder {
    pub fn new(model: Arc<CodecModel>) -> Result<Self> {
        steps_of(&model)?;
        let runner = model.decoder_step().expect("checked").start()?;
        let pcm = vec![0.0; model.hop()];
        Ok(CausalDecoder { model, runner, pcm })
    }
}

impl LatentDecoder for CausalDecoder {
    fn push_latent(&mut self, z: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        let g = self.model.decoder_step().expect("checked at new");
        self.model
            .scoped(|| g.step(&mut self.runner, z, &mut self.pcm))?;
        emit(&self.pcm)
    }
    fn drain(&mut self, _emit: &mut Emit<'_>) -> Result<()> {
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        self.model
            .decoder_step()
            .expect("checked at new")
            .reset(&mut self.runner)
    }
    fn lookahead_samples(&self) -> usize {
        0
    }
    fn state_bytes(&self) -> usize {
        self.model.decoder_step().map_or(0, |g| g.state_bytes) + self.pcm.len() * 4
    }
}
