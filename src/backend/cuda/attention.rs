//! Launch wrappers for causal grouped-query attention over a packed variable-length batch (kernels/attention.cu).
//!
//! Layout (row-major bf16): q and out `[T, heads, head_dim]`, k and v `[T, kv_heads, head_dim]`, where the batch is
//! `num_seqs` sequences packed back to back and `cu_seqlens` (int32, `num_seqs + 1` prefix sums, on the device)
//! says where each starts. Position i of a sequence attends to positions 0..=i of the same sequence.
//!
//! The tensor-core kernels (`head_dim` 64 or 128) take a [`TileTable`] built on the host from the same
//! `cu_seqlens`: one entry per query tile of 128 rows (8 warps, the `_br128` variants, the default: half the K/V
//! traffic per query row, 1.5–3% faster end to end on an H200) or 64 rows (4 warps; `LARK_ATTENTION_QUERY_TILE=64`).
//! The `_w32` variants (`LARK_ATTENTION_WARP_ROWS=32`, opt-in until measured on a GPU) give each warp 32 of the 128
//! rows instead of 16, so every K and V fragment read from shared memory feeds two MMAs instead of one (the
//! flash-attention-2 layout: 4 warps × 32 rows); they use dynamic shared memory ([`AttentionKernel::dynamic_smem_bytes`]).
//! Any other `head_dim` ≤ 256 goes to the simple fallback kernel.

use super::device::{cu, Gpu};
use super::kernels::Kernels;
use super::ops::{DevPtr, Precision};
use crate::error::{LarkError, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

/// Query rows per block of the default tensor-core kernels (and the granularity of their tile table).
pub const QUERY_TILE: usize = 64;
/// Threads per block of the generic kernels.
const THREADS: u32 = 128;

/// The query tile of the tensor-core kernels for this process: `LARK_ATTENTION_QUERY_TILE` (64 or 128), read once;
/// default 128 (measured on an H200 at the RSR pool's lengths, same call: 1.5B 94.9K → 97.8K tokens/s, 3B 48.3K →
/// 49.7K, 7B 28.9K → 29.3K; BENCHMARKS.md).
pub fn query_tile_setting() -> usize {
    static SETTING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SETTING.get_or_init(|| match std::env::var("LARK_ATTENTION_QUERY_TILE").ok().as_deref() {
        Some("64") => QUERY_TILE,
        _ => 128,
    })
}
/// Query rows per warp of the tensor-core kernels with 128-row tiles: `LARK_ATTENTION_WARP_ROWS` (16 or 32), read
/// once; default 16 (the `_br128` kernels, measured). 32 selects the `_w32` kernels, which passed the emulator but
/// have not yet been timed or run on a GPU (issue 5's next device call compares them in one run:
/// `TILES="128 128w32" scripts/gpu-bench.sh`). Ignored with 64-row tiles.
pub fn warp_rows_setting() -> usize {
    static SETTING: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SETTING.get_or_init(|| match std::env::var("LARK_ATTENTION_WARP_ROWS").ok().as_deref() {
        Some("32") => 32,
        _ => 16,
    })
}

/// Static shared memory a kernel may use without opting in; more needs `MAX_DYNAMIC_SHARED_SIZE_BYTES`.
const DEFAULT_SMEM_LIMIT: u32 = 48 * 1024;

/// Largest head_dim the fallback kernel accepts.
pub const MAX_GENERIC_HEAD_DIM: usize = 256;

/// Which kernel runs a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attention_varlen_bf16_hd64`: tensor cores, head_dim 64.
    Hd64,
    /// `attention_varlen_bf16_hd128`: tensor cores, head_dim 128.
    Hd128,
    /// `attention_varlen_bf16_hd64_br128`: tensor cores, head_dim 64, 128-row query tiles.
    Hd64Br128,
    /// `attention_varlen_bf16_hd128_br128`: tensor cores, head_dim 128, 128-row query tiles.
    Hd128Br128,
    /// `attention_varlen_bf16_hd64_br128_w32`: as `Hd64Br128` with 32 rows per warp (4 warps).
    Hd64W32,
    /// `attention_varlen_bf16_hd128_br128_w32`: as `Hd128Br128` with 32 rows per warp (4 warps), Q in shared memory.
    Hd128W32,
    /// `attention_varlen_generic`: one warp per (query, head), any head_dim ≤ 256.
    Generic,
    /// `attention_varlen_generic_f32`: the generic kernel on fp32 q/k/v/out ([`Precision::Fp32`]).
    GenericF32,
}

impl AttentionKernel {
    /// The fastest kernel for `head_dim` and the activation type, or an error when none supports it.
    pub fn for_args(head_dim: usize, precision: Precision) -> Result<Self> {
        match (precision, Self::for_head_dim(head_dim)?) {
            (Precision::Fp32, _) => Ok(AttentionKernel::GenericF32),
            (Precision::Bf16, k) => Ok(k),
        }
    }

    /// The fastest bf16 kernel for `head_dim` (the query tile of [`query_tile_setting`], the warp rows of
    /// [`warp_rows_setting`]), or an error when none supports it.
    pub fn for_head_dim(head_dim: usize) -> Result<Self> {
        let wide = query_tile_setting() == 128;
        let w32 = wide && warp_rows_setting() == 32;
        match head_dim {
            64 if w32 => Ok(AttentionKernel::Hd64W32),
            128 if w32 => Ok(AttentionKernel::Hd128W32),
            64 if wide => Ok(AttentionKernel::Hd64Br128),
            128 if wide => Ok(AttentionKernel::Hd128Br128),
            64 => Ok(AttentionKernel::Hd64),
            128 => Ok(AttentionKernel::Hd128),
            1..=MAX_GENERIC_HEAD_DIM => Ok(AttentionKernel::Generic),
            _ => Err(LarkError::Unsupported(format!(
                "attention with head_dim {head_dim} (the CUDA kernels support 1..={MAX_GENERIC_HEAD_DIM})"
            ))),
        }
    }

    /// Every tensor-core kernel for `head_dim` (64- and 128-row tiles, 16 and 32 rows per warp); empty when only
    /// the generic kernel supports it. The selftest checks all of them whichever is the default.
    pub fn tensor_core_variants(head_dim: usize) -> &'static [AttentionKernel] {
        match head_dim {
            64 => &[AttentionKernel::Hd64, AttentionKernel::Hd64Br128, AttentionKernel::Hd64W32],
            128 => &[AttentionKernel::Hd128, AttentionKernel::Hd128Br128, AttentionKernel::Hd128W32],
            _ => &[],
        }
    }

    /// The kernel's entry point name in the embedded fatbin.
    pub fn entry_point(self) -> &'static str {
        match self {
            AttentionKernel::Hd64 => "attention_varlen_bf16_hd64",
            AttentionKernel::Hd128 => "attention_varlen_bf16_hd128",
            AttentionKernel::Hd64Br128 => "attention_varlen_bf16_hd64_br128",
            AttentionKernel::Hd128Br128 => "attention_varlen_bf16_hd128_br128",
            AttentionKernel::Hd64W32 => "attention_varlen_bf16_hd64_br128_w32",
            AttentionKernel::Hd128W32 => "attention_varlen_bf16_hd128_br128_w32",
            AttentionKernel::Generic => "attention_varlen_generic",
            AttentionKernel::GenericF32 => "attention_varlen_generic_f32",
        }
    }

    /// The head_dim a tensor-core kernel is compiled for (None: any).
    fn fixed_head_dim(self) -> Option<usize> {
        match self {
            AttentionKernel::Hd64 | AttentionKernel::Hd64Br128 | AttentionKernel::Hd64W32 => Some(64),
            AttentionKernel::Hd128 | AttentionKernel::Hd128Br128 | AttentionKernel::Hd128W32 => Some(128),
            AttentionKernel::Generic | AttentionKernel::GenericF32 => None,
        }
    }

    /// The activation type the kernel reads and writes.
    pub fn precision(self) -> Precision {
        match self {
            AttentionKernel::GenericF32 => Precision::Fp32,
            _ => Precision::Bf16,
        }
    }

    fn is_generic(self) -> bool {
        matches!(self, AttentionKernel::Generic | AttentionKernel::GenericF32)
    }

    /// Rows per entry of the tile table this kernel reads (the generic kernels read none).
    pub fn query_tile(self) -> usize {
        match self {
            AttentionKernel::Hd64Br128
            | AttentionKernel::Hd128Br128
            | AttentionKernel::Hd64W32
            | AttentionKernel::Hd128W32 => 128,
            _ => QUERY_TILE,
        }
    }

    /// Query rows per warp of a tensor-core kernel (16: one m16n8k16 row block; 32: two).
    pub fn warp_rows(self) -> usize {
        match self {
            AttentionKernel::Hd64W32 | AttentionKernel::Hd128W32 => 32,
            _ => 16,
        }
    }

    /// Threads per block: one warp per [`Self::warp_rows`] rows of the tensor-core kernels' tile.
    fn threads(self) -> u32 {
        if self.is_generic() {
            THREADS
        } else {
            (self.query_tile() / self.warp_rows() * 32) as u32
        }
    }

    /// Dynamic shared memory per block, in bytes: `attn_dynamic_smem_bytes<HD, 128, 2>()` of kernels/attention.cu
    /// for the `_w32` kernels (K and V tiles of 64 padded rows of `HD + 8` bf16, plus the 128-row Q tile when
    /// HD = 128), 0 for the others (static shared memory). The kernel traps when given less than its layout needs,
    /// so a disagreement fails the first launch instead of overrunning.
    pub fn dynamic_smem_bytes(self) -> u32 {
        let row_bytes = |hd: u32| (hd + 8) * 2;
        match self {
            AttentionKernel::Hd64W32 => 2 * 64 * row_bytes(64),
            AttentionKernel::Hd128W32 => (2 * 64 + 128) * row_bytes(128),
            _ => 0,
        }
    }
}

/// The work list of the tensor-core kernels: for every 64-row query tile of every non-empty sequence, its
/// sequence index and its first position within the sequence, heaviest tiles (largest start, i.e. most keys)
/// first so that the longest blocks are scheduled first. Upload [`TileTable::data`] as one int32 buffer:
/// `[tile_seq; num_tiles]` followed by `[tile_start; num_tiles]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileTable {
    pub data: Vec<i32>,
    pub num_tiles: usize,
}

impl TileTable {
    /// Build the table of `query_tile`-row tiles from the host copy of `cu_seqlens` (`num_seqs + 1`
    /// non-decreasing offsets from 0).
    pub fn build(cu_seqlens: &[i32], query_tile: usize) -> Result<Self> {
        let query_tile = query_tile.max(1);
        let num_seqs = validate_cu_seqlens(cu_seqlens)?;
        let mut tiles: Vec<(i32, i32)> = Vec::new();
        for s in 0..num_seqs {
            let len = (cu_seqlens[s + 1] - cu_seqlens[s]) as usize;
            for start in (0..len).step_by(query_tile) {
                tiles.push((s as i32, start as i32));
            }
        }
        // Stable: equal starts keep sequence order.
        tiles.sort_by_key(|t| std::cmp::Reverse(t.1));
        let num_tiles = tiles.len();
        let mut data = Vec::with_capacity(2 * num_tiles);
        data.extend(tiles.iter().map(|t| t.0));
        data.extend(tiles.iter().map(|t| t.1));
        Ok(TileTable { data, num_tiles })
    }
}

/// Check `cu_seqlens` (host copy) and return the number of sequences.
pub fn validate_cu_seqlens(cu_seqlens: &[i32]) -> Result<usize> {
    if cu_seqlens.is_empty() {
        return Err(LarkError::Backend("attention: cu_seqlens is empty (needs num_seqs + 1 offsets)".into()));
    }
    if cu_seqlens[0] != 0 {
        return Err(LarkError::Backend(format!("attention: cu_seqlens[0] = {} (must be 0)", cu_seqlens[0])));
    }
    if let Some(i) = cu_seqlens.windows(2).position(|w| w[1] < w[0]) {
        return Err(LarkError::Backend(format!(
            "attention: cu_seqlens decreases at {} ({} → {})",
            i + 1,
            cu_seqlens[i],
            cu_seqlens[i + 1]
        )));
    }
    Ok(cu_seqlens.len() - 1)
}

/// Device addresses and sizes of one attention launch.
#[derive(Debug, Clone, Copy)]
pub struct AttentionArgs {
    /// `[total_tokens, num_heads, head_dim]` of element type `precision` (bf16 or fp32), as k, v and out.
    pub q: DevPtr,
    /// `[total_tokens, num_kv_heads, head_dim]`.
    pub k: DevPtr,
    /// `[total_tokens, num_kv_heads, head_dim]`.
    pub v: DevPtr,
    /// `[total_tokens, num_heads, head_dim]`, written for every token.
    pub out: DevPtr,
    /// int32 `[num_seqs + 1]`.
    pub cu_seqlens: DevPtr,
    /// int32 `[2 · num_tiles]`, the uploaded [`TileTable::data`] (unused by the generic kernel).
    pub tiles: DevPtr,
    pub num_seqs: usize,
    pub num_tiles: usize,
    /// `cu_seqlens[num_seqs]`.
    pub total_tokens: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Usually 1/√head_dim.
    pub softmax_scale: f32,
    /// The element type of q, k, v and out.
    pub precision: Precision,
    /// Rows per entry of `tiles` (must be the tensor-core kernel's [`AttentionKernel::query_tile`]).
    pub query_tile: usize,
}

/// Grid and block of a launch, after checking every argument the kernel relies on.
pub fn launch_config(kind: AttentionKernel, a: &AttentionArgs) -> Result<LaunchConfig> {
    let bad = |m: String| Err(LarkError::Backend(format!("attention ({}): {m}", kind.entry_point())));
    if kind.precision() != a.precision {
        return bad(format!("{} activations (this kernel is for {})", a.precision.name(), kind.precision().name()));
    }
    if a.num_heads == 0 || a.num_kv_heads == 0 || !a.num_heads.is_multiple_of(a.num_kv_heads) {
        return bad(format!("{} heads are not a multiple of {} kv heads", a.num_heads, a.num_kv_heads));
    }
    match kind.fixed_head_dim() {
        Some(d) if d != a.head_dim => return bad(format!("head_dim {} (this kernel is for {d})", a.head_dim)),
        None if a.head_dim == 0 || a.head_dim > MAX_GENERIC_HEAD_DIM => {
            return bad(format!("head_dim {} (1..={MAX_GENERIC_HEAD_DIM})", a.head_dim))
        }
        _ => {}
    }
    // Positive: the `_w32` kernels take the row maximum on unscaled scores and scale it after (KERNELS.md).
    if !(a.softmax_scale.is_finite() && a.softmax_scale > 0.0) {
        return bad(format!("softmax scale {} (must be positive and finite)", a.softmax_scale));
    }
    for (what, n) in [("sequences", a.num_seqs), ("tokens", a.total_tokens), ("heads", a.num_heads)] {
        if n > i32::MAX as usize {
            return bad(format!("{n} {what} exceed the kernels' 32-bit range"));
        }
    }
    // The tensor-core kernels copy 16-byte chunks and store 4-byte pairs; every kernel reads int32 tables.
    let align = match kind {
        AttentionKernel::Generic => 2,
        AttentionKernel::GenericF32 => 4,
        _ => 16,
    };
    for (what, p) in [("q", a.q), ("k", a.k), ("v", a.v), ("out", a.out)] {
        if p == 0 || p % align != 0 {
            return bad(format!("{what} address {p:#x} is not {align}-byte aligned"));
        }
    }
    if a.cu_seqlens == 0 || !a.cu_seqlens.is_multiple_of(4) {
        return bad(format!("cu_seqlens address {:#x}", a.cu_seqlens));
    }
    if !kind.is_generic() && a.query_tile != kind.query_tile() {
        return bad(format!("a tile table of {}-row tiles (this kernel needs {})", a.query_tile, kind.query_tile()));
    }
    let blocks = match kind {
        k if k.is_generic() => (a.total_tokens * a.num_heads).div_ceil((THREADS / 32) as usize),
        _ => {
            if a.num_tiles > 0 && (a.tiles == 0 || !a.tiles.is_multiple_of(4)) {
                return bad(format!("tile table address {:#x}", a.tiles));
            }
            a.num_tiles * a.num_heads
        }
    };
    if blocks >= (1 << 31) {
        return bad(format!("{blocks} blocks exceed the grid limit; split the batch"));
    }
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (kind.threads(), 1, 1),
        shared_mem_bytes: kind.dynamic_smem_bytes(),
    })
}

/// Let every tensor-core kernel that needs more than 48 KiB of dynamic shared memory have it (the function
/// attribute `MAX_DYNAMIC_SHARED_SIZE_BYTES`, kept by the module). Called once by `Gpu::open`, after the kernels
/// are loaded, so launches need no driver call of their own.
pub fn allow_dynamic_shared_memory(kernels: &Kernels) -> Result<()> {
    for &kind in [64, 128].iter().flat_map(|&d| AttentionKernel::tensor_core_variants(d)) {
        let bytes = kind.dynamic_smem_bytes();
        if bytes > DEFAULT_SMEM_LIMIT {
            let func = kernels.get(kind.entry_point())?;
            cu(
                func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32),
                &format!("allowing {bytes} bytes of shared memory for {}", kind.entry_point()),
            )?;
        }
    }
    Ok(())
}

/// Launch `func` (which must be `kind`'s entry point, from a [`Gpu`]'s kernels: `Gpu::open` set its shared-memory
/// limit) on `stream`. Nothing is launched for an empty batch.
pub fn launch_attention(
    stream: &CudaStream,
    func: &CudaFunction,
    kind: AttentionKernel,
    a: &AttentionArgs,
) -> Result<()> {
    let cfg = launch_config(kind, a)?;
    if cfg.grid_dim.0 == 0 {
        return Ok(());
    }
    // launch_config bounded all of these by i32::MAX. The builder holds references to them until the launch.
    let (num_seqs, num_heads, num_kv_heads) = (a.num_seqs as i32, a.num_heads as i32, a.num_kv_heads as i32);
    let tile_start: DevPtr = a.tiles + 4 * a.num_tiles as u64;
    let num_tiles = a.num_tiles as i32;
    let head_dim = a.head_dim as i32;
    let mut b = stream.launch_builder(func);
    b.arg(&a.q).arg(&a.k).arg(&a.v).arg(&a.out).arg(&a.cu_seqlens).arg(&num_seqs);
    match kind {
        k if k.is_generic() => {
            // (…, cu_seqlens, num_seqs, num_heads, num_kv_heads, head_dim, softmax_scale)
            b.arg(&num_heads).arg(&num_kv_heads).arg(&head_dim).arg(&a.softmax_scale);
        }
        _ => {
            // (…, cu_seqlens, num_seqs, tile_seq, tile_start, num_tiles, num_heads, num_kv_heads, softmax_scale)
            b.arg(&a.tiles).arg(&tile_start).arg(&num_tiles).arg(&num_heads).arg(&num_kv_heads).arg(&a.softmax_scale);
        }
    }
    // SAFETY: argument types and order match the kernel signatures above (pointers as u64 device addresses,
    // i32 sizes, f32 scale); launch_config checked the sizes and alignments the kernels rely on; that the buffers
    // hold the documented number of elements is the caller's contract.
    cu(unsafe { b.launch(cfg) }.map(|_| ()), &format!("launch {}", kind.entry_point()))
}

/// Run attention on `gpu.stream` with `kind`, or the fastest kernel for the head_dim when `kind` is None.
pub fn attention(gpu: &Gpu, kind: Option<AttentionKernel>, a: &AttentionArgs) -> Result<()> {
    let kind = match kind {
        Some(k) => k,
        None => AttentionKernel::for_args(a.head_dim, a.precision)?,
    };
    let f = gpu.kernels.get(kind.entry_point())?;
    launch_attention(&gpu.stream, &f, kind, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kind: AttentionKernel) -> AttentionArgs {
        AttentionArgs {
            q: 0x1000,
            k: 0x2000,
            v: 0x3000,
            out: 0x4000,
            cu_seqlens: 0x5000,
            tiles: 0x6000,
            num_seqs: 3,
            num_tiles: 5,
            total_tokens: 200,
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: kind.fixed_head_dim().unwrap_or(40),
            softmax_scale: 0.125,
            precision: kind.precision(),
            query_tile: kind.query_tile(),
        }
    }

    #[test]
    fn tile_table_covers_every_row_heaviest_first() {
        // 1-token, exact multiple, ragged, empty, long sequences.
        let lens = [1usize, 64, 65, 0, 200];
        let mut cu = vec![0i32];
        for l in lens {
            cu.push(cu.last().unwrap() + l as i32);
        }
        let t = TileTable::build(&cu, QUERY_TILE).unwrap();
        assert_eq!(t.num_tiles, 1 + 1 + 2 + 4);
        assert_eq!(t.data.len(), 2 * t.num_tiles);
        let (seqs, starts) = t.data.split_at(t.num_tiles);
        // Each sequence's rows are covered exactly once by 64-row tiles.
        for (s, &l) in lens.iter().enumerate() {
            let mut mine: Vec<i32> =
                seqs.iter().zip(starts).filter(|(q, _)| **q == s as i32).map(|(_, st)| *st).collect();
            mine.sort();
            let want: Vec<i32> = (0..l).step_by(QUERY_TILE).map(|x| x as i32).collect();
            assert_eq!(mine, want, "sequence {s}");
        }
        // Non-increasing starts; equal starts in sequence order.
        for i in 1..t.num_tiles {
            assert!(starts[i - 1] >= starts[i]);
            if starts[i - 1] == starts[i] {
                assert!(seqs[i - 1] < seqs[i]);
            }
        }
        assert_eq!((seqs[0], starts[0]), (4, 192));
    }

    #[test]
    fn tile_table_rejects_bad_offsets() {
        assert!(TileTable::build(&[], QUERY_TILE).is_err());
        assert!(TileTable::build(&[1, 5], QUERY_TILE).is_err());
        assert!(TileTable::build(&[0, 5, 3], QUERY_TILE).is_err());
        let empty = TileTable::build(&[0], QUERY_TILE).unwrap();
        assert_eq!(empty.num_tiles, 0);
        let zero_len = TileTable::build(&[0, 0, 0], QUERY_TILE).unwrap();
        assert_eq!(zero_len.num_tiles, 0);
    }

    #[test]
    fn kernel_choice_by_head_dim() {
        let wide = query_tile_setting() == 128;
        let w32 = wide && warp_rows_setting() == 32;
        let (k64, k128) = (AttentionKernel::for_head_dim(64).unwrap(), AttentionKernel::for_head_dim(128).unwrap());
        let pick = |narrow, br128, w| {
            if w32 {
                w
            } else if wide {
                br128
            } else {
                narrow
            }
        };
        assert_eq!(k64, pick(AttentionKernel::Hd64, AttentionKernel::Hd64Br128, AttentionKernel::Hd64W32));
        assert_eq!(k128, pick(AttentionKernel::Hd128, AttentionKernel::Hd128Br128, AttentionKernel::Hd128W32));
        for d in [64, 128] {
            assert!(AttentionKernel::tensor_core_variants(d).contains(&AttentionKernel::for_head_dim(d).unwrap()));
            assert!(AttentionKernel::tensor_core_variants(d).iter().all(|k| k.fixed_head_dim() == Some(d)));
        }
        assert!(AttentionKernel::tensor_core_variants(80).is_empty());
        assert_eq!(AttentionKernel::for_head_dim(80).unwrap(), AttentionKernel::Generic);
        assert_eq!(AttentionKernel::for_head_dim(256).unwrap(), AttentionKernel::Generic);
        assert!(AttentionKernel::for_head_dim(0).is_err());
        assert!(AttentionKernel::for_head_dim(257).is_err());
    }

    #[test]
    fn launch_shapes() {
        let a = args(AttentionKernel::Hd128);
        let c = launch_config(AttentionKernel::Hd128, &a).unwrap();
        assert_eq!(c.grid_dim, (5 * 8, 1, 1));
        assert_eq!(c.block_dim, (128, 1, 1));
        let g = args(AttentionKernel::Generic);
        let c = launch_config(AttentionKernel::Generic, &g).unwrap();
        assert_eq!(c.grid_dim, ((200 * 8usize).div_ceil(4) as u32, 1, 1));
        // 128-row tiles: 8 warps.
        let w = args(AttentionKernel::Hd128Br128);
        assert_eq!(launch_config(AttentionKernel::Hd128Br128, &w).unwrap().block_dim, (256, 1, 1));
        assert_eq!(launch_config(AttentionKernel::Hd128Br128, &w).unwrap().shared_mem_bytes, 0);
        // 32 rows per warp: 4 warps and dynamic shared memory (K, V, and Q for head_dim 128).
        let w = args(AttentionKernel::Hd128W32);
        let c = launch_config(AttentionKernel::Hd128W32, &w).unwrap();
        assert_eq!((c.block_dim, c.shared_mem_bytes), ((128, 1, 1), 256 * 136 * 2));
        let w64 = args(AttentionKernel::Hd64W32);
        let c = launch_config(AttentionKernel::Hd64W32, &w64).unwrap();
        assert_eq!((c.block_dim, c.shared_mem_bytes), ((128, 1, 1), 128 * 72 * 2));
        // A tile table of the wrong granularity or activations of the wrong type are refused.
        let mut bad = w;
        bad.query_tile = 64;
        assert!(launch_config(AttentionKernel::Hd128Br128, &bad).is_err());
        let mut bad = w;
        bad.precision = Precision::Fp32;
        assert!(launch_config(AttentionKernel::Hd128Br128, &bad).is_err());
        // An empty batch launches nothing.
        let mut e = args(AttentionKernel::Hd64);
        e.num_tiles = 0;
        assert_eq!(launch_config(AttentionKernel::Hd64, &e).unwrap().grid_dim.0, 0);
    }

    #[test]
    fn launch_checks() {
        let ok = args(AttentionKernel::Hd64);
        let mut a = ok;
        a.head_dim = 128;
        assert!(launch_config(AttentionKernel::Hd64, &a).is_err());
        let mut a = ok;
        a.num_kv_heads = 3;
        assert!(launch_config(AttentionKernel::Hd64, &a).is_err());
        let mut a = ok;
        a.q += 8;
        assert!(launch_config(AttentionKernel::Hd64, &a).is_err());
        // The generic kernel reads bf16 one at a time: 2-byte alignment is enough.
        let mut g = args(AttentionKernel::Generic);
        g.q += 8;
        assert!(launch_config(AttentionKernel::Generic, &g).is_ok());
        g.head_dim = 300;
        assert!(launch_config(AttentionKernel::Generic, &g).is_err());
        for bad_scale in [f32::NAN, 0.0, -0.125] {
            let mut a = ok;
            a.softmax_scale = bad_scale;
            assert!(launch_config(AttentionKernel::Hd64, &a).is_err());
        }
    }
}
