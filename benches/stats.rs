//! What does recording one request cost on the data path (a latency into the core-local
//! histogram, a single-writer counter increment), and what does rendering /stats/prometheus
//! cost the admin thread with 1,000 clusters x 4 endpoints x 2 workers (target: < 50 ms)?

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use std::net::SocketAddr;

use coregate::stats::{Counter, Format, HistKey, Latency, LocalHistograms, Query, Registry};

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

/// A registry as 2 workers leave it after serving 1,000 clusters of 4 endpoints each, with a
/// listener and every cluster's latency histogram recorded.
fn large_registry() -> Registry {
    let r = Registry::new(2);
    for worker in 0..2 {
        let local = LocalHistograms::default();
        for c in 0..1_000 {
            let cluster = format!("cluster_{c}");
            for e in 0..4u16 {
                let addr = SocketAddr::from(([10, 0, (c / 250) as u8, (c % 250) as u8], 8000 + e));
                let stats = r.endpoint(worker, &cluster, addr);
                stats.upstream_rq_total.add(1_000 + u64::from(e));
                stats.record_status(200);
                stats.upstream_cx_total.add(3);
            }
            let h = local.get(HistKey::upstream_rq_time(&cluster));
            for i in 0..50u64 {
                h.record(Duration::from_micros(200 + i * 37));
            }
        }
        r.listener("main", worker).record_request(Some(200));
        local.fold_into(&r, worker);
    }
    r
}

fn bench_render(c: &mut Criterion) {
    let r = large_registry();
    let mut g = c.benchmark_group("stats/render_1000_clusters_x4_endpoints_x2_workers");
    g.sample_size(10);
    g.bench_function("prometheus", |b| {
        b.iter(|| black_box(r.render_as(Format::Prometheus, &Query::default())).len())
    });
    g.bench_function("text", |b| {
        b.iter(|| black_box(r.render_as(Format::Text, &Query::default())).len())
    });
    g.finish();
}

criterion_group!(benches, bench_record, bench_render);
criterion_main!(benches);
