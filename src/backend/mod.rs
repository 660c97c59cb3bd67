//! Backends turn token sequences into per-token statistics. One trait, two implementations: the CPU
//! backend (the reference, f32) and the CUDA backend (bf16 weights, fp32 accumulation). Which one runs is
//! decided in one place, [`open_backend`].

pub mod cpu;
pub mod cuda;

use crate::error::Result;
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

/// Open the backend for `choice`. `Auto` picks CUDA when a usable GPU and the embedded kernels are present,
/// else the CPU; the returned string says which and why.
pub fn open_backend(model: &Model, choice: &DeviceChoice) -> Result<(Box<dyn Backend>, String)> {
    match choice {
        DeviceChoice::Cpu => {
            let b = cpu::CpuBackend::new(model)?;
            let d = b.describe();
            Ok((Box::new(b), d))
        }
        DeviceChoice::Cuda(ids) => {
            let b = cuda::CudaBackend::new(model, ids.first().copied().unwrap_or(0))?;
            let d = b.describe();
            Ok((Box::new(b), d))
        }
        DeviceChoice::Auto => match cuda::probe() {
            Ok(_) => {
                let b = cuda::CudaBackend::new(model, 0)?;
                let d = format!("{} (auto: CUDA usable)", b.describe());
                Ok((Box::new(b), d))
            }
            Err(why) => {
                let b = cpu::CpuBackend::new(model)?;
                let d = format!("{} (auto: {why})", b.describe());
                Ok((Box::new(b), d))
            }
        },
    }
}
