//! Packet loss over real RTP on loopback, with stock elements: the receiver's jitter buffer reports
//! the lost packets, and `funcodecdec` conceals them so that the timeline keeps every sample.
//! Packets are dropped deterministically by a pad probe on the receiver's `udpsrc`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::prelude::*;

/// The frames whose packets the receiver loses.
const DROPPED: [u32; 3] = [10, 11, 30];

/// RTP clock ticks (rtpgstpay's 90 kHz) per 40 ms frame.
const TICKS_PER_FRAME: u32 = 3600;

/// What the receiver's probe needs of an RTP packet from `rtpgstpay`: its timestamp, and whether it
/// carries a buffer (ETYPE 0, the second byte of the payload header that follows the 12-byte RTP
/// header and its CSRCs; events have their own type).
fn rtp_info(rtp: &[u8]) -> Option<(u32, bool)> {
    let p = 12 + usize::from(*rtp.first()? & 0x0f) * 4;
    let ts = u32::from_be_bytes(rtp.get(4..8)?.try_into().ok()?);
    Some((ts, *rtp.get(p + 1)? == 0))
}

const SOURCE: &str = "audiotestsrc wave=sine freq=220 num-buffers=100 samplesperbuffer=320 ! \
                      audioconvert ! audioresample ! funcodecenc bitrate=2000";

fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// Collects the F32 samples leaving the element named `name`.
fn collect(p: &gst::Pipeline, name: &str) -> Arc<Mutex<Vec<f32>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let pad = p.by_name(name).unwrap().static_pad("src").unwrap();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer() {
            let map = buf.map_readable().unwrap();
            let mut v = sink.lock().unwrap();
            v.extend(
                map.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        gst::PadProbeReturn::Ok
    });
    out
}

/// Runs a pipeline until EOS (or fails on an error message).
fn run_to_eos(p: &gst::Pipeline, timeout: Duration) {
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("no EOS in time");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{}: {:?}", e.error(), e.debug());
    }
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn lost_rtp_packets_are_concealed_and_the_timeline_kept() {
    init();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rx = pipeline(&format!(
        "udpsrc name=src address=127.0.0.1 port={port} \
         caps=\"application/x-rtp,media=application,clock-rate=90000,encoding-name=X-GST\" ! \
         rtpjitterbuffer latency=100 do-lost=true ! rtpgstdepay ! \
         funcodecdec name=dec model={m} ! audio/x-raw,format=F32LE ! fakesink",
        m = model_str()
    ));
    let received = collect(&rx, "dec");
    // Drop by RTP timestamp: frame f's packet is stamped f * 40 ms after the stream's first packet.
    let first_ts = Arc::new(Mutex::new(None::<u32>));
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let (ts0, lost) = (first_ts.clone(), dropped.clone());
    rx.by_name("src")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buf) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some((ts, is_buffer)) = rtp_info(&buf.map_readable().unwrap()) else {
                return gst::PadProbeReturn::Ok;
            };
            let base = *ts0.lock().unwrap().get_or_insert(ts);
            let frame = ts.wrapping_sub(base) / TICKS_PER_FRAME;
            if is_buffer && DROPPED.contains(&frame) {
                lost.lock().unwrap().push(frame);
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    rx.set_state(gst::State::Playing).unwrap();

    let tx = pipeline(&format!(
        "{} model={} ! rtpgstpay config-interval=1 ! udpsink host=127.0.0.1 port={port}",
        SOURCE.replace("audiotestsrc ", "audiotestsrc is-live=true "),
        model_str()
    ));
    run_to_eos(&tx, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(400));
    // The sender's EOS does not cross UDP: end the receiver like Ctrl-C on `gst-launch-1.0 -e`.
    rx.send_event(gst::event::Eos::new());
    run_to_eos(&rx, Duration::from_secs(20));
    assert_eq!(
        *dropped.lock().unwrap(),
        DROPPED,
        "the packets of these frames were dropped"
    );

    // The same source through the codec, without the network.
    let local = pipeline(&format!(
        "{SOURCE} model={m} ! funcodecdec name=dec model={m} ! audio/x-raw,format=F32LE ! fakesink",
        m = model_str()
    ));
    let want = collect(&local, "dec");
    run_to_eos(&local, Duration::from_secs(30));

    let (got, want) = (received.lock().unwrap(), want.lock().unwrap());
    assert_eq!(want.len(), 100 * 320);
    assert_eq!(
        got.len(),
        want.len(),
        "every sample of the timeline is there"
    );
    let differs: Vec<usize> = (0..want.len() / HOP)
        .filter(|&f| got[f * HOP..(f + 1) * HOP] != want[f * HOP..(f + 1) * HOP])
        .collect();
    // Frames before the first loss are bit-exact; lost frames are concealed, not silenced.
    // After a loss the decoder's recurrent state has taken the concealed path, so later frames
    // are close to, not equal to, the lossless decode.
    let first = *differs
        .first()
        .expect("the dropped packets changed nothing");
    assert_eq!(
        first, DROPPED[0] as usize,
        "first differing frame: {differs:?}"
    );
    for &f in &differs {
        let energy: f32 = got[f * HOP..(f + 1) * HOP].iter().map(|v| v * v).sum();
        assert!(energy > 0.0, "frame {f} is silence, not concealment");
    }
    assert!(
        got.iter().all(|v| v.is_finite() && v.abs() <= 1.0),
        "concealment produced out-of-range samples"
    );
    println!(
        "rtp loss: packets of frames {DROPPED:?} dropped; {} of {} frames differ from the \
         lossless decode, the first at frame {first}",
        differs.len(),
        want.len() / HOP
    );
}
