//! `lark score`: a pool in, every trajectory scored, `scores.jsonl` + `scores.json` + `run.json` out.

use crate::backend::{open_backend, DeviceChoice};
use crate::error::{LarkError, Result};
use crate::export::{write_atomic, write_rejects_jsonl, write_scores_json, write_scores_jsonl};
use crate::io::{read_pool, Pool, PoolFormat, ReadOptions};
use crate::model::Model;
use crate::run::{parse_brier, score_pool, JobOutput, Progress, ScoreSettings};
use crate::score::{parse_scorers, BrierMode, JudgeScores, Scorer};
use crate::text::{SpanMode, TextPipeline};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone)]
pub struct ScoreArgs {
    /// Student model directory (config.json, safetensors, tokenizer.json, chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// Candidate pool: a LARK JSONL file or an RSR_data directory.
    #[arg(long)]
    pub pool: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub format: PoolFormat,
    /// auto (CUDA when usable, else CPU), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// turn: the whole assistant turn (LARK authors); content: the assistant content only (RSR authors).
    #[arg(long, default_value = "turn")]
    pub span: SpanMode,
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
}

/// What a finished scoring run leaves for `select`/`run`.
pub struct ScoreRun {
    pub pool: Pool,
    pub output: JobOutput,
    pub device: String,
    pub brier: BrierMode,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| LarkError::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// A cheap fingerprint of a model directory: config.json's hash and each weight file's name, size and header.
fn model_fingerprint(dir: &Path) -> Result<String> {
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

fn pool_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return sha256_file(path);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| LarkError::io(&d, e))? {
            let p = e.map_err(|e| LarkError::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
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

/// Run the scoring half and write its files. `run.json` is written last: its presence marks a complete run.
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
    let pool = read_pool(&a.pool, &ReadOptions { format: a.format, skip_invalid: a.skip_invalid })?;
    let model = Model::open(&a.model)?;
    let text = TextPipeline::open(&a.model)?;
    let tok_vocab = text.tokenizer().vocab_size();
    if tok_vocab > model.config.vocab_size {
        return Err(LarkError::input(
            a.model.join("tokenizer.json").display().to_string(),
            format!("tokenizer has {tok_vocab} tokens but the model's vocabulary is {}", model.config.vocab_size),
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| LarkError::io(&a.out, e))?;
    // A stale run.json from an earlier run must not make this (unfinished) run look complete.
    let run_json = a.out.join("run.json");
    if run_json.exists() {
        std::fs::remove_file(&run_json).map_err(|e| LarkError::io(&run_json, e))?;
    }
    let (mut backend, device) = open_backend(&model, &a.device)?;
    eprintln!("lark: scoring {} trajectories of {} problems on {device}", pool.records.len(), pool.n_problems());
    let settings = ScoreSettings {
        span: a.span,
        max_len: a.max_len,
        brier,
        rank_clip: a.rank_clip,
        scorers: scorers.clone(),
        local_m: a.local_m,
        seed: a.seed,
    };
    let mut last_report = std::time::Instant::now();
    let output = score_pool(&pool, &text, backend.as_mut(), &settings, judge.as_ref(), |p: &Progress| {
        if last_report.elapsed().as_secs_f64() >= 2.0 || p.trajectories_done == p.trajectories_total {
            last_report = std::time::Instant::now();
            let rate = p.tokens_done as f64 / p.elapsed_s.max(1e-9);
            let eta = (p.tokens_total - p.tokens_done) as f64 / rate.max(1e-9);
            eprintln!(
                "lark: {}/{} trajectories, {:.0} tokens/s, ETA {:.0} s",
                p.trajectories_done, p.trajectories_total, rate, eta
            );
        }
    })?;
    drop(backend);

    write_scores_jsonl(&a.out.join("scores.jsonl"), &output.rows)?;
    let top_k = match brier {
        BrierMode::TopK(k) => Some(k),
        BrierMode::Exact => None,
    };
    write_scores_json(&a.out.join("scores.json"), &output.rows, &a.model.display().to_string(), top_k)?;
    if !pool.rejects.is_empty() {
        write_rejects_jsonl(&a.out.join("rejects.jsonl"), &pool.rejects)?;
    }
    let n_skipped = output.rows.iter().filter(|r| r.skipped.is_some()).count();
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": a.model, "model_fingerprint": model_fingerprint(&a.model)?,
        "tokenizer_fingerprint": text.fingerprint(),
        "pool": a.pool, "pool_format": pool.format.name(), "pool_fingerprint": pool_fingerprint(&a.pool)?,
        "device": device, "settings": settings,
        "judge_scores": a.judge_scores,
        "counts": {"problems": pool.n_problems(), "trajectories": output.rows.len(),
                   "scored": output.rows.len() - n_skipped, "skipped": n_skipped, "rejected": pool.rejects.len()},
        "tokens_forward": output.tokens_forward, "tokens_scored": output.tokens_scored,
        "wall_s": output.seconds, "tokens_per_s": output.tokens_forward as f64 / output.seconds.max(1e-9),
    });
    write_atomic(&run_json, |w| {
        let text = serde_json::to_string_pretty(&info).expect("serialisable");
        w.write_all(text.as_bytes()).map_err(|e| w.err(e))
    })?;
    Ok(ScoreRun { pool, output, device, brier })
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let r = score(&a)?;
    eprintln!(
        "lark: wrote {} ({} rows, {:.0} tokens/s)",
        a.out.join("scores.jsonl").display(),
        r.output.rows.len(),
        r.output.tokens_forward as f64 / r.output.seconds.max(1e-9)
    );
    Ok(())
}
