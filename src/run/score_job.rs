//! One scoring job over a pool, as `lark score` runs it: open the model and text pipeline, read the pool,
//! fingerprint the inputs, journal finished chunks (and resume them), score, write `scores.jsonl`,
//! `scores.json`, `rejects.jsonl`, `candidates.jsonl` (shards), and last `run.json`. The CLI, the C ABI
//! (`lark_score_pool`) and the Python package all run a [`ScoreJob`]; each only builds it from its own
//! arguments ([`ScoreJob::from_json`] for the latter two) and chooses its [`JobHooks`] and [`Interrupt`].

use super::fingerprint::{model_fingerprint, pool_fingerprint, sha256_file};
use super::hooks::JobHooks;
use super::interrupt::Interrupt;
use super::job::{parse_brier, score_pool_on, JobControl, JobOutput, ScoreSettings};
use super::resume::{write_candidates, Journal};
use super::shard::Shard;
use crate::backend::cuda::Precision;
use crate::backend::{open_backends, open_cpu_backends, Backend, DeviceChoice};
use crate::error::{LarkError, Result};
use crate::export::{write_atomic, write_rejects_jsonl, write_scores_json, write_scores_jsonl};
use crate::io::{read_pool, Pool, PoolFormat, PoolSource, ReadOptions};
use crate::model::Model;
use crate::score::{parse_scorers, BrierMode, JudgeScores, Scorer};
use crate::text::{SpanMode, TextPipeline, Turns};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Everything a scoring job needs. These are `lark score`'s options (its `--help` is these comments), so a
/// job from JSON or Python takes the same names and defaults ([`ScoreJob::from_json`]).
#[derive(clap::Args, Clone, Debug)]
pub struct ScoreJob {
    /// Student model directory (config.json, safetensors, tokenizer.json, chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// Candidate pool: a LARK or ShareGPT JSONL file, a Parquet file or directory of shards, or an RSR_data
    /// directory; or several paths of one format (`--pool a.parquet b.parquet`), read in order as one pool.
    #[arg(long, num_args = 1.., required = true)]
    pub pool: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub format: PoolFormat,
    /// auto (CUDA when usable, else CPU), cpu, cuda, cuda:N, or cuda:N,M,... (one worker per GPU, one shared
    /// queue of batches; the same results as one GPU).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// GPU activations: bf16 (default, fast) or fp32 (reference grade: every token's log p within ~3e-4 nats of
    /// the CPU reference, about 9× slower). CPU: fp32 (default, the reference) or bf16 (opt-in: linear layers in
    /// bf16 with AMX where available; see README for its error).
    #[arg(long)]
    pub precision: Option<Precision>,
    /// turn: the whole assistant turn (LARK authors); content: the assistant content only (RSR authors).
    #[arg(long, default_value = "turn")]
    pub span: SpanMode,
    /// all: every assistant turn of a conversation, each with the whole conversation before it as context;
    /// last: only the final assistant turn.
    #[arg(long, default_value = "all")]
    pub turns: Turns,
    /// Truncate token sequences from the right at this length (flagged per trajectory).
    #[arg(long, default_value_t = 32768)]
    pub max_len: usize,
    /// exact: Σπ² over the full vocabulary; topk:K: the LARK authors' top-K renormalised Brier.
    #[arg(long, default_value = "exact")]
    pub brier: String,
    /// Rank clip r_max of RSR.
    #[arg(long, default_value_t = 100)]
    pub rank_clip: u32,
    /// default, all, or a comma-separated list of scorer names (see README).
    #[arg(long, default_value = "default")]
    pub scorers: String,
    /// Local Naturalness context size m (previous steps).
    #[arg(long, default_value_t = 4)]
    pub local_m: usize,
    /// Imported LLM-judge scores (JSON), enables `llm_judge`.
    #[arg(long)]
    pub judge_scores: Option<PathBuf>,
    /// Seed of the Random baseline.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// List invalid pool records in OUT/rejects.jsonl instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the unfinished run in OUT (its OUT/partial/ journal) instead of starting over; refused when
    /// the model, pool or settings differ.
    #[arg(long)]
    pub resume: bool,
    /// Score only shard I of N (problems partitioned by a hash of problem_id; see README); `lark merge`
    /// combines the shards' output directories.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Tokens per batch instead of the backend's budget (testing: small batches make many of them).
    #[arg(long, hide = true)]
    pub batch_tokens: Option<usize>,
    /// Sequences per batch instead of the device's default (testing; 1 on the CPU, see `JobControl::max_seqs`).
    #[arg(long, hide = true)]
    pub max_seqs: Option<usize>,
    /// With `--device cpu`: N CPU backends, one worker each, as `--device cuda:0,1,...` runs one per GPU
    /// (testing the multi-device scheduler without GPUs: the output must not change).
    #[arg(long, hide = true)]
    pub cpu_workers: Option<usize>,
}

/// A scored job whose files are written except `run.json`, which [`ScoreRun::finish`] writes last (it marks
/// the run complete) before removing the journal. `lark run` writes its selection and report in between.
pub struct ScoreRun {
    pub pool: Pool,
    pub output: JobOutput,
    pub device: String,
    pub brier: BrierMode,
    out: PathBuf,
    info: serde_json::Value,
    journal: Journal,
}

/// A finished job: what it scored and what `run.json` says.
pub struct FinishedRun {
    pub pool: Pool,
    pub output: JobOutput,
    pub device: String,
    pub info: serde_json::Value,
}

#[derive(clap::Parser)]
#[command(name = "job", no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct FromOptions {
    #[command(flatten)]
    job: ScoreJob,
}

impl ScoreJob {
    /// A job from a JSON object of `lark score`'s options, named as its long flags with `_` or `-`
    /// (`{"model": "m", "pool": ["a.jsonl"], "out": "o", "device": "cpu", "max_len": 4096, "resume": true}`):
    /// the CLI's names, defaults, checks and messages. `pool` may be one string or an array; `false` and
    /// `null` leave an option at its default.
    pub fn from_json(options: &serde_json::Value) -> Result<ScoreJob> {
        let obj = options
            .as_object()
            .ok_or_else(|| LarkError::input("job", "expected a JSON object of `lark score` options"))?;
        let mut argv: Vec<String> = Vec::new();
        for (key, value) in obj {
            let flag = format!("--{}", key.replace('_', "-"));
            let scalar = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(LarkError::input(
                    format!("job: {key}"),
                    format!("expected a string or number, got {}", crate::io::validate::type_name(other)),
                )),
            };
            match value {
                serde_json::Value::Null | serde_json::Value::Bool(false) => {}
                serde_json::Value::Bool(true) => argv.push(flag),
                serde_json::Value::Array(items) => {
                    for item in items {
                        argv.push(format!("{flag}={}", scalar(item)?));
                    }
                }
                v => argv.push(format!("{flag}={}", scalar(v)?)),
            }
        }
        use clap::Parser;
        FromOptions::try_parse_from(argv).map(|o| o.job).map_err(|e| {
            // clap's message on one line, without its usage, tips and help pointer: "invalid value 'x' for
            // '--max-len <MAX_LEN>': ...", "the following required arguments were not provided: --pool <POOL>...".
            let text = e.render().to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            LarkError::input("job", lines.join(" ").trim_start_matches("error: ").to_string())
        })
    }

    /// Score the pool and write every file but `run.json` (see [`ScoreRun::finish`]). `interrupt` stops the
    /// job cleanly (finished chunks journaled, nothing final written, [`LarkError::Interrupted`] returned).
    pub fn score(&self, hooks: &mut dyn JobHooks, interrupt: Option<Interrupt>) -> Result<ScoreRun> {
        if let Some(n) = self.threads {
            let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        }
        let brier = parse_brier(&self.brier)?;
        let mut scorers = parse_scorers(&self.scorers)?;
        if scorers.contains(&Scorer::LlmJudge) && self.judge_scores.is_none() {
            return Err(LarkError::input("--scorers", "llm_judge needs --judge-scores FILE"));
        }
        if self.judge_scores.is_some() && !scorers.contains(&Scorer::LlmJudge) {
            scorers.push(Scorer::LlmJudge);
        }
        let judge = self.judge_scores.as_deref().map(JudgeScores::load).transpose()?;
        let source = PoolSource::new(self.pool.clone())?;
        let pool = read_pool(&source, &ReadOptions { format: self.format, skip_invalid: self.skip_invalid })?;
        let model = Model::open(&self.model)?;
        let context = model.config.context_length();
        if self.max_len > context {
            // Not an error: positions past the trained context still compute, but the scores are extrapolation.
            hooks.note(&format!(
                "note: --max-len {} is beyond the model's context of {context} tokens (max_position_embeddings, or \
                 the rope scaling's factor × original context); longer trajectories are scored past what the model \
                 was trained for",
                self.max_len
            ));
        }
        let text = TextPipeline::open(&self.model)?;
        let tok_vocab = text.tokenizer().vocab_size();
        if tok_vocab > model.config.vocab_size {
            return Err(LarkError::input(
                self.model.join("tokenizer.json").display().to_string(),
                format!(
                    "tokenizer ids go up to {} but the model's vocabulary has {} entries",
                    tok_vocab.saturating_sub(1),
                    model.config.vocab_size
                ),
            ));
        }
        let out = &self.out;
        std::fs::create_dir_all(out).map_err(|e| LarkError::io(out, e))?;
        // A stale run.json from an earlier run must not make this (unfinished) run look complete.
        let run_json = out.join("run.json");
        if run_json.exists() {
            std::fs::remove_file(&run_json).map_err(|e| LarkError::io(&run_json, e))?;
        }
        let (mut backends, device) = match (self.cpu_workers, &self.device) {
            (None, d) => open_backends(&model, d, self.precision)?,
            (Some(n), DeviceChoice::Cpu) if n >= 1 => open_cpu_backends(&model, n, self.precision)?,
            (Some(_), _) => return Err(LarkError::input("--cpu-workers", "needs --device cpu and N ≥ 1")),
        };
        let what = format!("{} trajectories of {} problems on {device}", pool.records.len(), pool.n_problems());
        match self.shard {
            Some(sh) => hooks.note(&format!("lark: scoring shard {sh} of {what}")),
            None => hooks.note(&format!("lark: scoring {what}")),
        }
        let settings = ScoreSettings {
            span: self.span,
            turns: self.turns,
            max_len: self.max_len,
            brier,
            rank_clip: self.rank_clip,
            scorers: scorers.clone(),
            local_m: self.local_m,
            seed: self.seed,
        };
        // One sequence per batch on the CPU, so that no trajectory's numbers depend on its companions (see
        // `JobControl::max_seqs`).
        let max_seqs = self.max_seqs.or(device.starts_with("cpu").then_some(1));
        let ctl = JobControl {
            shard: self.shard,
            batch_tokens: self.batch_tokens,
            max_seqs,
            interrupt,
            ..Default::default()
        };
        let batch_tokens = ctl.batch_budget(backends.iter().map(|b| b.as_ref()));
        // The precision the opened device runs at (each kind has its own default): it changes the numbers.
        let (gpu_precision, cpu_precision) = crate::backend::device_precisions(self.precision);
        let precision = if device.starts_with("cpu") { cpu_precision } else { gpu_precision };
        let chunk = ctl.chunk_bound(&backends.iter().map(|b| b.as_ref()).collect::<Vec<_>>());
        let fingerprints = serde_json::json!({
            "model_fingerprint": model_fingerprint(&self.model)?,
            "tokenizer_fingerprint": text.fingerprint(),
            "pool_fingerprint": pool_fingerprint(&source)?,
        });
        // Everything that changes the numbers or which records are scored: a resume must match it exactly.
        let manifest = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "fingerprints": fingerprints,
            "pool_format": pool.format.name(), "pool_records": pool.records.len(), "skip_invalid": self.skip_invalid,
            "settings": settings, "precision": precision.name(),
            "judge_scores_sha256": self.judge_scores.as_deref().map(sha256_file).transpose()?,
            "shard": self.shard, "batch_tokens": batch_tokens, "max_seqs": max_seqs,
            "chunk_tokens": chunk.tokens, "chunk_flops": chunk.work.map(|(_, f)| f),
        });
        let mut journal = Journal::open(out, &manifest, self.resume)?;
        if journal.resumed_chunks() > 0 {
            hooks.note(&format!(
                "lark: resuming: {} finished chunks in {}",
                journal.resumed_chunks(),
                Journal::dir(out).display()
            ));
        }
        let ctl = JobControl { journal: Some(&mut journal), ..ctl };
        let mut workers: Vec<&mut dyn Backend> = backends.iter_mut().map(|b| b.as_mut() as &mut dyn Backend).collect();
        let output = score_pool_on(&pool, &text, &mut workers, &settings, judge.as_ref(), ctl, |p| hooks.progress(p));
        hooks.done();
        let output = output.map_err(|e| match e {
            LarkError::Interrupted { signal, .. } => {
                LarkError::Interrupted { signal, journal: Some(Journal::dir(out)) }
            }
            e => e,
        })?;
        drop(workers);
        drop(backends);

        write_scores_jsonl(&out.join("scores.jsonl"), &output.rows)?;
        let top_k = match brier {
            BrierMode::TopK(k) => Some(k),
            BrierMode::Exact => None,
        };
        write_scores_json(&out.join("scores.json"), &output.rows, &self.model.display().to_string(), top_k)?;
        if !pool.rejects.is_empty() {
            write_rejects_jsonl(&out.join("rejects.jsonl"), &pool.rejects)?;
        }
        if self.shard.is_some() {
            // What `lark merge` recomputes the per-problem scores from.
            write_candidates(&out.join("candidates.jsonl"), &output.candidates)?;
        }
        let n_skipped = output.rows.iter().filter(|r| r.skipped.is_some()).count();
        // A shard's counts are its own (the problems it owns); `rejected` counts the pool's invalid records, which
        // every shard reads and lists (an invalid record may have no problem id to shard by).
        let n_problems = pool.groups.iter().filter(|(pid, _, _)| self.shard.is_none_or(|s| s.owns(*pid))).count();
        let rate = |tokens: usize| tokens as f64 / output.seconds.max(1e-9);
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "model": self.model, "model_fingerprint": fingerprints["model_fingerprint"],
            "tokenizer_fingerprint": fingerprints["tokenizer_fingerprint"],
            "pool": source.to_json(), "pool_format": pool.format.name(), "pool_fingerprint": fingerprints["pool_fingerprint"],
            "pool_records": pool.records.len(), "shard": self.shard, "batch_tokens": batch_tokens,
            "device": device, "settings": settings,
            "judge_scores": self.judge_scores,
            "chunk_tokens": chunk.tokens, "chunk_flops": chunk.work.map(|(_, f)| f),
            "counts": {"problems": n_problems, "trajectories": output.rows.len(),
                       "scored": output.rows.len() - n_skipped, "skipped": n_skipped, "rejected": pool.rejects.len()},
            "tokens_forward": output.tokens_forward, "tokens_scored": output.tokens_scored,
            // This process's work and rate; what an earlier attempt journaled is counted apart (it took no time here).
            "wall_s": output.seconds, "tokens_per_s": rate(output.tokens_computed()),
            "resume": {"chunks": output.chunks, "chunks_resumed": output.chunks_resumed,
                       "tokens_resumed": output.tokens_resumed, "tokens_computed": output.tokens_computed()},
        });
        Ok(ScoreRun { pool, output, device, brier, out: out.clone(), info, journal })
    }

    /// [`ScoreJob::score`], then [`ScoreRun::finish`]: the whole of `lark score`.
    pub fn run(&self, hooks: &mut dyn JobHooks, interrupt: Option<Interrupt>) -> Result<FinishedRun> {
        self.score(hooks, interrupt)?.finish()
    }
}

impl ScoreRun {
    /// What `run.json` will say.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }

    /// Write `run.json` (last: it marks the run complete), then remove the journal.
    pub fn finish(self) -> Result<FinishedRun> {
        write_run_json(&self.out, &self.info)?;
        self.journal.finish()?;
        Ok(FinishedRun { pool: self.pool, output: self.output, device: self.device, info: self.info })
    }
}

pub fn write_run_json(out: &Path, info: &serde_json::Value) -> Result<()> {
    write_atomic(out.join("run.json"), |w| {
        let text = serde_json::to_string_pretty(info).expect("serialisable");
        w.write_all(text.as_bytes()).map_err(|e| w.err(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_options_are_the_cli_options() {
        use clap::Parser;
        let cli = FromOptions::try_parse_from(["--model", "m", "--pool", "a", "b", "--out", "o"]).unwrap().job;
        let json = ScoreJob::from_json(&serde_json::json!({"model": "m", "pool": ["a", "b"], "out": "o"})).unwrap();
        assert_eq!(format!("{cli:?}"), format!("{json:?}"), "the same defaults");
        let j = ScoreJob::from_json(&serde_json::json!({
            "model": "m", "pool": "-odd.jsonl", "out": "o", "device": "cpu", "max_len": 4096,
            "skip-invalid": true, "resume": false, "shard": "1/4", "threads": null
        }))
        .unwrap();
        assert_eq!(j.pool, vec![PathBuf::from("-odd.jsonl")]);
        assert_eq!((j.device, j.max_len, j.skip_invalid, j.resume), (DeviceChoice::Cpu, 4096, true, false));
        assert_eq!(j.shard.map(|s| s.to_string()), Some("1/4".into()));
        assert!(j.threads.is_none());
        let err = |v: serde_json::Value| ScoreJob::from_json(&v).unwrap_err().to_string();
        assert!(err(serde_json::json!({"model": "m", "out": "o"})).contains("--pool"), "required");
        let e = err(serde_json::json!({"model": "m", "pool": "p", "out": "o", "max_len": "x"}));
        assert!(e.starts_with("job: invalid value 'x' for '--max-len"), "{e}");
        let e = err(serde_json::json!({"model": "m", "pool": "p", "out": "o", "colour": 1}));
        assert!(e.contains("--colour"), "{e}");
        let e = err(serde_json::json!({"model": "m", "pool": "p", "out": "o", "device": {"x": 1}}));
        assert_eq!(e, "job: device: expected a string or number, got an object");
        assert_eq!(err(serde_json::json!([1])), "job: expected a JSON object of `lark score` options");
    }
}
