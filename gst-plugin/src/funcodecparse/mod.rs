use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct FuncodecParse(ObjectSubclass<imp::FuncodecParse>)
        @extends gst_base::BaseParse, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "funcodecparse",
        gst::Rank::PRIMARY + 1,
        FuncodecParse::static_type(),
    )
}
