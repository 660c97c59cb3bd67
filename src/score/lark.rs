//! LARK's per-problem score ĝ_k (paper Eq. 7, Algorithm 1 lines 3–6):
//!
//! ĝ_k = (ℓ_k / Σ_i ℓ_i) · (2 ρ̂_k − Σ_i ρ̂_i ℓ_i / Σ_i ℓ_i),   ρ̂_k = Σ_t ‖π_t − δ(y_t)‖² / Σ_t −log p_t,
//!
//! with ℓ_k the mean NLL over candidate k's scored tokens and the sums over the problem's scored candidates.

/// The Eq. 7 combination as the LARK authors' `score_lark.py` computes it, from per-candidate mean loss
/// `l[k]` and `rho[k]`: NaN for every candidate when Σℓ ≤ 1e-30.
pub fn g_hat_from_rho(l: &[f64], rho: &[f64]) -> Vec<f64> {
    let sum_l: f64 = l.iter().sum();
    if sum_l.is_nan() || sum_l <= 1e-30 {
        return vec![f64::NAN; l.len()];
    }
    let m: f64 = rho.iter().zip(l).map(|(r, l)| r * l).sum::<f64>() / sum_l;
    l.iter().zip(rho).map(|(l, r)| (l / sum_l) * (2.0 * r - m)).collect()
}

/// The authors' per-candidate ρ: `Brier / L`, and 0 when `L ≤ 1e-30` (compat mode, with the top-K Brier).
pub fn rho_compat(brier_mean: f64, l: f64) -> f64 {
    if l <= 1e-30 {
        0.0
    } else {
        brier_mean / l
    }
}

/// ĝ in the exact mode from per-candidate mean loss ℓ_k and mean Brier b_k (full-vocabulary Σπ²).
///
/// Since ρ̂_k ℓ_k = (Σ_t Brier / Σ_t NLL)(Σ_t NLL / n_k) = b_k, Eq. 7 equals
/// ĝ_k = (2 b_k − ℓ_k · Σ_i b_i / Σ_i ℓ_i) / Σ_i ℓ_i,
/// which is the same number without dividing by ℓ_k, so a candidate the student predicts perfectly
/// (ℓ_k = 0, ρ̂_k = 0/0) does not turn the whole problem into NaN. NaN for all when Σℓ ≤ 1e-30.
pub fn g_hat_exact(l: &[f64], brier_mean: &[f64]) -> Vec<f64> {
    let sum_l: f64 = l.iter().sum();
    if sum_l.is_nan() || sum_l <= 1e-30 {
        return vec![f64::NAN; l.len()];
    }
    let m: f64 = brier_mean.iter().sum::<f64>() / sum_l;
    l.iter().zip(brier_mean).map(|(l, b)| (2.0 * b - l * m) / sum_l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq7_by_hand() {
        // ℓ = [1, 3], ρ = [0.5, 0.2]: Σℓ = 4, Σρℓ/Σℓ = (0.5 + 0.6)/4 = 0.275.
        // ĝ_1 = 0.25 (1 − 0.275) = 0.18125; ĝ_2 = 0.75 (0.4 − 0.275) = 0.09375.
        let g = g_hat_from_rho(&[1.0, 3.0], &[0.5, 0.2]);
        assert!((g[0] - 0.18125).abs() < 1e-15 && (g[1] - 0.09375).abs() < 1e-15, "{g:?}");
        // Same through the exact form with b_k = ρ_k ℓ_k = [0.5, 0.6].
        let e = g_hat_exact(&[1.0, 3.0], &[0.5, 0.6]);
        assert!((e[0] - 0.18125).abs() < 1e-15 && (e[1] - 0.09375).abs() < 1e-15, "{e:?}");
        // Identity: Σ_k ĝ_k = (2 Σb − Σb)/Σℓ = Σb/Σℓ.
        assert!((e.iter().sum::<f64>() - 1.1 / 4.0).abs() < 1e-15);
    }

    #[test]
    fn degenerate_problems() {
        assert!(g_hat_from_rho(&[0.0, 0.0], &[0.0, 0.0]).iter().all(|x| x.is_nan()));
        assert!(g_hat_exact(&[0.0], &[0.0]).iter().all(|x| x.is_nan()));
        assert!(g_hat_exact(&[], &[]).is_empty());
        // A perfectly predicted candidate next to a normal one: finite in the exact form.
        let g = g_hat_exact(&[0.0, 2.0], &[0.0, 0.5]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - (1.0 - 2.0 * 0.25) / 2.0).abs() < 1e-15);
        assert_eq!(rho_compat(0.3, 0.0), 0.0);
        assert_eq!(rho_compat(0.3, 0.6), 0.5);
    }

    #[test]
    fn single_candidate_is_rho_hat() {
        // K = 1: ĝ = 1 · (2ρ − ρ) = ρ.
        let g = g_hat_from_rho(&[0.7], &[0.4]);
        assert!((g[0] - 0.4).abs() < 1e-15);
    }
}
