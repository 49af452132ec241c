//! Many causal streams stepped together in one batched graph run per tick: each stream gets what it
//! would get alone, whatever the other streams do (start later, skip ticks, change quantizers).

mod common;

use std::sync::Arc;

use common::*;
use funcodec_core::stream::{BatchDecoder, BatchEncoder, decode_batched, encode_batched};
use funcodec_core::{CodecModel, Codes, Error};

const VARIANT: &str = "tiny_causal_ds640";
const CLIPS: [&str; 7] = [
    "clip0_1",
    "clip2_80",
    "clip3_641",
    "clip4_1921",
    "clip5_8000",
    "clip6_16123",
    "clip7_161234",
];

fn load() -> Arc<CodecModel> {
    CodecModel::load(data_dir().join(VARIANT).join("model_steps"))
        .unwrap()
        .shared()
}

/// What one stream gives on its own: codes and decoded PCM.
fn alone(m: &Arc<CodecModel>, pcm: &[f32], n_q: usize) -> (Codes, Vec<f32>) {
    let codes = stream_encode(m, pcm, n_q);
    let out = stream_decode(m, &codes);
    (codes, out)
}

#[test]
fn whole_utterances_batched_equal_each_alone() {
    let m = load();
    let clips: Vec<Vec<f32>> = CLIPS.iter().map(|c| read_clip(VARIANT, c)).collect();
    let expected: Vec<_> = clips.iter().map(|p| alone(&m, p, 8)).collect();
    // 3 and 5 streams: odd batch sizes, power-of-two plans with zero rows, utterances of very
    // different lengths refilling streams as they end.
    for streams in [1, 3, 5] {
        let mut got: Vec<Option<Codes>> = vec![None; clips.len()];
        encode_batched(
            &m,
            8,
            streams,
            clips.iter().cloned().map(Ok::<_, Error>),
            |i, c| {
                assert!(got[i].replace(c).is_none(), "utterance {i} twice");
                Ok(())
            },
        )
        .unwrap();
        let mut worst = 0.0f32;
        let mut pcm: Vec<Option<Vec<f32>>> = vec![None; clips.len()];
        let codes: Vec<Codes> = got.into_iter().map(Option::unwrap).collect();
        for (i, (c, (want, _))) in codes.iter().zip(&expected).enumerate() {
            assert_eq!(c, want, "{} with {streams} streams: codes differ", CLIPS[i]);
        }
        decode_batched(
            &m,
            streams,
            codes.iter().cloned().map(Ok::<_, Error>),
            |i, y| {
                pcm[i] = Some(y);
                Ok(())
            },
        )
        .unwrap();
        for (i, (y, (_, want))) in pcm.iter().zip(&expected).enumerate() {
            let y = y.as_ref().unwrap();
            assert_eq!(y.len(), want.len(), "{}", CLIPS[i]);
            worst = worst.max(max_abs_diff(y, want));
        }
        println!("{streams} streams: PCM max |diff| to single streams {worst:e}");
        assert!(worst < 1e-5, "{worst}");
    }
}

#[test]
fn streams_keep_their_own_state_across_uneven_ticks() {
    let m = load();
    let hop = m.hop();
    let clips: Vec<Vec<f32>> = ["clip5_8000", "clip6_16123", "clip7_161234"]
        .iter()
        .map(|c| read_clip(VARIANT, c))
        .collect();
    let n_qs = [2, 8, 5];
    let mut enc = BatchEncoder::new(m.clone(), 3, 1).unwrap();
    let mut dec = BatchDecoder::new(m.clone(), 3).unwrap();
    for (s, &n_q) in n_qs.iter().enumerate() {
        enc.set_n_q(s, n_q).unwrap();
    }
    let mut pos = [0usize; 3];
    let mut codes: Vec<Codes> = n_qs.iter().map(|&q| Codes::new(q)).collect();
    let mut pcm: Vec<Vec<f32>> = vec![Vec::new(); 3];
    let mut rng = XorShift(0xba7c_4000_0000_0001);
    let mut tick = 0;
    while (0..3).any(|s| pos[s] < clips[s].len()) {
        for s in 0..3 {
            // Stream 1 starts 7 ticks late; every stream skips about a third of the ticks.
            let busy = pos[s] < clips[s].len();
            if busy && !(s == 1 && tick < 7) && rng.range(0, 2) > 0 {
                let end = (pos[s] + hop).min(clips[s].len());
                enc.stage(s, &clips[s][pos[s]..end]).unwrap();
                pos[s] = end;
            }
        }
        enc.run(|s, f| {
            codes[s].push_frame(f)?;
            dec.stage(s, f)
        })
        .unwrap();
        dec.run(|s, y| {
            pcm[s].extend_from_slice(y);
            Ok(())
        })
        .unwrap();
        tick += 1;
    }
    for s in 0..3 {
        let (want_codes, want_pcm) = alone(&m, &clips[s], n_qs[s]);
        assert_eq!(codes[s], want_codes, "stream {s}");
        let d = max_abs_diff(&pcm[s], &want_pcm);
        assert!(d < 1e-5, "stream {s}: {d}");
    }
}

#[test]
fn bad_frames_are_refused_and_lose_nothing() {
    let m = load();
    let hop = m.hop();
    let pcm = read_clip(VARIANT, "clip5_8000");
    let mut enc = BatchEncoder::new(m.clone(), 2, 4).unwrap();
    let mut codes = Codes::new(4);
    let mut frames = pcm.chunks(hop);
    let first = frames.next().unwrap();
    enc.stage(0, first).unwrap();
    let e = enc.stage(0, first).unwrap_err().to_string();
    assert!(e.contains("already has a frame"), "{e}");
    assert!(enc.stage(2, first).is_err(), "stream out of range");
    let e = enc.stage(1, &[0.0, f32::INFINITY]).unwrap_err().to_string();
    assert!(e.contains("inf"), "{e}");
    let e = enc.stage(1, &vec![0.0; hop + 1]).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
    assert_eq!(enc.run(|_, f| codes.push_frame(f)).unwrap(), 1);
    for f in frames {
        enc.stage(0, f).unwrap();
        enc.run(|_, f| codes.push_frame(f)).unwrap();
    }
    assert_eq!(codes, alone(&m, &pcm, 4).0);

    let mut dec = BatchDecoder::new(m.clone(), 2).unwrap();
    let e = dec.stage(0, &[5000]).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    assert!(dec.stage(1, &[]).is_err(), "no quantizer");
    assert_eq!(dec.run(|_, _| Ok(())).unwrap(), 0);

    let windowed = CodecModel::load(model_dir("tiny_gn_ds640"))
        .unwrap()
        .shared();
    let e = BatchEncoder::new(windowed, 2, 4).err().unwrap().to_string();
    assert!(e.contains("no step graphs"), "{e}");
    assert!(BatchEncoder::new(m.clone(), 0, 4).is_err());
    let inputs = [Ok::<_, Error>(vec![0.1; 10]), Ok(vec![])];
    let e = encode_batched(&m, 4, 2, inputs.into_iter(), |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no samples"), "{e}");
}

/// A lost frame staged in a batch is concealed as a single stream's decoder conceals it.
#[test]
fn lost_frames_are_concealed_as_in_a_single_stream() {
    let m = load();
    let codes = stream_encode(&m, &read_clip(VARIANT, "clip6_16123"), 4);
    let lost = |t: usize| (5..8).contains(&t) || t == 12;
    let mut single = funcodec_core::StreamDecoder::new(m.clone()).unwrap();
    let mut want = Vec::new();
    let mut batch = BatchDecoder::new(m.clone(), 2).unwrap();
    let mut got = Vec::new();
    for t in 0..codes.frames {
        let mut keep = |p: &[f32]| {
            want.extend_from_slice(p);
            Ok(())
        };
        if lost(t) {
            single.conceal(&mut keep).unwrap();
            batch.stage_lost(1).unwrap();
        } else {
            single.push_frame(codes.frame(t), &mut keep).unwrap();
            batch.stage(1, codes.frame(t)).unwrap();
        }
        batch.stage(0, codes.frame(t)).unwrap();
        batch
            .run(|s, p| {
                if s == 1 {
                    got.extend_from_slice(p);
                }
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(got.len(), want.len());
    let d = max_abs_diff(&got, &want);
    assert!(d < 1e-5, "{d}");
    assert!(got != stream_decode(&m, &codes), "nothing was concealed");
}
