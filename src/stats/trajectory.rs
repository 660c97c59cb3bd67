//! Per-trajectory sums over the scored span, in f64 (paper Algorithm 1, lines 3–4; Appendix C.2).

use super::TokenStats;

/// Sums over one trajectory's scored tokens. Everything a model-based scorer needs derives from these.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TrajectoryStats {
    pub n_tokens: usize,
    /// Σ_t −log π_t(y_t)
    pub nll_sum: f64,
    /// Σ_t ‖π_t − δ(y_t)‖² = Σ_t (Σ_v π_t(v)² − 2 π_t(y_t) + 1)
    pub brier_sum: f64,
    /// Σ_t Σ_v π_t(v)²
    pub sum_p2_sum: f64,
    /// Σ_t π_t(y_t)
    pub p_gold_sum: f64,
    /// Σ_t Σ_{v≠y_t} π_t(v)² (wrong-token concentration)
    pub wrong_conc_sum: f64,
    /// Σ_t H(π_t)
    pub entropy_sum: f64,
    /// Σ_t min(rank_t, rank_clip)
    pub rank_clip_sum: f64,
    /// Σ_t rank_t (unclipped)
    pub rank_sum: f64,
    /// Σ_t top-K Brier (NaN when not computed)
    pub topk_brier_sum: f64,
}

impl TrajectoryStats {
    pub fn from_tokens(tokens: &[TokenStats], rank_clip: u32) -> Self {
        let mut t = TrajectoryStats { n_tokens: tokens.len(), ..Default::default() };
        for s in tokens {
            let p = (s.logprob as f64).exp();
            let sp2 = s.sum_p2 as f64;
            t.nll_sum -= s.logprob as f64;
            t.brier_sum += sp2 - 2.0 * p + 1.0;
            t.sum_p2_sum += sp2;
            t.p_gold_sum += p;
            t.wrong_conc_sum += (sp2 - p * p).max(0.0);
            t.entropy_sum += s.entropy as f64;
            t.rank_clip_sum += s.rank.min(rank_clip) as f64;
            t.rank_sum += s.rank as f64;
            t.topk_brier_sum += s.topk_brier as f64;
        }
        t
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.n_tokens == 0 {
            f64::NAN
        } else {
            sum / self.n_tokens as f64
        }
    }
    /// ℓ_k: mean NLL over the span.
    pub fn mean_nll(&self) -> f64 {
        self.mean(self.nll_sum)
    }
    pub fn brier_mean(&self) -> f64 {
        self.mean(self.brier_sum)
    }
    pub fn topk_brier_mean(&self) -> f64 {
        self.mean(self.topk_brier_sum)
    }
    pub fn mean_p_gold(&self) -> f64 {
        self.mean(self.p_gold_sum)
    }
    pub fn wrong_conc(&self) -> f64 {
        self.mean(self.wrong_conc_sum)
    }
    pub fn entropy_mean(&self) -> f64 {
        self.mean(self.entropy_sum)
    }
    pub fn mean_rank_clip(&self) -> f64 {
        self.mean(self.rank_clip_sum)
    }
    /// ρ̂_k = Σ_t ‖π_t − δ‖² / Σ_t −log p_t (Eq. 7).
    pub fn rho_hat(&self) -> f64 {
        self.brier_sum / self.nll_sum
    }
}
