//! Launch wrappers for the one-pass vocabulary statistics and the compat top-K Brier (kernels/vocab_stats.cu).
//!
//! Input: a block of fp32 logits, `rows` rows of `vocab` values, row r at element offset `r · row_stride`
//! (`row_stride ≥ vocab`; any value, rows need not be aligned), and one int32 gold token per row. Output: one value
//! per row in each of the separate output arrays (structure of arrays), so the host copies back only
//! 4–5 numbers per scored position. The formulas are those of [`crate::stats::vocab_stats_row`] and
//! [`crate::stats::topk_brier`], which the selftest compares against.

use super::device::{cu, Gpu};
use super::ops::DevPtr;
use crate::error::{LarkError, Result};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

/// Threads per block (one block per row); must equal `VS_THREADS` in kernels/vocab_stats.cu.
const THREADS: u32 = 256;
/// Largest vocabulary the kernels index (32-bit element indices with headroom for the unrolled loop).
pub const MAX_VOCAB: usize = 1 << 30;

pub const STATS_ENTRY: &str = "vocab_stats_f32";
pub const TOPK_ENTRY: &str = "vocab_topk_brier_f32";

/// The logits block and gold tokens shared by both kernels.
#[derive(Debug, Clone, Copy)]
pub struct LogitsBlock {
    /// fp32, `rows` rows at a stride of `row_stride` elements.
    pub logits: DevPtr,
    /// int32 `[rows]`; an id outside `[0, vocab)` yields NaN statistics and rank 0.
    pub gold: DevPtr,
    pub rows: usize,
    pub vocab: usize,
    pub row_stride: usize,
}

/// Output arrays of [`vocab_stats`], each `[rows]`.
#[derive(Debug, Clone, Copy)]
pub struct StatsOut {
    /// f32: log Σ exp z.
    pub lse: DevPtr,
    /// f32: z_gold − lse.
    pub logprob: DevPtr,
    /// f32: Σ π².
    pub sum_p2: DevPtr,
    /// f32: −Σ π log π.
    pub entropy: DevPtr,
    /// u32: 1 + #{v : z_v > z_gold}.
    pub rank: DevPtr,
}

/// Grid and block for `block`, after checking what the kernels rely on.
pub fn launch_config(what: &str, block: &LogitsBlock) -> Result<LaunchConfig> {
    let bad = |m: String| Err(LarkError::Backend(format!("{what}: {m}")));
    if block.vocab == 0 || block.vocab > MAX_VOCAB {
        return bad(format!("vocab {} (1..={MAX_VOCAB})", block.vocab));
    }
    if block.row_stride < block.vocab || block.row_stride > i64::MAX as usize {
        return bad(format!("row stride {} is smaller than the vocab {}", block.row_stride, block.vocab));
    }
    if block.rows >= (1 << 31) {
        return bad(format!("{} rows exceed the grid limit; launch in chunks", block.rows));
    }
    if block.logits == 0 || !block.logits.is_multiple_of(4) {
        return bad(format!("logits address {:#x} is not 4-byte aligned", block.logits));
    }
    if block.gold == 0 || !block.gold.is_multiple_of(4) {
        return bad(format!("gold address {:#x} is not 4-byte aligned", block.gold));
    }
    Ok(LaunchConfig { grid_dim: (block.rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

fn check_out(what: &str, outs: &[(&str, DevPtr)]) -> Result<()> {
    for (name, p) in outs {
        if *p == 0 || p % 4 != 0 {
            return Err(LarkError::Backend(format!("{what}: output {name} address {p:#x} is not 4-byte aligned")));
        }
    }
    Ok(())
}

/// Launch `vocab_stats_f32` (`func`) on `stream`. Nothing is launched for zero rows.
pub fn launch_vocab_stats(stream: &CudaStream, func: &CudaFunction, block: &LogitsBlock, out: &StatsOut) -> Result<()> {
    let cfg = launch_config(STATS_ENTRY, block)?;
    check_out(
        STATS_ENTRY,
        &[
            ("lse", out.lse),
            ("logprob", out.logprob),
            ("sum_p2", out.sum_p2),
            ("entropy", out.entropy),
            ("rank", out.rank),
        ],
    )?;
    if block.rows == 0 {
        return Ok(());
    }
    // Bounded by launch_config.
    let (rows, vocab, stride) = (block.rows as i32, block.vocab as i32, block.row_stride as i64);
    let mut b = stream.launch_builder(func);
    b.arg(&block.logits)
        .arg(&block.gold)
        .arg(&rows)
        .arg(&vocab)
        .arg(&stride)
        .arg(&out.lse)
        .arg(&out.logprob)
        .arg(&out.sum_p2)
        .arg(&out.entropy)
        .arg(&out.rank);
    // SAFETY: (const float*, const int*, int, int, long long, float*, float*, float*, float*, unsigned*) as in
    // kernels/vocab_stats.cu; sizes and alignment checked above; buffer lengths are the caller's contract.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), "launch vocab_stats_f32")
}

/// Launch `vocab_topk_brier_f32` (`func`) on `stream`: `out[r]` = the authors' top-`k` Brier of row r (f32).
pub fn launch_topk_brier(
    stream: &CudaStream,
    func: &CudaFunction,
    block: &LogitsBlock,
    k: usize,
    out: DevPtr,
) -> Result<()> {
    let cfg = launch_config(TOPK_ENTRY, block)?;
    check_out(TOPK_ENTRY, &[("topk_brier", out)])?;
    if k == 0 {
        return Err(LarkError::Backend(format!("{TOPK_ENTRY}: k must be at least 1")));
    }
    if block.rows == 0 {
        return Ok(());
    }
    // The kernel clamps k to the vocab; clamping here keeps it in i32.
    let (rows, vocab, stride, k) =
        (block.rows as i32, block.vocab as i32, block.row_stride as i64, k.min(block.vocab) as i32);
    let mut b = stream.launch_builder(func);
    b.arg(&block.logits).arg(&block.gold).arg(&rows).arg(&vocab).arg(&stride).arg(&k).arg(&out);
    // SAFETY: (const float*, const int*, int, int, long long, int, float*) as in kernels/vocab_stats.cu.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), "launch vocab_topk_brier_f32")
}

/// [`launch_vocab_stats`] on `gpu.stream`.
pub fn vocab_stats(gpu: &Gpu, block: &LogitsBlock, out: &StatsOut) -> Result<()> {
    let f = gpu.kernels.get(STATS_ENTRY)?;
    launch_vocab_stats(&gpu.stream, &f, block, out)
}

/// [`launch_topk_brier`] on `gpu.stream`.
pub fn topk_brier(gpu: &Gpu, block: &LogitsBlock, k: usize, out: DevPtr) -> Result<()> {
    let f = gpu.kernels.get(TOPK_ENTRY)?;
    launch_topk_brier(&gpu.stream, &f, block, k, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> LogitsBlock {
        LogitsBlock { logits: 0x1004, gold: 0x2000, rows: 4096, vocab: 151_936, row_stride: 151_937 }
    }

    #[test]
    fn one_block_per_row() {
        let c = launch_config(STATS_ENTRY, &block()).unwrap();
        assert_eq!(c.grid_dim, (4096, 1, 1));
        assert_eq!(c.block_dim, (256, 1, 1));
        assert_eq!(c.shared_mem_bytes, 0);
    }

    #[test]
    fn rejects_what_the_kernels_cannot_index() {
        let mut b = block();
        b.vocab = 0;
        assert!(launch_config(STATS_ENTRY, &b).is_err());
        let mut b = block();
        b.row_stride = b.vocab - 1;
        assert!(launch_config(STATS_ENTRY, &b).is_err());
        let mut b = block();
        b.logits = 0x1002;
        assert!(launch_config(STATS_ENTRY, &b).is_err());
        let mut b = block();
        b.rows = 1 << 31;
        assert!(launch_config(STATS_ENTRY, &b).is_err());
        let mut b = block();
        b.vocab = MAX_VOCAB + 1;
        b.row_stride = b.vocab;
        assert!(launch_config(STATS_ENTRY, &b).is_err());
        assert!(check_out("x", &[("lse", 0)]).is_err());
        assert!(check_out("x", &[("lse", 0x1002)]).is_err());
        assert!(check_out("x", &[("lse", 0x1004)]).is_ok());
    }
}
