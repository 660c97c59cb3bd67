//! The paper's three checks of ĝ against the exact g* (Appendix B.8.2, Fig. 6), over problems of paired
//! per-candidate values:
//!
//! (a) a per-question affine rescale of ĝ onto g*, then pooled Pearson r and Spearman ρ over every candidate.
//!     The paper's rescale "aligns the mean and scale of ĝ with those of g*" and "preserves within-question
//!     rankings": ĝ' = mean(g*) + (ĝ − mean(ĝ))·sd(g*)/sd(ĝ) ([`Rescale::MeanScale`], the headline figures).
//!     The least-squares fit g* ≈ a·ĝ + b per question ([`Rescale::LeastSquares`]) is reported beside it; its
//!     slope may be negative (it then reverses the question's ranking, and flatters the pooled correlations).
//! (b) Recall@B = |top_B(ĝ) ∩ top_B(g*)| / B averaged over questions, B = 1…10, beside the random line B/K
//!     (averaged over the same questions). A question enters Recall@B only when K > B (at K ≤ B every ranking
//!     recalls everything). Ties are broken by pool order, as the selection does.
//! (c) per question, the relative p-weighted RMS error ‖ĝ − g*‖_p / ‖g*‖_p with p uniform over the question's
//!     K scored candidates (‖v‖²_p = K⁻¹ Σ v_k², Corollary 3), on ĝ as computed (not rescaled): its mean,
//!     median and histogram. The same error after the mean-and-scale rescale is reported too.
//!
//! Only candidates with finite ĝ and g* enter; a question needs at least two of them.

use serde::Serialize;

/// How ĝ is mapped onto g* within a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescale {
    MeanScale,
    LeastSquares,
}

/// One question's paired values, in pool order.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub problem_id: i64,
    pub g_hat: Vec<f64>,
    pub g_star: Vec<f64>,
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// ĝ mapped onto g*'s scale within one question. A constant ĝ maps to mean(g*).
pub fn rescale(g_hat: &[f64], g_star: &[f64], how: Rescale) -> Vec<f64> {
    let (mh, ms) = (mean(g_hat), mean(g_star));
    let vh: f64 = g_hat.iter().map(|x| (x - mh).powi(2)).sum();
    let vs: f64 = g_star.iter().map(|x| (x - ms).powi(2)).sum();
    let cov: f64 = g_hat.iter().zip(g_star).map(|(h, s)| (h - mh) * (s - ms)).sum();
    let a = if vh <= 0.0 {
        0.0
    } else {
        match how {
            Rescale::MeanScale => (vs / vh).sqrt(),
            Rescale::LeastSquares => cov / vh,
        }
    };
    g_hat.iter().map(|h| ms + a * (h - mh)).collect()
}

pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x), mean(y));
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    sxy / (sxx * syy).sqrt()
}

/// Ranks 1..n, ties given their average rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// Indices of the B largest values (ties: earlier first).
pub fn top_b(x: &[f64], b: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&i, &j| x[j].total_cmp(&x[i]).then(i.cmp(&j)));
    idx.truncate(b);
    idx
}

pub fn recall_at(g_hat: &[f64], g_star: &[f64], b: usize) -> f64 {
    let a = top_b(g_hat, b);
    let s = top_b(g_star, b);
    a.iter().filter(|i| s.contains(i)).count() as f64 / b as f64
}

/// ‖ĝ − g*‖_p / ‖g*‖_p, p uniform (K cancels).
pub fn rel_rms_error(g_hat: &[f64], g_star: &[f64]) -> f64 {
    let num: f64 = g_hat.iter().zip(g_star).map(|(h, s)| (h - s).powi(2)).sum();
    let den: f64 = g_star.iter().map(|s| s * s).sum();
    (num / den).sqrt()
}

pub fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecallPoint {
    #[serde(rename = "B")]
    pub b: usize,
    /// Mean Recall@B over the questions with K > B (null when none).
    pub recall: Option<f64>,
    /// Mean B/K over the same questions.
    pub random: Option<f64>,
    pub n_questions: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Histogram {
    /// Bin edges; the last bin also holds every value above its upper edge.
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuestionError {
    pub problem_id: i64,
    #[serde(rename = "K")]
    pub k: usize,
    pub rel_rms_error: f64,
    pub rel_rms_error_rescaled: f64,
    pub ls_slope_negative: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnostics {
    pub n_questions: usize,
    pub n_candidates: usize,
    /// Panel (a): pooled over every candidate after the mean-and-scale rescale.
    pub pearson: f64,
    pub spearman: f64,
    /// The same after the least-squares rescale.
    pub pearson_ls: f64,
    pub spearman_ls: f64,
    /// Mean of the per-question Spearman between ĝ and g* (no rescale needed).
    pub spearman_within_mean: f64,
    /// Panel (a)'s points: (rescaled ĝ, g*) per candidate, question-major.
    pub points: Vec<(f64, f64)>,
    /// Panel (b).
    pub recall: Vec<RecallPoint>,
    /// Panel (c).
    pub rel_rms_error_mean: f64,
    pub rel_rms_error_median: f64,
    pub rel_rms_error_rescaled_mean: f64,
    pub rel_rms_error_rescaled_median: f64,
    pub rel_rms_histogram: Histogram,
    pub questions: Vec<QuestionError>,
}

/// Histogram bins of the relative error: width 0.1 on [0, 2), the last open above.
pub fn rel_rms_histogram(values: &[f64]) -> Histogram {
    let edges: Vec<f64> = (0..=20).map(|i| i as f64 * 0.1).collect();
    let mut counts = vec![0usize; 20];
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[((v / 0.1).floor().max(0.0) as usize).min(19)] += 1;
    }
    Histogram { edges, counts }
}

/// Every check over the questions (candidates with non-finite values dropped, questions with fewer than two
/// left dropped).
pub fn diagnose(questions: &[Question]) -> Diagnostics {
    let qs: Vec<Question> = questions
        .iter()
        .map(|q| {
            let keep: Vec<usize> =
                (0..q.g_hat.len()).filter(|&i| q.g_hat[i].is_finite() && q.g_star[i].is_finite()).collect();
            Question {
                problem_id: q.problem_id,
                g_hat: keep.iter().map(|&i| q.g_hat[i]).collect(),
                g_star: keep.iter().map(|&i| q.g_star[i]).collect(),
            }
        })
        .filter(|q| q.g_hat.len() >= 2)
        .collect();
    let (mut xs, mut ys, mut xl) = (Vec::new(), Vec::new(), Vec::new());
    let mut within = Vec::new();
    let mut errs = Vec::new();
    for q in &qs {
        let r = rescale(&q.g_hat, &q.g_star, Rescale::MeanScale);
        let l = rescale(&q.g_hat, &q.g_star, Rescale::LeastSquares);
        let (mh, ms) = (mean(&q.g_hat), mean(&q.g_star));
        let cov: f64 = q.g_hat.iter().zip(&q.g_star).map(|(h, s)| (h - mh) * (s - ms)).sum();
        errs.push(QuestionError {
            problem_id: q.problem_id,
            k: q.g_hat.len(),
            rel_rms_error: rel_rms_error(&q.g_hat, &q.g_star),
            rel_rms_error_rescaled: rel_rms_error(&r, &q.g_star),
            ls_slope_negative: cov < 0.0,
        });
        let s = spearman(&q.g_hat, &q.g_star);
        if s.is_finite() {
            within.push(s);
        }
        xs.extend(r);
        xl.extend(l);
        ys.extend(q.g_star.iter().copied());
    }
    let recall = (1..=10)
        .map(|b| {
            let inq: Vec<&Question> = qs.iter().filter(|q| q.g_hat.len() > b).collect();
            let n = inq.len();
            let avg = |f: &dyn Fn(&Question) -> f64| {
                if n == 0 {
                    None
                } else {
                    Some(inq.iter().map(|q| f(q)).sum::<f64>() / n as f64)
                }
            };
            RecallPoint {
                b,
                recall: avg(&|q| recall_at(&q.g_hat, &q.g_star, b)),
                random: avg(&|q| b as f64 / q.g_hat.len() as f64),
                n_questions: n,
            }
        })
        .collect();
    let e: Vec<f64> = errs.iter().map(|q| q.rel_rms_error).collect();
    let er: Vec<f64> = errs.iter().map(|q| q.rel_rms_error_rescaled).collect();
    let nan_mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { mean(v) };
    Diagnostics {
        n_questions: qs.len(),
        n_candidates: ys.len(),
        pearson: pearson(&xs, &ys),
        spearman: spearman(&xs, &ys),
        pearson_ls: pearson(&xl, &ys),
        spearman_ls: spearman(&xl, &ys),
        spearman_within_mean: nan_mean(&within),
        points: xs.iter().copied().zip(ys.iter().copied()).collect(),
        recall,
        rel_rms_error_mean: nan_mean(&e),
        rel_rms_error_median: median(&e),
        rel_rms_error_rescaled_mean: nan_mean(&er),
        rel_rms_error_rescaled_median: median(&er),
        rel_rms_histogram: rel_rms_histogram(&e),
        questions: errs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rescales_by_hand() {
        // ĝ = [1, 2, 3] (mean 2, Σ(ĝ−2)² = 2), g* = [2, 6, 4] (mean 4, Σ(g*−4)² = 8), cov = Σ = (−1)(−2)+0+(1)(0) = 2.
        let (h, s) = ([1.0, 2.0, 3.0], [2.0, 6.0, 4.0]);
        // Mean and scale: slope sqrt(8/2) = 2 → [2, 4, 6].
        let r = rescale(&h, &s, Rescale::MeanScale);
        assert!(close(r[0], 2.0) && close(r[1], 4.0) && close(r[2], 6.0), "{r:?}");
        // Least squares: slope 2/2 = 1, intercept 4 − 2 = 2 → [3, 4, 5].
        let l = rescale(&h, &s, Rescale::LeastSquares);
        assert!(close(l[0], 3.0) && close(l[1], 4.0) && close(l[2], 5.0), "{l:?}");
        // A constant ĝ maps to the mean of g*.
        assert_eq!(rescale(&[1.0, 1.0], &[0.0, 2.0], Rescale::MeanScale), vec![1.0, 1.0]);
    }

    #[test]
    fn correlations_by_hand() {
        // x = [1, 2, 3], y = [2, 6, 4]: Sxy = 2, Sxx = 2, Syy = 8 → r = 2/4 = 0.5.
        assert!(close(pearson(&[1.0, 2.0, 3.0], &[2.0, 6.0, 4.0]), 0.5));
        // Ranks of y = [1, 3, 2]: Spearman = pearson([1,2,3],[1,3,2]) = 1/2.
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[2.0, 6.0, 4.0]), 0.5));
        assert_eq!(ranks(&[5.0, 1.0, 5.0, 3.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn recall_and_error_by_hand() {
        let h = [0.9, 0.1, 0.5, 0.3];
        let s = [0.2, 0.8, 0.6, 0.1];
        // top1(ĝ) = {0}, top1(g*) = {1}: 0. top2: {0, 2} vs {1, 2}: 1/2. top3: {0,2,3} vs {1,2,0}: 2/3.
        assert_eq!(recall_at(&h, &s, 1), 0.0);
        assert!(close(recall_at(&h, &s, 2), 0.5));
        assert!(close(recall_at(&h, &s, 3), 2.0 / 3.0));
        // Ties go to the earlier candidate.
        assert_eq!(top_b(&[1.0, 2.0, 2.0], 1), vec![1]);
        // ‖ĝ − g*‖/‖g*‖: ĝ = [1, 1], g* = [1, 3]: sqrt(4/10).
        assert!(close(rel_rms_error(&[1.0, 1.0], &[1.0, 3.0]), (0.4f64).sqrt()));
        assert!(close(median(&[3.0, 1.0, 2.0, 10.0]), 2.5));
        let hgram = rel_rms_histogram(&[0.05, 0.15, 0.19, 7.0]);
        assert_eq!(hgram.counts[0], 1);
        assert_eq!(hgram.counts[1], 2);
        assert_eq!(hgram.counts[19], 1);
    }

    #[test]
    fn diagnose_two_questions() {
        let qs = vec![
            Question { problem_id: 1, g_hat: vec![1.0, 2.0, 3.0], g_star: vec![2.0, 6.0, 4.0] },
            // One candidate has no g*: dropped; the question keeps two.
            Question { problem_id: 2, g_hat: vec![0.0, 1.0, 5.0], g_star: vec![1.0, 0.0, f64::NAN] },
            // Only one finite pair: the question is dropped.
            Question { problem_id: 3, g_hat: vec![1.0, f64::NAN], g_star: vec![1.0, 2.0] },
        ];
        let d = diagnose(&qs);
        assert_eq!((d.n_questions, d.n_candidates), (2, 5));
        // Question 2 after mean-and-scale: mean 0.5, slope 1 → [0, 1] against g* = [1, 0].
        // Pooled points: (2,2) (4,6) (6,4) (0,1) (1,0).
        let x = [2.0, 4.0, 6.0, 0.0, 1.0];
        let y = [2.0, 6.0, 4.0, 1.0, 0.0];
        assert!(close(d.pearson, pearson(&x, &y)));
        assert!(close(d.spearman, spearman(&x, &y)));
        // Recall@1: question 1: top(ĝ) = 2, top(g*) = 1 → 0; question 2: top(ĝ) = 1, top(g*) = 0 → 0.
        assert_eq!(d.recall[0].recall, Some(0.0));
        assert_eq!(d.recall[0].n_questions, 2);
        // Random line at B = 1: mean(1/3, 1/2).
        assert!(close(d.recall[0].random.unwrap(), (1.0 / 3.0 + 0.5) / 2.0));
        // B = 2 only question 1 has K > 2: top2(ĝ) = {2, 1}, top2(g*) = {1, 2} → 1.
        assert_eq!((d.recall[1].recall, d.recall[1].n_questions), (Some(1.0), 1));
        assert_eq!(d.recall[2].recall, None);
        // Errors: question 1: ‖[1,2,3]−[2,6,4]‖/‖[2,6,4]‖ = sqrt(18/56); question 2: sqrt(2/1).
        let (e1, e2) = ((18.0f64 / 56.0).sqrt(), 2f64.sqrt());
        assert!(close(d.rel_rms_error_mean, (e1 + e2) / 2.0));
        assert!(close(d.rel_rms_error_median, (e1 + e2) / 2.0));
        assert!(d.questions[1].ls_slope_negative && !d.questions[0].ls_slope_negative);
    }
}
