//! What does one pick cost for each balancer, over 2, 16 and 256 endpoints: smooth weighted
//! round-robin (precomputed schedule, and live for weight sums too large to precompute), plain
//! round-robin, weighted random, least-request (power of two choices), and the two consistent
//! hashes (ring hash and Maglev, for varied keys, and when the first endpoint is refused)? And
//! what do hashing a key and building a ring or a Maglev table cost?

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use coregate::balance::{LeastRequest, Maglev, Random, RingHash, RoundRobin, Wrr, hash_key};

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

/// Weights 1..=5 repeating: unequal, so the weighted paths are the ones measured.
fn weights(n: usize) -> Vec<u32> {
    (0..n).map(|i| 1 + (i as u32 % 5)).collect()
}

fn endpoints(n: usize) -> Vec<(SocketAddr, u32)> {
    weights(n)
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let ip = Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            (SocketAddr::new(IpAddr::V4(ip), 8080), w)
        })
        .collect()
}

/// 1,024 distinct key hashes, cycled, so that the search paths and the table slots vary as they
/// would across requests instead of one key hitting the same cache lines every time.
fn keys() -> Vec<u64> {
    (0..1024)
        .map(|i| hash_key(format!("session-{i}").as_bytes()))
        .collect()
}

fn bench_simple(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance/simple_pick");
    for n in [2usize, 16, 256] {
        let mut rr = RoundRobin::new(n, 0).expect("endpoints");
        g.bench_function(BenchmarkId::new("round_robin", n), |b| {
            b.iter(|| black_box(rr.pick()))
        });
        let mut random = Random::new(&vec![1; n], 1).expect("endpoints");
        g.bench_function(BenchmarkId::new("random_equal", n), |b| {
            b.iter(|| black_box(random.pick()))
        });
        let mut random = Random::new(&weights(n), 1).expect("endpoints");
        g.bench_function(BenchmarkId::new("random_weighted", n), |b| {
            b.iter(|| black_box(random.pick()))
        });
    }
    g.finish();
}

fn bench_least(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance/least_request_pick");
    for n in [2usize, 16, 256] {
        let active: Vec<u32> = (0..n as u32).map(|i| i * 7 % 13).collect();
        let mut lr = LeastRequest::new(&vec![1; n], 1).expect("endpoints");
        g.bench_function(BenchmarkId::new("equal", n), |b| {
            b.iter(|| black_box(lr.pick(|i| active[i])))
        });
        let mut lr = LeastRequest::new(&weights(n), 1).expect("endpoints");
        g.bench_function(BenchmarkId::new("weighted", n), |b| {
            b.iter(|| black_box(lr.pick(|i| active[i])))
        });
    }
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("balance/hash_pick");
    for n in [16usize, 256] {
        let set = endpoints(n);
        let ring = RingHash::new(&set).expect("endpoints");
        let maglev = Maglev::new(&set).expect("endpoints");
        let mut k = 0usize;
        g.bench_function(BenchmarkId::new("ring_hash", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(ring.pick(keys[k], |_| true))
            })
        });
        g.bench_function(BenchmarkId::new("maglev", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(maglev.pick(keys[k], |_| true))
            })
        });
        // One endpoint refused: its keys (1/n of them, weighted) walk on to the next endpoint.
        g.bench_function(BenchmarkId::new("ring_hash_one_refused", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(ring.pick(keys[k], |e| e != 3))
            })
        });
        g.bench_function(BenchmarkId::new("maglev_one_refused", n), |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(maglev.pick(keys[k], |e| e != 3))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("balance/hash_key");
    let cookie = b"3f2a9c4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
    g.bench_function("cookie_36_bytes", |b| {
        b.iter(|| black_box(hash_key(black_box(cookie))))
    });
    let ip = [192u8, 0, 2, 17];
    g.bench_function("ipv4_4_bytes", |b| {
        b.iter(|| black_box(hash_key(black_box(&ip))))
    });
    g.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance/hash_build");
    g.sample_size(10);
    for n in [16usize, 256] {
        let set = endpoints(n);
        g.bench_function(BenchmarkId::new("ring_hash", n), |b| {
            b.iter(|| black_box(RingHash::new(black_box(&set))))
        });
        g.bench_function(BenchmarkId::new("maglev", n), |b| {
            b.iter(|| black_box(Maglev::new(black_box(&set))))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_pick,
    bench_simple,
    bench_least,
    bench_hash,
    bench_build
);
criterion_main!(benches);
