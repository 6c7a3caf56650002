//! Proves the thread-per-core model: with two workers the kernel spreads new connections over
//! both (SO_REUSEPORT), and each worker thread is pinned to exactly the one CPU it reports.

mod support;

use support::client::raw_exchange;
use support::gateway::{TestGateway, simple_config};
use support::harness::{T, thread_cpus_allowed};
use support::upstream::HttpUpstream;

#[test]
fn two_workers_both_accept_connections() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}"));
    assert_eq!(gw.gateway.worker_count(), 2);
    let n = 32;
    for i in 0..n {
        let got = raw_exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        );
        assert_eq!(got.status(), Some(200), "connection {i}: {:?}", got.text());
    }
    let per_worker = gw.connections_per_worker();
    assert_eq!(per_worker.iter().sum::<u64>(), n, "{per_worker:?}");
    // Each connection lands on either worker with probability 1/2: all 32 on one happens
    // with probability 2^-31.
    assert!(
        per_worker.iter().all(|&c| c > 0),
        "both workers accept: {per_worker:?}"
    );
    let requests = gw.requests_per_worker();
    assert_eq!(requests, per_worker, "one request per connection");
}

#[test]
fn each_worker_thread_is_pinned_to_the_single_cpu_it_reports() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}"));
    let cpus = coregate::gateway::available_cpus();
    assert!(!cpus.is_empty(), "the test process may run on some CPU");
    let workers = gw.gateway.registry().workers();
    let mut pinned = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let (tid, cpu) = (w.tid.get(), w.cpu.get());
        assert_ne!(tid, 0, "worker {i} reported its thread id");
        assert_eq!(
            thread_cpus_allowed(tid),
            cpu.to_string(),
            "worker {i} (tid {tid}) runs only on CPU {cpu}"
        );
        assert!(
            cpus.iter().any(|c| c.id as u64 == cpu),
            "worker {i}: CPU {cpu} is one this process may use ({cpus:?})"
        );
        pinned.push(cpu);
    }
    if cpus.len() >= 2 {
        assert_ne!(pinned[0], pinned[1], "two workers on two different CPUs");
    }
}
