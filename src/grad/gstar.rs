//! The exact directional derivative g* of the paper (Eq. 5 at q = p, the uniform prior over a problem's K
//! scored candidates) and the exact ρ*_k of Lemma 1, from the student's gradients:
//!
//! g*_k = 2 g_k·G / Σℓ − ‖G‖² ℓ_k / (Σℓ)²,   G = Σ_i g_i,   ρ*_k = ‖g_k‖² / ℓ_k,
//!
//! with ℓ_k the mean NLL over candidate k's scored tokens (Algorithm 1 line 3) and g_k = ∇_θ ℓ_k.
//!
//! **Scheme** ([`problem_grads`]): never K gradients at once, two parameter-sized buffers (G and one scratch
//! gradient). Pass 1 runs one backward pass per candidate, keeps ℓ_k and ‖g_k‖² and accumulates G; pass 2
//! recomputes g_k for k < K and takes g_k·G (the last candidate's gradient is still in the scratch buffer, so
//! it needs no second pass). Cost per problem: 2K − 1 backward passes (≈ 3 forward passes each), memory: two
//! gradients plus one pass's activations. The identity Σ_k g_k·G = ‖G‖² is returned as a check
//! ([`ProblemGrads::closure_error`]).

use super::diagnostics::{diagnose, Diagnostics, Question};
use super::{Real, Student};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::io::{Pool, Record};
use crate::model::random::SplitMix;
use crate::model::Model;
use crate::score::lark::g_hat_exact;
use crate::score::row::nan_null;
use crate::score::{BrierMode, TrajectoryScores};
use crate::stats::{StatsOptions, TrajectoryStats};
use crate::text::{SpanMode, TextPipeline};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Per candidate of one problem: ℓ_k, ‖g_k‖² and g_k·G; and ‖G‖².
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemGrads {
    pub l: Vec<f64>,
    pub grad_sq: Vec<f64>,
    pub dot_sum: Vec<f64>,
    pub sum_sq: f64,
}

impl ProblemGrads {
    /// |Σ_k g_k·G − ‖G‖²| / ‖G‖²: rounding only (0 in exact arithmetic).
    pub fn closure_error(&self) -> f64 {
        let s: f64 = self.dot_sum.iter().sum();
        (s - self.sum_sq).abs() / self.sum_sq.max(f64::MIN_POSITIVE)
    }
}

/// Two passes over the problem's candidates (see the module doc). `progress(k, pass)` is called after each
/// backward pass.
pub fn problem_grads<T: Real>(
    student: &Student<T>,
    reqs: &[SeqRequest<'_>],
    mut progress: impl FnMut(usize, usize),
) -> Result<ProblemGrads> {
    let k = reqs.len();
    let mut total = student.zeros();
    let mut scratch = student.zeros();
    let (mut l, mut grad_sq) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for (i, r) in reqs.iter().enumerate() {
        l.push(student.loss_and_grad(*r, &mut scratch)?);
        grad_sq.push(scratch.sq_norm());
        total.add_assign(&scratch);
        progress(i, 1);
    }
    let mut dot_sum = vec![0.0; k];
    if k > 0 {
        // The last candidate's gradient is still in `scratch`.
        dot_sum[k - 1] = scratch.dot(&total);
        for (i, r) in reqs.iter().enumerate().take(k - 1) {
            student.loss_and_grad(*r, &mut scratch)?;
            dot_sum[i] = scratch.dot(&total);
            progress(i, 2);
        }
    }
    Ok(ProblemGrads { sum_sq: total.sq_norm(), l, grad_sq, dot_sum })
}

/// Eq. 5 at the uniform prior: g*_k = 2 g_k·G/Σℓ − ‖G‖² ℓ_k/(Σℓ)². NaN for all when Σℓ ≤ 1e-30 (as ĝ).
pub fn g_star(l: &[f64], dot_sum: &[f64], sum_sq: f64) -> Vec<f64> {
    let s: f64 = l.iter().sum();
    if s.is_nan() || s <= 1e-30 {
        return vec![f64::NAN; l.len()];
    }
    l.iter().zip(dot_sum).map(|(l, d)| 2.0 * d / s - sum_sq * l / (s * s)).collect()
}

/// ρ*_k = ‖g_k‖²/ℓ_k (NaN when ℓ_k = 0).
pub fn rho_star(grad_sq: &[f64], l: &[f64]) -> Vec<f64> {
    grad_sq.iter().zip(l).map(|(g, l)| if *l > 0.0 { g / l } else { f64::NAN }).collect()
}

/// One line of `gstar.jsonl`. Non-finite numbers are `null`; a skipped trajectory has `skipped` set and nulls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GstarRow {
    pub problem_id: i64,
    pub candidate_id: i64,
    pub teacher: String,
    pub skipped: Option<String>,
    pub n_tokens: Option<u64>,
    pub truncated: bool,
    /// ℓ_k from the forward backend (what ĝ and ρ̂ use).
    #[serde(rename = "L", with = "nan_null")]
    pub l: f64,
    #[serde(with = "nan_null")]
    pub g_hat: f64,
    #[serde(with = "nan_null")]
    pub g_star: f64,
    #[serde(with = "nan_null")]
    pub rho_hat: f64,
    #[serde(with = "nan_null")]
    pub rho_star: f64,
    /// ‖g_k‖².
    #[serde(with = "nan_null")]
    pub grad_sq_norm: f64,
    /// g_k·G, G = Σ_i g_i over the problem's scored candidates.
    #[serde(with = "nan_null")]
    pub grad_dot_sum: f64,
    /// ℓ_k as the backward pass computed it (the loss g_k differentiates; equal to `L` to ~1e-6).
    #[serde(rename = "L_backward", with = "nan_null")]
    pub l_backward: f64,
}

/// `gstar.jsonl` rows grouped by problem, problems in the order they first appear, candidates as listed (what
/// the report and `lark select --by g_star` read).
pub fn rows_by_problem(rows: &[GstarRow]) -> Vec<(i64, Vec<&GstarRow>)> {
    let mut groups: Vec<(i64, Vec<&GstarRow>)> = Vec::new();
    let mut index: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for r in rows {
        let i = *index.entry(r.problem_id).or_insert_with(|| {
            groups.push((r.problem_id, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r);
    }
    groups
}

/// Which problems, and how their trajectories are formed.
#[derive(Debug, Clone)]
pub struct GstarOptions {
    pub span: SpanMode,
    pub max_len: usize,
    /// A seeded sample of this many problems (all when None or larger than the pool).
    pub problems: Option<usize>,
    pub seed: u64,
}

/// Per problem: ‖G‖², the closure check and the time its gradients took.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProblemCost {
    pub problem_id: i64,
    #[serde(rename = "K")]
    pub k: usize,
    pub tokens: usize,
    pub backward_passes: usize,
    pub seconds: f64,
    pub sum_sq_norm: f64,
    pub closure_error: f64,
}

/// Everything `lark gstar` computes.
#[derive(Debug, Clone)]
pub struct GstarResult {
    pub rows: Vec<GstarRow>,
    pub costs: Vec<ProblemCost>,
    pub diagnostics: Diagnostics,
    /// Median over candidates of (g_k·G − ‖g_k‖²)/‖g_k‖²: the off-diagonal Gram mass relative to the diagonal
    /// (0 when the candidates' gradients are orthogonal, the approximation behind ĝ).
    pub offdiag_ratio_median: f64,
    /// Pearson correlation of log ρ* and log ρ̂ over every candidate (Lemma 1 says ρ̂ tracks ρ*).
    pub corr_log_rho: f64,
}

/// The problems of `pool` that `opts` selects, in pool order: a seeded sample when `opts.problems` is set.
pub fn sample_problems(pool: &Pool, opts: &GstarOptions) -> Vec<(i64, Vec<Record>)> {
    let all: Vec<(i64, &[Record])> = pool.problems().collect();
    let n = opts.problems.unwrap_or(all.len()).min(all.len());
    let mut keys: Vec<(u64, usize)> = {
        let mut rng = SplitMix(opts.seed);
        (0..all.len()).map(|i| (rng.next_u64(), i)).collect()
    };
    keys.sort();
    let mut chosen: Vec<usize> = keys.into_iter().take(n).map(|(_, i)| i).collect();
    chosen.sort();
    chosen.into_iter().map(|i| (all[i].0, all[i].1.to_vec())).collect()
}

/// g*, ρ*, ĝ and ρ̂ for every candidate of the selected problems, and the diagnostics. ĝ comes from the
/// forward backend's statistics exactly as `lark score` computes it (exact Brier, Eq. 7 over the problem's
/// scored candidates); g* from the f32 backward pass by [`problem_grads`]. `progress(done, total)` after each
/// problem.
pub fn gstar_pool(
    model: &Model,
    text: &TextPipeline,
    pool: &Pool,
    opts: &GstarOptions,
    mut progress: impl FnMut(usize, usize, &ProblemCost),
) -> Result<GstarResult> {
    let student = Student::<f32>::from_model(model)?;
    let mut fwd = CpuBackend::new(model)?;
    let problems = sample_problems(pool, opts);
    if problems.is_empty() {
        return Err(LarkError::input(pool.source.display(), "no problems to compute g* for"));
    }
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    let mut questions = Vec::new();
    let total = problems.len();
    for (pi, (pid, recs)) in problems.iter().enumerate() {
        let mut prepared = Vec::with_capacity(recs.len());
        for r in recs {
            let p = text
                // The final turn only: the gradient path takes one contiguous scored range per sequence.
                .conversation(&r.messages, r.tools.as_deref(), opts.span, crate::text::Turns::Last, opts.max_len)
                .map_err(|e| LarkError::input(format!("problem {pid}, candidate {}", r.candidate_id), e.to_string()))?;
            prepared.push(p.into_ready());
        }
        let ready: Vec<(usize, &crate::text::Trajectory)> =
            prepared.iter().enumerate().filter_map(|(i, p)| p.as_ref().ok().map(|t| (i, t))).collect();
        let reqs: Vec<SeqRequest> = ready.iter().map(|(_, t)| t.request()).collect();
        // Forward numbers: ℓ, Brier, ρ̂, then ĝ over the scored candidates.
        let mut ts = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let st = fwd.score(std::slice::from_ref(r), &StatsOptions::default())?;
            ts.push(TrajectoryScores::new(&TrajectoryStats::from_tokens(&st[0], 100), BrierMode::Exact));
        }
        let l: Vec<f64> = ts.iter().map(|t| t.l).collect();
        let b: Vec<f64> = ts.iter().map(|t| t.brier_mean).collect();
        let g_hat = g_hat_exact(&l, &b);
        let t0 = Instant::now();
        let pg = problem_grads(&student, &reqs, |_, _| {})?;
        let cost = ProblemCost {
            problem_id: *pid,
            k: reqs.len(),
            tokens: reqs.iter().map(|r| r.ids.len()).sum(),
            backward_passes: (2 * reqs.len()).saturating_sub(1),
            seconds: t0.elapsed().as_secs_f64(),
            sum_sq_norm: pg.sum_sq,
            closure_error: pg.closure_error(),
        };
        let gs = g_star(&pg.l, &pg.dot_sum, pg.sum_sq);
        let rs = rho_star(&pg.grad_sq, &pg.l);
        let mut slot = vec![None; recs.len()];
        for (j, (i, _)) in ready.iter().enumerate() {
            slot[*i] = Some(j);
        }
        for (i, r) in recs.iter().enumerate() {
            let row = match (slot[i], &prepared[i]) {
                (Some(j), Ok(t)) => GstarRow {
                    problem_id: *pid,
                    candidate_id: r.candidate_id,
                    teacher: r.teacher.clone(),
                    skipped: None,
                    n_tokens: Some(t.n_scored() as u64),
                    truncated: t.truncated,
                    l: ts[j].l,
                    g_hat: g_hat[j],
                    g_star: gs[j],
                    rho_hat: ts[j].rho_hat,
                    rho_star: rs[j],
                    grad_sq_norm: pg.grad_sq[j],
                    grad_dot_sum: pg.dot_sum[j],
                    l_backward: pg.l[j],
                },
                (_, Err(reason)) => GstarRow {
                    problem_id: *pid,
                    candidate_id: r.candidate_id,
                    teacher: r.teacher.clone(),
                    skipped: Some(reason.to_string()),
                    n_tokens: None,
                    truncated: reason.truncated(),
                    l: f64::NAN,
                    g_hat: f64::NAN,
                    g_star: f64::NAN,
                    rho_hat: f64::NAN,
                    rho_star: f64::NAN,
                    grad_sq_norm: f64::NAN,
                    grad_dot_sum: f64::NAN,
                    l_backward: f64::NAN,
                },
                (None, Ok(_)) => unreachable!("every ready trajectory has a slot"),
            };
            rows.push(row);
        }
        questions.push(Question { problem_id: *pid, g_hat: g_hat.clone(), g_star: gs });
        progress(pi + 1, total, &cost);
        costs.push(cost);
    }
    let scored: Vec<&GstarRow> = rows.iter().filter(|r| r.skipped.is_none()).collect();
    let ratios: Vec<f64> =
        scored.iter().map(|r| (r.grad_dot_sum - r.grad_sq_norm) / r.grad_sq_norm).filter(|x| x.is_finite()).collect();
    let (lr, lh): (Vec<f64>, Vec<f64>) = scored
        .iter()
        .map(|r| (r.rho_star.ln(), r.rho_hat.ln()))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .unzip();
    Ok(GstarResult {
        diagnostics: diagnose(&questions),
        offdiag_ratio_median: super::diagnostics::median(&ratios),
        corr_log_rho: super::diagnostics::pearson(&lr, &lh),
        rows,
        costs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq5_by_hand() {
        // Two candidates, g_1 = (1, 0), g_2 = (1, 1): G = (2, 1), ‖G‖² = 5, g_1·G = 2, g_2·G = 3; ℓ = [1, 3].
        // g*_1 = 2·2/4 − 5·1/16 = 0.6875; g*_2 = 2·3/4 − 5·3/16 = 0.5625.
        let g = g_star(&[1.0, 3.0], &[2.0, 3.0], 5.0);
        assert!((g[0] - 0.6875).abs() < 1e-15 && (g[1] - 0.5625).abs() < 1e-15, "{g:?}");
        // Σ_k g*_k = 2‖G‖²/Σℓ − ‖G‖²/Σℓ = ‖G‖²/Σℓ.
        assert!((g.iter().sum::<f64>() - 5.0 / 4.0).abs() < 1e-15);
        // With orthogonal gradients (g_k·G = ‖g_k‖² = ρ_k ℓ_k) Eq. 5 is Eq. 7 with ρ̂ = ρ*.
        let (l, rho) = ([1.0, 3.0], [0.5, 0.2]);
        let gsq = [0.5, 0.6];
        let g = g_star(&l, &gsq, gsq.iter().sum());
        let h = crate::score::lark::g_hat_from_rho(&l, &rho);
        assert!((g[0] - h[0]).abs() < 1e-15 && (g[1] - h[1]).abs() < 1e-15);
        let r = rho_star(&[0.5, 0.6], &[1.0, 3.0]);
        assert!((r[0] - 0.5).abs() < 1e-15 && (r[1] - 0.2).abs() < 1e-15);
        assert!(g_star(&[0.0], &[0.0], 0.0)[0].is_nan());
    }
}
