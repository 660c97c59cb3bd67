//! CPU reference ops, f32. Each is the definition the CUDA kernels are checked against (`lark selftest`),
//! and each is checked here against naive float64 code at small, odd sizes.
//!
//! Layouts are row-major: activations `[tokens, width]`, linear weights `[out, in]` as HF stores them,
//! attention tensors `[tokens, heads, head_dim]` over a packed batch delimited by `cu_seqlens`.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

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
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `out[m, n] = a[m, k] · b[k, n]` with explicit strides for `b` (row stride `b_rs`), single call.
#[allow(clippy::too_many_arguments)]
fn matmul_nn_with(a: &[f32], m: usize, k: usize, b: &[f32], b_rs: usize, n: usize, out: &mut [f32], par: Parallelism) {
    assert!(a.len() >= m * k && out.len() >= m * n && (k == 0 || b.len() >= (k - 1) * b_rs + n));
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: bounds asserted above.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
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
    let half = head_dim / 2;
    assert_eq!(inv_freq.len(), half);
    x.par_chunks_mut(n_heads * head_dim).zip(positions.par_iter()).for_each(|(row, &pos)| {
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|&f| {
                let a = (pos as f32 * f) as f64;
                (a.cos() as f32 * attention_factor, a.sin() as f32 * attention_factor)
            })
            .unzip();
        for h in row.chunks_mut(head_dim) {
            for i in 0..half {
                let (a, b) = (h[i], h[i + half]);
                h[i] = a * cos[i] - b * sin[i];
                h[i + half] = b * cos[i] + a * sin[i];
            }
        }
    });
}

/// `out = silu(gate) * up`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    out.par_iter_mut().zip(gate.par_iter().zip(up.par_iter())).for_each(|(o, (&g, &u))| {
        *o = g / (1.0 + (-g).exp()) * u;
    });
}

/// Rows of an embedding table.
pub fn embed(table: &[f32], hidden: usize, ids: &[u32], out: &mut [f32]) {
    out.par_chunks_mut(hidden).zip(ids.par_iter()).for_each(|(o, &id)| {
        let s = id as usize * hidden;
        o.copy_from_slice(&table[s..s + hidden]);
    });
}

/// Query rows per block of the CPU attention: bounds the score buffer at `QBLOCK × seq_len` floats.
const QBLOCK: usize = 128;

/// Causal grouped-query attention over a packed batch. `q` is `[T, n_heads, d]`, `k`/`v` `[T, n_kv, d]`,
/// `cu_seqlens` the sequence boundaries (positions restart at each). Scores for a block of query rows are
/// formed with a GEMM against the keys up to the block's last row, softmaxed exactly (max-subtracted, f32
/// with an f64 row sum), then multiplied by V: no T×T matrix is ever held.
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
    let d = head_dim;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let qw = n_heads * d;
    let kw = n_kv_heads * d;
    // Work items: (sequence, head, query block); each writes a disjoint set of output elements.
    let mut items = Vec::new();
    for s in 0..cu_seqlens.len().saturating_sub(1) {
        let (start, end) = (cu_seqlens[s], cu_seqlens[s + 1]);
        for h in 0..n_heads {
            let mut b = start;
            while b < end {
                items.push((start, end, h, b, (b + QBLOCK).min(end)));
                b += QBLOCK;
            }
        }
    }
    let results: Vec<(usize, usize, usize, Vec<f32>)> = items
        .par_iter()
        .map(|&(start, _end, h, b0, b1)| {
            let kvh = h / group;
            let nq = b1 - b0;
            let nk = b1 - start; // keys visible to the block's last row
                                 // Gather the block's queries and the visible keys/values of this kv head contiguously.
            let mut qb = vec![0f32; nq * d];
            for (i, t) in (b0..b1).enumerate() {
                qb[i * d..(i + 1) * d].copy_from_slice(&q[t * qw + h * d..t * qw + (h + 1) * d]);
            }
            let mut kb = vec![0f32; nk * d];
            let mut vb = vec![0f32; nk * d];
            for (j, t) in (start..b1).enumerate() {
                kb[j * d..(j + 1) * d].copy_from_slice(&k[t * kw + kvh * d..t * kw + (kvh + 1) * d]);
                vb[j * d..(j + 1) * d].copy_from_slice(&v[t * kw + kvh * d..t * kw + (kvh + 1) * d]);
            }
            let mut s = vec![0f32; nq * nk];
            matmul_bt_with(&qb, nq, d, &kb, nk, &mut s, Parallelism::None);
            for i in 0..nq {
                let visible = b0 + i - start + 1;
                let row = &mut s[i * nk..(i + 1) * nk];
                let m = row[..visible].iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x * scale));
                let mut sum = 0f64;
                for x in row[..visible].iter_mut() {
                    *x = (*x * scale - m).exp();
                    sum += *x as f64;
                }
                let inv = (1.0 / sum) as f32;
                row[..visible].iter_mut().for_each(|x| *x *= inv);
                row[visible..].fill(0.0);
            }
            let mut o = vec![0f32; nq * d];
            matmul_nn_with(&s, nq, nk, &vb, d, d, &mut o, Parallelism::None);
            (h, b0, nq, o)
        })
        .collect();
    for (h, b0, nq, o) in results {
        for i in 0..nq {
            let t = b0 + i;
            out[t * qw + h * d..t * qw + (h + 1) * d].copy_from_slice(&o[i * d..(i + 1) * d]);
        }
    }
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

    #[test]
    fn attention_matches_naive_gqa_varlen() {
        let mut rng = SplitMix(4);
        let (h, kvh, d) = (6, 2, 5);
        // A 1-token sequence, a short one, and one longer than a query block.
        let lens = [1usize, 9, QBLOCK + 37];
        let mut cu = vec![0usize];
        for l in lens {
            cu.push(cu.last().unwrap() + l);
        }
        let t = *cu.last().unwrap();
        let q = rand_vec(&mut rng, t * h * d);
        let k = rand_vec(&mut rng, t * kvh * d);
        let v = rand_vec(&mut rng, t * kvh * d);
        let mut out = vec![f32::NAN; t * h * d];
        attention_causal(&q, &k, &v, &cu, h, kvh, d, &mut out);
        let mut naive = vec![0f64; t * h * d];
        for s in 0..lens.len() {
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
                        naive[(i * h + hh) * d + x] = (cu[s]..=i)
                            .zip(&scores)
                            .map(|(j, sc)| (sc - m).exp() / z * v[(j * kvh + g) * d + x] as f64)
                            .sum();
                    }
                }
            }
        }
        assert_close(&out, &naive, 1e-5, "attention");
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
