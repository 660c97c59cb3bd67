//! A student model opened for scoring chats one call at a time (rather than a whole pool, which
//! [`crate::run::ScoreJob`] runs): the model on a backend with its text pipeline and the settings it scores
//! under. The C ABI's `lark_model` and the Python package's `Student` are this type. Scoring follows
//! `run::job::score_pool` step for step (same span rules, same length-packed batches, same per-trajectory
//! sums), so the numbers are those of `lark score`.

use crate::backend::cuda::Precision;
use crate::backend::{open_backend, Backend, DeviceChoice, SeqRequest};
use crate::error::{LarkError, Result};
use crate::io::Pool;
use crate::model::Model;
use crate::run::schedule::pack_by_length;
use crate::run::{score_pool_with, Interrupt, JobControl, JobOutput, Progress, ScoreSettings};
use crate::score::{parse_scorers, BrierMode};
use crate::stats::{StatsOptions, TokenStats, TrajectoryStats};
use crate::text::{parse_messages, Prepared, SpanMode, TextPipeline, Turns};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The settings a student scores under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudentSettings {
    pub span: SpanMode,
    pub turns: Turns,
    pub max_len: usize,
    pub brier: BrierMode,
    pub rank_clip: u32,
    /// None: each device's default (bf16 activations on a GPU, the f32 reference on the CPU); `Bf16` on the CPU
    /// opts into its bf16 linear layers.
    pub precision: Option<Precision>,
}

impl Default for StudentSettings {
    fn default() -> Self {
        StudentSettings {
            span: SpanMode::Turn,
            turns: Turns::All,
            max_len: crate::text::DEFAULT_MAX_LEN,
            brier: BrierMode::Exact,
            rank_clip: 100,
            precision: None,
        }
    }
}

/// One chat's result.
#[derive(Debug, Clone)]
pub enum ChatScore {
    /// Nothing to score (the reason, as `scores.jsonl`'s `skipped` says it) and whether it was truncated.
    Skipped { reason: String, truncated: bool },
    /// The per-trajectory sums over every scored turn, and each scored token's statistics in order.
    Scored { stats: TrajectoryStats, tokens: Vec<TokenStats>, truncated: bool, n_turns: usize },
}

/// A model on a backend, ready to score. Scoring needs the backend mutably, so it sits behind a mutex: calls
/// from several threads are safe and run one at a time.
pub struct Student {
    dir: PathBuf,
    text: TextPipeline,
    backend: Mutex<Box<dyn Backend>>,
    device: String,
    vocab_size: usize,
    settings: StudentSettings,
    /// Sequences per packed batch: 1 on the CPU, as `lark score` does there (the CPU GEMM's blocking depends
    /// on a batch's row count, so one sequence per batch keeps every trajectory's numbers independent of its
    /// companions and equal to the CLI's), else the job's default.
    max_seqs: usize,
}

impl Student {
    pub fn open(dir: &Path, device: &DeviceChoice, settings: StudentSettings) -> Result<Student> {
        let model = Model::open(dir)?;
        let text = TextPipeline::open(dir)?;
        let tok_vocab = text.tokenizer().vocab_size();
        if tok_vocab > model.config.vocab_size {
            return Err(LarkError::input(
                dir.join("tokenizer.json").display().to_string(),
                format!(
                    "tokenizer ids go up to {} but the model's vocabulary has {} entries",
                    tok_vocab.saturating_sub(1),
                    model.config.vocab_size
                ),
            ));
        }
        if settings.span == SpanMode::Content {
            // Fail at open rather than on every chat when the template has no known assistant markers.
            text.family()?;
        }
        let (backend, device) = open_backend(&model, device, settings.precision)?;
        let max_seqs = if device.starts_with("cpu") { 1 } else { 4096 };
        Ok(Student {
            dir: dir.to_path_buf(),
            max_seqs,
            text,
            backend: Mutex::new(backend),
            device,
            vocab_size: model.config.vocab_size,
            settings,
        })
    }

    /// The device it runs on, e.g. "cpu (2 threads)".
    pub fn device(&self) -> &str {
        &self.device
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn settings(&self) -> &StudentSettings {
        &self.settings
    }
    pub fn text(&self) -> &TextPipeline {
        &self.text
    }

    /// The backend, for a whole job on this student (`run::score_pool`); other calls wait meanwhile.
    pub fn lock_backend(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn Backend>>> {
        self.backend
            .lock()
            .map_err(|_| LarkError::Backend("the model is unusable after an internal error; free it".into()))
    }

    fn stats_options(&self) -> StatsOptions {
        StatsOptions {
            topk_brier: match self.settings.brier {
                BrierMode::TopK(k) => Some(k),
                BrierMode::Exact => None,
            },
        }
    }

    /// Run `reqs` through the backend in the CLI's length-packed batches (a batch that runs out of device memory
    /// is split and retried, as in a scoring job); statistics come back in `reqs` order.
    pub fn score_requests(&self, reqs: &[SeqRequest<'_>]) -> Result<Vec<Vec<TokenStats>>> {
        let mut backend = self.lock_backend()?;
        let opts = self.stats_options();
        let lengths: Vec<usize> = reqs.iter().map(|r| r.ids.len()).collect();
        let mut out: Vec<Vec<TokenStats>> = vec![Vec::new(); reqs.len()];
        for batch in pack_by_length(&lengths, backend.batch_token_budget(), self.max_seqs) {
            let sub: Vec<SeqRequest<'_>> = batch.iter().map(|&i| reqs[i]).collect();
            let toks =
                crate::run::schedule::score_splitting(&mut **backend, &sub, &opts).map_err(|f| match f.error {
                    e @ LarkError::OutOfMemory { .. } => LarkError::Backend(format!(
                        "sequence {} ({} tokens) does not fit in device memory even alone: {e}",
                        batch[f.seq],
                        sub[f.seq].ids.len()
                    )),
                    e => e,
                })?;
            for (&i, t) in batch.iter().zip(toks) {
                if t.len() != reqs[i].n_scored() {
                    return Err(LarkError::Backend(format!(
                        "backend returned {} statistics for {} scored tokens",
                        t.len(),
                        reqs[i].n_scored()
                    )));
                }
                out[i] = t;
            }
        }
        Ok(out)
    }

    /// Render and tokenise one chat: a JSON messages array, or a record object (`messages` or ShareGPT
    /// `conversations`, and `tools`). `at` names it in errors.
    pub fn prepare(&self, value: &serde_json::Value, at: &str) -> Result<Prepared> {
        let (messages, tools) = match value {
            serde_json::Value::Object(obj) => {
                let bad = |inv: crate::io::Invalid| LarkError::input(format!("{at}: {}", inv.field), inv.reason);
                let messages = crate::io::validate::conversation_field(obj, false).map_err(bad)?;
                (messages, crate::io::validate::tools_field(obj).map_err(bad)?)
            }
            _ => (parse_messages(value, at)?, None),
        };
        self.text
            .conversation(&messages, tools.as_deref(), self.settings.span, self.settings.turns, self.settings.max_len)
            .map_err(|e| LarkError::input(at.to_string(), e.to_string()))
    }

    /// [`Student::prepare`] of a JSON text.
    pub fn prepare_json(&self, json: &str, at: &str) -> Result<Prepared> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| LarkError::input(at.to_string(), format!("invalid JSON: {e}")))?;
        self.prepare(&value, at)
    }

    /// [`Student::score_chats`] of JSON texts, text i named `name[i]` in errors (the C ABI's and Python's input).
    pub fn score_chat_texts(&self, texts: &[impl AsRef<str>], name: &str) -> Result<Vec<ChatScore>> {
        let chats: Vec<serde_json::Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::from_str(t.as_ref())
                    .map_err(|e| LarkError::input(format!("{name}[{i}]"), format!("invalid JSON: {e}")))
            })
            .collect::<Result<_>>()?;
        self.score_chats(&chats, |i| format!("{name}[{i}]"))
    }

    /// Score chats (as [`Student::prepare`] takes them; `at(i)` names chat i in errors): text first, in
    /// parallel as the CLI does, then the model over the ready ones. Sums and tokens cover every scored turn.
    pub fn score_chats(
        &self,
        chats: &[serde_json::Value],
        at: impl Fn(usize) -> String + Sync,
    ) -> Result<Vec<ChatScore>> {
        let prepared: Vec<Prepared> = {
            use rayon::prelude::*;
            chats.par_iter().enumerate().map(|(i, c)| self.prepare(c, &at(i))).collect::<Result<Vec<_>>>()?
        };
        let ready: Vec<(usize, SeqRequest<'_>)> =
            prepared.iter().enumerate().filter_map(|(i, p)| p.ready().map(|t| (i, t.request()))).collect();
        let reqs: Vec<SeqRequest<'_>> = ready.iter().map(|(_, r)| *r).collect();
        let mut toks = self.score_requests(&reqs)?.into_iter();
        let mut out = Vec::with_capacity(prepared.len());
        for p in &prepared {
            out.push(match p {
                Prepared::Skipped(r) => ChatScore::Skipped { reason: r.to_string(), truncated: r.truncated() },
                Prepared::Ready(tr) => {
                    // The scored turns' positions of the covering range.
                    let tokens = tr.keep_scored(toks.next().expect("one result per ready chat"));
                    ChatScore::Scored {
                        stats: TrajectoryStats::from_tokens(&tokens, self.settings.rank_clip),
                        tokens,
                        truncated: tr.truncated,
                        n_turns: tr.n_turns(),
                    }
                }
            });
        }
        Ok(out)
    }

    /// Score a pool in memory as `lark score` scores a pool file (the same batches, sums, per-problem scores
    /// and baselines: `scorers`, `local_m` and `seed` as its options), on this student's backend.
    /// `interrupt` stops it early ([`LarkError::Interrupted`]).
    pub fn score_pool(
        &self,
        pool: &Pool,
        scorers: &str,
        local_m: usize,
        seed: u64,
        interrupt: Option<Interrupt>,
        progress: impl FnMut(&Progress),
    ) -> Result<JobOutput> {
        let settings = ScoreSettings {
            span: self.settings.span,
            turns: self.settings.turns,
            max_len: self.settings.max_len,
            brier: self.settings.brier,
            rank_clip: self.settings.rank_clip,
            scorers: parse_scorers(scorers)?,
            local_m,
            seed,
        };
        if settings.scorers.iter().any(|s| s.needs_judge_file()) {
            return Err(LarkError::input("scorers", "llm_judge needs a judge-scores file: use a scoring job"));
        }
        let mut backend = self.lock_backend()?;
        let ctl = JobControl { max_seqs: Some(self.max_seqs), interrupt, ..Default::default() };
        score_pool_with(pool, &self.text, &mut **backend, &settings, None, ctl, progress)
    }
}
