//! FunCodec Monitor: hear a neural speech codec (or only its artifacts) on a track, inside a DAW.
//!
//! One processing core ([`dsp`]), one parameter table ([`params`]), one state format ([`state`]),
//! and two thin format shells exported from the same library: CLAP ([`clap_shell`], the
//! `clap_entry` symbol) and VST3 ([`vst3_shell`], `GetPluginFactory`). See README.md.

pub mod clap_shell;
pub mod dsp;
pub mod model;
pub mod params;
pub mod state;
pub mod vst3_shell;

pub const PLUGIN_NAME: &str = "FunCodec Monitor";
pub const VENDOR: &str = "funcodec-rs";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const CLAP_ID: &str = "rs.funcodec.monitor";

/// Flush-to-zero / denormals-are-zero for the duration of a process call (restored on drop).
pub struct DenormalGuard {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl DenormalGuard {
    #[allow(deprecated)]
    #[inline]
    pub fn new() -> DenormalGuard {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            // SAFETY: reading/writing MXCSR is always valid on x86_64 (SSE2 is baseline);
            // FTZ (bit 15) and DAZ (bit 6) only change how subnormals are treated.
            let saved = unsafe { _mm_getcsr() };
            unsafe { _mm_setcsr(saved | 0x8040) };
            DenormalGuard { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        DenormalGuard {}
    }
}

impl Default for DenormalGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DenormalGuard {
    #[allow(deprecated)]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the caller's MXCSR value.
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        };
    }
}
