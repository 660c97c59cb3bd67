//! Compiles every `kernels/*.cu` into the embedded kernels: SASS for sm_80 and sm_90, PTX for compute_80.
//!
//! Each `.cu` file is its own translation unit (kernel files keep their helpers file-local, see
//! kernels/common.cuh) and becomes one fatbin; the generated `lark_kernels.rs` embeds them all as
//! `FATBINS: &[(file name, bytes)]`, which the runtime loads as one module each and searches by entry-point
//! name. A fatbin is cached in OUT_DIR under a hash of its source, every header and the flags, so editing one
//! kernel file recompiles only that file.
//!
//! Without nvcc the build still succeeds: a cargo warning, no fatbins, and the CUDA backend reports "kernels not
//! compiled" at run time. `LARK_REQUIRE_KERNELS=1` turns a missing nvcc or a compile error into a build failure
//! (CI sets it). `LARK_SKIP_KERNELS=1` skips nvcc even when present (quick CPU-only builds). `LARK_NVCC_FLAGS`
//! appends flags (e.g. `-lineinfo`).
//!
//! Also written to OUT_DIR: `resource-usage.txt` (ptxas registers / stack / spills per kernel and architecture),
//! summarised in the `RESOURCE_USAGE` const for `lark doctor`.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// SASS for Ampere (sm_80, also runs on sm_86/89) and Hopper (sm_90), PTX for compute_80 so newer GPUs JIT it.
const GENCODE: &[&str] = &["-gencode=arch=compute_80,code=[sm_80,compute_80]", "-gencode=arch=compute_90,code=sm_90"];
const ARCHS: &[&str] = &["sm_80", "compute_80", "sm_90"];
const FLAGS: &[&str] = &["-O3", "-std=c++17", "--threads", "0", "--resource-usage", "-Xptxas", "-warn-spills"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels_dir = manifest.join("kernels");
    for var in ["NVCC", "LARK_REQUIRE_KERNELS", "LARK_SKIP_KERNELS", "LARK_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The directory itself, so that adding or removing a kernel file reruns us.
    println!("cargo:rerun-if-changed={}", kernels_dir.display());
    let toolchain_nvcc = manifest.join(".toolchain/cuda/nvidia/cu13/bin/nvcc");
    println!("cargo:rerun-if-changed={}", toolchain_nvcc.display());

    let mut sources: Vec<PathBuf> = Vec::new();
    let mut headers: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = fs::read_dir(&kernels_dir) {
        for e in rd.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("cu") => sources.push(p),
                Some("cuh") | Some("h") => headers.push(p),
                _ => {}
            }
        }
    }
    sources.sort();
    headers.sort();
    for s in sources.iter().chain(&headers) {
        println!("cargo:rerun-if-changed={}", s.display());
    }

    let require = env::var("LARK_REQUIRE_KERNELS").map(|v| v == "1").unwrap_or(false);
    let skip = env::var("LARK_SKIP_KERNELS").map(|v| v == "1").unwrap_or(false);
    let names: Vec<String> =
        sources.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();

    let outcome: Result<(String, Vec<PathBuf>, String), String> = if skip && !require {
        Err("LARK_SKIP_KERNELS=1".into())
    } else if sources.is_empty() {
        Err(format!("no kernels/*.cu under {}", kernels_dir.display()))
    } else {
        match find_nvcc(&toolchain_nvcc) {
            None => Err("nvcc not found ($NVCC, .toolchain/cuda (scripts/install-cuda-toolchain.sh), PATH, \
                         /usr/local/cuda/bin)"
                .into()),
            Some(nvcc) => compile_all(&nvcc, &sources, &headers, &kernels_dir, &out_dir),
        }
    };

    let (compiled, nvcc_version, fatbins, note) = match outcome {
        Ok((version, fatbins, usage)) => (true, version, fatbins, usage),
        Err(why) => {
            if require {
                panic!("LARK_REQUIRE_KERNELS=1 but the CUDA kernels were not compiled: {why}");
            }
            let mut lines = why.lines();
            let first = lines.next().unwrap_or("");
            println!("cargo:warning=CUDA kernels not compiled ({first}); the CUDA backend will be unavailable");
            for l in lines.take(12) {
                println!("cargo:warning=  {l}");
            }
            (false, String::new(), Vec::new(), why)
        }
    };

    let mut rs = String::new();
    writeln!(
        rs,
        "/// The embedded kernels: (source file name, fatbin), one per kernels/*.cu; empty when not compiled."
    )
    .unwrap();
    writeln!(rs, "pub const FATBINS: &[(&str, &[u8])] = &[").unwrap();
    for (name, f) in names.iter().zip(&fatbins) {
        writeln!(rs, "    ({name:?}, include_bytes!({:?})),", f.display().to_string()).unwrap();
    }
    writeln!(rs, "];").unwrap();
    writeln!(rs, "/// Whether nvcc compiled the kernels.").unwrap();
    writeln!(rs, "pub const COMPILED: bool = {compiled};").unwrap();
    writeln!(rs, "/// Architectures in each fatbin (sm_* = SASS, compute_* = PTX); empty when not compiled.").unwrap();
    let archs: Vec<&str> = if compiled { ARCHS.to_vec() } else { Vec::new() };
    writeln!(rs, "pub const ARCHS: &[&str] = &{archs:?};").unwrap();
    writeln!(rs, "/// The kernel sources found under kernels/.").unwrap();
    writeln!(rs, "pub const SOURCES: &[&str] = &{names:?};").unwrap();
    writeln!(rs, "/// `nvcc --version`'s release line.").unwrap();
    writeln!(rs, "pub const NVCC_VERSION: &str = {nvcc_version:?};").unwrap();
    let (build_note, usage) = if compiled { (String::new(), note) } else { (note, String::new()) };
    writeln!(rs, "/// Why the kernels were not compiled (empty when they were).").unwrap();
    writeln!(rs, "pub const BUILD_NOTE: &str = {build_note:?};").unwrap();
    writeln!(rs, "/// ptxas resource usage, one line per kernel and architecture.").unwrap();
    writeln!(rs, "pub const RESOURCE_USAGE: &str = {usage:?};").unwrap();
    fs::write(out_dir.join("lark_kernels.rs"), rs).expect("write lark_kernels.rs");
}

fn find_nvcc(toolchain_nvcc: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    if toolchain_nvcc.is_file() {
        return Some(toolchain_nvcc.to_path_buf());
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let c = dir.join("nvcc");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let c = PathBuf::from("/usr/local/cuda/bin/nvcc");
    c.is_file().then_some(c)
}

/// Compile each source to its own fatbin (reusing a cached one when source, headers, flags and nvcc are
/// unchanged). Returns (nvcc version, fatbin paths in source order, resource summary) or the error text.
fn compile_all(
    nvcc: &Path,
    sources: &[PathBuf],
    headers: &[PathBuf],
    kernels_dir: &Path,
    out_dir: &Path,
) -> Result<(String, Vec<PathBuf>, String), String> {
    let version =
        Command::new(nvcc).arg("--version").output().map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find(|l| l.contains("release"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let extra: Vec<String> =
        env::var("LARK_NVCC_FLAGS").map(|f| f.split_whitespace().map(String::from).collect()).unwrap_or_default();

    // Everything but the file's own text that changes what nvcc produces.
    let mut common = DefaultHasher::new();
    (nvcc.display().to_string(), &version, GENCODE, FLAGS, &extra).hash(&mut common);
    for h in headers {
        fs::read(h).map_err(|e| format!("read {}: {e}", h.display()))?.hash(&mut common);
    }

    let mut fatbins = Vec::new();
    let mut usage = String::new();
    let mut full_log = String::new();
    for src in sources {
        let text = fs::read(src).map_err(|e| format!("read {}: {e}", src.display()))?;
        let mut h = common.clone();
        text.hash(&mut h);
        let stem = src.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let key = format!("{stem}-{:016x}", h.finish());
        let fatbin = out_dir.join(format!("{key}.fatbin"));
        let log_path = out_dir.join(format!("{key}.log"));
        if !(fatbin.is_file() && log_path.is_file()) {
            let tmp = out_dir.join(format!("{key}.fatbin.tmp"));
            let out = Command::new(nvcc)
                .arg("--fatbin")
                .args(GENCODE)
                .args(FLAGS)
                .args(&extra)
                .arg("-I")
                .arg(kernels_dir)
                .arg("-o")
                .arg(&tmp)
                .arg(src)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if !out.status.success() {
                let head: Vec<&str> =
                    log.lines().filter(|l| !l.trim().is_empty() && !l.contains("ptxas info")).take(40).collect();
                return Err(format!("nvcc failed on {} ({}):\n{}", src.display(), out.status, head.join("\n")));
            }
            fs::write(&log_path, &log).map_err(|e| format!("write {}: {e}", log_path.display()))?;
            fs::rename(&tmp, &fatbin).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
            // Drop this file's stale cache entries (older versions of the source).
            if let Ok(rd) = fs::read_dir(out_dir) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let stale = n.strip_prefix(&format!("{stem}-")).is_some_and(|r| {
                        r.len() >= 16 && r[..16].chars().all(|c| c.is_ascii_hexdigit()) && !n.starts_with(&key)
                    });
                    if stale {
                        fs::remove_file(e.path()).ok();
                    }
                }
            }
        }
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        for l in
            log.lines().filter(|l| l.contains("spill") && !l.contains(" 0 bytes spill stores, 0 bytes spill loads"))
        {
            println!("cargo:warning=ptxas ({stem}): {}", l.trim());
        }
        writeln!(full_log, "==== {}\n{log}", src.display()).unwrap();
        usage.push_str(&summarize(&log));
        fatbins.push(fatbin);
    }
    fs::write(out_dir.join("resource-usage.txt"), &full_log).ok();
    Ok((version, fatbins, usage))
}

/// One line per kernel and architecture from nvcc's --resource-usage output:
/// "sm_90 name: 40 registers, 0 bytes stack, 0/0 bytes spill stores/loads, 1024 bytes smem".
fn summarize(log: &str) -> String {
    let mut s = String::new();
    let (mut arch, mut func, mut props_of) = (String::new(), String::new(), String::new());
    let mut frame = String::new();
    for line in log.lines() {
        let l = line.trim();
        if let Some(i) = l.find("Compiling entry function '") {
            let rest = &l[i + "Compiling entry function '".len()..];
            func = rest.split('\'').next().unwrap_or("").to_string();
            arch = rest.split("for '").nth(1).and_then(|a| a.split('\'').next()).unwrap_or("").to_string();
            frame.clear();
        } else if let Some(name) = l.split("Function properties for ").nth(1) {
            props_of = name.trim().to_string();
        } else if l.contains("bytes stack frame") && props_of == func {
            // "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
            let n: Vec<&str> = l.split(',').map(|p| p.split_whitespace().next().unwrap_or("?")).collect();
            frame = format!(
                "{} bytes stack, {}/{} bytes spill stores/loads",
                n[0],
                n.get(1).unwrap_or(&"?"),
                n.get(2).unwrap_or(&"?")
            );
        } else if l.contains("Used ") && l.contains("registers") && !func.is_empty() {
            let regs = l.split("Used ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("?");
            let smem = l.split(", ").find(|p| p.ends_with("smem")).unwrap_or("0 bytes smem");
            writeln!(s, "{arch} {func}: {regs} registers, {frame}, {smem}").unwrap();
            func.clear();
        }
    }
    s
}
