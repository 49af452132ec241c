use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FuncodecEnc(ObjectSubclass<imp::FuncodecEnc>)
        @extends gst_audio::AudioEncoder, gst::Element, gst::Object,
        @implements gst::Preset;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::Backend::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    crate::Mode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "funcodecenc",
        gst::Rank::PRIMARY,
        FuncodecEnc::static_type(),
    )
}
