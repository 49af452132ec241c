//! Bad input gives a clear error, never a panic: broken model folders, corrupt or truncated
//! bitstreams, NaN/inf/empty audio, impossible code values.

mod common;

use std::path::Path;

use common::*;
use funcodec_core::bitstream::{self, BitstreamError, StreamHeader};
use funcodec_core::{CodecModel, Codes, Error};

fn copy_model(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(model_dir(VARIANTS[0])).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match CodecModel::load(dir) {
        Ok(_) => panic!("broken model folder {} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_model_folders_are_refused_with_the_reason() {
    assert!(load_err(Path::new("/nonexistent/model")).contains("not a directory"));

    let d = scratch("missing-manifest");
    copy_model(&d);
    std::fs::remove_file(d.join("manifest.json")).unwrap();
    assert!(load_err(&d).contains("no manifest.json"));

    let d = scratch("missing-graph");
    copy_model(&d);
    std::fs::remove_file(d.join("encoder_3.onnx")).unwrap();
    let msg = load_err(&d);
    assert!(
        msg.contains("encoder_3.onnx") && msg.contains("cannot read"),
        "{msg}"
    );

    let d = scratch("truncated-codebooks");
    copy_model(&d);
    let cb = d.join("codebooks.f32");
    let bytes = std::fs::read(&cb).unwrap();
    std::fs::write(&cb, &bytes[..bytes.len() - 4]).unwrap();
    assert!(load_err(&d).contains("size is"));

    let d = scratch("swapped-graph");
    copy_model(&d);
    std::fs::copy(d.join("encoder_1.onnx"), d.join("encoder_2.onnx")).unwrap();
    let msg = load_err(&d);
    assert!(
        msg.contains("encoder_2.onnx") && msg.contains("size") || msg.contains("checksum"),
        "{msg}"
    );

    let d = scratch("bad-json");
    copy_model(&d);
    std::fs::write(d.join("manifest.json"), "{ not json").unwrap();
    assert!(load_err(&d).contains("manifest.json"));

    let d = scratch("future-format");
    copy_model(&d);
    let m = std::fs::read_to_string(d.join("manifest.json")).unwrap();
    std::fs::write(
        d.join("manifest.json"),
        m.replace("\"format_version\": 1", "\"format_version\": 9"),
    )
    .unwrap();
    assert!(load_err(&d).contains("newer than this runtime"));
}

#[test]
fn nan_inf_and_empty_audio_are_refused() {
    let model = CodecModel::load(model_dir(VARIANTS[0])).unwrap();
    let mut pcm = vec![0.1f32; 3000];
    pcm[1234] = f32::NAN;
    let e = model.encode(&pcm, 2).unwrap_err();
    assert!(
        matches!(e, Error::Audio(_)) && e.to_string().contains("sample 1234"),
        "{e}"
    );
    pcm[1234] = f32::INFINITY;
    assert!(matches!(model.encode(&pcm, 2), Err(Error::Audio(_))));
    assert!(matches!(model.encode(&[], 2), Err(Error::Audio(_))));
    // Silence is valid input: FunCodec's epsilon keeps the RMS division finite.
    let enc = model.encode(&[0.0; 700], 2).unwrap();
    assert_eq!(enc.codes.frames, 2);
}

#[test]
fn impossible_codes_and_quantizer_counts_are_refused() {
    let model = CodecModel::load(model_dir(VARIANTS[0])).unwrap();
    assert!(matches!(
        model.encode(&[0.1; 100], 0),
        Err(Error::Argument(_))
    ));
    assert!(matches!(
        model.encode(&[0.1; 100], 9),
        Err(Error::Argument(_))
    ));
    let bad = Codes::from_rows(&[vec![1, 2, 1024]]).unwrap();
    assert!(matches!(model.decode(&bad), Err(Error::Codes(_))));
    assert!(Codes::from_rows(&[vec![1, 2], vec![3]]).is_err());
}

fn header() -> StreamHeader {
    StreamHeader {
        model_id: "m".into(),
        model_hash: [7; 16],
        sample_rate: 16000,
        hop: 640,
        codebook_size: 1024,
        max_quantizers: 8,
        total_samples: Some(1300),
        level: Some(0.1),
    }
}

#[test]
fn corrupt_and_truncated_streams_are_errors() {
    let frames = vec![vec![1u16, 2, 3], vec![1023, 0, 5], vec![9, 9, 9]];
    let mut bytes = Vec::new();
    bitstream::write_stream(&header(), &frames, &mut bytes).unwrap();
    let (h, packets) = bitstream::read_stream(&bytes).unwrap();
    assert_eq!(h, header());
    assert_eq!(
        packets.iter().map(|p| p.codes.clone()).collect::<Vec<_>>(),
        frames
    );
    // Every truncation is an error (1300 samples need exactly 3 frames).
    for cut in 0..bytes.len() {
        assert!(
            bitstream::read_stream(&bytes[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    // Every single-bit flip is caught by a CRC or a validity check.
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(bitstream::read_stream(&b).is_err(), "bit flip {i} accepted");
    }
    let mut wrong = bytes.clone();
    wrong[0] = b'X';
    assert!(
        bitstream::read_stream(&wrong)
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
    assert!(matches!(
        bitstream::read_stream(b"RIFF1234"),
        Err(BitstreamError::BadMagic { .. }) | Err(_)
    ));
}
