//! The `#[repr(C)]` structs of `include/lark.h` and their conversions from the library's types. Field names
//! are the header's (and `scores.jsonl`'s), hence `L`.

use crate::score::{BrierMode, TrajectoryScores};
use crate::stats::{TokenStats, TrajectoryStats};
use std::ffi::c_char;

pub const LARK_SPAN_TURN: i32 = 0;
pub const LARK_SPAN_CONTENT: i32 = 1;

pub const LARK_WEIGHT_CHI2: i32 = 0;
pub const LARK_WEIGHT_UNIFORM: i32 = 1;
pub const LARK_WEIGHT_PROPORTIONAL: i32 = 2;
pub const LARK_WEIGHT_SOFTMAX: i32 = 3;

/// Bytes of `lark_trajectory_stats.skip_reason`, NUL included.
pub const LARK_SKIP_REASON_LEN: usize = 128;

/// `lark_options`: what changes the numbers, as the CLI's `--max-len`, `--span`, `--brier`, `--rank-clip`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LarkOptions {
    /// Truncate token sequences from the right at this length; 0 means the default (32768).
    pub max_len: usize,
    /// LARK_SPAN_TURN or LARK_SPAN_CONTENT.
    pub span_mode: i32,
    /// 0: exact Brier (Σπ² over the full vocabulary); K ≥ 1: the LARK authors' top-K Brier.
    pub brier_topk: u32,
    /// RSR rank clip r_max; 0 means the default (100).
    pub rank_clip: u32,
    /// Must be 0 (room for future options without changing the size).
    pub reserved: u32,
}

impl Default for LarkOptions {
    fn default() -> Self {
        LarkOptions {
            max_len: crate::text::DEFAULT_MAX_LEN,
            span_mode: LARK_SPAN_TURN,
            brier_topk: 0,
            rank_clip: 100,
            reserved: 0,
        }
    }
}

/// `lark_trajectory_stats`: one trajectory's row of `scores.jsonl`, model-pass fields only (ĝ is per problem:
/// `lark_problem_weights`). A skipped trajectory has `skipped = 1`, its reason, `n_tokens = 0` and NaN in
/// every number.
#[repr(C)]
#[allow(non_snake_case)]
#[derive(Debug, Clone, Copy)]
pub struct LarkTrajectoryStats {
    pub skipped: i32,
    pub truncated: i32,
    /// The Brier mode the numbers were computed under (0: exact, K: top-K); `lark_problem_weights` needs it.
    pub brier_topk: u32,
    pub reserved: u32,
    pub n_tokens: u64,
    pub nll_sum: f64,
    pub L: f64,
    pub brier_sum: f64,
    pub brier_mean: f64,
    pub rho_hat: f64,
    pub grape: f64,
    pub inverse_loss: f64,
    pub rsr: f64,
    pub mean_rank_clip: f64,
    pub mean_p_gold: f64,
    pub wrong_conc: f64,
    pub entropy_mean: f64,
    /// NUL-terminated, "" unless skipped; cut at a character boundary to fit.
    pub skip_reason: [c_char; LARK_SKIP_REASON_LEN],
}

fn brier_topk(b: BrierMode) -> u32 {
    match b {
        BrierMode::Exact => 0,
        BrierMode::TopK(k) => k as u32,
    }
}

impl LarkTrajectoryStats {
    /// A skipped trajectory: the reason and no numbers.
    pub fn skipped(reason: &str, truncated: bool, brier: BrierMode) -> Self {
        let mut s = Self::from_scores(&TrajectoryScores::NAN, 0, truncated, brier);
        s.skipped = 1;
        let mut end = reason.len().min(LARK_SKIP_REASON_LEN - 1);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        for (d, &b) in s.skip_reason.iter_mut().zip(reason.as_bytes()[..end].iter()) {
            *d = b as c_char;
        }
        s
    }

    /// A scored trajectory, exactly as `score::row::score_problem` fills the row (an empty span is skipped).
    pub fn scored(stats: &TrajectoryStats, truncated: bool, brier: BrierMode) -> Self {
        if stats.n_tokens == 0 {
            return Self::skipped("empty scored span", truncated, brier);
        }
        Self::from_scores(&TrajectoryScores::new(stats, brier), stats.n_tokens as u64, truncated, brier)
    }

    fn from_scores(t: &TrajectoryScores, n_tokens: u64, truncated: bool, brier: BrierMode) -> Self {
        LarkTrajectoryStats {
            skipped: 0,
            truncated: truncated as i32,
            brier_topk: brier_topk(brier),
            reserved: 0,
            n_tokens,
            nll_sum: t.nll_sum,
            L: t.l,
            brier_sum: t.brier_sum,
            brier_mean: t.brier_mean,
            rho_hat: t.rho_hat,
            grape: t.grape,
            inverse_loss: t.inverse_loss,
            rsr: t.rsr,
            mean_rank_clip: t.mean_rank_clip,
            mean_p_gold: t.mean_p_gold,
            wrong_conc: t.wrong_conc,
            entropy_mean: t.entropy_mean,
            skip_reason: [0; LARK_SKIP_REASON_LEN],
        }
    }
}

/// `lark_token_stats`: one scored position (see `stats` for the definitions).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LarkTokenStats {
    /// log π(y)
    pub logprob: f32,
    /// Σ_v π(v)²
    pub sum_p2: f32,
    /// H(π)
    pub entropy: f32,
    /// 1 + #{v : z_v > z_y}
    pub rank: u32,
    /// log Σ_v exp z_v
    pub lse: f32,
    /// The top-K Brier when the model was opened with brier_topk = K, else NaN.
    pub topk_brier: f32,
}

impl From<&TokenStats> for LarkTokenStats {
    fn from(t: &TokenStats) -> Self {
        LarkTokenStats {
            logprob: t.logprob,
            sum_p2: t.sum_p2,
            entropy: t.entropy,
            rank: t.rank,
            lse: t.lse,
            topk_brier: t.topk_brier,
        }
    }
}

/// `lark_range`: positions `from..to` (one scored assistant turn, `lark_tokenize_chat_turns`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LarkRange {
    pub from: usize,
    pub to: usize,
}

/// `lark_span`: a tokenised chat and its scored span (`lark_tokenize_chat`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LarkSpan {
    /// Token ids in the (truncated) sequence; 0 when skipped.
    pub len: usize,
    /// Positions score_from..score_to are scored (pass ids[..score_to] and score_from to `lark_score_ids`).
    pub score_from: usize,
    pub score_to: usize,
    pub skipped: i32,
    pub truncated: i32,
}

/// `lark_progress`: how far a `lark_score_pool` job is (counts include work resumed from a journal; the two
/// totals are estimates until `totals_exact`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LarkProgress {
    pub trajectories_done: usize,
    pub trajectories_total: usize,
    pub problems_done: usize,
    pub problems_total: usize,
    pub tokens_done: usize,
    pub tokens_total: usize,
    pub totals_exact: i32,
    pub reserved: i32,
    /// Tokens through the model in this call (not resumed) per second.
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

impl From<&crate::run::Progress> for LarkProgress {
    fn from(p: &crate::run::Progress) -> Self {
        LarkProgress {
            trajectories_done: p.trajectories_done,
            trajectories_total: p.trajectories_total,
            problems_done: p.problems_done,
            problems_total: p.problems_total,
            tokens_done: p.tokens_done,
            tokens_total: p.tokens_total,
            totals_exact: p.totals_exact as i32,
            reserved: 0,
            tokens_per_s: p.tokens_this_run as f64 / p.elapsed_s.max(1e-9),
            elapsed_s: p.elapsed_s,
        }
    }
}

/// `lark_progress_fn`: called after every batch; a non-zero return stops the job cleanly.
pub type LarkProgressFn = Option<unsafe extern "C" fn(*const LarkProgress, *mut std::ffi::c_void) -> std::ffi::c_int>;
