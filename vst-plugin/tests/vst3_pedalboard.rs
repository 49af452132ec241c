//! The built `.vst3` bundle in a third-party VST3 host: pedalboard (PyPI), which embeds JUCE's
//! VST3 hosting code, run headless by `pedalboard_vst3.py`.
//!
//! Python: `FUNCODEC_PLUGIN_PYTHON`, else `target/pyenv-plugin/bin/python` (scripts/test.sh
//! creates it with pedalboard and numpy). Without pedalboard the test reports that it did not
//! run, and fails if `FUNCODEC_REQUIRE_PEDALBOARD=1` (as in scripts/test.sh).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use funcodec_monitor::dsp::codec::CodecSource;
use funcodec_monitor::dsp::plan_for;

fn python() -> Option<PathBuf> {
    let py = std::env::var_os("FUNCODEC_PLUGIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            profile_dir()
                .parent()
                .unwrap()
                .join("pyenv-plugin/bin/python")
        });
    let ok = Command::new(&py)
        .args(["-c", "import pedalboard, numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(py)
}

#[test]
fn vst3_bundle_in_pedalboard() {
    let Some(py) = python() else {
        let required = std::env::var("FUNCODEC_REQUIRE_PEDALBOARD").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "pedalboard not available (scripts/test.sh installs it into target/pyenv-plugin)"
        );
        eprintln!("NOT RUN: pedalboard is not installed (see scripts/test.sh)");
        return;
    };
    let (_, vst3) = bundles();
    assert!(
        vst3.join("Contents")
            .join(format!("{}-linux", std::env::consts::ARCH))
            .join("FunCodec Monitor.so")
            .exists()
    );
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("vst-plugin/tests/pedalboard_vst3.py"))
        .arg(&vst3)
        .arg(tiny_model())
        .arg(default_model());
    for (rate, block) in [(48_000u32, 64usize), (44_100, 512), (96_000, 1000)] {
        let lat = plan_for(rate as f64, block, &Ok(CodecSource::Identity)).latency;
        cmd.arg(format!("{rate}:{block}={lat}"));
    }
    let out = cmd.output().expect("run python");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pedalboard checks failed");
}
