//! `lark selftest [--device cuda[:N]] [--model DIR ...]`: the CUDA kernels against the CPU reference, then whole
//! models GPU vs CPU (see `backend::cuda::selftest`). Prints one table; exits non-zero on any failure, and
//! without a usable GPU.

use crate::backend::cuda::selftest::{self, Options};
use crate::backend::DeviceChoice;
use crate::error::{LarkError, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GPU to test: cuda, cuda:N (auto means cuda:0; cpu is refused: there is nothing to compare).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// A real model directory to compare GPU vs CPU (repeatable). Default: $LARK_CACHE/smollm2-135m-instruct
    /// when it exists.
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// Length of the long sequence in the attention and whole-model packs.
    #[arg(long, default_value_t = 4097)]
    pub long: usize,
    /// Seed of the random inputs (every run draws fresh inputs unless this is given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Kernels only: skip the whole-model comparisons.
    #[arg(long)]
    pub kernels_only: bool,
    /// Real token sequences for the real models (a JSON list of lists of ids, or the golden fixture format
    /// {"sequences": [{"ids", "n_prompt_ids"}]}). Default: tests/fixtures/golden_smollm2.json when present.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The pool of the selection check (the first --model, which needs a tokenizer): `lark run` on the GPU and on
    /// the CPU must select the same top-3 LARK candidates in every problem. Default: examples/pool.jsonl when
    /// present.
    #[arg(long)]
    pub pool: Option<PathBuf>,
}

/// The selection check: `lark run` (this executable) on `pool` with `model`, once with `--device cpu` and once
/// with `--device cuda:N`, then the top-3 LARK candidates of every problem compared as sets.
fn selection_check(model: PathBuf, pool: PathBuf) -> selftest::SelectionCheck {
    Box::new(move |ordinal| {
        let exe = std::env::current_exe().map_err(|e| LarkError::Other(format!("selection check: {e}")))?;
        let tmp = std::env::temp_dir().join(format!("lark-selftest-pool-{}", std::process::id()));
        let run = |device: &str| -> Result<std::collections::BTreeMap<i64, Vec<i64>>> {
            let out = tmp.join(device.replace(':', "-"));
            let o = std::process::Command::new(&exe)
                .arg("run")
                .arg("--model")
                .arg(&model)
                .arg("--pool")
                .arg(&pool)
                .arg("--out")
                .arg(&out)
                .args(["--device", device, "--by", "g_hat", "--budget", "3", "--no-report"])
                .output()
                .map_err(|e| LarkError::Other(format!("selection check: running {}: {e}", exe.display())))?;
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                return Err(LarkError::Other(format!("lark run --device {device} failed: {}", err.trim())));
            }
            let path = out.join("selection.jsonl");
            let text = std::fs::read_to_string(&path).map_err(|e| LarkError::io(&path, e))?;
            let mut sel = std::collections::BTreeMap::new();
            for (i, line) in text.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| LarkError::input(format!("{}:{}", path.display(), i + 1), e.to_string()))?;
                let pid = v["problem_id"].as_i64().unwrap_or(-1);
                let mut ids: Vec<i64> =
                    v["selected"].as_array().into_iter().flatten().filter_map(|c| c["candidate_id"].as_i64()).collect();
                ids.sort_unstable();
                sel.insert(pid, ids);
            }
            Ok(sel)
        };
        let result = (|| {
            let cpu = run("cpu")?;
            let gpu = run(&format!("cuda:{ordinal}"))?;
            let same = cpu.iter().filter(|(p, ids)| gpu.get(*p) == Some(*ids)).count();
            let n = cpu.len().max(gpu.len());
            let detail = format!(
                "{} on {}: top-3 LARK identical (as sets) in {same}/{n} problems",
                model.display(),
                pool.display()
            );
            Ok((same == n && n > 0, detail))
        })();
        std::fs::remove_dir_all(&tmp).ok();
        result
    })
}

/// `${LARK_CACHE:-$HOME/.cache/lark}/smollm2-135m-instruct`, when present.
fn default_smollm2() -> Option<PathBuf> {
    let cache = std::env::var_os("LARK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lark")))?;
    let d = cache.join("smollm2-135m-instruct");
    d.join("config.json").is_file().then_some(d)
}

pub fn run(a: Args) -> Result<()> {
    let ordinal = match a.device.parse::<DeviceChoice>().map_err(LarkError::Other)? {
        DeviceChoice::Auto => 0,
        DeviceChoice::Cuda(ids) => ids.first().copied().unwrap_or(0),
        DeviceChoice::Cpu => {
            return Err(LarkError::Other("selftest compares the CUDA kernels with the CPU: use --device cuda".into()))
        }
    };
    let mut models = a.model.clone();
    if models.is_empty() {
        match default_smollm2() {
            Some(d) => models.push(d),
            None => eprintln!(
                "[selftest] SmolLM2 not found at $LARK_CACHE/smollm2-135m-instruct (scripts/fetch-fixtures.sh); \
                 pass --model DIR to compare a real model"
            ),
        }
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("[selftest] seed {seed}");
    let ids_path = a.ids.clone().or_else(|| {
        let p = PathBuf::from("tests/fixtures/golden_smollm2.json");
        p.is_file().then_some(p)
    });
    let text = match &ids_path {
        Some(p) => selftest::load_ids(p)?,
        None => Vec::new(),
    };
    let pool = a.pool.clone().or_else(|| {
        let p = PathBuf::from("examples/pool.jsonl");
        p.is_file().then_some(p)
    });
    let check = match (models.first(), pool) {
        (Some(m), Some(p)) if m.join("tokenizer.json").is_file() && !a.kernels_only => {
            Some(selection_check(m.clone(), p))
        }
        _ => None,
    };
    let opts = Options {
        ordinal,
        models,
        long_len: a.long.max(2),
        seed,
        kernels_only: a.kernels_only,
        selection_check: check,
        text,
    };
    let report = selftest::run(&opts)?;
    let table = format!("seed {seed}\n{}", report.render());
    if let Some(p) = &a.out {
        std::fs::write(p, &table).map_err(|e| LarkError::io(p, e))?;
    }
    print!("{table}");
    match report.failures() {
        0 => Ok(()),
        n => Err(LarkError::Other(format!("selftest: {n} case(s) failed"))),
    }
}
