//! `lark bench`: end-to-end scoring throughput of a backend on synthetic or given token sequences.
//! A benchmark, never a test: it prints figures, it asserts nothing.

use crate::backend::cuda::attention_bench::{time_attention_kernels, HeadShape};
use crate::backend::cuda::{self, Precision};
use crate::backend::{open_backend, Backend, DeviceChoice, SeqRequest};
use crate::error::{LarkError, Result};
use crate::model::presets::{preset, PRESET_NAMES, RSR_TEACHER_MEAN_LENGTHS};
use crate::model::random::{write_random_model, SplitMix};
use crate::model::{Model, ModelConfig, StoredDtype};
use crate::stats::StatsOptions;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + safetensors).
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// A model shape: qwen2.5-1.5b, qwen2.5-7b, llama-3.2-3b, smollm2 (needs --random-weights).
    #[arg(long)]
    pub preset: Option<String>,
    /// Use random weights of the preset's exact shapes (no files needed).
    #[arg(long)]
    pub random_weights: bool,
    /// Sequence lengths: `fixed:T`, or `rsr` (the released pool's per-teacher mean lengths, 3 rollouts each).
    #[arg(long, default_value = "fixed:512")]
    pub lengths: String,
    /// Total tokens to score in the timed runs (sequences are repeated/cut to reach it).
    #[arg(long, default_value_t = 4096)]
    pub tokens: usize,
    /// Token ids from a JSON file (a list of lists of ids) instead of random ids; overrides --lengths.
    #[arg(long)]
    pub ids_file: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Timed repetitions (the median is reported); --warmup untimed runs precede them.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Untimed warm-up runs before the timed ones (0 for very long sequences on the CPU, where one run takes
    /// minutes and the first touches of memory are a negligible share of it).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Also compute the authors' top-K Brier in the pass.
    #[arg(long)]
    pub topk_brier: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// GPU: bf16 activations (the default, fast) or fp32 (reference grade, ~2× the GEMM work). CPU: fp32 (the
    /// default, the reference) or bf16 (opt-in: linear layers in bf16, AMX where the processor has it).
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Time only the attention kernels, on a CUDA device: every tensor-core variant for the model's head shape on
    /// the same packed batch of --lengths/--tokens (one JSON line or table row per kernel). No weights are made.
    #[arg(long, conflicts_with_all = ["ids_file", "topk_brier"])]
    pub attention_only: bool,
    /// Time the CPU backward pass of `lark gstar` instead (one f32 gradient of every parameter per sequence,
    /// every position after the first in the loss): seconds per pass and per token, and the peak resident memory.
    #[arg(long, conflicts_with_all = ["attention_only", "topk_brier"])]
    pub backward: bool,
    /// CPU: also time every kind of operation of the forward pass over the timed runs (GEMM groups, attention,
    /// norms/RoPE/elementwise, LM head, vocabulary pass): seconds, share of the run and GFLOP/s of each GEMM group.
    #[arg(long, conflicts_with_all = ["attention_only", "backward"])]
    pub profile: bool,
}

fn sequences(a: &Args, vocab: usize) -> Result<Vec<Vec<u32>>> {
    if let Some(path) = &a.ids_file {
        let text = std::fs::read_to_string(path).map_err(|e| LarkError::io(path, e))?;
        let seqs: Vec<Vec<u32>> = serde_json::from_str(&text).map_err(|e| {
            LarkError::input(
                format!("{}:{}", path.display(), e.line()),
                format!("expected a list of lists of token ids: {e}"),
            )
        })?;
        // Checked here, naming the file and the sequence: every position after the first is scored, so a
        // sequence needs two ids, and every id must be in the model's vocabulary.
        for (i, seq) in seqs.iter().enumerate() {
            let at = format!("{} (sequence {i})", path.display());
            if seq.len() < 2 {
                let what = if seq.is_empty() { "is empty" } else { "has 1 id" };
                return Err(LarkError::input(at, format!("{what}: a sequence needs at least 2 token ids")));
            }
            if let Some((pos, &bad)) = seq.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
                return Err(LarkError::input(
                    at,
                    format!("token id {bad} at position {pos} is beyond the model's vocabulary of {vocab}"),
                ));
            }
        }
        if seqs.is_empty() {
            return Err(LarkError::input(path.display().to_string(), "no sequences"));
        }
        return Ok(seqs);
    }
    let pattern: Vec<usize> = match a.lengths.as_str() {
        "rsr" => RSR_TEACHER_MEAN_LENGTHS.iter().flat_map(|&l| [l, l, l]).collect(),
        s => match s.strip_prefix("fixed:").and_then(|t| t.parse::<usize>().ok()) {
            Some(t) if t >= 2 => vec![t],
            _ => return Err(LarkError::input("--lengths", format!("`{s}`: expected rsr or fixed:T with T ≥ 2"))),
        },
    };
    let mut rng = SplitMix(42);
    let mut out = Vec::new();
    let mut total = 0;
    for &len in pattern.iter().cycle() {
        if total >= a.tokens {
            break;
        }
        let len = len.min(a.tokens - total).max(2);
        out.push((0..len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect());
        total += len;
    }
    Ok(out)
}

pub use crate::model::flops::forward_flops;

pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.threads {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    if a.attention_only {
        return run_attention_only(&a);
    }
    let _tmp;
    let model = match (&a.model, &a.preset) {
        (Some(dir), _) => Model::open(dir)?,
        (None, Some(name)) => {
            let cfg = preset_config(name)?;
            if !a.random_weights {
                return Err(LarkError::input("--preset", "needs --random-weights (or pass --model DIR)"));
            }
            let dir = tempfile_dir()?;
            write_random_model(&dir.0, &cfg, StoredDtype::BF16, 1)?;
            let m = Model::open(&dir.0)?;
            _tmp = dir;
            m
        }
        (None, None) => {
            return Err(LarkError::input("lark bench", "pass --model DIR or --preset NAME --random-weights"))
        }
    };
    if a.backward {
        return run_backward(&a, &model);
    }
    let (mut backend, desc) = open_backend(&model, &a.device, a.precision)?;
    let ceiling = backend.gemm_ceiling_tflops()?;
    let (gpu_precision, cpu_precision) = crate::backend::device_precisions(a.precision);
    // Only the GPU backend has a GEMM ceiling.
    let precision = if ceiling.is_some() { gpu_precision } else { cpu_precision };
    let seqs = sequences(&a, model.config.vocab_size)?;
    let opts = StatsOptions { topk_brier: a.topk_brier };
    let tokens: usize = seqs.iter().map(|s| s.len()).sum();
    let scored: usize = seqs.iter().map(|s| s.len() - 1).sum();
    let flops: f64 = seqs.iter().map(|s| forward_flops(&model.config, s.len())).sum();

    let run_once = |backend: &mut Box<dyn Backend>| -> Result<f64> {
        let budget = backend.batch_token_budget();
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let t0 = Instant::now();
        for batch in crate::run::schedule::pack_by_length(&lengths, budget, 4096) {
            let reqs: Vec<SeqRequest<'_>> =
                batch.iter().map(|&i| SeqRequest { ids: &seqs[i], score_from: 1 }).collect();
            let out = backend.score(&reqs, &opts)?;
            std::hint::black_box(out);
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    for _ in 0..a.warmup {
        run_once(&mut backend)?;
    }
    if a.profile {
        if ceiling.is_some() {
            return Err(LarkError::input("--profile", "profiles the CPU backend only: pass --device cpu"));
        }
        crate::backend::cpu::profile::enable(true);
    }
    let mut times: Vec<f64> = (0..a.repeats.max(1)).map(|_| run_once(&mut backend)).collect::<Result<_>>()?;
    let profile = a.profile.then(|| {
        let p = crate::backend::cpu::profile::snapshot();
        crate::backend::cpu::profile::enable(false);
        let total: f64 = times.iter().sum();
        op_profile(&p, total, times.len(), &model.config, &seqs)
    });
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let median = times[times.len() / 2];
    let tok_s = tokens as f64 / median;
    let tflops = flops / median / 1e12;
    let peak = backend.peak_memory_bytes();
    let model_name = model_name(&a);
    let v = serde_json::json!({
        "model": model_name, "device": desc, "sequences": seqs.len(), "tokens": tokens, "scored_tokens": scored,
        "lengths": if a.ids_file.is_some() { "ids-file".to_string() } else { a.lengths.clone() },
        "median_s": median, "times_s": times, "warmup_runs": a.warmup, "tokens_per_s": tok_s, "tflops": tflops,
        "s_per_trajectory": median / seqs.len() as f64, "peak_device_bytes": peak,
        "topk_brier": a.topk_brier, "gemm_ceiling_tflops": ceiling,
        "fraction_of_ceiling": ceiling.map(|c| tflops / c), "precision": precision.name(),
        "attention_query_tile": cuda::attention::query_tile_setting(),
        "attention_warp_rows": cuda::attention::warp_rows_setting(),
        // The attention kernel of this model on the GPU backend (null on the CPU backend, which, alone, has no
        // GEMM ceiling).
        "attention_kernel": ceiling.and_then(|_| {
            cuda::attention::AttentionKernel::for_args(model.config.head_dim, gpu_precision).ok().map(|k| k.entry_point())
        }),
        "profile": profile,
    });
    if a.json {
        println!("{v}");
    } else {
        println!("model        {model_name}");
        println!("device       {desc}");
        println!("sequences    {} ({} tokens, {} scored)", seqs.len(), tokens, scored);
        println!("median       {median:.4} s over {} runs", times.len());
        println!("throughput   {tok_s:.0} tokens/s");
        println!("compute      {tflops:.3} TFLOP/s achieved");
        if let Some(c) = ceiling {
            println!(
                "ceiling      {c:.0} TFLOP/s cuBLAS bf16 GEMM 8192³ on this GPU: {:.1}% of it",
                100.0 * tflops / c
            );
        }
        println!("trajectory   {:.4} s each", median / seqs.len() as f64);
        if let Some(p) = peak {
            println!("peak memory  {:.2} GiB", p as f64 / (1u64 << 30) as f64);
        }
        if let Some(serde_json::Value::Array(ops)) = &profile {
            println!("profile      per run (median run {median:.4} s; shares of the mean run):");
            for o in ops {
                let gf = o["gflops_per_s"].as_f64().map(|g| format!("  {g:.1} GFLOP/s")).unwrap_or_default();
                println!(
                    "  {:<24} {:>9.4} s  {:>5.1}%{gf}",
                    o["op"].as_str().unwrap_or(""),
                    o["s_per_run"].as_f64().unwrap_or(0.0),
                    100.0 * o["share"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

/// The per-op profile as JSON: seconds per run, share of the mean run's wall time and, for the GEMM groups,
/// their FLOP rate (2·m·n·k per product; the LM head over the scored rows). `other` is the run minus the timed
/// ops: scheduling, packing, validation.
fn op_profile(
    p: &[(crate::backend::cpu::profile::Op, f64)],
    total_s: f64,
    runs: usize,
    c: &ModelConfig,
    seqs: &[Vec<u32>],
) -> serde_json::Value {
    use crate::backend::cpu::profile::Op;
    let t: f64 = seqs.iter().map(|s| s.len() as f64).sum();
    let scored: f64 = seqs.iter().map(|s| (s.len() - 1) as f64).sum();
    let (h, l) = (c.hidden_size as f64, c.num_layers as f64);
    let (qw, kvw) = ((c.num_heads * c.head_dim) as f64, (c.num_kv_heads * c.head_dim) as f64);
    let inter = c.intermediate_size as f64;
    let flops = |op: Op| -> Option<f64> {
        Some(match op {
            Op::QkvGemm => 2.0 * t * h * (qw + 2.0 * kvw) * l,
            Op::OGemm => 2.0 * t * qw * h * l,
            Op::GateUpGemm => 2.0 * t * h * 2.0 * inter * l,
            Op::DownGemm => 2.0 * t * inter * h * l,
            Op::HeadGemm => 2.0 * scored * h * c.vocab_size as f64,
            _ => return None,
        })
    };
    let runs = runs.max(1) as f64;
    let mean = total_s / runs;
    let mut rows: Vec<serde_json::Value> = p
        .iter()
        .map(|&(op, s)| {
            let per = s / runs;
            serde_json::json!({
                "op": op.name(), "s_per_run": per, "share": per / mean,
                "gflops_per_s": flops(op).filter(|_| per > 0.0).map(|f| f / per / 1e9),
            })
        })
        .collect();
    let timed: f64 = p.iter().map(|(_, s)| s).sum::<f64>() / runs;
    rows.push(serde_json::json!({"op": "other", "s_per_run": mean - timed,
        "share": (mean - timed) / mean, "gflops_per_s": null}));
    serde_json::Value::Array(rows)
}

/// `--backward`: the f32 CPU backward pass (`grad::Student::loss_and_grad`) over the benchmark's sequences,
/// one at a time, as `lark gstar` runs it.
fn run_backward(a: &Args, model: &Model) -> Result<()> {
    if !matches!(a.device, DeviceChoice::Auto | DeviceChoice::Cpu) {
        return Err(LarkError::input("--device", "--backward runs on the CPU only (there is no GPU backward pass)"));
    }
    let student = crate::grad::Student::<f32>::from_model(model)?;
    let mut grad = student.zeros();
    let seqs = sequences(a, model.config.vocab_size)?;
    let run_once = |grad: &mut crate::grad::Tensors<f32>| -> Result<f64> {
        let t0 = Instant::now();
        for s in &seqs {
            std::hint::black_box(student.loss_and_grad(SeqRequest { ids: s, score_from: 1 }, grad)?);
        }
        Ok(t0.elapsed().as_secs_f64())
    };
    for _ in 0..a.warmup {
        run_once(&mut grad)?;
    }
    let mut times: Vec<f64> = (0..a.repeats.max(1)).map(|_| run_once(&mut grad)).collect::<Result<_>>()?;
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let median = times[times.len() / 2];
    let tokens: usize = seqs.iter().map(|s| s.len()).sum();
    let flops: f64 = seqs.iter().map(|s| forward_flops(&model.config, s.len())).sum();
    let peak = super::gstar::peak_rss_bytes();
    let model_name = model_name(a);
    let desc = format!("cpu ({} threads), f32 backward", rayon::current_num_threads());
    let v = serde_json::json!({
        "model": model_name, "device": desc, "mode": "backward", "sequences": seqs.len(), "tokens": tokens,
        "lengths": if a.ids_file.is_some() { "ids-file".to_string() } else { a.lengths.clone() },
        "median_s": median, "times_s": times, "tokens_per_s": tokens as f64 / median,
        "s_per_backward_pass": median / seqs.len() as f64,
        "forward_equivalent_tflops": flops / median / 1e12,
        "parameters": student.parameter_count(), "peak_rss_bytes": peak,
    });
    if a.json {
        println!("{v}");
    } else {
        println!("model        {model_name}");
        println!("device       {desc}");
        println!("sequences    {} ({tokens} tokens)", seqs.len());
        println!("median       {median:.4} s over {} runs", times.len());
        println!("throughput   {:.0} tokens/s (forward + backward)", tokens as f64 / median);
        println!("pass         {:.4} s per sequence", median / seqs.len() as f64);
        if let Some(p) = peak {
            println!("peak memory  {:.2} GiB resident", p as f64 / (1u64 << 30) as f64);
        }
    }
    Ok(())
}

/// The preset's model shape, or an error naming the presets.
fn preset_config(name: &str) -> Result<ModelConfig> {
    preset(name).ok_or_else(|| {
        LarkError::input("--preset", format!("unknown preset `{name}` (one of {})", PRESET_NAMES.join(", ")))
    })
}

/// What the output calls the model: its directory, or the preset's name.
fn model_name(a: &Args) -> String {
    a.model.as_ref().map(|p| p.display().to_string()).or(a.preset.clone()).unwrap_or_default()
}

/// `--attention-only`: the model's head shape (from the preset or the model's config.json: no weights are made or
/// read) and the benchmark's sequence lengths, every tensor-core attention kernel timed on one GPU.
fn run_attention_only(a: &Args) -> Result<()> {
    let config = match (&a.model, &a.preset) {
        (Some(dir), _) => Model::open(dir)?.config,
        (None, Some(name)) => preset_config(name)?,
        (None, None) => return Err(LarkError::input("lark bench", "pass --model DIR or --preset NAME")),
    };
    let ordinal = match &a.device {
        DeviceChoice::Cuda(ids) if ids.len() == 1 => ids[0],
        DeviceChoice::Auto => 0,
        _ => {
            return Err(LarkError::input("--device", "--attention-only times one CUDA device: pass --device cuda[:N]"))
        }
    };
    let lens: Vec<usize> = sequences(a, config.vocab_size)?.iter().map(|s| s.len()).collect();
    let shape = HeadShape::of(&config);
    // Enough back-to-back launches per timing that launch overhead is noise even for short batches.
    let launches = 5;
    let timings = time_attention_kernels(ordinal, shape, &lens, a.repeats, launches)?;
    let model_name = model_name(a);
    let tokens: usize = lens.iter().sum();
    for t in &timings {
        if a.json {
            let v = serde_json::json!({
                "model": model_name, "attention_kernel": t.kernel, "device": format!("cuda:{ordinal}"),
                "sequences": lens.len(), "tokens": tokens, "lengths": a.lengths, "heads": shape.num_heads,
                "kv_heads": shape.num_kv_heads, "head_dim": shape.head_dim, "launches_per_timing": launches,
                "median_ms": t.median_ms, "times_ms": t.times_ms, "attention_tflops": t.tflops(),
            });
            println!("{v}");
        } else {
            println!(
                "{model_name}  {:<40} {tokens} tokens in {} sequences: {:.3} ms, {:.1} TFLOP/s",
                t.kernel,
                lens.len(),
                t.median_ms,
                t.tflops()
            );
        }
    }
    Ok(())
}

/// A temporary directory removed on drop (random-weight models).
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempfile_dir() -> Result<TempDir> {
    let base = std::env::temp_dir().join(format!("lark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(|e| LarkError::io(&base, e))?;
    Ok(TempDir(base))
}
