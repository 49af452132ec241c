//! The streaming core on the causal architecture: any split of the input gives the same codes and
//! PCM as one call; streams match FunCodec's offline codes; state, flush, reset and n_q changes.

mod common;

use common::*;
use funcodec_core::{CodecModel, Codes, StreamDecoder, StreamEncoder};

const VARIANT: &str = "tiny_causal_ds640";

fn load(folder: &str) -> std::sync::Arc<CodecModel> {
    CodecModel::load(data_dir().join(VARIANT).join(folder))
        .unwrap()
        .shared()
}

/// Streams `pcm` in pieces whose sizes come from `rng` (0 = one push of everything).
fn encode_split(
    m: &std::sync::Arc<CodecModel>,
    pcm: &[f32],
    n_q: usize,
    rng: Option<&mut XorShift>,
) -> Codes {
    let mut enc = StreamEncoder::new(m.clone(), n_q).unwrap();
    let mut codes = Codes::new(n_q);
    match rng {
        None => {
            enc.push(pcm, |f| codes.push_frame(f)).unwrap();
        }
        Some(rng) => {
            let mut i = 0;
            while i < pcm.len() {
                // Mostly small pieces, sometimes several frames at once, sometimes a single sample.
                let n = match rng.range(0, 3) {
                    0 => 1,
                    1 => rng.range(1, 700),
                    _ => rng.range(1, 5000),
                }
                .min(pcm.len() - i);
                enc.push(&pcm[i..i + n], |f| codes.push_frame(f)).unwrap();
                i += n;
            }
        }
    }
    let fl = enc.flush(|f| codes.push_frame(f)).unwrap();
    let hop = m.hop();
    assert_eq!(codes.frames, pcm.len().div_ceil(hop));
    if !pcm.len().is_multiple_of(hop) {
        assert_eq!(fl.real_samples_in_last_frame, pcm.len() % hop);
    }
    codes
}

#[test]
fn any_split_gives_the_same_codes_and_pcm() {
    let m = load("model");
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for clip in ["clip4_1921", "clip5_8000", "clip6_16123"] {
        let pcm = read_clip(VARIANT, clip);
        for n_q in [1, 3, 8] {
            let whole = encode_split(&m, &pcm, n_q, None);
            let pcm_whole = stream_decode(&m, &whole);
            for trial in 0..4 {
                let split = encode_split(&m, &pcm, n_q, Some(&mut rng));
                assert_eq!(
                    split, whole,
                    "{clip} n_q {n_q} trial {trial}: codes depend on the split"
                );
                assert_eq!(stream_decode(&m, &split), pcm_whole, "{clip}: PCM differs");
            }
        }
    }
}

#[test]
fn streams_match_funcodec_offline_codes() {
    // FunCodec pads each layer of the last partial frame on its own; a stream zero-pads the input
    // frame. So every frame but a partial last one must match.
    let m = load("model");
    let g = golden(VARIANT);
    let mut ties = 0;
    for clip in &g.clips {
        let pcm = read_clip(VARIANT, &clip.name);
        for run in &clip.runs {
            let codes = encode_split(&m, &pcm, run.n_q, None);
            let full = pcm.len() / m.hop();
            let mut ours = codes.to_rows();
            let mut theirs = run.codes.clone();
            let mut margins = run.margins.clone();
            for r in ours.iter_mut().chain(theirs.iter_mut()) {
                r.truncate(full);
            }
            margins.iter_mut().for_each(|r| r.truncate(full));
            let cut = Run {
                bit_width: run.bit_width,
                n_q: run.n_q,
                codes: theirs,
                margins,
                decoded: String::new(),
            };
            if full > 0 {
                ties += assert_codes_match(&ours, &cut, &format!("{} n_q {}", clip.name, run.n_q));
            }
        }
    }
    println!("stream vs FunCodec offline: all full frames match ({ties} float32 ties)");
}

#[test]
fn stream_pcm_matches_offline_decoder() {
    let m = load("model");
    let pcm = read_clip(VARIANT, "clip6_16123");
    let codes = m.encode(&pcm, 8).unwrap().codes;
    let offline = m.decode(&codes).unwrap();
    let streamed = stream_decode(&m, &codes);
    let d = max_abs_diff(&offline, &streamed);
    println!("stream vs offline decoder: max |diff| {d:e}");
    assert!(d < 1e-5, "{d}");
}

#[test]
fn steps_only_folder_codes_like_a_stream() {
    // The default model ships step graphs only: its "offline" calls run frame by frame.
    let full = load("model");
    let steps = load("model_steps");
    assert!(!steps.has_offline_graphs() && full.has_offline_graphs());
    let pcm = read_clip(VARIANT, "clip6_16123");
    let a = steps.encode(&pcm, 8).unwrap().codes;
    assert_eq!(a, encode_split(&full, &pcm, 8, None));
    let d = max_abs_diff(&steps.decode(&a).unwrap(), &stream_decode(&full, &a));
    assert!(d == 0.0, "{d}");
}

#[test]
fn latency_state_and_reset() {
    let m = load("model_steps");
    let mut enc = StreamEncoder::new(m.clone(), 8).unwrap();
    assert_eq!(enc.latency_samples(), m.hop());
    assert!(enc.state_bytes() > 0 && enc.state_bytes() < 1 << 20);
    let pcm = read_clip(VARIANT, "clip5_8000");
    let mut first = Codes::new(8);
    enc.push(&pcm, |f| first.push_frame(f)).unwrap();
    enc.reset().unwrap();
    let mut again = Codes::new(8);
    enc.push(&pcm, |f| again.push_frame(f)).unwrap();
    assert_eq!(first, again, "reset must return to the stream start");
}

#[test]
fn bad_samples_are_refused_without_losing_the_stream() {
    let m = load("model_steps");
    let mut enc = StreamEncoder::new(m.clone(), 4).unwrap();
    let pcm = read_clip(VARIANT, "clip5_8000");
    let mut a = Codes::new(4);
    enc.push(&pcm[..1000], |f| a.push_frame(f)).unwrap();
    let err = enc.push(&[0.1, f32::NAN], |f| a.push_frame(f)).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    assert_eq!(enc.samples_in(), 1000);
    enc.push(&pcm[1000..], |f| a.push_frame(f)).unwrap();
    enc.flush(|f| a.push_frame(f)).unwrap();
    assert_eq!(a, encode_split(&m, &pcm, 4, None));
}

#[test]
fn quantizer_count_changes_on_a_frame_boundary() {
    let m = load("model_steps");
    let pcm = read_clip(VARIANT, "clip5_8000");
    let hop = m.hop();
    let mut enc = StreamEncoder::new(m.clone(), 8).unwrap();
    let mut frames: Vec<Vec<u16>> = Vec::new();
    enc.push(&pcm[..hop * 3 + 10], |f| {
        frames.push(f.to_vec());
        Ok(())
    })
    .unwrap();
    enc.set_n_q(2).unwrap();
    assert!(enc.set_n_q(9).is_err());
    enc.push(&pcm[hop * 3 + 10..], |f| {
        frames.push(f.to_vec());
        Ok(())
    })
    .unwrap();
    let counts: Vec<usize> = frames.iter().map(Vec::len).collect();
    assert_eq!(&counts[..3], &[8, 8, 8]);
    assert!(counts[3..].iter().all(|&n| n == 2), "{counts:?}");
    // The RVQ is greedy and stateless: the low-rate frames are the prefix of the full-rate ones.
    let full = encode_split(&m, &pcm, 8, None);
    for (t, f) in frames.iter().enumerate() {
        assert_eq!(&full.frame(t)[..f.len()], &f[..], "frame {t}");
    }
    // And the decoder takes any count per frame.
    let mut dec = StreamDecoder::new(m.clone()).unwrap();
    let mut n = 0;
    for f in &frames {
        dec.push_frame(f, |p| {
            n += p.len();
            Ok(())
        })
        .unwrap();
    }
    assert_eq!(n, frames.len() * hop);
}

#[test]
fn lost_frames_are_concealed_smoothly() {
    let m = load("model_steps");
    let pcm = read_clip(VARIANT, "clip6_16123");
    let codes = encode_split(&m, &pcm, 8, None);
    let mut dec = StreamDecoder::new(m.clone()).unwrap();
    let mut out = Vec::new();
    for t in 0..codes.frames {
        let mut sink = |p: &[f32]| {
            out.extend_from_slice(p);
            Ok(())
        };
        if (10..13).contains(&t) {
            dec.conceal(&mut sink).unwrap();
        } else {
            dec.push_frame(codes.frame(t), &mut sink).unwrap();
        }
    }
    assert_eq!(out.len(), codes.frames * m.hop());
    assert!(out.iter().all(|v| v.is_finite()));
    // No step at the loss boundaries larger than the largest step in the clean decode.
    let clean = stream_decode(&m, &codes);
    let max_step = |x: &[f32]| x.windows(2).fold(0.0f32, |a, w| a.max((w[1] - w[0]).abs()));
    let hop = m.hop();
    let edge =
        max_step(&out[10 * hop - 8..10 * hop + 8]).max(max_step(&out[13 * hop - 8..13 * hop + 8]));
    assert!(
        edge <= 2.0 * max_step(&clean),
        "click at a concealed frame: {edge} vs {}",
        max_step(&clean)
    );
}

// ---- Windowed (approximate) streaming of FunCodec's non-causal models ----

use funcodec_core::stream::{decode_all, encode_all};
use funcodec_core::{StreamMode, WindowConfig};

#[test]
fn windowed_stream_with_one_window_equals_offline() {
    // A block that spans the whole (frame-aligned) input makes the single window the utterance.
    let m = CodecModel::load(model_dir("tiny_gn_ds640")).unwrap();
    let hop = m.hop();
    let pcm = read_clip("tiny_gn_ds640", "clip6_16123");
    let pcm = &pcm[..hop * 20];
    let whole = StreamMode::Windowed(WindowConfig {
        context: 0,
        block: 64,
        lookahead: 0,
    });
    let codes = encode_all(&m, pcm, 8, whole).unwrap();
    assert_eq!(codes, m.encode(pcm, 8).unwrap().codes);
    let a = decode_all(&m, &codes, whole).unwrap();
    let d = max_abs_diff(&a, &m.decode(&codes).unwrap());
    assert!(d < 1e-5, "{d}");
}

#[test]
fn windowed_stream_is_split_invariant_and_reports_its_latency() {
    let m = CodecModel::load(model_dir("tiny_gn_ds640"))
        .unwrap()
        .shared();
    let hop = m.hop();
    let cfg = WindowConfig {
        context: 8,
        block: 2,
        lookahead: 3,
    };
    let pcm = read_clip("tiny_gn_ds640", "clip6_16123");
    let enc = StreamEncoder::with_mode(m.clone(), 4, StreamMode::Windowed(cfg)).unwrap();
    assert_eq!(enc.latency_samples(), hop * (1 + 1 + 3));
    // Default mode of a non-causal model is windowed.
    assert!(StreamEncoder::new(m.clone(), 4).unwrap().latency_samples() > hop);
    let whole = encode_all(&m, &pcm, 4, StreamMode::Windowed(cfg)).unwrap();
    assert_eq!(whole.frames, pcm.len().div_ceil(hop));
    let mut rng = XorShift(77);
    let mut enc = StreamEncoder::with_mode(m.clone(), 4, StreamMode::Windowed(cfg)).unwrap();
    let mut codes = Codes::new(4);
    let mut i = 0;
    while i < pcm.len() {
        let n = rng.range(1, 1500).min(pcm.len() - i);
        enc.push(&pcm[i..i + n], |f| codes.push_frame(f)).unwrap();
        i += n;
    }
    enc.flush(|f| codes.push_frame(f)).unwrap();
    assert_eq!(codes, whole);
    // Exact mode is refused for a model without step graphs.
    assert!(StreamEncoder::with_mode(m.clone(), 4, StreamMode::Exact).is_err());
    // The windowed decoder emits one frame of PCM per frame in, after draining.
    let y = decode_all(&m, &whole, StreamMode::Windowed(cfg)).unwrap();
    assert_eq!(y.len(), whole.frames * hop);
    assert!(y.iter().all(|v| v.is_finite()));
}
