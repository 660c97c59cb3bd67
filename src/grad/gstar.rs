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

use super::{Real, Student};
use crate::backend::SeqRequest;
use crate::error::Result;

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
