//! `lark merge DIR... --out DIR`: the output directories of `lark score --shard I/N` (one per shard) in, the
//! files of an unsharded run out. Checks that the shards are complete (every I of 0..N, one N), disjoint
//! (no record twice) and made with the same model, tokenizer, pool and settings (their `run.json`), then
//! recomputes every per-problem score from the shards' per-trajectory statistics (`candidates.jsonl`) in
//! pool order, so `scores.jsonl` and `scores.json` are byte-identical to an unsharded run's.

use crate::error::{LarkError, Result};
use crate::export::{write_atomic, write_scores_json, write_scores_jsonl};
use crate::run::resume::read_candidates;
use crate::run::score_job::write_run_json;
use crate::run::{parse_brier, Indexed, Shard};
use crate::score::{score_all, BrierMode, Candidate, ScoreOptions};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Output directories of `lark score --shard I/N`, all N of them, in any order.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged scores.jsonl, scores.json, rejects.jsonl and run.json go.
    #[arg(long)]
    pub out: PathBuf,
}

/// run.json fields every shard must share: what was scored, with what, and how.
const SAME: [&str; 8] = [
    "version",
    "model_fingerprint",
    "tokenizer_fingerprint",
    "pool_fingerprint",
    "pool_format",
    "pool_records",
    "settings",
    "judge_scores",
];

fn read_run(dir: &Path) -> Result<(Value, Shard)> {
    let p = dir.join("run.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        LarkError::input(p.display().to_string(), format!("not a finished `lark score --shard` run: {e}"))
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| LarkError::input(p.display().to_string(), e.to_string()))?;
    let shard: Shard = serde_json::from_value(v.get("shard").cloned().unwrap_or(Value::Null))
        .map_err(|_| LarkError::input(p.display().to_string(), "not a sharded run (no `shard` in run.json)"))?;
    Ok((v, shard))
}

pub fn run(a: Args) -> Result<()> {
    // 1. The shards: one N, every index once, same inputs and settings.
    let runs: Vec<(Value, Shard)> = a.dirs.iter().map(|d| read_run(d)).collect::<Result<_>>()?;
    let n = runs[0].1.count;
    let mut by_index: Vec<Option<usize>> = vec![None; n];
    for (k, (v, sh)) in runs.iter().enumerate() {
        if sh.count != n {
            return Err(LarkError::input(
                a.dirs[k].display().to_string(),
                format!("shard {sh} but {} is a shard of {n}", a.dirs[0].display()),
            ));
        }
        if let Some(j) = by_index[sh.index].replace(k) {
            return Err(LarkError::input(
                a.dirs[k].display().to_string(),
                format!("shard {sh} given twice ({} and {})", a.dirs[j].display(), a.dirs[k].display()),
            ));
        }
        for key in SAME {
            if v.get(key) != runs[0].0.get(key) {
                return Err(LarkError::input(
                    a.dirs[k].join("run.json").display().to_string(),
                    format!("`{key}` differs from {}: shards must share model, pool and settings", a.dirs[0].display()),
                ));
            }
        }
    }
    if let Some(i) = by_index.iter().position(Option::is_none) {
        return Err(LarkError::input(
            "lark merge",
            format!("shard {i}/{n} is missing: give all {n} shard directories"),
        ));
    }
    let info0 = &runs[0].0;
    let n_records = info0["pool_records"].as_u64().unwrap_or(0) as usize;

    // 2. Their candidates: disjoint, together every record of the pool, each in its own shard.
    let mut slots: Vec<Option<Candidate>> = vec![None; n_records];
    for (k, (_, sh)) in runs.iter().enumerate() {
        let path = a.dirs[k].join("candidates.jsonl");
        for Indexed { index, candidate } in read_candidates(&path)? {
            let bad = |why: String| LarkError::input(path.display().to_string(), why);
            if index >= n_records {
                return Err(bad(format!("record {index} beyond the pool's {n_records}")));
            }
            if !sh.owns(candidate.problem_id) {
                return Err(bad(format!("problem {} does not belong to shard {sh}", candidate.problem_id)));
            }
            if slots[index].replace(candidate).is_some() {
                return Err(bad(format!("record {index} is in two shards")));
            }
        }
    }
    if let Some(i) = slots.iter().position(Option::is_none) {
        return Err(LarkError::input(
            "lark merge",
            format!("record {i} of the pool is in no shard: incomplete shards"),
        ));
    }
    let cands: Vec<Candidate> = slots.into_iter().map(|c| c.expect("checked above")).collect();

    // 3. Per-problem scores over the whole pool, in pool order, as an unsharded run computes them.
    let settings = &info0["settings"];
    let brier = parse_brier(settings["brier"].as_str().unwrap_or("exact"))?;
    let seed = settings["seed"].as_u64().unwrap_or(42);
    let rows = score_all(&cands, &ScoreOptions { brier, seed });

    std::fs::create_dir_all(&a.out).map_err(|e| LarkError::io(&a.out, e))?;
    let run_json = a.out.join("run.json");
    if run_json.exists() {
        std::fs::remove_file(&run_json).map_err(|e| LarkError::io(&run_json, e))?;
    }
    write_scores_jsonl(&a.out.join("scores.jsonl"), &rows)?;
    let top_k = match brier {
        BrierMode::TopK(k) => Some(k),
        BrierMode::Exact => None,
    };
    let model = info0["model"].as_str().unwrap_or("");
    write_scores_json(&a.out.join("scores.json"), &rows, model, top_k)?;
    let rejects = a.dirs[by_index[0].expect("checked")].join("rejects.jsonl");
    if rejects.exists() {
        let data = std::fs::read(&rejects).map_err(|e| LarkError::io(&rejects, e))?;
        write_atomic(a.out.join("rejects.jsonl"), |w| w.write_all(&data).map_err(|e| w.err(e)))?;
    }
    let sum = |key: &str| runs.iter().map(|(v, _)| v.pointer(key).and_then(Value::as_f64).unwrap_or(0.0)).sum::<f64>();
    let n_skipped = rows.iter().filter(|r| r.skipped.is_some()).count();
    let mut pids: Vec<i64> = rows.iter().map(|r| r.problem_id).collect();
    pids.sort_unstable();
    pids.dedup();
    let mut info = info0.clone();
    info["shard"] = Value::Null;
    info["merged_from"] = serde_json::json!(a.dirs);
    info["devices"] = serde_json::json!(runs.iter().map(|(v, _)| v["device"].clone()).collect::<Vec<_>>());
    info["counts"] = serde_json::json!({"problems": pids.len(), "trajectories": rows.len(),
        "scored": rows.len() - n_skipped, "skipped": n_skipped, "rejected": info0["counts"]["rejected"]});
    info["tokens_forward"] = serde_json::json!(sum("/tokens_forward") as u64);
    info["tokens_scored"] = serde_json::json!(sum("/tokens_scored") as u64);
    // Wall time summed over shards' last attempts (machine time, not the cluster's elapsed time), and the
    // tokens those attempts computed: the rate leaves out what earlier attempts journaled.
    info["wall_s"] = serde_json::json!(sum("/wall_s"));
    info["tokens_per_s"] = serde_json::json!(sum("/resume/tokens_computed") / sum("/wall_s").max(1e-9));
    info["resume"] = serde_json::json!({
        "chunks": sum("/resume/chunks") as u64, "chunks_resumed": sum("/resume/chunks_resumed") as u64,
        "tokens_resumed": sum("/resume/tokens_resumed") as u64, "tokens_computed": sum("/resume/tokens_computed") as u64,
    });
    write_run_json(&a.out, &info)?;
    eprintln!("lark: merged {n} shards: {} rows in {}", rows.len(), a.out.join("scores.jsonl").display());
    Ok(())
}
