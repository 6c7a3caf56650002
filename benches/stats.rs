//! What does recording one request cost on the data path: a request latency into the
//! core-local histogram, and a single-writer counter increment?

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use coregate::stats::{Counter, Latency};

fn bench_record(c: &mut Criterion) {
    let mut latency = Latency::default();
    let mut d = Duration::from_micros(180);
    c.bench_function("stats/latency_record", |b| {
        b.iter(|| {
            // Vary the value so that the histogram's buckets are really indexed.
            d += Duration::from_nanos(7_919);
            if d > Duration::from_millis(50) {
                d = Duration::from_micros(180);
            }
            latency.record(black_box(d));
        })
    });
    let counter = Counter::default();
    c.bench_function("stats/counter_inc", |b| {
        b.iter(|| black_box(&counter).inc())
    });
}

criterion_group!(benches, bench_record);
criterion_main!(benches);
