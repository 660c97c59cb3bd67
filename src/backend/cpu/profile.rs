//! Where the CPU forward pass spends its time: wall-clock nanoseconds per kind of operation, summed over the
//! layers and calls of a process, when switched on (`lark bench --device cpu --profile`). Off by default; when
//! off, [`time`] is one relaxed atomic load around the call. The categories are the ones an engineer tuning the
//! CPU path asks about: the four GEMM groups of a layer, attention, the norms/RoPE/elementwise glue, the LM
//! head's GEMM and the vocabulary pass of the statistics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// q, k, v projections (one stacked GEMM).
    QkvGemm,
    /// Causal attention (scores, softmax, ·V).
    Attention,
    /// Output projection.
    OGemm,
    /// gate and up projections (one stacked GEMM).
    GateUpGemm,
    /// down projection.
    DownGemm,
    /// Embedding lookup, RMSNorms, q/k norms, RoPE, biases, splits, SiLU·up, residual adds.
    Elementwise,
    /// The LM head's GEMM on the scored rows.
    HeadGemm,
    /// log-sum-exp, gold log-probability, Σπ², rank, entropy over the vocabulary.
    VocabPass,
}

pub const OPS: [Op; 8] =
    [Op::QkvGemm, Op::Attention, Op::OGemm, Op::GateUpGemm, Op::DownGemm, Op::Elementwise, Op::HeadGemm, Op::VocabPass];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::QkvGemm => "qkv_gemm",
            Op::Attention => "attention",
            Op::OGemm => "o_gemm",
            Op::GateUpGemm => "gate_up_gemm",
            Op::DownGemm => "down_gemm",
            Op::Elementwise => "norms_rope_elementwise",
            Op::HeadGemm => "lm_head_gemm",
            Op::VocabPass => "vocab_pass",
        }
    }
    fn index(self) -> usize {
        OPS.iter().position(|&o| o == self).expect("every op is listed")
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Switch the profile on or off (process-wide) and clear it.
pub fn enable(on: bool) {
    reset();
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn reset() {
    NANOS.iter().for_each(|n| n.store(0, Ordering::Relaxed));
}

/// Run `f`, adding its wall time to `op` when the profile is on.
#[inline]
pub fn time<R>(op: Op, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let t0 = Instant::now();
    let r = f();
    NANOS[op.index()].fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Seconds per op since the last [`enable`]/[`reset`], in [`OPS`] order.
pub fn snapshot() -> Vec<(Op, f64)> {
    OPS.iter().map(|&o| (o, NANOS[o.index()].load(Ordering::Relaxed) as f64 * 1e-9)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_time_of_each_op_when_on() {
        // The state is process-wide and other tests run CPU forward passes concurrently, so only what they
        // cannot disturb is checked: a timed 2 ms sleep adds at least 2 ms, and `time` returns f's value.
        enable(true);
        time(Op::Attention, || std::thread::sleep(std::time::Duration::from_millis(2)));
        assert_eq!(time(Op::HeadGemm, || 7), 7);
        let s = snapshot();
        assert_eq!(s.len(), OPS.len());
        assert!(s.iter().find(|(o, _)| *o == Op::Attention).unwrap().1 >= 0.002, "{s:?}");
        enable(false);
        assert_eq!(time(Op::Attention, || 8), 8);
        assert_eq!(OPS.iter().map(|o| o.name()).collect::<std::collections::HashSet<_>>().len(), OPS.len());
    }
}
