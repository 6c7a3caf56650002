//! Core-local counters and latency histograms, written only by their own core and merged
//! across cores on read.
//!
//! Each counter is an atomic with a single writer: the owning core does `store(load + 1)`, which
//! compiles to a plain load and store (no locked instruction, no cache-line ping-pong), while
//! the admin thread and tests read it with a relaxed load. Latencies go into a core-local
//! [`Latency`] histogram, folded into the shared one once a second off the request path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// A lock that a panicked holder does not poison: counters stay readable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads one counter of a worker.
type Field = fn(&WorkerStats) -> &Counter;

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// For gauges (active connections): the owner decrements what it incremented.
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

/// What one worker (core) did.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub worker: usize,
    /// The CPU this worker is pinned to, and its thread id, once it runs.
    pub cpu: Counter,
    pub tid: Counter,
    pub connections_accepted: Counter,
    pub connections_active: Counter,
    /// Connections closed at accept because their listener had `max_connections` open.
    pub connections_overflow: Counter,
    pub requests: Counter,
    pub responses_1xx: Counter,
    pub responses_2xx: Counter,
    pub responses_3xx: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    /// Requests that ended without a response (client gone, aborted mid-response).
    pub requests_aborted: Counter,
    /// Request heads read into a connection's own buffer because the core's buffer ring was
    /// empty (a burst of arrivals larger than the ring).
    pub ring_exhausted: Counter,
    pub config_generation: Counter,
    /// TLS handshakes on this core's listeners.
    pub ssl: TlsStats,
}

/// TLS handshakes on one core, by result; named as Envoy names them (`ssl.*`).
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes completed.
    pub handshake: Counter,
    /// ... of which resumed from a session ticket.
    pub session_reused: Counter,
    /// Handshakes that failed for a reason not counted below (no common version, cipher or
    /// protocol; a malformed message).
    pub connection_error: Counter,
    /// No certificate for the SNI name and no default (`unrecognized_name`).
    pub no_certificate: Counter,
    /// A required client certificate was not sent.
    pub fail_verify_no_cert: Counter,
    /// The client certificate did not verify against the CA.
    pub fail_verify_error: Counter,
    /// Plaintext HTTP sent to a TLS listener (answered 400).
    pub plaintext_request: Counter,
    /// ClientHello over the size bound.
    pub client_hello_too_large: Counter,
    /// Handshakes not done within the header timeout.
    pub handshake_timeout: Counter,
    /// The client went away during the handshake.
    pub handshake_aborted: Counter,
}

/// Reads one TLS counter.
type TlsField = fn(&TlsStats) -> &Counter;

impl TlsStats {
    pub const FIELDS: [(&'static str, TlsField); 10] = [
        ("handshake", |t| &t.handshake),
        ("session_reused", |t| &t.session_reused),
        ("connection_error", |t| &t.connection_error),
        ("no_certificate", |t| &t.no_certificate),
        ("fail_verify_no_cert", |t| &t.fail_verify_no_cert),
        ("fail_verify_error", |t| &t.fail_verify_error),
        ("plaintext_request", |t| &t.plaintext_request),
        ("client_hello_too_large", |t| &t.client_hello_too_large),
        ("handshake_timeout", |t| &t.handshake_timeout),
        ("handshake_aborted", |t| &t.handshake_aborted),
    ];
}

impl WorkerStats {
    pub fn record_status(&self, status: u16) {
        match status {
            100..=199 => self.responses_1xx.inc(),
            200..=299 => self.responses_2xx.inc(),
            300..=399 => self.responses_3xx.inc(),
            400..=499 => self.responses_4xx.inc(),
            _ => self.responses_5xx.inc(),
        }
    }
}

/// One listener over every core.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open on the listener, over every core: the one counter cores share a
    /// read-modify-write on, touched at accept and close only (never per request), so that
    /// `max_connections` holds for the listener as a whole however the kernel spreads clients.
    pub active: AtomicUsize,
}

impl ListenerStats {
    /// Counts a new connection in, unless `max` are open already (false).
    pub fn admit(&self, max: Option<usize>) -> bool {
        let before = self.active.fetch_add(1, Relaxed);
        if max.is_some_and(|max| before >= max) {
            self.active.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Counts a connection out.
    pub fn release(&self) {
        self.active.fetch_sub(1, Relaxed);
    }
}

/// What one worker did with one endpoint of one cluster.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Upstream connections opened.
    pub connections_new: Counter,
    /// Requests sent on a pooled (reused) connection.
    pub connections_reused: Counter,
    pub connect_failures: Counter,
    /// Requests sent to this endpoint.
    pub requests: Counter,
    /// Requests retried on a new connection after a reused one failed.
    pub retries: Counter,
    /// Pooled connections retired because the upstream sent bytes while they were idle (a late
    /// body, an unsolicited response): reusing one would hand those bytes to the next request.
    pub idle_stray_bytes: Counter,
    /// Pooled connections the upstream closed while they were idle.
    pub idle_closed: Counter,
    /// TLS handshakes with the endpoint that failed (a bad certificate, no common protocol).
    pub tls_handshake_failures: Counter,
}

/// Request durations in microseconds, 1 µs to 1 hour at 3 significant digits (~40 KiB).
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // The bounds are constants that hdrhistogram accepts; the fallback is unreachable.
        Latency(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        )
    }
}

impl Latency {
    /// Records one request duration; longer than the range counts as the maximum.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.0
            .saturating_record(d.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
    }

    /// Adds every sample of `other` (same bounds, so it cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The duration at `quantile` (0.0 ..= 1.0), in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.0.value_at_quantile(quantile)
    }

    pub fn max_us(&self) -> u64 {
        self.0.max()
    }
}

/// Identifies an endpoint's counters: worker, cluster name, address.
pub type EndpointKey = (usize, String, SocketAddr);

/// Every core's counters, reachable from the admin thread and from tests.
#[derive(Debug)]
pub struct Registry {
    workers: Vec<Arc<WorkerStats>>,
    /// Written when a worker builds a config generation, never on the request path.
    endpoints: Mutex<BTreeMap<EndpointKey, Arc<EndpointStats>>>,
    /// By listener name; kept across reloads so that open connections stay counted.
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    /// Each worker's latencies up to its last fold (about a second ago at most).
    latencies: Vec<Mutex<Latency>>,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
}

/// Sums of one endpoint's counters over every worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointTotals {
    pub connections_new: u64,
    pub connections_reused: u64,
    pub connect_failures: u64,
    pub requests: u64,
    pub retries: u64,
    pub idle_stray_bytes: u64,
    pub idle_closed: u64,
    pub tls_handshake_failures: u64,
}

impl EndpointTotals {
    fn add(&mut self, s: &EndpointStats) {
        self.connections_new += s.connections_new.get();
        self.connections_reused += s.connections_reused.get();
        self.connect_failures += s.connect_failures.get();
        self.requests += s.requests.get();
        self.retries += s.retries.get();
        self.idle_stray_bytes += s.idle_stray_bytes.get();
        self.idle_closed += s.idle_closed.get();
        self.tls_handshake_failures += s.tls_handshake_failures.get();
    }
}

impl Registry {
    pub fn new(workers: usize) -> Registry {
        Registry {
            workers: (0..workers)
                .map(|worker| {
                    Arc::new(WorkerStats {
                        worker,
                        ..WorkerStats::default()
                    })
                })
                .collect(),
            endpoints: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            latencies: (0..workers).map(|_| Mutex::default()).collect(),
            reloads_ok: Counter::default(),
            reloads_failed: Counter::default(),
        }
    }

    pub fn workers(&self) -> &[Arc<WorkerStats>] {
        &self.workers
    }

    /// The counters of an endpoint on a worker, created on first use.
    pub fn endpoint(&self, worker: usize, cluster: &str, addr: SocketAddr) -> Arc<EndpointStats> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry((worker, cluster.to_owned(), addr))
            .or_default()
            .clone()
    }

    /// A listener's counters, created on first use.
    pub fn listener(&self, name: &str) -> Arc<ListenerStats> {
        lock(&self.listeners)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// One endpoint's counters summed over workers.
    pub fn endpoint_totals(&self, cluster: &str, addr: SocketAddr) -> EndpointTotals {
        let map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut t = EndpointTotals::default();
        for ((_, c, a), s) in map.iter() {
            if c == cluster && *a == addr {
                t.add(s);
            }
        }
        t
    }

    /// Adds a worker's recent latencies to its shared histogram.
    pub fn fold_latency(&self, worker: usize, recent: &Latency) {
        if let Some(shared) = self.latencies.get(worker) {
            lock(shared).merge(recent);
        }
    }

    /// Every worker's latencies merged.
    pub fn latency(&self) -> Latency {
        let mut all = Latency::default();
        for l in &self.latencies {
            all.merge(&lock(l));
        }
        all
    }

    /// Requests served, summed over workers.
    pub fn total_requests(&self) -> u64 {
        self.workers.iter().map(|w| w.requests.get()).sum()
    }

    /// A plain-text dump, one `name value` line per counter, per worker and summed.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let sum = |f: Field| -> u64 { self.workers.iter().map(|w| f(w).get()).sum() };
        let fields: [(&str, Field); 13] = [
            ("connections_accepted", |w| &w.connections_accepted),
            ("connections_active", |w| &w.connections_active),
            ("connections_overflow", |w| &w.connections_overflow),
            ("requests", |w| &w.requests),
            ("responses_1xx", |w| &w.responses_1xx),
            ("responses_2xx", |w| &w.responses_2xx),
            ("responses_3xx", |w| &w.responses_3xx),
            ("responses_4xx", |w| &w.responses_4xx),
            ("responses_5xx", |w| &w.responses_5xx),
            ("requests_aborted", |w| &w.requests_aborted),
            ("ring_exhausted", |w| &w.ring_exhausted),
            ("config_generation", |w| &w.config_generation),
            ("cpu", |w| &w.cpu),
        ];
        for (name, f) in fields {
            if name != "cpu" && name != "config_generation" {
                let _ = writeln!(out, "downstream.{name} {}", sum(f));
            }
        }
        for (name, f) in TlsStats::FIELDS {
            let total: u64 = self.workers.iter().map(|w| f(&w.ssl).get()).sum();
            let _ = writeln!(out, "ssl.{name} {total}");
        }
        let latency = self.latency();
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            let _ = writeln!(
                out,
                "downstream.latency_{name}_us {}",
                latency.quantile_us(q)
            );
        }
        let _ = writeln!(out, "downstream.latency_max_us {}", latency.max_us());
        let _ = writeln!(out, "control.reloads_ok {}", self.reloads_ok.get());
        let _ = writeln!(out, "control.reloads_failed {}", self.reloads_failed.get());
        for (name, l) in lock(&self.listeners).iter() {
            let active = l.active.load(Relaxed);
            let _ = writeln!(out, "listener.{name}.connections_active {active}");
        }
        for w in &self.workers {
            for (name, f) in fields {
                let _ = writeln!(out, "worker.{}.{name} {}", w.worker, f(w).get());
            }
        }
        let map = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut totals: BTreeMap<(&str, SocketAddr), EndpointTotals> = BTreeMap::new();
        for ((_, cluster, addr), s) in map.iter() {
            totals.entry((cluster, *addr)).or_default().add(s);
        }
        for ((cluster, addr), t) in totals {
            let p = format!("cluster.{cluster}.endpoint.{addr}");
            let _ = writeln!(out, "{p}.requests {}", t.requests);
            let _ = writeln!(out, "{p}.connections_new {}", t.connections_new);
            let _ = writeln!(out, "{p}.connections_reused {}", t.connections_reused);
            let _ = writeln!(out, "{p}.connect_failures {}", t.connect_failures);
            let _ = writeln!(out, "{p}.retries {}", t.retries);
            let _ = writeln!(out, "{p}.idle_stray_bytes {}", t.idle_stray_bytes);
            let _ = writeln!(out, "{p}.idle_closed {}", t.idle_closed);
            let failures = t.tls_handshake_failures;
            let _ = writeln!(out, "{p}.tls_handshake_failures {failures}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_across_workers() {
        let r = Registry::new(2);
        r.workers()[0].requests.inc();
        r.workers()[1].requests.add(2);
        assert_eq!(r.total_requests(), 3);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        r.endpoint(0, "c", a).connections_new.inc();
        r.endpoint(1, "c", a).connections_new.inc();
        r.endpoint(1, "c", a).connections_reused.inc();
        let t = r.endpoint_totals("c", a);
        assert_eq!((t.connections_new, t.connections_reused), (2, 1));
        let mut recent = Latency::default();
        recent.record(Duration::from_micros(250));
        recent.record(Duration::from_millis(3));
        r.fold_latency(1, &recent);
        assert_eq!(r.latency().count(), 2);
        assert!(r.latency().quantile_us(1.0) >= 2_990);
        let text = r.render();
        assert!(text.contains("downstream.requests 3"));
        assert!(text.contains("cluster.c.endpoint.127.0.0.1:1.connections_new 2"));
    }
}
