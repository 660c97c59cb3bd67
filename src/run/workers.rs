//! A job's device workers: one thread per backend (one per GPU of `--device cuda:0,1,...`), all taking
//! batches from one shared queue and sending back their per-trajectory results tagged with where they
//! belong, so that the order in which they finish changes nothing. A worker runs each batch through
//! [`score_splitting`] (out of memory: split and retry) and reduces the per-token statistics on its own
//! thread; a failure is reported with the problem, candidate and length it concerns.

use super::prepare::Chunk;
use super::schedule::{score_splitting, SplitFailure};
use crate::backend::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::io::Pool;
use crate::stats::{StatsOptions, TokenStats, TrajectoryStats};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Which pass of a chunk a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Main,
    Local,
}

/// One batch to run: batch `batch` of `pass` of `chunk`.
pub(crate) struct Work {
    pub chunk: Arc<Chunk>,
    pub pass: Pass,
    pub batch: usize,
}

/// What a batch gives back, in the batch's order.
pub(crate) enum BatchOut {
    /// Per trajectory.
    Main(Vec<TrajectoryStats>),
    /// Per window: (Σ log-probability of the step, its token count).
    Local(Vec<(f64, usize)>),
}

/// What the coordinator (the caller's thread) hears about.
pub(crate) enum Event {
    /// The next chunk from the tokeniser (in order; the last says so), or why there is none.
    Chunk(Result<Chunk>),
    Batch {
        k: usize,
        pass: Pass,
        batch: usize,
        out: Result<BatchOut>,
    },
}

/// What every worker shares.
pub(crate) struct Shared<'a> {
    pub pool: &'a Pool,
    pub stats_opts: StatsOptions,
    pub rank_clip: u32,
    pub queue: Mutex<Receiver<Work>>,
    /// Set when the job stops (done or failed): queued batches are left alone.
    pub stop: AtomicBool,
}

/// Run batches from `sh.queue` on `backend` until the queue closes or the job stops. A panic in the
/// backend is reported as that batch's error and ends this worker (the backend may be broken).
pub(crate) fn work(backend: &mut dyn Backend, sh: &Shared<'_>, events: Sender<Event>) {
    loop {
        let next = sh.queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(w) = next else { return };
        if sh.stop.load(Ordering::Relaxed) {
            return;
        }
        let out = catch_unwind(AssertUnwindSafe(|| run(backend, sh, &w))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(LarkError::Backend(format!("{} panicked: {msg}", backend_name(backend))))
        });
        let failed = out.is_err();
        if events.send(Event::Batch { k: w.chunk.k, pass: w.pass, batch: w.batch, out }).is_err() || failed {
            return;
        }
    }
}

fn backend_name(b: &dyn Backend) -> String {
    catch_unwind(AssertUnwindSafe(|| b.describe())).unwrap_or_else(|_| "the backend".into())
}

fn run(backend: &mut dyn Backend, sh: &Shared<'_>, w: &Work) -> Result<BatchOut> {
    let c = &w.chunk;
    let records = &sh.pool.records;
    match w.pass {
        Pass::Main => {
            let batch = &c.batches[w.batch];
            let reqs: Vec<SeqRequest<'_>> = batch.iter().map(|&j| c.trajectory(j).request()).collect();
            // The record of the chunk's ready trajectory j, named in an error.
            let who = |j: usize| describe(&records[c.idx[c.ready[j]]], "");
            let toks = score_splitting(backend, &reqs, &sh.stats_opts).map_err(|f| {
                let what = who(batch[f.seq]);
                failure(f, &reqs, &what)
            })?;
            let mut out = Vec::with_capacity(batch.len());
            for (&j, toks) in batch.iter().zip(toks) {
                let t = c.trajectory(j);
                if toks.len() != t.n_covered() {
                    return Err(LarkError::Backend(format!(
                        "backend returned {} statistics for {} scored tokens ({})",
                        toks.len(),
                        t.n_covered(),
                        records[c.idx[c.ready[j]]].origin
                    )));
                }
                // The turns' positions of the covering range (the context between turns is not scored).
                let toks = t.keep_scored(toks);
                if let Some(k) = first_non_finite(&toks) {
                    return Err(non_finite(&who(j), k));
                }
                out.push(TrajectoryStats::from_tokens(&toks, sh.rank_clip));
            }
            Ok(BatchOut::Main(out))
        }
        Pass::Local => {
            let local = c.local.as_ref().expect("Local batches are queued only for chunks with windows");
            let batch = &local.batches[w.batch];
            let reqs: Vec<SeqRequest<'_>> = batch
                .iter()
                .map(|&j| SeqRequest { ids: &local.windows[j].ids, score_from: local.windows[j].from })
                .collect();
            let who =
                |j: usize| describe(&records[c.idx[local.windows[j].record]], " (a Local Naturalness step window)");
            let toks = score_splitting(backend, &reqs, &StatsOptions::default()).map_err(|f| {
                let what = who(batch[f.seq]);
                failure(f, &reqs, &what)
            })?;
            for (&j, t) in batch.iter().zip(&toks) {
                if let Some(k) = first_non_finite(t) {
                    return Err(non_finite(&who(j), k));
                }
            }
            Ok(BatchOut::Local(toks.iter().map(|t| (t.iter().map(|s| s.logprob as f64).sum(), t.len())).collect()))
        }
    }
}

/// "file:line: problem P candidate C" and `what` (for errors naming a trajectory).
fn describe(r: &crate::io::Record, what: &str) -> String {
    format!("{}: problem {} candidate {}{what}", r.origin, r.problem_id, r.candidate_id)
}

/// The first scored position whose statistics are not finite (NaN or infinite logits: broken weights), if any.
fn first_non_finite(toks: &[TokenStats]) -> Option<usize> {
    toks.iter().position(|s| !(s.logprob.is_finite() && s.lse.is_finite() && s.sum_p2.is_finite()))
}

/// A trajectory with non-finite statistics stops the run: no score is recorded for it (never a fake one).
fn non_finite(what: &str, k: usize) -> LarkError {
    LarkError::Backend(format!(
        "{what}: the model produced non-finite log-probabilities at scored token {k} (NaN or infinite logits: \
         check the weights); no score is recorded"
    ))
}

/// The error of a failed batch, naming the sequence (`what`) it failed on.
fn failure(f: SplitFailure, reqs: &[SeqRequest<'_>], what: &str) -> LarkError {
    match f.error {
        e @ LarkError::OutOfMemory { .. } => LarkError::Backend(format!(
            "{what}: its {} tokens do not fit in device memory even alone ({e}); lower --max-len or use a device \
             with more memory",
            reqs[f.seq].ids.len()
        )),
        e => LarkError::Backend(format!("scoring a batch starting with {what} failed: {e}")),
    }
}

/// How many more chunks the tokeniser may hand on: a counting semaphore the coordinator refills as it
/// queues chunks, closed when the job stops (a waiting tokeniser then gives up).
#[derive(Default)]
pub(crate) struct Credits {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Credits {
    /// Wait for a credit; false once closed.
    pub fn take(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *g {
                (_, true) => return false,
                (0, false) => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                (ref mut n, false) => {
                    *n -= 1;
                    return true;
                }
            }
        }
    }
    pub fn give(&self, n: usize) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_add(n);
        self.cv.notify_all();
    }
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cv.notify_all();
    }
}

/// Stops a job's threads when dropped, also when the caller's thread unwinds (a panicking progress
/// callback): queued batches are left alone and a waiting tokeniser gives up, so the scope can join.
pub(crate) struct StopOnDrop<'a> {
    pub stop: &'a AtomicBool,
    pub credits: &'a Credits,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.credits.close();
    }
}
