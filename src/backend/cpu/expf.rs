//! `expf` on eight lanes with the bits of the C library's scalar `expf` (glibc's FMA variant, which glibc's ifunc
//! picks on every processor with AVX2 and FMA, the processors this runs on).
//!
//! Why bit-exact rather than merely accurate: the CPU reference calls `f32::exp` (the C library's `expf`) in the
//! short-row softmax of attention and in SwiGLU, and `tests/golden_qwen3.rs` holds Σπ² to 1e-5 relative against
//! transformers where the float32 floor is 9.9e-6: a polynomial exp of 2e-8 relative error moved one token to
//! 1.02e-5. Computing the very same function eight lanes at a time keeps every result and removes a scalar call
//! per element (the two uses were 60% of attention at T = 512 and most of the elementwise glue).
//!
//! The algorithm (ARM's optimized-routines `expf`, glibc ≥ 2.27): with N = 32, z = x·N/ln2 rounded to an integer k
//! by adding 1.5·2^52, r = x·N/ln2 − k, 2^(k/N) from a 32-entry table plus k in the exponent bits, and
//! e^x = 2^(k/N)·(C₀r³ + C₁r² + C₂r + 1), all in double, rounded to float once. Which products are fused is what
//! the compiler made of the C source in glibc's FMA build, read off its machine code (`objdump -d libm.so.6`,
//! glibc 2.36): `kd = fma(InvLn2N, x, SHIFT)`, `r = fma(InvLn2N, x, −kd')`, `z = fma(r, C₀, C₁)`, `r² = r·r`,
//! `y = fma(r, C₂, 1)`, `y = fma(z, r², y)`, `y·s`. Lanes with |x| ≥ 88 (or NaN) take the scalar `expf`, as its
//! special cases (overflow, underflow, errno) are not vectorised.
//!
//! Checked over all 2^32 inputs against the C library by `expf_matches_the_c_library_on_every_input` (ignored by
//! default: ~1 min in a release build; run it after any change here), and by sampled tests in every run.

/// `tab[i] = bits(2^(i/32)) − (i << 47)`: adding `k << 47` restores the entry and puts ⌊k/32⌋ in the exponent.
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// N/ln2 = 0x1.71547652b82fep+5.
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// 1.5·2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFT: u64 = 0x4338000000000000;
/// The polynomial, scaled for N = 32: 0x1.c6af84b912394p-20, 0x1.ebfce50fac4f3p-13, 0x1.62e42ff0c52d6p-6.
const C0: u64 = 0x3ebc6af84b912394;
const C1: u64 = 0x3f2ebfce50fac4f3;
const C2: u64 = 0x3f962e42ff0c52d6;

/// Whether this processor runs the eight-lane `expf` (AVX2 and FMA; elsewhere callers use `f32::exp`).
#[inline]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The scalar transcription of the lanes' main path (|x| < 88), for tests on any processor.
#[cfg(test)]
fn expf_main_path(x: f32) -> f32 {
    let f = f64::from_bits;
    let xd = x as f64;
    let kds = f(INV_LN2_N).mul_add(xd, f(SHIFT));
    let ki = kds.to_bits();
    let kd = kds - f(SHIFT);
    let r = f(INV_LN2_N).mul_add(xd, -kd);
    let s = f64::from_bits(TAB[(ki & 31) as usize].wrapping_add(ki << 47));
    let z = r.mul_add(f(C0), f(C1));
    let r2 = r * r;
    let y = r.mul_add(f(C2), 1.0);
    (z.mul_add(r2, y) * s) as f32
}

#[cfg(target_arch = "x86_64")]
pub use lanes::*;

#[cfg(target_arch = "x86_64")]
mod lanes {
    use super::*;
    use std::arch::x86_64::*;

    /// Four lanes in double.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn core4(xd: __m256d) -> __m128 {
        let c = |b: u64| _mm256_set1_pd(f64::from_bits(b));
        let (inv, shift) = (c(INV_LN2_N), c(SHIFT));
        let kds = _mm256_fmadd_pd(inv, xd, shift);
        let ki = _mm256_castpd_si256(kds);
        let kd = _mm256_sub_pd(kds, shift);
        let r = _mm256_fmsub_pd(inv, xd, kd);
        let t = _mm256_i64gather_epi64::<8>(TAB.as_ptr() as *const i64, _mm256_and_si256(ki, _mm256_set1_epi64x(31)));
        let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(r, c(C0), c(C1));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(r, c(C2), _mm256_set1_pd(1.0));
        let y = _mm256_fmadd_pd(z, r2, y);
        _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
    }

    /// `f32::exp` of eight lanes, bit for bit.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA ([`super::available`]).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn expf8(x: __m256) -> __m256 {
        let lo = core4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        let hi = core4(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
        let y = _mm256_set_m128(hi, lo);
        // |x| ≥ 88 or NaN (the exponent field's top bits, as glibc tests them): the scalar function's cases.
        let abstop = _mm256_and_si256(_mm256_srli_epi32::<20>(_mm256_castps_si256(x)), _mm256_set1_epi32(0x7ff));
        let special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(abstop, _mm256_set1_epi32(0x42a))));
        if special == 0 {
            return y;
        }
        let (mut xs, mut ys) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(xs.as_mut_ptr(), x);
        _mm256_storeu_ps(ys.as_mut_ptr(), y);
        for l in 0..8 {
            if special & (1 << l) != 0 {
                ys[l] = xs[l].exp();
            }
        }
        _mm256_loadu_ps(ys.as_ptr())
    }

    /// `v[i] = f32::exp(v[i])` in place, bit for bit.
    ///
    /// # Safety
    /// As for [`expf8`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn expf_inplace(v: &mut [f32]) {
        let mut it = v.chunks_exact_mut(8);
        for c in &mut it {
            _mm256_storeu_ps(c.as_mut_ptr(), expf8(_mm256_loadu_ps(c.as_ptr())));
        }
        for x in it.into_remainder() {
            *x = x.exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special_inputs() -> Vec<f32> {
        let mut v = vec![0.0, -0.0, 1.0, -1.0, 88.0, -88.0, 88.72, 88.73, -103.0, -104.0, -87.9, 87.9, 1e-30, -1e-30];
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, f32::MAX, f32::MIN]);
        v.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.0917));
        v
    }

    /// The lanes against the C library (bits; NaN as NaN) on a sample of every 65,521st bit pattern and the special
    /// values, and the scalar transcription of the main path against the lanes.
    #[test]
    fn expf_lanes_match_the_c_library_on_a_sample() {
        if !available() {
            eprintln!("no AVX2+FMA here: the lanes do not run on this processor (callers use f32::exp)");
            return;
        }
        let mut xs = special_inputs();
        xs.extend((0..u32::MAX / 65_521).map(|i| f32::from_bits(i * 65_521)));
        let mut ys = xs.clone();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: available() checked AVX2 and FMA.
        unsafe {
            expf_inplace(&mut ys)
        };
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = x.exp();
            assert!(y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()), "exp({x:e}): {y:e} vs {want:e}");
            if x.abs() < 88.0 {
                assert_eq!(expf_main_path(x).to_bits(), y.to_bits(), "main path at {x:e}");
            }
        }
    }

    /// Every one of the 2^32 inputs against the C library. Run by hand after any change to this file:
    /// `cargo test --release --lib expf_matches_the_c_library_on_every_input -- --ignored`.
    #[test]
    #[ignore]
    fn expf_matches_the_c_library_on_every_input() {
        use rayon::prelude::*;
        assert!(available(), "needs AVX2 and FMA");
        let bad: u64 = (0u32..=255)
            .into_par_iter()
            .map(|hi| {
                let mut buf = vec![0f32; 1 << 24];
                for (i, x) in buf.iter_mut().enumerate() {
                    *x = f32::from_bits((hi << 24) | i as u32);
                }
                let mut ys = buf.clone();
                #[cfg(target_arch = "x86_64")]
                // SAFETY: asserted above.
                unsafe {
                    expf_inplace(&mut ys)
                };
                buf.iter()
                    .zip(&ys)
                    .filter(|(x, y)| {
                        let w = x.exp();
                        !(y.to_bits() == w.to_bits() || (y.is_nan() && w.is_nan()))
                    })
                    .count() as u64
            })
            .sum();
        assert_eq!(bad, 0, "{bad} inputs differ from the C library's expf");
    }
}
