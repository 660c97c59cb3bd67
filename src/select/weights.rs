//! Per-problem weight rules over "keys" (scores mapped so that larger is better). Pure index arithmetic:
//! the caller maps indices back to candidates.
//!
//! Common to every rule (the LARK authors' `select_chi2.py` conventions):
//! - a non-finite key (NaN score, or ±inf) counts as −∞ and is never selected;
//! - candidates are ranked by a stable descending sort: ties keep their input order;
//! - the top `min(B, #valid)` valid candidates are selected;
//! - when every key is invalid, every candidate is selected with weight 1/K.

/// Result of a rule: the ranking, the selected indices with weights (in rank order), and the threshold key.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// All indices, best first.
    pub order: Vec<usize>,
    /// (index, weight) for the selected, best first. Weights sum to 1 when anything is selected.
    pub selected: Vec<(usize, f64)>,
    /// The key that selected candidates are measured against: e_(B+1) when more than B are valid,
    /// else (χ² only) min(selected) − 1e-8; NaN when there is none.
    pub threshold: f64,
}

fn valid_key(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        f64::NEG_INFINITY
    }
}

/// Stable descending ranking with invalid keys last.
fn rank(keys: &[f64]) -> (Vec<usize>, Vec<f64>, usize) {
    let k: Vec<f64> = keys.iter().map(|&x| valid_key(x)).collect();
    let mut order: Vec<usize> = (0..k.len()).collect();
    // −∞ compares normally, so partial_cmp never fails here.
    order.sort_by(|&a, &b| k[b].partial_cmp(&k[a]).unwrap_or(std::cmp::Ordering::Equal));
    let n_valid = k.iter().filter(|x| x.is_finite()).count();
    (order, k, n_valid)
}

fn uniform_over(idx: &[usize]) -> Vec<(usize, f64)> {
    let w = 1.0 / idx.len() as f64;
    idx.iter().map(|&i| (i, w)).collect()
}

/// Shared frame: ranking, the all-invalid case, the selected set and the e_(B+1) threshold.
/// Returns `Err(weights)` when the all-invalid rule already decided.
fn frame(keys: &[f64], budget: usize) -> Result<(Vec<usize>, Vec<f64>, usize, f64), Weights> {
    let (order, k, n_valid) = rank(keys);
    if n_valid == 0 {
        let selected = uniform_over(&order);
        return Err(Weights { order, selected, threshold: f64::NAN });
    }
    let n_sel = budget.min(n_valid);
    let next = if n_valid > budget { k[order[budget]] } else { f64::NAN };
    Ok((order, k, n_sel, next))
}

/// The closed-form χ²-B weights (paper Lemma 3, Algorithm 1 lines 7–12):
/// q_k = (e_k − e_(B+1)) / Σ_{j≤B} (e_j − e_(B+1)) for the top B, 0 for the rest.
/// When every valid candidate is selected there is no e_(B+1): the threshold is min(selected) − 1e-8.
/// When the denominator is ≤ 1e-12 (all selected tie with the threshold): uniform 1/B.
pub fn chi2(keys: &[f64], budget: usize) -> Weights {
    let (order, k, n_sel, next) = match frame(keys, budget) {
        Ok(f) => f,
        Err(w) => return w,
    };
    let sel = &order[..n_sel];
    let threshold =
        if next.is_finite() { next } else { sel.iter().map(|&i| k[i]).fold(f64::INFINITY, f64::min) - 1e-8 };
    let denom: f64 = sel.iter().map(|&i| k[i] - threshold).sum();
    let selected =
        if denom <= 1e-12 { uniform_over(sel) } else { sel.iter().map(|&i| (i, (k[i] - threshold) / denom)).collect() };
    Weights { order, selected, threshold }
}

/// Hard top-B with uniform weights 1/B (how every baseline of Appendix C.2 is trained).
pub fn uniform(keys: &[f64], budget: usize) -> Weights {
    let (order, _, n_sel, next) = match frame(keys, budget) {
        Ok(f) => f,
        Err(w) => return w,
    };
    let selected = uniform_over(&order[..n_sel]);
    Weights { order, selected, threshold: next }
}

/// Top-B with weights proportional to the key, negative keys counting as 0:
/// q_k = max(e_k, 0) / Σ_{j≤B} max(e_j, 0); uniform when that sum is ≤ 1e-12 (e.g. all keys ≤ 0, which is
/// always the case for a min-direction scorer, whose keys are negated scores).
pub fn proportional(keys: &[f64], budget: usize) -> Weights {
    let (order, k, n_sel, next) = match frame(keys, budget) {
        Ok(f) => f,
        Err(w) => return w,
    };
    let sel = &order[..n_sel];
    let total: f64 = sel.iter().map(|&i| k[i].max(0.0)).sum();
    let selected =
        if total <= 1e-12 { uniform_over(sel) } else { sel.iter().map(|&i| (i, k[i].max(0.0) / total)).collect() };
    Weights { order, selected, threshold: next }
}

/// Top-B with softmax weights at temperature T > 0: q_k ∝ exp((e_k − e_1)/T).
pub fn softmax(keys: &[f64], budget: usize, temperature: f64) -> Weights {
    let (order, k, n_sel, next) = match frame(keys, budget) {
        Ok(f) => f,
        Err(w) => return w,
    };
    let sel = &order[..n_sel];
    let top = k[sel[0]];
    let ex: Vec<f64> = sel.iter().map(|&i| ((k[i] - top) / temperature).exp()).collect();
    let total: f64 = ex.iter().sum();
    let selected = sel.iter().zip(&ex).map(|(&i, e)| (i, e / total)).collect();
    Weights { order, selected, threshold: next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ws: &Weights) -> Vec<f64> {
        ws.selected.iter().map(|x| x.1).collect()
    }

    #[test]
    fn paper_d3_weights() {
        // Appendix D.3, pid 839: the four top scores (rest of the pool below) at B = 3.
        let keys = [0.01285, 0.01426, 0.0096, 0.01782, 0.01687, 0.0052];
        let r = chi2(&keys, 3);
        assert_eq!(r.selected.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 4, 1]);
        let q = w(&r);
        let rounded: Vec<f64> = q.iter().map(|x| (x * 1000.0).round() / 1000.0).collect();
        assert_eq!(rounded, vec![0.478, 0.387, 0.136]);
        assert_eq!(r.threshold, 0.01285);
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(r.order, vec![3, 4, 1, 0, 2, 5]);
    }

    #[test]
    fn chi2_nan_ties_and_degenerate_cases() {
        // NaN never selected, ranked last; ties keep input order.
        let r = chi2(&[f64::NAN, 2.0, 1.0, 2.0, 0.0], 2);
        assert_eq!(r.order, vec![1, 3, 2, 4, 0]);
        assert_eq!(r.selected, vec![(1, 0.5), (3, 0.5)]);
        assert_eq!(r.threshold, 1.0);
        // Every valid candidate selected: threshold min − 1e-8.
        let r = chi2(&[3.0, f64::NAN, 1.0], 3);
        assert_eq!(r.selected.len(), 2);
        assert!((r.threshold - (1.0 - 1e-8)).abs() < 1e-15);
        let q = w(&r);
        assert!((q[0] - 2.00000001 / 2.00000002).abs() < 1e-12 && q[1] > 0.0 && q[1] < 1e-8);
        // A single valid candidate gets weight 1.
        assert_eq!(chi2(&[f64::NAN, 0.5], 3).selected, vec![(1, 1.0)]);
        // Denominator ≤ 1e-12 (top B tie with e_(B+1)): uniform 1/B.
        let r = chi2(&[1.0, 1.0, 1.0, 0.0], 2);
        assert_eq!(r.selected, vec![(0, 0.5), (1, 0.5)]);
        // All NaN: uniform over all.
        let r = chi2(&[f64::NAN, f64::NAN, f64::NAN], 2);
        assert_eq!(r.selected.len(), 3);
        assert!(r.selected.iter().all(|x| (x.1 - 1.0 / 3.0).abs() < 1e-15) && r.threshold.is_nan());
        // +inf counts as invalid.
        assert_eq!(chi2(&[f64::INFINITY, 1.0], 1).selected, vec![(1, 1.0)]);
        assert!(chi2(&[], 3).selected.is_empty());
    }

    #[test]
    fn other_weightings() {
        let keys = [0.2, -0.1, 0.6, 0.4];
        let u = uniform(&keys, 2);
        assert_eq!(u.selected, vec![(2, 0.5), (3, 0.5)]);
        assert_eq!(u.threshold, 0.2);
        let p = proportional(&keys, 3);
        assert_eq!(p.selected.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 3, 0]);
        assert!((w(&p)[0] - 0.5).abs() < 1e-12 && (w(&p)[2] - 1.0 / 6.0).abs() < 1e-12);
        // Negative keys only: uniform.
        assert_eq!(w(&proportional(&[-1.0, -2.0], 2)), vec![0.5, 0.5]);
        // Negative key inside the top B counts as 0.
        assert_eq!(w(&proportional(&[1.0, -2.0], 2)), vec![1.0, 0.0]);
        // Softmax at T = 1/ln 2 over keys 2, 1: weights ∝ 2^0, 2^−1 → 2/3, 1/3.
        let s = softmax(&[1.0, 2.0, 0.0], 2, 1.0 / 2f64.ln());
        assert_eq!(s.selected.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 0]);
        assert!((w(&s)[0] - 2.0 / 3.0).abs() < 1e-12 && (w(&s)[1] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.threshold, 0.0);
        assert!(uniform(&[1.0], 3).threshold.is_nan());
    }
}
