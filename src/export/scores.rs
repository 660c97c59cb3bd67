//! `scores.jsonl` (one [`ScoreRow`] a line, non-finite numbers as `null`) and the LARK authors'
//! `scores.json`, so that their tools can read our results.

use super::atomic::{write_atomic, write_jsonl};
use super::jsonl::read_jsonl;
use crate::error::{LarkError, Result};
use crate::score::row::nan_null;
use crate::score::{group_rows, ScoreRow};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub fn write_scores_jsonl(path: &Path, rows: &[ScoreRow]) -> Result<()> {
    write_jsonl(path, rows)
}

/// Read `scores.jsonl` back (for `lark select --scores`); `null` numbers become NaN. Fails on a duplicate
/// (problem_id, candidate_id) or an empty file.
pub fn read_scores_jsonl(path: &Path) -> Result<Vec<ScoreRow>> {
    let rows: Vec<ScoreRow> = read_jsonl(path)?;
    let mut seen = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(j) = seen.insert((r.problem_id, r.candidate_id), i) {
            return Err(LarkError::input(
                path.display().to_string(),
                format!(
                    "duplicate row for problem_id {}, candidate_id {} (rows {} and {})",
                    r.problem_id,
                    r.candidate_id,
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    if rows.is_empty() {
        return Err(LarkError::input(path.display().to_string(), "no score rows"));
    }
    Ok(rows)
}

/// One candidate in the authors' format.
#[derive(Serialize)]
struct AuthorsEntry<'a> {
    candidate_id: i64,
    teacher: &'a str,
    #[serde(rename = "L", with = "nan_null")]
    l: f64,
    #[serde(rename = "Brier", with = "nan_null")]
    brier: f64,
    #[serde(with = "nan_null")]
    rho: f64,
    #[serde(with = "nan_null")]
    g_hat: f64,
}

/// `scores` keyed by problem id as a string, in first-appearance order (serde_json's map would sort).
struct ByProblem<'a>(Vec<(String, Vec<AuthorsEntry<'a>>)>);

impl Serialize for ByProblem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct AuthorsFile<'a> {
    method: &'static str,
    student_model: &'a str,
    top_k: Option<usize>,
    n_problems: usize,
    n_scored: usize,
    n_skipped: usize,
    scores: ByProblem<'a>,
}

/// The authors' `scores.json`: `{method: "lark_ghat", student_model, top_k, n_problems, n_scored,
/// n_skipped, scores: {"<pid>": [{candidate_id, teacher, L, Brier, rho, g_hat}]}}`.
/// Only scored candidates are listed; `n_problems` counts problems with at least one. `top_k` is the
/// top-K of the Brier in compat mode and `null` for the exact full-vocabulary Brier. NaN is written as
/// `null` (Python's `json.dump` would write the invalid token `NaN`).
pub fn write_scores_json(path: &Path, rows: &[ScoreRow], student_model: &str, top_k: Option<usize>) -> Result<()> {
    let n_skipped = rows.iter().filter(|r| r.skipped.is_some()).count();
    let scored: Vec<ScoreRow> = rows.iter().filter(|r| r.skipped.is_none()).cloned().collect();
    let groups = group_rows(scored);
    let scores = ByProblem(
        groups
            .iter()
            .map(|(pid, rs)| {
                let entries = rs
                    .iter()
                    .map(|r| AuthorsEntry {
                        candidate_id: r.candidate_id,
                        teacher: &r.teacher,
                        l: r.l,
                        brier: r.brier_mean,
                        rho: r.rho_hat,
                        g_hat: r.g_hat,
                    })
                    .collect();
                (pid.to_string(), entries)
            })
            .collect(),
    );
    let file = AuthorsFile {
        method: "lark_ghat",
        student_model,
        top_k,
        n_problems: groups.len(),
        n_scored: rows.len() - n_skipped,
        n_skipped,
        scores,
    };
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, &file)
            .map_err(|e| LarkError::Other(format!("{}: {e}", path.display())))?;
        w.write_all(b"\n").map_err(|e| w.err(e))
    })
}
