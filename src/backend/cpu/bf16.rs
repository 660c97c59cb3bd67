//! bf16 linear layers for the CPU's opt-in `--precision bf16`: every weight matrix stored once in bf16, each
//! product's input rounded to bf16, f32 accumulation; everything outside the GEMMs (norms, RoPE, attention, the
//! vocabulary pass) stays f32.
//!
//! The weights live in the VNNI panel layout of AMX: 16 output columns per panel, and for each pair of input
//! features the 16 columns' two values side by side, so one 64-byte row of a panel is one row of an AMX `B`
//! tile. Three kernels read it:
//! - **AMX** (`TDPBF16PS`, Sapphire Rapids and later) where the processor has AMX-BF16 and Linux grants the tile
//!   state: a 32 × 32 output block per call, four accumulator tiles. It is written as inline assembly, which is
//!   stable Rust at our MSRV (the AMX intrinsics are not).
//! - **AVX512-BF16** (`VDPBF16PS` on zmm: Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later) where AMX
//!   is not available: 8 rows × 2 panels per register block, one 32-bit pair of each row broadcast per step.
//! - **portable**, the same layout and the same order of additions as the instruction's definition (per input
//!   pair: `acc += a₀·b₀`, then `acc += a₁·b₁`; each product of two bf16 values is exact in f32, so this is
//!   two f32 roundings per pair). It runs where neither does. The two instructions round inside in orders their
//!   vendors leave unspecified (measured for AMX on a Sapphire Rapids-class Xeon: about 3 in 4 outputs have the
//!   bits of the sequential order, the rest differ by an ulp or so), so the kernels agree closely, not bit for
//!   bit; each is deterministic.
//!
//! Inputs that are bf16 subnormals are flushed to zero when rounded, as the AMX instruction treats them (DAZ);
//! the result of a row depends on that row and the weights only, never on the other rows or the thread count.

use super::linear::SendPtr;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Output columns per panel (one AMX `B` tile is 16 pairs of input features × 16 columns).
const PANEL: usize = 16;
/// Input features per AMX step (one `A` tile row is 32 bf16 = 64 bytes).
const K_STEP: usize = 32;
/// Rows and columns of the AMX kernel's output block (2 × 2 tiles of 16 × 16).
const BLOCK: usize = 32;
/// Rows and columns of one parallel work item: its `A` rows (at k = 1536, 192 KiB) and a column pair's panels
/// stay in L2 while the item's blocks are formed.
const ITEM_ROWS: usize = 64;
const ITEM_COLS: usize = 128;

/// `x` rounded to bf16 (to nearest, ties to even), subnormals flushed to a signed zero.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (rounded >> 16) as u16
}

#[inline(always)]
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A linear layer's weight `[n, k]` (HF's `[out, in]`) in bf16 panels.
pub struct Bf16Linear {
    n: usize,
    k: usize,
    /// `k` rounded up to [`K_STEP`] and `n` up to [`BLOCK`], the padding zeros.
    k_pad: usize,
    n_pad: usize,
    /// Panel `p` holds columns `16p..16p+16`: `k_pad / 2` rows of 32 values, row `j` being
    /// `[w[c][2j], w[c][2j+1]]` for the panel's 16 columns `c` in order.
    panels: Vec<u16>,
}

impl Bf16Linear {
    /// Round `w[n, k]` to bf16 and lay it out in panels.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "Bf16Linear::pack: weight has {} values, expected {n} × {k}", w.len());
        let k_pad = k.div_ceil(K_STEP) * K_STEP;
        let n_pad = n.div_ceil(BLOCK) * BLOCK;
        let mut panels = vec![0u16; n_pad * k_pad];
        panels.par_chunks_mut(PANEL * k_pad).enumerate().for_each(|(p, panel)| {
            for cc in 0..PANEL {
                let c = p * PANEL + cc;
                if c >= n {
                    break;
                }
                for (kk, &v) in w[c * k..(c + 1) * k].iter().enumerate() {
                    panel[(kk / 2) * 2 * PANEL + cc * 2 + kk % 2] = bf16_bits(v);
                }
            }
        });
        Bf16Linear { n, k, k_pad, n_pad, panels }
    }

    /// `out[m, n] = bf16(x[m, k]) · bf16(w)ᵀ`, f32 accumulation, multi-threaded.
    pub fn matmul_bt(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_bt_using(x, m, out, kernel())
    }

    /// As [`Self::matmul_bt`] with a chosen kernel (tests compare them; AMX is used only where available).
    pub fn matmul_bt_using(&self, x: &[f32], m: usize, out: &mut [f32], kernel: Kernel) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && out.len() >= m * n, "Bf16Linear::matmul_bt: buffer sizes");
        if m == 0 || n == 0 {
            return;
        }
        let kernel =
            if kernel == Kernel::Amx && !amx_available() || kernel == Kernel::Avx512Bf16 && !avx512bf16_available() {
                Kernel::Portable
            } else {
                kernel
            };
        // The input rounded to bf16 once, rows padded to whole blocks and features to whole AMX steps (zeros).
        let m_pad = m.div_ceil(BLOCK) * BLOCK;
        let mut a = vec![0u16; m_pad * self.k_pad];
        a.par_chunks_mut(self.k_pad).zip(x[..m * k].par_chunks(k)).for_each(|(dst, src)| {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = bf16_bits(v);
            }
        });
        let mut items = Vec::new();
        for r0 in (0..m_pad).step_by(ITEM_ROWS) {
            for c0 in (0..self.n_pad).step_by(ITEM_COLS) {
                items.push((r0, c0));
            }
        }
        let out_ptr = SendPtr(out.as_mut_ptr());
        items.into_par_iter().for_each(|(r0, c0)| {
            let r1 = (r0 + ITEM_ROWS).min(m_pad);
            let c1 = (c0 + ITEM_COLS).min(self.n_pad);
            let mut block = [0f32; BLOCK * BLOCK];
            let amx = kernel == Kernel::Amx;
            if amx {
                // SAFETY: AMX is available (checked above) and the tile state is this thread's.
                unsafe { amx::configure() };
            }
            for cb in (c0..c1).step_by(BLOCK) {
                for rb in (r0..r1).step_by(BLOCK) {
                    match kernel {
                        // SAFETY: rb + 32 ≤ m_pad rows of `a` and panels cb/16, cb/16 + 1 < n_pad/16 exist.
                        Kernel::Amx => unsafe { amx::block(&a, self.k_pad, rb, &self.panels, cb / PANEL, &mut block) },
                        // SAFETY: as for AMX; AVX512-BF16 was checked above.
                        Kernel::Avx512Bf16 => unsafe {
                            avx512bf16::block(&a, self.k_pad, rb, &self.panels, cb / PANEL, &mut block)
                        },
                        Kernel::Portable => portable_block(&a, self.k_pad, rb, &self.panels, cb / PANEL, &mut block),
                    }
                    // The block's rows and columns inside the output.
                    for i in 0..BLOCK.min(m.saturating_sub(rb)) {
                        let cols = BLOCK.min(n.saturating_sub(cb));
                        // SAFETY: row rb + i < m and columns cb..cb + cols ≤ n: inside out[m × n]; items write
                        // disjoint blocks.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                block[i * BLOCK..].as_ptr(),
                                out_ptr.get().add((rb + i) * n + cb),
                                cols,
                            )
                        };
                    }
                }
            }
            if amx {
                // SAFETY: as for configure.
                unsafe { amx::release() };
            }
        });
    }
}

/// Which kernel computes the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Amx,
    /// `VDPBF16PS` on zmm registers (AVX512-BF16: Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later).
    Avx512Bf16,
    Portable,
}

/// AMX when the processor and OS allow it (unless `LARK_CPU_AMX=0`), else AVX512-BF16 where the processor has
/// it, else the portable kernel.
pub fn kernel() -> Kernel {
    if std::env::var("LARK_CPU_AMX").as_deref() != Ok("0") && amx_available() {
        Kernel::Amx
    } else if avx512bf16_available() {
        Kernel::Avx512Bf16
    } else {
        Kernel::Portable
    }
}

/// Whether the processor has AVX512-BF16 (with AVX-512F).
pub fn avx512bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this process can run AMX-BF16: the CPU has it, the OS enables the tile state in XCR0, and Linux
/// grants this process the tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM)`). Asked once.
pub fn amx_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(amx::request)
}

/// The kernel's name, for `describe`.
pub fn kernel_name() -> &'static str {
    match kernel() {
        Kernel::Amx => "AMX-BF16",
        Kernel::Avx512Bf16 => "AVX512-BF16",
        Kernel::Portable => "portable bf16",
    }
}

/// One 32 × 32 output block, rows `rb..rb+32` of `a` against panels `p0` and `p0 + 1`, in the order of
/// `TDPBF16PS`'s definition. `block` is row-major with row stride [`BLOCK`].
fn portable_block(a: &[u16], k_pad: usize, rb: usize, panels: &[u16], p0: usize, block: &mut [f32; BLOCK * BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the feature the function is compiled for (checked just above).
            return unsafe { portable_block_avx2(a, k_pad, rb, panels, p0, block) };
        }
    }
    portable_block_generic(a, k_pad, rb, panels, p0, block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn portable_block_avx2(
    a: &[u16],
    k_pad: usize,
    rb: usize,
    panels: &[u16],
    p0: usize,
    block: &mut [f32; BLOCK * BLOCK],
) {
    portable_block_generic(a, k_pad, rb, panels, p0, block)
}

#[inline(always)]
fn portable_block_generic(
    a: &[u16],
    k_pad: usize,
    rb: usize,
    panels: &[u16],
    p0: usize,
    block: &mut [f32; BLOCK * BLOCK],
) {
    let pairs = k_pad / 2;
    for half in 0..2 {
        let panel = &panels[(p0 + half) * PANEL * k_pad..(p0 + half + 1) * PANEL * k_pad];
        for i in 0..BLOCK {
            let row = &a[(rb + i) * k_pad..(rb + i + 1) * k_pad];
            let mut acc = [0f32; PANEL];
            for j in 0..pairs {
                let (a0, a1) = (bf16_to_f32(row[2 * j]), bf16_to_f32(row[2 * j + 1]));
                let b = &panel[j * 2 * PANEL..(j + 1) * 2 * PANEL];
                for c in 0..PANEL {
                    acc[c] += a0 * bf16_to_f32(b[2 * c]);
                }
                for c in 0..PANEL {
                    acc[c] += a1 * bf16_to_f32(b[2 * c + 1]);
                }
            }
            block[i * BLOCK + half * PANEL..i * BLOCK + (half + 1) * PANEL].copy_from_slice(&acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use super::{BLOCK, PANEL};
    use std::arch::x86_64::*;

    /// Rows per register block: 8 rows × 2 panels = 16 accumulators; per input pair, 2 panel rows loaded and 8
    /// pairs of `a` broadcast.
    const ROWS: usize = 8;

    /// One 32 × 32 output block as [`super::amx::block`] computes it, with `VDPBF16PS`.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 are available; `a` has rows up to `rb + 32` (row stride `k_pad`) and `panels`
    /// panels up to `p0 + 1`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn block(a: &[u16], k_pad: usize, rb: usize, panels: &[u16], p0: usize, out: &mut [f32; BLOCK * BLOCK]) {
        debug_assert!(a.len() >= (rb + BLOCK) * k_pad && panels.len() >= (p0 + 2) * PANEL * k_pad);
        let pairs = k_pad / 2;
        let b0 = panels.as_ptr().add(p0 * PANEL * k_pad);
        let b1 = b0.add(PANEL * k_pad);
        for r in (0..BLOCK).step_by(ROWS) {
            // Each row of `a` read as pairs of bf16 (one u32 per input pair).
            let rows: [*const u32; ROWS] = std::array::from_fn(|i| a.as_ptr().add((rb + r + i) * k_pad) as *const u32);
            let mut lo = [_mm512_setzero_ps(); ROWS];
            let mut hi = [_mm512_setzero_ps(); ROWS];
            for j in 0..pairs {
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(j * 2 * PANEL) as *const _));
                let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(j * 2 * PANEL) as *const _));
                for i in 0..ROWS {
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*rows[i].add(j) as i32));
                    lo[i] = _mm512_dpbf16_ps(lo[i], x, w0);
                    hi[i] = _mm512_dpbf16_ps(hi[i], x, w1);
                }
            }
            for i in 0..ROWS {
                let o = out.as_mut_ptr().add((r + i) * BLOCK);
                _mm512_storeu_ps(o, lo[i]);
                _mm512_storeu_ps(o.add(PANEL), hi[i]);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::{BLOCK, K_STEP, PANEL};
    use std::arch::asm;

    /// The 64-byte tile configuration of palette 1.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        _reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    /// tmm0–3: the 2 × 2 accumulators (16 × 16 f32); tmm4–5: two `A` tiles (16 rows × 32 bf16); tmm6–7: two
    /// `B` tiles (16 pairs × 16 columns × 2 bf16). Every tile is 16 rows of 64 bytes.
    static CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        _reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    pub fn request() -> bool {
        // SAFETY: cpuid and xgetbv are read-only queries; xgetbv runs only when CPUID says OSXSAVE is set.
        let cpu = unsafe {
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let leaf1 = std::arch::x86_64::__cpuid(1);
            let amx_bf16 = leaf7.edx & (1 << 22) != 0;
            let amx_tile = leaf7.edx & (1 << 24) != 0;
            let osxsave = leaf1.ecx & (1 << 27) != 0;
            amx_bf16 && amx_tile && osxsave && {
                let (lo, _hi): (u32, u32);
                asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack));
                // XTILECFG (17) and XTILEDATA (18) enabled by the OS.
                lo & (0b11 << 17) == 0b11 << 17
            }
        };
        if !cpu {
            return false;
        }
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only asks the kernel to allow this process the tile state.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
                 in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// Load the tile configuration on this thread.
    ///
    /// # Safety
    /// AMX must be available ([`super::amx_available`]).
    pub unsafe fn configure() {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
    }

    /// Give the tile state back (the OS then need not save it when this thread is switched out).
    ///
    /// # Safety
    /// As for [`configure`].
    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// One 32 × 32 output block: rows `rb..rb+32` of `a` (row stride `k_pad` bf16) against panels `p0`, `p0+1`.
    ///
    /// # Safety
    /// [`configure`] ran on this thread; `a` has rows up to `rb + 32` and `panels` panels up to `p0 + 1`.
    pub unsafe fn block(a: &[u16], k_pad: usize, rb: usize, panels: &[u16], p0: usize, out: &mut [f32; BLOCK * BLOCK]) {
        debug_assert!(a.len() >= (rb + BLOCK) * k_pad && panels.len() >= (p0 + 2) * PANEL * k_pad);
        let a_stride = k_pad * 2;
        let a0 = a.as_ptr().add(rb * k_pad);
        let a1 = a0.add(16 * k_pad);
        let b0 = panels.as_ptr().add(p0 * PANEL * k_pad);
        let b1 = b0.add(PANEL * k_pad);
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        for step in 0..k_pad / K_STEP {
            // A tiles: 32 features of 16 rows; B tiles: 16 pairs of the panel (16 × 32 bf16, contiguous).
            let (ao, bo) = (step * K_STEP, step * K_STEP * PANEL);
            asm!(
                "tileloadd tmm4, [{a0} + {as}]",
                "tileloadd tmm5, [{a1} + {as}]",
                "tileloadd tmm6, [{b0} + {bs}]",
                "tileloadd tmm7, [{b1} + {bs}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0.add(ao),
                a1 = in(reg) a1.add(ao),
                b0 = in(reg) b0.add(bo),
                b1 = in(reg) b1.add(bo),
                as = in(reg) a_stride,
                bs = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        let c = out.as_mut_ptr();
        let cs = BLOCK * 4;
        asm!(
            "tilestored [{c00} + {cs}], tmm0",
            "tilestored [{c01} + {cs}], tmm1",
            "tilestored [{c10} + {cs}], tmm2",
            "tilestored [{c11} + {cs}], tmm3",
            c00 = in(reg) c,
            c01 = in(reg) c.add(16),
            c10 = in(reg) c.add(16 * BLOCK),
            c11 = in(reg) c.add(16 * BLOCK + 16),
            cs = in(reg) cs,
            options(nostack),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512bf16 {
    use super::BLOCK;
    pub unsafe fn block(_: &[u16], _: usize, _: usize, _: &[u16], _: usize, _: &mut [f32; BLOCK * BLOCK]) {
        unreachable!("AVX512-BF16 is never reported available on this platform")
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod amx {
    use super::BLOCK;
    pub fn request() -> bool {
        false
    }
    pub unsafe fn configure() {}
    pub unsafe fn release() {}
    pub unsafe fn block(_: &[u16], _: usize, _: usize, _: &[u16], _: usize, _: &mut [f32; BLOCK * BLOCK]) {
        unreachable!("AMX is never reported available on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SplitMix(u64);
    impl SplitMix {
        fn next_f32(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    fn rand_vec(rng: &mut SplitMix, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32()).collect()
    }

    #[test]
    fn rounding_is_to_nearest_even_with_subnormals_flushed() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0); 1 + 3·2^-8 rounds up to 1 + 2^-6.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert_eq!(bf16_bits(f32::from_bits(1)), 0);
        assert_eq!(bf16_bits(-f32::from_bits(0x007f_ffff)), 0x8000);
        assert_eq!(bf16_bits(f32::MAX), 0x7f80, "overflow rounds to infinity");
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    }

    /// f64 reference of the bf16 product: both operands rounded exactly as the kernels round them.
    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let r = |v: f32| bf16_to_f32(bf16_bits(v)) as f64;
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| r(x[i * k + kk]) * r(w[j * k + kk])).sum();
            }
        }
        out
    }

    #[test]
    fn portable_kernel_matches_naive_at_awkward_sizes() {
        let mut rng = SplitMix(7);
        for &(m, k, n) in &[(1, 1, 1), (3, 31, 17), (33, 33, 33), (70, 100, 50), (5, 576, 96)] {
            let x = rand_vec(&mut rng, m * k);
            let w = rand_vec(&mut rng, n * k);
            let lin = Bf16Linear::pack(&w, n, k);
            let mut out = vec![f32::NAN; m * n];
            lin.matmul_bt_using(&x, m, &mut out, Kernel::Portable);
            let want = naive(&x, m, k, &w, n);
            for (i, (&g, &e)) in out.iter().zip(&want).enumerate() {
                // f32 accumulation of k exact products: within k ulps of the magnitude sum.
                let bound = 1e-6 * k as f64 + 1e-6;
                assert!((g as f64 - e).abs() <= bound, "({m},{k},{n}) element {i}: {g} vs {e}");
            }
        }
    }

    /// Each hardware kernel this processor runs against the naive product and the portable kernel (they round
    /// inside the instruction in their own order, so closely, not bit for bit), and against itself.
    fn hardware_kernel_matches_naive_and_the_portable_kernel_closely(kernel: Kernel, available: bool) {
        if !available {
            // Where it cannot run it is never chosen ([`kernel`]); the portable test covers what runs instead.
            eprintln!("{kernel:?} not available on this processor: that kernel is not exercised here");
            return;
        }
        let mut rng = SplitMix(11);
        for &(m, k, n) in &[(1, 1, 1), (3, 31, 17), (33, 65, 33), (64, 576, 960), (100, 1536, 40)] {
            let x = rand_vec(&mut rng, m * k);
            let w = rand_vec(&mut rng, n * k);
            let lin = Bf16Linear::pack(&w, n, k);
            let (mut hw, mut portable) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            lin.matmul_bt_using(&x, m, &mut hw, kernel);
            lin.matmul_bt_using(&x, m, &mut portable, Kernel::Portable);
            let want = naive(&x, m, k, &w, n);
            let bound = 1e-6 * k as f64 + 1e-6;
            for (i, ((&a, &p), &e)) in hw.iter().zip(&portable).zip(&want).enumerate() {
                assert!((a as f64 - e).abs() <= bound, "({m},{k},{n}) element {i}: {kernel:?} {a} vs {e}");
                assert!((a - p).abs() as f64 <= bound, "({m},{k},{n}) element {i}: {kernel:?} {a} vs portable {p}");
            }
            // The same call twice gives the same bits.
            let mut again = vec![f32::NAN; m * n];
            lin.matmul_bt_using(&x, m, &mut again, kernel);
            assert!(hw.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn amx_kernel_matches_naive_and_the_portable_kernel_closely() {
        hardware_kernel_matches_naive_and_the_portable_kernel_closely(Kernel::Amx, amx_available());
    }

    #[test]
    fn avx512bf16_kernel_matches_naive_and_the_portable_kernel_closely() {
        hardware_kernel_matches_naive_and_the_portable_kernel_closely(Kernel::Avx512Bf16, avx512bf16_available());
    }

    #[test]
    fn a_row_does_not_depend_on_the_other_rows() {
        let mut rng = SplitMix(3);
        let (k, n) = (200, 70);
        let w = rand_vec(&mut rng, n * k);
        let lin = Bf16Linear::pack(&w, n, k);
        let x = rand_vec(&mut rng, 97 * k);
        let mut all = vec![0f32; 97 * n];
        lin.matmul_bt(&x, 97, &mut all);
        let mut one = vec![0f32; n];
        lin.matmul_bt(&x[50 * k..51 * k], 1, &mut one);
        assert_eq!(
            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            all[50 * n..51 * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
