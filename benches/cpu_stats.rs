//! Criterion benches for the CPU hot paths that are not GEMMs: the one-pass vocabulary statistics (fast
//! and reference), and χ²-B selection over a pool of 5,000 problems × 33 candidates.

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

criterion_group!(benches, bench_vocab_stats, bench_selection, bench_gemm);
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
}
