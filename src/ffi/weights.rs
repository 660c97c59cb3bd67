//! `lark_problem_weights`: one problem's ĝ (paper Eq. 7, exactly as `score::row::score_problem`) and its
//! selection weights (`select::weights`, keys = ĝ, larger is better).

use super::status::{guard, non_null, non_null_mut, FfiError, FfiResult};
use super::types::{
    LarkTrajectoryStats, LARK_WEIGHT_CHI2, LARK_WEIGHT_PROPORTIONAL, LARK_WEIGHT_SOFTMAX, LARK_WEIGHT_UNIFORM,
};
use crate::score::lark::{g_hat_exact, g_hat_from_rho};
use crate::select::weights;
use std::ffi::c_int;

/// ĝ for every candidate (NaN for skipped ones) and the weights (0 for the unselected).
pub fn problem_weights(
    stats: &[LarkTrajectoryStats],
    budget: usize,
    weighting: c_int,
    temperature: f64,
) -> FfiResult<(Vec<f64>, Vec<f64>)> {
    if budget == 0 {
        return Err(FfiError::invalid("budget must be at least 1"));
    }
    if weighting == LARK_WEIGHT_SOFTMAX && !(temperature.is_finite() && temperature > 0.0) {
        return Err(FfiError::invalid(format!("softmax weighting needs a finite temperature > 0, got {temperature}")));
    }
    if let Some(s) = stats.iter().find(|s| s.brier_topk != stats[0].brier_topk) {
        return Err(FfiError::invalid(format!(
            "stats mix Brier modes (brier_topk {} and {}): score a problem with one model handle",
            stats[0].brier_topk, s.brier_topk
        )));
    }
    // Candidates that count for the problem: scored with a non-empty span (as score_problem).
    let scored: Vec<usize> = (0..stats.len()).filter(|&i| stats[i].skipped == 0 && stats[i].n_tokens > 0).collect();
    let l: Vec<f64> = scored.iter().map(|&i| stats[i].L).collect();
    let g = if stats.first().is_none_or(|s| s.brier_topk == 0) {
        g_hat_exact(&l, &scored.iter().map(|&i| stats[i].brier_mean).collect::<Vec<_>>())
    } else {
        g_hat_from_rho(&l, &scored.iter().map(|&i| stats[i].rho_hat).collect::<Vec<_>>())
    };
    let mut g_hat = vec![f64::NAN; stats.len()];
    for (&i, g) in scored.iter().zip(g) {
        g_hat[i] = g;
    }
    let w = match weighting {
        LARK_WEIGHT_CHI2 => weights::chi2(&g_hat, budget),
        LARK_WEIGHT_UNIFORM => weights::uniform(&g_hat, budget),
        LARK_WEIGHT_PROPORTIONAL => weights::proportional(&g_hat, budget),
        LARK_WEIGHT_SOFTMAX => weights::softmax(&g_hat, budget, temperature),
        other => {
            return Err(FfiError::invalid(format!(
                "weighting = {other} (LARK_WEIGHT_CHI2, _UNIFORM, _PROPORTIONAL or _SOFTMAX)"
            )))
        }
    };
    let mut out = vec![0.0; stats.len()];
    for (i, q) in w.selected {
        out[i] = q;
    }
    Ok((g_hat, out))
}

/// One problem's ĝ and weights. See `include/lark.h`.
///
/// # Safety
/// `stats` must hold `k` structs, `g_hat_out` and `weights_out` room for `k` doubles each.
#[no_mangle]
pub unsafe extern "C" fn lark_problem_weights(
    stats: *const LarkTrajectoryStats,
    k: usize,
    budget: usize,
    weighting: c_int,
    temperature: f64,
    g_hat_out: *mut f64,
    weights_out: *mut f64,
) -> c_int {
    guard("lark_problem_weights", || {
        let stats = non_null(stats, "stats")?;
        let g_out = non_null_mut(g_hat_out, "g_hat_out")?;
        let w_out = non_null_mut(weights_out, "weights_out")?;
        let stats = std::slice::from_raw_parts(stats, k);
        let (g, w) = problem_weights(stats, budget, weighting, temperature)?;
        std::ptr::copy_nonoverlapping(g.as_ptr(), g_out, k);
        std::ptr::copy_nonoverlapping(w.as_ptr(), w_out, k);
        Ok(())
    })
}
