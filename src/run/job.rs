//! One scoring job: every record of a pool → its scored span → per-token statistics from the backend (packed
//! batches, longest first) → per-trajectory sums → per-problem scores. The only model-facing step is
//! `Backend::score`; everything else is shared by the CPU and CUDA paths.

use super::schedule::pack_by_length;
use crate::backend::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::io::{Pool, Record};
use crate::score::local::{combine, step_windows};
use crate::score::{score_all, BrierMode, Candidate, JudgeScores, Outcome, ScoreOptions, ScoreRow, Scorer, TextFeatures};
use crate::stats::{StatsOptions, TrajectoryStats};
use crate::text::{without_assistant, Prepared, SpanMode, TextPipeline, Trajectory};
use std::time::Instant;

/// Everything that changes the numbers of a scoring run (recorded in `run.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreSettings {
    pub span: SpanMode,
    pub max_len: usize,
    #[serde(serialize_with = "ser_brier")]
    pub brier: BrierMode,
    pub rank_clip: u32,
    #[serde(serialize_with = "ser_scorers")]
    pub scorers: Vec<Scorer>,
    pub local_m: usize,
    pub seed: u64,
}

fn ser_brier<S: serde::Serializer>(b: &BrierMode, s: S) -> std::result::Result<S::Ok, S::Error> {
    match b {
        BrierMode::Exact => s.serialize_str("exact"),
        BrierMode::TopK(k) => s.serialize_str(&format!("topk:{k}")),
    }
}
fn ser_scorers<S: serde::Serializer>(v: &[Scorer], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.name()))
}

/// Progress of a job, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub trajectories_done: usize,
    pub trajectories_total: usize,
    pub tokens_done: usize,
    pub tokens_total: usize,
    pub elapsed_s: f64,
}

/// What a scoring job produced.
pub struct JobOutput {
    /// One row per record, problem-major, pool order within a problem.
    pub rows: Vec<ScoreRow>,
    /// Tokens that went through the model (scored spans with their prefixes), and scored tokens.
    pub tokens_forward: usize,
    pub tokens_scored: usize,
    pub seconds: f64,
}

/// Parse `--brier exact|topk:K`.
pub fn parse_brier(s: &str) -> Result<BrierMode> {
    if s == "exact" {
        return Ok(BrierMode::Exact);
    }
    match s.strip_prefix("topk:").and_then(|k| k.parse::<usize>().ok()) {
        Some(k) if k >= 1 => Ok(BrierMode::TopK(k)),
        _ => Err(LarkError::input("--brier", format!("`{s}`: expected exact or topk:K with K ≥ 1"))),
    }
}

fn prepare(text: &TextPipeline, r: &Record, s: &ScoreSettings) -> Result<Prepared> {
    text.trajectory(&r.messages, s.span, s.max_len)
        .map_err(|e| LarkError::input(r.origin.to_string(), format!("problem {} candidate {}: {e}", r.problem_id, r.candidate_id)))
}

/// Score every record of `pool`.
pub fn score_pool(
    pool: &Pool,
    text: &TextPipeline,
    backend: &mut dyn Backend,
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    mut progress: impl FnMut(&Progress),
) -> Result<JobOutput> {
    let t0 = Instant::now();
    let stats_opts = StatsOptions {
        topk_brier: match settings.brier {
            BrierMode::TopK(k) => Some(k),
            BrierMode::Exact => None,
        },
    };
    let records = &pool.records;
    // 1. Text: render, tokenise, find spans (CPU threads ahead of the model).
    let prepared: Vec<Prepared> = {
        use rayon::prelude::*;
        records.par_iter().map(|r| prepare(text, r, settings)).collect::<Result<Vec<_>>>()?
    };
    let ready: Vec<(usize, &Trajectory)> =
        prepared.iter().enumerate().filter_map(|(i, p)| p.ready().map(|t| (i, t))).collect();
    let lengths: Vec<usize> = ready.iter().map(|(_, t)| t.score_to).collect();
    let tokens_total: usize = lengths.iter().sum();
    let tokens_scored: usize = ready.iter().map(|(_, t)| t.n_scored()).sum();

    // 2. Model: packed batches, longest first.
    let mut stats: Vec<Option<TrajectoryStats>> = vec![None; records.len()];
    let mut done = 0usize;
    let mut tokens_done = 0usize;
    for batch in pack_by_length(&lengths, backend.batch_token_budget(), 4096) {
        let reqs: Vec<SeqRequest<'_>> = batch.iter().map(|&j| ready[j].1.request()).collect();
        let out = backend.score(&reqs, &stats_opts).map_err(|e| {
            let (i, _) = ready[batch[0]];
            LarkError::Backend(format!("scoring a batch starting with {} failed: {e}", records[i].origin))
        })?;
        for (&j, toks) in batch.iter().zip(out) {
            let (i, t) = ready[j];
            if toks.len() != t.n_scored() {
                return Err(LarkError::Backend(format!(
                    "backend returned {} statistics for {} scored tokens ({})",
                    toks.len(),
                    t.n_scored(),
                    records[i].origin
                )));
            }
            stats[i] = Some(TrajectoryStats::from_tokens(&toks, settings.rank_clip));
            tokens_done += t.score_to;
        }
        done += batch.len();
        progress(&Progress {
            trajectories_done: done,
            trajectories_total: ready.len(),
            tokens_done,
            tokens_total,
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
    }

    // 3. Local Naturalness (opt-in): one extra pass per step window.
    let local: Option<Vec<f64>> = if settings.scorers.contains(&Scorer::LocalNaturalness) {
        Some(local_naturalness(pool, text, backend, settings)?)
    } else {
        None
    };

    // 4. Scores.
    let cands: Vec<Candidate> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Candidate {
            problem_id: r.problem_id,
            candidate_id: r.candidate_id,
            teacher: r.teacher.clone(),
            outcome: match (&prepared[i], stats[i]) {
                (Prepared::Ready(t), Some(s)) => Outcome::Scored { stats: s, truncated: t.truncated },
                (Prepared::Skipped(why), _) => Outcome::Skipped(why.to_string()),
                (Prepared::Ready(_), None) => unreachable!("every ready trajectory was scored above"),
            },
            text: TextFeatures::from_text(r.assistant_content()),
            local_naturalness: local.as_ref().map(|l| l[i]),
            llm_judge: judge.map(|j| j.get(r.problem_id, r.candidate_id).unwrap_or(f64::NAN)),
        })
        .collect();
    let rows = score_all(&cands, &ScoreOptions { brier: settings.brier, seed: settings.seed });
    Ok(JobOutput { rows, tokens_forward: tokens_total, tokens_scored, seconds: t0.elapsed().as_secs_f64() })
}

/// Local Naturalness for every record (NaN where no step could be scored): each step is scored with the
/// prompt (with generation prompt) and at most m previous steps as context. Windows of all records are
/// packed together, so shared batching amortises the (m+1)× cost.
fn local_naturalness(pool: &Pool, text: &TextPipeline, backend: &mut dyn Backend, s: &ScoreSettings) -> Result<Vec<f64>> {
    struct Window {
        record: usize,
        ids: Vec<u32>,
        from: usize,
    }
    let mut windows: Vec<Window> = Vec::new();
    let mut n_steps = vec![0usize; pool.records.len()];
    for (i, r) in pool.records.iter().enumerate() {
        let prompt = text.render(&without_assistant(&r.messages), true)?;
        for w in step_windows(&prompt, r.assistant_content(), s.local_m) {
            let ctx = text.encode(&w.context)?;
            let mut full = text.encode(&w.full())?;
            full.truncate(s.max_len);
            // Tokens of the step: those after the context's length (positional, as for the turn span).
            if ctx.len() >= 1 && ctx.len() < full.len() {
                windows.push(Window { record: i, ids: full, from: ctx.len() });
                n_steps[i] += 1;
            }
        }
    }
    let lengths: Vec<usize> = windows.iter().map(|w| w.ids.len()).collect();
    let mut per_step: Vec<Vec<(f64, usize)>> = vec![Vec::new(); pool.records.len()];
    for batch in pack_by_length(&lengths, backend.batch_token_budget(), 4096) {
        let reqs: Vec<SeqRequest<'_>> =
            batch.iter().map(|&j| SeqRequest { ids: &windows[j].ids, score_from: windows[j].from }).collect();
        let out = backend.score(&reqs, &StatsOptions::default())?;
        for (&j, toks) in batch.iter().zip(out) {
            let sum: f64 = toks.iter().map(|t| t.logprob as f64).sum();
            per_step[windows[j].record].push((sum, toks.len()));
        }
    }
    Ok(per_step.iter().map(|steps| combine(steps)).collect())
}
