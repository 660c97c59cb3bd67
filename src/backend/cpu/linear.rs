//! f32 linear layers of the CPU backend: `out[m, n] = x[m, k] · w[n, k]ᵀ` with the weight packed once, at load,
//! into panels for an AVX-512 register-blocked kernel; the `gemm` crate on processors without AVX-512.
//!
//! Why our own kernel: the `gemm` crate packs the weight again on every call (a linear layer's weight is
//! constant for the whole run) and chooses its blocking from the shape, so its order of additions moves with the
//! number of rows. Here the weight is packed once, and every output is a fixed sum: for each block of
//! [`K_BLOCK`] features in order, one sequential chain of fused multiply-adds (`acc = fma(x[i][kk], w[j][kk],
//! acc)`), added to the running total. Its bits depend on that row of `x` and that row of `w` only, never on `m`, the tile it falls in or the thread count, so a trajectory scores
//! the same alone or packed into any batch.
//!
//! Layout: panel `p` holds columns `NR·p .. NR·p + NR` as `k` rows of [`NR`] floats (`panel[kk][c]`), zeros past
//! `n`. The kernel keeps an [`MR`] × [`NR`] block of outputs in 24 of the 32 zmm registers; per `kk` it loads one
//! panel row (two vectors) and broadcasts one value of each of the `MR` rows of `x`: 24 FMAs for 14 loads. One
//! panel (`k · NR` floats: 72 KiB at k = 576, 192 KiB at k = 1536) is reused from L2 by every row block of a work
//! item; `x` is read in place.

use rayon::prelude::*;

/// Output columns per panel (two zmm vectors).
pub const NR: usize = 32;
/// Rows of `x` per kernel call (12 × 2 accumulators).
pub const MR: usize = 12;
/// Features per partial sum: each output is the sum, in order, of its blocks' sums, and each block's sum one
/// sequential chain of FMAs. Blocking bounds the rounding error's growth with `k` (a chain of 1536 FMAs drifted
/// measurably further from HF on the 2,408-token golden sequence than the `gemm` crate did).
pub const K_BLOCK: usize = 128;
/// Rows and panels of one parallel work item: 4 row blocks × 4 panels (48 × 128 outputs).
const ITEM_ROW_BLOCKS: usize = 4;
const ITEM_PANELS: usize = 4;

/// A linear layer's f32 weight `[n, k]` (HF's `[out, in]`), laid out for whichever kernel this processor runs.
pub struct F32Linear {
    n: usize,
    k: usize,
    layout: Layout,
}

enum Layout {
    /// AVX-512: panels as described in the module documentation.
    Panels(Vec<f32>),
    /// Elsewhere: the weight as stored, for the `gemm` crate.
    Rows(Vec<f32>),
}

/// Whether this processor runs the AVX-512 kernel (`LARK_CPU_GEMM=crate` forces the `gemm` crate, for
/// comparisons).
pub fn avx512_kernel() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var("LARK_CPU_GEMM").as_deref() != Ok("crate") && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The kernel's name, for `describe` and the benches.
pub fn kernel_name() -> &'static str {
    if avx512_kernel() {
        "avx512 packed"
    } else {
        "gemm crate"
    }
}

impl F32Linear {
    /// Take `w[n, k]` and lay it out for this processor's kernel.
    pub fn new(w: Vec<f32>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "F32Linear: weight has {} values, expected {n} × {k}", w.len());
        if !avx512_kernel() {
            return F32Linear { n, k, layout: Layout::Rows(w) };
        }
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * k * NR];
        panels.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
            for c in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + c] = v;
                }
            }
        });
        F32Linear { n, k, layout: Layout::Panels(panels) }
    }

    /// Row `c` of the weight (`w[c, :]`), e.g. a token's embedding when the LM head is tied to it.
    pub fn row(&self, c: usize, out: &mut [f32]) {
        let k = self.k;
        match &self.layout {
            Layout::Rows(w) => out.copy_from_slice(&w[c * k..(c + 1) * k]),
            Layout::Panels(p) => {
                let panel = &p[(c / NR) * k * NR..(c / NR + 1) * k * NR];
                for (kk, o) in out.iter_mut().enumerate() {
                    *o = panel[kk * NR + c % NR];
                }
            }
        }
    }

    /// `out[m, n] = x[m, k] · wᵀ`, multi-threaded.
    pub fn matmul_bt(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && out.len() >= m * n, "F32Linear::matmul_bt: buffer sizes");
        if m == 0 || n == 0 {
            return;
        }
        match &self.layout {
            Layout::Rows(w) => super::ops::matmul_bt(x, m, k, w, n, out),
            #[cfg(target_arch = "x86_64")]
            Layout::Panels(panels) => {
                if k == 0 {
                    out[..m * n].fill(0.0);
                    return;
                }
                let (row_blocks, n_panels) = (m.div_ceil(MR), n.div_ceil(NR));
                let mut items = Vec::new();
                for b0 in (0..row_blocks).step_by(ITEM_ROW_BLOCKS) {
                    for p0 in (0..n_panels).step_by(ITEM_PANELS) {
                        items.push((b0, p0));
                    }
                }
                let out_ptr = SendPtr(out.as_mut_ptr());
                let run = |(b0, p0): (usize, usize)| {
                    for p in p0..(p0 + ITEM_PANELS).min(n_panels) {
                        let panel = &panels[p * k * NR..(p + 1) * k * NR];
                        let cols = NR.min(n - p * NR);
                        for b in b0..(b0 + ITEM_ROW_BLOCKS).min(row_blocks) {
                            let r0 = b * MR;
                            let rows = MR.min(m - r0);
                            // SAFETY: avx512f was detected (avx512_kernel); rows r0..r0+rows of x exist; the block
                            // writes rows r0..r0+rows, columns p·NR..p·NR+cols of out, which no other item writes.
                            unsafe {
                                avx512::block(
                                    x.as_ptr().add(r0 * k),
                                    k,
                                    rows,
                                    panel.as_ptr(),
                                    out_ptr.get().add(r0 * n + p * NR),
                                    n,
                                    cols,
                                )
                            };
                        }
                    }
                };
                if rayon::current_num_threads() <= 1 || items.len() == 1 {
                    items.into_iter().for_each(run);
                } else {
                    items.into_par_iter().for_each(run);
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels(_) => unreachable!("panels are made only where AVX-512 runs"),
        }
    }
}

/// The output pointer handed to parallel work items (here and in `bf16`).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: every user's work items write disjoint blocks of the output (see the matmul_bt of each).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{K_BLOCK, MR, NR};
    use std::arch::x86_64::*;

    /// `rows` (≤ [`MR`]) rows of `x` (row stride `k`) against one panel, into `cols` (≤ [`NR`]) columns of `out`
    /// (row stride `ldo`).
    ///
    /// # Safety
    /// AVX-512F is available; `x` has `rows` rows of `k`, `panel` `k · NR` floats, `out` `rows` rows with `cols`
    /// writable columns.
    pub unsafe fn block(
        x: *const f32,
        k: usize,
        rows: usize,
        panel: *const f32,
        out: *mut f32,
        ldo: usize,
        cols: usize,
    ) {
        match rows {
            12 => kernel::<12>(x, k, panel, out, ldo, cols),
            11 => kernel::<11>(x, k, panel, out, ldo, cols),
            10 => kernel::<10>(x, k, panel, out, ldo, cols),
            9 => kernel::<9>(x, k, panel, out, ldo, cols),
            8 => kernel::<8>(x, k, panel, out, ldo, cols),
            7 => kernel::<7>(x, k, panel, out, ldo, cols),
            6 => kernel::<6>(x, k, panel, out, ldo, cols),
            5 => kernel::<5>(x, k, panel, out, ldo, cols),
            4 => kernel::<4>(x, k, panel, out, ldo, cols),
            3 => kernel::<3>(x, k, panel, out, ldo, cols),
            2 => kernel::<2>(x, k, panel, out, ldo, cols),
            1 => kernel::<1>(x, k, panel, out, ldo, cols),
            _ => unreachable!("a row block has 1..={MR} rows"),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize>(
        x: *const f32,
        k: usize,
        panel: *const f32,
        out: *mut f32,
        ldo: usize,
        cols: usize,
    ) {
        const { assert!(R <= MR && NR == 32) };
        // Partial sums of each K_BLOCK features in registers, added into `total` (L1) after each block.
        let mut total_lo = [_mm512_setzero_ps(); R];
        let mut total_hi = [_mm512_setzero_ps(); R];
        for k0 in (0..k).step_by(K_BLOCK) {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            for kk in k0..(k0 + K_BLOCK).min(k) {
                let b = panel.add(kk * NR);
                let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)));
                for i in 0..R {
                    let a = _mm512_set1_ps(*x.add(i * k + kk));
                    lo[i] = _mm512_fmadd_ps(a, b0, lo[i]);
                    hi[i] = _mm512_fmadd_ps(a, b1, hi[i]);
                }
            }
            for i in 0..R {
                total_lo[i] = _mm512_add_ps(total_lo[i], lo[i]);
                total_hi[i] = _mm512_add_ps(total_hi[i], hi[i]);
            }
        }
        let m_lo = if cols >= 16 { 0xffff } else { (1u32 << cols) as u16 - 1 };
        let m_hi = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u32 << (cols - 16)) as u16 - 1
        } else {
            0
        };
        for i in 0..R {
            let o = out.add(i * ldo);
            _mm512_mask_storeu_ps(o, m_lo, total_lo[i]);
            _mm512_mask_storeu_ps(o.add(16), m_hi, total_hi[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::SplitMix;

    fn rand_vec(rng: &mut SplitMix, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32()).collect()
    }

    /// Every output is the sum of its blocks' sequential FMA chains, whatever the kernel (the `gemm` crate where AVX-512 is
    /// missing is only close to it).
    #[test]
    fn matches_the_sequential_fma_chain_at_awkward_sizes() {
        let mut rng = SplitMix(5);
        for &(m, k, n) in
            &[(1, 1, 1), (3, 5, 7), (13, 33, 31), (25, 64, 33), (50, 129, 97), (12, 576, 64), (14, 300, 40)]
        {
            let x = rand_vec(&mut rng, m * k);
            let w = rand_vec(&mut rng, n * k);
            let lin = F32Linear::new(w.clone(), n, k);
            let mut out = vec![f32::NAN; m * n];
            lin.matmul_bt(&x, m, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let chain = (0..k).step_by(K_BLOCK).fold(0f32, |total, k0| {
                        total
                            + (k0..(k0 + K_BLOCK).min(k))
                                .fold(0f32, |acc, kk| x[i * k + kk].mul_add(w[j * k + kk], acc))
                    });
                    let got = out[i * n + j];
                    if avx512_kernel() {
                        assert_eq!(got.to_bits(), chain.to_bits(), "({m},{k},{n}) [{i},{j}]: {got} vs {chain}");
                    } else {
                        assert!((got - chain).abs() <= 1e-5 * (k as f32).sqrt(), "({m},{k},{n}) [{i},{j}]");
                    }
                }
            }
            let mut r = vec![0f32; k];
            lin.row(n - 1, &mut r);
            assert_eq!(r, w[(n - 1) * k..]);
        }
    }

    /// The packed kernel's promise (the `gemm` crate, used without AVX-512, makes none).
    #[test]
    fn a_row_does_not_depend_on_the_other_rows() {
        if !avx512_kernel() {
            eprintln!("no AVX-512 here: the gemm crate runs, which does not promise row independence");
            return;
        }
        let mut rng = SplitMix(9);
        let (k, n) = (96, 70);
        let lin = F32Linear::new(rand_vec(&mut rng, n * k), n, k);
        let x = rand_vec(&mut rng, 97 * k);
        let mut all = vec![0f32; 97 * n];
        lin.matmul_bt(&x, 97, &mut all);
        for r in [0, 50, 96] {
            let mut one = vec![0f32; n];
            lin.matmul_bt(&x[r * k..(r + 1) * k], 1, &mut one);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one), bits(&all[r * n..(r + 1) * n]), "row {r}");
        }
    }
}
