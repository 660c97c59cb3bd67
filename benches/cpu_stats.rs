//! Criterion benches for the CPU hot paths: the one-pass vocabulary statistics (fast
//! and reference), χ²-B selection over a pool of 5,000 problems × 33 candidates; and the CPU GEMM and attention.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lark::model::random::SplitMix;
use lark::score::Direction;
use lark::select::{select, Weighting};
use lark::stats::{vocab_stats_row, vocab_stats_row_reference, StatsOptions};

fn logits(v: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    (0..v).map(|_| 8.0 * rng.next_f32()).collect()
}

fn bench_vocab_stats(c: &mut Criterion) {
    let mut g = c.benchmark_group("vocab_stats_row");
    for v in [49152usize, 151936] {
        let row = logits(v, 1);
        g.throughput(Throughput::Elements(v as u64));
        g.bench_with_input(BenchmarkId::new("fast", v), &row, |b, row| {
            b.iter(|| vocab_stats_row(row, 17, &StatsOptions::default()))
        });
        g.bench_with_input(BenchmarkId::new("reference_f64", v), &row, |b, row| {
            b.iter(|| vocab_stats_row_reference(row, 17, &StatsOptions::default()))
        });
        g.bench_with_input(BenchmarkId::new("fast_with_top50_brier", v), &row, |b, row| {
            b.iter(|| vocab_stats_row(row, 17, &StatsOptions { topk_brier: Some(50) }))
        });
    }
    g.finish();
}

fn bench_selection(c: &mut Criterion) {
    let mut rng = SplitMix(2);
    let problems: Vec<Vec<(i64, f64)>> =
        (0..5000).map(|_| (0..33).map(|k| (k as i64, rng.next_f32() as f64 * 0.02)).collect()).collect();
    c.bench_function("chi2_select_5000x33_B3", |b| {
        b.iter(|| {
            problems
                .iter()
                .enumerate()
                .map(|(p, cands)| select(p as i64, cands, "g_hat", Direction::Max, 3, Weighting::Chi2).unwrap())
                .collect::<Vec<_>>()
        })
    });
}

criterion_group!(benches, bench_vocab_stats, bench_selection, bench_gemm, bench_attention, bench_fma_peak);
criterion_main!(benches);

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_bt");
    for (m, k, n) in [(512usize, 576usize, 3072usize), (64, 576, 49152), (512, 1536, 576)] {
        let x = logits(m * k, 3);
        let w = logits(n * k, 4);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("{m}x{k}x{n}"), |b| {
            b.iter(|| lark::backend::cpu::ops::matmul_bt(&x, m, k, &w, n, &mut out))
        });
    }
    g.finish();
    // The same products with the weight packed once, as the CPU backend runs its f32 linear layers.
    let mut g =
        c.benchmark_group(format!("f32_linear_{}", lark::backend::cpu::linear::kernel_name().replace(' ', "_")));
    for (m, k, n) in [(512usize, 576usize, 3072usize), (64, 576, 49152), (512, 1536, 576)] {
        let x = logits(m * k, 3);
        let w = lark::backend::cpu::linear::F32Linear::new(logits(n * k, 4), n, k);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("{m}x{k}x{n}"), |b| b.iter(|| w.matmul_bt(&x, m, &mut out)));
    }
    g.finish();
    // The same products in bf16 (`--precision bf16`): AMX where the processor has it, else AVX512-BF16, else the
    // portable kernel.
    let mut g = c.benchmark_group(format!("bf16_matmul_bt_{}", lark::backend::cpu::bf16::kernel_name()));
    for (m, k, n) in [(512usize, 576usize, 3072usize), (64, 576, 49152), (512, 1536, 576)] {
        let x = logits(m * k, 3);
        let w = lark::backend::cpu::bf16::Bf16Linear::pack(&logits(n * k, 4), n, k);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("{m}x{k}x{n}"), |b| b.iter(|| w.matmul_bt(&x, m, &mut out)));
    }
    g.finish();
}

/// One layer's causal attention at SmolLM2-135M's shape (9 query heads, 3 KV heads, d = 64), one sequence.
/// Throughput counts the causal FLOPs (QKᵀ and P·V over the lower triangle).
fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_causal");
    g.sample_size(10);
    let (h, kvh, d) = (9usize, 3usize, 64usize);
    for t in [512usize, 2048, 8192] {
        // Entries in [−1, 1]: scores of a trained model's size. With the ±8 of `logits` most e^{s−max} underflow
        // (to subnormals with the C library's expf); so run, T = 512 took 33 ms a layer on 2026-12-03's machine,
        // against 10 ms a layer for the real SmolLM2 in `lark bench --profile` on the same machine.
        let unit = |n, seed| logits(n, seed).into_iter().map(|x| x / 8.0).collect::<Vec<f32>>();
        let (q, k, v) = (unit(t * h * d, 5), unit(t * kvh * d, 6), unit(t * kvh * d, 7));
        let mut out = vec![0f32; t * h * d];
        g.throughput(Throughput::Elements((2 * 2 * d * h * t * (t + 1) / 2) as u64));
        g.bench_function(format!("smollm2_T{t}"), |b| {
            b.iter(|| lark::backend::cpu::ops::attention_causal(&q, &k, &v, &[0, t], h, kvh, d, &mut out))
        });
    }
    g.finish();
}

/// This machine's FMA peak, the yardstick for the GEMM and attention figures: independent chains of fused
/// multiply-adds in the widest vector registers the processor has (16 accumulators hide the FMA latency),
/// on one thread and on every rayon thread at once. Throughput counts 2 FLOPs per lane per FMA.
fn bench_fma_peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("fma_peak");
    const ITERS: usize = 1 << 20;
    let lanes = fma::lanes();
    let flops_per_call = (2 * fma::ACCUMULATORS * lanes * ITERS) as u64;
    g.throughput(Throughput::Elements(flops_per_call));
    g.bench_function(format!("1_thread_{}_lanes", lanes), |b| b.iter(|| fma::chains(ITERS)));
    let threads = rayon::current_num_threads();
    g.throughput(Throughput::Elements(flops_per_call * threads as u64));
    g.bench_function(format!("{threads}_threads_{lanes}_lanes"), |b| {
        b.iter(|| rayon::broadcast(|_| fma::chains(ITERS)).into_iter().sum::<f32>())
    });
    g.finish();
}

mod fma {
    pub const ACCUMULATORS: usize = 16;

    pub fn lanes() -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return 16;
            }
            if std::arch::is_x86_feature_detected!("fma") {
                return 8;
            }
        }
        1
    }

    /// `iters` rounds of [`ACCUMULATORS`] independent FMAs; returns a sum so nothing is optimised away.
    pub fn chains(iters: usize) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: each path runs only on a CPU with the features it is compiled for.
            if std::arch::is_x86_feature_detected!("avx512f") {
                return unsafe { chains_avx512(iters) };
            }
            if std::arch::is_x86_feature_detected!("fma") {
                return unsafe { chains_avx2(iters) };
            }
        }
        let mut acc = [1f32; ACCUMULATORS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = a.mul_add(0.999_999, 1e-7);
            }
        }
        std::hint::black_box(acc).iter().sum()
    }

    // The AVX-512 intrinsics are stable from Rust 1.89, the crate's MSRV (without AVX-512 the measured peak would
    // be half the real one).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn chains_avx512(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        let acc = std::hint::black_box(acc);
        acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains_avx2(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        let mut out = [0f32; 8];
        for x in std::hint::black_box(acc) {
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(_mm256_loadu_ps(out.as_ptr()), x));
        }
        out.iter().sum()
    }
}
