//! `funcodecdec` (and the encoder → decoder pair) under the gst-check harness: sample-exact
//! alignment, timestamps, latency, flush and DISCONT, packet-loss concealment (GAP events,
//! missing frames, corrupt and truncated packets), caps changes and wrong caps, checked against the
//! core's `StreamDecoder`.

mod common;

use common::*;
use gst::prelude::*;

fn harness() -> gst_check::Harness {
    init();
    let mut h = gst_check::Harness::with_element(&dec_element(), Some("sink"), Some("src"));
    h.set_src_caps(coded_caps());
    h
}

/// Output buffers as (pts, samples).
fn outputs(h: &mut gst_check::Harness) -> Vec<(gst::ClockTime, Vec<f32>)> {
    pull_all(h)
        .iter()
        .map(|b| {
            let pcm = buffer_f32(b);
            assert_eq!(
                b.duration(),
                Some(time_of(pcm.len() as u64)),
                "duration from the sample count"
            );
            (b.pts().unwrap(), pcm)
        })
        .collect()
}

/// Checks the buffers tile the timeline from `start` without gaps; returns all samples.
fn contiguous(outs: &[(gst::ClockTime, Vec<f32>)], start: u64) -> Vec<f32> {
    let mut at = start;
    let mut all = Vec::new();
    for (pts, pcm) in outs {
        assert_eq!(*pts, time_of(at), "buffer at sample {at}");
        at += pcm.len() as u64;
        all.extend_from_slice(pcm);
    }
    all
}

fn frames(n: usize, seed: u64) -> Vec<Vec<u16>> {
    ref_codes(&signal(n * HOP, seed), 8)
}

#[test]
fn decodes_like_the_core_with_packet_timestamps() {
    let f = frames(6, 20);
    let mut h = harness();
    for (k, c) in f.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    let outs = outputs(&mut h);
    assert_eq!(outs.len(), 6);
    assert_eq!(contiguous(&outs, 0), ref_decode(&f));
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let info = gst_audio::AudioInfo::from_caps(&caps).unwrap();
    assert_eq!(
        (info.format(), info.rate(), info.channels()),
        (gst_audio::AudioFormat::F32le, 16000, 1)
    );
}

#[test]
fn s16_output_when_downstream_wants_it() {
    init();
    let mut h = gst_check::Harness::with_element(&dec_element(), Some("sink"), Some("src"));
    h.set_sink_caps_str(RAW_S16);
    h.set_src_caps(coded_caps());
    let f = frames(2, 21);
    for (k, c) in f.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    let want = ref_decode(&f);
    let got: Vec<i16> = pull_all(&mut h)
        .iter()
        .flat_map(|b| {
            let m = b.map_readable().unwrap();
            m.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(*g, (w * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
    }
}

/// `audiotestsrc`-style input through `funcodecenc ! funcodecdec`: the output has the input's
/// sample count and timeline, and is the core's decode of the core's codes, sample for sample.
#[test]
fn encoder_decoder_pair_lines_up_sample_for_sample() {
    init();
    let m = model_str();
    let mut h =
        gst_check::Harness::new_parse(&format!("funcodecenc model={m} ! funcodecdec model={m}"));
    h.set_src_caps_str(RAW_F32);
    let pcm = signal(16100, 22);
    push_pcm(&mut h, &pcm, &[441, 1000, 3, 2048], 0);
    h.push_event(gst::event::Eos::new());
    let out = contiguous(&outputs(&mut h), 0);
    assert_eq!(out.len(), 16100);
    let mut want = ref_decode(&ref_codes(&pcm, 8));
    want.truncate(16100);
    assert_eq!(out, want);
    // Latency of the pair: the encoder's frame, nothing from the causal decoder.
    assert_eq!(h.query_latency(), Some(time_of(640)));
}

#[test]
fn flush_resets_the_decoder() {
    let a = frames(4, 23);
    let b = frames(3, 24);
    let mut h = harness();
    for (k, c) in a.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    pull_all(&mut h);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    for (k, c) in b.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    assert_eq!(contiguous(&outputs(&mut h), 0), ref_decode(&b));
}

#[test]
fn discont_without_a_gap_resets_the_decoder() {
    let f = frames(7, 25);
    let mut h = harness();
    for (k, c) in f.iter().enumerate() {
        let mut b = packet_buffer(&packet(c), k as u64);
        if k == 4 {
            b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(b).unwrap();
    }
    let out = contiguous(&outputs(&mut h), 0);
    let mut want = ref_decode(&f[..4]);
    want.extend(ref_decode(&f[4..]));
    assert_eq!(out, want);
    assert_ne!(out, ref_decode(&f), "the reset must be visible");
}

#[test]
fn discont_with_a_gap_conceals_the_lost_frames() {
    let f = frames(8, 26);
    let mut h = harness();
    for k in [0usize, 1, 2, 3, 4, 7] {
        let mut b = packet_buffer(&packet(&f[k]), k as u64);
        if k == 7 {
            b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(b).unwrap();
    }
    let out = contiguous(&outputs(&mut h), 0);
    use Op::*;
    let want = ref_decode_ops(&[
        Decode(&f[0]),
        Decode(&f[1]),
        Decode(&f[2]),
        Decode(&f[3]),
        Decode(&f[4]),
        Conceal,
        Conceal,
        Decode(&f[7]),
    ]);
    assert_eq!(out, want);
}

#[test]
fn a_missing_frame_is_concealed_not_silenced() {
    let f = frames(6, 27);
    let mut h = harness();
    for k in [0usize, 1, 2, 4, 5] {
        h.push(packet_buffer(&packet(&f[k]), k as u64)).unwrap();
    }
    let outs = outputs(&mut h);
    let out = contiguous(&outs, 0);
    assert_eq!(out.len(), 6 * HOP);
    use Op::*;
    let want = ref_decode_ops(&[
        Decode(&f[0]),
        Decode(&f[1]),
        Decode(&f[2]),
        Conceal,
        Decode(&f[4]),
        Decode(&f[5]),
    ]);
    assert_eq!(out, want);
    check_concealment(&out, 3);
}

/// The concealed frame `k` of `out` is neither silence nor a click: it carries energy comparable
/// to the decoded frames, and the sample steps at its edges are no larger than the steps inside
/// decoded audio.
fn check_concealment(out: &[f32], k: usize) {
    let frame = |i: usize| &out[i * HOP..(i + 1) * HOP];
    let decoded_rms = rms(frame(k - 1));
    let concealed_rms = rms(frame(k));
    assert!(
        concealed_rms > 0.1 * decoded_rms,
        "concealment is near silence: rms {concealed_rms} vs {decoded_rms}"
    );
    let max_step_inside = out[(k - 1) * HOP..k * HOP]
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max);
    for edge in [k * HOP, (k + 1) * HOP] {
        let step = (out[edge] - out[edge - 1]).abs();
        assert!(
            step <= 1.5 * max_step_inside,
            "click at sample {edge}: step {step}, largest step in decoded audio {max_step_inside}"
        );
    }
}

#[test]
fn a_gap_event_is_concealed() {
    let f = frames(6, 28);
    let mut h = harness();
    for (k, c) in f.iter().enumerate().take(3) {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    assert!(
        h.push_event(
            gst::event::Gap::builder(time_of(3 * 640))
                .duration(time_of(640))
                .build()
        )
    );
    for (k, c) in f.iter().enumerate().skip(4) {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    let out = contiguous(&outputs(&mut h), 0);
    use Op::*;
    let want = ref_decode_ops(&[
        Decode(&f[0]),
        Decode(&f[1]),
        Decode(&f[2]),
        Conceal,
        Decode(&f[4]),
        Decode(&f[5]),
    ]);
    assert_eq!(out, want);
    check_concealment(&out, 3);
}

#[test]
fn corrupt_and_truncated_packets_are_concealed_with_a_warning() {
    let f = frames(6, 29);
    let mut h = harness();
    let bus = bus_of(&h);
    for (k, c) in f.iter().enumerate() {
        let mut p = packet(c);
        match k {
            2 => p[3] ^= 0x10,  // a flipped bit: CRC mismatch
            4 => p.truncate(4), // truncated
            _ => {}
        }
        h.push(packet_buffer(&p, k as u64)).unwrap();
    }
    // A buffer of garbage where frame 6 should be.
    h.push(packet_buffer(&[0x11, 0x22, 0x33], 6)).unwrap();
    let out = contiguous(&outputs(&mut h), 0);
    use Op::*;
    let want = ref_decode_ops(&[
        Decode(&f[0]),
        Decode(&f[1]),
        Conceal,
        Decode(&f[3]),
        Conceal,
        Decode(&f[5]),
        Conceal,
    ]);
    assert_eq!(out, want);
    let warnings = messages(&bus, gst::MessageType::Warning);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("corrupt frame") && w.contains("concealed"))
    );
    assert!(messages(&bus, gst::MessageType::Error).is_empty());
}

#[test]
fn a_caps_change_with_new_n_q_keeps_the_decoder_state() {
    let pcm = signal(6 * HOP, 30);
    let mut enc = funcodec_core::StreamEncoder::new(model(), 8).unwrap();
    let mut f = Vec::new();
    for (i, chunk) in pcm.chunks(HOP).enumerate() {
        enc.set_n_q(if i < 3 { 8 } else { 2 }).unwrap();
        enc.push(chunk, |c| {
            f.push(c.to_vec());
            Ok(())
        })
        .unwrap();
    }
    let mut h = harness();
    for (k, c) in f.iter().enumerate() {
        if k == 3 {
            let h0 = header();
            h.set_src_caps(gstfuncodec::common::caps_for(
                &h0,
                &h0.encode(),
                Some(2),
                Some(0),
            ));
        }
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    assert_eq!(contiguous(&outputs(&mut h), 0), ref_decode(&f));
}

#[test]
fn an_in_band_header_is_accepted_and_skipped() {
    let f = frames(2, 31);
    let mut h = harness();
    h.push(gst::Buffer::from_slice(header().encode())).unwrap();
    for (k, c) in f.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64)).unwrap();
    }
    assert_eq!(contiguous(&outputs(&mut h), 0), ref_decode(&f));
}

fn caps_error(caps: gst::Caps) -> String {
    init();
    let mut h = gst_check::Harness::with_element(&dec_element(), Some("sink"), Some("src"));
    let bus = bus_of(&h);
    h.set_src_caps(caps);
    assert!(h.push(packet_buffer(&packet(&[1, 2]), 0)).is_err());
    let errors = messages(&bus, gst::MessageType::Error);
    assert!(!errors.is_empty(), "no error message");
    errors.join("; ")
}

#[test]
fn wrong_caps_are_refused_with_a_clear_error() {
    let e = caps_error(
        gst::Caps::builder("audio/x-funcodec")
            .field("framed", true)
            .field("rate", 8000i32)
            .build(),
    );
    assert!(e.contains("8000 Hz") && e.contains("16000 Hz"), "{e}");

    let e = caps_error(
        gst::Caps::builder("audio/x-funcodec")
            .field("framed", true)
            .field("model-hash", "00112233445566778899aabbccddeeff")
            .build(),
    );
    assert!(e.contains("00112233445566778899aabbccddeeff"), "{e}");

    // A stream header of another model.
    let mut other = header();
    other.model_hash = [7; 16];
    other.model_id = "another-model".into();
    let e = caps_error(gstfuncodec::common::caps_for(
        &other,
        &other.encode(),
        None,
        None,
    ));
    assert!(
        e.contains("another-model") && e.contains("mean nothing"),
        "{e}"
    );

    // A corrupt stream header.
    let mut bytes = header().encode();
    bytes[10] ^= 1;
    let e = caps_error(gstfuncodec::common::caps_for(&header(), &bytes, None, None));
    assert!(e.contains("corrupt streamheader"), "{e}");
}

#[test]
fn an_in_band_header_of_another_model_is_an_error() {
    let mut h = harness();
    let bus = bus_of(&h);
    let mut other = header();
    other.model_hash = [9; 16];
    assert!(h.push(gst::Buffer::from_slice(other.encode())).is_err());
    let errors = messages(&bus, gst::MessageType::Error);
    assert!(
        errors.iter().any(|e| e.contains("mean nothing")),
        "{errors:?}"
    );
}

#[test]
fn decoder_latency_adds_nothing_for_a_causal_model() {
    let mut h = harness();
    h.set_upstream_latency(time_of(640));
    h.push(packet_buffer(&packet(&frames(1, 32)[0]), 0))
        .unwrap();
    assert_eq!(h.query_latency(), Some(time_of(640)));
}

/// A non-causal model streams windowed: the decoder returns each frame's audio late but stamped
/// with its own packet's time, and the pair's output still covers the input exactly.
#[test]
fn windowed_pair_keeps_timestamps_and_length() {
    init();
    let m = noncausal_dir().to_string_lossy().into_owned();
    let mut h =
        gst_check::Harness::new_parse(&format!("funcodecenc model={m} ! funcodecdec model={m}"));
    h.set_src_caps_str(RAW_F32);
    let pcm = signal(20 * HOP + 123, 33);
    push_pcm(&mut h, &pcm, &[1000], 0);
    // 8 frames from the encoder (frame + 7 of look-ahead), 7 more from the decoder's window.
    assert_eq!(h.query_latency(), Some(time_of(15 * 640)));
    h.push_event(gst::event::Eos::new());
    let out = contiguous(&outputs(&mut h), 0);
    assert_eq!(out.len(), pcm.len());
    // The core's own windowed stream gives the same samples.
    let cm = funcodec_core::CodecModel::load(noncausal_dir()).unwrap();
    let n_q = cm.num_quantizers();
    let codes =
        funcodec_core::stream::encode_all(&cm, &pcm, n_q, funcodec_core::StreamMode::Auto).unwrap();
    let mut want =
        funcodec_core::stream::decode_all(&cm, &codes, funcodec_core::StreamMode::Auto).unwrap();
    want.truncate(pcm.len());
    assert_eq!(out, want);
}

/// A GAP before any caps (a live source starting silent) is no loss to conceal: no output, no
/// error, and the stream decodes normally once caps and packets come.
#[test]
fn a_gap_before_caps_is_harmless() {
    init();
    let mut h = gst_check::Harness::with_element(&dec_element(), Some("sink"), Some("src"));
    let bus = bus_of(&h);
    assert!(h.push_event(gst::event::StreamStart::new("gap-first")));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    h.push_event(
        gst::event::Gap::builder(gst::ClockTime::ZERO)
            .duration(time_of(640))
            .build(),
    );
    assert!(pull_all(&mut h).is_empty());
    h.set_src_caps(coded_caps());
    let f = frames(2, 34);
    for (k, c) in f.iter().enumerate() {
        h.push(packet_buffer(&packet(c), k as u64 + 1)).unwrap();
    }
    assert_eq!(contiguous(&outputs(&mut h), 640), ref_decode(&f));
    assert!(messages(&bus, gst::MessageType::Error).is_empty());
}

/// Windowed decoding (look-ahead: audio comes out frames later) with a lost frame: every frame's
/// audio keeps its own packet's time, the concealed one included, and the output is the core's.
#[test]
fn windowed_decoder_conceals_and_keeps_the_timeline() {
    init();
    let cm = std::sync::Arc::new(funcodec_core::CodecModel::load(noncausal_dir()).unwrap());
    let n_q = cm.num_quantizers();
    let pcm = signal(12 * HOP, 35);
    let mut enc = funcodec_core::StreamEncoder::new(cm.clone(), n_q).unwrap();
    let mut f: Vec<Vec<u16>> = Vec::new();
    let mut sink = |c: &[u16]| {
        f.push(c.to_vec());
        Ok(())
    };
    enc.push(&pcm, &mut sink).unwrap();
    enc.flush(&mut sink).unwrap();
    assert_eq!(f.len(), 12);

    let h0 = gstfuncodec::common::header_for(&cm);
    let el = gst::ElementFactory::make("funcodecdec")
        .property("model", noncausal_dir())
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps(gstfuncodec::common::caps_for(
        &h0,
        &h0.encode(),
        Some(n_q),
        None,
    ));
    for (k, c) in f.iter().enumerate() {
        if k == 5 {
            assert!(
                h.push_event(
                    gst::event::Gap::builder(time_of(5 * 640))
                        .duration(time_of(640))
                        .build()
                )
            );
            continue;
        }
        let mut bytes = Vec::new();
        bitstream_encode(&h0, c, &mut bytes);
        h.push(packet_buffer(&bytes, k as u64)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let out = contiguous(&outputs(&mut h), 0);
    assert_eq!(out.len(), 12 * HOP);

    let mut dec = funcodec_core::StreamDecoder::new(cm).unwrap();
    let mut want = Vec::new();
    let mut sink = |p: &[f32]| {
        want.extend_from_slice(p);
        Ok(())
    };
    for (k, c) in f.iter().enumerate() {
        if k == 5 {
            dec.conceal(&mut sink).unwrap();
        } else {
            dec.push_frame(c, &mut sink).unwrap();
        }
    }
    dec.flush(&mut sink).unwrap();
    assert_eq!(out, want);
}

fn bitstream_encode(h: &funcodec_core::bitstream::StreamHeader, codes: &[u16], out: &mut Vec<u8>) {
    funcodec_core::bitstream::encode_frame(h, codes, None, out).unwrap();
}

/// A windowed decoder reset while it still holds frames (the timestamps go back: a new stream
/// without a flush) drops their audio and finishes their input buffers: no frame accounting
/// goes wrong (the base class warns on the bus if it does), the new stream decodes in full.
#[test]
fn windowed_reset_with_frames_held() {
    init();
    let cm = std::sync::Arc::new(funcodec_core::CodecModel::load(noncausal_dir()).unwrap());
    let n_q = cm.num_quantizers();
    let f = funcodec_core::stream::encode_all(
        &cm,
        &signal(10 * HOP, 36),
        n_q,
        funcodec_core::StreamMode::Auto,
    )
    .unwrap();
    let h0 = gstfuncodec::common::header_for(&cm);
    let el = gst::ElementFactory::make("funcodecdec")
        .property("model", noncausal_dir())
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    let bus = bus_of(&h);
    h.set_src_caps(gstfuncodec::common::caps_for(
        &h0,
        &h0.encode(),
        Some(n_q),
        None,
    ));
    for _ in 0..2 {
        for k in 0..f.frames {
            let mut bytes = Vec::new();
            bitstream_encode(&h0, f.frame(k), &mut bytes);
            h.push(packet_buffer(&bytes, k as u64)).unwrap();
        }
    }
    // The base class holds exactly the input buffers whose audio the core still holds: 10 in,
    // 4 out, 6 pending (none left over from the first stream).
    let dec = h
        .element()
        .unwrap()
        .downcast::<gst_audio::AudioDecoder>()
        .unwrap();
    assert_eq!(gst_audio::prelude::AudioDecoderExt::delay(&dec), 6);
    h.push_event(gst::event::Eos::new());
    assert_eq!(gst_audio::prelude::AudioDecoderExt::delay(&dec), 0);
    let outs = outputs(&mut h);
    // 8 frames in, the first block of 4 out; the 6 held are dropped at the reset.
    let restart = 1 + outs[1..]
        .iter()
        .position(|(pts, _)| *pts == gst::ClockTime::ZERO)
        .expect("the second stream starts again at 0");
    assert_eq!(contiguous(&outs[..restart], 0).len(), 4 * HOP);
    let second = contiguous(&outs[restart..], 0);
    let want = funcodec_core::stream::decode_all(&cm, &f, funcodec_core::StreamMode::Auto).unwrap();
    assert_eq!(second, want);
    let warnings = messages(&bus, gst::MessageType::Warning);
    assert!(warnings.is_empty(), "{warnings:?}");
}
