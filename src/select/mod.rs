//! Per-problem selection: rank a problem's candidates by one scorer (negated first when lower is better)
//! and weight the top B with χ²-B (LARK, paper Lemma 3 / Algorithm 1) or one of the ablation rules of §5.3
//! (uniform, proportional, softmax). The rules themselves are in [`weights`].

pub mod weights;

use crate::error::{LarkError, Result};
use crate::score::Direction;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How the selected top B are weighted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weighting {
    /// Closed-form χ²-B margins above the (B+1)-th score (the LARK rule).
    Chi2,
    /// 1/B each (hard top-B).
    Uniform,
    /// ∝ max(key, 0), uniform if all are ≤ 0.
    Proportional,
    /// ∝ exp((key − max)/T).
    Softmax { temperature: f64 },
}

impl Weighting {
    /// From `--weighting NAME` and `--temperature T` (softmax needs a finite T > 0; the others ignore it).
    pub fn parse(name: &str, temperature: Option<f64>) -> Result<Self> {
        Ok(match name {
            "chi2" | "lark" => Weighting::Chi2,
            "uniform" => Weighting::Uniform,
            "proportional" => Weighting::Proportional,
            "softmax" => {
                let t = temperature
                    .ok_or_else(|| LarkError::input("--temperature", "softmax weighting needs --temperature T"))?;
                if !(t.is_finite() && t > 0.0) {
                    return Err(LarkError::input("--temperature", format!("must be finite and > 0, got {t}")));
                }
                Weighting::Softmax { temperature: t }
            }
            _ => {
                return Err(LarkError::input(
                    "--weighting",
                    format!("unknown weighting {name:?} (chi2, uniform, proportional, softmax)"),
                ))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Weighting::Chi2 => "chi2",
            Weighting::Uniform => "uniform",
            Weighting::Proportional => "proportional",
            Weighting::Softmax { .. } => "softmax",
        }
    }
}

impl fmt::Display for Weighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weighting::Softmax { temperature } => write!(f, "softmax(T={temperature})"),
            w => f.write_str(w.name()),
        }
    }
}

/// One candidate in rank order with its score (in the scorer's own units; NaN serialised as null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub candidate_id: i64,
    #[serde(with = "crate::score::row::nan_null")]
    pub score: f64,
}

/// A selected candidate and its training weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weighted {
    pub candidate_id: i64,
    #[serde(with = "crate::score::row::nan_null")]
    pub score: f64,
    pub weight: f64,
}

/// One problem's selection; one line of `selection.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub problem_id: i64,
    /// The scorer ranked by (a `scores.jsonl` field name).
    pub by: String,
    pub direction: Direction,
    /// The weighting rule's name (`chi2`, `uniform`, `proportional`, `softmax`).
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    pub budget: usize,
    /// Every candidate, best first (ties in input order, missing scores last).
    pub ranked: Vec<Ranked>,
    /// The selected candidates, best first, with weights summing to 1.
    pub selected: Vec<Weighted>,
    /// The score the selected are measured against, in the scorer's units (for χ²: ĝ_(B+1), or
    /// min(selected) − 1e-8 when every valid candidate is selected); null when there is none.
    #[serde(with = "crate::score::row::nan_null")]
    pub threshold: f64,
}

/// Rank every problem's candidates (rows of `scores.jsonl`, grouped by problem) by the scorer named `by` and
/// weight the top `budget` (what `lark select` and `lark run` do).
pub fn select_rows(
    rows: &[crate::score::ScoreRow],
    by: &str,
    budget: usize,
    weighting: Weighting,
) -> Result<Vec<Selection>> {
    let scorer: crate::score::Scorer = crate::score::parse_scorers(by)?
        .into_iter()
        .next()
        .filter(|_| !by.contains(','))
        .ok_or_else(|| LarkError::input("--by", format!("`{by}`: expected one scorer name")))?;
    crate::score::group_rows(rows.to_vec())
        .into_iter()
        .map(|(pid, rows)| {
            let cands: Vec<(i64, f64)> = rows.iter().map(|r| (r.candidate_id, scorer.value(r))).collect();
            select(pid, &cands, scorer.name(), scorer.direction(), budget, weighting)
        })
        .collect()
}

/// Select among one problem's `(candidate_id, score)` pairs, given in pool order.
pub fn select(
    problem_id: i64,
    candidates: &[(i64, f64)],
    by: &str,
    direction: Direction,
    budget: usize,
    weighting: Weighting,
) -> Result<Selection> {
    if budget == 0 {
        return Err(LarkError::input("--budget", "must be at least 1"));
    }
    let keys: Vec<f64> = candidates.iter().map(|&(_, s)| direction.key(s)).collect();
    let w = match weighting {
        Weighting::Chi2 => weights::chi2(&keys, budget),
        Weighting::Uniform => weights::uniform(&keys, budget),
        Weighting::Proportional => weights::proportional(&keys, budget),
        Weighting::Softmax { temperature } => weights::softmax(&keys, budget, temperature),
    };
    let temperature = match weighting {
        Weighting::Softmax { temperature } => Some(temperature),
        _ => None,
    };
    Ok(Selection {
        problem_id,
        by: by.to_string(),
        direction,
        method: weighting.name().to_string(),
        temperature,
        budget,
        ranked: w.order.iter().map(|&i| Ranked { candidate_id: candidates[i].0, score: candidates[i].1 }).collect(),
        selected: w
            .selected
            .iter()
            .map(|&(i, weight)| Weighted { candidate_id: candidates[i].0, score: candidates[i].1, weight })
            .collect(),
        // Back to the scorer's own units (a min-direction key is the negated score).
        threshold: direction.key(w.threshold),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_d3_through_select() {
        let c = [(6, 0.01426), (16, 0.01782), (17, 0.01687), (7, 0.01285), (15, 0.0096)];
        let s = select(839, &c, "g_hat", Direction::Max, 3, Weighting::Chi2).unwrap();
        let got: Vec<(i64, f64)> =
            s.selected.iter().map(|x| (x.candidate_id, (x.weight * 1000.0).round() / 1000.0)).collect();
        assert_eq!(got, vec![(16, 0.478), (17, 0.387), (6, 0.136)]);
        assert_eq!(s.threshold, 0.01285);
        assert_eq!(s.ranked.iter().map(|r| r.candidate_id).collect::<Vec<_>>(), vec![16, 17, 6, 7, 15]);
        let js = serde_json::to_string(&s).unwrap();
        assert!(js.contains("\"direction\":\"max\"") && js.contains("\"method\":\"chi2\""), "{js}");
    }

    #[test]
    fn min_direction_negates() {
        // RSR: lower is better. Scores 3, 1, 2 → keys −3, −1, −2; B = 1 → candidate 1.
        let c = [(0, 3.0), (1, 1.0), (2, 2.0)];
        let s = select(1, &c, "rsr", Direction::Min, 1, Weighting::Chi2).unwrap();
        assert_eq!(s.selected, vec![Weighted { candidate_id: 1, score: 1.0, weight: 1.0 }]);
        assert_eq!(s.threshold, 2.0);
        assert_eq!(s.ranked.iter().map(|r| r.candidate_id).collect::<Vec<_>>(), vec![1, 2, 0]);
        // NaN stays last and is never selected in either direction.
        let s = select(1, &[(0, f64::NAN), (1, 5.0)], "rsr", Direction::Min, 2, Weighting::Uniform).unwrap();
        assert_eq!(s.selected.len(), 1);
        assert!(s.threshold.is_nan());
        assert!(serde_json::to_string(&s).unwrap().contains("\"threshold\":null"));
    }

    #[test]
    fn parse_weighting_and_budget() {
        assert_eq!(Weighting::parse("chi2", None).unwrap(), Weighting::Chi2);
        assert_eq!(Weighting::parse("softmax", Some(0.5)).unwrap(), Weighting::Softmax { temperature: 0.5 });
        assert!(Weighting::parse("softmax", None).is_err());
        assert!(Weighting::parse("softmax", Some(0.0)).is_err());
        assert!(Weighting::parse("topk", None).is_err());
        assert!(select(0, &[(0, 1.0)], "g_hat", Direction::Max, 0, Weighting::Chi2).is_err());
    }
}
