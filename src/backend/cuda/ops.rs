//! Launch wrappers for the embedding, norm, rope and activation kernels (kernels/{embedding,norm,rope,
//! activation}.cu) and the cuBLAS GEMMs. Arguments are raw device addresses ([`super::device::dptr`], plus
//! element offsets where a wrapper works on part of a buffer; 0 = null for optional inputs) so that the forward
//! pass can carve one allocation into several tensors. Every launch goes to `gpu.stream`; sizes are checked
//! against what the kernel can index (i32 element counts per row, grid limits) before launching.

use super::device::{cu, Gpu};
use crate::error::{LarkError, Result};
use cudarc::cublas::sys as blas;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// A device address (0 = null).
pub type DevPtr = u64;

/// The element type of the activations between GEMMs (`--precision`).
///
/// - `Bf16` (the default, fast): every GEMM input and the q/k/v, attention and gate/up outputs are bf16; the
///   residual stream and all reductions are fp32. Per-token log-probabilities stay within ~0.1 nats of the fp32
///   CPU reference at p99 (BENCHMARKS.md), like any bf16 inference engine.
/// - `Fp32` (reference grade): activations stay fp32 end to end; each GEMM's input is split into two bf16 halves
///   (hi = bf16(x), lo = bf16(x − hi)) multiplied with the same bf16 weights and accumulated in fp32, so the
///   tensor cores still do the work (two GEMMs each) and the weights stay bf16, while the input keeps ~16
///   significant bits; attention runs the fp32 generic kernel. Matches the CPU reference to ~1e-3 nats per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Bf16,
    Fp32,
}

impl Precision {
    /// Bytes per activation element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::Bf16 => 2,
            Precision::Fp32 => 4,
        }
    }
    /// The kernel entry-point suffix of this activation type.
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp32 => "f32",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Fp32 => "fp32",
        }
    }
    /// Host f32 values as the bytes of an activation buffer of this type (rounded once for bf16).
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            Precision::Bf16 => {
                bytemuck::cast_slice(&v.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>()).to_vec()
            }
            Precision::Fp32 => bytemuck::cast_slice(v).to_vec(),
        }
    }
    /// The bytes of an activation buffer of this type (as downloaded), widened to f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Precision::Bf16 => {
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Precision::Fp32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bf16" => Ok(Precision::Bf16),
            "fp32" => Ok(Precision::Fp32),
            _ => Err(format!("unknown precision `{s}` (bf16 or fp32)")),
        }
    }
}

fn check_i32(what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| LarkError::Backend(format!("{what} = {n} exceeds the kernels' 32-bit index range")))
}

fn grid_rows(what: &str, rows: usize) -> Result<u32> {
    // gridDim.x may be up to 2^31 − 1.
    u32::try_from(rows)
        .ok()
        .filter(|&r| r < (1 << 31))
        .ok_or_else(|| LarkError::Backend(format!("{what}: {rows} rows exceed the grid limit")))
}

/// `out[t, :] = float(table[ids[t], :])`: ids int32 [T], table bf16 [V, H], out fp32 [T, H].
pub fn embedding_gather(
    gpu: &Gpu,
    ids: DevPtr,
    table: DevPtr,
    out: DevPtr,
    t: usize,
    h: usize,
    v: usize,
) -> Result<()> {
    if t == 0 {
        return Ok(());
    }
    let f = gpu.kernels.get("embedding_gather_bf16")?;
    let (t32, h32, v32) = (check_i32("tokens", t)?, check_i32("hidden", h)?, check_i32("vocab", v)?);
    let cfg =
        LaunchConfig { grid_dim: (grid_rows("embedding", t)?, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&ids).arg(&table).arg(&out).arg(&t32).arg(&h32).arg(&v32);
    // SAFETY: argument types and order match the kernel's signature; buffer sizes are the caller's contract.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), "launch embedding_gather_bf16")
}

/// Residual add + RMSNorm (kernels/norm.cu): for r < n_rows, i = rows[r] (or r when `rows` = 0),
/// `v = x[i] + delta[i] + bias; if write_x { x[i] = v }; y[r] = Y(v · rsqrt(mean v² + eps) · w)`, Y = `prec`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_residual(
    gpu: &Gpu,
    x: DevPtr,
    delta: DevPtr,
    bias: DevPtr,
    w: DevPtr,
    y: DevPtr,
    rows: DevPtr,
    n_rows: usize,
    h: usize,
    eps: f32,
    write_x: bool,
    prec: Precision,
) -> Result<()> {
    if n_rows == 0 {
        return Ok(());
    }
    let name = format!("rmsnorm_residual_{}", prec.suffix());
    let f = gpu.kernels.get(&name)?;
    let (n32, h32, wx) = (check_i32("rows", n_rows)?, check_i32("hidden", h)?, write_x as i32);
    let cfg =
        LaunchConfig { grid_dim: (grid_rows("rmsnorm", n_rows)?, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&x).arg(&delta).arg(&bias).arg(&w).arg(&y).arg(&rows).arg(&n32).arg(&h32).arg(&eps).arg(&wx);
    // SAFETY: as above.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), &format!("launch {name}"))
}

/// Bias + RoPE + split of the fused QKV output (kernels/rope.cu): qkv [T, (H+2Hkv)·D] → q [T,H,D],
/// k [T,Hkv,D] (rotated), v [T,Hkv,D], all of element type `prec`; with `norm`, Qwen3's per-head q/k RMSNorm
/// before the rotation and scaled cos/sin ([`QkNormRope`]).
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv_split(
    gpu: &Gpu,
    qkv: DevPtr,
    bias: DevPtr,
    positions: DevPtr,
    inv_freq: DevPtr,
    norm: Option<&QkNormRope>,
    q: DevPtr,
    k: DevPtr,
    v: DevPtr,
    t: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    prec: Precision,
) -> Result<()> {
    if t == 0 {
        return Ok(());
    }
    let (cfg, [t32, h32, kv32, d32]) = rope_launch(t, heads, kv_heads, head_dim)?;
    // Qwen2 and Llama: the original kernel, unchanged. With `norm`: the fused kernel, not yet run on a GPU,
    // reached only behind [`crate::backend::cuda::UNMEASURED_KERNELS_ENV`] or from the selftest.
    let kernel = if norm.is_some() { "rope_norm_qkv_split" } else { "rope_qkv_split" };
    let name = format!("{kernel}_{}", prec.suffix());
    let f = gpu.kernels.get(&name)?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&qkv).arg(&bias).arg(&positions).arg(&inv_freq);
    if let Some(n) = norm {
        b.arg(&n.q_norm).arg(&n.k_norm).arg(&n.eps).arg(&n.attention_factor);
    }
    b.arg(&q).arg(&k).arg(&v).arg(&t32).arg(&h32).arg(&kv32).arg(&d32);
    // SAFETY: as above; the norm weights, when given, hold D fp32 values each.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), &format!("launch {name}"))
}

/// What the fused kernel `rope_norm_qkv_split_*` adds to `rope_qkv_split_*` ([`rope_qkv_split`] with `Some`): Qwen3's per-head q/k RMSNorm weights (fp32 [D] each,
/// both 0 for none) and the factor cos and sin are multiplied by (YaRN's attention factor, else 1).
#[derive(Debug, Clone, Copy)]
pub struct QkNormRope {
    pub q_norm: DevPtr,
    pub k_norm: DevPtr,
    pub eps: f32,
    pub attention_factor: f32,
}

/// The shape checks and launch shape both rope kernels share: one block of 128 threads per token.
fn rope_launch(t: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Result<(LaunchConfig, [i32; 4])> {
    if !head_dim.is_multiple_of(2) || head_dim > 1024 {
        return Err(LarkError::Backend(format!("rope: head_dim {head_dim} must be even and at most 1024")));
    }
    check_i32("qkv width", (heads + 2 * kv_heads) * head_dim)?;
    let args = [check_i32("tokens", t)?, check_i32("heads", heads)?, check_i32("kv heads", kv_heads)?, head_dim as i32];
    let cfg = LaunchConfig { grid_dim: (grid_rows("rope", t)?, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    Ok((cfg, args))
}

/// `out[t, j] = A(silu(gu[t, j] + b[j]) · (gu[t, I+j] + b[I+j]))` (kernels/activation.cu), A = `prec`.
pub fn swiglu(gpu: &Gpu, gu: DevPtr, bias: DevPtr, out: DevPtr, t: usize, inter: usize, prec: Precision) -> Result<()> {
    if t == 0 || inter == 0 {
        return Ok(());
    }
    check_i32("2 × intermediate", 2 * inter)?;
    let name = format!("swiglu_{}", prec.suffix());
    let f = gpu.kernels.get(&name)?;
    let n = t * inter;
    let blocks = n.div_ceil(2 * 256).clamp(1, 65535 * 8) as u32;
    let (t32, i32_) = (check_i32("tokens", t)?, inter as i32);
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&gu).arg(&bias).arg(&out).arg(&t32).arg(&i32_);
    // SAFETY: as above.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), &format!("launch {name}"))
}

/// `hi[i] = bf16(x[i]); lo[i] = bf16(x[i] − hi[i])` for i < n (kernels/activation.cu): the two bf16 halves of
/// an fp32 GEMM input ([`Precision::Fp32`]).
pub fn split_bf16(gpu: &Gpu, x: DevPtr, hi: DevPtr, lo: DevPtr, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let f = gpu.kernels.get("split_bf16_f32")?;
    let blocks = n.div_ceil(256).clamp(1, 65535 * 8) as u32;
    let n64 = n as i64;
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&x).arg(&hi).arg(&lo).arg(&n64);
    // SAFETY: as above.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), "launch split_bf16_f32")
}

/// Output of a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    /// `out = x·wᵀ` rounded to bf16.
    Bf16,
    /// `out = x·wᵀ` in fp32.
    F32,
    /// `out += x·wᵀ` in fp32 (beta = 1): the residual add fused into the GEMM.
    F32Accumulate,
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (or `+=`, see [`OutType`]) with bf16 x and w (row-major, `w` as HF stores
/// linear weights), fp32 accumulation (CUBLAS_COMPUTE_32F), output bf16 or fp32. In cuBLAS's column-major terms this is
/// `outᵀ (n×m) = op(W) · xᵀ` with `W` read transposed.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bt(
    gpu: &Gpu,
    x: DevPtr,
    w: DevPtr,
    out: DevPtr,
    m: usize,
    n: usize,
    k: usize,
    out_type: OutType,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (m32, n32, k32) = (check_i32("gemm m", m)?, check_i32("gemm n", n)?, check_i32("gemm k", k)?);
    let alpha = 1.0f32;
    let (c_type, beta) = match out_type {
        OutType::Bf16 => (blas::cudaDataType::CUDA_R_16BF, 0.0f32),
        OutType::F32 => (blas::cudaDataType::CUDA_R_32F, 0.0),
        OutType::F32Accumulate => (blas::cudaDataType::CUDA_R_32F, 1.0),
    };
    // SAFETY: the handle is bound to gpu.stream; pointers are device addresses of at least m·k, n·k and m·n
    // elements (the caller's contract); alpha/beta are host scalars (the default pointer mode).
    let r = unsafe {
        cudarc::cublas::result::gemm_ex(
            *gpu.blas.handle(),
            blas::cublasOperation_t::CUBLAS_OP_T,
            blas::cublasOperation_t::CUBLAS_OP_N,
            n32,
            m32,
            k32,
            &alpha as *const f32 as *const _,
            w as *const std::ffi::c_void,
            blas::cudaDataType::CUDA_R_16BF,
            k32,
            x as *const std::ffi::c_void,
            blas::cudaDataType::CUDA_R_16BF,
            k32,
            &beta as *const f32 as *const _,
            out as *mut std::ffi::c_void,
            c_type,
            n32,
            blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    };
    r.map_err(|e| LarkError::Backend(format!("cuBLAS GEMM ({m}×{k})·({n}×{k})ᵀ: {e:?}")))
}

/// The measured cuBLAS ceiling of this GPU: TFLOP/s of a bf16 `n×n · (n×n)ᵀ` GEMM with fp32 accumulation and
/// bf16 output (the layer GEMMs' configuration), best of `reps` timed runs after two warm-ups. `lark bench`
/// divides its achieved TFLOP/s by this (GPU.md measured 789 TFLOP/s at n = 8192 on an H200 through torch).
pub fn gemm_ceiling_tflops(gpu: &Gpu, n: usize, reps: usize) -> Result<f64> {
    let zeros = vec![half::bf16::ZERO; n * n];
    let a = gpu.upload(&zeros)?;
    let b = gpu.upload(&zeros)?;
    let c = gpu.alloc::<half::bf16>(n * n)?;
    let (pa, pb, pc) = (
        super::device::dptr(&a, &gpu.stream),
        super::device::dptr(&b, &gpu.stream),
        super::device::dptr(&c, &gpu.stream),
    );
    for _ in 0..2 {
        gemm_bt(gpu, pa, pb, pc, n, n, n, OutType::Bf16)?;
    }
    gpu.sync()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        gemm_bt(gpu, pa, pb, pc, n, n, n, OutType::Bf16)?;
        gpu.sync()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e12)
}
