use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FuncodecDec(ObjectSubclass<imp::FuncodecDec>)
        @extends gst_audio::AudioDecoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "funcodecdec",
        gst::Rank::PRIMARY,
        FuncodecDec::static_type(),
    )
}
