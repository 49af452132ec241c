//! GStreamer elements for FunCodec neural speech codec models, built on `funcodec-core`'s streaming
//! encoder and decoder:
//!
//! * `funcodecenc` (GstAudioEncoder): mono F32LE/S16LE at the model's rate in, one
//!   `audio/x-funcodec` packet (the FCDC bitstream's frame packet) per 40 ms frame out;
//! * `funcodecdec` (GstAudioDecoder): packets in, PCM out, with packet-loss concealment;
//! * `funcodecparse` (GstBaseParse) and an `audio/x-funcodec` typefinder: reads `.fcdc` files
//!   (the CLI's format) into packets.
//!
//! See `gst-plugin/README.md` for pipelines and every property.
#![allow(clippy::new_without_default)]

use gst::glib;

pub mod common;
mod funcodecdec;
mod funcodecenc;
mod funcodecparse;
mod typefind;

pub use common::{Backend, Mode};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    funcodecenc::register(plugin)?;
    funcodecdec::register(plugin)?;
    funcodecparse::register(plugin)?;
    typefind::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    funcodec,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
