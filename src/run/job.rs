//! One scoring job: every record of a pool → its scored span → per-token statistics from the backends
//! (packed batches, longest first) → per-trajectory sums → per-problem scores. The only model-facing step is
//! `Backend::score`; everything else is shared by the CPU and CUDA paths.
//!
//! Three kinds of thread take part ([`score_pool_on`]): a tokeniser ([`super::prepare`]) that renders and
//! tokenises the pool in order on the rayon threads and hands on complete chunks ahead of the devices; one
//! worker per backend ([`super::workers`]; several GPUs: one each) taking batches from one shared queue;
//! and the caller's thread, which queues batches, puts the results together in order, journals each chunk
//! and reports progress. What is computed does not depend on this: the chunks and batches are those of a
//! single-threaded run, each batch's numbers do not depend on which worker ran it, and the results are
//! assembled in chunk and pool order, so the output is byte-identical whatever the number of workers.
//! A batch that runs out of device memory is split and retried ([`super::schedule::score_splitting`]).

use super::interrupt::{self, Interrupt};
use super::prepare::{Chunk, Plan};
use super::resume::{Indexed, Journal};
use super::schedule::ChunkBound;
use super::shard::Shard;
use super::workers::{work, BatchOut, Credits, Event, Pass, Shared, StopOnDrop, Work};
use crate::backend::Backend;
use crate::error::{LarkError, Result};
use crate::io::Pool;
use crate::score::local::combine;
use crate::score::{
    score_all, BrierMode, Candidate, JudgeScores, Outcome, ScoreOptions, ScoreRow, Scorer, TextFeatures,
};
use crate::stats::{StatsOptions, TrajectoryStats};
use crate::text::{Prepared, SpanMode, TextPipeline, Turns};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Everything that changes the numbers of a scoring run (recorded in `run.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreSettings {
    pub span: SpanMode,
    /// Which assistant turns are scored (all, or the final one).
    pub turns: Turns,
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

/// Progress of a job, reported after every batch (counts include work resumed from a journal). The pool is
/// tokenised while the devices work, so `trajectories_total` and `tokens_total` are known exactly only once
/// the tokeniser has reached the last chunk (`totals_exact`); before that they are extrapolated from the
/// records tokenised so far (per record, times the job's records), and never below what is done.
/// `problems_total` is always exact.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub trajectories_done: usize,
    pub trajectories_total: usize,
    pub problems_done: usize,
    pub problems_total: usize,
    pub tokens_done: usize,
    pub tokens_total: usize,
    /// Whether the two totals above are exact (else estimates).
    pub totals_exact: bool,
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
    /// Of `tokens_forward`, those read back from the journal of an earlier attempt (not recomputed), and the
    /// chunks they came in.
    pub tokens_resumed: usize,
    pub chunks_resumed: usize,
    /// Chunks of the job in all.
    pub chunks: usize,
    pub seconds: f64,
}

impl JobOutput {
    /// Tokens through the model in this process (the rate's numerator: resumed work took no time here).
    pub fn tokens_computed(&self) -> usize {
        self.tokens_forward - self.tokens_resumed
    }
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
    /// Stop (with `LarkError::Interrupted`) once this is raised: SIGINT/SIGTERM in the CLI.
    pub interrupt: Option<Interrupt>,
}

impl JobControl<'_> {
    /// Tokens per batch on `backends`: the smallest of their budgets, so that every worker can run every
    /// batch and the batches do not depend on which one does.
    pub fn batch_budget<'b>(&self, backends: impl IntoIterator<Item = &'b dyn Backend>) -> usize {
        let own = || backends.into_iter().map(|b| b.batch_token_budget()).min().unwrap_or(16384);
        self.batch_tokens.unwrap_or_else(own).max(1)
    }
    /// What ends a chunk (the unit of the journal): a few batches of tokens, so batches stay full, or about
    /// [`CHUNK_WORK_SECONDS`] of work at the slowest backend's nominal rate, so a kill loses little work.
    pub fn chunk_bound(&self, backends: &[&dyn Backend]) -> ChunkBound {
        let tokens = self.batch_budget(backends.iter().copied()).saturating_mul(CHUNK_BATCHES);
        let rate = backends.iter().map(|b| b.nominal_flops_per_s()).fold(f64::INFINITY, f64::min);
        // Every backend of a job runs the same model: the first one's work model is the job's.
        let work = backends.first().and_then(|b| b.work_model());
        match work {
            Some(w) if rate.is_finite() => ChunkBound { tokens, work: Some((w, rate * CHUNK_WORK_SECONDS)) },
            _ => ChunkBound::tokens(tokens),
        }
    }
}

/// Batches per chunk (at most).
const CHUNK_BATCHES: usize = 4;

/// The work of one chunk at most, in seconds at the backends' nominal rate ([`Backend::nominal_flops_per_s`]):
/// what a crash loses at most, about.
pub const CHUNK_WORK_SECONDS: f64 = 60.0;

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

/// Score every record of `pool` on one backend.
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

/// [`score_pool_on`] with one backend.
pub fn score_pool_with(
    pool: &Pool,
    text: &TextPipeline,
    backend: &mut dyn Backend,
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    ctl: JobControl<'_>,
    progress: impl FnMut(&Progress),
) -> Result<JobOutput> {
    score_pool_on(pool, text, &mut [backend], settings, judge, ctl, progress)
}

/// Tokens the tokeniser may prepare ahead of the batches queued for the devices (at least a few chunks).
/// Tokenising is far faster than scoring, so within seconds of the start it is this far ahead: a record
/// that cannot be prepared (a chat template that rejects it) stops the run before the devices have done
/// much, as when the whole pool was tokenised first, while the memory held stays bounded (≈ 4 bytes per
/// token of ids, 256 MiB) however large the pool.
const LOOKAHEAD_TOKENS: usize = 1 << 26;

/// Batches in the queue or running per worker, beyond which no further chunk is queued: enough that no
/// worker waits at a chunk's end, few enough that a stop leaves little queued.
const QUEUED_PER_WORKER: usize = 2;

/// Score the records of `pool` (those of `ctl.shard`) on `backends`, one worker thread each (several GPUs:
/// one per device), chunk by chunk of whole problems: consecutive problems in pool order until a chunk
/// reaches its [`JobControl::chunk_bound`] (tokens or work). A tokeniser thread prepares the records in pool order ahead
/// of the devices and hands on each chunk, with its batches (longest first), as soon as it is complete;
/// the batches go to one queue that every worker takes from; the results come back tagged with their chunk
/// and batch and are put together here, on the caller's thread, in chunk order. Each chunk is appended to
/// the journal when done (in order); chunks an earlier attempt finished are read back instead. The chunks
/// and batches depend only on the pool, the settings and the batch budget (the smallest of the backends'),
/// never on timing or on the number of workers, so a resumed run, or one on another number of devices,
/// forms exactly the batches an uninterrupted one does and writes the same bytes.
///
/// `progress` is called on the caller's thread after every main-pass batch and every finished chunk.
pub fn score_pool_on(
    pool: &Pool,
    text: &TextPipeline,
    backends: &mut [&mut dyn Backend],
    settings: &ScoreSettings,
    judge: Option<&JudgeScores>,
    ctl: JobControl<'_>,
    mut progress: impl FnMut(&Progress),
) -> Result<JobOutput> {
    if backends.is_empty() {
        return Err(LarkError::Backend("no backend to score on".into()));
    }
    let t0 = Instant::now();
    let groups: Vec<(i64, usize, usize)> =
        pool.groups.iter().copied().filter(|(pid, _, _)| ctl.shard.is_none_or(|s| s.owns(*pid))).collect();
    let budget = ctl.batch_budget(backends.iter().map(|b| &**b));
    let plan = Plan {
        pool,
        text,
        settings,
        groups: &groups,
        chunk: ctl.chunk_bound(&backends.iter().map(|b| &**b).collect::<Vec<_>>()),
        budget,
        max_seqs: ctl.max_seqs.unwrap_or(4096).max(1),
        journaled: ctl.journal.as_ref().map(|j| j.chunk_numbers()).unwrap_or_default(),
    };
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let shared = Shared {
        pool,
        stats_opts: StatsOptions {
            topk_brier: match settings.brier {
                BrierMode::TopK(k) => Some(k),
                BrierMode::Exact => None,
            },
        },
        rank_clip: settings.rank_clip,
        queue: Mutex::new(work_rx),
        stop: AtomicBool::new(false),
    };
    let (event_tx, event_rx) = mpsc::channel::<Event>();
    let credits = Credits::default();
    let n_workers = backends.len();
    let mut co = Coordinator {
        plan: &plan,
        journal: ctl.journal,
        interrupt: ctl.interrupt,
        judge,
        n_workers,
        ready: VecDeque::new(),
        flights: VecDeque::new(),
        outstanding: 0,
        got_last: groups.is_empty(),
        out: Vec::new(),
        seen: Seen::default(),
        chunks: 0,
        chunks_resumed: 0,
        tokens_resumed: 0,
        records_total: groups.iter().map(|&(_, a, b)| b - a).sum(),
        p: Progress {
            trajectories_done: 0,
            trajectories_total: 0,
            problems_done: 0,
            problems_total: groups.len(),
            tokens_done: 0,
            tokens_total: 0,
            tokens_this_run: 0,
            elapsed_s: 0.0,
            totals_exact: groups.is_empty(),
        },
        t0,
    };
    std::thread::scope(|s| {
        let (plan, shared, credits) = (&plan, &shared, &credits);
        let tx = event_tx.clone();
        s.spawn(move || tokenise(plan, credits, tx));
        for b in backends.iter_mut() {
            let tx = event_tx.clone();
            s.spawn(move || work(&mut **b, shared, tx));
        }
        // Only the threads hold senders now: if they all stop, `recv` says so instead of waiting forever.
        drop(event_tx);
        // Stops the threads however `run` ends (queued batches are dropped, the tokeniser gives up); the
        // queue and the event channel close as they go out of scope with it.
        let _stop = StopOnDrop { stop: &shared.stop, credits };
        // How far the tokeniser may run ahead of the queue (see LOOKAHEAD_TOKENS).
        credits.give((LOOKAHEAD_TOKENS / plan.chunk.tokens.max(1)).max(n_workers + 2));
        co.run(&event_rx, work_tx, credits, &mut progress)
    })?;

    // Scores, problem by problem in pool order.
    let cands: Vec<Candidate> = co.out.iter().map(|c| c.candidate.clone()).collect();
    let rows = score_all(&cands, &ScoreOptions { brier: settings.brier, seed: settings.seed });
    Ok(JobOutput {
        rows,
        candidates: co.out,
        tokens_forward: co.seen.tokens,
        tokens_scored: co.seen.n_scored,
        tokens_resumed: co.tokens_resumed,
        chunks_resumed: co.chunks_resumed,
        chunks: co.chunks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The tokeniser thread: chunks to the coordinator in order, each after taking a credit (so it runs at
/// most the credits given ahead of the queue, bounding the memory of tokenised text).
fn tokenise(plan: &Plan<'_>, credits: &Credits, events: Sender<Event>) {
    let r = catch_unwind(AssertUnwindSafe(|| plan.produce(|c| credits.take() && events.send(Event::Chunk(c)).is_ok())));
    if r.is_err() {
        let _ = events.send(Event::Chunk(Err(LarkError::Other("tokenising the pool panicked".into()))));
    }
}

/// What the tokeniser has handed on so far (the progress totals are extrapolated from it until the last
/// chunk is in).
#[derive(Default)]
struct Seen {
    records: usize,
    trajectories: usize,
    tokens: usize,
    n_scored: usize,
}

/// A chunk between being queued and being finished.
struct Flight {
    chunk: Arc<Chunk>,
    /// Read back from the journal instead of scored.
    resumed: Option<Vec<Indexed>>,
    main: Vec<Option<Vec<TrajectoryStats>>>,
    local: Vec<Option<Vec<(f64, usize)>>>,
    /// Batches still out.
    left: usize,
}

/// The caller's side of a job: queues chunks' batches, collects results, finishes chunks in order.
struct Coordinator<'a, 'j> {
    plan: &'a Plan<'a>,
    journal: Option<&'j mut Journal>,
    interrupt: Option<Interrupt>,
    judge: Option<&'a JudgeScores>,
    n_workers: usize,
    /// Chunks from the tokeniser not yet queued.
    ready: VecDeque<Chunk>,
    /// Queued chunks, in chunk order (the front is the next to finish).
    flights: VecDeque<Flight>,
    /// Batches queued or running.
    outstanding: usize,
    /// The last chunk has come from the tokeniser.
    got_last: bool,
    out: Vec<Indexed>,
    seen: Seen,
    /// Chunks finished, and of them (and of `seen.tokens`) what was read back from the journal.
    chunks: usize,
    chunks_resumed: usize,
    tokens_resumed: usize,
    records_total: usize,
    p: Progress,
    t0: Instant,
}

impl Coordinator<'_, '_> {
    /// Until every chunk is finished or something fails. Takes the queue's sender: when this returns, the
    /// queue closes and idle workers end.
    fn run(
        &mut self,
        events: &Receiver<Event>,
        queue: Sender<Work>,
        credits: &Credits,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<()> {
        loop {
            while self.flights.is_empty() || self.outstanding < QUEUED_PER_WORKER * self.n_workers {
                let Some(c) = self.ready.pop_front() else { break };
                self.admit(c, &queue)?;
                credits.give(1);
            }
            while self.flights.front().is_some_and(|f| f.left == 0) {
                self.finish_front(progress)?;
            }
            if self.got_last && self.ready.is_empty() && self.flights.is_empty() {
                return Ok(());
            }
            let ev = loop {
                if let Some(i) = &self.interrupt {
                    i.check()?;
                }
                match events.recv_timeout(interrupt::POLL) {
                    Ok(ev) => break ev,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(LarkError::Backend(
                            "the job's tokeniser and workers stopped before the job was done".into(),
                        ))
                    }
                }
            };
            match ev {
                Event::Chunk(c) => {
                    let c = c?;
                    self.seen.records += c.idx.len();
                    self.seen.trajectories += c.ready.len();
                    self.seen.tokens += c.tokens;
                    self.seen.n_scored += c.n_scored;
                    self.got_last |= c.last;
                    self.update_totals();
                    self.ready.push_back(c);
                }
                Event::Batch { k, pass, batch, out } => {
                    let out = out?;
                    self.outstanding -= 1;
                    let first = self.flights.front().map_or(0, |f| f.chunk.k);
                    let f = &mut self.flights[k - first];
                    f.left -= 1;
                    match (pass, out) {
                        (Pass::Main, BatchOut::Main(v)) => {
                            let tokens = f.chunk.batch_tokens(batch);
                            f.main[batch] = Some(v);
                            self.p.trajectories_done += f.chunk.batches[batch].len();
                            self.p.tokens_done += tokens;
                            self.p.tokens_this_run += tokens;
                            self.p.elapsed_s = self.t0.elapsed().as_secs_f64();
                            progress(&self.p);
                        }
                        (Pass::Local, BatchOut::Local(v)) => f.local[batch] = Some(v),
                        _ => unreachable!("a worker answers each pass with its own kind of result"),
                    }
                }
            }
        }
    }

    /// Progress totals: exact once the last chunk is in; before that, what has been tokenised scaled by the
    /// share of records it covers.
    fn update_totals(&mut self) {
        let s = &self.seen;
        let scale = |x: usize| -> usize {
            if self.got_last || s.records == 0 {
                x
            } else {
                ((x as u128 * self.records_total as u128) / s.records as u128) as usize
            }
        };
        self.p.trajectories_total = scale(s.trajectories).max(self.p.trajectories_done);
        self.p.tokens_total = scale(s.tokens).max(self.p.tokens_done);
        self.p.totals_exact = self.got_last;
    }

    /// Queue chunk `c`'s batches (or take it from the journal).
    fn admit(&mut self, mut c: Chunk, queue: &Sender<Work>) -> Result<()> {
        if let Some(items) = self.journal.as_mut().and_then(|j| j.take_chunk(c.k, &c.idx)) {
            let chunk = Arc::new(c);
            self.flights.push_back(Flight { chunk, resumed: Some(items), main: vec![], local: vec![], left: 0 });
            return Ok(());
        }
        self.plan.ensure_local(&mut c)?;
        let n_main = c.batches.len();
        let n_local = c.local.as_ref().map_or(0, |l| l.batches.len());
        let chunk = Arc::new(c);
        let passes = (0..n_main).map(|b| (Pass::Main, b)).chain((0..n_local).map(|b| (Pass::Local, b)));
        for (pass, batch) in passes {
            queue
                .send(Work { chunk: chunk.clone(), pass, batch })
                .map_err(|_| LarkError::Backend("every worker of the job stopped".into()))?;
        }
        self.outstanding += n_main + n_local;
        self.flights.push_back(Flight {
            chunk,
            resumed: None,
            main: vec![None; n_main],
            local: vec![None; n_local],
            left: n_main + n_local,
        });
        Ok(())
    }

    /// The front chunk is complete: its candidates, into the journal and the output.
    fn finish_front(&mut self, progress: &mut impl FnMut(&Progress)) -> Result<()> {
        let f = self.flights.pop_front().expect("called with a complete front chunk");
        let c = &f.chunk;
        let items = match f.resumed {
            Some(items) => {
                self.p.trajectories_done += c.ready.len();
                self.p.tokens_done += c.tokens;
                self.chunks_resumed += 1;
                self.tokens_resumed += c.tokens;
                items
            }
            None => {
                let items = self.candidates(c, f.main, f.local);
                if let Some(j) = self.journal.as_mut() {
                    j.append_chunk(c.k, &items)?;
                }
                items
            }
        };
        self.out.extend(items);
        self.chunks += 1;
        self.p.problems_done += c.n_problems;
        self.p.elapsed_s = self.t0.elapsed().as_secs_f64();
        progress(&self.p);
        Ok(())
    }

    /// The candidates of a scored chunk, in pool order.
    fn candidates(
        &self,
        c: &Chunk,
        main: Vec<Option<Vec<TrajectoryStats>>>,
        local: Vec<Option<Vec<(f64, usize)>>>,
    ) -> Vec<Indexed> {
        let records = &self.plan.pool.records;
        let mut stats: Vec<Option<TrajectoryStats>> = vec![None; c.idx.len()];
        for (batch, v) in c.batches.iter().zip(main) {
            for (&j, s) in batch.iter().zip(v.expect("every batch of a complete chunk came back")) {
                stats[c.ready[j]] = Some(s);
            }
        }
        // Local Naturalness: each record's steps in window order (batches in order, then within a batch).
        let ln: Option<Vec<f64>> = c.local.as_ref().map(|l| {
            let mut per_step: Vec<Vec<(f64, usize)>> = vec![Vec::new(); c.idx.len()];
            for (batch, v) in l.batches.iter().zip(local) {
                for (&j, x) in batch.iter().zip(v.expect("every batch of a complete chunk came back")) {
                    per_step[l.windows[j].record].push(x);
                }
            }
            per_step.iter().map(|steps| combine(steps)).collect()
        });
        c.idx
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let r = &records[i];
                let outcome = match (&c.prepared[n], stats[n]) {
                    (Prepared::Ready(t), Some(s)) => {
                        Outcome::Scored { stats: s, truncated: t.truncated, n_turns: t.n_turns() }
                    }
                    (Prepared::Skipped(why), _) => Outcome::Skipped(why.to_string()),
                    (Prepared::Ready(_), None) => unreachable!("every ready record is in one batch"),
                };
                Indexed {
                    index: i,
                    candidate: Candidate {
                        problem_id: r.problem_id,
                        candidate_id: r.candidate_id,
                        teacher: r.teacher.clone(),
                        outcome,
                        text: TextFeatures::from_text(&r.scored_text(self.plan.settings.turns)),
                        local_naturalness: ln.as_ref().map(|l| l[n]),
                        llm_judge: self.judge.map(|j| j.get(r.problem_id, r.candidate_id).unwrap_or(f64::NAN)),
                    },
                }
            })
            .collect()
    }
}
