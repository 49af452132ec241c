//! End-to-end: the `gst-launch-1.0` examples of `gst-plugin/README.md`, run exactly as written
//! (each README block that starts with `# example: NAME`), in a scratch folder, with the plugin
//! from this build (`GST_PLUGIN_PATH` = the target folder holding `libgstfuncodec.so`), the test
//! model as the default (`FUNCODEC_MODEL`) and the `funcodec` CLI of the same build on the `PATH`.
//! The only edit: the RTP examples get a free port for 5004, and the commands whose process is
//! watched or signalled run under `exec`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use funcodec_core::bitstream;
use gst::prelude::*;

/// The timing-sensitive runs (live pacing, RTP through a 100 ms jitter buffer) and the CPU-heavy
/// 10-minute run take turns, so one does not starve the other on a small machine.
static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

struct Example {
    name: String,
    /// The block without its `# example:` line.
    command: String,
}

fn examples(readme: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(readme).unwrap();
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => block = Some(Vec::new()),
            (Some(b), "```") => {
                if let Some(name) = b.first().and_then(|l| l.strip_prefix("# example: ")) {
                    out.push(Example {
                        name: name.trim().to_string(),
                        command: b[1..].join("\n"),
                    });
                }
                block = None;
            }
            (Some(b), _) => b.push(line),
            _ => {}
        }
    }
    out
}

fn example(name: &str) -> String {
    examples(&repo().join("gst-plugin/README.md"))
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no example {name:?} in gst-plugin/README.md"))
        .command
}

/// The target folder of this build (`target/debug` or `target/release`): the test binary lives in
/// its `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn shell(command: &str, dir: &Path) -> Command {
    let bin = bin_dir();
    assert!(
        bin.join("libgstfuncodec.so").exists(),
        "{} has no libgstfuncodec.so",
        bin.display()
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("GST_PLUGIN_PATH", &bin)
        .env("GST_REGISTRY", dir.join("registry.bin"))
        .env("FUNCODEC_MODEL", model_dir())
        .env("PATH", path)
        .env("GST_DEBUG_NO_COLOR", "1");
    c
}

/// Runs `command` to completion, killing it (and failing) after `timeout`.
fn output_within(command: &str, dir: &Path, timeout: Duration) -> Output {
    let mut child = shell(command, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut r = r;
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = wait_timeout(&mut child, timeout);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(command: &str, dir: &Path) -> Output {
    let out = output_within(command, dir, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{command}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn need_cli() {
    assert!(
        bin_dir().join("funcodec").exists(),
        "the funcodec CLI is not in {} (build it with `cargo build --workspace`)",
        bin_dir().display()
    );
}

/// Minimal WAV I/O: 16-bit PCM or 32-bit float, any rate; returns (rate, channels, samples).
fn read_wav(path: &Path) -> (u32, u16, Vec<f32>) {
    let d = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&d[..4], b"RIFF");
    assert_eq!(&d[8..12], b"WAVE");
    let (mut i, mut fmt, mut data) = (12, None, None);
    while i + 8 <= d.len() {
        let id = &d[i..i + 4];
        let n = u32::from_le_bytes(d[i + 4..i + 8].try_into().unwrap()) as usize;
        let body = &d[i + 8..(i + 8 + n).min(d.len())];
        match id {
            b"fmt " => fmt = Some(body.to_vec()),
            b"data" => data = Some(body.to_vec()),
            _ => {}
        }
        i += 8 + n + (n & 1);
    }
    let fmt = fmt.expect("no fmt chunk");
    let data = data.expect("no data chunk");
    let mut tag = u16::from_le_bytes([fmt[0], fmt[1]]);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the format tag.
        tag = u16::from_le_bytes([fmt[24], fmt[25]]);
    }
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
    let rate = u32::from_le_bytes(fmt[4..8].try_into().unwrap());
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    let samples = match (tag, bits) {
        (1, 16) => data
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect(),
        (3, 32) => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("{}: unsupported WAV format {other:?}", path.display()),
    };
    (rate, channels, samples)
}

fn write_wav_s16(path: &Path, rate: u32, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    std::fs::write(path, w).unwrap();
}

fn mono_16k(path: &Path) -> Vec<f32> {
    let (rate, channels, samples) = read_wav(path);
    assert_eq!((rate, channels), (16000, 1), "{}", path.display());
    samples
}

/// 2.5 s of speech-like audio (40000 samples: not a whole number of frames).
const SPEECH_SAMPLES: usize = 40_000;

fn speech(dir: &Path) -> Vec<f32> {
    let s16: Vec<i16> = signal(SPEECH_SAMPLES, 50)
        .iter()
        .map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    write_wav_s16(&dir.join("speech.wav"), 16000, &s16);
    s16.iter().map(|&v| f32::from(v) / 32768.0).collect()
}

/// encode, decode, roundtrip, cli-to-gst, gst-to-cli and monitor, in order in one folder, each
/// checked against the core's reference results.
#[test]
fn file_examples() {
    init();
    need_cli();
    let dir = scratch("gst-files");
    let pcm = speech(&dir);
    let frames = SPEECH_SAMPLES.div_ceil(HOP);

    // encode: a .fcdc stream the core reads: our model's header, the core's codes.
    run(&example("encode"), &dir);
    let bytes = std::fs::read(dir.join("speech.fcdc")).unwrap();
    let (h, packets) = bitstream::read_stream(&bytes).unwrap();
    assert_eq!(h, header());
    let codes: Vec<Vec<u16>> = packets.into_iter().map(|p| p.codes).collect();
    assert_eq!(codes.len(), frames);
    assert_eq!(codes, ref_codes(&pcm, 8));

    // decode: whole frames (a streamed file does not record its sample count), the core's decode.
    run(&example("decode"), &dir);
    let decoded = mono_16k(&dir.join("decoded.wav"));
    let reference = ref_decode(&codes);
    assert_eq!(decoded.len(), frames * HOP);
    assert!(max_abs_diff(&decoded, &reference) <= 1.0 / 32768.0);

    // roundtrip: the input's length exactly, and the same samples as the file route.
    run(&example("roundtrip"), &dir);
    let roundtrip = mono_16k(&dir.join("roundtrip.wav"));
    assert_eq!(roundtrip.len(), SPEECH_SAMPLES);
    assert_eq!(roundtrip, decoded[..SPEECH_SAMPLES]);

    // cli-to-gst: the CLI's file plays through decodebin, trimmed to its recorded length, and
    // gives what the CLI's own decoder gives.
    run(&example("cli-to-gst"), &dir);
    let in_gst = mono_16k(&dir.join("cli-in-gst.wav"));
    run("funcodec decode cli.fcdc -o cli-float.wav --float", &dir);
    let cli = mono_16k(&dir.join("cli-float.wav"));
    assert_eq!(in_gst.len(), SPEECH_SAMPLES);
    assert_eq!(in_gst, cli);

    // gst-to-cli: the CLI decodes the pipeline's file to the same samples as the pipeline.
    run(&example("gst-to-cli"), &dir);
    let speech_cli = mono_16k(&dir.join("speech-cli.wav"));
    assert_eq!(speech_cli.len(), frames * HOP);
    assert!(max_abs_diff(&speech_cli, &decoded) <= 1.0 / 32768.0);

    // monitor: the difference signal is input − decoded, sample for sample.
    run(&example("monitor"), &dir);
    let difference = mono_16k(&dir.join("difference.wav"));
    assert_eq!(difference.len(), SPEECH_SAMPLES);
    let want: Vec<f32> = pcm.iter().zip(&roundtrip).map(|(x, y)| x - y).collect();
    let worst = max_abs_diff(&difference, &want);
    assert!(worst <= 1e-6, "difference signal off by {worst}");
    eprintln!(
        "monitor: input rms {:.4}, difference rms {:.4} (random-weight test model)",
        rms(&pcm),
        rms(&difference)
    );
}

#[test]
fn live_example() {
    let _turn = exclusive();
    let dir = scratch("gst-live");
    let t = Instant::now();
    let out = run(&example("live"), &dir);
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 50 buffers of 20 ms, paced by the clock: about a second, no warning (late buffers, QoS).
    assert!(secs >= 0.95, "a live pipeline of 1 s ran in {secs:.2} s");
    assert!(
        !text.contains("WARNING") && !text.contains("ERROR"),
        "{text}"
    );
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Reads a child's stdout on a thread; `wait_for` blocks until a line contains the text.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, text: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    let hit = l.contains(text);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {text:?}; got {:?}", self.seen);
    }

    fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not finish in {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RTP over loopback with stock elements: the receiver's WAV is the sender's audio through the
/// codec, sample for sample (the same source through `funcodecenc ! funcodecdec` locally).
#[test]
fn rtp_examples_on_loopback() {
    let _turn = exclusive();
    let dir = scratch("gst-rtp");
    let port = free_udp_port().to_string();
    let receiver = example("rtp-receiver").replace("port=5004", &format!("port={port}"));
    let sender = example("rtp-sender").replace("port=5004", &format!("port={port}"));
    assert!(receiver.contains(&port) && sender.contains(&port));

    let mut rx = shell(&format!("exec {receiver}"), &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(&mut rx);
    lines.wait_for("Setting pipeline to PLAYING", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    run(&sender, &dir);
    std::thread::sleep(Duration::from_millis(500));
    // Ctrl-C: gst-launch -e sends EOS, so the WAV is finished.
    let status = Command::new("kill")
        .args(["-INT", &rx.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_timeout(&mut rx, Duration::from_secs(20));
    let log = lines.rest();
    assert!(status.success(), "receiver: {status:?}\n{log:#?}");
    assert!(log.iter().any(|l| l.contains("Got EOS")), "{log:#?}");

    // The reference: the sender's source through the codec without the network.
    let local = sender
        .split("! rtpgstpay")
        .next()
        .unwrap()
        .replace("is-live=true ", "")
        .to_string()
        + "! funcodecdec ! audioconvert ! wavenc ! filesink location=local.wav";
    run(&local, &dir);
    let want = mono_16k(&dir.join("local.wav"));
    let got = mono_16k(&dir.join("received.wav"));
    assert_eq!(want.len(), 100 * 320);
    assert_eq!(got.len(), want.len(), "samples received");
    assert_eq!(got, want);
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Parses `pts: H:MM:SS.NNNNNNNNN` style fields of a fakesink last-message.
fn field_ns(line: &str, key: &str) -> Option<u64> {
    let v = line.split(key).nth(1)?.split([',', ' ']).next()?;
    let mut parts = v.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let (s, ns) = parts.next()?.split_once('.')?;
    Some(((h * 60 + m) * 60 + s.parse::<u64>().ok()?) * 1_000_000_000 + ns.parse::<u64>().ok()?)
}

/// Ten minutes of audio through encoder and decoder: every output timestamp where the sample count
/// puts it (no drift), and the process's memory flat.
#[test]
fn long_run_example() {
    let _turn = exclusive();
    let dir = scratch("gst-long");
    let t = Instant::now();
    let mut child = shell(&format!("exec {}", example("long-run")), &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let lines = Lines::of(&mut child);
    let mut rss = Vec::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Some(kib) = vm_rss_kib(pid) {
            rss.push(kib);
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "long run takes too long"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let secs = t.elapsed().as_secs_f64();
    let log = lines.rest();
    assert!(status.success(), "{status:?}");

    let chains: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("last-message = chain"))
        .collect();
    assert_eq!(chains.len(), 15_000, "buffers out");
    for (k, l) in chains.iter().enumerate() {
        let pts = field_ns(l, "pts: ").unwrap_or_else(|| panic!("no pts in {l}"));
        let dur = field_ns(l, "duration: ").unwrap_or_else(|| panic!("no duration in {l}"));
        assert_eq!(pts, k as u64 * 40_000_000, "buffer {k}: {l}");
        assert_eq!(dur, 40_000_000, "buffer {k}: {l}");
    }
    let last = chains.last().unwrap();
    let end = field_ns(last, "pts: ").unwrap() + field_ns(last, "duration: ").unwrap();
    assert_eq!(
        end, 600_000_000_000,
        "the last sample ends at 10:00 exactly"
    );

    // Memory: the peak over the last fifth of the run against the peak over the second fifth
    // (after start-up and the first allocations).
    assert!(rss.len() >= 20, "only {} memory samples", rss.len());
    let fifth = rss.len() / 5;
    let early = *rss[fifth..2 * fifth].iter().max().unwrap();
    let late = *rss[4 * fifth..].iter().max().unwrap();
    eprintln!(
        "long run: 600 s of audio in {secs:.1} s ({:.0}x real time), {} buffers, last ends at \
         {end} ns; VmRSS {early} KiB early, {late} KiB late ({:+} KiB), samples {}",
        600.0 / secs,
        chains.len(),
        late as i64 - early as i64,
        rss.len()
    );
    assert!(
        late <= early + 2048,
        "memory grew from {early} KiB to {late} KiB"
    );
}

/// gst-inspect documents every element, pad and property (each of ours has its description).
#[test]
fn inspect_example_documents_everything() {
    init();
    let dir = scratch("gst-inspect");
    let out = run(&example("inspect"), &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SINK template: 'sink'").count(), 3);
    assert_eq!(text.matches("SRC template: 'src'").count(), 3);
    for name in ["funcodecenc", "funcodecdec", "funcodecparse"] {
        let el = gst::ElementFactory::make(name).build().unwrap();
        let klass = el.element_class();
        assert!(text.contains(klass.metadata("long-name").unwrap()));
        for p in el.list_properties().iter() {
            if p.owner_type() != el.type_() {
                continue;
            }
            let blurb = p.blurb().unwrap_or_default();
            assert!(
                blurb.len() > 20,
                "{name}: property {} lacks a description",
                p.name()
            );
            let head: String = blurb.chars().take(30).collect();
            assert!(
                text.contains(&format!("{:<20}: {head}", p.name())),
                "{name}: {} not documented",
                p.name()
            );
        }
    }
}

/// Bad input through gst-launch: an error on the bus and a clean non-zero exit, never a crash.
/// (`fakesink async=false`: with a prerolling sink, gst-launch 1.22 itself sometimes hangs when an
/// error and EOS race during preroll; stock `filesrc ! oggdemux ! fakesink` on a WAV does too.)
#[test]
fn bad_input_is_an_error_not_a_crash() {
    let dir = scratch("gst-bad");
    for (command, want) in [
        (
            "gst-launch-1.0 audiotestsrc num-buffers=5 ! audioconvert ! audioresample ! \
             funcodecenc model=/nonexistent/model ! fakesink async=false",
            "cannot open model folder /nonexistent/model",
        ),
        (
            "gst-launch-1.0 audiotestsrc num-buffers=5 ! audioconvert ! audioresample ! \
             funcodecenc mode=exact model=MODEL_GN ! fakesink async=false",
            "cannot stream in mode Exact",
        ),
        (
            "gst-launch-1.0 filesrc location=speech.wav ! funcodecparse ! funcodecdec ! \
             fakesink async=false",
            "not a FunCodec stream",
        ),
        (
            "gst-launch-1.0 audiotestsrc num-buffers=5 ! audio/x-raw,rate=44100 ! funcodecenc ! \
             fakesink async=false",
            "not-negotiated",
        ),
    ] {
        speech(&dir);
        let command = command.replace("MODEL_GN", &noncausal_dir().to_string_lossy());
        let out = output_within(&command, &dir, Duration::from_secs(60));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // gst-launch exits with 1 (error while playing) or 255 (could not start), never a signal.
        assert!(
            matches!(out.status.code(), Some(1 | 255)),
            "{command}: {:?} {text}",
            out.status
        );
        assert!(text.contains(want), "{command}: {text}");
        assert!(!text.contains("panicked"), "{command}: {text}");
    }
}

/// Shell commands of a block, continuation lines joined, whitespace normalised.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head.trim());
                cur.push(' ');
            }
            None => {
                cur.push_str(l);
                out.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
                cur.clear();
            }
        }
    }
    out
}

/// The top-level README's GStreamer section shows only commands that run here.
#[test]
fn top_readme_examples_are_the_tested_ones() {
    let top = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = top
        .split("\n## GStreamer elements\n")
        .nth(1)
        .expect("README.md has a `## GStreamer elements` section")
        .split("\n## ")
        .next()
        .unwrap();
    let tested: Vec<String> = examples(&repo().join("gst-plugin/README.md"))
        .iter()
        .flat_map(|e| commands(&e.command))
        .collect();
    let mut n = 0;
    for block in section.split("```sh").skip(1) {
        let body = block.split("```").next().unwrap();
        for c in commands(body) {
            if c.contains("gst-launch-1.0") {
                assert!(
                    tested.contains(&c),
                    "README.md shows an untested command:\n{c}"
                );
                n += 1;
            }
        }
    }
    assert!(n >= 5, "only {n} gst-launch commands in the README section");
}
