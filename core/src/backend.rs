//! Where the network runs: tract on the CPU, or tract's CUDA runtime (cargo feature `cuda`).
//!
//! The choice is made once, when a model is loaded ([`crate::CodecModel::load_with_backend`]); every
//! plan of that model and every stream made from it then runs on that engine. `auto` takes the GPU
//! when the build has CUDA support and a driver and device answer, and otherwise the CPU, saying why.
//! Probing never panics: without a driver, tract's CUDA runtime reports its missing libraries as an
//! error, and the probe is also guarded against panics so none can reach a plugin or element boundary.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{Runnable, Runtime, runtime_for_name};

use crate::error::{Error, Result};

// Linking the crate registers its runtime with tract under the name "cuda".
#[cfg(feature = "cuda")]
use tract_cuda as _;

/// The backend a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// tract on the CPU (always available).
    #[default]
    Cpu,
    /// tract's CUDA runtime; an error if this build or this machine has none.
    Cuda,
    /// CUDA when available, else the CPU.
    Auto,
}

impl Backend {
    pub const NAMES: [&'static str; 3] = ["cpu", "cuda", "auto"];
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Backend::Cpu),
            "cuda" | "gpu" => Ok(Backend::Cuda),
            "auto" => Ok(Backend::Auto),
            other => Err(Error::Argument(format!(
                "unknown backend {other:?}; expected one of {}",
                Backend::NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Auto => "auto",
        })
    }
}

/// Whether this build was compiled with the `cuda` feature.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// A resolved backend: the engine plans are prepared on.
#[derive(Clone, Copy)]
pub struct Engine {
    gpu: Option<&'static dyn Runtime>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Engine {
    pub const CPU: Engine = Engine { gpu: None };

    /// Resolves a requested backend. `note` says what `auto` chose and why (for a log line).
    pub fn resolve(requested: Backend) -> Result<(Engine, Option<String>)> {
        match requested {
            Backend::Cpu => Ok((Engine::CPU, None)),
            Backend::Cuda => probe_cuda()
                .map(|rt| (Engine { gpu: Some(rt) }, None))
                .map_err(Error::Backend),
            Backend::Auto => Ok(match probe_cuda() {
                Ok(rt) => (
                    Engine { gpu: Some(rt) },
                    Some("backend auto: using CUDA (tract-cuda)".into()),
                ),
                Err(why) => (
                    Engine::CPU,
                    Some(format!("backend auto: using the CPU ({why})")),
                ),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        if self.gpu.is_some() { "cuda" } else { "cpu" }
    }

    pub fn is_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Reads an ONNX graph for this engine: on the CPU with the runtime's own ops (see
    /// `tract_ops`), after `edit` rewrites it (the caller knows what that does to the graph's
    /// inputs); the CUDA runtime gets tract's standard ops, which are the ones it translates, and
    /// the graph as it is.
    pub(crate) fn read_onnx(
        &self,
        bytes: &[u8],
        edit: Option<&dyn Fn(&mut tract_onnx::pb::GraphProto)>,
    ) -> TractResult<InferenceModel> {
        match self.gpu {
            None => crate::tract_ops::read_for_cpu(bytes, edit),
            Some(_) => tract_onnx::onnx().model_for_read(&mut &bytes[..]),
        }
    }

    /// Optimises a graph for this engine and makes it runnable.
    pub(crate) fn prepare(&self, model: InferenceModel) -> TractResult<Arc<dyn Runnable>> {
        let mut typed = model.into_typed()?.into_decluttered()?;
        crate::tract_ops::keep_f64_mean_of_squares(&mut typed)?;
        match self.gpu {
            None => {
                crate::tract_ops::row_pad::rewrite(&mut typed)?;
                crate::tract_ops::mat_vec::rewrite(&mut typed)?;
                let mut optimized = typed.into_optimized()?;
                if crate::tract_ops::tile_batch_broadcasts(&mut optimized)? > 0 {
                    optimized = optimized.into_optimized()?;
                }
                let plan: Arc<TypedRunnableModel> = optimized.into_runnable()?;
                Ok(Arc::new(plan))
            }
            Some(rt) => {
                // The runtime must not panic into our caller, whatever the driver does.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.prepare(typed))) {
                    Ok(r) => Ok(Arc::from(r?)),
                    Err(_) => Err(TractError::msg(
                        "the CUDA runtime panicked while preparing the graph",
                    )),
                }
            }
        }
    }
}

/// The CUDA runtime if this build has it and the machine's driver, libraries and device answer;
/// otherwise the reason, in words.
fn probe_cuda() -> std::result::Result<&'static dyn Runtime, String> {
    if !cuda_compiled() {
        return Err("this build has no CUDA support; rebuild with `--features cuda`".into());
    }
    let found = std::panic::catch_unwind(|| runtime_for_name("cuda"));
    match found {
        Ok(Ok(Some(rt))) => Ok(rt),
        Ok(Ok(None)) => Err("tract's CUDA runtime is not registered in this build".into()),
        Ok(Err(e)) => Err(format!("no usable CUDA driver or device: {e:#}")),
        Err(_) => Err("probing the CUDA driver panicked".into()),
    }
}
