//! `selection.jsonl` (one [`Selection`] a line) and the SFT file `train.jsonl`.
//!
//! `train.jsonl` follows the LARK authors' export: one line per selected trajectory,
//! `{"messages": [...], "tools": [...]?, "meta": {problem_id, candidate_id, sample_idx, teacher, method, by, B, score,
//! train_weight}}`, problem-major (selection order), best first within a problem. Like the authors it
//! writes every one of the top B, including a candidate whose χ² weight is exactly 0 (it ties with the
//! (B+1)-th score); `drop_zero_weight` leaves those out for trainers that ignore `train_weight`.
//! `sample_idx` repeats `candidate_id` under the authors' name.

use super::atomic::{write_atomic, write_jsonl};
use super::jsonl::read_jsonl;
use crate::error::{LarkError, Result};
use crate::io::{visit_pool, Message, PoolSource, ReadOptions, Record};
use crate::score::row::nan_null;
use crate::select::Selection;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

pub fn write_selection_jsonl(path: &Path, selections: &[Selection]) -> Result<()> {
    write_jsonl(path, selections)
}

pub fn read_selection_jsonl(path: &Path) -> Result<Vec<Selection>> {
    read_jsonl(path)
}

#[derive(Serialize)]
struct TrainMeta<'a> {
    problem_id: i64,
    candidate_id: i64,
    sample_idx: i64,
    teacher: &'a str,
    method: &'a str,
    by: &'a str,
    #[serde(rename = "B")]
    budget: usize,
    #[serde(with = "nan_null")]
    score: f64,
    train_weight: f64,
}

#[derive(Serialize)]
struct TrainLine<'a> {
    /// The whole scored conversation (a ShareGPT record is written back as messages), up to its last assistant
    /// turn.
    messages: &'a [Message],
    /// The record's tool schemas, when it has them (what the chat template rendered).
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [serde_json::Value]>,
    meta: TrainMeta<'a>,
}

/// Write `train.jsonl` for `selections`, taking each trajectory's messages from `lookup`.
/// Returns the number of lines written. Fails if a selected candidate is not found.
pub fn write_train_jsonl<'r>(
    path: &Path,
    selections: &[Selection],
    lookup: impl Fn(i64, i64) -> Option<&'r Record>,
    drop_zero_weight: bool,
) -> Result<usize> {
    let mut n = 0usize;
    write_atomic(path, |w| {
        for_each_train_line(selections, &lookup, drop_zero_weight, &path.display().to_string(), |line| {
            serde_json::to_writer(&mut *w, line).map_err(|e| LarkError::Other(format!("{}: {e}", path.display())))?;
            w.write_all(b"\n").map_err(|e| w.err(e))?;
            n += 1;
            Ok(())
        })
    })?;
    Ok(n)
}

/// The lines `train.jsonl` would hold, as JSON texts (for callers that keep them in memory: Python's TRL
/// export). `name` stands for the file in errors.
pub fn train_lines<'r>(
    selections: &[Selection],
    lookup: impl Fn(i64, i64) -> Option<&'r Record>,
    drop_zero_weight: bool,
    name: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for_each_train_line(selections, &lookup, drop_zero_weight, name, |line| {
        out.push(serde_json::to_string(line).map_err(|e| LarkError::Other(format!("{name}: {e}")))?);
        Ok(())
    })?;
    Ok(out)
}

fn for_each_train_line<'r>(
    selections: &[Selection],
    lookup: &impl Fn(i64, i64) -> Option<&'r Record>,
    drop_zero_weight: bool,
    name: &str,
    mut f: impl FnMut(&TrainLine<'_>) -> Result<()>,
) -> Result<()> {
    for s in selections {
        for c in &s.selected {
            if drop_zero_weight && c.weight <= 0.0 {
                continue;
            }
            let rec = lookup(s.problem_id, c.candidate_id).ok_or_else(|| {
                LarkError::input(
                    name.to_string(),
                    format!("selected problem_id {} candidate_id {} is not in the pool", s.problem_id, c.candidate_id),
                )
            })?;
            f(&TrainLine {
                messages: &rec.messages,
                tools: rec.tools.as_deref(),
                meta: TrainMeta {
                    problem_id: s.problem_id,
                    candidate_id: c.candidate_id,
                    sample_idx: c.candidate_id,
                    teacher: &rec.teacher,
                    method: &s.method,
                    by: &s.by,
                    budget: s.budget,
                    score: c.score,
                    train_weight: c.weight,
                },
            })?;
        }
    }
    Ok(())
}

/// Read from the pool at `pool` only the records that `selections` selected (a pool can be far larger
/// than memory allows; the selected part is small).
pub fn selected_records(
    pool: impl Into<PoolSource>,
    opts: &ReadOptions,
    selections: &[Selection],
) -> Result<HashMap<(i64, i64), Record>> {
    let wanted: HashSet<(i64, i64)> =
        selections.iter().flat_map(|s| s.selected.iter().map(move |c| (s.problem_id, c.candidate_id))).collect();
    let mut out = HashMap::with_capacity(wanted.len());
    visit_pool(pool, opts, |r| {
        let key = (r.problem_id, r.candidate_id);
        if wanted.contains(&key) {
            out.insert(key, r);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Write `selection.jsonl` and `train.jsonl` into `out` (the SFT records read back from the pool at `pool`);
/// returns the number of training lines.
pub fn write_selection(
    selections: &[Selection],
    pool: &PoolSource,
    format: crate::io::PoolFormat,
    out: &Path,
    drop_zero_weight: bool,
) -> Result<usize> {
    std::fs::create_dir_all(out).map_err(|e| LarkError::io(out, e))?;
    let records = selected_records(pool, &ReadOptions { format, skip_invalid: true }, selections)?;
    write_selection_jsonl(&out.join("selection.jsonl"), selections)?;
    write_train_jsonl(&out.join("train.jsonl"), selections, |p, c| records.get(&(p, c)), drop_zero_weight)
}
