//! One scoring job: every record of a pool → its scored span → per-token statistics from the backend (packed
//! batches, longest first) → per-trajectory sums → per-problem scores. The only model-facing step is
//! `Backend::score`; everything else is shared by the CPU and CUDA paths.

use super::resume::{Indexed, Journal};
use super::schedule::pack_by_length;
use super::shard::Shard;
use crate::backend::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::io::{Pool, Record};
use crate::score::local::{combine, step_windows};
use crate::score::{
    score_all, BrierMode, Candidate, JudgeScores, Outcome, ScoreOptions, ScoreRow, Scorer, TextFeatures,
};
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

/// Progress of a job, reported after every batch (counts include work resumed from a journal).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub trajectories_done: usize,
    pub trajectories_total: usize,
    pub problems_done: usize,
    pub problems_total: usize,
    pub tokens_done: usize,
    pub tokens_total: usize,
    /// Tokens that went through the model in this process (not resumed), for the rate.
    pub tokens_this_run: usize,
    pub elapsed_s: f64,
}

/// What a scoring job produced.
pub struct JobOutput {
    /// One row per record, problem-major, pool order within a problem.
    pub rows: Vec<ScoreRow>,
    /// The candidates the rows were computed from, with their record indices (for `candidates.jsonl`).
    pub candidates: Vec<Indexed>,
    /// Tokens that went through the model (scored spans with their prefixes), and scored tokens.
    pub tokens_forward: usize,
    pub tokens_scored: usize,
    pub seconds: f64,
}

/// How a job is run, beyond what changes its numbers on the CPU.
#[derive(Default)]
pub struct JobControl<'a> {
    /// Only this shard's problems.
    pub shard: Option<Shard>,
    /// Journal finished chunks here (and skip those an earlier attempt finished).
    pub journal: Option<&'a mut Journal>,
    /// Tokens per batch instead of the backend's own budget.
    pub batch_tokens: Option<usize>,
    /// At most this many sequences per batch (default 4096). The CPU job uses 1: the CPU backend's
    /// statistics are not bit-identical when a sequence shares a packed batch (the GEMM's blocking changes
    /// with the batch's row count), and one sequence per batch makes every trajectory's numbers independent
    /// of the others — what resume, sharding and `lark merge` need to be byte-identical. On the CPU a single
    /// sequence already gives the GEMMs hundreds of rows, so little is lost.
    pub max_seqs: Option<usize>,
}

impl JobControl<'_> {
    /// Tokens per batch for `backend`.
    pub fn batch_budget(&self, backend: &dyn Backend) -> usize {
        self.batch_tokens.unwrap_or_else(|| backend.batch_token_budget()).max(1)
    }
    /// Tokens per chunk (the unit of the journal): a few batches, so batches stay full while a kill loses
    /// little work.
    pub fn chunk_tokens(&self, backend: &dyn Backend) -> usize {
        self.batch_budget(backend).saturating_mul(CHUNK_BATCHES)
    }
}

/// Batches per chunk.
const CHUNK_BATCHES: usize = 4;

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
    text.trajectory(&r.messages, s.span, s.max_len).map_err(|e| {
        LarkError::input(r.origin.to_string(), format!("problem {} candidate {}: {e}", r.problem_id, r.candidate_id))
    })
}

/// Score every record of `pool`.
pub fn score_pool(
    pool: &Pool,
    text: &TextPipeline,
    backend: &mut dyn Backend,
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    progress: impl FnMut(&Progress),
) -> Result<JobOutput> {
    score_pool_with(pool, text, backend, settings, judge, JobControl::default(), progress)
}

/// Score the records of `pool` (those of `ctl.shard`), chunk by chunk of whole problems: consecutive
/// problems in pool order until a chunk holds [`JobControl::chunk_tokens`] tokens. Each chunk is packed
/// into batches (longest first) and, with a journal, appended to it when done; chunks an earlier attempt
/// finished are read back instead. The chunks depend only on the pool, the settings and the batch budget,
/// so a resumed run forms exactly the batches an uninterrupted one does.
pub fn score_pool_with(
    pool: &Pool,
    text: &TextPipeline,
    backend: &mut dyn Backend,
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    mut ctl: JobControl<'_>,
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
    let groups: Vec<(i64, usize, usize)> =
        pool.groups.iter().copied().filter(|(pid, _, _)| ctl.shard.is_none_or(|s| s.owns(*pid))).collect();
    // 1. Text: render, tokenise, find spans (CPU threads ahead of the model).
    let mine: Vec<usize> = groups.iter().flat_map(|&(_, a, b)| a..b).collect();
    let prepared: Vec<Option<Prepared>> = {
        use rayon::prelude::*;
        let mut v: Vec<Option<Prepared>> = vec![None; records.len()];
        let done: Vec<Prepared> =
            mine.par_iter().map(|&i| prepare(text, &records[i], settings)).collect::<Result<Vec<_>>>()?;
        for (&i, p) in mine.iter().zip(done) {
            v[i] = Some(p);
        }
        v
    };
    let ready_len = |i: usize| prepared[i].as_ref().and_then(|p| p.ready()).map(|t| t.score_to);
    let tokens_total: usize = mine.iter().filter_map(|&i| ready_len(i)).sum();
    let tokens_scored: usize =
        mine.iter().filter_map(|&i| prepared[i].as_ref().and_then(|p| p.ready())).map(|t| t.n_scored()).sum();
    let trajectories_total = mine.iter().filter(|&&i| ready_len(i).is_some()).count();

    // 2. Chunks of whole problems.
    let chunk_tokens = ctl.chunk_tokens(backend);
    let budget = ctl.batch_budget(backend);
    let max_seqs = ctl.max_seqs.unwrap_or(4096).max(1);
    let mut chunks: Vec<(usize, usize)> = Vec::new(); // ranges of `groups`
    let mut start = 0usize;
    let mut acc = 0usize;
    for (g, &(_, a, b)) in groups.iter().enumerate() {
        acc += (a..b).filter_map(ready_len).sum::<usize>();
        if acc >= chunk_tokens || g + 1 == groups.len() {
            chunks.push((start, g + 1));
            start = g + 1;
            acc = 0;
        }
    }

    let mut out: Vec<Indexed> = Vec::with_capacity(mine.len());
    let mut p = Progress {
        trajectories_done: 0,
        trajectories_total,
        problems_done: 0,
        problems_total: groups.len(),
        tokens_done: 0,
        tokens_total,
        tokens_this_run: 0,
        elapsed_s: 0.0,
    };
    for (k, &(ga, gb)) in chunks.iter().enumerate() {
        let idx: Vec<usize> = groups[ga..gb].iter().flat_map(|&(_, a, b)| a..b).collect();
        let n_ready = idx.iter().filter(|&&i| ready_len(i).is_some()).count();
        let tokens: usize = idx.iter().filter_map(|&i| ready_len(i)).sum();
        if let Some(items) = ctl.journal.as_mut().and_then(|j| j.take_chunk(k, &idx)) {
            out.extend(items);
            p.trajectories_done += n_ready;
            p.tokens_done += tokens;
            p.problems_done += gb - ga;
            p.elapsed_s = t0.elapsed().as_secs_f64();
            progress(&p);
            continue;
        }
        let items = score_chunk(
            pool,
            text,
            backend,
            settings,
            judge,
            &idx,
            &prepared,
            (budget, max_seqs),
            &stats_opts,
            |batch_n, batch_tokens| {
                p.trajectories_done += batch_n;
                p.tokens_done += batch_tokens;
                p.tokens_this_run += batch_tokens;
                p.elapsed_s = t0.elapsed().as_secs_f64();
                progress(&p);
            },
        )?;
        if let Some(j) = ctl.journal.as_mut() {
            j.append_chunk(k, &items)?;
        }
        out.extend(items);
        p.problems_done += gb - ga;
        p.elapsed_s = t0.elapsed().as_secs_f64();
        progress(&p);
    }

    // 3. Scores, problem by problem in pool order.
    let cands: Vec<Candidate> = out.iter().map(|c| c.candidate.clone()).collect();
    let rows = score_all(&cands, &ScoreOptions { brier: settings.brier, seed: settings.seed });
    Ok(JobOutput {
        rows,
        candidates: out,
        tokens_forward: tokens_total,
        tokens_scored,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The candidates of the records `idx` (one chunk): their batches through the model, then Local
/// Naturalness when requested. `batch_done(trajectories, tokens)` after each batch.
#[allow(clippy::too_many_arguments)]
fn score_chunk(
    pool: &Pool,
    text: &TextPipeline,
    backend: &mut dyn Backend,
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    idx: &[usize],
    prepared: &[Option<Prepared>],
    (budget, max_seqs): (usize, usize),
    stats_opts: &StatsOptions,
    mut batch_done: impl FnMut(usize, usize),
) -> Result<Vec<Indexed>> {
    let records = &pool.records;
    let ready: Vec<(usize, &Trajectory)> =
        idx.iter().filter_map(|&i| prepared[i].as_ref().and_then(|p| p.ready()).map(|t| (i, t))).collect();
    let lengths: Vec<usize> = ready.iter().map(|(_, t)| t.score_to).collect();
    let mut stats: std::collections::HashMap<usize, TrajectoryStats> = std::collections::HashMap::new();
    for batch in pack_by_length(&lengths, budget, max_seqs) {
        let reqs: Vec<SeqRequest<'_>> = batch.iter().map(|&j| ready[j].1.request()).collect();
        let out = backend.score(&reqs, stats_opts).map_err(|e| {
            let (i, _) = ready[batch[0]];
            LarkError::Backend(format!("scoring a batch starting with {} failed: {e}", records[i].origin))
        })?;
        let mut tokens = 0usize;
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
            stats.insert(i, TrajectoryStats::from_tokens(&toks, settings.rank_clip));
            tokens += t.score_to;
        }
        batch_done(batch.len(), tokens);
    }
    // Local Naturalness (opt-in): one extra pass per step window.
    let local: Option<Vec<f64>> = if settings.scorers.contains(&Scorer::LocalNaturalness) {
        Some(local_naturalness(pool, idx, text, backend, settings, (budget, max_seqs))?)
    } else {
        None
    };
    Ok(idx
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let r = &records[i];
            let outcome = match (&prepared[i], stats.get(&i)) {
                (Some(Prepared::Ready(t)), Some(s)) => Outcome::Scored { stats: *s, truncated: t.truncated },
                (Some(Prepared::Skipped(why)), _) => Outcome::Skipped(why.to_string()),
                _ => unreachable!("every record of the chunk was prepared and every ready one scored above"),
            };
            Indexed {
                index: i,
                candidate: Candidate {
                    problem_id: r.problem_id,
                    candidate_id: r.candidate_id,
                    teacher: r.teacher.clone(),
                    outcome,
                    text: TextFeatures::from_text(r.assistant_content()),
                    local_naturalness: local.as_ref().map(|l| l[n]),
                    llm_judge: judge.map(|j| j.get(r.problem_id, r.candidate_id).unwrap_or(f64::NAN)),
                },
            }
        })
        .collect())
}

/// Local Naturalness for the records `idx` (NaN where no step could be scored): each step is scored with the
/// prompt (with generation prompt) and at most m previous steps as context. Windows of all these records
/// are packed together, so shared batching amortises the (m+1)× cost.
fn local_naturalness(
    pool: &Pool,
    idx: &[usize],
    text: &TextPipeline,
    backend: &mut dyn Backend,
    s: &ScoreSettings,
    (budget, max_seqs): (usize, usize),
) -> Result<Vec<f64>> {
    struct Window {
        record: usize,
        ids: Vec<u32>,
        from: usize,
    }
    let mut windows: Vec<Window> = Vec::new();
    for (i, &ri) in idx.iter().enumerate() {
        let r = &pool.records[ri];
        let prompt = text.render(&without_assistant(&r.messages), true)?;
        for w in step_windows(&prompt, r.assistant_content(), s.local_m) {
            let ctx = text.encode(&w.context)?;
            let mut full = text.encode(&w.full())?;
            full.truncate(s.max_len);
            // Tokens of the step: those after the context's length (positional, as for the turn span).
            if !ctx.is_empty() && ctx.len() < full.len() {
                windows.push(Window { record: i, ids: full, from: ctx.len() });
            }
        }
    }
    let lengths: Vec<usize> = windows.iter().map(|w| w.ids.len()).collect();
    let mut per_step: Vec<Vec<(f64, usize)>> = vec![Vec::new(); idx.len()];
    for batch in pack_by_length(&lengths, budget, max_seqs) {
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
