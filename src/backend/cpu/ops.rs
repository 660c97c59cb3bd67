//! CPU reference ops, f32. Each is the definition the CUDA kernels are checked against (`lark selftest`),
//! and each is checked here against naive float64 code at small, odd sizes.
//!
//! Layouts are row-major: activations `[tokens, width]`, linear weights `[out, in]` as HF stores them,
//! attention tensors `[tokens, heads, head_dim]` over a packed batch delimited by `cu_seqlens`.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::stats::exp_neg_f32;

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (a linear layer without bias), multi-threaded.
pub fn matmul_bt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    matmul_bt_with(x, m, k, w, n, out, parallelism())
}

/// As [`matmul_bt`], with explicit parallelism (single-threaded inside an outer parallel loop).
pub fn matmul_bt_with(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32], par: Parallelism) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul_bt: buffer sizes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    // SAFETY: the asserts above bound every access: dst is m×n with row stride n, lhs m×k with row stride k,
    // rhs = wᵀ (k×n) read as w with column stride k.
    unsafe { gemm_strided(m, n, k, out.as_mut_ptr(), n, false, x.as_ptr(), k, w.as_ptr(), k, 1, par) }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]` on row-major `dst` and `lhs` (unit column stride, row strides
/// `dst_rs`, `lhs_rs`) and a `rhs` of any strides: element (r, c) of rhs is `rhs[r·rhs_rs + c·rhs_cs]`.
/// With `accumulate` the product is added to `dst`, otherwise it overwrites it.
///
/// # Safety
/// Every element addressed through the three pointers and strides must be inside its allocation.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    par: Parallelism,
) {
    let alpha = if accumulate { 1.0 } else { 0.0 };
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        alpha,
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// Add a bias to every row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(a, b)| *a += b));
}

/// `x += y` elementwise.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    x.par_iter_mut().zip(y.par_iter()).for_each(|(a, b)| *a += b);
}

/// RMSNorm over rows of `weight.len()`: `out = x / sqrt(mean(x²) + eps) * weight` (mean in f64).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, r)| {
        let inv = inverse_rms(r, eps);
        for ((o, &v), &w) in o.iter_mut().zip(r).zip(weight) {
            *o = v * inv * w;
        }
    });
}

/// [`rms_norm`] in place (Qwen3's per-head q/k norm: rows of `head_dim`).
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    x.par_chunks_mut(weight.len()).for_each(|r| {
        let inv = inverse_rms(r, eps);
        r.iter_mut().zip(weight).for_each(|(v, &w)| *v = *v * inv * w);
    });
}

/// `1 / sqrt(mean(r²) + eps)`, the mean in f64, rounded to f32.
fn inverse_rms(r: &[f32], eps: f32) -> f32 {
    let ms = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / r.len() as f64;
    (1.0 / (ms + eps as f64).sqrt()) as f32
}

/// Rotary inverse frequencies as the model computes them, rounded to f32 (HF keeps them in f32).
pub fn rope_inv_freq_f32(config: &crate::model::ModelConfig) -> Vec<f32> {
    config.rope_inv_freq().into_iter().map(|f| f as f32).collect()
}

/// Rotate-half RoPE in place on `x[t, head, :]` with position `positions[t]`. The angle is computed as HF
/// does, `(pos as f32) * inv_freq` in f32, then cos/sin of that f32 angle.
pub fn rope_inplace(x: &mut [f32], positions: &[u32], n_heads: usize, head_dim: usize, inv_freq: &[f32]) {
    rope_scaled_inplace(x, positions, n_heads, head_dim, inv_freq, 1.0)
}

/// [`rope_inplace`] with cos and sin multiplied by `attention_factor` in f32 after rounding, as transformers
/// applies YaRN's attention scaling (a factor of 1 changes nothing: the product is exact).
pub fn rope_scaled_inplace(
    x: &mut [f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    inv_freq: &[f32],
    attention_factor: f32,
) {
    rope_apply(x, &RopeTable::new(positions, inv_freq, attention_factor), n_heads, head_dim)
}

/// cos and sin of every (position, frequency) of a batch, computed once per forward pass and shared by q and k
/// of every layer (the forward pass would otherwise evaluate 2 × layers times as many f64 sin/cos).
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The angle as HF computes it, `(pos as f32) * inv_freq` in f32, then cos/sin of that f32 angle in f64,
    /// rounded to f32 and multiplied by `attention_factor`.
    pub fn new(positions: &[u32], inv_freq: &[f32], attention_factor: f32) -> Self {
        let half = inv_freq.len();
        let mut cos = vec![0f32; positions.len() * half];
        let mut sin = vec![0f32; positions.len() * half];
        cos.par_chunks_mut(half.max(1)).zip(sin.par_chunks_mut(half.max(1))).zip(positions.par_iter()).for_each(
            |((c, s), &pos)| {
                for ((c, s), &f) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
                    let a = (pos as f32 * f) as f64;
                    *c = a.cos() as f32 * attention_factor;
                    *s = a.sin() as f32 * attention_factor;
                }
            },
        );
        RopeTable { half, cos, sin }
    }
}

/// Rotate-half RoPE in place on `x[t, head, :]` with the table's row `t`.
pub fn rope_apply(x: &mut [f32], table: &RopeTable, n_heads: usize, head_dim: usize) {
    let half = head_dim / 2;
    assert_eq!(table.half, half, "rope table for head_dim {}", 2 * table.half);
    if half == 0 {
        return;
    }
    x.par_chunks_mut(n_heads * head_dim).zip(table.cos.par_chunks(half)).zip(table.sin.par_chunks(half)).for_each(
        |((row, cos), sin)| {
            for h in row.chunks_mut(head_dim) {
                for i in 0..half {
                    let (a, b) = (h[i], h[i + half]);
                    h[i] = a * cos[i] - b * sin[i];
                    h[i + half] = b * cos[i] + a * sin[i];
                }
            }
        },
    );
}

/// `out = silu(gate) * up`, `silu(g) = g / (1 + e^{−g})` with the C library's `expf` (eight lanes of it where
/// the processor has AVX2 and FMA: [`super::expf`], the same bits).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const PIECE: usize = 4096;
    out.par_chunks_mut(PIECE)
        .zip(gate.par_chunks(PIECE).zip(up.par_chunks(PIECE)))
        .for_each(|(o, (g, u))| silu_mul_slice(g, u, o));
}

/// [`silu_mul`] on rows of `[gate | up]` (the stacked gate/up projection's output, `2·inter` wide), without
/// splitting them first: `out[t, j] = silu(gate_up[t, j]) · gate_up[t, inter + j]`.
pub fn silu_mul_stacked(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    out.par_chunks_mut(inter).zip(gate_up.par_chunks(2 * inter)).for_each(|(o, row)| {
        let (gate, up) = row.split_at(inter);
        silu_mul_slice(gate, up, o);
    });
}

fn silu_mul_slice(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::expf::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { silu_mul_avx2(gate, up, out) };
    }
    out.iter_mut().zip(gate).zip(up).for_each(|((o, &g), &u)| *o = g / (1.0 + (-g).exp()) * u);
}

/// The same operations as the scalar `g / (1.0 + (-g).exp()) * u`, eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(gate.len()).min(up.len());
    let whole = n / 8 * 8;
    let (sign, one) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(1.0));
    for i in (0..whole).step_by(8) {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = super::expf::expf8(_mm256_xor_ps(g, sign));
        let q = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(q, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
    for i in whole..n {
        out[i] = gate[i] / (1.0 + (-gate[i]).exp()) * up[i];
    }
}

/// Rows of an embedding table.
pub fn embed(table: &[f32], hidden: usize, ids: &[u32], out: &mut [f32]) {
    out.par_chunks_mut(hidden).zip(ids.par_iter()).for_each(|(o, &id)| {
        let s = id as usize * hidden;
        o.copy_from_slice(&table[s..s + hidden]);
    });
}

/// Query rows per head in one block of the CPU attention. With the `group` query heads that share a KV head
/// stacked, a block's score tile is `group × Q_BLOCK × K_BLOCK` floats (1.5 MiB for SmolLM2's 3 × 128 × 1024),
/// whatever the sequence length.
pub const Q_BLOCK: usize = 128;
/// Keys per block. A multiple of [`Q_BLOCK`], so a key block never starts inside a query block: every query row
/// sees at least one key of every block it visits.
pub const K_BLOCK: usize = 1024;
const _: () = assert!(K_BLOCK.is_multiple_of(Q_BLOCK));

/// Causal grouped-query attention over a packed batch, flash-style. `q` is `[T, n_heads, d]`, `k`/`v`
/// `[T, n_kv, d]`, `cu_seqlens` the sequence boundaries (positions restart at each).
///
/// Work items are (sequence, KV head, block of [`Q_BLOCK`] query rows); the query heads sharing the KV head are
/// stacked into one tile, so each key and value row is read once per tile. For each block of [`K_BLOCK`] visible
/// keys, one GEMM forms the scores against K in place (no gather), an online softmax keeps each row's running
/// max and sum (the sum in f64), and a second GEMM accumulates P·V. Memory is linear in T: no row of scores longer
/// than a key block exists. Blocks are laid out from each sequence's start, so a sequence's result does not
/// depend on what else is packed with it, and every item writes its own rows: the output is deterministic.
#[allow(clippy::too_many_arguments)]
pub fn attention_causal(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cu_seqlens: &[usize],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let shape = AttentionShape { n_heads, n_kv_heads, head_dim };
    let (qw, kw) = (n_heads * head_dim, n_kv_heads * head_dim);
    let t = cu_seqlens.last().copied().unwrap_or(0);
    assert!(q.len() >= t * qw && k.len() >= t * kw && v.len() >= t * kw && out.len() >= t * qw, "attention sizes");
    let mut items = Vec::new();
    for s in 0..cu_seqlens.len().saturating_sub(1) {
        let (start, end) = (cu_seqlens[s], cu_seqlens[s + 1]);
        for kv_head in 0..n_kv_heads {
            for b0 in (start..end).step_by(Q_BLOCK) {
                items.push(QueryBlock { start, kv_head, rows: b0..(b0 + Q_BLOCK).min(end) });
            }
        }
    }
    // The longest first (work grows with the visible keys), so the short ones fill in at the end.
    items.sort_by_key(|b| std::cmp::Reverse(b.rows.end - b.start));
    let tiles: Vec<(QueryBlock, Vec<f32>)> = items
        .into_par_iter()
        .map(|b| {
            let tile = attend_dispatch(q, k, v, &shape, &b);
            (b, tile)
        })
        .collect();
    let (d, group) = (head_dim, n_heads / n_kv_heads);
    for (b, tile) in tiles {
        let nq = b.rows.len();
        for g in 0..group {
            let h = b.kv_head * group + g;
            for (i, t) in b.rows.clone().enumerate() {
                out[t * qw + h * d..t * qw + (h + 1) * d]
                    .copy_from_slice(&tile[(g * nq + i) * d..(g * nq + i + 1) * d]);
            }
        }
    }
}

struct AttentionShape {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

struct QueryBlock {
    /// The sequence's first row (its position 0).
    start: usize,
    kv_head: usize,
    rows: std::ops::Range<usize>,
}

fn attend_dispatch(q: &[f32], k: &[f32], v: &[f32], shape: &AttentionShape, b: &QueryBlock) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            return unsafe { attend_avx2(q, k, v, shape, b) };
        }
    }
    attend(q, k, v, shape, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], shape: &AttentionShape, b: &QueryBlock) -> Vec<f32> {
    attend(q, k, v, shape, b)
}

/// One query block against its visible keys: the output tile `[group × rows, d]`, query heads outermost.
#[inline(always)]
fn attend(q: &[f32], k: &[f32], v: &[f32], shape: &AttentionShape, b: &QueryBlock) -> Vec<f32> {
    let d = shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let (qw, kw) = (shape.n_heads * d, shape.n_kv_heads * d);
    let nq = b.rows.len();
    let n_rows = group * nq;
    let scale = 1.0 / (d as f32).sqrt();
    // The tile's queries. The scale multiplies each score (q·k)·scale, not q: the same rounding as HF's
    // attention, which the golden tests hold to 1e-5 on peaked distributions where one ulp of a score shows.
    let mut qt = vec![0f32; n_rows * d];
    for g in 0..group {
        let h = b.kv_head * group + g;
        for (i, t) in b.rows.clone().enumerate() {
            qt[(g * nq + i) * d..(g * nq + i + 1) * d].copy_from_slice(&q[t * qw + h * d..t * qw + (h + 1) * d]);
        }
    }
    let mut o = vec![0f32; n_rows * d];
    let mut row_max = vec![f32::NEG_INFINITY; n_rows];
    let mut row_sum = vec![0f64; n_rows];
    let mut p = vec![0f32; n_rows * K_BLOCK];
    let kv_off = b.kv_head * d;
    // Rows whose keys all fit in one block take the exact softmax (normalised P, then one P·V): the arithmetic
    // of the attention before blocking, so sequences up to K_BLOCK tokens score as they always did.
    let single_block = b.rows.end - b.start <= K_BLOCK;
    for k0 in (b.start..b.rows.end).step_by(K_BLOCK) {
        let k1 = (k0 + K_BLOCK).min(b.rows.end);
        let nk = k1 - k0;
        let p = &mut p[..n_rows * nk];
        // S = Q · K[k0..k1]ᵀ, K read in place: its element (c, j) is k[(k0 + j)·kw + kv_off + c].
        // SAFETY: p is n_rows × nk (row stride nk), qt n_rows × d (row stride d); the K reads stay inside
        // rows k0..k1 of k, whose length the caller asserted.
        let k_rows = k[k0 * kw + kv_off..].as_ptr();
        unsafe {
            gemm_strided(n_rows, nk, d, p.as_mut_ptr(), nk, false, qt.as_ptr(), d, k_rows, kw, 1, Parallelism::None)
        }
        for r in 0..n_rows {
            let t = b.rows.start + r % nq;
            let visible = (t + 1 - k0).min(nk); // k0 ≤ rows.start ≤ t (K_BLOCK is a multiple of Q_BLOCK)
            let row = &mut p[r * nk..(r + 1) * nk];
            let block_max = scaled_max(&row[..visible], scale);
            let new_max = row_max[r].max(block_max);
            let block_sum = exp_shifted_sum(&mut row[..visible], scale, new_max, single_block);
            row[visible..].fill(0.0);
            if row_max[r] != f32::NEG_INFINITY && row_max[r] != new_max {
                let rescale = exp_neg_f32(row_max[r] - new_max);
                row_sum[r] *= rescale as f64;
                o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= rescale);
            }
            row_sum[r] += block_sum;
            row_max[r] = new_max;
            if single_block {
                // All of the row's keys are in this block: normalise P before P·V, as an exact softmax does.
                let inv = (1.0 / row_sum[r]) as f32;
                row[..visible].iter_mut().for_each(|x| *x *= inv);
            }
        }
        // O += P · V[k0..k1], V read in place: its element (j, c) is v[(k0 + j)·kw + kv_off + c].
        // SAFETY: o is n_rows × d, p n_rows × nk; the V reads stay inside rows k0..k1 of v.
        let v_rows = v[k0 * kw + kv_off..].as_ptr();
        unsafe {
            gemm_strided(n_rows, d, nk, o.as_mut_ptr(), d, true, p.as_ptr(), nk, v_rows, 1, kw, Parallelism::None)
        }
    }
    if !single_block {
        for (r, row) in o.chunks_mut(d).enumerate() {
            let inv = (1.0 / row_sum[r]) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
    o
}

/// `x ← e^{x·scale − max}` over a row of raw scores, returning the sum in f64. `exact` takes the C library's
/// `expf` (the single-block path, whose results must not move); otherwise the polynomial exp of the vocabulary
/// pass over eight lanes (relative error < 2e-8), in AVX2 where the processor has it (the same operations, so the
/// same bits: the compiler leaves the plain loop scalar).
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], scale: f32, max: f32, exact: bool) -> f64 {
    if exact {
        #[cfg(target_arch = "x86_64")]
        if super::expf::available() {
            // The same values as the scalar loop below (the C library's expf, eight lanes at a time, then the
            // same sequential f64 sum).
            row.iter_mut().for_each(|x| *x = *x * scale - max);
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { super::expf::expf_inplace(row) };
            return row.iter().fold(0f64, |sum, &x| sum + x as f64);
        }
        return row.iter_mut().fold(0f64, |sum, x| {
            *x = (*x * scale - max).exp();
            sum + *x as f64
        });
    }
    const LANES: usize = 8;
    let whole = row.len() / LANES * LANES;
    let (chunks, rest) = row.split_at_mut(whole);
    #[cfg(target_arch = "x86_64")]
    let lanes = if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { exp_shifted_lanes_avx2(chunks, scale, max) }
    } else {
        exp_shifted_lanes(chunks, scale, max)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes = exp_shifted_lanes(chunks, scale, max);
    let mut sum = 0f64;
    for x in rest {
        *x = exp_neg_f32(*x * scale - max);
        sum += *x as f64;
    }
    sum + lanes.iter().sum::<f64>()
}

/// The eight lanes of [`exp_shifted_sum`]'s polynomial path over whole chunks of eight.
#[inline(always)]
fn exp_shifted_lanes(chunks: &mut [f32], scale: f32, max: f32) -> [f64; 8] {
    let mut lanes = [0f64; 8];
    for c in chunks.chunks_exact_mut(8) {
        for l in 0..8 {
            c[l] = exp_neg_f32(c[l] * scale - max);
            lanes[l] += c[l] as f64;
        }
    }
    lanes
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_lanes_avx2(chunks: &mut [f32], scale: f32, max: f32) -> [f64; 8] {
    use std::arch::x86_64::*;
    let (scale, max) = (_mm256_set1_ps(scale), _mm256_set1_ps(max));
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for c in chunks.chunks_exact_mut(8) {
        let x = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), scale), max);
        let p = crate::stats::exp_neg_f32x8(x);
        _mm256_storeu_ps(c.as_mut_ptr(), p);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p)));
    }
    let mut lanes = [0f64; 8];
    _mm256_storeu_pd(lanes.as_mut_ptr(), lo);
    _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi);
    lanes
}

/// The largest of `row[i]·scale`: exact in any order, so over eight independent lanes, which the compiler
/// vectorises (a single running `max` it leaves scalar).
#[inline(always)]
fn scaled_max(row: &[f32], scale: f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for l in 0..8 {
            let v = c[l] * scale;
            lanes[l] = if v > lanes[l] { v } else { lanes[l] };
        }
    }
    it.remainder().iter().map(|&x| x * scale).chain(lanes).fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::model::random::SplitMix;

    fn rand_vec(rng: &mut SplitMix, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32()).collect()
    }

    fn assert_close(a: &[f32], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum::<f64>().sqrt();
        let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-30);
        assert!(num / den < tol, "{what}: relative error {}", num / den);
    }

    /// The AVX2 lanes of the polynomial softmax path give the bits of the scalar lanes; the max is exact.
    #[test]
    fn exp_shifted_sum_lanes_are_the_scalar_lanes() {
        let mut rng = SplitMix(17);
        for n in [1usize, 7, 8, 9, 1000, 1024] {
            let row: Vec<f32> = (0..n).map(|_| 12.0 * rng.next_f32()).collect();
            let (scale, max) = (0.125f32, scaled_max(&row, 0.125));
            let want_max = row.iter().map(|&x| x * scale).fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max.to_bits(), want_max.to_bits(), "n {n}: max");
            let (mut fast, mut plain) = (row.clone(), row.clone());
            let sum = exp_shifted_sum(&mut fast, scale, max, false);
            let whole = n / 8 * 8;
            let lanes = exp_shifted_lanes(&mut plain[..whole], scale, max);
            let mut want = 0f64;
            for x in &mut plain[whole..] {
                *x = exp_neg_f32(*x * scale - max);
                want += *x as f64;
            }
            want += lanes.iter().sum::<f64>();
            assert_eq!(sum.to_bits(), want.to_bits(), "n {n}: sum");
            assert!(fast.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()), "n {n}: values");
        }
    }

    #[test]
    fn silu_mul_of_stacked_rows_is_silu_mul_of_the_halves() {
        let mut rng = SplitMix(23);
        let (t, inter) = (5, 37);
        let gate_up: Vec<f32> = rand_vec(&mut rng, t * 2 * inter).into_iter().map(|x| 30.0 * x).collect();
        let mut stacked = vec![f32::NAN; t * inter];
        silu_mul_stacked(&gate_up, inter, &mut stacked);
        for r in 0..t {
            let row = &gate_up[r * 2 * inter..(r + 1) * 2 * inter];
            let mut want = vec![0f32; inter];
            silu_mul(&row[..inter], &row[inter..], &mut want);
            assert_eq!(&stacked[r * inter..(r + 1) * inter], &want[..], "row {r}");
            // Eight lanes or not, the scalar formula's bits.
            for (j, w) in want.iter().enumerate() {
                let (g, u) = (row[j], row[inter + j]);
                assert_eq!(w.to_bits(), (g / (1.0 + (-g).exp()) * u).to_bits(), "row {r}, {j}");
            }
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let mut rng = SplitMix(1);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 129, 65)] {
            let x = rand_vec(&mut rng, m * k);
            let w = rand_vec(&mut rng, n * k);
            let mut out = vec![f32::NAN; m * n];
            matmul_bt(&x, m, k, &w, n, &mut out);
            let naive: Vec<f64> = (0..m * n)
                .map(|idx| (0..k).map(|d| x[idx / n * k + d] as f64 * w[idx % n * k + d] as f64).sum())
                .collect();
            assert_close(&out, &naive, 1e-6, "matmul");
        }
    }

    #[test]
    fn rms_norm_matches_naive() {
        let mut rng = SplitMix(2);
        let (t, d) = (5, 37);
        let x = rand_vec(&mut rng, t * d);
        let w = rand_vec(&mut rng, d);
        let mut out = vec![f32::NAN; t * d];
        rms_norm(&x, &w, 1e-6, &mut out);
        let naive: Vec<f64> = (0..t * d)
            .map(|i| {
                let r = &x[i / d * d..i / d * d + d];
                let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
                x[i] as f64 / (ms + 1e-6).sqrt() * w[i % d] as f64
            })
            .collect();
        assert_close(&out, &naive, 1e-6, "rms_norm");
    }

    #[test]
    fn rope_matches_complex_rotation() {
        let mut rng = SplitMix(3);
        let (t, h, d) = (4, 3, 10);
        let x0 = rand_vec(&mut rng, t * h * d);
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / d as f32)).collect();
        let pos = [0u32, 1, 7, 300];
        let mut x = x0.clone();
        rope_inplace(&mut x, &pos, h, d, &inv);
        let mut naive = vec![0f64; t * h * d];
        for ti in 0..t {
            for hi in 0..h {
                let base = (ti * h + hi) * d;
                for i in 0..d / 2 {
                    let a = (pos[ti] as f32 * inv[i]) as f64;
                    let (re, im) = (x0[base + i] as f64, x0[base + i + d / 2] as f64);
                    naive[base + i] = re * a.cos() - im * a.sin();
                    naive[base + i + d / 2] = im * a.cos() + re * a.sin();
                }
            }
        }
        assert_close(&x, &naive, 1e-6, "rope");
        // Position 0 is the identity.
        assert_eq!(&x[..h * d], &x0[..h * d]);
    }

    /// Causal GQA attention in f64, one query row at a time: the definition.
    fn naive_attention(q: &[f32], k: &[f32], v: &[f32], cu: &[usize], h: usize, kvh: usize, d: usize) -> Vec<f64> {
        let t = *cu.last().unwrap();
        let mut out = vec![0f64; t * h * d];
        for s in 0..cu.len() - 1 {
            for i in cu[s]..cu[s + 1] {
                for hh in 0..h {
                    let g = hh / (h / kvh);
                    let scores: Vec<f64> = (cu[s]..=i)
                        .map(|j| {
                            (0..d)
                                .map(|x| q[(i * h + hh) * d + x] as f64 * k[(j * kvh + g) * d + x] as f64)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    for x in 0..d {
                        out[(i * h + hh) * d + x] = (cu[s]..=i)
                            .zip(&scores)
                            .map(|(j, sc)| (sc - m).exp() / z * v[(j * kvh + g) * d + x] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn packed(lens: &[usize]) -> Vec<usize> {
        let mut cu = vec![0usize];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        cu
    }

    #[test]
    fn attention_matches_naive_gqa_varlen() {
        let mut rng = SplitMix(4);
        let (h, kvh, d) = (6, 2, 5);
        // A 1-token sequence, a short one, and one spanning two key blocks and a partial query block.
        let cu = packed(&[1, 9, K_BLOCK + Q_BLOCK + 37]);
        let t = *cu.last().unwrap();
        let q = rand_vec(&mut rng, t * h * d);
        let k = rand_vec(&mut rng, t * kvh * d);
        let v = rand_vec(&mut rng, t * kvh * d);
        let mut out = vec![f32::NAN; t * h * d];
        attention_causal(&q, &k, &v, &cu, h, kvh, d, &mut out);
        assert_close(&out, &naive_attention(&q, &k, &v, &cu, h, kvh, d), 1e-5, "attention");
    }

    #[test]
    fn attention_online_softmax_follows_a_growing_max() {
        // Scores that grow along the sequence (keys scaled up with position, large magnitudes), so every key block
        // raises each row's running max and the accumulated output must be rescaled; MHA (group 1), d = 16.
        let mut rng = SplitMix(9);
        let (h, kvh, d) = (2, 2, 16);
        let cu = packed(&[3 * K_BLOCK + 5]);
        let t = *cu.last().unwrap();
        let q: Vec<f32> = rand_vec(&mut rng, t * h * d).iter().map(|x| x.abs() * 3.0).collect();
        let k: Vec<f32> =
            (0..t * kvh * d).map(|i| (1.0 + 4.0 * (i / (kvh * d)) as f32 / t as f32) * rng.next_f32().abs()).collect();
        let v = rand_vec(&mut rng, t * kvh * d);
        let mut out = vec![f32::NAN; t * h * d];
        attention_causal(&q, &k, &v, &cu, h, kvh, d, &mut out);
        let want = naive_attention(&q, &k, &v, &cu, h, kvh, d);
        assert_close(&out, &want, 1e-5, "attention, growing scores");
        let worst = out.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0f64, f64::max);
        assert!(worst < 1e-5, "attention, growing scores: max abs error {worst}");
    }

    #[test]
    fn attention_of_a_sequence_does_not_depend_on_what_is_packed_with_it() {
        let mut rng = SplitMix(11);
        let (h, kvh, d) = (4, 1, 8);
        let len = K_BLOCK + 3;
        let (q, k, v) =
            (rand_vec(&mut rng, len * h * d), rand_vec(&mut rng, len * kvh * d), rand_vec(&mut rng, len * kvh * d));
        let mut alone = vec![0f32; len * h * d];
        attention_causal(&q, &k, &v, &packed(&[len]), h, kvh, d, &mut alone);
        // The same sequence between two others.
        let (before, after) = (77usize, 5usize);
        let pad = |x: &[f32], w: usize, rng: &mut SplitMix| {
            let mut all = rand_vec(rng, before * w);
            all.extend_from_slice(x);
            all.extend(rand_vec(rng, after * w));
            all
        };
        let (qp, kp, vp) = (pad(&q, h * d, &mut rng), pad(&k, kvh * d, &mut rng), pad(&v, kvh * d, &mut rng));
        let mut out = vec![0f32; (before + len + after) * h * d];
        attention_causal(&qp, &kp, &vp, &packed(&[before, len, after]), h, kvh, d, &mut out);
        let mid = &out[before * h * d..(before + len) * h * d];
        assert!(mid.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "packing changed the bits");
    }

    #[test]
    fn silu_mul_matches_naive() {
        let g = [-3.0f32, 0.0, 0.5, 7.0];
        let u = [1.0f32, 2.0, -1.0, 0.25];
        let mut out = [0f32; 4];
        silu_mul(&g, &u, &mut out);
        for i in 0..4 {
            let want = g[i] as f64 / (1.0 + (-(g[i] as f64)).exp()) * u[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-6);
        }
    }
}
