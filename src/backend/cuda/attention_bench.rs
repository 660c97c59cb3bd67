//! Timing of the attention kernels alone (`lark bench --attention-only`): every tensor-core variant for a model's
//! head shape on the same packed batch, so that one device call compares them in isolation (end-to-end figures
//! mix attention with the GEMMs). A benchmark: it reports times, it checks nothing (`lark selftest` does).

use super::attention::{self, AttentionArgs, AttentionKernel, TileTable};
use super::device::{dptr, Gpu};
use super::ops::Precision;
use crate::error::{LarkError, Result};
use crate::model::random::SplitMix;
use crate::model::ModelConfig;
use std::time::Instant;

/// The head shape of one attention launch.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl HeadShape {
    /// The attention heads of a model.
    pub fn of(c: &ModelConfig) -> Self {
        HeadShape { num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim }
    }
}

/// One kernel's time on the batch.
#[derive(Debug, Clone)]
pub struct AttentionTiming {
    pub kernel: &'static str,
    /// Median over the repeats of the mean time of `launches` back-to-back launches, in milliseconds.
    pub median_ms: f64,
    /// Every repeat's mean launch time (ms), sorted.
    pub times_ms: Vec<f64>,
    /// Causal attention FLOPs of one launch: QKᵀ and PV over t(t+1)/2 pairs per head (as `lark bench` counts).
    pub flops: f64,
}

impl AttentionTiming {
    pub fn tflops(&self) -> f64 {
        self.flops / (self.median_ms * 1e-3) / 1e12
    }
}

/// Causal attention FLOPs of one launch (one layer) over sequences of `lens` tokens: QKᵀ and PV over t(t+1)/2
/// pairs per head, 2 FLOPs per multiply-add. `lark bench`, the selftest and this module all count with it.
pub fn causal_flops(lens: &[usize], shape: HeadShape) -> f64 {
    crate::model::flops::causal_attention_flops(lens, shape.num_heads, shape.head_dim)
}

/// Time every tensor-core attention kernel for `shape` on one packed batch of sequences of `lens` tokens (random
/// bf16 q, k, v with scores of unit spread), on CUDA device `ordinal`: one warm-up launch, then `repeats` timings
/// of `launches` back-to-back launches each. An error when no tensor-core kernel serves the head_dim.
pub fn time_attention_kernels(
    ordinal: usize,
    shape: HeadShape,
    lens: &[usize],
    repeats: usize,
    launches: usize,
) -> Result<Vec<AttentionTiming>> {
    let kinds = AttentionKernel::tensor_core_variants(shape.head_dim);
    if kinds.is_empty() {
        return Err(LarkError::Unsupported(format!(
            "--attention-only: no tensor-core attention kernel for head_dim {} (64 and 128 have them)",
            shape.head_dim
        )));
    }
    let gpu = Gpu::open(ordinal)?;
    let total: usize = lens.iter().sum();
    let mut cu = vec![0i32];
    for &l in lens {
        let next = *cu.last().unwrap_or(&0) as usize + l;
        if next > i32::MAX as usize {
            return Err(LarkError::input("--tokens", "more than 2^31 tokens in one attention batch"));
        }
        cu.push(next as i32);
    }
    // Entries of q and k of spread d^(-1/4), so that q·k/√d has unit spread, as after a trained model's norms.
    let mut rng = SplitMix(0xa77e_2710);
    let mut random = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| scale * rng.next_f32()).collect() };
    let qk_scale = 1.7 / (shape.head_dim as f32).sqrt().sqrt();
    let bf16 = Precision::Bf16;
    let q = gpu.upload(&bf16.encode(&random(total * shape.num_heads * shape.head_dim, qk_scale)))?;
    let k = gpu.upload(&bf16.encode(&random(total * shape.num_kv_heads * shape.head_dim, qk_scale)))?;
    let v = gpu.upload(&bf16.encode(&random(total * shape.num_kv_heads * shape.head_dim, 1.0)))?;
    let out = gpu.alloc::<u8>(total * shape.num_heads * shape.head_dim * bf16.bytes())?;
    let d_cu = gpu.upload(&cu)?;
    let flops = causal_flops(lens, shape);

    let mut timings = Vec::new();
    for &kind in kinds {
        let tiles = TileTable::build(&cu, kind.query_tile())?;
        let d_tiles = gpu.upload(&tiles.data)?;
        let args = AttentionArgs {
            q: dptr(&q, &gpu.stream),
            k: dptr(&k, &gpu.stream),
            v: dptr(&v, &gpu.stream),
            out: dptr(&out, &gpu.stream),
            cu_seqlens: dptr(&d_cu, &gpu.stream),
            tiles: dptr(&d_tiles, &gpu.stream),
            num_seqs: lens.len(),
            num_tiles: tiles.num_tiles,
            total_tokens: total,
            num_heads: shape.num_heads,
            num_kv_heads: shape.num_kv_heads,
            head_dim: shape.head_dim,
            softmax_scale: 1.0 / (shape.head_dim as f32).sqrt(),
            precision: bf16,
            query_tile: kind.query_tile(),
        };
        attention::attention(&gpu, Some(kind), &args)?; // warm-up (module load, caches)
        gpu.sync()?;
        let mut times_ms = Vec::new();
        for _ in 0..repeats.max(1) {
            let t0 = Instant::now();
            for _ in 0..launches.max(1) {
                attention::attention(&gpu, Some(kind), &args)?;
            }
            gpu.sync()?;
            times_ms.push(t0.elapsed().as_secs_f64() * 1e3 / launches.max(1) as f64);
        }
        times_ms.sort_by(|a, b| a.total_cmp(b));
        let median_ms = times_ms[times_ms.len() / 2];
        timings.push(AttentionTiming { kernel: kind.entry_point(), median_ms, times_ms, flops });
    }
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_count_the_causal_half() {
        let shape = HeadShape { num_heads: 28, num_kv_heads: 4, head_dim: 128 };
        // One 8,192-token sequence: 4 · (8192 · 8193 / 2) · 128 · 28 ≈ 481 GFLOP.
        let f = causal_flops(&[8192], shape);
        assert!((f - 4.0 * 8192.0 * 8193.0 / 2.0 * 128.0 * 28.0).abs() < 1.0);
        assert_eq!(causal_flops(&[3, 5], shape), causal_flops(&[3], shape) + causal_flops(&[5], shape));
    }

    #[test]
    fn unsupported_head_dim_is_an_error_before_any_device_work() {
        let shape = HeadShape { num_heads: 4, num_kv_heads: 2, head_dim: 80 };
        let e = time_attention_kernels(0, shape, &[16], 1, 1).unwrap_err().to_string();
        assert!(e.contains("head_dim 80"), "{e}");
    }
}
