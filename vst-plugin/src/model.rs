//! Which model an instance codes with, and loading it (on the main thread, at activation; never in
//! the scan path, never on the audio thread). Loaded models are shared between instances.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use funcodec_core::CodecModel;

use crate::dsp::codec::CodecSource;

/// Model choice that selects the identity substitute (resamplers, worker and latency without a
/// codec): for checking alignment and latency in a host.
pub const IDENTITY: &str = "@identity";

/// The model folder compiled in: `models/default` of the source tree.
pub const BUNDLED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default");

/// The folder the default choice resolves to: `FUNCODEC_MODEL` if set, else [`BUNDLED_MODEL`].
pub fn default_model() -> String {
    match std::env::var("FUNCODEC_MODEL") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => BUNDLED_MODEL.to_string(),
    }
}

static CACHE: Mutex<Vec<(PathBuf, Weak<CodecModel>)>> = Mutex::new(Vec::new());

/// Loads a model folder, or returns the copy another instance already holds.
pub fn load_shared(dir: &Path) -> Result<Arc<CodecModel>, String> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(m) = cache
            .iter()
            .find(|(p, _)| *p == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(m);
        }
    }
    // Load outside the lock (it takes a while); a model can never panic us, but be safe.
    let loaded = std::panic::catch_unwind(|| CodecModel::load(&key))
        .map_err(|_| format!("model folder {}: loader panicked", key.display()))?
        .map_err(|e| e.to_string())?;
    if loaded.encoder_step().is_none() && !loaded.has_offline_graphs() {
        return Err(format!("model folder {}: no graphs", key.display()));
    }
    let m = loaded.shared();
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key, Arc::downgrade(&m)));
    Ok(m)
}

/// An instance's model choice and what it resolved to.
#[derive(Default)]
pub struct ModelSlot {
    /// As saved in the state: empty = default.
    choice: String,
    loaded: Option<(String, CodecSource)>,
    last_error: Option<String>,
}

impl ModelSlot {
    pub fn choice(&self) -> &str {
        &self.choice
    }
    /// Changes the choice; true if it differs (the next activation loads it).
    pub fn set_choice(&mut self, choice: &str) -> bool {
        if self.choice == choice {
            return false;
        }
        self.choice = choice.to_string();
        true
    }
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    /// The resolved folder (or [`IDENTITY`]).
    pub fn resolved(&self) -> String {
        if self.choice.trim().is_empty() {
            default_model()
        } else {
            self.choice.clone()
        }
    }

    /// The codec to use, loading the model if the resolved choice changed since the last call.
    /// Errors (missing/broken folder) are returned as text; the plugin then runs dry.
    pub fn source(&mut self) -> Result<CodecSource, String> {
        let want = self.resolved();
        if let Some((key, src)) = &self.loaded
            && *key == want
        {
            return Ok(src.clone());
        }
        let r = if want == IDENTITY {
            Ok(CodecSource::Identity)
        } else {
            load_shared(Path::new(&want)).map(CodecSource::Model)
        };
        match r {
            Ok(src) => {
                self.loaded = Some((want, src.clone()));
                self.last_error = None;
                Ok(src)
            }
            Err(e) => {
                eprintln!("FunCodec Monitor: cannot load model: {e}");
                self.loaded = None;
                self.last_error = Some(e.clone());
                Err(e)
            }
        }
    }
}
