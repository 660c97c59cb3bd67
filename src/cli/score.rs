//! `lark score`: a pool in, every trajectory scored, `scores.jsonl` + `scores.json` + `run.json` out.

use crate::backend::cuda::Precision;
use crate::backend::{open_backends, open_cpu_backends, Backend, DeviceChoice};
use crate::error::{LarkError, Result};
use crate::export::{write_atomic, write_rejects_jsonl, write_scores_json, write_scores_jsonl};
use crate::io::{read_pool, Pool, PoolFormat, PoolSource, ReadOptions};
use crate::model::Model;
use crate::run::resume::write_candidates;
use crate::run::{
    parse_brier, score_pool_on, Interrupt, JobControl, JobOutput, Journal, Progress, ScoreSettings, Shard,
};
use crate::score::{parse_scorers, BrierMode, JudgeScores, Scorer};
use crate::text::{SpanMode, TextPipeline, Turns};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone)]
pub struct ScoreArgs {
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
    /// the CPU reference, about 9× slower). The CPU backend is always f32.
    #[arg(long, default_value = "bf16")]
    pub precision: Precision,
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

/// What a finished scoring run leaves for `select`/`run`. Its files are written except `run.json`, which
/// [`finish`] writes last (it marks the run complete) before removing the journal.
pub struct ScoreRun {
    pub pool: Pool,
    pub output: JobOutput,
    pub device: String,
    pub brier: BrierMode,
    info: serde_json::Value,
    journal: Journal,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| LarkError::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// A cheap fingerprint of a model directory: config.json's hash and each weight file's name, size and header.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(sha256_file(&dir.join("config.json"))?.as_bytes());
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LarkError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    for p in names {
        let meta = std::fs::metadata(&p).map_err(|e| LarkError::io(&p, e))?;
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(meta.len().to_le_bytes());
        let mut head = vec![0u8; 1 << 16];
        let n = std::io::Read::read(&mut std::fs::File::open(&p).map_err(|e| LarkError::io(&p, e))?, &mut head)
            .map_err(|e| LarkError::io(&p, e))?;
        h.update(&head[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The content fingerprint of a pool: that of its one path (as before several paths were possible), or for
/// several paths a hash over each path's fingerprint in order (the order is part of the pool: it numbers
/// id-less rows). Paths themselves do not count: a moved pool resumes.
pub fn pool_fingerprint(source: &PoolSource) -> Result<String> {
    match source.paths() {
        [one] => path_fingerprint(one),
        many => {
            let mut h = Sha256::new();
            for (i, p) in many.iter().enumerate() {
                h.update(format!("{i}:{}\n", path_fingerprint(p)?).as_bytes());
            }
            Ok(format!("{:x}", h.finalize()))
        }
    }
}

fn path_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return sha256_file(path);
    }
    // Symlinked directories are not followed (a link to `..` would loop forever); the pool reader reads only
    // <root>/<teacher>/<file>, which this walk covers.
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| LarkError::io(&d, e))? {
            let e = e.map_err(|e| LarkError::io(&d, e))?;
            let p = e.path();
            let link = e.file_type().map_err(|err| LarkError::io(&p, err))?.is_symlink();
            match (p.is_dir(), link) {
                (true, false) if d == path => stack.push(p),
                (true, _) => {}
                (false, _) => files.push(p),
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(path).unwrap_or(&f).as_os_str().as_encoded_bytes());
        h.update(sha256_file(&f)?.as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Run the scoring half and write its files but `run.json` (see [`finish`]).
pub fn score(a: &ScoreArgs) -> Result<ScoreRun> {
    if let Some(n) = a.threads {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let brier = parse_brier(&a.brier)?;
    let scorers = parse_scorers(&a.scorers)?;
    if scorers.contains(&Scorer::LlmJudge) && a.judge_scores.is_none() {
        return Err(LarkError::input("--scorers", "llm_judge needs --judge-scores FILE"));
    }
    let mut scorers = scorers;
    if a.judge_scores.is_some() && !scorers.contains(&Scorer::LlmJudge) {
        scorers.push(Scorer::LlmJudge);
    }
    let judge = a.judge_scores.as_deref().map(JudgeScores::load).transpose()?;
    let source = PoolSource::new(a.pool.clone())?;
    let pool = read_pool(&source, &ReadOptions { format: a.format, skip_invalid: a.skip_invalid })?;
    let model = Model::open(&a.model)?;
    let context = model.config.context_length();
    if a.max_len > context {
        // Not an error: positions past the trained context still compute, but the scores are extrapolation.
        eprintln!(
            "note: --max-len {} is beyond the model's context of {context} tokens (max_position_embeddings, or the \
             rope scaling's factor × original context); longer trajectories are scored past what the model was \
             trained for",
            a.max_len
        );
    }
    let text = TextPipeline::open(&a.model)?;
    let tok_vocab = text.tokenizer().vocab_size();
    if tok_vocab > model.config.vocab_size {
        return Err(LarkError::input(
            a.model.join("tokenizer.json").display().to_string(),
            format!(
                "tokenizer ids go up to {} but the model's vocabulary has {} entries",
                tok_vocab.saturating_sub(1),
                model.config.vocab_size
            ),
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| LarkError::io(&a.out, e))?;
    // A stale run.json from an earlier run must not make this (unfinished) run look complete.
    let run_json = a.out.join("run.json");
    if run_json.exists() {
        std::fs::remove_file(&run_json).map_err(|e| LarkError::io(&run_json, e))?;
    }
    let (mut backends, device) = match (a.cpu_workers, &a.device) {
        (None, d) => open_backends(&model, d, a.precision)?,
        (Some(n), DeviceChoice::Cpu) if n >= 1 => open_cpu_backends(&model, n)?,
        (Some(_), _) => return Err(LarkError::input("--cpu-workers", "needs --device cpu and N ≥ 1")),
    };
    match a.shard {
        Some(sh) => eprintln!(
            "lark: scoring shard {sh} of {} trajectories of {} problems on {device}",
            pool.records.len(),
            pool.n_problems()
        ),
        None => {
            eprintln!("lark: scoring {} trajectories of {} problems on {device}", pool.records.len(), pool.n_problems())
        }
    }
    let settings = ScoreSettings {
        span: a.span,
        turns: a.turns,
        max_len: a.max_len,
        brier,
        rank_clip: a.rank_clip,
        scorers: scorers.clone(),
        local_m: a.local_m,
        seed: a.seed,
    };
    // One sequence per batch on the CPU, so that no trajectory's numbers depend on its companions (see
    // `JobControl::max_seqs`).
    let max_seqs = a.max_seqs.or(device.starts_with("cpu").then_some(1));
    let ctl = JobControl {
        shard: a.shard,
        batch_tokens: a.batch_tokens,
        max_seqs,
        interrupt: Some(Interrupt::on_signals()?),
        ..Default::default()
    };
    let batch_tokens = ctl.batch_budget(backends.iter().map(|b| b.as_ref()));
    let chunk = ctl.chunk_bound(&backends.iter().map(|b| b.as_ref()).collect::<Vec<_>>());
    let fingerprints = serde_json::json!({
        "model_fingerprint": model_fingerprint(&a.model)?,
        "tokenizer_fingerprint": text.fingerprint(),
        "pool_fingerprint": pool_fingerprint(&source)?,
    });
    // Everything that changes the numbers or which records are scored: a resume must match it exactly.
    let manifest = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "fingerprints": fingerprints,
        "pool_format": pool.format.name(), "pool_records": pool.records.len(), "skip_invalid": a.skip_invalid,
        "settings": settings,
        "judge_scores_sha256": a.judge_scores.as_deref().map(sha256_file).transpose()?,
        "shard": a.shard, "batch_tokens": batch_tokens, "max_seqs": max_seqs,
        "chunk_tokens": chunk.tokens, "chunk_flops": chunk.work.map(|(_, f)| f),
    });
    let mut journal = Journal::open(&a.out, &manifest, a.resume)?;
    if journal.resumed_chunks() > 0 {
        eprintln!("lark: resuming: {} finished chunks in {}", journal.resumed_chunks(), Journal::dir(&a.out).display());
    }
    let ctl = JobControl { journal: Some(&mut journal), ..ctl };
    let mut reporter = Reporter::new();
    let mut workers: Vec<&mut dyn Backend> = backends.iter_mut().map(|b| b.as_mut() as &mut dyn Backend).collect();
    let output =
        score_pool_on(&pool, &text, &mut workers, &settings, judge.as_ref(), ctl, |p: &Progress| reporter.update(p));
    reporter.done();
    let output = output.map_err(|e| match e {
        LarkError::Interrupted { signal, .. } => LarkError::Interrupted { signal, journal: Some(Journal::dir(&a.out)) },
        e => e,
    })?;
    drop(workers);
    drop(backends);

    write_scores_jsonl(&a.out.join("scores.jsonl"), &output.rows)?;
    let top_k = match brier {
        BrierMode::TopK(k) => Some(k),
        BrierMode::Exact => None,
    };
    write_scores_json(&a.out.join("scores.json"), &output.rows, &a.model.display().to_string(), top_k)?;
    if !pool.rejects.is_empty() {
        write_rejects_jsonl(&a.out.join("rejects.jsonl"), &pool.rejects)?;
    }
    if a.shard.is_some() {
        // What `lark merge` recomputes the per-problem scores from.
        write_candidates(&a.out.join("candidates.jsonl"), &output.candidates)?;
    }
    let n_skipped = output.rows.iter().filter(|r| r.skipped.is_some()).count();
    // A shard's counts are its own (the problems it owns); `rejected` counts the pool's invalid records, which
    // every shard reads and lists (an invalid record may have no problem id to shard by).
    let n_problems = pool.groups.iter().filter(|(pid, _, _)| a.shard.is_none_or(|s| s.owns(*pid))).count();
    let rate = |tokens: usize| tokens as f64 / output.seconds.max(1e-9);
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": a.model, "model_fingerprint": fingerprints["model_fingerprint"],
        "tokenizer_fingerprint": fingerprints["tokenizer_fingerprint"],
        "pool": source.to_json(), "pool_format": pool.format.name(), "pool_fingerprint": fingerprints["pool_fingerprint"],
        "pool_records": pool.records.len(), "shard": a.shard, "batch_tokens": batch_tokens,
        "device": device, "settings": settings,
        "judge_scores": a.judge_scores,
        "chunk_tokens": chunk.tokens, "chunk_flops": chunk.work.map(|(_, f)| f),
        "counts": {"problems": n_problems, "trajectories": output.rows.len(),
                   "scored": output.rows.len() - n_skipped, "skipped": n_skipped, "rejected": pool.rejects.len()},
        "tokens_forward": output.tokens_forward, "tokens_scored": output.tokens_scored,
        // This process's work and rate; what an earlier attempt journaled is counted apart (it took no time here).
        "wall_s": output.seconds, "tokens_per_s": rate(output.tokens_computed()),
        "resume": {"chunks": output.chunks, "chunks_resumed": output.chunks_resumed,
                   "tokens_resumed": output.tokens_resumed, "tokens_computed": output.tokens_computed()},
    });
    Ok(ScoreRun { pool, output, device, brier, info, journal })
}

impl ScoreRun {
    /// What `run.json` will say.
    pub fn info(&self) -> &serde_json::Value {
        &self.info
    }
}

/// Write `run.json` (last: it marks the run complete), then remove the journal.
pub fn finish(out: &Path, r: ScoreRun) -> Result<(Pool, JobOutput, String)> {
    write_run_json(out, &r.info)?;
    r.journal.finish()?;
    Ok((r.pool, r.output, r.device))
}

pub fn write_run_json(out: &Path, info: &serde_json::Value) -> Result<()> {
    write_atomic(out.join("run.json"), |w| {
        let text = serde_json::to_string_pretty(info).expect("serialisable");
        w.write_all(text.as_bytes()).map_err(|e| w.err(e))
    })
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let r = score(&a)?;
    let (_, output, _) = finish(&a.out, r)?;
    eprintln!(
        "lark: wrote {} ({} rows, {:.0} tokens/s{})",
        a.out.join("scores.jsonl").display(),
        output.rows.len(),
        output.tokens_computed() as f64 / output.seconds.max(1e-9),
        resumed_note(&output)
    );
    Ok(())
}

/// ", N of M chunks resumed from the journal" when some were.
pub fn resumed_note(o: &JobOutput) -> String {
    if o.chunks_resumed == 0 {
        return String::new();
    }
    format!(", {} of {} chunks ({} tokens) resumed from the journal", o.chunks_resumed, o.chunks, o.tokens_resumed)
}

/// Progress on stderr: a redrawn bar (problems done, tokens/s, ETA) when stderr is a terminal, a plain log
/// line every few seconds otherwise (logs, CI, cluster jobs).
struct Reporter {
    tty: bool,
    last: Option<std::time::Instant>,
    drawn: bool,
}

impl Reporter {
    fn new() -> Reporter {
        use std::io::IsTerminal;
        Reporter { tty: std::io::stderr().is_terminal(), last: None, drawn: false }
    }

    fn update(&mut self, p: &Progress) {
        let finished = p.trajectories_done == p.trajectories_total && p.problems_done == p.problems_total;
        let every = if self.tty { 0.1 } else { 2.0 };
        if !finished && self.last.is_some_and(|t| t.elapsed().as_secs_f64() < every) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let rate = p.tokens_this_run as f64 / p.elapsed_s.max(1e-9);
        let left = p.tokens_total.saturating_sub(p.tokens_done) as f64;
        // Totals are estimates while the pool is still being tokenised: say so.
        let about = if p.totals_exact { "" } else { "~" };
        let eta = if rate > 0.0 { format!("{about}{}", fmt_secs(left / rate)) } else { "?".into() };
        if self.tty {
            const W: usize = 30;
            let frac = if p.tokens_total > 0 { p.tokens_done as f64 / p.tokens_total as f64 } else { 1.0 };
            let fill = ((frac * W as f64) as usize).min(W);
            eprint!(
                "\r\x1b[2K[{}{}] {}/{} problems  {}/{about}{} trajectories  {:.0} tokens/s  ETA {eta}",
                "#".repeat(fill),
                "-".repeat(W - fill),
                p.problems_done,
                p.problems_total,
                p.trajectories_done,
                p.trajectories_total,
                rate
            );
            self.drawn = true;
        } else {
            eprintln!(
                "lark: {}/{} problems, {}/{about}{} trajectories, {:.0} tokens/s, ETA {eta}",
                p.problems_done, p.problems_total, p.trajectories_done, p.trajectories_total, rate
            );
        }
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}
