//! `funcodecenc` under the gst-check harness: caps, timestamps, latency, drain, flush, DISCONT,
//! bit-rate changes, renegotiation and bad input, checked against the core's `StreamEncoder`.

mod common;

use common::*;
use gst::prelude::*;

fn harness(extra: &[(&str, glib::Value)]) -> gst_check::Harness {
    init();
    let mut h = gst_check::Harness::with_element(&enc_element(extra), Some("sink"), Some("src"));
    h.set_src_caps_str(RAW_F32);
    h
}

/// Splits the encoder's output into the header buffer and the packets.
fn split(bufs: Vec<gst::Buffer>) -> (gst::Buffer, Vec<gst::Buffer>) {
    let mut it = bufs.into_iter();
    let first = it.next().expect("no output");
    (first, it.collect())
}

fn clip_end(b: &gst::BufferRef) -> Option<u64> {
    b.meta::<gst_audio::AudioClippingMeta>()
        .map(|m| match m.end() {
            gst::GenericFormattedValue::Default(Some(n)) => *n,
            other => panic!("clipping in {other:?}"),
        })
}

#[test]
fn timestamps_caps_codes_and_drain() {
    let pcm = signal(16100, 1);
    let mut h = harness(&[]);
    push_pcm(&mut h, &pcm, &[1000, 333, 1, 4000, 640, 77], 0);
    h.push_event(gst::event::Eos::new());
    let (head, packets) = split(pull_all(&mut h));

    // The stream header leads, flagged HEADER, exactly the core's header bytes.
    assert!(head.flags().contains(gst::BufferFlags::HEADER));
    assert_eq!(head.map_readable().unwrap().as_slice(), header().encode());

    // ceil(16100 / 640) = 26 packets, stamped from the sample count; the last one holds 100 real
    // samples and says so with its duration and a clipping meta for the 540 padding samples.
    assert_eq!(packets.len(), 26);
    for (k, p) in packets.iter().enumerate() {
        let start = k as u64 * 640;
        let end = (start + 640).min(16100);
        assert_eq!(p.pts(), Some(time_of(start)), "pts of packet {k}");
        assert_eq!(
            p.duration(),
            Some(time_of(end) - time_of(start)),
            "duration {k}"
        );
        assert_eq!(
            clip_end(p),
            (k == 25).then_some(540),
            "clipping of packet {k}"
        );
    }
    assert_eq!(
        packets[25].pts().unwrap() + packets[25].duration().unwrap(),
        time_of(16100)
    );

    // The codes are the core's.
    let codes: Vec<Vec<u16>> = packets
        .iter()
        .map(|p| unpack(&p.map_readable().unwrap()))
        .collect();
    assert_eq!(codes, ref_codes(&pcm, 8));

    // Caps carry what downstream needs.
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "audio/x-funcodec");
    assert_eq!(s.get::<i32>("rate").unwrap(), 16000);
    assert_eq!(s.get::<i32>("channels").unwrap(), 1);
    assert_eq!(
        s.get::<gst::Fraction>("framerate").unwrap(),
        gst::Fraction::new(25, 1)
    );
    assert_eq!(s.get::<i32>("frame-samples").unwrap(), 640);
    assert_eq!(s.get::<i32>("n-q").unwrap(), 8);
    assert_eq!(s.get::<i32>("max-n-q").unwrap(), 8);
    assert_eq!(s.get::<i32>("codebook-size").unwrap(), 1024);
    assert_eq!(s.get::<i32>("lookahead").unwrap(), 0);
    assert_eq!(
        s.get::<&str>("model-id").unwrap(),
        "tiny_causal_ds640_steps"
    );
    assert_eq!(
        s.get::<&str>("model-hash").unwrap(),
        "d73713e54d76653045fb73f53728daf2"
    );
    assert!(s.get::<bool>("framed").unwrap());
    assert_eq!(
        gstfuncodec::common::streamheader_of(&caps).unwrap(),
        header().encode()
    );
}

#[test]
fn s16_input_gives_the_same_codes_as_f32() {
    let pcm: Vec<f32> = signal(3000, 2)
        .iter()
        .map(|v| (v * 32768.0).round() / 32768.0)
        .collect();
    init();
    let mut h = gst_check::Harness::with_element(&enc_element(&[]), Some("sink"), Some("src"));
    h.set_src_caps_str(RAW_S16);
    let bytes: Vec<u8> = pcm
        .iter()
        .flat_map(|v| ((v * 32768.0) as i16).to_le_bytes())
        .collect();
    let mut b = gst::Buffer::from_slice(bytes);
    b.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    h.push(b).unwrap();
    h.push_event(gst::event::Eos::new());
    let (_, packets) = split(pull_all(&mut h));
    let codes: Vec<Vec<u16>> = packets
        .iter()
        .map(|p| unpack(&p.map_readable().unwrap()))
        .collect();
    assert_eq!(codes, ref_codes(&pcm, 8));
}

#[test]
fn latency_is_one_frame_plus_lookahead_exactly() {
    let mut h = harness(&[]);
    h.set_upstream_latency(gst::ClockTime::from_nseconds(12_345_678));
    h.push(pcm_buffer(&signal(640, 3), 0)).unwrap();
    // Through the harness: upstream + 640 samples at 16 kHz = + 40 ms exactly.
    assert_eq!(
        h.query_latency(),
        Some(gst::ClockTime::from_nseconds(12_345_678 + 40_000_000))
    );
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    let (_live, min, max) = q.result();
    assert_eq!(min, gst::ClockTime::from_nseconds(12_345_678 + 40_000_000));
    assert!(max.is_none_or(|m| m >= min));
}

#[test]
fn flush_resets_the_stream_state() {
    let a = signal(1000, 4);
    let b = signal(1920, 5);
    let mut h = harness(&[]);
    h.push(pcm_buffer(&a, 0)).unwrap();
    assert_eq!(pull_all(&mut h).len(), 2, "header and one packet");
    // 360 samples are pending; a flush must drop them and the model state.
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    h.push(pcm_buffer(&b, 0)).unwrap();
    let packets = pull_all(&mut h);
    assert_eq!(packets.len(), 3);
    let codes: Vec<Vec<u16>> = packets
        .iter()
        .map(|p| unpack(&p.map_readable().unwrap()))
        .collect();
    assert_eq!(codes, ref_codes(&b, 8));
    assert!(packets[0].flags().contains(gst::BufferFlags::DISCONT));
    assert_eq!(packets[0].pts(), Some(gst::ClockTime::ZERO));
}

#[test]
fn discont_input_drains_and_resets() {
    let a = signal(1000, 6);
    let b = signal(1280, 7);
    let mut h = harness(&[]);
    h.push(pcm_buffer(&a, 0)).unwrap();
    let mut buf = pcm_buffer(&b, 1000);
    buf.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
    h.push(buf).unwrap();
    h.push_event(gst::event::Eos::new());
    let (_, packets) = split(pull_all(&mut h));
    let codes: Vec<Vec<u16>> = packets
        .iter()
        .map(|p| unpack(&p.map_readable().unwrap()))
        .collect();
    // a: one frame and a 360-sample tail drained (zero-padded) at the DISCONT; b: a fresh stream.
    let mut want = ref_codes(&a, 8);
    want.extend(ref_codes(&b, 8));
    assert_eq!(codes, want);
    assert_eq!(clip_end(&packets[1]), Some(280));
    assert_eq!(packets[1].duration(), Some(time_of(1000) - time_of(640)));
    assert!(packets[2].flags().contains(gst::BufferFlags::DISCONT));
    assert_eq!(packets[2].pts(), Some(time_of(1000)));
    assert_eq!(packets[3].pts(), Some(time_of(1640)));
}

#[test]
fn n_q_and_bitrate_change_while_playing() {
    let pcm = signal(9 * 640, 8);
    let mut h = harness(&[]);
    let el = h.element().unwrap();
    let mut caps_n_q = Vec::new();
    let mut codes = Vec::new();
    let mut pull = |h: &mut gst_check::Harness, caps_n_q: &mut Vec<i32>| {
        while let Some(ev) = h.try_pull_event() {
            if let gst::EventView::Caps(c) = ev.view() {
                caps_n_q.push(c.caps().structure(0).unwrap().get::<i32>("n-q").unwrap());
            }
        }
        for b in pull_all(h) {
            let m = b.map_readable().unwrap();
            if !m.starts_with(b"FCDC") {
                codes.push(unpack(&m));
            }
        }
    };
    h.push(pcm_buffer(&pcm[..1920], 0)).unwrap();
    pull(&mut h, &mut caps_n_q);
    el.set_property("n-q", 2u32);
    h.push(pcm_buffer(&pcm[1920..3840], 1920)).unwrap();
    pull(&mut h, &mut caps_n_q);
    // bitrate applies once n-q is back to 0: 750 bit/s / 250 per quantizer = 3.
    el.set_property("bitrate", 750i32);
    el.set_property("n-q", 0u32);
    h.push(pcm_buffer(&pcm[3840..], 3840)).unwrap();
    pull(&mut h, &mut caps_n_q);
    let counts: Vec<usize> = codes.iter().map(Vec::len).collect();
    assert_eq!(counts, [8, 8, 8, 2, 2, 2, 3, 3, 3]);
    assert_eq!(caps_n_q, [8, 2, 3]);

    // The same switches on the core encoder give the same codes.
    let mut enc = funcodec_core::StreamEncoder::new(model(), 8).unwrap();
    let mut want = Vec::new();
    for (range, n_q) in [(0..1920, 8), (1920..3840, 2), (3840..5760, 3)] {
        enc.set_n_q(n_q).unwrap();
        enc.push(&pcm[range], |c| {
            want.push(c.to_vec());
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(codes, want);
}

#[test]
fn n_q_above_the_model_is_clamped_with_a_warning() {
    let mut h = harness(&[("n-q", 40u32.to_value())]);
    let bus = bus_of(&h);
    h.push(pcm_buffer(&signal(640, 9), 0)).unwrap();
    let bufs = pull_all(&mut h);
    assert_eq!(unpack(&bufs[1].map_readable().unwrap()).len(), 8);
    let warnings = messages(&bus, gst::MessageType::Warning);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("n-q=40 exceeds the 8 quantizers")),
        "{warnings:?}"
    );
}

#[test]
fn bitrate_property_follows_funcodec_rule() {
    for (bitrate, want) in [(0, 8), (249, 1), (500, 2), (1999, 7), (100_000, 8)] {
        let mut h = harness(&[("bitrate", bitrate.to_value())]);
        h.push(pcm_buffer(&signal(640, 10), 0)).unwrap();
        let bufs = pull_all(&mut h);
        assert_eq!(
            unpack(&bufs[1].map_readable().unwrap()).len(),
            want,
            "bitrate {bitrate}"
        );
    }
}

#[test]
fn format_renegotiation_mid_stream() {
    let a = signal(1000, 11);
    let b: Vec<f32> = signal(1280, 12)
        .iter()
        .map(|v| (v * 32768.0).round() / 32768.0)
        .collect();
    let mut h = harness(&[]);
    h.push(pcm_buffer(&a, 0)).unwrap();
    h.set_src_caps_str(RAW_S16);
    let bytes: Vec<u8> = b
        .iter()
        .flat_map(|v| ((v * 32768.0) as i16).to_le_bytes())
        .collect();
    let mut buf = gst::Buffer::from_slice(bytes);
    buf.get_mut().unwrap().set_pts(time_of(1000));
    h.push(buf).unwrap();
    h.push_event(gst::event::Eos::new());
    let (_, packets) = split(pull_all(&mut h));
    // The format change drains the F32 tail (zero-padded, clipped) and starts a new state.
    let pts: Vec<_> = packets.iter().map(|p| p.pts().unwrap()).collect();
    assert_eq!(
        pts,
        [time_of(0), time_of(640), time_of(1000), time_of(1640)]
    );
    assert_eq!(clip_end(&packets[1]), Some(280));
    let codes: Vec<Vec<u16>> = packets
        .iter()
        .map(|p| unpack(&p.map_readable().unwrap()))
        .collect();
    let mut want = ref_codes(&a, 8);
    want.extend(ref_codes(&b, 8));
    assert_eq!(codes, want);
}

/// Caps the model cannot take are refused (the sink pad's accept-caps: rate and channels are
/// fixed to the model's once it is loaded), so the stream is not negotiated; nothing crashes.
#[test]
fn wrong_rate_or_channels_are_not_negotiated() {
    for caps in [
        "audio/x-raw,format=F32LE,rate=44100,channels=1,layout=interleaved",
        "audio/x-raw,format=F32LE,rate=16000,channels=2,layout=interleaved",
    ] {
        init();
        let mut h = gst_check::Harness::with_element(&enc_element(&[]), Some("sink"), Some("src"));
        h.set_src_caps_str(caps);
        assert_eq!(
            h.push(pcm_buffer(&signal(640, 13), 0)),
            Err(gst::FlowError::NotNegotiated),
            "{caps}"
        );
        let sink = h.element().unwrap().static_pad("sink").unwrap();
        let allowed = sink.query_caps(None);
        let s = allowed.structure(0).unwrap();
        assert_eq!(s.get::<i32>("rate").unwrap(), 16000);
        assert_eq!(s.get::<i32>("channels").unwrap(), 1);
    }
}

#[test]
fn nan_input_is_replaced_and_reported() {
    let mut pcm = signal(1280, 14);
    pcm[700] = f32::NAN;
    pcm[701] = f32::INFINITY;
    let mut h = harness(&[]);
    let bus = bus_of(&h);
    h.push(pcm_buffer(&pcm, 0)).unwrap();
    let bufs = pull_all(&mut h);
    assert_eq!(bufs.len(), 3);
    let mut clean = pcm.clone();
    clean[700] = 0.0;
    clean[701] = 0.0;
    assert_eq!(
        unpack(&bufs[2].map_readable().unwrap()),
        ref_codes(&clean, 8)[1]
    );
    let warnings = messages(&bus, gst::MessageType::Warning);
    assert!(
        warnings.iter().any(|w| w.contains("2 NaN/infinite")),
        "{warnings:?}"
    );
}

fn start_error(factory: &str, props: &[(&str, glib::Value)]) -> String {
    init();
    let mut b = gst::ElementFactory::make(factory);
    for (k, v) in props {
        b = b.property(k, v.clone());
    }
    let el = b.build().unwrap();
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    assert!(el.set_state(gst::State::Paused).is_err());
    let _ = el.set_state(gst::State::Null);
    // Ours first; the base class adds a generic "Failed to start codec".
    let errors = messages(&bus, gst::MessageType::Error);
    assert!(!errors.is_empty());
    errors[0].clone()
}

#[test]
fn a_model_folder_that_does_not_load_is_an_error_at_start() {
    for factory in ["funcodecenc", "funcodecdec"] {
        let e = start_error(factory, &[("model", "/nonexistent/model".to_value())]);
        assert!(e.contains("/nonexistent/model"), "{e}");

        // A folder that exists but is not a model.
        let e = start_error(factory, &[("model", repo().join("tests").to_value())]);
        assert!(e.contains("cannot load model"), "{e}");
    }
}

#[test]
fn the_bundled_default_is_used_when_model_is_unset() {
    init();
    let el = gst::ElementFactory::make("funcodecenc").build().unwrap();
    let want = match std::env::var_os("FUNCODEC_MODEL") {
        Some(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => repo().join("models/default"),
    };
    let got = std::path::PathBuf::from(el.property::<String>("model"));
    assert_eq!(
        std::fs::canonicalize(got.parent().unwrap()).ok(),
        std::fs::canonicalize(want.parent().unwrap()).ok()
    );
    assert_eq!(got.file_name(), want.file_name());
    if want.join("manifest.json").exists() {
        // The default model codes a frame; the caps name it.
        let manifest = funcodec_core::manifest::Manifest::load(&want).unwrap();
        let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
        h.set_src_caps_str(RAW_F32);
        h.push(pcm_buffer(&signal(640, 16), 0)).unwrap();
        assert_eq!(pull_all(&mut h).len(), 2);
        let caps = h.sinkpad().unwrap().current_caps().unwrap();
        assert_eq!(
            caps.structure(0).unwrap().get::<&str>("model-id").unwrap(),
            manifest.model_id
        );
    } else {
        // Not there: a clear error naming the bundled model, not a crash.
        let e = start_error("funcodecdec", &[]);
        assert!(e.contains("models/default"), "{e}");
    }
}

#[test]
fn exact_mode_refuses_a_noncausal_model_and_auto_streams_it_windowed() {
    let e = start_error(
        "funcodecenc",
        &[
            ("model", noncausal_dir().to_value()),
            ("mode", gstfuncodec::Mode::Exact.to_value()),
        ],
    );
    assert!(e.contains("cannot stream in mode Exact"), "{e}");

    // Auto: windowed, with the window's look-ahead in the latency: 640 + (4 - 1 + 4) × 640.
    let mut h = gst_check::Harness::with_element(
        &gst::ElementFactory::make("funcodecenc")
            .property("model", noncausal_dir())
            .build()
            .unwrap(),
        Some("sink"),
        Some("src"),
    );
    h.set_src_caps_str(RAW_F32);
    let pcm = signal(10 * 640 + 100, 15);
    push_pcm(&mut h, &pcm, &[640], 0);
    assert_eq!(h.query_latency(), Some(time_of(8 * 640)));
    h.push_event(gst::event::Eos::new());
    let (_, packets) = split(pull_all(&mut h));
    assert_eq!(packets.len(), 11);
    for (k, p) in packets.iter().enumerate() {
        assert_eq!(p.pts(), Some(time_of(k as u64 * 640)), "packet {k}");
    }
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    assert_eq!(
        caps.structure(0).unwrap().get::<i32>("lookahead").unwrap(),
        7 * 640
    );
}

#[test]
fn threads_property_gives_the_same_codes() {
    // A thread pool for tract's matrix products changes where the work runs, not the result.
    let pcm = signal(20 * 640 + 7, 21);
    let mut outs = Vec::new();
    for threads in [1u32, 2] {
        let mut h = harness(&[("threads", threads.to_value())]);
        assert_eq!(h.element().unwrap().property::<u32>("threads"), threads);
        push_pcm(&mut h, &pcm, &[640], 0);
        h.push_event(gst::event::Eos::new());
        let (_, packets) = split(pull_all(&mut h));
        outs.push(
            packets
                .iter()
                .map(|p| unpack(&p.map_readable().unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], ref_codes(&pcm, 8));
}
