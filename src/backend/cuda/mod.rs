//! CUDA backend: bf16 weights, fp32 accumulation, hand-written kernels from `kernels/*.cu` (embedded at build
//! time) around cuBLAS GEMMs; only per-token statistics come back to the host. See KERNELS.md.
//!
//! - [`device`]: probing (no panics without a driver), context, stream, cuBLAS handle, memory helpers.
//! - [`kernels`]: the embedded fatbins and the entry-point table.
//! - [`ops`]: launch wrappers for the embedding, norm, rope and activation kernels, and the cuBLAS GEMMs.
//! - `attention`, `vocab_stats`: launch wrappers for the attention and vocabulary-statistics kernels.
//! - `attention_bench`: the attention kernels timed alone (`lark bench --attention-only`).
//! - [`forward`]: weights on the device and the forward pass over a packed batch.
//! - [`selftest`]: every kernel against the CPU reference, then whole models GPU vs CPU.

pub mod attention;
pub mod attention_bench;
pub mod device;
pub mod exec;
pub mod forward;
pub mod kernels;
#[cfg(test)]
mod mock;
pub mod ops;
pub mod selftest;
pub mod vocab_stats;

use super::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::model::Model;
use crate::stats::{StatsOptions, TokenStats};
pub use ops::Precision;

/// Whether CUDA device 0 is usable (driver, device, cuBLAS, kernels for its architecture); `Err` says why not.
/// Creates no context.
pub fn probe() -> std::result::Result<String, String> {
    device::check_usable(0).map(|d| d.summary())
}

/// Set to `1` to run GPU kernels that only the warp emulator and the mock device have checked (never a GPU).
pub const UNMEASURED_KERNELS_ENV: &str = "LARK_UNMEASURED_KERNELS";

/// Refuse, with a message saying why and how to opt in, a model whose GPU path includes a kernel that has not been
/// run on a GPU yet: the fused q/k-norm + RoPE kernel (Qwen3 students; YaRN's scaled cos/sin).
pub fn check_measured(c: &crate::model::ModelConfig, origin: &str) -> Result<()> {
    if !forward::needs_norm_rope(c) || std::env::var(UNMEASURED_KERNELS_ENV).is_ok_and(|v| v == "1") {
        return Ok(());
    }
    let what = match (c.qk_norm, c.rope_attention_factor() != 1.0) {
        (true, true) => "the per-head q/k RMSNorm and YaRN's attention factor",
        (true, false) => "the per-head q/k RMSNorm",
        _ => "YaRN's attention factor",
    };
    Err(LarkError::Unsupported(format!(
        "{origin}: {} needs {what} on the GPU, whose kernel (rope_norm_qkv_split) has been checked only under the \
         warp emulator and against the CPU reference, never run on a GPU: score on the CPU (--device cpu), check \
         the kernel with `lark selftest --device cuda`, or set {UNMEASURED_KERNELS_ENV}=1 to use it anyway",
        c.architecture.hf_name()
    )))
}

/// The CUDA backend: one GPU, the model's weights on it, the forward pass.
pub struct CudaBackend {
    gpu: device::Gpu,
    forward: forward::Forward<device::Gpu>,
    /// Highest device memory in use seen after a `score` call (workspaces only grow, so this is the peak).
    peak_used: u64,
}

impl CudaBackend {
    /// Open device `ordinal` and upload the model. Fails with a message naming what is missing (driver, device,
    /// cuBLAS, compiled kernels, memory) and never panics.
    pub fn new(model: &Model, ordinal: usize) -> Result<Self> {
        Self::with_precision(model, ordinal, Precision::Bf16)
    }

    /// As [`CudaBackend::new`], with the activation type of the forward pass ([`Precision`]). A model that needs a
    /// kernel no GPU has run yet is refused unless [`UNMEASURED_KERNELS_ENV`] is set (see [`check_measured`]).
    pub fn with_precision(model: &Model, ordinal: usize, precision: Precision) -> Result<Self> {
        check_measured(&model.config, &model.dir.join("config.json").display().to_string())?;
        Self::open_unmeasured(model, ordinal, precision)
    }

    /// [`CudaBackend::with_precision`] without the measured-kernels check: for `lark selftest`, which is how a
    /// new kernel gets measured.
    pub(crate) fn open_unmeasured(model: &Model, ordinal: usize, precision: Precision) -> Result<Self> {
        let gpu =
            device::Gpu::open(ordinal).map_err(|e| LarkError::Backend(format!("--device cuda:{ordinal}: {e}")))?;
        let forward = forward::Forward::with_precision(&gpu, model, precision)?;
        let mut b = CudaBackend { gpu, forward, peak_used: 0 };
        b.note_memory();
        Ok(b)
    }

    fn note_memory(&mut self) {
        if let Ok((free, total)) = self.gpu.mem_info() {
            self.peak_used = self.peak_used.max(total.saturating_sub(free) as u64);
        }
    }

    pub fn gpu(&self) -> &device::Gpu {
        &self.gpu
    }

    pub fn forward_mut(&mut self) -> &mut forward::Forward<device::Gpu> {
        &mut self.forward
    }

    /// The final-normed hidden states `[T, hidden]` of a packed batch (selftest).
    pub fn final_hidden(&mut self, batch: &[SeqRequest<'_>]) -> Result<Vec<f32>> {
        self.forward.final_hidden(&self.gpu, batch)
    }
}

impl Backend for CudaBackend {
    fn describe(&self) -> String {
        match self.forward.precision() {
            Precision::Bf16 => format!("cuda:{} ({})", self.gpu.info.ordinal, self.gpu.info.name),
            p => format!("cuda:{} ({}, {} activations)", self.gpu.info.ordinal, self.gpu.info.name, p.name()),
        }
    }

    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        // A job's worker may call this from a thread other than the one that opened the device: cudarc binds
        // the context for its own calls, but cuBLAS needs it current already.
        self.gpu.ctx.bind_to_thread().map_err(|e| LarkError::Backend(format!("binding the CUDA context: {e}")))?;
        let out = self.forward.score(&self.gpu, batch, opts);
        self.note_memory();
        out
    }

    /// Large packed batches keep the GEMMs efficient; the forward pass splits anything beyond what free
    /// memory allows (`max_tokens`) into groups of whole sequences.
    fn batch_token_budget(&self) -> usize {
        self.forward.max_tokens.clamp(1024, 65536)
    }

    fn work_model(&self) -> Option<crate::model::flops::WorkModel> {
        Some(crate::model::flops::WorkModel::of(&self.forward.model.config))
    }

    /// 100 TFLOP/s, below what an A100 sustains here: a chunk (4 batches of up to 64K tokens) is then rarely cut
    /// by work on a GPU, only for very long sequences of large models.
    fn nominal_flops_per_s(&self) -> f64 {
        100e12
    }

    /// Device memory in use (context, weights, workspaces), the most seen after any `score` call.
    fn peak_memory_bytes(&self) -> Option<u64> {
        Some(self.peak_used)
    }

    /// The cuBLAS bf16 GEMM ceiling of this GPU ([`ops::gemm_ceiling_tflops`], n = 8192).
    fn gemm_ceiling_tflops(&self) -> Result<Option<f64>> {
        self.gpu.ctx.bind_to_thread().map_err(|e| LarkError::Backend(format!("binding the CUDA context: {e}")))?;
        ops::gemm_ceiling_tflops(&self.gpu, 8192, 10).map(Some)
    }
}
