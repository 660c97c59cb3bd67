//! The text side of a scoring job, on CPU threads ahead of the device: records rendered, tokenised and their
//! scored spans found in pool order, a window of records at a time in parallel (rayon), cut into the job's
//! chunks as soon as each is complete, and each chunk's batches formed. The chunks and their batches are
//! exactly those of tokenising the whole pool first: a chunk's end depends only on the token counts of the
//! problems before it ([`Chunker`]: their tokens and forward work), never on how far tokenisation has got.

use super::schedule::{pack_by_length, ChunkBound, Chunker};
use super::ScoreSettings;
use crate::error::{LarkError, Result};
use crate::io::{Pool, Record};
use crate::score::local::step_windows;
use crate::score::Scorer;
use crate::text::{without_assistant, Prepared, TextPipeline, Trajectory};
use rayon::prelude::*;
use std::collections::BTreeSet;

/// Records tokenised together (in parallel) before the chunks they complete are handed on: small enough
/// that the first batch reaches the device soon, large enough to keep every core busy.
fn window_records() -> usize {
    (8 * rayon::current_num_threads()).max(64)
}

/// What fixes a job's chunks and batches.
pub(crate) struct Plan<'a> {
    pub pool: &'a Pool,
    pub text: &'a TextPipeline,
    pub settings: &'a ScoreSettings,
    /// The job's problems (after sharding): (problem_id, first record, end record).
    pub groups: &'a [(i64, usize, usize)],
    pub chunk: ChunkBound,
    pub budget: usize,
    pub max_seqs: usize,
    /// Chunks the journal holds: their Local Naturalness windows are not built (they are read back).
    pub journaled: BTreeSet<usize>,
}

/// One step window of Local Naturalness: the tokens of a prompt, at most m previous steps and the step;
/// positions `from..` (the step) are scored.
pub(crate) struct Window {
    /// Position in the chunk's `idx` of the record it belongs to.
    pub record: usize,
    pub ids: Vec<u32>,
    pub from: usize,
}

/// The Local Naturalness pass of a chunk: its windows and their batches (indices into `windows`).
pub(crate) struct Local {
    pub windows: Vec<Window>,
    pub batches: Vec<Vec<usize>>,
}

/// One chunk of whole problems, tokenised, with its batches.
pub(crate) struct Chunk {
    /// Chunk number (the journal's key).
    pub k: usize,
    /// The job's last chunk.
    pub last: bool,
    pub n_problems: usize,
    /// Record indices, pool order.
    pub idx: Vec<usize>,
    /// One per record of `idx`.
    pub prepared: Vec<Prepared>,
    /// Positions in `idx` of the records that are scored (Ready), in order.
    pub ready: Vec<usize>,
    /// Main pass: batches of indices into `ready`, longest first.
    pub batches: Vec<Vec<usize>>,
    /// Local Naturalness, when requested (None until built: see [`Plan::journaled`]).
    pub local: Option<Local>,
    /// Tokens through the model in the main pass (Σ span ends) and scored tokens.
    pub tokens: usize,
    pub n_scored: usize,
}

impl Chunk {
    /// The `j`-th scored trajectory.
    pub fn trajectory(&self, j: usize) -> &Trajectory {
        self.prepared[self.ready[j]].ready().expect("`ready` lists only Ready records")
    }
    /// Tokens of main-pass batch `b`.
    pub fn batch_tokens(&self, b: usize) -> usize {
        self.batches[b].iter().map(|&j| self.trajectory(j).score_to).sum()
    }
}

fn prepare(text: &TextPipeline, r: &Record, s: &ScoreSettings) -> Result<Prepared> {
    text.conversation(&r.messages, r.tools.as_deref(), s.span, s.turns, s.max_len).map_err(|e| {
        LarkError::input(r.origin.to_string(), format!("problem {} candidate {}: {e}", r.problem_id, r.candidate_id))
    })
}

impl Plan<'_> {
    fn wants_local(&self) -> bool {
        self.settings.scorers.contains(&Scorer::LocalNaturalness)
    }

    /// Tokenise the job's records in pool order and hand each chunk to `emit` as soon as it is complete
    /// (chunk 0 first). Stops at the first error (handed on) or when `emit` returns false (nobody listens).
    pub fn produce(&self, mut emit: impl FnMut(Result<Chunk>) -> bool) {
        let records = &self.pool.records;
        let mut chunker = Chunker::new(self.chunk);
        let mut k = 0usize;
        // The chunk being filled: its first group and its records so far.
        let (mut first_group, mut idx, mut prepared) = (0usize, Vec::new(), Vec::new());
        let mut g = 0usize;
        while g < self.groups.len() {
            // The next window: whole groups, at least `window_records()` records (or what is left).
            let mut end = g;
            let mut n = 0usize;
            while end < self.groups.len() && (end == g || n < window_records()) {
                n += self.groups[end].2 - self.groups[end].1;
                end += 1;
            }
            let mine: Vec<usize> = self.groups[g..end].iter().flat_map(|&(_, a, b)| a..b).collect();
            // Collected in order, then the first error in pool order: a parallel collect into Result would
            // report whichever failing record a thread reached first.
            let done: Vec<Result<Prepared>> =
                mine.par_iter().map(|&i| prepare(self.text, &records[i], self.settings)).collect();
            let mut done = match done.into_iter().collect() {
                Ok::<Vec<Prepared>, _>(v) => v.into_iter(),
                Err(e) => {
                    emit(Err(e));
                    return;
                }
            };
            for gi in g..end {
                let (_, a, b) = self.groups[gi];
                let (mut tokens, mut flops) = (0usize, 0.0f64);
                for i in a..b {
                    let p = done.next().expect("one prepared record per record of the window");
                    let len = p.ready().map_or(0, |t| t.score_to);
                    tokens += len;
                    flops += self.chunk.flops(len);
                    idx.push(i);
                    prepared.push(p);
                }
                if chunker.push(tokens, flops, gi + 1 == self.groups.len()) {
                    let last = gi + 1 == self.groups.len();
                    let (i, p) = (std::mem::take(&mut idx), std::mem::take(&mut prepared));
                    let chunk = self.chunk(k, last, gi + 1 - first_group, i, p);
                    let failed = chunk.is_err();
                    if !emit(chunk) || failed {
                        return;
                    }
                    k += 1;
                    first_group = gi + 1;
                }
            }
            g = end;
        }
    }

    /// Chunk `k` of `n_problems` problems: its batches, and its Local Naturalness windows unless journaled.
    fn chunk(
        &self,
        k: usize,
        last: bool,
        n_problems: usize,
        idx: Vec<usize>,
        prepared: Vec<Prepared>,
    ) -> Result<Chunk> {
        let ready: Vec<usize> = (0..idx.len()).filter(|&n| prepared[n].ready().is_some()).collect();
        let mut c = Chunk {
            k,
            last,
            n_problems,
            idx,
            prepared,
            ready,
            batches: Vec::new(),
            local: None,
            tokens: 0,
            n_scored: 0,
        };
        let lengths: Vec<usize> = (0..c.ready.len()).map(|j| c.trajectory(j).score_to).collect();
        c.tokens = lengths.iter().sum();
        c.n_scored = (0..c.ready.len()).map(|j| c.trajectory(j).n_scored()).sum();
        c.batches = pack_by_length(&lengths, self.budget, self.max_seqs);
        if self.wants_local() && !self.journaled.contains(&k) {
            c.local = Some(self.local(&c.idx)?);
        }
        Ok(c)
    }

    /// Make sure chunk `c` has its Local Naturalness windows when the job needs them (a chunk the journal
    /// was expected to hold but did not).
    pub fn ensure_local(&self, c: &mut Chunk) -> Result<()> {
        if self.wants_local() && c.local.is_none() {
            c.local = Some(self.local(&c.idx)?);
        }
        Ok(())
    }

    /// The Local Naturalness windows of the records `idx`: each step is scored with the prompt (with
    /// generation prompt) and at most m previous steps as context. Windows of all these records are packed
    /// together, so shared batching amortises the (m+1)× cost.
    fn local(&self, idx: &[usize]) -> Result<Local> {
        let s = self.settings;
        let per_record: Vec<Vec<Window>> = idx
            .par_iter()
            .enumerate()
            .map(|(n, &ri)| {
                let r = &self.pool.records[ri];
                // The final assistant turn's steps (for several turns, Local Naturalness reads the final one).
                let prompt = self.text.render_with_tools(&without_assistant(&r.messages), r.tools.as_deref(), true)?;
                let mut out = Vec::new();
                for w in step_windows(&prompt, r.assistant_content(), s.local_m) {
                    let ctx = self.text.encode(&w.context)?;
                    let mut full = self.text.encode(&w.full())?;
                    full.truncate(s.max_len);
                    // Tokens of the step: those after the context's length (positional, as for the turn span).
                    if !ctx.is_empty() && ctx.len() < full.len() {
                        out.push(Window { record: n, ids: full, from: ctx.len() });
                    }
                }
                Ok(out)
            })
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .collect::<Result<_>>()?; // the first error in record order, whatever thread met it first
        let windows: Vec<Window> = per_record.into_iter().flatten().collect();
        let lengths: Vec<usize> = windows.iter().map(|w| w.ids.len()).collect();
        let batches = pack_by_length(&lengths, self.budget, self.max_seqs);
        Ok(Local { windows, batches })
    }
}
