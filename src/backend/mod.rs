//! Backends turn token sequences into per-token statistics. One trait, two implementations: the CPU
//! backend (the reference, f32) and the CUDA backend (bf16 weights, fp32 accumulation). Which one runs is
//! decided in one place, [`open_backend`]; [`open_backends`] opens one per device of `--device cuda:0,1,...`
//! for a scoring job's workers (`run::job`).

pub mod cpu;
pub mod cuda;

use crate::error::{LarkError, Result};
use crate::model::Model;
use crate::stats::{StatsOptions, TokenStats};

/// One sequence to score: `ids` is the whole (already truncated) token sequence, and positions
/// `score_from..ids.len()` are scored — the statistics at position t describe the model's distribution after
/// reading `ids[..t]`, with gold token `ids[t]`. `score_from` must be ≥ 1. Tokens after a scored span never
/// influence it (causal attention), so callers cut `ids` at the span's end.
#[derive(Debug, Clone, Copy)]
pub struct SeqRequest<'a> {
    pub ids: &'a [u32],
    pub score_from: usize,
}

impl SeqRequest<'_> {
    pub fn n_scored(&self) -> usize {
        self.ids.len().saturating_sub(self.score_from)
    }
}

pub trait Backend: Send {
    /// "cpu (2 threads)", "cuda:0 (NVIDIA H200)", ...
    fn describe(&self) -> String;
    /// Statistics for every scored position of every sequence, in order. A batch may mix lengths.
    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>>;
    /// How many tokens one `score` call should carry (packed), sized from free memory where the backend knows.
    fn batch_token_budget(&self) -> usize {
        16384
    }
    /// Peak device memory used so far, where the backend tracks it.
    fn peak_memory_bytes(&self) -> Option<u64> {
        None
    }
    /// The forward FLOPs of one sequence on this backend's model: with [`Backend::nominal_flops_per_s`], what
    /// bounds a scoring job's journal chunks by work as well as by tokens (`run::schedule::Chunker`). None
    /// where unknown: chunks are then bounded by tokens alone.
    fn work_model(&self) -> Option<crate::model::flops::WorkModel> {
        None
    }
    /// A fixed, deliberately low estimate of the FLOP/s this kind of backend sustains on a modest machine, so that
    /// a chunk bounded at [`crate::run::CHUNK_WORK_SECONDS`] of it takes at most about that long anywhere (a kill
    /// then loses at most that much work). Fixed per kind, never measured: a job's chunks must be the same on every
    /// attempt, and a requeued cluster task may land on another node.
    fn nominal_flops_per_s(&self) -> f64 {
        f64::INFINITY
    }
    /// The measured matrix-multiply ceiling of the device in TFLOP/s (`lark bench` compares with it), where the
    /// backend has one.
    fn gemm_ceiling_tflops(&self) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// Which backend the user asked for (`--device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    /// One or more CUDA ordinals.
    Cuda(Vec<usize>),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(vec![0])),
            _ => {
                let rest = s
                    .strip_prefix("cuda:")
                    .ok_or_else(|| format!("unknown device `{s}` (auto, cpu, cuda, cuda:N[,M...])"))?;
                let ids = rest
                    .split(',')
                    .map(|x| x.trim().parse::<usize>().map_err(|_| format!("bad CUDA ordinal `{x}` in `{s}`")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(DeviceChoice::Cuda(ids))
            }
        }
    }
}

/// The precision each kind of device runs at for a requested one: unset means bf16 on a GPU and the f32
/// reference on the CPU.
pub fn device_precisions(requested: Option<cuda::Precision>) -> (cuda::Precision, cuda::Precision) {
    (requested.unwrap_or(cuda::Precision::Bf16), requested.unwrap_or(cuda::Precision::Fp32))
}

/// Open the backend for `choice` (of several CUDA ordinals, the first: see [`open_backends`]). `Auto` picks
/// CUDA when a usable GPU and the embedded kernels are present, else the CPU; the returned string says which
/// and why.
///
/// `precision` is what the caller asked for, `None` meaning each device's default: bf16 activations on a GPU
/// ([`cuda::Precision`]), the f32 reference on the CPU. On the CPU only an explicit `Bf16` opts into its bf16
/// linear layers.
pub fn open_backend(
    model: &Model,
    choice: &DeviceChoice,
    precision: Option<cuda::Precision>,
) -> Result<(Box<dyn Backend>, String)> {
    let (gpu_precision, cpu_precision) = device_precisions(precision);
    match choice {
        DeviceChoice::Cpu => {
            let b = cpu::CpuBackend::with_precision(model, cpu_precision)?;
            let d = b.describe();
            Ok((Box::new(b), d))
        }
        DeviceChoice::Cuda(ids) => {
            let b = cuda::CudaBackend::with_precision(model, ids.first().copied().unwrap_or(0), gpu_precision)?;
            let d = b.describe();
            Ok((Box::new(b), d))
        }
        // A model whose GPU kernels are not yet measured goes to the CPU under `auto` (and says why).
        DeviceChoice::Auto => match cuda::probe().and_then(|d| {
            let origin = model.dir.join("config.json").display().to_string();
            cuda::check_measured(&model.config, &origin).map(|_| d).map_err(|e| e.to_string())
        }) {
            Ok(_) => {
                let b = cuda::CudaBackend::with_precision(model, 0, gpu_precision)?;
                let d = format!("{} (auto: CUDA usable)", b.describe());
                Ok((Box::new(b), d))
            }
            Err(why) => {
                let b = cpu::CpuBackend::with_precision(model, cpu_precision)?;
                let d = format!("{} (auto: {why})", b.describe());
                Ok((Box::new(b), d))
            }
        },
    }
}

/// Open one backend per device of `choice`, for a scoring job's workers: one CUDA backend per ordinal of
/// `cuda:0,1,...` (each with its own copy of the weights; opened in parallel, since each converts and uploads
/// the whole model), one backend for `cpu`, `cuda:N` and `auto`. The string describes them all.
///
/// An ordinal listed twice (`cuda:0,0`) gets two workers on that GPU, each with its own weights: legal, rarely
/// useful (it checks the multi-worker path on a one-GPU machine), and said on stderr.
pub fn open_backends(
    model: &Model,
    choice: &DeviceChoice,
    precision: Option<cuda::Precision>,
) -> Result<(Vec<Box<dyn Backend>>, String)> {
    let gpu_precision = device_precisions(precision).0;
    let ids = match choice {
        DeviceChoice::Cuda(ids) if ids.len() > 1 => ids,
        _ => {
            let (b, d) = open_backend(model, choice, precision)?;
            return Ok((vec![b], d));
        }
    };
    if let Some(dup) = ids.iter().enumerate().find(|(i, id)| ids[..*i].contains(id)).map(|(_, id)| id) {
        eprintln!("lark: cuda:{dup} is listed more than once: its workers share that GPU, each with its own weights");
    }
    let opened: Vec<Result<cuda::CudaBackend>> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|&id| s.spawn(move || cuda::CudaBackend::with_precision(model, id, gpu_precision)))
            .collect();
        handles
            .into_iter()
            .zip(ids)
            .map(|(h, id)| {
                h.join().unwrap_or_else(|_| Err(LarkError::Backend(format!("cuda:{id}: opening the device panicked"))))
            })
            .collect()
    });
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(ids.len());
    for b in opened {
        backends.push(Box::new(b?));
    }
    let d = backends.iter().map(|b| b.describe()).collect::<Vec<_>>().join(", ");
    Ok((backends, d))
}

/// `n` CPU backends, for running a job's worker pool on the CPU (tests: `lark score --cpu-workers N`; each
/// holds its own copy of the weights, and they share the rayon threads).
pub fn open_cpu_backends(
    model: &Model,
    n: usize,
    precision: Option<cuda::Precision>,
) -> Result<(Vec<Box<dyn Backend>>, String)> {
    let cpu_precision = device_precisions(precision).1;
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        backends.push(Box::new(cpu::CpuBackend::with_precision(model, cpu_precision)?));
    }
    let d = format!("{} x {} workers", backends[0].describe(), backends.len());
    Ok((backends, d))
}
