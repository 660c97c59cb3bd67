//! Packing trajectories into variable-length batches: sorted by length (longest first, so memory trouble
//! shows at once and the tail of the run is short work), filled greedily up to a token budget, no padding;
//! cutting a job into chunks of whole problems ([`Chunker`]); and running a batch so that running out of
//! device memory splits it instead of failing ([`score_splitting`]).

use crate::backend::{Backend, SeqRequest};
use crate::error::LarkError;
use crate::model::flops::WorkModel;
use crate::stats::{StatsOptions, TokenStats};

/// Indices of `lengths` grouped into batches of at most `token_budget` tokens (a trajectory longer than
/// the budget gets a batch of its own) and at most `max_seqs` sequences. Deterministic: ties in length keep
/// input order.
pub fn pack_by_length(lengths: &[usize], token_budget: usize, max_seqs: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0usize;
    for i in order {
        let len = lengths[i];
        if !current.is_empty() && (tokens + len > token_budget || current.len() >= max_seqs.max(1)) {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        current.push(i);
        tokens += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// What ends a job's chunk (the unit of the journal): `tokens` tokens through the model, or `flops` of
/// forward work by `work`, whichever comes first. The work bound keeps the work a kill can lose to about
/// [`super::CHUNK_WORK_SECONDS`] on a slow backend (a CPU scoring a 7B model does ~20 tokens/s, so a
/// token bound alone would be hours of work), the token bound keeps batches full on a fast one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkBound {
    pub tokens: usize,
    pub work: Option<(WorkModel, f64)>,
}

impl ChunkBound {
    pub fn tokens(tokens: usize) -> ChunkBound {
        ChunkBound { tokens, work: None }
    }
    /// The forward FLOPs of a sequence of `len` tokens, as the bound counts them (0 without a work bound).
    pub fn flops(&self, len: usize) -> f64 {
        self.work.map_or(0.0, |(w, _)| w.flops(len))
    }
    /// The work bound in FLOPs (∞ without one).
    pub fn max_flops(&self) -> f64 {
        self.work.map_or(f64::INFINITY, |(_, f)| f)
    }
}

/// Where a job's chunks end: consecutive problems in pool order until a chunk reaches its [`ChunkBound`],
/// and the last problem. Fed one problem at a time (its ready trajectories' tokens and work), so the chunks
/// can be cut while the pool is still being tokenised and are the same whatever the tokenisation's pace:
/// they depend only on the pool, the settings, the model and the bound, which is what a resumed run relies on.
#[derive(Debug, Clone)]
pub struct Chunker {
    bound: ChunkBound,
    tokens: usize,
    flops: f64,
}

impl Chunker {
    pub fn new(bound: ChunkBound) -> Chunker {
        Chunker { bound, tokens: 0, flops: 0.0 }
    }
    /// Add a problem of `tokens` tokens and `flops` of work; true when the chunk ends after it (`last`: the
    /// job's last problem).
    pub fn push(&mut self, tokens: usize, flops: f64, last: bool) -> bool {
        self.tokens += tokens;
        self.flops += flops;
        if self.tokens >= self.bound.tokens || self.flops >= self.bound.max_flops() || last {
            (self.tokens, self.flops) = (0, 0.0);
            return true;
        }
        false
    }
}

/// A batch that could not be scored: `seq` is the position (in the batch given to [`score_splitting`]) of
/// the sequence it failed on — the one that did not fit alone when `error` is `OutOfMemory`, the first of
/// the failing part otherwise.
#[derive(Debug)]
pub struct SplitFailure {
    pub seq: usize,
    pub error: LarkError,
}

/// `backend.score(batch)`, except that when the device runs out of memory the batch is split in two halves
/// (by sequence; the first holds the longer ones, batches being sorted longest first) and each is retried
/// the same way. Nothing is dropped and nothing is made up: a single sequence that does not fit is a
/// failure naming it. The backend must stay usable after an `OutOfMemory` (the CUDA backend frees a
/// workspace before growing it, so a failed growth leaves it empty, not half-built). The per-sequence
/// numbers equal the unsplit batch's wherever the backend's numbers do not depend on a sequence's batch
/// companions (the CPU job scores one sequence per batch; on a GPU they agree to rounding).
pub fn score_splitting(
    backend: &mut dyn Backend,
    batch: &[SeqRequest<'_>],
    opts: &StatsOptions,
) -> std::result::Result<Vec<Vec<TokenStats>>, SplitFailure> {
    match backend.score(batch, opts) {
        Ok(v) => Ok(v),
        Err(LarkError::OutOfMemory { .. }) if batch.len() > 1 => {
            let mid = batch.len() / 2;
            let mut out = score_splitting(backend, &batch[..mid], opts)?;
            let rest =
                score_splitting(backend, &batch[mid..], opts).map_err(|f| SplitFailure { seq: f.seq + mid, ..f })?;
            out.extend(rest);
            Ok(out)
        }
        Err(error) => Err(SplitFailure { seq: 0, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_within_budget_and_keeps_everything() {
        let lengths = [5, 100, 7, 7, 60, 1, 40];
        let b = pack_by_length(&lengths, 64, 16);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &b {
            let t: usize = batch.iter().map(|&i| lengths[i]).sum();
            assert!(t <= 64 || batch.len() == 1, "{batch:?}");
        }
        assert_eq!(b[0], vec![1]); // longer than the budget: alone, first
        assert_eq!(b[1], vec![4]);
        assert_eq!(b[2], vec![6, 2, 3, 0, 5]); // 40+7+7+5+1 = 60
    }

    #[test]
    fn respects_max_seqs() {
        let b = pack_by_length(&[1; 10], 1000, 3);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    }

    #[test]
    fn chunker_cuts_after_the_budget_and_at_the_end() {
        let mut c = Chunker::new(ChunkBound::tokens(10));
        let ends: Vec<bool> = [4, 5, 1, 20, 0, 3].iter().enumerate().map(|(i, &t)| c.push(t, 0.0, i == 5)).collect();
        assert_eq!(ends, vec![false, false, true, true, false, true]);
    }

    #[test]
    fn chunker_cuts_at_the_work_bound_before_the_token_bound() {
        let work = WorkModel { constant: 0.0, linear: 1.0, quadratic: 0.0 };
        let bound = ChunkBound { tokens: 1000, work: Some((work, 10.0)) };
        assert_eq!(bound.flops(7), 7.0);
        let mut c = Chunker::new(bound);
        // Problems of few tokens but much work (a large model): the work bound ends the chunks.
        let ends: Vec<bool> =
            [(2, 6.0), (2, 6.0), (1, 1.0), (1, 30.0), (1, 1.0)].iter().map(|&(t, f)| c.push(t, f, false)).collect();
        assert_eq!(ends, vec![false, true, false, true, false]);
        // And the token bound still ends them when the work is small.
        let mut c = Chunker::new(bound);
        assert!(!c.push(999, 0.0, false) && c.push(1, 0.0, false));
    }

    /// Per-token numbers that depend only on the sequence; OOM above `limit` tokens per call.
    struct Tight {
        limit: usize,
        calls: Vec<usize>,
    }
    impl Backend for Tight {
        fn describe(&self) -> String {
            "tight".into()
        }
        fn score(&mut self, batch: &[SeqRequest<'_>], _: &StatsOptions) -> crate::error::Result<Vec<Vec<TokenStats>>> {
            let tokens: usize = batch.iter().map(|s| s.ids.len()).sum();
            self.calls.push(batch.len());
            if tokens > self.limit {
                return Err(LarkError::OutOfMemory { device: "tight".into(), bytes: tokens * 1000 });
            }
            Ok(batch
                .iter()
                .map(|s| {
                    (s.score_from..s.ids.len())
                        .map(|t| TokenStats { logprob: -(s.ids[t] as f32), rank: t as u32, ..Default::default() })
                        .collect()
                })
                .collect())
        }
    }

    #[test]
    fn out_of_memory_splits_until_it_fits_and_names_what_never_does() {
        let seqs: Vec<Vec<u32>> = [9usize, 7, 6, 3, 2, 2, 1].iter().map(|&n| (0..n as u32 + 1).collect()).collect();
        let reqs: Vec<SeqRequest<'_>> = seqs.iter().map(|ids| SeqRequest { ids, score_from: 1 }).collect();
        let opts = StatsOptions::default();
        let want = Tight { limit: usize::MAX, calls: vec![] }.score(&reqs, &opts).unwrap();
        let mut b = Tight { limit: 12, calls: vec![] };
        let got = score_splitting(&mut b, &reqs, &opts).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert!(b.calls.len() > 3 && b.calls[0] == 7, "{:?}", b.calls);
        // The longest sequence (10 tokens) does not fit even alone: a failure naming it.
        let mut b = Tight { limit: 9, calls: vec![] };
        let f = score_splitting(&mut b, &reqs, &opts).unwrap_err();
        assert_eq!(f.seq, 0);
        assert!(matches!(f.error, LarkError::OutOfMemory { .. }));
        // Without it every other one does, the backend being used again after each OOM.
        let mut b = Tight { limit: 9, calls: vec![] };
        let f = score_splitting(&mut b, &reqs[1..], &opts).unwrap();
        assert_eq!(f.len(), 6);
        // A failing sequence further in is named by its position in the whole batch.
        let long: Vec<u32> = (0..30).collect();
        let mut with_long = reqs.clone();
        with_long[5] = SeqRequest { ids: &long, score_from: 1 };
        let f = score_splitting(&mut Tight { limit: 12, calls: vec![] }, &with_long[1..], &opts).unwrap_err();
        assert_eq!(f.seq, 4);
    }
}
