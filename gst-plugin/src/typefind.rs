//! `audio/x-funcodec` typefinder: a stream starting with a valid FCDC header (magic, version 1,
//! CRC-checked header) is a FunCodec stream, so `filesrc ! decodebin` and `typefind` recognise
//! `.fcdc` files.

use funcodec_core::bitstream::StreamHeader;
use gst::glib;

use crate::common::MEDIA_TYPE;

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    let caps = gst::Caps::builder(MEDIA_TYPE).build();
    gst::TypeFind::register(
        Some(plugin),
        "funcodec_fcdc",
        gst::Rank::PRIMARY,
        Some("fcdc"),
        Some(&caps),
        move |tf| {
            let Some(prefix) = tf.peek(0, 7).map(<[u8]>::to_vec) else {
                return;
            };
            if !prefix.starts_with(b"FCDC") || prefix[4] != 1 {
                return;
            }
            let len = u32::from(u16::from_le_bytes([prefix[5], prefix[6]]));
            let valid = tf
                .peek(0, len)
                .is_some_and(|h| StreamHeader::decode(h).is_ok());
            let probability = if valid {
                gst::TypeFindProbability::Maximum
            } else {
                gst::TypeFindProbability::Possible
            };
            tf.suggest(probability, &gst::Caps::builder(MEDIA_TYPE).build());
        },
    )
}
