//! Per-token statistics from one pass over the vocabulary, and their per-trajectory sums.
//!
//! For the distribution π = softmax(z) at a scored position with gold token y:
//! - `lse`      = log Σ_v exp z_v
//! - `logprob`  = z_y − lse  (log π(y))
//! - `sum_p2`   = Σ_v π(v)²  (so the Brier term ‖π − δ_y‖² = sum_p2 − 2 π(y) + 1)
//! - `rank`     = 1 + #{v : z_v > z_y}  (exact; ties do not count against the gold token)
//! - `entropy`  = −Σ_v π(v) log π(v)
//! - `topk_brier` (compat mode only) = Σ_{v∈top-K} p̃(v)² − 2 p̃(y) + 1 with p̃ the softmax of the K largest
//!   logits renormalised, and p̃(y) = 0 when y is not among them (the LARK authors' scorer).
//!
//! One online pass keeps a running max m and, relative to it, s = Σ e^{z−m}, s2 = Σ e^{2(z−m)} and
//! e = Σ e^{z−m}(z−m); when the max grows by Δ they are rescaled (s·e^{−Δ}, s2·e^{−2Δ}, e^{−Δ}(e − Δ s)).
//! Then lse = m + ln s, Σπ² = s2/s², H = ln s − e/s.

pub mod trajectory;
pub use trajectory::TrajectoryStats;

/// Statistics of one scored position.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct TokenStats {
    pub logprob: f32,
    pub lse: f32,
    pub sum_p2: f32,
    pub entropy: f32,
    pub rank: u32,
    /// NaN unless the top-K Brier was requested.
    pub topk_brier: f32,
}

/// What the statistics pass computes beyond the always-on fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsOptions {
    /// Compute the authors' top-K renormalised Brier with this K.
    pub topk_brier: Option<usize>,
}

/// Running state of the one-pass reduction (f64 on the CPU).
#[derive(Debug, Clone, Copy)]
struct Online {
    m: f64,
    s: f64,
    s2: f64,
    e: f64,
}

impl Online {
    fn new() -> Self {
        Online { m: f64::NEG_INFINITY, s: 0.0, s2: 0.0, e: 0.0 }
    }
    #[inline]
    fn push(&mut self, z: f64) {
        if z > self.m {
            if self.m == f64::NEG_INFINITY {
                *self = Online { m: z, s: 1.0, s2: 1.0, e: 0.0 };
                return;
            }
            let d = z - self.m;
            let r = (-d).exp();
            self.e = r * (self.e - d * self.s);
            self.s *= r;
            self.s2 *= r * r;
            self.m = z;
        }
        let x = z - self.m;
        let p = x.exp();
        self.s += p;
        self.s2 += p * p;
        self.e += p * x;
    }
}

/// Statistics of one row of logits for gold token `gold`. The reference implementation: every backend's
/// statistics are checked against this.
pub fn vocab_stats_row(logits: &[f32], gold: u32, opts: &StatsOptions) -> TokenStats {
    let zg = logits[gold as usize];
    let mut acc = Online::new();
    let mut greater = 0u32;
    for &z in logits {
        acc.push(z as f64);
        greater += (z > zg) as u32;
    }
    let ln_s = acc.s.ln();
    let lse = acc.m + ln_s;
    TokenStats {
        logprob: (zg as f64 - lse) as f32,
        lse: lse as f32,
        sum_p2: (acc.s2 / (acc.s * acc.s)) as f32,
        entropy: (ln_s - acc.e / acc.s) as f32,
        rank: 1 + greater,
        topk_brier: match opts.topk_brier {
            Some(k) => topk_brier(logits, gold, k) as f32,
            None => f32::NAN,
        },
    }
}

/// The LARK authors' top-K Brier: softmax over the K largest logits only, renormalised; p(gold) = 0 when the
/// gold token is outside them. Ties at the K-th value are broken by lower index (as `torch.topk` does on CPU
/// in practice; exact ties of float logits are vanishingly rare in real models).
pub fn topk_brier(logits: &[f32], gold: u32, k: usize) -> f64 {
    let k = k.min(logits.len()).max(1);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize].partial_cmp(&logits[*a as usize]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    let m = idx.iter().map(|&i| logits[i as usize] as f64).fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = idx.iter().map(|&i| (logits[i as usize] as f64 - m).exp()).sum();
    let mut sum_p2 = 0.0;
    let mut p_gold = 0.0;
    for &i in &idx {
        let p = (logits[i as usize] as f64 - m).exp() / s;
        sum_p2 += p * p;
        if i == gold {
            p_gold = p;
        }
    }
    sum_p2 - 2.0 * p_gold + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive two-pass float64 statistics, the definition itself.
    fn naive(logits: &[f32], gold: usize) -> (f64, f64, f64, u32) {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = logits.iter().map(|&z| (z as f64 - m).exp()).sum();
        let lse = m + s.ln();
        let p: Vec<f64> = logits.iter().map(|&z| (z as f64 - lse).exp()).collect();
        let sum_p2 = p.iter().map(|x| x * x).sum();
        let ent = -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>();
        let rank = 1 + logits.iter().filter(|&&z| z > logits[gold]).count() as u32;
        (lse, sum_p2, ent, rank)
    }

    #[test]
    fn one_pass_matches_naive_at_awkward_sizes() {
        let mut rng = crate::model::random::SplitMix(7);
        for &v in &[1usize, 2, 7, 33, 1000, 4099] {
            for scale in [0.1f32, 3.0, 30.0] {
                let logits: Vec<f32> = (0..v).map(|_| scale * rng.next_f32()).collect();
                let gold = (rng.next_u64() as usize) % v;
                let got = vocab_stats_row(&logits, gold as u32, &StatsOptions::default());
                let (lse, sp2, ent, rank) = naive(&logits, gold);
                assert!((got.lse as f64 - lse).abs() < 1e-5 * lse.abs().max(1.0));
                assert!((got.logprob as f64 - (logits[gold] as f64 - lse)).abs() < 1e-5);
                assert!((got.sum_p2 as f64 - sp2).abs() <= 1e-6 * sp2.max(1e-30) + 1e-9, "{v} {scale}");
                assert!((got.entropy as f64 - ent).abs() < 1e-5 * ent.max(1.0));
                assert_eq!(got.rank, rank);
                assert!(got.topk_brier.is_nan());
            }
        }
    }

    #[test]
    fn rank_ties_do_not_count() {
        let logits = [1.0f32, 3.0, 3.0, 0.5];
        assert_eq!(vocab_stats_row(&logits, 1, &StatsOptions::default()).rank, 1);
        assert_eq!(vocab_stats_row(&logits, 2, &StatsOptions::default()).rank, 1);
        assert_eq!(vocab_stats_row(&logits, 0, &StatsOptions::default()).rank, 3);
    }

    #[test]
    fn topk_brier_by_hand() {
        // Top-2 of [0, ln 3, -5]: p̃ = [1/4, 3/4]; gold 1 → 1/16 + 9/16 − 1.5 + 1 = 0.125.
        let logits = [0.0f32, 3f32.ln(), -5.0];
        assert!((topk_brier(&logits, 1, 2) - 0.125).abs() < 1e-7);
        // gold outside the top-2: p̃(y) = 0 → 10/16 + 1.
        assert!((topk_brier(&logits, 2, 2) - 1.625).abs() < 1e-7);
        // K ≥ V is the exact Brier.
        let ex = vocab_stats_row(&logits, 1, &StatsOptions { topk_brier: Some(50) });
        let exact = ex.sum_p2 as f64 - 2.0 * (ex.logprob as f64).exp() + 1.0;
        assert!((ex.topk_brier as f64 - exact).abs() < 1e-6);
    }
}
