//! The built `.clap` bundle in an in-process CLAP host (clack-host), the way a DAW drives it:
//! scan, ports, parameters, latency, state, processing at several rates and block sizes,
//! alignment of the difference signal, reset / reactivation, real-time pacing, and the default
//! model's speed at 48 kHz in 64-sample blocks.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use clack_extensions::audio_ports::{AudioPortInfoBuffer, PluginAudioPorts};
use clack_extensions::audio_ports_config::{AudioPortsConfigBuffer, PluginAudioPortsConfig};
use clack_extensions::params::{ParamInfoBuffer, ParamInfoFlags, PluginParams};
use clack_host::factory::plugin::PluginFactory;
use clack_host::prelude::*;
use common::*;
use funcodec_monitor::dsp::codec::CodecSource;
use funcodec_monitor::dsp::{LatencyPlan, plan_for};
use funcodec_monitor::params::{self, PARAMS};

/// Timing-sensitive and heavy tests run one at a time (the machine has 2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry() -> PluginEntry {
    load_bundle(&bundles().0)
}

fn stereo(x: &[f32]) -> Vec<Vec<f32>> {
    // Right channel: a different signal (reversed), so channel mix-ups show.
    vec![x.to_vec(), x.iter().rev().copied().collect()]
}

/// max |out - in delayed by `lat`| relative to the input RMS, over `from..`.
fn residual_db(out: &[f32], input: &[f32], lat: usize, from: usize) -> f64 {
    let n = out.len();
    let err: Vec<f32> = (from.max(lat)..n)
        .map(|i| out[i] - input[i - lat])
        .collect();
    db(rms(&err) / rms(&input[..n - lat]))
}

#[test]
fn scan_descriptor_ports_and_parameters() {
    let (clap, _) = bundles();
    let t = Instant::now();
    let entry = load_bundle(&clap);
    let factory = entry
        .get_factory::<PluginFactory>()
        .expect("plugin factory");
    assert_eq!(factory.plugin_count(), 1);
    let d = factory.plugin_descriptor(0).expect("descriptor");
    let scan = t.elapsed();
    println!("scan (load library, init entry, read descriptor): {scan:?}");
    assert!(
        scan < Duration::from_millis(100),
        "scan took {scan:?} (hosts expect < 100 ms)"
    );
    assert_eq!(d.id().unwrap().to_bytes(), b"rs.funcodec.monitor");
    assert_eq!(d.name().unwrap().to_bytes(), b"FunCodec Monitor");
    let features: Vec<_> = d.features().map(|f| f.to_bytes().to_vec()).collect();
    assert!(features.contains(&b"audio-effect".to_vec()));

    let mut r = Runner::new(&entry);
    let h = r.plugin.plugin_handle();
    let ports = h.get_extension::<PluginAudioPorts>().expect("audio ports");
    assert_eq!(ports.count(&h, true), 1);
    assert_eq!(ports.count(&h, false), 1);
    let mut buf = AudioPortInfoBuffer::new();
    let info = ports.get(&h, 0, false, &mut buf).unwrap();
    assert_eq!(info.channel_count, 2);
    let cfgs = h
        .get_extension::<PluginAudioPortsConfig>()
        .expect("ports config");
    assert_eq!(cfgs.count(&h), 2);
    let mut cbuf = AudioPortsConfigBuffer::new();
    let mono = cfgs.get(&h, 1, &mut cbuf).unwrap();
    assert_eq!(mono.main_input.unwrap().channel_count, 1);
    r.select_channels(1);
    let h = r.plugin.plugin_handle();
    let ports = h.get_extension::<PluginAudioPorts>().unwrap();
    let mut buf = AudioPortInfoBuffer::new();
    assert_eq!(ports.get(&h, 0, true, &mut buf).unwrap().channel_count, 1);

    let p = h.get_extension::<PluginParams>().expect("params");
    assert_eq!(p.count(&h) as usize, PARAMS.len());
    for (i, spec) in PARAMS.iter().enumerate() {
        let mut ib = ParamInfoBuffer::new();
        let info = p.get_info(&h, i as u32, &mut ib).expect("param info");
        assert_eq!(info.id.get(), spec.id);
        assert_eq!(info.name, spec.name.as_bytes());
        assert_eq!((info.min_value, info.max_value), (spec.min, spec.max));
        assert_eq!(info.default_value, spec.default);
        assert_eq!(
            p.get_value(&h, info.id),
            Some(spec.default),
            "{}",
            spec.name
        );
        assert_eq!(
            info.flags.contains(ParamInfoFlags::IS_READONLY),
            spec.id == params::STATUS
        );
        assert_eq!(
            info.flags.contains(ParamInfoFlags::IS_BYPASS),
            spec.id == params::BYPASS
        );
        // Text round trip through the host API.
        let v = spec.sanitize(0.3 * spec.min + 0.7 * spec.max);
        let mut tb = [0u8; 128];
        let text = p
            .value_to_text(&h, info.id, v, &mut tb)
            .expect("value_to_text");
        let text = std::ffi::CString::new(text.to_vec()).unwrap();
        let back = p.text_to_value(&h, info.id, &text).expect("text_to_value");
        assert!(
            (back - v).abs() < 0.051,
            "{}: {v} -> {text:?} -> {back}",
            spec.name
        );
    }
}

/// The identity substitute runs the real resamplers, worker, rings and delay bookkeeping: the
/// codec output must be the input delayed by exactly the reported latency, and the difference
/// signal (input - decoded) must be silence, at every rate, block pattern and channel count.
#[test]
fn latency_is_exact_and_difference_is_silent() {
    let _s = serial();
    let entry = entry();
    let cases: &[(u32, usize, &str)] = &[
        (48_000, 2, "64"),
        (48_000, 2, "varying"),
        (44_100, 2, "varying"),
        (44_100, 1, "64"),
        (88_200, 2, "varying"),
        (96_000, 1, "varying"),
        (16_000, 2, "varying"),
        (22_050, 1, "1"),
    ];
    for &(rate, ch, blocks) in cases {
        let secs = if blocks == "1" { 0.4 } else { 1.5 };
        let x = voice(rate, secs, 6000.0_f64.min(0.4 * rate as f64));
        let input = if ch == 2 { stereo(&x) } else { vec![x.clone()] };
        let (max_block, bl) = match blocks {
            "64" => (64, vec![64; x.len() / 64]),
            "1" => (1, vec![1; x.len()]),
            _ => (4096, varying_blocks(x.len(), 4096, rate as u64)),
        };
        let n: usize = bl.iter().sum();
        let mut lat = 0;
        let mut outs = Vec::new();
        for monitor in [0.0, 2.0] {
            let mut r = Runner::new(&entry);
            r.select_channels(ch);
            r.set_state("@identity", &[(params::MONITOR, monitor)]);
            r.set_offline(true);
            r.activate(rate as f64, max_block as u32);
            lat = r.latency() as usize;
            assert_eq!(r.param(params::STATUS), 0.0);
            outs.push(r.process(&input, &bl, &[]));
        }
        let plan = plan_for(rate as f64, max_block, &Ok(CodecSource::Identity));
        assert_eq!(lat as u32, plan.latency, "{rate} Hz: reported latency");
        for c in 0..ch {
            let codec = &outs[0][c];
            let diff = &outs[1][c];
            let at = residual_db(codec, &input[c][..n], lat, 0);
            let before = residual_db(codec, &input[c][..n], lat - 1, 0);
            let after = residual_db(codec, &input[c][..n], lat + 1, 0);
            let diff_db = db(rms(diff) / rms(&input[c][..n]));
            println!(
                "{rate} Hz, {ch} ch, blocks {blocks}, ch {c}: latency {lat} samples \
                 ({:.1} ms); decoded vs input delayed by latency: {at:.1} dB \
                 (latency-1: {before:.1} dB, +1: {after:.1} dB); difference signal {diff_db:.1} dB",
                lat as f64 * 1000.0 / rate as f64
            );
            assert!(at < -60.0, "{rate} Hz ch {c}: residual {at:.1} dB");
            assert!(
                before > at + 20.0 && after > at + 20.0,
                "latency not at the optimum"
            );
            assert!(
                diff_db < -60.0,
                "{rate} Hz ch {c}: difference {diff_db:.1} dB"
            );
            assert!(diff.iter().all(|v| v.is_finite()));
        }
    }
}

/// At a 16 kHz host rate the resamplers are the identity: the plugin's codec output must be
/// exactly what the streaming core decodes from the same input, delayed by the latency. This
/// checks the whole worker path with the real model, frame alignment included.
#[test]
fn codec_output_matches_the_streaming_core() {
    let _s = serial();
    let entry = entry();
    let x = voice(16_000, 2.0, 6000.0);
    let mut r = Runner::new(&entry);
    r.select_channels(1);
    r.set_state(&tiny_model(), &[(params::BITRATE, 2000.0)]);
    r.set_offline(true);
    r.activate(16_000.0, 512);
    let lat = r.latency() as usize;
    let blocks = varying_blocks(x.len(), 512, 7);
    let out = r.process(std::slice::from_ref(&x), &blocks, &[]);
    drop(r);

    let model = funcodec_core::CodecModel::load(tiny_model())
        .unwrap()
        .shared();
    let n_q = model.n_q_for_bitrate(2000);
    let mut enc = funcodec_core::StreamEncoder::new(model.clone(), n_q).unwrap();
    let mut dec = funcodec_core::StreamDecoder::new(model.clone()).unwrap();
    let mut reference = Vec::new();
    let mut codes = Vec::new();
    enc.push(&x, |c| {
        codes.push(c.to_vec());
        Ok(())
    })
    .unwrap();
    for c in &codes {
        dec.push_frame(c, |p| {
            reference.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
    }
    let n = (x.len() - lat).min(reference.len());
    let max_err = (0..n)
        .map(|i| (out[0][i + lat] - reference[i]).abs())
        .fold(0f32, f32::max);
    println!(
        "16 kHz host, tiny model, 2000 bit/s: plugin vs streaming core over {n} samples: max |err| {max_err:e}"
    );
    assert!(
        max_err < 1e-6,
        "plugin output differs from the core: {max_err}"
    );
    assert!(rms(&out[0][lat..]) > 1e-4, "codec output is silent");
}

#[test]
fn processes_speech_at_several_rates_and_block_sizes() {
    let _s = serial();
    let entry = entry();
    for &(rate, ch, max_block) in &[
        (44_100u32, 2usize, 4096usize),
        (48_000, 1, 64),
        (88_200, 2, 1024),
        (96_000, 2, 4096),
        (16_000, 2, 4096),
    ] {
        let x = voice(rate, 1.5, 6000.0);
        let input = if ch == 2 { stereo(&x) } else { vec![x.clone()] };
        let blocks = varying_blocks(x.len(), max_block, 3 + rate as u64);
        let mut r = Runner::new(&entry);
        r.select_channels(ch);
        r.set_state(&tiny_model(), &[]);
        r.set_offline(true);
        r.activate(rate as f64, max_block as u32);
        let lat = r.latency() as usize;
        let out = r.process(&input, &blocks, &[]);
        assert_eq!(r.param(params::STATUS), 0.0);
        for c in 0..ch {
            assert!(out[c].iter().all(|v| v.is_finite()));
            // Silent until the first frame reaches the output (less the filters' pre-ringing).
            let first = out[c].iter().position(|v| *v != 0.0).unwrap_or(usize::MAX);
            assert!(
                first >= lat / 2,
                "{rate} Hz: output at {first}, latency {lat}"
            );
            let level = db(rms(&out[c][lat..]) / rms(&input[c]));
            println!(
                "{rate} Hz, {ch} ch, blocks <= {max_block}: latency {lat}, decoded level {level:.1} dB re input"
            );
            assert!(
                level > -40.0,
                "decoded output almost silent ({level:.1} dB)"
            );
        }
    }
}

#[test]
fn parameters_act_on_the_sound() {
    let _s = serial();
    let entry = entry();
    let rate = 48_000u32;
    let x = voice(rate, 2.0, 6000.0);
    let input = vec![x.clone()];
    let blocks = vec![256; x.len() / 256];
    let n: usize = blocks.iter().sum();
    let run = |model: &str, state: &[(u32, f64)], events: &[(usize, u32, f64)]| {
        let mut r = Runner::new(&entry);
        r.select_channels(1);
        r.set_state(model, state);
        r.set_offline(true);
        r.activate(rate as f64, 256);
        let lat = r.latency() as usize;
        (r.process(&input, &blocks, events).remove(0), lat)
    };
    // Monitor = dry: exactly the delayed input (no resampling on the dry path).
    let (dry, lat) = run(&tiny_model(), &[(params::MONITOR, 1.0)], &[]);
    assert!(
        (lat..n).all(|i| dry[i] == x[i - lat]),
        "dry path is not an exact delay"
    );
    // Output gain -6.02 dB from the middle on (sample-accurate event, 20 ms ramp).
    let at = n / 2 + 100;
    let (g, _) = run(
        &tiny_model(),
        &[(params::MONITOR, 1.0)],
        &[(at, params::GAIN, -6.0206)],
    );
    let settle = at + rate as usize / 50 + 1;
    assert!((lat..at).all(|i| g[i] == dry[i]));
    assert!((settle..n).all(|i| (g[i] - 0.5 * dry[i]).abs() < 1e-5));
    // Bypass: the delayed dry signal, whatever the monitor says.
    let (b, _) = run(
        &tiny_model(),
        &[(params::BYPASS, 1.0), (params::MONITOR, 2.0)],
        &[],
    );
    assert!((0..n).all(|i| (b[i] - dry[i]).abs() < 1e-6));
    // Mix 50 % of "difference" with the identity: half the dry signal.
    let (m, _) = run(
        "@identity",
        &[(params::MONITOR, 2.0), (params::MIX, 50.0)],
        &[],
    );
    let e: Vec<f32> = (0..n).map(|i| m[i] - 0.5 * dry[i]).collect();
    assert!(db(rms(&e) / rms(&dry)) < -60.0);
    // Bitrate changes the decoded sound (tiny model, 250 vs 8000 bit/s).
    let (lo, _) = run(&tiny_model(), &[(params::BITRATE, 250.0)], &[]);
    let (hi, _) = run(&tiny_model(), &[(params::BITRATE, 8000.0)], &[]);
    let d: Vec<f32> = (0..n).map(|i| lo[i] - hi[i]).collect();
    assert!(rms(&d) > 1e-3 * rms(&hi), "bitrate has no effect");
    // Switching the bitrate mid-stream is click-free at the plugin level (no NaN, no jump).
    let (sw, _) = run(
        &tiny_model(),
        &[(params::BITRATE, 250.0)],
        &[
            (n / 3, params::BITRATE, 8000.0),
            (2 * n / 3, params::BITRATE, 500.0),
        ],
    );
    assert!(sw.iter().all(|v| v.is_finite() && v.abs() < 4.0));
    // Packet loss 20 % with the identity: lost 40 ms frames come out silent.
    let (pl, lat) = run("@identity", &[(params::LOSS, 20.0)], &[]);
    let frame = rate as usize / 25;
    let (mut lost, mut total) = (0, 0);
    let mut t = lat + frame; // skip the priming region and a frame of filter edges
    while t + frame <= n {
        // Frame boundaries in the output are at lat + k*frame (+ filter smear): look at the
        // middle half of each frame, where the input has energy.
        let mid = &pl[t + frame / 4..t + 3 * frame / 4];
        let src = &x[t - lat + frame / 4..t - lat + 3 * frame / 4];
        if rms(src) > 1e-3 {
            total += 1;
            if rms(mid) < 1e-3 * rms(src) {
                lost += 1;
            }
        }
        t += frame;
    }
    let frac = lost as f64 / total as f64;
    println!(
        "packet loss 20 %: {lost} of {total} voiced frames silent ({:.0} %)",
        100.0 * frac
    );
    assert!((0.08..0.35).contains(&frac), "loss fraction {frac}");
}

#[test]
fn state_round_trip_and_invalid_states() {
    let entry = entry();
    let mut a = Runner::new(&entry);
    a.set_state(
        "/some/model/folder",
        &[
            (params::BITRATE, 3250.0),
            (params::MONITOR, 2.0),
            (params::GAIN, -3.5),
        ],
    );
    let bytes = a.save_state();
    let mut b = Runner::new(&entry);
    b.load_state_bytes(&bytes).unwrap();
    assert_eq!(b.param(params::BITRATE), 3250.0);
    assert_eq!(b.param(params::MONITOR), 2.0);
    assert_eq!(b.param(params::GAIN), -3.5);
    assert_eq!(b.param(params::MIX), 100.0);
    let saved = funcodec_monitor::state::decode(&b.save_state()).unwrap();
    assert_eq!(saved.model, "/some/model/folder");
    // Rejected as a whole, values untouched.
    assert!(b.load_state_bytes(&[]).is_err());
    assert!(b.load_state_bytes(b"not a state at all").is_err());
    assert!(b.load_state_bytes(&bytes[..bytes.len() - 3]).is_err());
    assert_eq!(b.param(params::BITRATE), 3250.0);
    // Out-of-range values are clamped, stepped ones rounded.
    b.set_state(
        "",
        &[
            (params::BITRATE, 1e9),
            (params::GAIN, -1e9),
            (params::MONITOR, 1.4),
        ],
    );
    assert_eq!(b.param(params::BITRATE), 8000.0);
    assert_eq!(b.param(params::GAIN), -24.0);
    assert_eq!(b.param(params::MONITOR), 1.0);
}

#[test]
fn missing_or_broken_model_passes_audio_through() {
    let _s = serial();
    let entry = entry();
    let broken = std::env::temp_dir().join(format!("fcm-broken-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("manifest.json"), b"{ not json").unwrap();
    for model in ["/nonexistent/model/folder", broken.to_str().unwrap()] {
        let mut r = Runner::new(&entry);
        r.set_state(model, &[(params::MONITOR, 2.0)]);
        r.activate(48_000.0, 128);
        let lat = r.latency() as usize;
        assert_eq!(lat as u32, LatencyPlan::fallback(48_000, 128).latency);
        assert_eq!(
            r.param(params::STATUS),
            1.0,
            "status must show the missing model"
        );
        let x = voice(48_000, 0.5, 6000.0);
        let input = stereo(&x);
        let blocks = varying_blocks(x.len(), 128, 9);
        let out = r.process(&input, &blocks, &[]);
        let n = out[0].len();
        for c in 0..2 {
            assert!(out[c][..lat].iter().all(|v| *v == 0.0));
            assert!(
                (lat..n).all(|i| out[c][i] == input[c][i - lat]),
                "not a pure delay"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&broken);
}

#[test]
fn survives_reset_reactivation_and_rate_changes() {
    let _s = serial();
    let entry = entry();
    let mut r = Runner::new(&entry);
    r.set_state("@identity", &[(params::MONITOR, 2.0)]);
    r.set_offline(true);
    let mut last_latency = None;
    for (k, &(rate, mb)) in [
        (48_000u32, 256u32),
        (44_100, 1024),
        (96_000, 64),
        (48_000, 256),
    ]
    .iter()
    .enumerate()
    {
        r.activate(rate as f64, mb);
        let lat = r.latency();
        let x = voice(rate, 0.6, 6000.0);
        let input = stereo(&x);
        let blocks = varying_blocks(x.len(), mb as usize, k as u64);
        let a = r.process(&input, &blocks, &[]);
        r.reset();
        let b = r.process(&input, &blocks, &[]);
        for out in [&a, &b] {
            for c in 0..2 {
                let d = db(rms(&out[c]) / rms(&input[c]));
                assert!(
                    d < -60.0,
                    "{rate} Hz: difference {d:.1} dB after reset/reactivation"
                );
            }
        }
        if let Some(prev) = last_latency
            && prev != lat
        {
            let changed = r.plugin.access_handler(|h: &HostMain| {
                h.latency_changed.load(std::sync::atomic::Ordering::Relaxed)
            });
            assert!(changed > 0, "latency changed without telling the host");
        }
        last_latency = Some(lat);
        r.deactivate();
    }
}

/// Real-time mode, paced like a live host (one 64-sample block every 1.33 ms at 48 kHz, stereo):
/// the worker must keep up with no dropout (status stays OK), with the tiny and the default model.
#[test]
fn realtime_paced_without_dropouts() {
    let _s = serial();
    let entry = entry();
    let rate = 48_000u32;
    let x = voice(rate, 3.0, 6000.0);
    let input = stereo(&x);
    for (name, model) in [("tiny", tiny_model()), ("default", default_model())] {
        let mut r = Runner::new(&entry);
        r.set_state(&model, &[]);
        r.set_offline(false);
        r.activate(rate as f64, 64);
        let lat = r.latency() as usize;
        let period = Duration::from_secs_f64(64.0 / rate as f64);
        let start = Instant::now();
        let mut out = [Vec::new(), Vec::new()];
        let mut late = 0;
        for (k, chunk) in (0..x.len() / 64).enumerate() {
            let deadline = start + period * (k as u32);
            match deadline.checked_duration_since(Instant::now()) {
                Some(w) => std::thread::sleep(w),
                None => late += 1,
            }
            let block: Vec<Vec<f32>> = input
                .iter()
                .map(|c| c[chunk * 64..chunk * 64 + 64].to_vec())
                .collect();
            let o = r.process(&block, &[64], &[]);
            out[0].extend_from_slice(&o[0]);
            out[1].extend_from_slice(&o[1]);
        }
        let status = r.param(params::STATUS);
        println!(
            "real-time paced, {name} model, 48 kHz stereo / 64: status {} after {} s, \
             latency {lat}, {late} callbacks started late",
            params::STATUS_NAMES[status as usize],
            x.len() / rate as usize
        );
        assert_eq!(status, 0.0, "{name} model: the worker missed deadlines");
        assert!(rms(&out[0][lat..]) > 1e-4);
    }
}

/// The default model at 48 kHz, stereo, 64-sample blocks, rendered as fast as possible: must be
/// faster than real time (prints the real-time factor).
#[test]
fn default_model_48k_64_faster_than_real_time() {
    let _s = serial();
    let entry = entry();
    let rate = 48_000u32;
    let secs = 10.0;
    let x = voice(rate, secs, 6000.0);
    let input = stereo(&x);
    let blocks = vec![64; x.len() / 64];
    let mut r = Runner::new(&entry);
    r.set_state(&default_model(), &[(params::BITRATE, 2000.0)]);
    r.set_offline(true);
    let t = Instant::now();
    r.activate(rate as f64, 64);
    let load = t.elapsed();
    let lat = r.latency() as usize;
    assert_eq!(r.param(params::STATUS), 0.0, "default model did not load");
    let t = Instant::now();
    let out = r.process(&input, &blocks, &[]);
    let wall = t.elapsed().as_secs_f64();
    let rtf = wall / secs;
    println!(
        "default model, 48 kHz stereo, 64-sample blocks: {secs} s of audio in {wall:.2} s \
         (real-time factor {rtf:.3}, {:.1}x faster than real time); activation (model load) {load:?}; \
         latency {lat} samples ({:.1} ms)",
        1.0 / rtf,
        lat as f64 * 1000.0 / rate as f64
    );
    assert!(rtf < 1.0, "slower than real time: {rtf}");
    for c in 0..2 {
        assert!(out[c].iter().all(|v| v.is_finite()));
        assert!(rms(&out[c][lat..]) > 1e-3 * rms(&input[c]));
    }
}

/// NaN, infinities and subnormals in the input never reach the output: everything stays finite
/// and no subnormal comes out (the clap-validator fuzzer checks the same), in every mode.
#[test]
fn hostile_input_values() {
    let _s = serial();
    let entry = entry();
    let mut x = voice(48_000, 1.0, 6000.0);
    for (i, v) in x.iter_mut().enumerate() {
        match i % 97 {
            0 => *v = f32::NAN,
            1 => *v = f32::INFINITY,
            2 => *v = f32::NEG_INFINITY,
            3 => *v = 1e-41, // subnormal
            4 => *v = -f32::MIN_POSITIVE / 3.0,
            5 => *v = 1e30,
            _ => {}
        }
    }
    for (model, monitor) in [
        (tiny_model(), 0.0),
        (tiny_model(), 2.0),
        ("/nonexistent".into(), 1.0),
    ] {
        let mut r = Runner::new(&entry);
        r.set_state(&model, &[(params::MONITOR, monitor)]);
        r.set_offline(true);
        r.activate(48_000.0, 256);
        let blocks = varying_blocks(x.len(), 256, 5);
        let out = r.process(&stereo(&x), &blocks, &[]);
        for c in &out {
            assert!(
                c.iter().all(|v| v.is_finite() && !v.is_subnormal()),
                "{model}: non-finite or subnormal output"
            );
        }
    }
}
