//! `lark gstar`: the exact g* (paper Eq. 5) beside ĝ for a pool or a seeded sample of its problems, and the
//! paper's diagnostics (Fig. 6). Wiring only: the work is `grad::gstar::gstar_pool`.

use crate::error::{LarkError, Result};
use crate::export::{write_atomic, write_jsonl};
use crate::grad::gstar::{gstar_pool, GstarOptions};
use crate::io::{read_pool, PoolFormat, PoolSource, ReadOptions};
use crate::model::Model;
use crate::report::{write_gstar_report, GSTAR_FILE};
use crate::text::{SpanMode, TextPipeline};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Student model directory (as `lark score`).
    #[arg(long)]
    pub model: PathBuf,
    /// Candidate pool, as `lark score --pool` (one path, or several of one format).
    #[arg(long, num_args = 1.., required = true)]
    pub pool: Vec<PathBuf>,
    /// Output directory: gstar.jsonl, gstar_summary.json and report.html (the Fig. 6 panels).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub format: PoolFormat,
    /// turn or content (as `lark score`).
    #[arg(long, default_value = "turn")]
    pub span: SpanMode,
    #[arg(long, default_value_t = 32768)]
    pub max_len: usize,
    /// Only a seeded sample of this many problems (the backward pass costs ~2K−1 backward passes a problem).
    #[arg(long)]
    pub problems: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The process's peak resident memory (Linux `VmHWM`), where known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.threads {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let t0 = Instant::now();
    let model = Model::open(&a.model)?;
    let text = TextPipeline::open(&a.model)?;
    let pool = read_pool(PoolSource::new(a.pool.clone())?, &ReadOptions { format: a.format, skip_invalid: false })?;
    let opts = GstarOptions { span: a.span, max_len: a.max_len, problems: a.problems, seed: a.seed };
    let res = gstar_pool(&model, &text, &pool, &opts, |done, total, c| {
        eprintln!(
            "lark gstar: problem {} ({done}/{total}): K = {}, {} tokens, {} backward passes in {:.1} s",
            c.problem_id, c.k, c.tokens, c.backward_passes, c.seconds
        );
    })?;
    std::fs::create_dir_all(&a.out).map_err(|e| LarkError::io(&a.out, e))?;
    write_jsonl(a.out.join(GSTAR_FILE), &res.rows)?;
    let scored = res.rows.iter().filter(|r| r.skipped.is_none()).count();
    let back_s: f64 = res.costs.iter().map(|c| c.seconds).sum();
    let passes: usize = res.costs.iter().map(|c| c.backward_passes).sum();
    let tokens: usize = res.costs.iter().map(|c| c.tokens).sum();
    let d = &res.diagnostics;
    let summary = json!({
        "model": a.model.display().to_string(),
        "pool": pool.source.to_json(),
        "span": a.span.as_str(),
        "max_len": a.max_len,
        "problems_requested": a.problems,
        "seed": a.seed,
        "n_problems": res.costs.len(),
        "n_candidates": res.rows.len(),
        "n_scored": scored,
        "prior": "uniform over each problem's scored candidates (p_k = 1/K)",
        "diagnostics": d,
        "offdiag_ratio_median": res.offdiag_ratio_median,
        "corr_log_rho_star_log_rho_hat": res.corr_log_rho,
        "cost": {
            "device": format!("cpu ({} threads)", rayon::current_num_threads()),
            "wall_s": t0.elapsed().as_secs_f64(),
            "gradient_s": back_s,
            "seconds_per_trajectory": back_s / scored.max(1) as f64,
            "backward_passes": passes,
            "seconds_per_backward_pass": back_s / passes.max(1) as f64,
            "tokens_in_problems": tokens,
            "peak_rss_bytes": peak_rss_bytes(),
            "per_problem": res.costs,
        },
        "paper_qwen2.5_7b": {
            "pearson": 0.748, "spearman": 0.566, "recall_at_1": 0.38, "recall_at_3": 0.56,
            "rel_rms_error_mean": 0.574, "rel_rms_error_median": 0.590, "K": 33, "n_questions": 50,
        },
    });
    let path = a.out.join("gstar_summary.json");
    write_atomic(&path, |f| {
        let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
        f.write_all(text.as_bytes()).map_err(|e| f.err(e))
    })?;
    write_gstar_report(&a.out.join("report.html"), &res.rows)?;
    let r = |b: usize| d.recall.get(b - 1).and_then(|p| p.recall.zip(p.random));
    let fmt = |x: Option<(f64, f64)>| x.map_or("n/a".into(), |(r, b)| format!("{r:.3} (random {b:.3})"));
    eprintln!(
        "lark gstar: {} problems, {scored} trajectories; pooled Pearson {:.3}, Spearman {:.3} (paper 0.748 / 0.566); \
         Recall@1 {}, Recall@3 {}; rel. RMS error mean {:.3}, median {:.3} (paper 0.574 / 0.590); \
         {:.2} s per trajectory; {}",
        d.n_questions,
        d.pearson,
        d.spearman,
        fmt(r(1)),
        fmt(r(3)),
        d.rel_rms_error_mean,
        d.rel_rms_error_median,
        back_s / scored.max(1) as f64,
        a.out.display()
    );
    Ok(())
}
