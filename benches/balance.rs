//! What does one smooth weighted round-robin pick cost over 2, 16 and 256 endpoints, with small
//! weights (precomputed schedule) and with weights whose sum is too large to precompute?

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use coregate::balance::Wrr;

fn bench_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance/wrr_pick");
    for n in [2usize, 16, 256] {
        let small: Vec<u32> = (0..n).map(|i| 1 + (i as u32 % 5)).collect();
        let mut wrr = Wrr::new(&small, 0);
        g.bench_function(BenchmarkId::new("schedule", n), |b| {
            b.iter(|| black_box(wrr.pick()))
        });
        let large: Vec<u32> = (0..n).map(|i| 100_000 + 7 * i as u32).collect();
        let mut wrr = Wrr::new(&large, 0);
        g.bench_function(BenchmarkId::new("live", n), |b| {
            b.iter(|| black_box(wrr.pick()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
