//! Backend selection: names, the CPU fallback of `auto`, a clear error for `cuda` where there is no
//! GPU, and, where a GPU answers, parity of the CUDA backend with FunCodec's golden codes.
//!
//! CI has no GPU: there the GPU parity test says that it is skipped and checks the error path
//! instead. Build with `--features cuda` to exercise tract's CUDA runtime and its driver probe.

mod common;

use common::*;
use funcodec_core::backend::{Engine, cuda_compiled};
use funcodec_core::stream::{StreamMode, decode_all, encode_all};
use funcodec_core::{Backend, CodecModel, Codes, Error};

/// GPU reductions sum in another order than FunCodec's CPU run, so a frame may pick the other
/// code where FunCodec's own best/second-best gap was this small (relative).
const GPU_TIE_MARGIN: f64 = 1e-4;

fn gpu_available() -> bool {
    Engine::resolve(Backend::Cuda).is_ok()
}

#[test]
fn backend_names_parse_and_print() {
    for name in Backend::NAMES {
        let b: Backend = name.parse().unwrap();
        assert_eq!(b.to_string(), name);
    }
    assert_eq!(" CUDA ".parse::<Backend>().unwrap(), Backend::Cuda);
    let err = "tpu".parse::<Backend>().unwrap_err().to_string();
    assert!(err.contains("cpu, cuda, auto"), "{err}");
}

#[test]
fn cpu_backend_is_the_default_load() {
    let (model, note) =
        CodecModel::load_with_backend(model_dir("tiny_gn_ds640"), Backend::Cpu).unwrap();
    assert_eq!(model.backend(), "cpu");
    assert!(note.is_none());
    assert_eq!(
        CodecModel::load(model_dir("tiny_gn_ds640"))
            .unwrap()
            .backend(),
        "cpu"
    );
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if gpu_available() {
        println!("a GPU answers here: the error path is not reachable (parity is tested instead)");
        return;
    }
    let err = match CodecModel::load_with_backend(model_dir("tiny_gn_ds640"), Backend::Cuda) {
        Ok(_) => panic!("backend cuda loaded without a usable GPU"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    let msg = err.to_string();
    if cuda_compiled() {
        assert!(msg.contains("CUDA"), "{msg}");
    } else {
        assert!(msg.contains("--features cuda"), "{msg}");
    }
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why() {
    let (model, note) =
        CodecModel::load_with_backend(model_dir("tiny_causal_ds640"), Backend::Auto).unwrap();
    let note = note.expect("auto always says what it chose");
    if gpu_available() {
        assert_eq!(model.backend(), "cuda", "{note}");
    } else {
        assert_eq!(model.backend(), "cpu");
        assert!(note.contains("using the CPU"), "{note}");
    }
    // Whatever it chose, it codes (the parity test below holds it to FunCodec's codes on a GPU).
    let golden = golden("tiny_causal_ds640");
    let clip = &golden.clips[0];
    let pcm = read_clip("tiny_causal_ds640", &clip.name);
    let enc = model.encode(&pcm, 2).unwrap();
    assert_eq!(enc.codes.frames, pcm.len().div_ceil(model.hop()));
}

/// On a GPU: offline codes equal FunCodec's (bar near-ties) and waveforms within 1e-3 for every
/// golden variant, and exact streaming of the causal model equals the CPU's streaming codes.
#[test]
fn cuda_matches_funcodec_where_a_gpu_answers() {
    if !gpu_available() {
        println!(
            "skipped: no CUDA backend here ({}); run on a GPU machine with `--features cuda`",
            Engine::resolve(Backend::Cuda).unwrap_err()
        );
        return;
    }
    for variant in VARIANTS {
        let (gpu, _) = CodecModel::load_with_backend(model_dir(variant), Backend::Cuda).unwrap();
        assert_eq!(gpu.backend(), "cuda");
        let golden = golden(variant);
        let (mut near_ties, mut frames, mut worst) = (0, 0, 0.0f32);
        for clip in &golden.clips {
            let pcm = read_clip(variant, &clip.name);
            for run in &clip.runs {
                let enc = gpu.encode(&pcm, run.n_q).unwrap();
                let what = format!("cuda {variant}/{} n_q {}", clip.name, run.n_q);
                near_ties +=
                    assert_codes_match_within(&enc.codes.to_rows(), run, &what, GPU_TIE_MARGIN);
                frames += enc.codes.frames;
                let decoded = gpu.decode(&Codes::from_rows(&run.codes).unwrap()).unwrap();
                let d = max_abs_diff(&decoded, &read_f32(variant, &run.decoded));
                assert!(d < 1e-3, "{variant}/{}: max |diff| {d}", clip.name);
                worst = worst.max(d);
            }
        }
        println!(
            "cuda {variant}: {frames} frames, {near_ties} near-tie differences, worst waveform \
             max|diff| {worst:.3e}"
        );
    }

    let variant = "tiny_causal_ds640";
    let cpu = CodecModel::load(model_dir(variant)).unwrap();
    let (gpu, _) = CodecModel::load_with_backend(model_dir(variant), Backend::Cuda).unwrap();
    let pcm = read_clip(variant, &golden(variant).clips[0].name);
    let a = encode_all(&cpu, &pcm, 4, StreamMode::Exact).unwrap();
    let b = encode_all(&gpu, &pcm, 4, StreamMode::Exact).unwrap();
    assert_eq!(a.to_rows(), b.to_rows(), "streaming codes, cpu vs cuda");
    let ya = decode_all(&cpu, &a, StreamMode::Exact).unwrap();
    let yb = decode_all(&gpu, &a, StreamMode::Exact).unwrap();
    assert!(max_abs_diff(&ya, &yb) < 1e-3);
}
