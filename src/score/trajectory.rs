//! Per-trajectory scores that need only that trajectory's sums (paper Algorithm 1 lines 3–4, Appendix C.2,
//! §5.4 diagnostics, and the RSR authors' `rsr_cal.py`).

use crate::stats::TrajectoryStats;

/// Which Brier residual feeds ρ̂ and ĝ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrierMode {
    /// Σ_v π(v)² over the full vocabulary (the paper's definition; the default).
    #[default]
    Exact,
    /// The LARK authors' scorer: softmax of the top-K logits renormalised, p(gold) = 0 outside them,
    /// and ρ = Brier/L with ρ = 0 when L ≤ 1e-30.
    TopK(usize),
}

/// The RSR authors' guard on the denominator: `sum_rank / max(sum_nll, 1e-12)`.
pub const RSR_EPS: f64 = 1e-12;

/// Scores of one trajectory that do not depend on the other candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrajectoryScores {
    pub nll_sum: f64,
    /// ℓ_k: mean NLL.
    pub l: f64,
    /// Σ_t Brier (exact or top-K per the mode).
    pub brier_sum: f64,
    pub brier_mean: f64,
    /// ρ̂_k = brier_sum / nll_sum (exact; IEEE NaN/inf when nll_sum = 0) or the authors' guarded ratio.
    pub rho_hat: f64,
    /// GRAPE: −ℓ_k.
    pub grape: f64,
    /// 1/ℓ_k.
    pub inverse_loss: f64,
    /// Σ_t min(rank_t, r_max) / max(Σ_t NLL, 1e-12); lower is better.
    pub rsr: f64,
    pub mean_rank_clip: f64,
    pub mean_p_gold: f64,
    /// Mean over tokens of Σ_{v≠y} π(v)².
    pub wrong_conc: f64,
    pub entropy_mean: f64,
}

impl TrajectoryScores {
    /// Every score NaN: what a skipped trajectory carries (never an invented number).
    pub const NAN: TrajectoryScores = TrajectoryScores {
        nll_sum: f64::NAN,
        l: f64::NAN,
        brier_sum: f64::NAN,
        brier_mean: f64::NAN,
        rho_hat: f64::NAN,
        grape: f64::NAN,
        inverse_loss: f64::NAN,
        rsr: f64::NAN,
        mean_rank_clip: f64::NAN,
        mean_p_gold: f64::NAN,
        wrong_conc: f64::NAN,
        entropy_mean: f64::NAN,
    };

    pub fn new(s: &TrajectoryStats, mode: BrierMode) -> Self {
        let l = s.mean_nll();
        let (brier_sum, brier_mean, rho_hat) = match mode {
            BrierMode::Exact => (s.brier_sum, s.brier_mean(), s.rho_hat()),
            BrierMode::TopK(_) => {
                let b = s.topk_brier_mean();
                (s.topk_brier_sum, b, super::lark::rho_compat(b, l))
            }
        };
        TrajectoryScores {
            nll_sum: s.nll_sum,
            l,
            brier_sum,
            brier_mean,
            rho_hat,
            grape: -l,
            inverse_loss: 1.0 / l,
            rsr: s.rank_clip_sum / s.nll_sum.max(RSR_EPS),
            mean_rank_clip: s.mean_rank_clip(),
            mean_p_gold: s.mean_p_gold(),
            wrong_conc: s.wrong_conc(),
            entropy_mean: s.entropy_mean(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two tokens: p_gold = 0.5 and 0.25, Σπ² = 0.3 and 0.2, entropies 1.0 and 2.0, ranks 1 and 150
    /// (clipped at 100), top-K Brier 0.4 and 0.9.
    pub(crate) fn two_token_stats() -> TrajectoryStats {
        let (p1, p2) = (0.5f64, 0.25f64);
        TrajectoryStats {
            n_tokens: 2,
            nll_sum: -(p1.ln() + p2.ln()),
            brier_sum: (0.3 - 2.0 * p1 + 1.0) + (0.2 - 2.0 * p2 + 1.0),
            sum_p2_sum: 0.5,
            p_gold_sum: p1 + p2,
            wrong_conc_sum: (0.3 - p1 * p1) + (0.2 - p2 * p2),
            entropy_sum: 3.0,
            rank_clip_sum: 101.0,
            rank_sum: 151.0,
            topk_brier_sum: 1.3,
        }
    }

    #[test]
    fn by_hand_exact() {
        let s = TrajectoryScores::new(&two_token_stats(), BrierMode::Exact);
        let nll = 2f64.ln() + 4f64.ln(); // 3 ln 2 = 2.0794415
        assert!((s.nll_sum - nll).abs() < 1e-12);
        assert!((s.l - nll / 2.0).abs() < 1e-12);
        assert!((s.grape + nll / 2.0).abs() < 1e-12);
        assert!((s.inverse_loss - 2.0 / nll).abs() < 1e-12);
        // Brier: (0.3 − 1 + 1) + (0.2 − 0.5 + 1) = 0.3 + 0.7 = 1.0
        assert!((s.brier_sum - 1.0).abs() < 1e-12);
        assert!((s.brier_mean - 0.5).abs() < 1e-12);
        assert!((s.rho_hat - 1.0 / nll).abs() < 1e-12);
        assert!((s.rsr - 101.0 / nll).abs() < 1e-12);
        assert!((s.mean_rank_clip - 50.5).abs() < 1e-12);
        assert!((s.mean_p_gold - 0.375).abs() < 1e-12);
        // wrong_conc: (0.3 − 0.25 + 0.2 − 0.0625)/2 = 0.09375
        assert!((s.wrong_conc - 0.09375).abs() < 1e-12);
        assert!((s.entropy_mean - 1.5).abs() < 1e-12);
    }

    #[test]
    fn by_hand_topk_compat() {
        let s = TrajectoryScores::new(&two_token_stats(), BrierMode::TopK(50));
        let l = 1.5 * 2f64.ln();
        assert!((s.brier_sum - 1.3).abs() < 1e-12);
        assert!((s.brier_mean - 0.65).abs() < 1e-12);
        assert!((s.rho_hat - 0.65 / l).abs() < 1e-12);
        let zero = TrajectoryStats { n_tokens: 1, topk_brier_sum: 0.1, ..Default::default() };
        assert_eq!(TrajectoryScores::new(&zero, BrierMode::TopK(50)).rho_hat, 0.0);
    }

    #[test]
    fn rsr_guard() {
        let s = TrajectoryStats { n_tokens: 3, rank_clip_sum: 3.0, ..Default::default() };
        assert_eq!(TrajectoryScores::new(&s, BrierMode::Exact).rsr, 3.0 / RSR_EPS);
    }
}
