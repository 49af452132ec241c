//! `funcodecparse` and the typefinder: `.fcdc` byte streams (as the CLI writes them) into
//! timestamped packets; corrupt bytes; a file through parse → decode gives the source's length.

mod common;

use common::*;
use funcodec_core::bitstream::{self, StreamHeader};
use gst::prelude::*;

/// A CLI-style stream: header with total_samples, one packet per frame.
fn cli_stream(samples: usize, seed: u64) -> (Vec<f32>, Vec<Vec<u16>>, Vec<u8>) {
    let pcm = signal(samples, seed);
    let codes = ref_codes(&pcm, 8);
    let h = StreamHeader {
        total_samples: Some(samples as u64),
        level: Some(0.25),
        ..header()
    };
    let mut bytes = Vec::new();
    bitstream::write_stream(&h, &codes, &mut bytes).unwrap();
    (pcm, codes, bytes)
}

fn push_bytes(h: &mut gst_check::Harness, bytes: &[u8], sizes: &[usize]) {
    let mut i = 0;
    let mut k = 0;
    while i < bytes.len() {
        let n = sizes[k % sizes.len()].min(bytes.len() - i);
        h.push(gst::Buffer::from_slice(bytes[i..i + n].to_vec()))
            .unwrap();
        i += n;
        k += 1;
    }
}

/// Byte input, as from `filesrc`.
fn bytes_segment(h: &mut gst_check::Harness) {
    let seg = gst::FormattedSegment::<gst::format::Bytes>::new();
    assert!(h.push_event(gst::event::Segment::new(&seg)));
}

fn parse_harness() -> gst_check::Harness {
    init();
    let mut h = gst_check::Harness::new("funcodecparse");
    h.set_src_caps_str("audio/x-funcodec");
    bytes_segment(&mut h);
    h
}

#[test]
fn splits_a_cli_stream_into_timestamped_packets() {
    let (_, codes, bytes) = cli_stream(16100, 40);
    let mut h = parse_harness();
    push_bytes(&mut h, &bytes, &[1, 5, 100, 7, 3]);
    h.push_event(gst::event::Eos::new());
    let bufs = pull_all(&mut h);
    let header_len = StreamHeader::decode(&bytes).unwrap().1;
    assert_eq!(
        bufs[0].map_readable().unwrap().as_slice(),
        &bytes[..header_len]
    );
    assert!(bufs[0].flags().contains(gst::BufferFlags::HEADER));
    let packets = &bufs[1..];
    assert_eq!(packets.len(), 26);
    for (k, p) in packets.iter().enumerate() {
        assert_eq!(unpack(&p.map_readable().unwrap()), codes[k], "packet {k}");
        assert_eq!(p.pts(), Some(time_of(k as u64 * 640)), "pts {k}");
        assert_eq!(p.duration(), Some(time_of(640)), "duration {k}");
        let clip = p.meta::<gst_audio::AudioClippingMeta>().map(|m| m.end());
        if k == 25 {
            assert_eq!(
                clip,
                Some(gst::GenericFormattedValue::Default(Some(
                    gst::format::Default::from_u64(540)
                )))
            );
        } else {
            assert!(clip.is_none());
        }
    }
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let s = caps.structure(0).unwrap();
    assert!(s.get::<bool>("framed").unwrap());
    assert_eq!(s.get::<i32>("n-q").unwrap(), 8);
    assert_eq!(
        s.get::<gst::Fraction>("framerate").unwrap(),
        gst::Fraction::new(25, 1)
    );
    assert_eq!(
        gstfuncodec::common::streamheader_of(&caps).unwrap(),
        bytes[..header_len]
    );
}

#[test]
fn parse_then_decode_gives_the_source_length_and_the_core_output() {
    let (_, codes, bytes) = cli_stream(16100, 41);
    init();
    let m = model_str();
    let mut h = gst_check::Harness::new_parse(&format!("funcodecparse ! funcodecdec model={m}"));
    h.set_src_caps_str("audio/x-funcodec");
    bytes_segment(&mut h);
    push_bytes(&mut h, &bytes, &[4096]);
    h.push_event(gst::event::Eos::new());
    let out: Vec<f32> = pull_all(&mut h)
        .iter()
        .flat_map(|b| buffer_f32(b))
        .collect();
    let mut want = ref_decode(&codes);
    want.truncate(16100);
    assert_eq!(out, want);
}

#[test]
fn corrupt_packets_pass_on_and_garbage_is_skipped() {
    let (_, codes, bytes) = cli_stream(8 * 640, 42);
    let header_len = StreamHeader::decode(&bytes).unwrap().1;
    let plen = bytes[header_len..].len() / 8;
    let mut bad = bytes.clone();
    // Payload bit flipped in packet 2 (its first byte intact): passed on, one frame.
    bad[header_len + 2 * plen + 3] ^= 0x04;
    // Garbage (no sync bit) inserted before packet 5.
    let at = header_len + 5 * plen;
    bad.splice(at..at, [0x01, 0x02, 0x7f]);
    let mut h = parse_harness();
    let bus = bus_of(&h);
    push_bytes(&mut h, &bad, &[13]);
    h.push_event(gst::event::Eos::new());
    let packets: Vec<Vec<u8>> = pull_all(&mut h)[1..]
        .iter()
        .map(|b| b.map_readable().unwrap().to_vec())
        .collect();
    assert_eq!(packets.len(), 8);
    for (k, p) in packets.iter().enumerate() {
        if k == 2 {
            assert!(bitstream::decode_frame(&header(), p).is_err());
        } else {
            assert_eq!(unpack(p), codes[k], "packet {k}");
        }
    }
    let warnings = messages(&bus, gst::MessageType::Warning);
    assert!(
        warnings.iter().any(|w| w.contains("lost sync")),
        "{warnings:?}"
    );
}

#[test]
fn not_an_fcdc_stream_is_an_error() {
    let mut h = parse_harness();
    let bus = bus_of(&h);
    let _ = h.push(gst::Buffer::from_slice(b"RIFF\0\0\0\0WAVEfmt ".to_vec()));
    h.push_event(gst::event::Eos::new());
    let errors = messages(&bus, gst::MessageType::Error);
    assert!(
        errors.iter().any(|e| e.contains("not a FunCodec stream")),
        "{errors:?}"
    );
}

#[test]
fn typefinder_recognises_fcdc() {
    init();
    let (_, _, bytes) = cli_stream(1000, 43);
    let (caps, prob) =
        gst_base::functions::type_find_helper_for_data(None::<&gst::Object>, &bytes).unwrap();
    assert_eq!(caps.structure(0).unwrap().name(), "audio/x-funcodec");
    assert_eq!(prob, gst::TypeFindProbability::Maximum);
    assert!(
        gst_base::functions::type_find_helper_for_data(None::<&gst::Object>, b"RIFF1234WAVEfmt ")
            .map_or(true, |(c, _)| c.structure(0).unwrap().name()
                != "audio/x-funcodec")
    );
}

/// A forged header (valid CRC, absurd sample count) does not upset the parser: packets still come
/// out, with their timestamps.
#[test]
fn a_forged_sample_count_is_harmless() {
    let (_, codes, _) = cli_stream(3 * 640, 44);
    let h = StreamHeader {
        total_samples: Some(u64::MAX),
        ..header()
    };
    let mut bytes = h.encode();
    for c in &codes {
        bitstream::encode_frame(&h, c, None, &mut bytes).unwrap();
    }
    let mut h = parse_harness();
    push_bytes(&mut h, &bytes, &[4096]);
    h.push_event(gst::event::Eos::new());
    let bufs = pull_all(&mut h);
    assert_eq!(bufs.len(), 4);
    assert_eq!(bufs[3].pts(), Some(time_of(2 * 640)));
}

/// A pipeline's pcm output: each buffer's timestamp, DISCONT flag and samples.
type Collected = std::sync::Arc<std::sync::Mutex<Vec<(gst::ClockTime, bool, Vec<f32>)>>>;

fn collect_pcm(p: &gst::Pipeline, name: &str) -> Collected {
    let out = Collected::default();
    let sink = out.clone();
    let pad = p.by_name(name).unwrap().static_pad("src").unwrap();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer() {
            let map = buf.map_readable().unwrap();
            let pcm = map
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let discont = buf.flags().contains(gst::BufferFlags::DISCONT);
            sink.lock()
                .unwrap()
                .push((buf.pts().unwrap(), discont, pcm));
        }
        gst::PadProbeReturn::Ok
    });
    out
}

fn wait_bus(p: &gst::Pipeline, what: gst::MessageType) {
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[what, gst::MessageType::Error],
        )
        .expect("no message in time");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{}: {:?}", e.error(), e.debug());
    }
}

/// Seeking in a `.fcdc` file, as a player does: the duration is known (CLI file: from the header;
/// element-written file: from the file size, packets being of one size), a flushing accurate seek
/// lands on the exact sample, and the output then runs contiguously to the end.
#[test]
fn seeking_in_a_file_is_sample_exact() {
    init();
    let dir = scratch("gst-seek");
    // A CLI-style file (total_samples in the header, 2.5 s, not a whole number of frames) and
    // one written by the encoder element (no total_samples; 3 s).
    let (_, _, bytes) = cli_stream(40_000, 41);
    let cli_file = dir.join("cli.fcdc");
    std::fs::write(&cli_file, bytes).unwrap();
    let gst_file = dir.join("element.fcdc");
    let enc = gst::parse::launch(&format!(
        "audiotestsrc wave=sine freq=300 num-buffers=150 samplesperbuffer=320 ! {RAW_F32} ! \
         funcodecenc model={} bitrate=2000 ! filesink location={}",
        model_str(),
        gst_file.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    enc.set_state(gst::State::Playing).unwrap();
    wait_bus(&enc, gst::MessageType::Eos);
    enc.set_state(gst::State::Null).unwrap();

    for (file, total) in [(&cli_file, 40_000u64), (&gst_file, 48_000)] {
        let p = gst::parse::launch(&format!(
            "filesrc location={} ! funcodecparse ! funcodecdec name=dec model={} ! \
             audio/x-raw,format=F32LE ! fakesink sync=false",
            file.display(),
            model_str()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let out = collect_pcm(&p, "dec");
        p.set_state(gst::State::Paused).unwrap();
        wait_bus(&p, gst::MessageType::AsyncDone);
        let duration = p.query_duration::<gst::ClockTime>();
        assert_eq!(
            duration,
            Some(gst::ClockTime::from_nseconds(total * 62_500)),
            "{}",
            file.display()
        );

        // 1.01 s: inside a frame, so the decoder's output is clipped to the exact sample.
        let target = gst::ClockTime::from_mseconds(1010);
        p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, target)
            .unwrap();
        wait_bus(&p, gst::MessageType::AsyncDone);
        p.set_state(gst::State::Playing).unwrap();
        wait_bus(&p, gst::MessageType::Eos);
        p.set_state(gst::State::Null).unwrap();

        // What follows the seek: from the last DISCONT buffer on (the decoder marks the first
        // buffer after a flush).
        let all = out.lock().unwrap();
        let from = all.iter().rposition(|b| b.1).expect("a DISCONT buffer");
        let bufs = &all[from..];
        let first = bufs[0].0;
        assert_eq!(
            first,
            target,
            "{}: first output after the seek",
            file.display()
        );
        let mut next = first;
        let mut samples = 0u64;
        for (pts, _, pcm) in bufs {
            assert_eq!(*pts, next, "{}: a gap or overlap", file.display());
            next = *pts + gst::ClockTime::from_nseconds(pcm.len() as u64 * 62_500);
            samples += pcm.len() as u64;
        }
        assert_eq!(
            samples,
            total - 16_160,
            "{}: samples after the seek",
            file.display()
        );
    }
}
