//! One line of `scores.jsonl` and how a problem's candidates become those lines.
//!
//! Non-finite numbers (NaN, ±inf) are written as JSON `null` and read back as NaN, so the file is always
//! valid JSON; `null` means "no score" (skipped trajectory, degenerate problem, score not computable).
//! A skipped trajectory has `skipped: "<reason>"` and null for every score; `skipped` is null otherwise.
//! `local_naturalness` and `llm_judge` are present only when requested.

use super::lark::{g_hat_exact, g_hat_from_rho};
use super::random::random_key;
use super::text::{rule_quality, TextFeatures};
use super::trajectory::{BrierMode, TrajectoryScores};
use crate::stats::TrajectoryStats;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

fn one() -> u64 {
    1
}
fn is_one(n: &u64) -> bool {
    *n == 1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub problem_id: i64,
    pub candidate_id: i64,
    pub teacher: String,
    pub skipped: Option<String>,
    /// Scored tokens (after truncation).
    pub n_tokens: Option<u64>,
    /// Scored assistant turns; written only when it is not 1, so single-turn output is unchanged (absent = 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub n_turns: u64,
    pub truncated: bool,
    #[serde(with = "nan_null")]
    pub nll_sum: f64,
    /// ℓ: mean NLL.
    #[serde(rename = "L", with = "nan_null")]
    pub l: f64,
    #[serde(with = "nan_null")]
    pub brier_sum: f64,
    #[serde(with = "nan_null")]
    pub brier_mean: f64,
    #[serde(with = "nan_null")]
    pub rho_hat: f64,
    #[serde(with = "nan_null")]
    pub g_hat: f64,
    #[serde(with = "nan_null")]
    pub grape: f64,
    #[serde(with = "nan_null")]
    pub inverse_loss: f64,
    #[serde(with = "nan_null")]
    pub rsr: f64,
    #[serde(with = "nan_null")]
    pub mean_rank_clip: f64,
    #[serde(with = "nan_null")]
    pub mean_p_gold: f64,
    #[serde(with = "nan_null")]
    pub wrong_conc: f64,
    #[serde(with = "nan_null")]
    pub entropy_mean: f64,
    pub token_len: Option<u64>,
    pub word_len: Option<u64>,
    #[serde(with = "nan_null")]
    pub rule_quality: f64,
    #[serde(with = "nan_null")]
    pub random: f64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nan_null")]
    pub local_naturalness: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_nan_null")]
    pub llm_judge: Option<f64>,
}

/// What the forward pass made of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scored {
        stats: TrajectoryStats,
        truncated: bool,
        /// Assistant turns whose positions `stats` sums over.
        n_turns: usize,
    },
    /// Not scored, with the reason (e.g. "empty scored span", "prompt fills --max-len").
    Skipped(String),
}

/// Everything known about one candidate before per-problem scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub problem_id: i64,
    pub candidate_id: i64,
    pub teacher: String,
    pub outcome: Outcome,
    /// From the assistant content (see `score::text`).
    pub text: TextFeatures,
    /// `None`: not requested. `Some(NaN)`: requested, not computable.
    pub local_naturalness: Option<f64>,
    /// `None`: not requested. `Some(NaN)`: requested, absent from the judge file.
    pub llm_judge: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    pub brier: BrierMode,
    /// Seed of the Random baseline.
    pub seed: u64,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions { brier: BrierMode::Exact, seed: 42 }
    }
}

impl ScoreRow {
    /// The row of `c` with its own scores `t`; everything that needs the other candidates or the text is
    /// unset (NaN / None) for the caller to fill.
    fn from_scores(c: &Candidate, t: &TrajectoryScores) -> Self {
        let nan = f64::NAN;
        ScoreRow {
            problem_id: c.problem_id,
            candidate_id: c.candidate_id,
            teacher: c.teacher.clone(),
            skipped: None,
            n_tokens: None,
            n_turns: 1,
            truncated: false,
            nll_sum: t.nll_sum,
            l: t.l,
            brier_sum: t.brier_sum,
            brier_mean: t.brier_mean,
            rho_hat: t.rho_hat,
            g_hat: nan,
            grape: t.grape,
            inverse_loss: t.inverse_loss,
            rsr: t.rsr,
            mean_rank_clip: t.mean_rank_clip,
            mean_p_gold: t.mean_p_gold,
            wrong_conc: t.wrong_conc,
            entropy_mean: t.entropy_mean,
            token_len: None,
            word_len: None,
            rule_quality: nan,
            random: nan,
            local_naturalness: c.local_naturalness.map(|_| nan),
            llm_judge: c.llm_judge.map(|_| nan),
        }
    }

    fn skipped(c: &Candidate, reason: String) -> Self {
        ScoreRow { skipped: Some(reason), ..Self::from_scores(c, &TrajectoryScores::NAN) }
    }
}

/// Score one problem's candidates. Rows come back in input order. The per-problem scores (ĝ, rule
/// quality) are computed over the scored candidates only; a candidate with an empty span counts as skipped.
pub fn score_problem(cands: &[Candidate], opts: &ScoreOptions) -> Vec<ScoreRow> {
    let scored: Vec<(usize, TrajectoryStats, bool, usize)> = cands
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.outcome {
            Outcome::Scored { stats, truncated, n_turns } if stats.n_tokens > 0 => {
                Some((i, *stats, *truncated, *n_turns))
            }
            _ => None,
        })
        .collect();
    let ts: Vec<TrajectoryScores> = scored.iter().map(|(_, s, _, _)| TrajectoryScores::new(s, opts.brier)).collect();
    let l: Vec<f64> = ts.iter().map(|t| t.l).collect();
    let g = match opts.brier {
        BrierMode::Exact => g_hat_exact(&l, &ts.iter().map(|t| t.brier_mean).collect::<Vec<_>>()),
        BrierMode::TopK(_) => g_hat_from_rho(&l, &ts.iter().map(|t| t.rho_hat).collect::<Vec<_>>()),
    };
    let rq = rule_quality(&scored.iter().map(|(i, _, _, _)| cands[*i].text).collect::<Vec<_>>());

    let mut rows: Vec<ScoreRow> = cands
        .iter()
        .map(|c| {
            let reason = match &c.outcome {
                Outcome::Skipped(r) => r.clone(),
                Outcome::Scored { .. } => "empty scored span".to_string(),
            };
            ScoreRow::skipped(c, reason)
        })
        .collect();
    for (j, (i, stats, truncated, n_turns)) in scored.iter().enumerate() {
        let (c, t) = (&cands[*i], &ts[j]);
        rows[*i] = ScoreRow {
            n_tokens: Some(stats.n_tokens as u64),
            n_turns: *n_turns as u64,
            truncated: *truncated,
            g_hat: g[j],
            token_len: Some(stats.n_tokens as u64),
            word_len: Some(c.text.words),
            rule_quality: rq[j],
            random: random_key(opts.seed, c.problem_id, c.candidate_id),
            local_naturalness: c.local_naturalness,
            llm_judge: c.llm_judge,
            ..ScoreRow::from_scores(c, t)
        };
    }
    rows
}

/// Score a whole pool's candidates: grouped by problem in first-appearance order (stable within a
/// problem), each group through [`score_problem`]. Rows come back problem-major.
pub fn score_all(cands: &[Candidate], opts: &ScoreOptions) -> Vec<ScoreRow> {
    let mut order: Vec<i64> = Vec::new();
    let mut groups: HashMap<i64, Vec<Candidate>> = HashMap::new();
    for c in cands {
        groups
            .entry(c.problem_id)
            .or_insert_with(|| {
                order.push(c.problem_id);
                Vec::new()
            })
            .push(c.clone());
    }
    order.iter().flat_map(|pid| score_problem(&groups[pid], opts)).collect()
}

/// Group rows by problem id in first-appearance order, stable within a problem.
pub fn group_rows(rows: Vec<ScoreRow>) -> Vec<(i64, Vec<ScoreRow>)> {
    let mut out: Vec<(i64, Vec<ScoreRow>)> = Vec::new();
    let mut at: HashMap<i64, usize> = HashMap::new();
    for r in rows {
        let i = *at.entry(r.problem_id).or_insert_with(|| {
            out.push((r.problem_id, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(r);
    }
    out
}

/// Serde for f64 fields: non-finite ↔ `null`.
pub mod nan_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Serde for optional f64 fields: absent ↔ `None` (with `default` and `skip_serializing_if`),
/// `null` ↔ `Some(NaN)`.
pub mod opt_nan_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(v) if v.is_finite() => s.serialize_f64(*v),
            _ => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Some(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::trajectory::tests::two_token_stats;

    fn cand(cid: i64, outcome: Outcome, words: u64) -> Candidate {
        Candidate {
            problem_id: 9,
            candidate_id: cid,
            teacher: format!("t{cid}"),
            outcome,
            text: TextFeatures { words, ..Default::default() },
            local_naturalness: None,
            llm_judge: Some(0.5),
        }
    }

    /// A one-token trajectory with gold probability p and Σπ² = q.
    fn one_token(p: f64, q: f64) -> TrajectoryStats {
        TrajectoryStats {
            n_tokens: 1,
            nll_sum: -p.ln(),
            brier_sum: q - 2.0 * p + 1.0,
            sum_p2_sum: q,
            p_gold_sum: p,
            wrong_conc_sum: q - p * p,
            entropy_sum: 0.0,
            rank_clip_sum: 1.0,
            rank_sum: 1.0,
            topk_brier_sum: q - 2.0 * p + 1.0,
        }
    }

    #[test]
    fn problem_scores_by_hand() {
        // A: p = e^{-1} → ℓ = 1; Σπ² = 0.2 → b = 0.2 − 2/e + 1.  B: p = e^{-3} → ℓ = 3; Σπ² = 0.5.
        let (pa, pb) = ((-1f64).exp(), (-3f64).exp());
        let (ba, bb) = (0.2 - 2.0 * pa + 1.0, 0.5 - 2.0 * pb + 1.0);
        let cands = vec![
            cand(0, Outcome::Scored { stats: one_token(pa, 0.2), truncated: false, n_turns: 1 }, 10),
            cand(1, Outcome::Skipped("prompt fills --max-len".into()), 30),
            cand(2, Outcome::Scored { stats: one_token(pb, 0.5), truncated: true, n_turns: 1 }, 20),
        ];
        let rows = score_problem(&cands, &ScoreOptions::default());
        assert_eq!(rows.len(), 3);
        // Eq. 7 by hand: Σℓ = 4, M = (ba + bb)/4; ĝ_A = (1/4)(2 ba/1 − M), ĝ_B = (3/4)(2 bb/3 − M).
        let m = (ba + bb) / 4.0;
        assert!((rows[0].g_hat - 0.25 * (2.0 * ba - m)).abs() < 1e-14);
        assert!((rows[2].g_hat - 0.75 * (2.0 * bb / 3.0 - m)).abs() < 1e-14);
        assert!((rows[0].rho_hat - ba).abs() < 1e-14 && (rows[2].rho_hat - bb / 3.0).abs() < 1e-14);
        assert_eq!((rows[0].l, rows[2].l, rows[2].grape), (1.0, 3.0, -3.0));
        assert!(rows[2].truncated && !rows[0].truncated);
        // Rule quality over the two scored candidates only: len z = ∓1, all freqs 0 → ∓0.30.
        assert!((rows[0].rule_quality + 0.3).abs() < 1e-6 && (rows[2].rule_quality - 0.3).abs() < 1e-6);
        assert_eq!((rows[0].word_len, rows[0].token_len), (Some(10), Some(1)));
        assert_eq!(rows[0].random, random_key(42, 9, 0));
        assert_eq!(rows[0].llm_judge, Some(0.5));
        // The skipped one carries its reason and no numbers.
        let s = &rows[1];
        assert_eq!(s.skipped.as_deref(), Some("prompt fills --max-len"));
        assert!(s.g_hat.is_nan() && s.random.is_nan() && s.word_len.is_none());
        assert!(s.llm_judge.unwrap().is_nan() && s.local_naturalness.is_none());
    }

    #[test]
    fn compat_mode_uses_topk_brier_and_authors_formula() {
        let st = two_token_stats();
        let other = one_token((-1f64).exp(), 0.2);
        let cands = vec![
            cand(0, Outcome::Scored { stats: st, truncated: false, n_turns: 1 }, 5),
            cand(1, Outcome::Scored { stats: other, truncated: false, n_turns: 1 }, 5),
        ];
        let opts = ScoreOptions { brier: BrierMode::TopK(50), seed: 1 };
        let rows = score_problem(&cands, &opts);
        let l0 = 1.5 * 2f64.ln();
        let rho = [0.65 / l0, other.topk_brier_sum / 1.0];
        let g = g_hat_from_rho(&[l0, 1.0], &rho);
        assert!((rows[0].g_hat - g[0]).abs() < 1e-15 && (rows[1].g_hat - g[1]).abs() < 1e-15);
        assert!((rows[0].brier_mean - 0.65).abs() < 1e-12);
    }

    #[test]
    fn empty_span_is_skipped_and_json_has_nulls() {
        let cands =
            vec![cand(0, Outcome::Scored { stats: TrajectoryStats::default(), truncated: false, n_turns: 1 }, 3)];
        let rows = score_problem(&cands, &ScoreOptions::default());
        assert_eq!(rows[0].skipped.as_deref(), Some("empty scored span"));
        let js = serde_json::to_string(&rows[0]).unwrap();
        assert!(js.contains("\"g_hat\":null") && js.contains("\"L\":null") && js.contains("\"llm_judge\":null"));
        assert!(!js.contains("local_naturalness"));
        let back: ScoreRow = serde_json::from_str(&js).unwrap();
        assert!(back.g_hat.is_nan() && back.llm_judge.unwrap().is_nan() && back.local_naturalness.is_none());
    }

    #[test]
    fn score_all_groups_by_first_appearance() {
        let mk = |pid: i64, cid: i64| Candidate {
            problem_id: pid,
            ..cand(cid, Outcome::Scored { stats: one_token(0.5, 0.3), truncated: false, n_turns: 1 }, 1)
        };
        let rows = score_all(&[mk(5, 0), mk(2, 0), mk(5, 1)], &ScoreOptions::default());
        let ids: Vec<(i64, i64)> = rows.iter().map(|r| (r.problem_id, r.candidate_id)).collect();
        assert_eq!(ids, vec![(5, 0), (5, 1), (2, 0)]);
        let groups = group_rows(rows);
        assert_eq!(groups.iter().map(|g| (g.0, g.1.len())).collect::<Vec<_>>(), vec![(5, 2), (2, 1)]);
    }
}
