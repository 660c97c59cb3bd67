//! Per-token statistics from one pass over the vocabulary, and their per-trajectory sums.
//!
//! For the distribution π = softmax(z) at a scored position with gold token y:
//! - `lse`      = log Σ_v exp z_v
//! - `logprob`  = z_y − lse  (log π(y))
//! - `sum_p2`   = Σ_v π(v)²  (so the Brier term ‖π − δ_y‖² = sum_p2 − 2 π(y) + 1)
//! - `rank`     = 1 + #{v : z_v > z_y}  (exact; ties do not count against the gold token)
//! - `entropy`  = −Σ_v π(v) log π(v)
//! - `topk_brier` (compat mode only) = Σ_{v∈top-K} p̃(v)² − 2 p̃(y) + 1 with p̃ the softmax of the K largest
//!   logits renormalised, and p̃(y) = 0 when y is not among them (the LARK authors' scorer).
//!
//! One online pass keeps a running max m and, relative to it, s = Σ e^{z−m}, s2 = Σ e^{2(z−m)} and
//! e = Σ e^{z−m}(z−m); when the max grows by Δ they are rescaled (s·e^{−Δ}, s2·e^{−2Δ}, e^{−Δ}(e − Δ s)).
//! Then lse = m + ln s, Σπ² = s2/s², H = ln s − e/s.

pub mod trajectory;
pub use trajectory::TrajectoryStats;

/// Statistics of one scored position.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct TokenStats {
    pub logprob: f32,
    pub lse: f32,
    pub sum_p2: f32,
    pub entropy: f32,
    pub rank: u32,
    /// NaN unless the top-K Brier was requested.
    pub topk_brier: f32,
}

/// What the statistics pass computes beyond the always-on fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsOptions {
    /// Compute the authors' top-K renormalised Brier with this K.
    pub topk_brier: Option<usize>,
}

/// Running state of the one-pass reduction (f64 on the CPU).
#[derive(Debug, Clone, Copy)]
struct Online {
    m: f64,
    s: f64,
    s2: f64,
    e: f64,
}

impl Online {
    fn new() -> Self {
        Online { m: f64::NEG_INFINITY, s: 0.0, s2: 0.0, e: 0.0 }
    }
    #[inline]
    fn push(&mut self, z: f64) {
        if z > self.m {
            if self.m == f64::NEG_INFINITY {
                *self = Online { m: z, s: 1.0, s2: 1.0, e: 0.0 };
                return;
            }
            let d = z - self.m;
            let r = (-d).exp();
            self.e = r * (self.e - d * self.s);
            self.s *= r;
            self.s2 *= r * r;
            self.m = z;
        }
        let x = z - self.m;
        let p = x.exp();
        self.s += p;
        self.s2 += p * p;
        self.e += p * x;
    }
}

/// Statistics of one row of logits for gold token `gold`: the reference implementation, scalar and in f64.
/// [`vocab_stats_row`] (what the CPU backend runs) and every CUDA kernel are checked against it.
pub fn vocab_stats_row_reference(logits: &[f32], gold: u32, opts: &StatsOptions) -> TokenStats {
    let zg = logits[gold as usize];
    let mut acc = Online::new();
    let mut greater = 0u32;
    for &z in logits {
        acc.push(z as f64);
        greater += (z > zg) as u32;
    }
    finish(acc.m, acc.s, acc.s2, acc.e, zg, greater, logits, gold, opts)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    m: f64,
    s: f64,
    s2: f64,
    e: f64,
    zg: f32,
    greater: u32,
    logits: &[f32],
    gold: u32,
    opts: &StatsOptions,
) -> TokenStats {
    let ln_s = s.ln();
    let lse = m + ln_s;
    TokenStats {
        logprob: (zg as f64 - lse) as f32,
        lse: lse as f32,
        sum_p2: (s2 / (s * s)) as f32,
        entropy: (ln_s - e / s) as f32,
        rank: 1 + greater,
        topk_brier: match opts.topk_brier {
            Some(k) => topk_brier(logits, gold, k) as f32,
            None => f32::NAN,
        },
    }
}

/// Statistics of one row of logits for gold token `gold`, in one pass over the row: blocks of
/// [`BLOCK`] logits update a running max; within a block, e^{z−m} is evaluated in f32 lanes (a polynomial
/// exp the compiler vectorises) and each block's lane sums are folded into f64 accumulators, rescaled
/// when the max grows. Agrees with [`vocab_stats_row_reference`] to ~1e-6 relative; ranks are exact.
pub fn vocab_stats_row(logits: &[f32], gold: u32, opts: &StatsOptions) -> TokenStats {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            return unsafe { vocab_stats_row_avx2(logits, gold, opts) };
        }
    }
    vocab_stats_row_body::<false>(logits, gold, opts)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn vocab_stats_row_avx2(logits: &[f32], gold: u32, opts: &StatsOptions) -> TokenStats {
    vocab_stats_row_body::<true>(logits, gold, opts)
}

/// Logits per block of the fast pass: small enough for f32 lane sums to stay accurate (64 terms a lane).
const BLOCK: usize = 512;
const LANES: usize = 8;

/// e^x for x ≤ 0 in f32: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 Taylor polynomial (relative
/// error < 2e-8 on that interval), 2^n from the exponent bits. Inputs below −87 are clamped (the result,
/// ~1e-38, is negligible next to the block's e^0 = 1).
#[inline(always)]
pub(crate) fn exp_neg_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// The block's running lane maxima and counts of logits above `zg`, over whole chunks of [`LANES`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane l of every chunk goes to lane l of the sums
fn scan_lanes(chunks: &[f32], zg: f32) -> ([f32; LANES], [u32; LANES]) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut gt = [0u32; LANES];
    for c in chunks.chunks_exact(LANES) {
        for l in 0..LANES {
            mx[l] = mx[l].max(c[l]);
            gt[l] += (c[l] > zg) as u32;
        }
    }
    (mx, gt)
}

/// Lane sums of p = e^{z−m}, p² and p·(z−m) over whole chunks of [`LANES`], with the terms at the max (z = m)
/// counted apart.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane l of every chunk goes to lane l of the sums
fn sum_lanes(chunks: &[f32], mf: f32) -> LaneSums {
    let mut acc = LaneSums::default();
    for c in chunks.chunks_exact(LANES) {
        for l in 0..LANES {
            let x = c[l] - mf;
            let top = x == 0.0;
            let p = if top { 0.0 } else { exp_neg_f32(x) };
            acc.at_max[l] += top as u32;
            acc.s[l] += p;
            acc.s2[l] += p * p;
            acc.e[l] += p * x;
        }
    }
    acc
}

#[derive(Default)]
struct LaneSums {
    s: [f32; LANES],
    s2: [f32; LANES],
    e: [f32; LANES],
    at_max: [u32; LANES],
}

/// [`scan_lanes`] and [`sum_lanes`] written out in AVX2 intrinsics, one lane per `l`, with the same operations in
/// the same order (no fused multiply-adds: the scalar code has none), so the bits are those of the scalar code.
/// The compiler does not vectorise the scalar loops (`f32::max`, `floor` and the saturating `as i32` keep it
/// scalar: 23 cycles a logit on a Zen 4 core).
#[cfg(target_arch = "x86_64")]
mod lanes_avx2 {
    use super::{LaneSums, LANES};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scan(chunks: &[f32], zg: f32) -> ([f32; LANES], [u32; LANES]) {
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut gt = _mm256_setzero_si256();
        let (zg, one) = (_mm256_set1_ps(zg), _mm256_set1_epi32(1));
        for c in chunks.chunks_exact(LANES) {
            let c = _mm256_loadu_ps(c.as_ptr());
            mx = _mm256_max_ps(c, mx);
            let above = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(c, zg));
            gt = _mm256_add_epi32(gt, _mm256_and_si256(above, one));
        }
        let (mut m, mut g) = ([0f32; LANES], [0u32; LANES]);
        _mm256_storeu_ps(m.as_mut_ptr(), mx);
        _mm256_storeu_si256(g.as_mut_ptr() as *mut __m256i, gt);
        (m, g)
    }

    /// `super::exp_neg_f32` on eight lanes (the same operations, so the same bits).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_neg(x: __m256) -> __m256 {
        let c = _mm256_set1_ps;
        let x = _mm256_max_ps(x, c(-87.0));
        let n = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, c(std::f32::consts::LOG2_E)), c(0.5)));
        let r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, c(0.693_145_75))), _mm256_mul_ps(n, c(1.428_606_8e-6)));
        let mut p = c(1.0 / 5040.0);
        for k in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_add_ps(c(k), _mm256_mul_ps(r, p));
        }
        let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(_mm256_castsi256_ps(two_n), p)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sums(chunks: &[f32], mf: f32) -> LaneSums {
        let (mut s, mut s2, mut e) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut at_max = _mm256_setzero_si256();
        let (mfv, one) = (_mm256_set1_ps(mf), _mm256_set1_epi32(1));
        for c in chunks.chunks_exact(LANES) {
            let x = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mfv);
            let top = _mm256_cmp_ps::<_CMP_EQ_OQ>(x, _mm256_setzero_ps());
            let p = _mm256_andnot_ps(top, exp_neg(x));
            at_max = _mm256_add_epi32(at_max, _mm256_and_si256(_mm256_castps_si256(top), one));
            s = _mm256_add_ps(s, p);
            s2 = _mm256_add_ps(s2, _mm256_mul_ps(p, p));
            e = _mm256_add_ps(e, _mm256_mul_ps(p, x));
        }
        let mut out = LaneSums::default();
        _mm256_storeu_ps(out.s.as_mut_ptr(), s);
        _mm256_storeu_ps(out.s2.as_mut_ptr(), s2);
        _mm256_storeu_ps(out.e.as_mut_ptr(), e);
        _mm256_storeu_si256(out.at_max.as_mut_ptr() as *mut __m256i, at_max);
        out
    }
}

/// [`exp_neg_f32`] on eight lanes, bit for bit.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_neg_f32x8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    lanes_avx2::exp_neg(x)
}

#[inline(always)]
fn vocab_stats_row_body<const AVX2: bool>(logits: &[f32], gold: u32, opts: &StatsOptions) -> TokenStats {
    let zg = logits[gold as usize];
    let (mut m, mut s, mut s2, mut e) = (f64::NEG_INFINITY, 0f64, 0f64, 0f64);
    let mut greater = 0u32;
    for block in logits.chunks(BLOCK) {
        let (chunks, rest) = block.split_at(block.len() / LANES * LANES);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 is set only by vocab_stats_row_avx2, which runs where the CPU has AVX2 and FMA.
        let (mx, gt) = if AVX2 { unsafe { lanes_avx2::scan(chunks, zg) } } else { scan_lanes(chunks, zg) };
        #[cfg(not(target_arch = "x86_64"))]
        let (mx, gt) = scan_lanes(chunks, zg);
        let mut bm = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for &z in rest {
            bm = bm.max(z);
            greater += (z > zg) as u32;
        }
        greater += gt.iter().sum::<u32>();
        if (bm as f64) > m {
            if m > f64::NEG_INFINITY {
                let d = bm as f64 - m;
                let r = (-d).exp();
                e = r * (e - d * s);
                s *= r;
                s2 *= r * r;
            }
            m = bm as f64;
        }
        // Terms at the running max (x = 0, p = 1 exactly) are counted apart: added to the f32 lanes they would
        // swallow the low digits of the small tail terms, which is all the information when one token
        // dominates (entropy ~1e-4 needs s − 1 to ~1e-8).
        let mf = m as f32;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        let mut acc = if AVX2 { unsafe { lanes_avx2::sums(chunks, mf) } } else { sum_lanes(chunks, mf) };
        #[cfg(not(target_arch = "x86_64"))]
        let mut acc = sum_lanes(chunks, mf);
        for &z in rest {
            let x = z - mf;
            if x == 0.0 {
                acc.at_max[0] += 1;
                continue;
            }
            let p = exp_neg_f32(x);
            acc.s[0] += p;
            acc.s2[0] += p * p;
            acc.e[0] += p * x;
        }
        let ones = acc.at_max.iter().sum::<u32>() as f64;
        s += ones + acc.s.iter().map(|&v| v as f64).sum::<f64>();
        s2 += ones + acc.s2.iter().map(|&v| v as f64).sum::<f64>();
        e += acc.e.iter().map(|&v| v as f64).sum::<f64>();
    }
    finish(m, s, s2, e, zg, greater, logits, gold, opts)
}

/// The LARK authors' top-K Brier: softmax over the K largest logits only, renormalised; p(gold) = 0 when the
/// gold token is outside them. Ties at the K-th value are broken by lower index (as `torch.topk` does on CPU
/// in practice; exact ties of float logits are vanishingly rare in real models).
pub fn topk_brier(logits: &[f32], gold: u32, k: usize) -> f64 {
    let k = k.min(logits.len()).max(1);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize].partial_cmp(&logits[*a as usize]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    let m = idx.iter().map(|&i| logits[i as usize] as f64).fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = idx.iter().map(|&i| (logits[i as usize] as f64 - m).exp()).sum();
    let mut sum_p2 = 0.0;
    let mut p_gold = 0.0;
    for &i in &idx {
        let p = (logits[i as usize] as f64 - m).exp() / s;
        sum_p2 += p * p;
        if i == gold {
            p_gold = p;
        }
    }
    sum_p2 - 2.0 * p_gold + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive two-pass float64 statistics, the definition itself.
    fn naive(logits: &[f32], gold: usize) -> (f64, f64, f64, u32) {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = logits.iter().map(|&z| (z as f64 - m).exp()).sum();
        let lse = m + s.ln();
        let p: Vec<f64> = logits.iter().map(|&z| (z as f64 - lse).exp()).collect();
        let sum_p2 = p.iter().map(|x| x * x).sum();
        let ent = -p.iter().filter(|&&x| x > 0.0).map(|x| x * x.ln()).sum::<f64>();
        let rank = 1 + logits.iter().filter(|&&z| z > logits[gold]).count() as u32;
        (lse, sum_p2, ent, rank)
    }

    /// The AVX2 lanes are the scalar lanes written out: the same bits on every field, at sizes with and without a
    /// remainder, peaked and flat rows, a -inf and a row whose max grows block by block.
    #[test]
    fn simd_lanes_give_the_scalar_bits() {
        let mut rng = crate::model::random::SplitMix(21);
        for (v, spread) in [(49152usize, 8.0f32), (1000, 30.0), (517, 1.0), (7, 3.0), (4099, 60.0)] {
            let mut row: Vec<f32> = (0..v).map(|i| spread * rng.next_f32() + (i as f32) * 1e-3).collect();
            row[v / 2] = f32::NEG_INFINITY.max(row[v / 2]);
            if v > 10 {
                row[3] = f32::NEG_INFINITY;
            }
            for gold in [0u32, (v / 3) as u32, (v - 1) as u32] {
                let opts = StatsOptions::default();
                let (a, b) = (vocab_stats_row(&row, gold, &opts), vocab_stats_row_body::<false>(&row, gold, &opts));
                let bits =
                    |t: TokenStats| (t.logprob.to_bits(), t.lse.to_bits(), t.sum_p2.to_bits(), t.entropy.to_bits());
                assert_eq!(bits(a), bits(b), "v {v} gold {gold}: {a:?} vs {b:?}");
                assert_eq!(a.rank, b.rank);
            }
        }
    }

    #[test]
    fn one_pass_matches_naive_at_awkward_sizes() {
        let mut rng = crate::model::random::SplitMix(7);
        for &v in &[1usize, 2, 7, 33, 1000, 4099, 49152 + 3] {
            for scale in [0.1f32, 3.0, 30.0] {
                let logits: Vec<f32> = (0..v).map(|_| scale * rng.next_f32()).collect();
                let gold = (rng.next_u64() as usize) % v;
                let got = vocab_stats_row(&logits, gold as u32, &StatsOptions::default());
                let reference = vocab_stats_row_reference(&logits, gold as u32, &StatsOptions::default());
                assert_eq!(got.rank, reference.rank);
                assert!((got.sum_p2 - reference.sum_p2).abs() <= 2e-6 * reference.sum_p2, "{v} {scale}");
                let (lse, sp2, ent, rank) = naive(&logits, gold);
                assert!((got.lse as f64 - lse).abs() < 1e-5 * lse.abs().max(1.0));
                assert!((got.logprob as f64 - (logits[gold] as f64 - lse)).abs() < 1e-5);
                assert!((got.sum_p2 as f64 - sp2).abs() <= 1e-6 * sp2.max(1e-30) + 1e-9, "{v} {scale}");
                assert!((got.entropy as f64 - ent).abs() < 1e-5 * ent.max(1.0));
                assert_eq!(got.rank, rank);
                assert!(got.topk_brier.is_nan());
            }
        }
    }

    #[test]
    fn dominant_token_keeps_entropy_precision() {
        // One logit far above the rest: entropy ~1e-4 lives in the tails' low digits.
        let mut rng = crate::model::random::SplitMix(9);
        let mut logits: Vec<f32> = (0..49152).map(|_| rng.next_f32()).collect();
        logits[777] = 21.0;
        let got = vocab_stats_row(&logits, 777, &StatsOptions::default());
        let want = vocab_stats_row_reference(&logits, 777, &StatsOptions::default());
        assert!(want.entropy < 1e-3 && want.entropy > 0.0, "{}", want.entropy);
        assert!(((got.entropy - want.entropy) / want.entropy).abs() < 1e-5, "{} vs {}", got.entropy, want.entropy);
        assert!((got.logprob - want.logprob).abs() < 1e-7);
    }

    #[test]
    fn rank_ties_do_not_count() {
        let logits = [1.0f32, 3.0, 3.0, 0.5];
        assert_eq!(vocab_stats_row(&logits, 1, &StatsOptions::default()).rank, 1);
        assert_eq!(vocab_stats_row(&logits, 2, &StatsOptions::default()).rank, 1);
        assert_eq!(vocab_stats_row(&logits, 0, &StatsOptions::default()).rank, 3);
    }

    #[test]
    fn topk_brier_by_hand() {
        // Top-2 of [0, ln 3, -5]: p̃ = [1/4, 3/4]; gold 1 → 1/16 + 9/16 − 1.5 + 1 = 0.125.
        let logits = [0.0f32, 3f32.ln(), -5.0];
        assert!((topk_brier(&logits, 1, 2) - 0.125).abs() < 1e-7);
        // gold outside the top-2: p̃(y) = 0 → 10/16 + 1.
        assert!((topk_brier(&logits, 2, 2) - 1.625).abs() < 1e-7);
        // K ≥ V is the exact Brier.
        let ex = vocab_stats_row(&logits, 1, &StatsOptions { topk_brier: Some(50) });
        let exact = ex.sum_p2 as f64 - 2.0 * (ex.logprob as f64).exp() + 1.0;
        assert!((ex.topk_brier as f64 - exact).abs() < 1e-6);
    }
}
