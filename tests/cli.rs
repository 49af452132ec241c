//! The `funcodec` command line end to end: encode/decode/roundtrip/info, wav.scp -> codecs.txt
//! identical to FunCodec's own, import/export, shards, and non-zero exits with clear errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use funcodec_core::codecs_txt;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_funcodec"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "{err}"
    );
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A FunCodec `wav.scp` in `dir` listing the test clips of `variant`, one `uttid path` per line.
fn write_scp(dir: &Path, variant: &str, clips: &[&str]) -> std::path::PathBuf {
    let scp = dir.join("wav.scp");
    let lines: Vec<String> = clips
        .iter()
        .map(|c| format!("{c} {}", clip_path(variant, c).display()))
        .collect();
    std::fs::write(&scp, lines.join("\n") + "\n").unwrap();
    scp
}

#[test]
fn scp_mode_writes_funcodecs_own_codecs_txt() {
    let v = VARIANTS[0];
    let g = golden(v);
    let d = scratch("cli-scp");
    let names: Vec<&str> = g.clips.iter().map(|c| c.name.as_str()).collect();
    let scp = write_scp(&d, v, &names);
    let out = d.join("codecs.txt");
    let model = model_dir(v);
    let bw = g.cli_bit_width.to_string();
    ok(&[
        "encode",
        "--model",
        s(&model),
        "--scp",
        s(&scp),
        "--codecs-out",
        s(&out),
        "--bitrate",
        &bw,
        "--jobs",
        "2",
    ]);
    let ours = std::fs::read_to_string(&out).unwrap();
    let theirs = std::fs::read_to_string(data_dir().join(v).join("funcodec_codecs.txt")).unwrap();
    // Our writer reproduces FunCodec's file byte for byte from the same codes.
    let their_entries = codecs_txt::read_codecs_txt(&theirs).unwrap();
    assert_eq!(codecs_txt::write_codecs_txt(&their_entries), theirs);
    // Our codes equal FunCodec's, bar float32 ties recorded in the golden file.
    let our_entries = codecs_txt::read_codecs_txt(&ours).unwrap();
    assert_eq!(our_entries.len(), g.clips.len());
    let mut ties = 0;
    for (e, clip) in our_entries.iter().zip(&g.clips) {
        assert_eq!(e.utt_id, clip.name);
        let run = clip
            .runs
            .iter()
            .find(|r| r.bit_width == g.cli_bit_width)
            .unwrap();
        let theirs = &their_entries
            .iter()
            .find(|t| t.utt_id == clip.name)
            .unwrap()
            .codes;
        assert_eq!(
            theirs, &run.codes,
            "FunCodec's CLI and its Python API disagree"
        );
        ties += assert_codes_match(&e.codes, run, &clip.name);
    }
    assert!(ties <= 1, "{ties} tie frames");

    // Shards partition the utterances; together they are the whole file.
    let mut merged = Vec::new();
    for i in 0..3 {
        let part = d.join(format!("part{i}.txt"));
        ok(&[
            "encode",
            "--model",
            s(&model),
            "--scp",
            s(&scp),
            "--codecs-out",
            s(&part),
            "--bitrate",
            &bw,
            "--shard",
            &format!("{i}/3"),
        ]);
        merged.extend(
            std::fs::read_to_string(&part)
                .unwrap()
                .lines()
                .map(String::from),
        );
    }
    merged.sort();
    let mut all: Vec<String> = ours.lines().map(String::from).collect();
    all.sort();
    assert_eq!(merged, all);

    // codecs.txt -> .fcdc -> codecs.txt is lossless.
    let fc = d.join("fcdc");
    ok(&["import", s(&out), "--out-dir", s(&fc), "--model", s(&model)]);
    let files: Vec<String> = g
        .clips
        .iter()
        .map(|c| s(&fc.join(format!("{}.fcdc", c.name))).to_string())
        .collect();
    let back = d.join("back.txt");
    let mut args = vec!["export", "-o", s(&back)];
    args.extend(files.iter().map(String::as_str));
    ok(&args);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), ours);
}

/// A step-graph model codes a wav.scp several utterances at a time (`--batch`); the result is
/// the one-at-a-time result, in input order, with any number of threads.
#[test]
fn scp_batches_utterances_of_step_models() {
    let v = "tiny_causal_ds640";
    let model = model_dir(v).with_file_name("model_steps");
    let d = scratch("cli-scp-batch");
    let clips = [
        "clip7_161234",
        "clip0_1",
        "clip4_1921",
        "clip6_16123",
        "clip2_80",
    ];
    let scp = write_scp(&d, v, &clips);
    let encode = |batch: &str, jobs: &str| {
        let out = d.join(format!("codecs-b{batch}-j{jobs}.txt"));
        ok(&[
            "encode",
            "--model",
            s(&model),
            "--scp",
            s(&scp),
            "--codecs-out",
            s(&out),
            "--n-q",
            "6",
            "--batch",
            batch,
            "--jobs",
            jobs,
        ]);
        std::fs::read_to_string(out).unwrap()
    };
    let one = encode("1", "1");
    let ids: Vec<&str> = one.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids, clips);
    assert_eq!(encode("3", "1"), one);
    assert_eq!(encode("2", "2"), one);

    let codecs = d.join("codecs-b1-j1.txt");
    let decode = |batch: &str| {
        let out = d.join(format!("wav-b{batch}"));
        ok(&[
            "decode",
            s(&codecs),
            "-o",
            s(&out),
            "--model",
            s(&model),
            "--batch",
            batch,
        ]);
        clips
            .iter()
            .map(|c| {
                let r = hound::WavReader::open(out.join(format!("{c}.wav"))).unwrap();
                r.into_samples::<i16>()
                    .map(|v| v.unwrap())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // A batch runs other kernels than a single stream for some layers (see `tract_ops`), so the
    // PCM agrees to float rounding: at most one step of the 16-bit output.
    for (c, (a, b)) in clips.iter().zip(decode("4").iter().zip(&decode("1"))) {
        assert_eq!(a.len(), b.len(), "{c}");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).max();
        assert!(worst <= Some(1), "{c}: {worst:?}");
    }
}

#[test]
fn encode_decode_roundtrip_and_info() {
    let v = VARIANTS[0];
    let model = model_dir(v);
    let d = scratch("cli-rt");
    let clip = clip_path(v, "clip6_16123");
    let fcdc = d.join("a.fcdc");
    ok(&[
        "encode",
        s(&clip),
        "-o",
        s(&fcdc),
        "--model",
        s(&model),
        "--bitrate",
        "1000",
    ]);
    let info = ok(&["info", s(&fcdc)]);
    assert!(
        info.contains("26 x 4 quantizers") && info.contains("16123"),
        "{info}"
    );
    let wav = d.join("a.wav");
    ok(&["decode", s(&fcdc), "-o", s(&wav), "--model", s(&model)]);
    let r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.duration(), 16123);
    assert!(ok(&["info", s(&model)]).contains("8 x 1024 codes"));

    // Round trip of a stereo 44.1 kHz file comes back stereo at 44.1 kHz, same length.
    let st = d.join("stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&st, spec).unwrap();
    for t in 0..44100 {
        let x = ((t as f32 * 0.05).sin() * 8000.0) as i16;
        w.write_sample(x).unwrap();
        w.write_sample(-x).unwrap();
    }
    w.finalize().unwrap();
    let out = d.join("stereo_out.wav");
    ok(&[
        "roundtrip",
        s(&st),
        "-o",
        s(&out),
        "--model",
        s(&model),
        "--channels",
        "each",
        "--n-q",
        "2",
    ]);
    let r = hound::WavReader::open(&out).unwrap();
    assert_eq!(
        (r.spec().channels, r.spec().sample_rate, r.duration()),
        (2, 44100, 44100)
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let v = VARIANTS[0];
    let model = model_dir(v);
    let d = scratch("cli-bad");
    let clip = clip_path(v, "clip5_8000");
    assert!(
        fails(&[
            "encode",
            s(&clip),
            "-o",
            s(&d.join("x.fcdc")),
            "--model",
            "/no/such/model"
        ])
        .contains("cannot load model")
    );
    assert!(
        fails(&[
            "encode",
            s(&clip),
            "-o",
            s(&d.join("x.fcdc")),
            "--model",
            s(&model),
            "--n-q",
            "99"
        ])
        .contains("n_q")
    );
    let empty = d.join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        fails(&[
            "encode",
            s(&empty),
            "-o",
            s(&d.join("x.fcdc")),
            "--model",
            s(&model)
        ])
        .contains("WAV")
    );
    let fcdc = d.join("a.fcdc");
    ok(&["encode", s(&clip), "-o", s(&fcdc), "--model", s(&model)]);
    let bytes = std::fs::read(&fcdc).unwrap();
    let cut = d.join("cut.fcdc");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    assert!(
        fails(&[
            "decode",
            s(&cut),
            "-o",
            s(&d.join("o.wav")),
            "--model",
            s(&model)
        ])
        .contains("truncated")
    );
    let other = model_dir(VARIANTS[1]);
    assert!(
        fails(&[
            "decode",
            s(&fcdc),
            "-o",
            s(&d.join("o.wav")),
            "--model",
            s(&other)
        ])
        .contains("encoded with model")
    );
    let garbage = d.join("garbage.txt");
    std::fs::write(&garbage, "utt1 [[[1, 2], [3]]]\n").unwrap();
    assert!(
        fails(&[
            "decode",
            s(&garbage),
            "-o",
            s(&d.join("out")),
            "--model",
            s(&model)
        ])
        .contains("line 1")
    );
}

/// `funcodec bench --repeat 1 --profile` on `clip` with `model` and `extra` arguments: its JSON
/// report (the output's progress lines around it skipped).
fn bench_json(model: &Path, clip: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        s(clip),
        "--model",
        s(model),
        "--repeat",
        "1",
        "--profile",
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    let json = &out[out.find('{').expect("a JSON report")..];
    serde_json::from_str(&json[..=json.rfind('}').unwrap()]).unwrap()
}

/// `funcodec bench` reports every section, with `--profile` the step graphs' time per op type, and
/// `--backend` names the engine it ran on (here the CPU; `cuda` without a GPU is a clear error).
#[test]
fn bench_reports_streaming_figures_and_a_profile() {
    let model = model_dir("tiny_causal_ds640").with_file_name("model_steps");
    let clip = clip_path("tiny_causal_ds640", "clip6_16123");
    let v = bench_json(&model, &clip, &["--streams", "2", "--backend", "auto"]);
    assert_eq!(v["backend"], if backend_has_gpu() { "cuda" } else { "cpu" });
    assert_eq!(v["streaming"]["mode"], "exact");
    assert!(v["streaming"]["frame_ms_p99"].as_f64().unwrap() > 0.0);
    assert_eq!(v["multi_stream"]["streams"], 2);
    let batched = &v["multi_stream"]["batched"];
    assert!(batched["realtime_streams_per_core"].as_f64().unwrap() > 0.0);
    assert!(batched["tick_ms_p99"].as_f64().unwrap() > 0.0);
    for stage in ["encoder_step", "decoder_step"] {
        let ops = v["profile"][stage]["ops"].as_array().unwrap();
        assert!(!ops.is_empty(), "{stage}: no ops");
        let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-6, "{stage}: shares sum to {share}");
        assert!(ops.iter().all(|o| o["nodes"].as_u64().unwrap() >= 1));
    }
    let rvq = &v["profile"]["rvq_search"];
    assert_eq!(rvq["n_q"], v["n_q"]);
    assert!(rvq["us_per_frame"].as_f64().unwrap() > 0.0, "{rvq}");
    if !backend_has_gpu() {
        let err = fails(&["bench", s(&clip), "--model", s(&model), "--backend", "cuda"]);
        assert!(err.contains("backend"), "{err}");
    }
    let short = clip_path("tiny_causal_ds640", "clip1_3");
    let err = fails(&["bench", s(&short), "--model", s(&model)]);
    assert!(err.contains("at least one frame"), "{err}");
}

/// A model without step graphs (FunCodec's non-causal architecture): `--profile` times the offline
/// graphs' nodes, every encoder segment's under its own name, per second of audio.
#[test]
fn bench_profiles_the_offline_graphs_of_a_non_causal_model() {
    let model = model_dir("tiny_gn_ds640");
    let clip = clip_path("tiny_gn_ds640", "clip7_161234");
    let v = bench_json(&model, &clip, &["--streams", "1"]);
    assert_eq!(v["streaming"]["mode"], "windowed");
    let p = &v["profile"];
    assert!(
        (p["audio_s"].as_f64().unwrap() - 161234.0 / 16000.0).abs() < 1e-9,
        "{p}"
    );
    for stage in ["encoder", "decoder"] {
        let total = p[stage]["ms_per_audio_s"].as_f64().unwrap();
        assert!(total > 0.0, "{stage}: {total}");
        let ops = p[stage]["ops"].as_array().unwrap();
        let sum: f64 = ops
            .iter()
            .map(|o| o["ms_per_audio_s"].as_f64().unwrap())
            .sum();
        assert!(
            (sum - total).abs() <= 1e-9 * total.max(1.0),
            "{stage}: {sum} vs {total}"
        );
        // The convolutions run as tract's matrix products.
        assert!(
            ops.iter().any(|o| o["op"] == "OptMatMul"),
            "{stage}: {ops:?}"
        );
    }
    let names: Vec<&str> = p["encoder"]["slowest_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("seg")), "{names:?}");
}

fn backend_has_gpu() -> bool {
    funcodec_core::backend::Engine::resolve(funcodec_core::Backend::Cuda).is_ok()
}
