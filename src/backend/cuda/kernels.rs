//! The embedded kernels: one fatbin per `kernels/*.cu` (compiled by build.rs), each loaded once per context as
//! a module, and a table of their entry points looked up by name across the modules (each lookup cached).
//!
//! Wrappers fetch a function with [`Kernels::get`] (`gpu.kernels.get("rmsnorm_residual_bf16")?`) and launch it
//! on `gpu.stream` with cudarc's launch builder. A name missing from the fatbin is an error naming it, so a
//! wrapper/kernel mismatch shows up at backend creation ([`Kernels::check_all`]) rather than mid-batch.

use crate::error::{LarkError, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/lark_kernels.rs"));
}
pub use embedded::{ARCHS, BUILD_NOTE, COMPILED, FATBINS, NVCC_VERSION, RESOURCE_USAGE, SOURCES};

/// Every `extern "C"` entry point the Rust side launches. [`Kernels::check_all`] resolves each one when a
/// backend is created; `lark doctor` lists them.
pub const ENTRY_POINTS: &[&str] = &[
    // kernels/embedding.cu
    "embedding_gather_bf16",
    // kernels/norm.cu
    "rmsnorm_residual_bf16",
    // kernels/rope.cu
    "rope_qkv_split_bf16",
    "rope_norm_qkv_split_bf16",
    // kernels/activation.cu
    "swiglu_bf16",
    // kernels/attention.cu (K)
    "attention_varlen_bf16_hd64",
    "attention_varlen_bf16_hd128",
    "attention_varlen_bf16_hd64_br128",
    "attention_varlen_bf16_hd128_br128",
    "attention_varlen_bf16_hd64_br128_w32",
    "attention_varlen_bf16_hd128_br128_w32",
    "attention_varlen_generic",
    "attention_varlen_generic_f32",
    // kernels/vocab_stats.cu (K)
    "vocab_stats_f32",
    "vocab_topk_brier_f32",
];

/// One line for `lark doctor` and error messages: are the kernels in this binary, and for which GPUs.
pub fn describe() -> String {
    if COMPILED {
        format!(
            "compiled ({} files, {} bytes; archs {}; {})",
            FATBINS.len(),
            FATBINS.iter().map(|(_, b)| b.len()).sum::<usize>(),
            ARCHS.join(", "),
            NVCC_VERSION
        )
    } else {
        format!("not compiled: {}", BUILD_NOTE.lines().next().unwrap_or("unknown reason"))
    }
}

/// Whether the fatbin has code a device of compute capability `major.minor` can run: SASS of the same major
/// version and a minor version not above the device's, or PTX of a version not above the device's (JIT).
pub fn supports(major: i32, minor: i32) -> bool {
    let dev = major * 10 + minor;
    ARCHS.iter().any(|a| {
        if let Some(v) = a.strip_prefix("sm_").and_then(|v| v.parse::<i32>().ok()) {
            v / 10 == major && v <= dev
        } else if let Some(v) = a.strip_prefix("compute_").and_then(|v| v.parse::<i32>().ok()) {
            v <= dev
        } else {
            false
        }
    })
}

/// The loaded modules (one per kernel file) and a cache of their functions.
pub struct Kernels {
    modules: Vec<(&'static str, Arc<CudaModule>)>,
    cache: Mutex<HashMap<String, CudaFunction>>,
}

impl Kernels {
    /// Load the embedded fatbins into `ctx`. Fails with "kernels not compiled" when the build had no nvcc.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        if !COMPILED || FATBINS.is_empty() {
            return Err(LarkError::Backend(format!(
                "CUDA kernels not compiled into this binary ({}); rebuild with nvcc available \
                 (scripts/install-cuda-toolchain.sh, or set NVCC)",
                BUILD_NOTE.lines().next().unwrap_or("")
            )));
        }
        let mut modules = Vec::new();
        for (file, bytes) in FATBINS {
            // The driver reads the fatbin header with wide loads: give it an owned, malloc-aligned copy.
            let image = cudarc::nvrtc::Ptx::from_binary(bytes.to_vec());
            let module = ctx.load_module(image).map_err(|e| {
                LarkError::Backend(format!(
                    "loading the embedded kernels of {file} (archs {}) failed: {e}; a driver older than the nvcc \
                     that built them ({NVCC_VERSION}) rejects them",
                    ARCHS.join(", ")
                ))
            })?;
            modules.push((*file, module));
        }
        Ok(Kernels { modules, cache: Mutex::new(HashMap::new()) })
    }

    /// The entry point `name`, from whichever kernel file defines it (cached after the first lookup).
    pub fn get(&self, name: &str) -> Result<CudaFunction> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        for (_, m) in &self.modules {
            if let Ok(f) = m.load_function(name) {
                cache.insert(name.to_string(), f.clone());
                return Ok(f);
            }
        }
        let files: Vec<&str> = self.modules.iter().map(|(f, _)| *f).collect();
        Err(LarkError::Backend(format!("kernel `{name}` not found in the embedded kernels ({})", files.join(", "))))
    }

    /// Resolve every name of [`ENTRY_POINTS`]; the error lists all that are missing.
    pub fn check_all(&self) -> Result<()> {
        let missing: Vec<&str> = ENTRY_POINTS.iter().copied().filter(|n| self.get(n).is_err()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LarkError::Backend(format!("kernels missing from the embedded fatbin: {}", missing.join(", "))))
        }
    }

    /// (registers per thread, local-memory bytes per thread, static shared bytes) of a kernel, for the selftest
    /// and doctor reports.
    pub fn resources(&self, name: &str) -> Result<(i32, i32, i32)> {
        let f = self.get(name)?;
        let e = |x: cudarc::driver::DriverError| LarkError::Backend(format!("kernel `{name}` attributes: {x}"));
        Ok((f.num_regs().map_err(e)?, f.local_size_bytes().map_err(e)?, f.shared_size_bytes().map_err(e)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_support_rules() {
        if !COMPILED {
            assert!(!supports(9, 0));
            return;
        }
        assert!(supports(8, 0)); // SASS
        assert!(supports(8, 6)); // sm_80 SASS runs on 8.6
        assert!(supports(8, 9));
        assert!(supports(9, 0)); // SASS
        assert!(supports(10, 0)); // PTX JIT
        assert!(!supports(7, 5));
    }

    #[test]
    fn describe_says_whether_compiled() {
        let d = describe();
        assert_eq!(d.starts_with("compiled"), COMPILED, "{d}");
    }
}
