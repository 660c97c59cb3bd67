//! The CUDA build without a GPU: the kernels are embedded when the build required them (CI sets
//! LARK_REQUIRE_KERNELS=1), `lark doctor` reports cleanly and exits 0 on a machine without a driver, and
//! `lark selftest` refuses to pass without a GPU.

use lark::backend::cuda::{device, kernels};
use std::process::Command;

/// The fatbin container's magic number (little-endian 0xBA55ED50).
const FATBIN_MAGIC: [u8; 4] = [0x50, 0xED, 0x55, 0xBA];

#[test]
fn kernels_are_embedded_when_required() {
    // Never `ok` for kernels that were not built: the README's test command installs the pinned nvcc.
    let compiled = kernels::COMPILED; // a build-time constant: a variable keeps clippy from calling it one
    assert!(
        compiled,
        "the CUDA kernels were not compiled ({}): run `bash scripts/install-cuda-toolchain.sh` (scripts/test.sh does)",
        kernels::BUILD_NOTE
    );
    assert_eq!(kernels::ARCHS, &["sm_80", "compute_80", "sm_90"]);
    assert!(!kernels::FATBINS.is_empty());
    assert_eq!(kernels::FATBINS.len(), kernels::SOURCES.len(), "one fatbin per kernels/*.cu");
    for (name, bytes) in kernels::FATBINS {
        assert!(bytes.len() > 64 && bytes[..4] == FATBIN_MAGIC, "{name}: not a fatbin ({} bytes)", bytes.len());
    }
    for f in ["embedding.cu", "norm.cu", "rope.cu", "activation.cu", "attention.cu", "vocab_stats.cu"] {
        assert!(kernels::SOURCES.contains(&f), "{f} missing from {:?}", kernels::SOURCES);
    }
    // Every entry point the Rust side launches appears in the ptxas report, for both SASS targets.
    for name in kernels::ENTRY_POINTS {
        for arch in ["sm_80", "sm_90"] {
            let needle = format!("{arch} {name}:");
            assert!(kernels::RESOURCE_USAGE.contains(&needle), "no {needle} in the resource report");
        }
    }
}

#[test]
fn no_kernel_spills_registers() {
    for line in kernels::RESOURCE_USAGE.lines() {
        assert!(line.contains(" 0/0 bytes spill"), "spill: {line}");
    }
}

#[test]
fn doctor_exits_zero_and_reports() {
    let out = Command::new(env!("CARGO_BIN_EXE_lark")).args(["doctor", "--kernels"]).output().expect("run lark doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lark doctor failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("kernels"), "{text}");
    if kernels::COMPILED {
        assert!(text.contains("sm_80") && text.contains("sm_90"), "{text}");
    } else {
        assert!(text.contains("not compiled"), "{text}");
    }
    if !device::driver_present() {
        assert!(text.contains("no CUDA driver found"), "{text}");
        assert!(text.contains("cpu only"), "{text}");
    }
}

#[test]
fn selftest_fails_without_a_gpu() {
    if device::check_usable(0).is_ok() {
        return; // a GPU is here: the real selftest is for `lark selftest`, not a unit test
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lark"))
        .args(["selftest", "--device", "cuda", "--kernels-only"])
        .output()
        .expect("run lark selftest");
    assert!(!out.status.success(), "selftest must not pass without a GPU");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no CUDA device: selftest needs a GPU"), "{err}");
}

#[test]
fn attention_only_bench_needs_one_cuda_device() {
    let bench = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lark"))
            .args(["bench", "--preset", "qwen2.5-7b", "--attention-only", "--lengths", "fixed:64", "--tokens", "128"])
            .args(args)
            .output()
            .expect("run lark bench");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // The CPU backend has no attention kernels to time: refused before any work.
    let (code, err) = bench(&["--device", "cpu"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--attention-only times one CUDA device"), "{err}");
    if device::check_usable(0).is_ok() {
        return; // a GPU is here: the timing itself is for the device call (scripts/gpu-bench.sh)
    }
    let (code, err) = bench(&["--device", "cuda"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CUDA"), "{err}");
}

#[test]
fn cuda_backend_says_why_it_is_unavailable() {
    if device::check_usable(0).is_ok() {
        return;
    }
    let why = lark::backend::cuda::probe().unwrap_err();
    assert!(!why.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let cfg = lark::model::random::tiny_config(lark::model::Architecture::Qwen2);
    lark::model::random::write_random_model(dir.path(), &cfg, lark::model::StoredDtype::F32, 1).unwrap();
    let model = lark::model::Model::open(dir.path()).unwrap();
    let err = lark::backend::cuda::CudaBackend::new(&model, 0).err().expect("no GPU here");
    assert!(err.to_string().contains("--device cuda:0"), "{err}");
    // --device auto falls back to the CPU and says why.
    let (_b, desc) =
        lark::backend::open_backend(&model, &lark::backend::DeviceChoice::Auto, Default::default()).unwrap();
    assert!(desc.starts_with("cpu") && desc.contains("auto"), "{desc}");
}

/// Compile `kernels/emu/<source>` as C++ under the warp emulator (kernels/emu/emu.h), run it with `args` and
/// require success and `ok_marker` in its output. Fails, with the install command, when no g++ is installed.
fn run_under_the_emulator(source: &str, args: &[&str], ok_marker: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    assert!(
        Command::new(&cxx).arg("--version").output().is_ok(),
        "no {cxx}: the emulator check of {source} cannot run: `apt-get install g++` (scripts/test.sh installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(source.trim_end_matches(".cpp"));
    let emu = root.join("kernels/emu");
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-fno-strict-aliasing", "-DLARK_EMULATE", "-I"])
        .arg(emu.join("fake"))
        .arg("-I")
        .arg(root.join("kernels"))
        .arg("-include")
        .arg(emu.join("emu.h"))
        .arg("-o")
        .arg(&exe)
        .arg(emu.join(source))
        .output()
        .unwrap();
    assert!(out.status.success(), "compile {source}: {}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && text.contains(ok_marker), "{text}\n{}", String::from_utf8_lossy(&run.stderr));
}

/// kernels/emu/test_layers.cpp: the embedding, norm, rope and SwiGLU kernels checked against fp64 references.
#[test]
fn layer_kernels_under_the_emulator() {
    run_under_the_emulator("test_layers.cpp", &[], "all ok");
}

/// kernels/emu/test_kernels.cpp --quick: every attention kernel (64/128-row tiles, 16/32 rows per warp, generic,
/// fp32) and the vocabulary-statistics kernels against fp64 references, with cp.async copies landing only at the
/// wait that retires them (a read before its wait fails). The full set of cases: `kernels/emu/run.sh`.
#[test]
fn attention_and_vocab_kernels_under_the_emulator() {
    run_under_the_emulator("test_kernels.cpp", &["--quick"], "all emulated kernel checks passed");
}
