//! `lark selftest --device cuda`: every kernel against the CPU reference ops on fresh random inputs (awkward sizes
//! included, every output poisoned with NaN before its launch), then whole models GPU vs CPU. One table; any
//! failure makes the command exit non-zero. Built so that a single run on a lent GPU says exactly what is wrong:
//! a failing case does not stop the others, and each row names the kernel, the shape and the error.
//!
//! Error measures: `rel` = ‖out − ref‖₂ / ‖ref‖₂ and `max` = max |out − ref| over all elements; NaN in the output
//! (an element never written, or a real NaN) fails the case whatever the norms say.
//! Tolerances: fp32 outputs of fp32 math ≤ 1e-5; bf16 outputs (one rounding, 2⁻⁹ relative) ≤ 4e-3; attention
//! (P rounded to bf16 before P·V, as flash attention does) ≤ 1e-2; statistics: see [`vocab_cases`]; whole models:
//! per-token |Δ log p| ≤ 0.05 nats and relative Δ of each sequence's Σ_t Σπ² ≤ 2e-2 (issue 4), plus a
//! determinism check (same batch twice: identical) and a batch-invariance check (alone vs packed: ≤ 0.02 nats).

use super::attention::{self, AttentionKernel, TileTable};
use super::attention_bench::{causal_flops, HeadShape};
use super::device::{dptr, Gpu};
use super::ops::{self, OutType, Precision};
use super::vocab_stats::{self, LogitsBlock, StatsOut};
use super::{kernels, CudaBackend};
use crate::backend::cpu::{ops as cpu, CpuBackend};
use crate::backend::{Backend, SeqRequest};
use crate::error::{LarkError, Result};
use crate::model::random::{tiny_config, write_random_model, SplitMix};
use crate::model::{Architecture, Llama3RopeScaling, Model, ModelConfig, RopeScaling, StoredDtype, YarnRopeScaling};
use crate::stats::{topk_brier, vocab_stats_row, StatsOptions, TokenStats};
use cudarc::driver::{CudaSlice, DeviceRepr};
use half::bf16;
use std::path::PathBuf;
use std::time::Instant;

/// A check of the LARK selection on the example pool, GPU backend vs CPU backend, on CUDA device `ordinal`:
/// Ok((identical, detail)) (issue 4: "the top-3 LARK selection identical on the example pool"). The CLI wires it
/// (`cli::selftest`: the whole `lark run` on both devices); without it the table shows a SKIP.
pub type SelectionCheck = Box<dyn Fn(usize) -> Result<(bool, String)>>;

pub struct Options {
    pub ordinal: usize,
    /// Real model directories to compare GPU vs CPU (e.g. SmolLM2).
    pub models: Vec<PathBuf>,
    /// Length of the long sequence in the attention and whole-model packs.
    pub long_len: usize,
    pub seed: u64,
    /// Skip the whole-model section (kernels only).
    pub kernels_only: bool,
    pub selection_check: Option<SelectionCheck>,
    /// Real token sequences (ids, first scored position) for the real models of `models` (see [`load_ids`]):
    /// random ids put the gold token deep in a trained model's tail, where log p is −30 nats and its error scales
    /// with it; text gives the typical operating point.
    pub text: Vec<(Vec<u32>, usize)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ordinal: 0,
            models: Vec::new(),
            long_len: 4097,
            seed: 0x1a4c,
            kernels_only: false,
            selection_check: None,
            text: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub case: String,
    pub rel: f64,
    pub max_abs: f64,
    pub tol: f64,
    pub status: Status,
    pub gpu_ms: f64,
    pub note: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| r.status == Status::Fail).count()
    }

    /// The table, a summary line last.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for h in &self.header {
            s.push_str(h);
            s.push('\n');
        }
        s.push_str(&format!(
            "{:<10} {:<52} {:>9} {:>9} {:>8} {:>8} {:<6} {}\n",
            "section", "case", "rel.err", "max|err|", "tol", "gpu ms", "status", "note"
        ));
        for r in &self.rows {
            let st = match r.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            s.push_str(&format!(
                "{:<10} {:<52} {:>9.2e} {:>9.2e} {:>8.0e} {:>8.2} {:<6} {}\n",
                r.section, r.case, r.rel, r.max_abs, r.tol, r.gpu_ms, st, r.note
            ));
        }
        let pass = self.rows.iter().filter(|r| r.status == Status::Pass).count();
        let skip = self.rows.iter().filter(|r| r.status == Status::Skip).count();
        s.push_str(&format!(
            "SELFTEST {}: {pass} passed, {} failed, {skip} skipped\n",
            if self.failures() == 0 { "PASSED" } else { "FAILED" },
            self.failures()
        ));
        if self.failures() > 0 {
            let first: Vec<String> = self
                .rows
                .iter()
                .filter(|r| r.status == Status::Fail)
                .take(5)
                .map(|r| format!("{} / {}", r.section, r.case))
                .collect();
            s.push_str(&format!("first failures: {}\n", first.join("; ")));
        }
        s
    }
}

/// Comparison of a GPU output with its reference.
#[derive(Debug, Clone, Copy)]
struct Cmp {
    rel: f64,
    max_abs: f64,
    nan: usize,
}

fn compare(got: &[f32], want: &[f32]) -> Cmp {
    let mut num = 0f64;
    let mut den = 0f64;
    let mut max_abs = 0f64;
    let mut nan = 0;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() && w.is_finite() {
            nan += 1;
            continue;
        }
        let d = (g as f64 - w as f64).abs();
        num += d * d;
        den += (w as f64) * (w as f64);
        max_abs = max_abs.max(d);
    }
    if got.len() != want.len() {
        nan += got.len().abs_diff(want.len());
    }
    Cmp { rel: num.sqrt() / den.sqrt().max(1e-30), max_abs, nan }
}

fn merge(a: Cmp, b: Cmp) -> Cmp {
    Cmp { rel: a.rel.max(b.rel), max_abs: a.max_abs.max(b.max_abs), nan: a.nan + b.nan }
}

fn rand_vec(rng: &mut SplitMix, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * rng.next_f32()).collect()
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn from_bf16(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Round through bf16 (what the GPU sees of a host f32 input).
fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// What the GPU sees of a host f32 activation of type `p`.
fn round_act(v: &[f32], p: Precision) -> Vec<f32> {
    match p {
        Precision::Bf16 => round_bf16(v),
        Precision::Fp32 => v.to_vec(),
    }
}

/// Kernel-section bound and case-name prefix of an activation type: bf16 outputs carry one bf16 rounding
/// (4e-3 relative), fp32 ones only fp32 arithmetic (1e-5).
fn act_tol(p: Precision) -> (f64, &'static str) {
    match p {
        Precision::Bf16 => (4e-3, ""),
        Precision::Fp32 => (1e-5, "[fp32] "),
    }
}

fn below(rng: &mut SplitMix, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// Device buffers for one case; outputs are poisoned when allocated.
struct Bufs<'a> {
    gpu: &'a Gpu,
}

impl<'a> Bufs<'a> {
    fn up<T: DeviceRepr + Default + Clone>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.gpu.upload(v)
    }
    fn out<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        let mut b = self.gpu.alloc::<T>(n)?;
        self.gpu.poison(&mut b)?;
        Ok(b)
    }
    fn p<T>(&self, b: &CudaSlice<T>) -> u64 {
        dptr(b, &self.gpu.stream)
    }
    fn down<T: DeviceRepr + Default + Clone>(&self, b: &CudaSlice<T>, n: usize) -> Result<Vec<T>> {
        self.gpu.download(b, n)
    }
}

struct Runner<'a> {
    gpu: &'a Gpu,
    rng: SplitMix,
    report: Report,
}

impl Runner<'_> {
    /// Run one case: `f` returns (comparison, gpu ms, note). Errors become a failing row.
    fn case(
        &mut self,
        section: &'static str,
        case: String,
        tol: f64,
        f: impl FnOnce(&mut Self) -> Result<(Cmp, f64, String)>,
    ) {
        let row = match f(self) {
            Ok((c, ms, note)) => {
                let ok = c.nan == 0 && c.rel <= tol && c.rel.is_finite();
                let mut note = note;
                if c.nan > 0 {
                    note = format!("{} NaN/unwritten elements; {note}", c.nan);
                }
                Row {
                    section,
                    case,
                    rel: c.rel,
                    max_abs: c.max_abs,
                    tol,
                    status: if ok { Status::Pass } else { Status::Fail },
                    gpu_ms: ms,
                    note,
                }
            }
            Err(e) => Row {
                section,
                case,
                rel: f64::NAN,
                max_abs: f64::NAN,
                tol,
                status: Status::Fail,
                gpu_ms: 0.0,
                note: format!("error: {e}"),
            },
        };
        eprintln!(
            "[selftest] {:<10} {:<52} {}",
            row.section,
            row.case,
            match row.status {
                Status::Pass => "ok",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            }
        );
        self.report.rows.push(row);
    }

    /// Time `f` (launches) until the stream is idle.
    fn timed(&self, f: impl FnOnce() -> Result<()>) -> Result<f64> {
        self.gpu.sync()?;
        let t0 = Instant::now();
        f()?;
        self.gpu.sync()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
}

/// Run the whole selftest on CUDA device `opts.ordinal`. Err only when no usable device exists (the caller
/// prints it and exits non-zero); case failures are rows of the report.
pub fn run(opts: &Options) -> Result<Report> {
    if let Err(why) = super::device::check_usable(opts.ordinal) {
        return Err(LarkError::Backend(format!("no CUDA device: selftest needs a GPU ({why})")));
    }
    let gpu = Gpu::open(opts.ordinal)?;
    let mut r = Runner { gpu: &gpu, rng: SplitMix(opts.seed ^ 0x5e1f_7e57), report: Report::default() };
    header(&mut r)?;
    embedding_cases(&mut r);
    norm_cases(&mut r);
    rope_cases(&mut r);
    swiglu_cases(&mut r);
    split_cases(&mut r);
    gemm_cases(&mut r);
    attention_cases(&mut r, opts.long_len);
    vocab_cases(&mut r);
    let mut report = std::mem::take(&mut r.report);
    drop(r);
    drop(gpu);
    if !opts.kernels_only {
        model_cases(opts, &mut report);
    }
    Ok(report)
}

fn header(r: &mut Runner<'_>) -> Result<()> {
    let g = r.gpu;
    let (free, total) = g.mem_info()?;
    let driver =
        super::device::driver_info().map(|i| super::device::version_string(i.cuda_version)).unwrap_or_default();
    r.report.header.push(format!(
        "device: {} | driver CUDA {driver} | cuBLAS {} | {:.1}/{:.1} GiB free",
        g.info.summary(),
        super::device::cublas_version().unwrap_or_default(),
        free as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 30) as f64
    ));
    r.report.header.push(format!("kernels: {}", kernels::describe()));
    let mut res = Vec::new();
    for name in kernels::ENTRY_POINTS {
        match g.kernels.resources(name) {
            Ok((regs, local, smem)) => {
                let spill = if local > 0 { format!(" LOCAL {local}B") } else { String::new() };
                res.push(format!("{name} {regs}r/{smem}B smem{spill}"));
            }
            Err(e) => res.push(format!("{name}: {e}")),
        }
    }
    r.report.header.push(format!("resources (regs/thread, static smem, local mem if any): {}", res.join(", ")));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------------------------

fn embedding_cases(r: &mut Runner<'_>) {
    for &(t, h, v) in &[(1usize, 48usize, 301usize), (7, 37, 301), (1000, 576, 49152), (333, 4096, 1001)] {
        r.case("embedding", format!("T={t} H={h} V={v}"), 1e-7, |r| {
            let b = Bufs { gpu: r.gpu };
            let table = rand_vec(&mut r.rng, v * h, 1.0);
            let ids: Vec<u32> =
                (0..t).map(|i| if i == 0 { (v - 1) as u32 } else { below(&mut r.rng, v) as u32 }).collect();
            let table_b = to_bf16(&table);
            let d_table = b.up(&table_b)?;
            let d_ids = b.up(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>())?;
            let d_out = b.out::<f32>(t * h)?;
            let ms = r.timed(|| ops::embedding_gather(r.gpu, b.p(&d_ids), b.p(&d_table), b.p(&d_out), t, h, v))?;
            let got = b.down(&d_out, t * h)?;
            let mut want = vec![0f32; t * h];
            cpu::embed(&from_bf16(&table_b), h, &ids, &mut want);
            Ok((compare(&got, &want), ms, String::new()))
        });
    }
}

struct NormCase {
    t: usize,
    h: usize,
    delta: bool,
    bias: bool,
    /// Some(n): gather n random rows, write_x = false (the final norm before the LM head).
    gather: Option<usize>,
    eps: f32,
}

fn norm_cases(r: &mut Runner<'_>) {
    let cases = [
        NormCase { t: 1, h: 576, delta: true, bias: false, gather: None, eps: 1e-5 },
        NormCase { t: 33, h: 37, delta: true, bias: true, gather: None, eps: 1e-6 },
        NormCase { t: 257, h: 4096, delta: true, bias: true, gather: None, eps: 1e-6 },
        NormCase { t: 5, h: 3584, delta: false, bias: false, gather: None, eps: 1e-6 },
        NormCase { t: 100, h: 576, delta: true, bias: true, gather: Some(37), eps: 1e-5 },
        NormCase { t: 64, h: 18, delta: true, bias: false, gather: Some(64), eps: 1e-6 },
    ];
    for (prec, c) in [Precision::Bf16, Precision::Fp32].into_iter().flat_map(|p| cases.iter().map(move |c| (p, c))) {
        let (tol, tag) = act_tol(prec);
        let name = format!(
            "{tag}T={} H={}{}{}{}",
            c.t,
            c.h,
            if c.delta { " +delta" } else { "" },
            if c.bias { " +bias" } else { "" },
            c.gather.map(|n| format!(" gather {n} rows")).unwrap_or_default()
        );
        r.case("rmsnorm", name, tol, |r| {
            let b = Bufs { gpu: r.gpu };
            let (t, h) = (c.t, c.h);
            // A residual stream with a realistic spread, deltas of a similar size.
            let x = rand_vec(&mut r.rng, t * h, 4.0);
            let delta = round_bf16(&rand_vec(&mut r.rng, t * h, 2.0));
            let bias = rand_vec(&mut r.rng, h, 0.5);
            let w: Vec<f32> = (0..h).map(|_| 1.0 + 0.3 * r.rng.next_f32()).collect();
            let rows: Vec<usize> = match c.gather {
                None => (0..t).collect(),
                Some(n) => (0..n).map(|_| below(&mut r.rng, t)).collect(),
            };
            let n = rows.len();
            let d_x = b.up(&x)?;
            let d_delta = b.up(&to_bf16(&delta))?;
            let d_bias = b.up(&bias)?;
            let d_w = b.up(&w)?;
            let d_rows = b.up(&rows.iter().map(|&i| i as i32).collect::<Vec<_>>())?;
            let d_y = b.out::<u8>(n * h * prec.bytes())?;
            let write_x = c.gather.is_none();
            let ms = r.timed(|| {
                ops::rmsnorm_residual(
                    r.gpu,
                    b.p(&d_x),
                    if c.delta { b.p(&d_delta) } else { 0 },
                    if c.bias { b.p(&d_bias) } else { 0 },
                    b.p(&d_w),
                    b.p(&d_y),
                    if c.gather.is_some() { b.p(&d_rows) } else { 0 },
                    n,
                    h,
                    c.eps,
                    write_x,
                    prec,
                )
            })?;
            // Reference: v = (x + delta) + bias in f32, then the CPU RMSNorm of the selected rows.
            let mut v = x.clone();
            for i in 0..t * h {
                if c.delta {
                    v[i] += delta[i];
                }
                if c.bias {
                    v[i] += bias[i % h];
                }
            }
            let sel: Vec<f32> = rows.iter().flat_map(|&i| v[i * h..(i + 1) * h].iter().copied()).collect();
            let mut want_y = vec![0f32; n * h];
            cpu::rms_norm(&sel, &w, c.eps, &mut want_y);
            let got_y = prec.decode(&b.down(&d_y, n * h * prec.bytes())?);
            let got_x = b.down(&d_x, t * h)?;
            let cy = compare(&got_y, &want_y);
            let want_x = if write_x { &v } else { &x };
            let cx = compare(&got_x, want_x);
            // x is fp32 additions in the same order on both sides: it must match to the last bit (≤ 1e-6).
            let x_ok = cx.nan == 0 && cx.rel <= 1e-6;
            let note = format!(
                "x {}: rel {:.1e}{}",
                if write_x { "updated" } else { "untouched" },
                cx.rel,
                if x_ok { "" } else { " WRONG" }
            );
            Ok((Cmp { rel: if x_ok { cy.rel } else { cy.rel.max(1.0) }, ..cy }, ms, note))
        });
    }
}

struct RopeCase {
    heads: usize,
    kv: usize,
    d: usize,
    bias: bool,
    /// Sequence lengths (positions restart at 0 in each); `far` adds tokens at positions near 32K.
    lens: Vec<usize>,
    far: usize,
    /// Qwen3's per-head q/k RMSNorm (the `rope_norm_qkv_split` kernel, which also runs for a YaRN config).
    qk_norm: bool,
    config: fn(usize) -> ModelConfig,
}

fn rope_config_default(d: usize) -> ModelConfig {
    let mut c = tiny_config(Architecture::Qwen2);
    c.head_dim = d;
    c.rope_theta = 1e6;
    c
}

fn rope_config_llama3(d: usize) -> ModelConfig {
    let mut c = tiny_config(Architecture::Llama);
    c.head_dim = d;
    c.rope_theta = 5e5;
    c.rope_scaling = Some(RopeScaling::Llama3(Llama3RopeScaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    }));
    c
}

/// Qwen3's YaRN settings as its model cards give them (factor 4 over an original 32K context).
fn rope_config_yarn(d: usize) -> ModelConfig {
    let mut c = tiny_config(Architecture::Qwen3);
    c.head_dim = d;
    c.rope_theta = 1e6;
    c.rope_scaling = Some(RopeScaling::Yarn(YarnRopeScaling::new(4.0, 32768.0)));
    c
}

fn rope_cases(r: &mut Runner<'_>) {
    let case = |heads, kv, d, bias, lens: &[usize], far, qk_norm, config| RopeCase {
        heads,
        kv,
        d,
        bias,
        lens: lens.to_vec(),
        far,
        qk_norm,
        config,
    };
    type Config = fn(usize) -> ModelConfig;
    let (default, llama3, yarn): (Config, Config, Config) = (rope_config_default, rope_config_llama3, rope_config_yarn);
    let cases = [
        case(9, 3, 64, true, &[1, 17, 300], 0, false, default),
        case(12, 2, 128, true, &[65], 64, false, default),
        case(24, 8, 128, false, &[7, 100], 32, false, llama3),
        case(3, 1, 10, true, &[1, 2, 40], 8, false, default),
        // rope_norm_qkv_split (not yet run on a GPU): Qwen3-0.6B and -8B head shapes, head_dim 64, odd shapes,
        // YaRN's attention factor with and without the norm, positions past 32K.
        case(16, 8, 128, false, &[1, 17, 300], 32, true, default),
        case(32, 8, 128, false, &[7, 100], 32, true, yarn),
        case(9, 3, 64, true, &[65, 2], 16, true, default),
        case(3, 1, 10, true, &[1, 2, 40], 8, true, default),
        case(5, 1, 64, false, &[33], 8, false, yarn),
    ];
    for (prec, c) in [Precision::Bf16, Precision::Fp32].into_iter().flat_map(|p| cases.iter().map(move |c| (p, c))) {
        let (tol, tag) = act_tol(prec);
        let name = format!(
            "{tag}H={} Hkv={} D={}{} lens {:?}{}",
            c.heads,
            c.kv,
            c.d,
            if c.bias { " +bias" } else { "" },
            c.lens,
            if c.far > 0 { format!(" +{} far pos", c.far) } else { String::new() }
        );
        let scaling = match (c.config)(c.d).rope_scaling {
            Some(RopeScaling::Llama3(_)) => " llama3",
            Some(RopeScaling::Yarn(_)) => " yarn",
            Some(RopeScaling::Linear { .. }) => " linear",
            None => "",
        };
        let name = format!("{name}{}{scaling}", if c.qk_norm { " +qk-norm" } else { "" });
        r.case("rope", name, tol, |r| {
            let b = Bufs { gpu: r.gpu };
            let (nh, nkv, d) = (c.heads, c.kv, c.d);
            let mut positions: Vec<u32> = c.lens.iter().flat_map(|&l| 0..l as u32).collect();
            // Far positions: near 32K, or up to 131K for a YaRN config (the context it extends to).
            let top = if (c.config)(c.d).rope_attention_factor() != 1.0 { 131072 } else { 32768 };
            positions.extend((0..c.far).map(|_| top - 1 - below(&mut r.rng, 4096) as u32));
            let t = positions.len();
            let w = (nh + 2 * nkv) * d;
            let qkv = round_act(&rand_vec(&mut r.rng, t * w, 3.0), prec);
            let bias = rand_vec(&mut r.rng, w, 0.5);
            let config = (c.config)(d);
            let inv = cpu::rope_inv_freq_f32(&config);
            let factor = config.rope_attention_factor() as f32;
            let eps = config.rms_norm_eps as f32;
            let (q_norm, k_norm) = (rand_vec(&mut r.rng, d, 0.5), rand_vec(&mut r.rng, d, 0.5));
            let (q_norm, k_norm): (Vec<f32>, Vec<f32>) =
                (q_norm.iter().map(|x| 1.0 + x).collect(), k_norm.iter().map(|x| 1.0 + x).collect());
            let d_qn = b.up(&q_norm)?;
            let d_kn = b.up(&k_norm)?;
            let d_qkv = b.up(&prec.encode(&qkv))?;
            let d_bias = b.up(&bias)?;
            let d_pos = b.up(&positions.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
            let d_inv = b.up(&inv)?;
            let eb = prec.bytes();
            let (d_q, d_k, d_v) =
                (b.out::<u8>(t * nh * d * eb)?, b.out::<u8>(t * nkv * d * eb)?, b.out::<u8>(t * nkv * d * eb)?);
            let bias_p = if c.bias { b.p(&d_bias) } else { 0 };
            let (pq, pk, pv) = (b.p(&d_q), b.p(&d_k), b.p(&d_v));
            let fused = c.qk_norm || factor != 1.0;
            let norm = ops::QkNormRope {
                q_norm: if c.qk_norm { b.p(&d_qn) } else { 0 },
                k_norm: if c.qk_norm { b.p(&d_kn) } else { 0 },
                eps,
                attention_factor: factor,
            };
            let ms = r.timed(|| {
                let (qkv, pos, inv) = (b.p(&d_qkv), b.p(&d_pos), b.p(&d_inv));
                let norm = fused.then_some(&norm);
                ops::rope_qkv_split(r.gpu, qkv, bias_p, pos, inv, norm, pq, pk, pv, t, nh, nkv, d, prec)
            })?;
            let (qw, kw) = (nh * d, nkv * d);
            let (mut q, mut k, mut v) = (vec![0f32; t * qw], vec![0f32; t * kw], vec![0f32; t * kw]);
            for i in 0..t {
                let row: Vec<f32> = (0..w).map(|j| qkv[i * w + j] + if c.bias { bias[j] } else { 0.0 }).collect();
                q[i * qw..(i + 1) * qw].copy_from_slice(&row[..qw]);
                k[i * kw..(i + 1) * kw].copy_from_slice(&row[qw..qw + kw]);
                v[i * kw..(i + 1) * kw].copy_from_slice(&row[qw + kw..]);
            }
            if c.qk_norm {
                cpu::rms_norm_inplace(&mut q, &q_norm, eps);
                cpu::rms_norm_inplace(&mut k, &k_norm, eps);
            }
            cpu::rope_scaled_inplace(&mut q, &positions, nh, d, &inv, factor);
            cpu::rope_scaled_inplace(&mut k, &positions, nkv, d, &inv, factor);
            let cq = compare(&prec.decode(&b.down(&d_q, t * qw * eb)?), &q);
            let ck = compare(&prec.decode(&b.down(&d_k, t * kw * eb)?), &k);
            let cv = compare(&prec.decode(&b.down(&d_v, t * kw * eb)?), &v);
            let note = format!("q {:.1e} k {:.1e} v {:.1e}", cq.rel, ck.rel, cv.rel);
            Ok((merge(merge(cq, ck), cv), ms, note))
        });
    }
}

fn swiglu_cases(r: &mut Runner<'_>) {
    let cases = [(1usize, 83usize, true), (17, 1, false), (300, 8960, false), (1024, 4864, true), (3, 18944, true)];
    for (prec, &(t, inter, bias)) in
        [Precision::Bf16, Precision::Fp32].into_iter().flat_map(|p| cases.iter().map(move |c| (p, c)))
    {
        let (tol, tag) = act_tol(prec);
        r.case("swiglu", format!("{tag}T={t} I={inter}{}", if bias { " +bias" } else { "" }), tol, |r| {
            let b = Bufs { gpu: r.gpu };
            let gu = round_act(&rand_vec(&mut r.rng, t * 2 * inter, 6.0), prec);
            let bvec = rand_vec(&mut r.rng, 2 * inter, 0.5);
            let d_gu = b.up(&prec.encode(&gu))?;
            let d_b = b.up(&bvec)?;
            let d_out = b.out::<u8>(t * inter * prec.bytes())?;
            let bias_p = if bias { b.p(&d_b) } else { 0 };
            let ms = r.timed(|| ops::swiglu(r.gpu, b.p(&d_gu), bias_p, b.p(&d_out), t, inter, prec))?;
            let (mut g, mut u) = (vec![0f32; t * inter], vec![0f32; t * inter]);
            for i in 0..t {
                for j in 0..inter {
                    let (bg, bu) = if bias { (bvec[j], bvec[inter + j]) } else { (0.0, 0.0) };
                    g[i * inter + j] = gu[i * 2 * inter + j] + bg;
                    u[i * inter + j] = gu[i * 2 * inter + inter + j] + bu;
                }
            }
            let mut want = vec![0f32; t * inter];
            cpu::silu_mul(&g, &u, &mut want);
            Ok((compare(&prec.decode(&b.down(&d_out, t * inter * prec.bytes())?), &want), ms, String::new()))
        });
    }
}

/// The fp32-activation GEMM input split: hi must be bf16(x) exactly and hi + lo must equal x to 2^-16.
fn split_cases(r: &mut Runner<'_>) {
    for n in [1usize, 1000, 3 * 4096 * 1536 + 7] {
        r.case("split", format!("[fp32] hi/lo bf16 halves of n={n}"), 1.6e-5, |r| {
            let b = Bufs { gpu: r.gpu };
            let x: Vec<f32> = (0..n).map(|_| 100.0 * r.rng.next_f32() * (8.0 * r.rng.next_f32()).exp()).collect();
            let d_x = b.up(&x)?;
            let (d_hi, d_lo) = (b.out::<bf16>(n)?, b.out::<bf16>(n)?);
            let ms = r.timed(|| ops::split_bf16(r.gpu, b.p(&d_x), b.p(&d_hi), b.p(&d_lo), n))?;
            let (hi, lo) = (from_bf16(&b.down(&d_hi, n)?), from_bf16(&b.down(&d_lo, n)?));
            let hi_exact = hi.iter().zip(&x).all(|(h, &x)| *h == bf16::from_f32(x).to_f32());
            let worst =
                hi.iter().zip(&lo).zip(&x).map(|((h, l), &x)| ((h + l - x) / x).abs() as f64).fold(0.0, f64::max);
            let cmp = Cmp { rel: if hi_exact { worst } else { worst.max(1.0) }, max_abs: worst, nan: 0 };
            Ok((
                cmp,
                ms,
                format!("max |hi + lo − x|/|x| {worst:.1e}; hi = bf16(x) {}", if hi_exact { "exactly" } else { "NOT" }),
            ))
        });
    }
}

fn gemm_cases(r: &mut Runner<'_>) {
    let cases = [
        (1usize, 301usize, 48usize, OutType::Bf16),
        (333, 1000, 576, OutType::Bf16),
        (4096, 1536, 1536, OutType::Bf16),
        (130, 18944, 3584, OutType::Bf16),
        (64, 49152, 576, OutType::F32),
        (7, 151936, 1536, OutType::F32),
        (5, 32003, 37, OutType::F32),
        (333, 576, 1536, OutType::F32Accumulate),
        (4096, 3584, 3584, OutType::F32Accumulate),
    ];
    for (m, n, k, ty) in cases {
        let tol = if ty == OutType::Bf16 { 4e-3 } else { 1e-5 };
        r.case("gemm", format!("cuBLAS {m}x{k} · ({n}x{k})ᵀ → {ty:?}"), tol, |r| {
            let b = Bufs { gpu: r.gpu };
            let x = round_bf16(&rand_vec(&mut r.rng, m * k, 1.0));
            let w = round_bf16(&rand_vec(&mut r.rng, n * k, 1.0 / (k as f32).sqrt()));
            let d_x = b.up(&to_bf16(&x))?;
            let d_w = b.up(&to_bf16(&w))?;
            let mut want = vec![0f32; m * n];
            cpu::matmul_bt(&x, m, k, &w, n, &mut want);
            let (got, ms) = match ty {
                OutType::F32Accumulate => {
                    // out starts as a residual stream; the GEMM adds to it.
                    let init = rand_vec(&mut r.rng, m * n, 3.0);
                    want.iter_mut().zip(&init).for_each(|(w, i)| *w += i);
                    let d_o = b.up(&init)?;
                    let ms = r.timed(|| ops::gemm_bt(r.gpu, b.p(&d_x), b.p(&d_w), b.p(&d_o), m, n, k, ty))?;
                    (b.down(&d_o, m * n)?, ms)
                }
                OutType::F32 => {
                    let d_o = b.out::<f32>(m * n)?;
                    let ms = r.timed(|| ops::gemm_bt(r.gpu, b.p(&d_x), b.p(&d_w), b.p(&d_o), m, n, k, ty))?;
                    (b.down(&d_o, m * n)?, ms)
                }
                OutType::Bf16 => {
                    let d_o = b.out::<bf16>(m * n)?;
                    let ms = r.timed(|| ops::gemm_bt(r.gpu, b.p(&d_x), b.p(&d_w), b.p(&d_o), m, n, k, ty))?;
                    (from_bf16(&b.down(&d_o, m * n)?), ms)
                }
            };
            let tflops = 2.0 * (m * n * k) as f64 / (ms * 1e-3) / 1e12;
            Ok((compare(&got, &want), ms, format!("{tflops:.1} TFLOP/s incl. launch (not a benchmark)")))
        });
    }
}

struct AttnCase {
    name: &'static str,
    heads: usize,
    kv: usize,
    d: usize,
    lens: Vec<usize>,
    /// q is drawn at this multiple of the k scale: 1 gives a flat softmax, 5 a peaked one.
    q_scale: f32,
}

/// Each case through the kernel chosen for its head_dim and, when that is a tensor-core kernel, through
/// `attention_varlen_generic` as well: both against the CPU reference, and the two GPU outputs against each other.
fn attention_cases(r: &mut Runner<'_>, long_len: usize) {
    let mut many_short: Vec<usize> = (0..40).map(|_| 1 + below(&mut r.rng, 30)).collect();
    many_short.insert(17, long_len);
    let cases = vec![
        AttnCase { name: "1 token", heads: 9, kv: 3, d: 64, lens: vec![1], q_scale: 1.0 },
        AttnCase { name: "tile edges", heads: 9, kv: 3, d: 64, lens: vec![1, 64, 65, 3, 130], q_scale: 1.0 },
        AttnCase { name: "tile edges peaked", heads: 9, kv: 3, d: 64, lens: vec![1, 64, 65, 3, 130], q_scale: 5.0 },
        AttnCase { name: "empty seq in pack", heads: 9, kv: 3, d: 64, lens: vec![5, 0, 9], q_scale: 1.0 },
        AttnCase { name: "40 short + 1 long", heads: 9, kv: 3, d: 64, lens: many_short.clone(), q_scale: 5.0 },
        AttnCase { name: "MHA (no GQA)", heads: 4, kv: 4, d: 64, lens: vec![130, 7], q_scale: 1.0 },
        AttnCase { name: "1 token", heads: 12, kv: 2, d: 128, lens: vec![1], q_scale: 1.0 },
        AttnCase { name: "tile edges", heads: 12, kv: 2, d: 128, lens: vec![63, 64, 65, 129, 1000], q_scale: 1.0 },
        AttnCase { name: "40 short + 1 long", heads: 12, kv: 2, d: 128, lens: many_short.clone(), q_scale: 1.0 },
        AttnCase { name: "peaked", heads: 28, kv: 4, d: 128, lens: vec![300, 1, 77], q_scale: 5.0 },
        AttnCase { name: "one 8192 seq", heads: 28, kv: 4, d: 128, lens: vec![8192], q_scale: 1.0 },
        AttnCase { name: "odd D", heads: 4, kv: 2, d: 80, lens: vec![1, 5, 100], q_scale: 1.0 },
        AttnCase { name: "odd D peaked", heads: 6, kv: 2, d: 40, lens: vec![1, 33, 2, 200], q_scale: 5.0 },
        AttnCase { name: "tiny D", heads: 6, kv: 2, d: 8, lens: vec![1, 33, 2], q_scale: 1.0 },
        AttnCase { name: "D=256", heads: 2, kv: 1, d: 256, lens: vec![70, 1], q_scale: 1.0 },
    ];
    for c in cases {
        let total: usize = c.lens.iter().sum();
        let best = match AttentionKernel::for_head_dim(c.d) {
            Ok(k) => k,
            Err(e) => {
                push_fail(&mut r.report, "attention", format!("{} D={}", c.name, c.d), format!("error: {e}"));
                continue;
            }
        };
        let shape = format!("{} H={} Hkv={} D={} T={total} ({} seqs)", c.name, c.heads, c.kv, c.d, c.lens.len());
        // Inputs shared by both kernels.
        let (nh, nkv, d) = (c.heads, c.kv, c.d);
        let mut cu_host = vec![0usize];
        for &l in &c.lens {
            cu_host.push(cu_host.last().copied().unwrap_or(0) + l);
        }
        let kscale = 1.0 / (d as f32).sqrt().sqrt();
        let q = round_bf16(&rand_vec(&mut r.rng, total * nh * d, c.q_scale * kscale * 1.7));
        let k = round_bf16(&rand_vec(&mut r.rng, total * nkv * d, kscale * 1.7));
        let v = round_bf16(&rand_vec(&mut r.rng, total * nkv * d, 1.0));
        let mut want = vec![0f32; total * nh * d];
        cpu::attention_causal(&q, &k, &v, &cu_host, nh, nkv, d, &mut want);
        let mut outs: Vec<Option<Vec<f32>>> = Vec::new();
        let mut kinds: Vec<AttentionKernel> =
            if best == AttentionKernel::Generic { vec![best] } else { vec![best, AttentionKernel::Generic] };
        // Every other tensor-core variant (64- vs 128-row tiles, 16 vs 32 rows per warp), so all are always checked.
        kinds.extend(AttentionKernel::tensor_core_variants(c.d).iter().filter(|&&k| k != best));
        // The fp32 kernel on the same (bf16-valued) inputs: a tighter bound, the generic kernel's arithmetic.
        kinds.push(AttentionKernel::GenericF32);
        for kind in kinds {
            let kname = kind.entry_point().trim_start_matches("attention_varlen_");
            let mut got_out = None;
            let tol = if kind == AttentionKernel::GenericF32 { 1e-5 } else { 1e-2 };
            let max_abs_bound = if kind == AttentionKernel::GenericF32 { 1e-4 } else { 3e-2 };
            r.case("attention", format!("{kname} {shape}"), tol, |r| {
                let got = run_attention(r, kind, &c, &cu_host, &q, &k, &v)?;
                let (got, ms) = got;
                let mut worst = (0.0f64, 0usize);
                for s in 0..c.lens.len() {
                    let (a, z) = (cu_host[s] * nh * d, cu_host[s + 1] * nh * d);
                    if z > a {
                        let cs = compare(&got[a..z], &want[a..z]);
                        let e = if cs.nan > 0 { f64::INFINITY } else { cs.rel };
                        if e > worst.0 {
                            worst = (e, s);
                        }
                    }
                }
                let cmp = compare(&got, &want);
                got_out = Some(got);
                let cmp = if cmp.max_abs > max_abs_bound { Cmp { rel: cmp.rel.max(1.0), ..cmp } } else { cmp };
                let flops = causal_flops(&c.lens, HeadShape { num_heads: nh, num_kv_heads: nkv, head_dim: d });
                Ok((
                    cmp,
                    ms,
                    format!(
                        "worst seq #{} (len {}) rel {:.1e}; max|Δ| bound {max_abs_bound:.0e}; {:.0} TFLOP/s",
                        worst.1,
                        c.lens[worst.1],
                        worst.0,
                        flops / (ms.max(1e-9) * 1e-3) / 1e12
                    ),
                ))
            });
            outs.push(got_out);
        }
        if let [Some(tc), Some(gen), ..] = &outs[..] {
            r.case("attention", format!("tensor-core vs generic {shape}"), 1e-2, |_| {
                Ok((compare(tc, gen), 0.0, "both GPU outputs".into()))
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_attention(
    r: &mut Runner<'_>,
    kind: AttentionKernel,
    c: &AttnCase,
    cu_host: &[usize],
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Result<(Vec<f32>, f64)> {
    let b = Bufs { gpu: r.gpu };
    let total = *cu_host.last().unwrap_or(&0);
    let cu_i32: Vec<i32> = cu_host.iter().map(|&x| x as i32).collect();
    let p = kind.precision();
    let (d_q, d_k, d_v) = (b.up(&p.encode(q))?, b.up(&p.encode(k))?, b.up(&p.encode(v))?);
    let d_out = b.out::<u8>(total * c.heads * c.d * p.bytes())?;
    let d_cu = b.up(&cu_i32)?;
    let tiles = TileTable::build(&cu_i32, kind.query_tile())?;
    let d_tiles = b.up(&tiles.data)?;
    let args = attention::AttentionArgs {
        q: b.p(&d_q),
        k: b.p(&d_k),
        v: b.p(&d_v),
        out: b.p(&d_out),
        cu_seqlens: b.p(&d_cu),
        tiles: b.p(&d_tiles),
        num_seqs: c.lens.len(),
        num_tiles: tiles.num_tiles,
        total_tokens: total,
        num_heads: c.heads,
        num_kv_heads: c.kv,
        head_dim: c.d,
        softmax_scale: 1.0 / (c.d as f32).sqrt(),
        precision: p,
        query_tile: kind.query_tile(),
    };
    let ms = r.timed(|| attention::attention(r.gpu, Some(kind), &args))?;
    Ok((p.decode(&b.down(&d_out, total * c.heads * c.d * p.bytes())?), ms))
}

/// Kinds of logit rows (K's list in KERNELS.md): each stresses a different part of the one-pass reduction.
#[derive(Debug, Clone, Copy)]
enum RowKind {
    /// uniform in ±5 (≈ N(0, 3²))
    Normal,
    /// ±30 spread around an offset of ±1e4 (needs the max subtraction)
    Huge,
    /// ±1e-3 (near uniform)
    Flat,
    /// integers in [−6, 6]: massive ties, the gold tied with the row max or with others
    Ties,
    /// one logit at +40 above a normal row
    Peaked,
}

fn fill_row(rng: &mut SplitMix, z: &mut [f32], kind: RowKind) {
    match kind {
        RowKind::Normal => z.iter_mut().for_each(|x| *x = 5.0 * rng.next_f32()),
        RowKind::Huge => {
            let off = if rng.next_u64().is_multiple_of(2) { 1e4 } else { -1e4 };
            z.iter_mut().for_each(|x| *x = off + 30.0 * rng.next_f32());
        }
        RowKind::Flat => z.iter_mut().for_each(|x| *x = 1e-3 * rng.next_f32()),
        RowKind::Ties => z.iter_mut().for_each(|x| *x = (6.5 * rng.next_f32()).round()),
        RowKind::Peaked => {
            z.iter_mut().for_each(|x| *x = 3.0 * rng.next_f32());
            let j = below(rng, z.len());
            z[j] = 40.0;
        }
    }
}

/// Statistics against `vocab_stats_row` / `topk_brier` (fp64 on the CPU). `rel` is the worst ratio error/bound
/// over the fields, bounds (KERNELS.md): lse and log p ≤ 1e-5·max(1, |ref|); Σπ² ≤ 1e-5 relative; entropy ≤ 1e-5
/// relative + 1e-7; top-K Brier ≤ 1e-5 absolute. Ranks must be equal. A row with gold = −1 must give NaN log p
/// and rank 0 (and NaN top-K Brier).
fn vocab_cases(r: &mut Runner<'_>) {
    // (rows, vocab, row stride, top-K values)
    let cases: Vec<(usize, usize, usize, Vec<usize>)> = vec![
        (10, 1, 1, vec![1]),
        (10, 7, 8, vec![1, 3, 50]),
        (20, 33, 34, vec![50]),
        (64, 301, 301, vec![50]),
        (20, 1030, 1033, vec![1, 50, 1024, 2000]),
        (33, 32003, 32003, vec![50]),
        (10, 49152, 49153, vec![50, 1024]),
        (20, 151936, 151936, vec![1, 50, 1024]),
        (10, 128256, 128259, vec![50, 200_000]),
        (400, 1000, 1000, vec![]),
    ];
    let kinds = [RowKind::Normal, RowKind::Huge, RowKind::Flat, RowKind::Ties, RowKind::Peaked];
    for (rows, vocab, stride, topks) in cases {
        let name = format!("rows={rows} V={vocab} stride={stride} top-K {topks:?}");
        r.case("vocab", name, 1.0, |r| {
            let b = Bufs { gpu: r.gpu };
            let mut logits = vec![0f32; rows * stride];
            let mut gold: Vec<i32> = Vec::with_capacity(rows);
            for row in 0..rows {
                let kind = kinds[row % kinds.len()];
                let z = &mut logits[row * stride..row * stride + vocab];
                fill_row(&mut r.rng, z, kind);
                let g = match (row / kinds.len()) % 4 {
                    0 => (0..vocab).max_by(|&a, &b| z[a].total_cmp(&z[b]).then(b.cmp(&a))).unwrap_or(0),
                    1 => 0,
                    2 => vocab - 1,
                    _ => below(&mut r.rng, vocab),
                };
                gold.push(g as i32);
            }
            let bad_row = if rows > 3 { Some(3) } else { None };
            if let Some(i) = bad_row {
                gold[i] = -1;
            }
            let d_logits = b.up(&logits)?;
            let d_gold = b.up(&gold)?;
            let (d_lse, d_lp, d_p2, d_h) =
                (b.out::<f32>(rows)?, b.out::<f32>(rows)?, b.out::<f32>(rows)?, b.out::<f32>(rows)?);
            let d_rank = b.out::<u32>(rows)?;
            let block = LogitsBlock { logits: b.p(&d_logits), gold: b.p(&d_gold), rows, vocab, row_stride: stride };
            let outs = StatsOut {
                lse: b.p(&d_lse),
                logprob: b.p(&d_lp),
                sum_p2: b.p(&d_p2),
                entropy: b.p(&d_h),
                rank: b.p(&d_rank),
            };
            let ms = r.timed(|| vocab_stats::vocab_stats(r.gpu, &block, &outs))?;
            let (lse, lp, p2, h) =
                (b.down(&d_lse, rows)?, b.down(&d_lp, rows)?, b.down(&d_p2, rows)?, b.down(&d_h, rows)?);
            let rank = b.down(&d_rank, rows)?;
            let mut topk_out = Vec::new();
            for &k in &topks {
                let d_t = b.out::<f32>(rows)?;
                r.timed(|| vocab_stats::topk_brier(r.gpu, &block, k, b.p(&d_t)))?;
                topk_out.push((k, b.down(&d_t, rows)?));
            }
            let opts = StatsOptions { topk_brier: None };
            let mut field_worst = [0f64; 5]; // error / bound per field
            let (mut max_abs, mut nan, mut rank_bad, mut bad_row_wrong) = (0f64, 0usize, 0usize, false);
            for row in 0..rows {
                if Some(row) == bad_row {
                    let topk_nan = topk_out.iter().all(|(_, t)| t[row].is_nan());
                    bad_row_wrong = !(lp[row].is_nan() && rank[row] == 0 && topk_nan);
                    continue;
                }
                let z = &logits[row * stride..row * stride + vocab];
                let want = vocab_stats_row(z, gold[row] as u32, &opts);
                let f = |x: f32| x as f64;
                let errs = [
                    (f(lse[row]) - f(want.lse)).abs() / (1e-5 * f(want.lse).abs().max(1.0)),
                    (f(lp[row]) - f(want.logprob)).abs() / (1e-5 * f(want.logprob).abs().max(1.0)),
                    (f(p2[row]) - f(want.sum_p2)).abs() / (1e-5 * f(want.sum_p2).max(1e-30)),
                    (f(h[row]) - f(want.entropy)).abs() / (1e-5 * f(want.entropy).abs() + 1e-7),
                    topk_out
                        .iter()
                        .map(|(k, t)| (f(t[row]) - topk_brier(z, gold[row] as u32, *k)).abs() / 1e-5)
                        .fold(0.0, f64::max),
                ];
                for (i, e) in errs.iter().enumerate() {
                    if e.is_nan() {
                        nan += 1;
                    } else {
                        field_worst[i] = field_worst[i].max(*e);
                    }
                }
                max_abs = max_abs.max((lp[row] - want.logprob).abs() as f64);
                rank_bad += (rank[row] != want.rank) as usize;
            }
            let worst = field_worst.iter().cloned().fold(0.0, f64::max);
            let mut note = format!(
                "err/bound: lse {:.2} logp {:.2} Σπ² {:.2} H {:.2} topK {:.2}; rank mismatches {rank_bad}",
                field_worst[0], field_worst[1], field_worst[2], field_worst[3], field_worst[4]
            );
            if bad_row_wrong {
                note.push_str("; gold=-1 row NOT NaN/rank 0");
            }
            let rel = if rank_bad > 0 || bad_row_wrong { worst.max(2.0) } else { worst };
            Ok((Cmp { rel, max_abs, nan }, ms, note))
        });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Whole models
// ---------------------------------------------------------------------------------------------------------------

/// The random-weight configurations: Qwen2 with q/k/v bias at head_dim 64 and 128, and a tied Llama with llama3
/// rope scaling. Vocabularies are deliberately not multiples of 8.
pub(crate) fn random_configs() -> Vec<(&'static str, ModelConfig)> {
    let base = |arch| {
        let mut c = tiny_config(arch);
        c.declared_dtype = Some("bfloat16".into());
        c.max_position_embeddings = 32768;
        c
    };
    let mut q64 = base(Architecture::Qwen2);
    (q64.vocab_size, q64.hidden_size, q64.intermediate_size, q64.num_layers) = (32003, 576, 1536, 4);
    (q64.num_heads, q64.num_kv_heads, q64.head_dim, q64.rope_theta) = (9, 3, 64, 1e6);
    q64.tie_word_embeddings = false;
    let mut q128 = base(Architecture::Qwen2);
    (q128.vocab_size, q128.hidden_size, q128.intermediate_size, q128.num_layers) = (50021, 1536, 4096, 3);
    (q128.num_heads, q128.num_kv_heads, q128.head_dim, q128.rope_theta) = (12, 2, 128, 1e6);
    q128.tie_word_embeddings = true;
    let mut l64 = base(Architecture::Llama);
    (l64.vocab_size, l64.hidden_size, l64.intermediate_size, l64.num_layers) = (12007, 512, 1376, 3);
    (l64.num_heads, l64.num_kv_heads, l64.head_dim, l64.rope_theta) = (8, 2, 64, 5e5);
    l64.rope_scaling = Some(RopeScaling::Llama3(Llama3RopeScaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    }));
    l64.qkv_bias = false;
    l64.tie_word_embeddings = true;
    // Qwen3: per-head q/k norm, head_dim 128 ≠ hidden/heads = 64 (q is wider than the hidden state, as in
    // Qwen3-0.6B), YaRN (the rope_norm_qkv_split kernel, not yet run on a GPU).
    let mut q3 = base(Architecture::Qwen3);
    (q3.vocab_size, q3.hidden_size, q3.intermediate_size, q3.num_layers) = (15013, 512, 1536, 3);
    (q3.num_heads, q3.num_kv_heads, q3.head_dim) = (8, 4, 128);
    q3.rope_scaling = rope_config_yarn(128).rope_scaling;
    q3.rope_theta = 1e6;
    q3.qkv_bias = false;
    q3.tie_word_embeddings = true;
    vec![
        ("random Qwen2 D=64 +qkv bias", q64),
        ("random Qwen2 D=128 +qkv bias tied", q128),
        ("random Llama D=64 llama3-rope tied", l64),
        ("random Qwen3 D=128 q/k-norm yarn tied", q3),
    ]
}

/// A random-weight model (bf16, so the CPU and GPU compute from identical weights) whose logits have the spread
/// of a trained LM. With `random_values`' ±1 embeddings and norms ≈ 1 the logits of a random model have a standard
/// deviation of √(H/3) ≈ 14–23 nats, and bf16 rounding of the final hidden state alone (inherent to a bf16 LM
/// head, HF's included) then moves log p by ~0.03 nats per token; the final norm weight is scaled to give logits
/// of std ≈ 3, so the 0.05-nat bound tests the engine, not that artefact. A tied model's embedding is also scaled
/// by 0.05: at full scale the input embedding dominates the residual stream of random layers, and every position
/// predicts its own token with probability 1 (Σπ² = 1 exactly: a degenerate comparison).
fn write_selftest_model(dir: &std::path::Path, cfg: &ModelConfig, seed: u64) -> Result<()> {
    write_random_model(dir, cfg, StoredDtype::BF16, seed)?;
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| LarkError::io(&path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| LarkError::Other(format!("{}: {e}", path.display())))?;
    let embed_scale = if cfg.tie_word_embeddings { 0.05f32 } else { 1.0 };
    let norm_scale = 3.0 / (embed_scale * (cfg.hidden_size as f32 / 3.0).sqrt());
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        let scale = match name.as_str() {
            crate::model::FINAL_NORM => norm_scale,
            crate::model::EMBED => embed_scale,
            _ => 1.0,
        };
        if scale != 1.0 {
            for c in data.chunks_exact_mut(2) {
                let v = bf16::from_le_bytes([c[0], c[1]]).to_f32() * scale;
                c.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
        }
        owned.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| LarkError::Other(format!("{n}: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| LarkError::Other(format!("{}: writing safetensors: {e}", path.display())))
}

/// The whole-model pack: a 1-token sequence (nothing scored), a 2-token one, short ones, a 300-token one and one
/// long one, every sequence scored from a different offset.
fn model_batch(rng: &mut SplitMix, vocab: usize, long_len: usize) -> Vec<(Vec<u32>, usize)> {
    let mut lens: Vec<(usize, usize)> = vec![(1, 1), (2, 1), (37, 5), (300, 100), (long_len, long_len / 2)];
    for _ in 0..12 {
        let l = 3 + below(rng, 60);
        lens.push((l, 1 + below(rng, l - 1)));
    }
    // Token ids from a smaller range now and then repeat, which gives a trained model something to predict.
    let range = vocab.min(5000);
    lens.into_iter().map(|(l, from)| ((0..l).map(|_| below(rng, range) as u32).collect(), from)).collect()
}

/// Token sequences from a JSON file: either a list of lists of ids (scored from position 1), or the golden fixture
/// format `{"sequences": [{"ids": [...], "n_prompt_ids": n}, ...]}` (scored from the end of the prompt).
pub fn load_ids(path: &std::path::Path) -> Result<Vec<(Vec<u32>, usize)>> {
    let text = std::fs::read_to_string(path).map_err(|e| LarkError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| LarkError::input(format!("{}:{}", path.display(), e.line()), format!("invalid JSON: {e}")))?;
    let bad = |m: &str| LarkError::input(path.display().to_string(), m.to_string());
    let ids_of = |x: &serde_json::Value| -> Result<Vec<u32>> {
        x.as_array()
            .ok_or_else(|| bad("expected an array of token ids"))?
            .iter()
            .map(|i| i.as_u64().filter(|&i| i <= u32::MAX as u64).map(|i| i as u32).ok_or_else(|| bad("bad token id")))
            .collect()
    };
    let mut out = Vec::new();
    match v.get("sequences").and_then(|s| s.as_array()) {
        Some(seqs) => {
            for s in seqs {
                let ids = ids_of(s.get("ids").ok_or_else(|| bad("a sequence without `ids`"))?)?;
                let from = s.get("n_prompt_ids").and_then(|n| n.as_u64()).unwrap_or(1) as usize;
                out.push((ids, from));
            }
        }
        None => {
            for s in v.as_array().ok_or_else(|| bad("expected a list of lists of ids or {sequences: [...]}"))? {
                out.push((ids_of(s)?, 1));
            }
        }
    }
    out.retain(|(ids, _)| ids.len() >= 2);
    for (ids, from) in out.iter_mut() {
        *from = (*from).clamp(1, ids.len() - 1);
    }
    Ok(out)
}

/// The whole-model pack for a real model: the same edge cases as [`model_batch`] (1 token, 2 tokens, a 300-token
/// sequence at index 3 for the batch-invariance check) cut from real text, then every text sequence whole.
fn text_batch(text: &[(Vec<u32>, usize)]) -> Vec<(Vec<u32>, usize)> {
    let longest = text.iter().max_by_key(|(ids, _)| ids.len()).map(|(ids, _)| ids.clone()).unwrap_or_default();
    let mut out = vec![(longest[..1].to_vec(), 1), (longest[..2].to_vec(), 1)];
    let short = text.iter().min_by_key(|(ids, _)| ids.len()).cloned().unwrap_or_default();
    out.push(short);
    let n = longest.len().min(300);
    out.push((longest[..n].to_vec(), (n / 3).max(1)));
    out.extend(text.iter().cloned());
    out
}

/// Sequences with fewer scored tokens are left out of the per-sequence measures (a trajectory has hundreds).
const SEQ_MIN: usize = 32;

/// Per-token and per-sequence agreement of two sets of statistics.
struct Agreement {
    tokens: usize,
    max_dlogp: f64,
    mean_dlogp: f64,
    /// Median and 99th percentile of the per-token |Δ log p|.
    p50_dlogp: f64,
    p99_dlogp: f64,
    /// Fraction of tokens with |Δ log p| ≤ 0.05 nats.
    frac_within: f64,
    /// Max over sequences (≥ SEQ_MIN scored tokens) of |mean Δ log p|: the trajectory-level NLL difference.
    max_seq_dnll: f64,
    /// Max over sequences (≥ SEQ_MIN scored tokens) of |mean Δ top-50 Brier|.
    max_seq_dtopk: f64,
    max_seq_rel_p2: f64,
    max_tok_rel_p2: f64,
    max_dlse: f64,
    max_dentropy: f64,
    max_dtopk: f64,
    rank_equal: f64,
    top1_agree: f64,
    nan: usize,
}

fn agreement(gpu: &[Vec<TokenStats>], cpu: &[Vec<TokenStats>]) -> Agreement {
    let mut a = Agreement {
        tokens: 0,
        max_dlogp: 0.0,
        mean_dlogp: 0.0,
        p50_dlogp: 0.0,
        p99_dlogp: 0.0,
        frac_within: 0.0,
        max_seq_dnll: 0.0,
        max_seq_dtopk: 0.0,
        max_seq_rel_p2: 0.0,
        max_tok_rel_p2: 0.0,
        max_dlse: 0.0,
        max_dentropy: 0.0,
        max_dtopk: 0.0,
        rank_equal: 0.0,
        top1_agree: 0.0,
        nan: 0,
    };
    let (mut sum_d, mut eq, mut top1) = (0f64, 0usize, 0usize);
    let mut all_d = Vec::new();
    for (g, c) in gpu.iter().zip(cpu) {
        if g.len() != c.len() {
            a.nan += g.len().abs_diff(c.len()) + 1;
            continue;
        }
        let (mut sg, mut sc, mut sd, mut n_seq, mut stk) = (0f64, 0f64, 0f64, 0usize, 0f64);
        for (x, y) in g.iter().zip(c) {
            let fields = [x.logprob, x.lse, x.sum_p2, x.entropy];
            if fields.iter().any(|f| !f.is_finite()) || (y.topk_brier.is_finite() && !x.topk_brier.is_finite()) {
                a.nan += 1;
                continue;
            }
            let signed = (x.logprob - y.logprob) as f64;
            let d = signed.abs();
            a.max_dlogp = a.max_dlogp.max(d);
            sum_d += d;
            all_d.push(d);
            sd += signed;
            n_seq += 1;
            a.max_dlse = a.max_dlse.max((x.lse - y.lse).abs() as f64);
            a.max_dentropy = a.max_dentropy.max((x.entropy - y.entropy).abs() as f64);
            if y.topk_brier.is_finite() {
                a.max_dtopk = a.max_dtopk.max((x.topk_brier - y.topk_brier).abs() as f64);
                stk += (x.topk_brier - y.topk_brier) as f64;
            }
            a.max_tok_rel_p2 = a.max_tok_rel_p2.max(((x.sum_p2 - y.sum_p2).abs() / y.sum_p2.max(1e-30)) as f64);
            sg += x.sum_p2 as f64;
            sc += y.sum_p2 as f64;
            eq += (x.rank == y.rank) as usize;
            top1 += ((x.rank == 1) == (y.rank == 1)) as usize;
            a.tokens += 1;
        }
        if n_seq >= SEQ_MIN {
            if sc > 0.0 {
                a.max_seq_rel_p2 = a.max_seq_rel_p2.max((sg - sc).abs() / sc);
            }
            a.max_seq_dnll = a.max_seq_dnll.max((sd / n_seq as f64).abs());
            a.max_seq_dtopk = a.max_seq_dtopk.max((stk / n_seq as f64).abs());
        }
    }
    all_d.sort_by(f64::total_cmp);
    if !all_d.is_empty() {
        a.p50_dlogp = all_d[all_d.len() / 2];
        a.p99_dlogp = all_d[(all_d.len() * 99 / 100).min(all_d.len() - 1)];
        a.frac_within = all_d.iter().filter(|&&d| d <= 0.05).count() as f64 / all_d.len() as f64;
    }
    let n = a.tokens.max(1) as f64;
    a.mean_dlogp = sum_d / n;
    a.rank_equal = eq as f64 / n;
    a.top1_agree = top1 as f64 / n;
    a
}

fn max_dlogp(a: &[Vec<TokenStats>], b: &[Vec<TokenStats>]) -> f64 {
    let mut m = 0f64;
    for (x, y) in a.iter().zip(b) {
        if x.len() != y.len() {
            return f64::INFINITY;
        }
        for (p, q) in x.iter().zip(y) {
            let d = (p.logprob - q.logprob).abs() as f64;
            m = if d.is_nan() { f64::INFINITY } else { m.max(d) };
        }
    }
    m
}

fn model_cases(opts: &Options, report: &mut Report) {
    let mut rng = SplitMix(opts.seed ^ 0x0de1);
    let tmp = std::env::temp_dir().join(format!("lark-selftest-{}", std::process::id()));
    let mut dirs: Vec<(String, PathBuf, bool)> = Vec::new();
    for (i, (name, cfg)) in random_configs().into_iter().enumerate() {
        let dir = tmp.join(format!("random{i}"));
        match write_selftest_model(&dir, &cfg, opts.seed + i as u64) {
            Ok(()) => dirs.push((name.to_string(), dir, false)),
            Err(e) => push_fail(report, "model", name.to_string(), format!("writing the random model: {e}")),
        }
    }
    for m in &opts.models {
        dirs.push((m.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), m.clone(), true));
    }
    for (name, dir, real) in dirs {
        eprintln!("[selftest] model      {name}: GPU vs CPU ...");
        if let Err(e) = one_model(opts, report, &mut rng, &name, &dir, real) {
            push_fail(report, "model", name, format!("error: {e}"));
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
    let case = "LARK top-3 on the example pool, GPU vs CPU".to_string();
    match &opts.selection_check {
        None => report.rows.push(Row {
            section: "selection",
            case,
            rel: 0.0,
            max_abs: 0.0,
            tol: 0.0,
            status: Status::Skip,
            gpu_ms: 0.0,
            note: "no real model with a tokenizer, or no example pool (examples/pool.jsonl)".into(),
        }),
        Some(check) => match check(opts.ordinal) {
            Ok((same, detail)) => report.rows.push(Row {
                section: "selection",
                case,
                rel: 0.0,
                max_abs: 0.0,
                tol: 0.0,
                status: if same { Status::Pass } else { Status::Fail },
                gpu_ms: 0.0,
                note: detail,
            }),
            Err(e) => push_fail(report, "selection", case, format!("error: {e}")),
        },
    }
}

fn push_fail(report: &mut Report, section: &'static str, case: String, note: String) {
    eprintln!("[selftest] {section:<10} {case:<52} FAIL {note}");
    report.rows.push(Row {
        section,
        case,
        rel: f64::NAN,
        max_abs: f64::NAN,
        tol: 0.0,
        status: Status::Fail,
        gpu_ms: 0.0,
        note,
    });
}

/// The CPU reference as `CpuBackend::score` computes it, keeping the final hidden states `[T, hidden]` too (for the
/// layer-stack check).
fn cpu_reference(
    model: &Model,
    batch: &[SeqRequest<'_>],
    opts: &StatsOptions,
) -> Result<(Vec<f32>, Vec<Vec<TokenStats>>)> {
    CpuBackend::new(model)?.score_with_hidden(batch, opts)
}

/// What the whole-model rows need from the device under test: the GPU backend, or the mock in tests.
pub(crate) trait UnderTest {
    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>>;
    fn final_hidden(&mut self, batch: &[SeqRequest<'_>]) -> Result<Vec<f32>>;
}

impl UnderTest for CudaBackend {
    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        Backend::score(self, batch, opts)
    }
    fn final_hidden(&mut self, batch: &[SeqRequest<'_>]) -> Result<Vec<f32>> {
        CudaBackend::final_hidden(self, batch)
    }
}

fn one_model(
    opts: &Options,
    report: &mut Report,
    rng: &mut SplitMix,
    name: &str,
    dir: &std::path::Path,
    real: bool,
) -> Result<()> {
    let model = Model::open(dir)?;
    let mut fast = CudaBackend::open_unmeasured(&model, opts.ordinal, Precision::Bf16)?;
    fast.forward_mut().poison = true;
    let mut exact = CudaBackend::open_unmeasured(&model, opts.ordinal, Precision::Fp32)?;
    exact.forward_mut().poison = true;
    model_rows(
        opts,
        report,
        rng,
        name,
        &model,
        real,
        &mut [(Precision::Bf16, &mut fast), (Precision::Fp32, &mut exact)],
    )
}

/// The whole-model rows for `model`: each device (one per activation precision) vs the CPU reference (f32, the
/// same bf16-valued weights) on the selftest's pack.
///
/// Bounds with fp32 activations (`--precision fp32`): issue 4's, literally — every token |Δ log p| ≤ 0.05 nats,
/// every token's relative Δ Σπ² ≤ 2e-2, and the final hidden states within 1e-3.
///
/// Bounds with bf16 activations (the default). Rounding every GEMM input to bf16 (8 significant bits) moves some
/// tokens' log p by more than 0.05 nats on a real model: measured on the CPU (SmolLM2, golden text), each single
/// bf16 rounding point alone gives a per-token maximum of 0.035–0.16 nats and all of them 0.28, with median 0.005
/// and p99 0.09 (the authors' own bf16 scoring loop rounds more, the residual stream included). So, per model:
/// - per token: median |Δ log p| ≤ 0.05 nats, p99 ≤ 0.2, max ≤ 0.5 (an indexing or masking bug costs nats); the
///   share of tokens within 0.05 is reported;
/// - per sequence (≥ 32 scored tokens): |mean Δ log p| ≤ 0.02 nats (the trajectory NLL LARK scores use), relative
///   Δ of Σ_tΣπ² ≤ 2e-2 (issue 4), |mean Δ top-50 Brier| ≤ 0.02;
/// - the layer stack alone (final-normed hidden states): relative error ≤ 5e-2.
///
/// Both: determinism (the same batch twice: bit-identical) and batch invariance (the 300-token sequence alone vs
/// packed: max |Δ log p| ≤ 0.05).
#[allow(clippy::too_many_arguments)]
pub(crate) fn model_rows(
    opts: &Options,
    report: &mut Report,
    rng: &mut SplitMix,
    name: &str,
    model: &Model,
    real: bool,
    devs: &mut [(Precision, &mut dyn UnderTest)],
) -> Result<()> {
    let c = &model.config;
    let long_len = opts.long_len.min(c.max_position_embeddings);
    let use_text = real
        && !opts.text.is_empty()
        && opts.text.iter().all(|(ids, _)| ids.iter().all(|&i| (i as usize) < c.vocab_size));
    let batch_data = if use_text { text_batch(&opts.text) } else { model_batch(rng, c.vocab_size, long_len) };
    let batch: Vec<SeqRequest<'_>> =
        batch_data.iter().map(|(ids, from)| SeqRequest { ids, score_from: *from }).collect();
    let stats_opts = StatsOptions { topk_brier: Some(50) };
    let total: usize = batch.iter().map(|s| s.ids.len()).sum();
    let scored: usize = batch.iter().map(|s| s.n_scored()).sum();
    let shape = format!(
        "{name} L={} H={} D={} V={}: {} {} seqs, {total} tok, {scored} scored",
        c.num_layers,
        c.hidden_size,
        c.head_dim,
        c.vocab_size,
        batch.len(),
        if use_text { "text" } else { "random-id" }
    );
    let t1 = Instant::now();
    let (hidden_cpu, cref) = cpu_reference(model, &batch, &stats_opts)?;
    let cpu_s = t1.elapsed().as_secs_f64();
    for (prec, dev) in devs.iter_mut() {
        device_rows(
            report,
            &format!("{shape} | {}", prec.name()),
            *prec,
            &mut **dev,
            &batch,
            &hidden_cpu,
            &cref,
            cpu_s,
        )?;
    }
    Ok(())
}

/// The rows of one device under test against the CPU reference (see [`model_rows`] for the bounds).
#[allow(clippy::too_many_arguments)]
fn device_rows(
    report: &mut Report,
    shape: &str,
    prec: Precision,
    dev: &mut dyn UnderTest,
    batch: &[SeqRequest<'_>],
    hidden_cpu: &[f32],
    cref: &[Vec<TokenStats>],
    cpu_s: f64,
) -> Result<()> {
    let stats_opts = StatsOptions { topk_brier: Some(50) };
    let exact = prec == Precision::Fp32;
    let t0 = Instant::now();
    let g1 = dev.score(batch, &stats_opts)?;
    let gpu_ms = t0.elapsed().as_secs_f64() * 1e3;
    let g2 = dev.score(batch, &stats_opts)?;
    // The 300-token sequence alone.
    let alone = dev.score(&batch[3..4], &stats_opts)?;
    // The layer stack alone: final-normed hidden states of every position.
    let th = Instant::now();
    let hidden_gpu = dev.final_hidden(batch)?;
    let hidden_ms = th.elapsed().as_secs_f64() * 1e3;

    let hc = compare(&hidden_gpu, hidden_cpu);
    let a = agreement(&g1, cref);
    let ok = a.nan == 0;
    let row = |case: &str, rel: f64, max_abs: f64, tol: f64, pass: bool, ms: f64, note: String| Row {
        section: "model",
        case: format!("{shape} | {case}"),
        rel,
        max_abs,
        tol,
        status: if pass { Status::Pass } else { Status::Fail },
        gpu_ms: ms,
        note,
    };
    let first = report.rows.len();
    let hidden_tol = if exact { 1e-3 } else { 5e-2 };
    report.rows.push(row(
        "final hidden",
        hc.rel,
        hc.max_abs,
        hidden_tol,
        hc.nan == 0 && hc.rel <= hidden_tol,
        hidden_ms,
        format!(
            "{}the layer stack alone (final-normed hidden states, {}) vs CPU f32",
            if hc.nan > 0 { format!("{} NaN; ", hc.nan) } else { String::new() },
            prec.name()
        ),
    ));
    let nan_note = if a.nan > 0 { format!("{} NaN/missing tokens; ", a.nan) } else { String::new() };
    let detail = format!(
        "p99 {:.3}, mean {:.4}; {:.1}% of tokens within 0.05; |Δlse| ≤ {:.1e}, |ΔH| ≤ {:.1e}; rank equal {:.1}%, \
         top-1 agree {:.1}%; CPU {cpu_s:.1}s",
        a.p99_dlogp,
        a.mean_dlogp,
        100.0 * a.frac_within,
        a.max_dlse,
        a.max_dentropy,
        100.0 * a.rank_equal,
        100.0 * a.top1_agree
    );
    if exact {
        report.rows.push(row(
            "log p per token",
            a.max_dlogp,
            a.max_dlogp,
            0.05,
            ok && a.max_dlogp <= 0.05,
            gpu_ms,
            format!(
                "{nan_note}rel=max=max over every token of |Δlogp| (≤ 0.05, issue 4); median {:.1e}, {detail}",
                a.p50_dlogp
            ),
        ));
        report.rows.push(row(
            "Σπ² per token",
            a.max_tok_rel_p2,
            a.max_tok_rel_p2,
            2e-2,
            ok && a.max_tok_rel_p2 <= 2e-2,
            0.0,
            "max over every token of |ΔΣπ²|/Σπ² (≤ 2e-2, issue 4)".into(),
        ));
    } else {
        report.rows.push(row(
            "log p per token",
            a.p50_dlogp,
            a.max_dlogp,
            0.05,
            ok && a.p50_dlogp <= 0.05 && a.p99_dlogp <= 0.2 && a.max_dlogp <= 0.5,
            gpu_ms,
            format!("{nan_note}rel=median |Δlogp|, max=max (≤ 0.5, bf16 activations: see fp32 rows), {detail}"),
        ));
    }
    report.rows.push(row(
        "NLL per sequence",
        a.max_seq_dnll,
        a.max_seq_dnll,
        0.02,
        ok && a.max_seq_dnll <= 0.02,
        0.0,
        format!("max over sequences of ≥ {SEQ_MIN} scored tokens of |mean Δlogp| (nats)"),
    ));
    report.rows.push(row(
        "Σπ² per sequence",
        a.max_seq_rel_p2,
        a.max_tok_rel_p2,
        2e-2,
        ok && a.max_seq_rel_p2 <= 2e-2,
        0.0,
        "rel=max over sequences of |ΔΣ_tΣπ²|/Σ_tΣπ²; max=worst single token (relative)".into(),
    ));
    report.rows.push(row(
        "top-50 Brier per sequence",
        a.max_seq_dtopk,
        a.max_dtopk,
        0.02,
        ok && a.max_seq_dtopk <= 0.02,
        0.0,
        "rel=max over sequences of |mean Δ| of the compat-mode top-50 Brier; max=worst token (information)".into(),
    ));
    let rep = max_dlogp(&g1, &g2);
    report.rows.push(row(
        "determinism",
        rep,
        rep,
        0.0,
        rep == 0.0,
        0.0,
        "the same batch twice: max |Δlogp| (a race shows up here)".into(),
    ));
    let inv = max_dlogp(&alone, &g1[3..4]);
    report.rows.push(row(
        "batch invariance",
        inv,
        inv,
        0.05,
        inv <= 0.05,
        0.0,
        "300-token sequence alone vs packed with the others: max |Δlogp| (leakage between sequences shows here)".into(),
    ));
    for r in &report.rows[first..] {
        eprintln!("[selftest] model      {:<52} {:?}", r.case, r.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::forward::Forward;
    use crate::backend::cuda::mock::Mock;

    struct OnMock<'a> {
        mock: &'a Mock,
        fwd: Forward<Mock>,
    }

    impl UnderTest for OnMock<'_> {
        fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
            self.fwd.score(self.mock, batch, opts)
        }
        fn final_hidden(&mut self, batch: &[SeqRequest<'_>]) -> Result<Vec<f32>> {
            self.fwd.final_hidden(self.mock, batch)
        }
    }

    fn mock_rows(opts: &Options, name: &str, model: &Model, real: bool) -> Report {
        let mock = Mock::default();
        let mut fast = OnMock { mock: &mock, fwd: Forward::new(&mock, model).unwrap() };
        fast.fwd.poison = true;
        let mut exact = OnMock { mock: &mock, fwd: Forward::with_precision(&mock, model, Precision::Fp32).unwrap() };
        exact.fwd.poison = true;
        let mut report = Report::default();
        let devs: &mut [(Precision, &mut dyn UnderTest)] =
            &mut [(Precision::Bf16, &mut fast), (Precision::Fp32, &mut exact)];
        model_rows(opts, &mut report, &mut SplitMix(3), name, model, real, devs).unwrap();
        report
    }

    /// The whole-model rows on the mock device (the kernels' bf16 rounding points, CPU arithmetic) for a small
    /// random model: what the GPU run should show, minus the kernels' own rounding.
    #[test]
    fn whole_model_rows_pass_on_the_mock() {
        for arch in [Architecture::Qwen2, Architecture::Qwen3] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = tiny_config(arch);
            (cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size) = (128, 4, 32, 200);
            if arch == Architecture::Qwen3 {
                cfg.head_dim = 48; // ≠ hidden/heads
                cfg.rope_scaling = rope_config_yarn(48).rope_scaling;
            }
            write_selftest_model(dir.path(), &cfg, 1).unwrap();
            let model = Model::open(dir.path()).unwrap();
            let opts = Options { long_len: 200, ..Options::default() };
            let r = mock_rows(&opts, "tiny", &model, false);
            assert_eq!(r.rows.len(), 7 + 8);
            assert_eq!(r.failures(), 0, "{arch:?}: {}", r.render());
        }
    }

    /// Calibration of the whole-model bounds: the selftest's random models, and a real model given by
    /// LARK_CALIBRATE_MODEL (with LARK_CALIBRATE_IDS as text), on the mock.
    /// `cargo test --lib calibrate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn calibrate_whole_model_bounds() {
        let mut report = Report::default();
        let mut opts = Options { long_len: 1000, ..Options::default() };
        if let Some(p) = std::env::var_os("LARK_CALIBRATE_IDS") {
            opts.text = load_ids(std::path::Path::new(&p)).unwrap();
        }
        if let Some(d) = std::env::var_os("LARK_CALIBRATE_MODEL") {
            let model = Model::open(std::path::Path::new(&d)).unwrap();
            report.rows.extend(mock_rows(&opts, "real", &model, true).rows);
        } else {
            for (i, (name, cfg)) in random_configs().into_iter().enumerate() {
                let dir = tempfile::tempdir().unwrap();
                write_selftest_model(dir.path(), &cfg, i as u64).unwrap();
                let model = Model::open(dir.path()).unwrap();
                report.rows.extend(mock_rows(&opts, name, &model, false).rows);
            }
        }
        eprintln!("{}", report.render());
    }

    fn ts(logprob: f32, sum_p2: f32, rank: u32) -> TokenStats {
        TokenStats { logprob, lse: 1.0, sum_p2, entropy: 1.0, rank, topk_brier: 0.5 }
    }

    #[test]
    fn agreement_measures() {
        // One sequence long enough for the per-sequence measures (≥ SEQ_MIN), one short one.
        let mut long: Vec<TokenStats> = (0..SEQ_MIN as u32).map(|_| ts(-1.0, 0.5, 1)).collect();
        long[1] = ts(-2.0, 0.25, 3);
        let a = vec![long, vec![ts(-0.5, 0.9, 1)], vec![]];
        let same = agreement(&a, &a);
        assert_eq!((same.max_dlogp, same.max_seq_rel_p2, same.nan, same.tokens), (0.0, 0.0, 0, SEQ_MIN + 1));
        assert_eq!((same.rank_equal, same.top1_agree, same.frac_within), (1.0, 1.0, 1.0));
        let mut b = a.clone();
        b[0][1] = ts(-2.1, 0.3, 1);
        let d = agreement(&b, &a);
        assert!((d.max_dlogp - 0.1).abs() < 1e-6);
        let sc = 0.5 * (SEQ_MIN - 1) as f64 + 0.25;
        assert!((d.max_seq_rel_p2 - 0.05 / sc).abs() < 1e-6, "{}", d.max_seq_rel_p2);
        assert!((d.max_seq_dnll - 0.1 / SEQ_MIN as f64).abs() < 1e-6);
        assert!((d.max_tok_rel_p2 - 0.2).abs() < 1e-6);
        assert_eq!(d.p50_dlogp, 0.0);
        // A short sequence never enters the per-sequence measures.
        let mut c = a.clone();
        c[1][0].sum_p2 = 0.1;
        assert_eq!(agreement(&c, &a).max_seq_rel_p2, 0.0);
        b[0][0].logprob = f32::NAN;
        assert_eq!(agreement(&b, &a).nan, 1);
        // A missing token is counted, not skipped.
        b[0].pop();
        assert!(agreement(&b, &a).nan > 0);
        assert_eq!(max_dlogp(&b, &a), f64::INFINITY);
    }

    #[test]
    fn render_marks_failures_last() {
        let mut r = Report::default();
        r.rows.push(Row {
            section: "gemm",
            case: "x".into(),
            rel: 1e-3,
            max_abs: 1e-2,
            tol: 4e-3,
            status: Status::Pass,
            gpu_ms: 0.1,
            note: String::new(),
        });
        assert!(r.render().contains("SELFTEST PASSED: 1 passed, 0 failed"));
        r.rows.push(Row { status: Status::Fail, case: "y".into(), ..r.rows[0].clone() });
        let t = r.render();
        assert!(t.contains("SELFTEST FAILED: 1 passed, 1 failed") && t.ends_with("first failures: gemm / y\n"), "{t}");
        assert_eq!(r.failures(), 1);
    }

    #[test]
    fn compare_counts_unwritten_elements() {
        let c = compare(&[1.0, f32::NAN, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!(c.nan, 1);
        let c = compare(&[1.0, 2.0], &[1.0, 2.5]);
        assert!((c.rel - 0.5 / (1.0f64 + 6.25).sqrt()).abs() < 1e-9 && c.max_abs == 0.5);
    }

    /// The selftest's random models have trained-LM-like logits (std ≈ 3), see `write_selftest_model`.
    #[test]
    fn selftest_models_have_realistic_logit_spread() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tiny_config(Architecture::Llama); // tied: the head is the embedding
        cfg.hidden_size = 96;
        cfg.num_heads = 6;
        cfg.head_dim = 16;
        write_selftest_model(dir.path(), &cfg, 3).unwrap();
        let model = Model::open(dir.path()).unwrap();
        let cpu = CpuBackend::new(&model).unwrap();
        let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 301) as u32).collect();
        let hidden = cpu.hidden_states(&ids, &[0, ids.len()]);
        let emb = model.weights.get(crate::model::EMBED, &[cfg.vocab_size, cfg.hidden_size]).unwrap().to_f32();
        let mut logits = vec![0f32; ids.len() * cfg.vocab_size];
        cpu::matmul_bt(&hidden, ids.len(), cfg.hidden_size, &emb, cfg.vocab_size, &mut logits);
        let n = logits.len() as f64;
        let mean = logits.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (logits.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((1.5..6.0).contains(&std), "logit std {std}");
    }

    #[test]
    fn cpu_reference_equals_the_cpu_backend() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config(Architecture::Qwen2);
        write_selftest_model(dir.path(), &cfg, 9).unwrap();
        let model = Model::open(dir.path()).unwrap();
        let mut rng = SplitMix(2);
        let data = model_batch(&mut rng, cfg.vocab_size, 70);
        let batch: Vec<SeqRequest<'_>> = data.iter().map(|(ids, f)| SeqRequest { ids, score_from: *f }).collect();
        let opts = StatsOptions { topk_brier: Some(50) };
        let (hidden, stats) = cpu_reference(&model, &batch, &opts).unwrap();
        let total: usize = batch.iter().map(|b| b.ids.len()).sum();
        assert_eq!(hidden.len(), total * cfg.hidden_size);
        let want = CpuBackend::new(&model).unwrap().score(&batch, &opts).unwrap();
        assert_eq!(stats, want);
    }

    #[test]
    fn model_batch_is_valid_and_varied() {
        let mut rng = SplitMix(5);
        let b = model_batch(&mut rng, 301, 500);
        let reqs: Vec<SeqRequest<'_>> = b.iter().map(|(ids, f)| SeqRequest { ids, score_from: *f }).collect();
        crate::backend::cpu::validate_batch(&reqs, 301).unwrap();
        assert_eq!(reqs[0].n_scored(), 0); // the 1-token sequence
        assert_eq!(reqs[3].ids.len(), 300); // the one scored alone for batch invariance
        assert!(reqs.iter().any(|r| r.ids.len() == 500));
    }

    #[test]
    fn no_gpu_is_an_error_not_a_pass() {
        if super::super::device::check_usable(0).is_ok() {
            return;
        }
        let e = run(&Options { kernels_only: true, ..Options::default() }).unwrap_err();
        assert!(e.to_string().contains("no CUDA device: selftest needs a GPU"), "{e}");
    }
}
