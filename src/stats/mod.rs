//! Core-local counters and latency histograms, written only by their own core and merged
//! across cores on read, named as Envoy names them (`listener.*`, `http.*`, `cluster.*`,
//! `server.*`); rendering is in `render`.
//!
//! Each counter is an atomic with a single writer: the owning core does `store(load + 1)`, which
//! compiles to a plain load and store (no locked instruction, no cache-line ping-pong), while
//! the admin thread and tests read it with a relaxed load. Latencies go into core-local
//! histograms ([`LocalHistogram`]), folded into the registry once a second off the request path
//! and merged across cores by adding histograms (never by averaging percentiles).

mod dns;
mod render;

pub use dns::DnsStats;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

pub use render::{Format, Query};

/// A lock that a panicked holder does not poison: counters stay readable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A single-writer counter (or gauge).
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

/// A named counter of a stats struct, for rendering: name, reader, and whether it is a gauge.
pub type Field<T> = (&'static str, fn(&T) -> &Counter, bool);

/// Counts a response status into its class counter (1xx..5xx) of `classes`.
#[inline]
fn status_class(classes: &[Counter; 5], status: u16) {
    let i = usize::from((status / 100).clamp(1, 5)) - 1;
    classes[i].inc();
}

/// What one worker (core) did, over every listener and cluster: how evenly SO_REUSEPORT spreads
/// connections and requests over the cores.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub worker: usize,
    /// The CPU this worker is pinned to, and its thread id, once it runs.
    pub cpu: Counter,
    pub tid: Counter,
    pub connections_accepted: Counter,
    pub connections_active: Counter,
    pub requests: Counter,
    /// Request heads read into a connection's own buffer because the core's buffer ring was
    /// empty (a burst of arrivals larger than the ring).
    pub ring_exhausted: Counter,
    /// Keep-alive connections parked without a task.
    pub connections_parked: Counter,
    pub config_generation: Counter,
}

impl WorkerStats {
    pub const FIELDS: [Field<WorkerStats>; 7] = [
        ("downstream_cx_total", |w| &w.connections_accepted, false),
        ("downstream_cx_active", |w| &w.connections_active, true),
        ("downstream_rq_total", |w| &w.requests, false),
        ("ring_exhausted", |w| &w.ring_exhausted, false),
        ("downstream_cx_parked", |w| &w.connections_parked, true),
        ("config_generation", |w| &w.config_generation, true),
        ("cpu", |w| &w.cpu, true),
    ];
}

/// TLS handshakes of one listener on one core, by result; named as Envoy names them (`ssl.*`).
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

impl TlsStats {
    pub const FIELDS: [Field<TlsStats>; 10] = [
        ("handshake", |t| &t.handshake, false),
        ("session_reused", |t| &t.session_reused, false),
        ("connection_error", |t| &t.connection_error, false),
        ("no_certificate", |t| &t.no_certificate, false),
        ("fail_verify_no_cert", |t| &t.fail_verify_no_cert, false),
        ("fail_verify_error", |t| &t.fail_verify_error, false),
        ("plaintext_request", |t| &t.plaintext_request, false),
        (
            "client_hello_too_large",
            |t| &t.client_hello_too_large,
            false,
        ),
        ("handshake_timeout", |t| &t.handshake_timeout, false),
        ("handshake_aborted", |t| &t.handshake_aborted, false),
    ];
}

/// One listener on one core: its connections (`listener.<name>.*`), the requests its HTTP
/// connection manager served (`http.<name>.*`) and its TLS handshakes (`listener.<name>.ssl.*`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Counter,
    pub downstream_cx_destroy: Counter,
    /// Closed at accept: the listener had `max_connections` open over every core.
    pub downstream_cx_overflow: Counter,
    /// Accepts that failed for want of file descriptors (the connection waiting was closed
    /// with the core's reserve descriptor).
    pub downstream_cx_fd_exhausted: Counter,
    pub downstream_rq_total: Counter,
    /// downstream_rq_1xx .. downstream_rq_5xx.
    pub downstream_rq_class: [Counter; 5],
    /// Requests that ended without a complete response (the client went away, or the response
    /// was cut short).
    pub downstream_rq_incomplete: Counter,
    /// HTTP/2 connections (among downstream_cx_*), opened and open now.
    pub downstream_cx_http2_total: Counter,
    pub downstream_cx_http2_active: Counter,
    /// HTTP/2 streams the client reset, and that the gateway reset.
    pub downstream_rq_rx_reset: Counter,
    pub downstream_rq_tx_reset: Counter,
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM: the client reset streams, or made the
    /// gateway reset them, faster than the listener allows (rapid reset, MadeYouReset), or
    /// flooded it otherwise (h2's own limits).
    pub downstream_cx_http2_flood: Counter,
    /// Requests a route answered with a redirect, or a direct response (Envoy's names).
    pub rq_redirect: Counter,
    pub rq_direct_response: Counter,
    /// Requests whose route's path rewrite made an invalid path (answered 500).
    pub rq_rewrite_invalid: Counter,
    pub ssl: TlsStats,
}

impl ListenerStats {
    /// The `listener.<name>.*` counters.
    pub const CONNECTIONS: [Field<ListenerStats>; 5] = [
        ("downstream_cx_total", |l| &l.downstream_cx_total, false),
        ("downstream_cx_active", |l| &l.downstream_cx_active, true),
        ("downstream_cx_destroy", |l| &l.downstream_cx_destroy, false),
        (
            "downstream_cx_overflow",
            |l| &l.downstream_cx_overflow,
            false,
        ),
        (
            "downstream_cx_fd_exhausted",
            |l| &l.downstream_cx_fd_exhausted,
            false,
        ),
    ];

    /// The `http.<name>.*` counters.
    pub const REQUESTS: [Field<ListenerStats>; 15] = [
        ("downstream_rq_total", |l| &l.downstream_rq_total, false),
        ("downstream_rq_1xx", |l| &l.downstream_rq_class[0], false),
        ("downstream_rq_2xx", |l| &l.downstream_rq_class[1], false),
        ("downstream_rq_3xx", |l| &l.downstream_rq_class[2], false),
        ("downstream_rq_4xx", |l| &l.downstream_rq_class[3], false),
        ("downstream_rq_5xx", |l| &l.downstream_rq_class[4], false),
        (
            "downstream_rq_incomplete",
            |l| &l.downstream_rq_incomplete,
            false,
        ),
        (
            "downstream_cx_http2_total",
            |l| &l.downstream_cx_http2_total,
            false,
        ),
        (
            "downstream_cx_http2_active",
            |l| &l.downstream_cx_http2_active,
            true,
        ),
        (
            "downstream_rq_rx_reset",
            |l| &l.downstream_rq_rx_reset,
            false,
        ),
        (
            "downstream_rq_tx_reset",
            |l| &l.downstream_rq_tx_reset,
            false,
        ),
        (
            "downstream_cx_http2_flood",
            |l| &l.downstream_cx_http2_flood,
            false,
        ),
        ("rq_redirect", |l| &l.rq_redirect, false),
        ("rq_direct_response", |l| &l.rq_direct_response, false),
        ("rq_rewrite_invalid", |l| &l.rq_rewrite_invalid, false),
    ];

    /// Counts a finished request: its status class, or incomplete.
    #[inline]
    pub fn record_request(&self, status: Option<u16>) {
        self.downstream_rq_total.inc();
        match status {
            Some(status) => status_class(&self.downstream_rq_class, status),
            None => self.downstream_rq_incomplete.inc(),
        }
    }
}

/// Connections open on a listener over every core: the one counter cores share a
/// read-modify-write on, touched at accept and close only (never per request), so that
/// `max_connections` holds for the listener as a whole however the kernel spreads clients.
#[derive(Debug, Default)]
pub struct ListenerLoad {
    pub active: AtomicUsize,
}

impl ListenerLoad {
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

/// What one worker did with one cluster before any endpoint was involved (`cluster.<name>.*`,
/// beside the sums of its endpoints' counters): requests refused by a circuit breaker.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// A new connection was needed while `max_connections` were open.
    pub upstream_cx_overflow: Counter,
    /// `max_requests` were under way, or `max_pending_requests` waited for a connection.
    pub upstream_rq_pending_overflow: Counter,
    /// A retry was skipped: `max_retries` were under way.
    pub upstream_rq_retry_overflow: Counter,
    /// Exchanges cut by their route's `timeout`, and responses cut because the upstream
    /// paused longer than the body (or route idle) timeout. Response-head timeouts are the
    /// endpoints' `upstream_rq_timeout`, connect timeouts their `upstream_cx_connect_timeout`.
    pub upstream_rq_route_timeout: Counter,
    pub upstream_rq_idle_timeout: Counter,
    /// Endpoint discovery (strict_dns lookups, membership): worker 0's alone is written.
    pub dns: DnsStats,
}

impl ClusterStats {
    pub const FIELDS: [Field<ClusterStats>; 5] = [
        ("upstream_cx_overflow", |c| &c.upstream_cx_overflow, false),
        (
            "upstream_rq_pending_overflow",
            |c| &c.upstream_rq_pending_overflow,
            false,
        ),
        (
            "upstream_rq_retry_overflow",
            |c| &c.upstream_rq_retry_overflow,
            false,
        ),
        (
            "upstream_rq_route_timeout",
            |c| &c.upstream_rq_route_timeout,
            false,
        ),
        (
            "upstream_rq_idle_timeout",
            |c| &c.upstream_rq_idle_timeout,
            false,
        ),
    ];
}

/// What one worker did with one endpoint of one cluster; the cluster's counters
/// (`cluster.<name>.*`) are the sums over its endpoints.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Upstream connections opened, open now (in use or idle in the pool), and of those idle
    /// in the pool (as of the core's last once-a-second sweep).
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Counter,
    pub upstream_cx_idle: Counter,
    /// Connects refused, failed or timed out; and of those, timed out.
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    /// Requests sent on a pooled (reused) connection.
    pub upstream_cx_reused: Counter,
    /// Pooled connections retired because the upstream sent bytes while they were idle (a late
    /// body, an unsolicited response): reusing one would hand those bytes to the next request.
    pub upstream_cx_idle_stray: Counter,
    /// Pooled connections the upstream closed while they were idle.
    pub upstream_cx_idle_closed: Counter,
    /// TLS handshakes with the endpoint that failed (a bad certificate, no common protocol).
    pub upstream_cx_tls_fail: Counter,
    /// Requests sent to this endpoint, and their response classes (upstream_rq_1xx..5xx).
    pub upstream_rq_total: Counter,
    pub upstream_rq_class: [Counter; 5],
    /// Requests sent again on a new connection after a reused one turned out closed.
    pub upstream_rq_retry: Counter,
    /// No response head within the cluster's response timeout.
    pub upstream_rq_timeout: Counter,
    /// Active health checks of the endpoint (written by its cluster's prober, in worker 0's
    /// entry): probes, passed, failed, and whether it is healthy now (1) or out (0).
    pub health_check_attempt: Counter,
    pub health_check_success: Counter,
    pub health_check_failure: Counter,
    pub health_check_healthy: Counter,
    /// Times this core's outlier detection ejected the endpoint, and whether it is out now (as
    /// of the core's last once-a-second sweep).
    pub outlier_ejections_total: Counter,
    pub outlier_ejected: Counter,
}

impl EndpointStats {
    pub const FIELDS: [Field<EndpointStats>; 23] = [
        ("upstream_cx_total", |e| &e.upstream_cx_total, false),
        ("upstream_cx_active", |e| &e.upstream_cx_active, true),
        ("upstream_cx_idle", |e| &e.upstream_cx_idle, true),
        (
            "upstream_cx_connect_fail",
            |e| &e.upstream_cx_connect_fail,
            false,
        ),
        (
            "upstream_cx_connect_timeout",
            |e| &e.upstream_cx_connect_timeout,
            false,
        ),
        ("upstream_cx_reused", |e| &e.upstream_cx_reused, false),
        (
            "upstream_cx_idle_stray",
            |e| &e.upstream_cx_idle_stray,
            false,
        ),
        (
            "upstream_cx_idle_closed",
            |e| &e.upstream_cx_idle_closed,
            false,
        ),
        ("upstream_cx_tls_fail", |e| &e.upstream_cx_tls_fail, false),
        ("upstream_rq_total", |e| &e.upstream_rq_total, false),
        ("upstream_rq_1xx", |e| &e.upstream_rq_class[0], false),
        ("upstream_rq_2xx", |e| &e.upstream_rq_class[1], false),
        ("upstream_rq_3xx", |e| &e.upstream_rq_class[2], false),
        ("upstream_rq_4xx", |e| &e.upstream_rq_class[3], false),
        ("upstream_rq_5xx", |e| &e.upstream_rq_class[4], false),
        ("upstream_rq_retry", |e| &e.upstream_rq_retry, false),
        ("upstream_rq_timeout", |e| &e.upstream_rq_timeout, false),
        ("health_check_attempt", |e| &e.health_check_attempt, false),
        ("health_check_success", |e| &e.health_check_success, false),
        ("health_check_failure", |e| &e.health_check_failure, false),
        ("health_check_healthy", |e| &e.health_check_healthy, true),
        (
            "outlier_ejections_total",
            |e| &e.outlier_ejections_total,
            false,
        ),
        ("outlier_ejected", |e| &e.outlier_ejected, true),
    ];

    /// Counts the status of a response the upstream sent.
    #[inline]
    pub fn record_status(&self, status: u16) {
        status_class(&self.upstream_rq_class, status);
    }
}

/// Sums of one endpoint's counters over every worker (the same fields as one worker's).
pub type EndpointTotals = EndpointStats;

impl EndpointStats {
    fn add(&self, other: &EndpointStats) {
        for (_, field, _) in EndpointStats::FIELDS {
            field(self).add(field(other).get());
        }
    }
}

/// Durations in microseconds, 1 µs to 1 hour at 2 significant digits (a value is within 1%
/// of its true one) with 32-bit counts: ~13 KiB, allocated when a scope first records.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u32>);

impl Default for Latency {
    fn default() -> Self {
        // The bounds are constants that hdrhistogram accepts; the fallback is unreachable.
        Latency(
            Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!())),
        )
    }
}

impl Latency {
    /// Records one duration; longer than the range counts as the maximum.
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

    /// For each bound (ascending, in µs) the samples at or below it: cumulative buckets, in
    /// one pass over the recorded values (a count per bound would walk the histogram each
    /// time: 130 ms against 50 for 1,000 clusters, `cargo bench --bench stats`).
    pub fn cumulative(&self, bounds_us: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds_us.len()];
        let mut first = 0;
        for v in self.0.iter_recorded() {
            // A sample counts for its bucket's lowest equivalent value, as count_between does.
            let value = self.0.lowest_equivalent(v.value_iterated_to());
            while first < bounds_us.len() && bounds_us[first] < value {
                first += 1;
            }
            if first == bounds_us.len() {
                break;
            }
            out[first] += u64::from(v.count_at_value());
        }
        let mut running = 0;
        for n in out.iter_mut() {
            running += *n;
            *n = running;
        }
        out
    }

    /// The sum of the samples, in microseconds, as the histogram holds them (each sample at
    /// its bucket's value: within 1%).
    pub fn sum_us(&self) -> u64 {
        self.0
            .iter_recorded()
            .map(|v| {
                v.value_iterated_to()
                    .saturating_mul(u64::from(v.count_at_value()))
            })
            .sum()
    }
}

/// A histogram one core records into (never shared), folded into the [`Registry`] once a
/// second. Empty until the first sample: a scope that never sees traffic costs no histogram.
#[derive(Debug, Default)]
pub struct LocalHistogram(RefCell<Option<Latency>>);

impl LocalHistogram {
    #[inline]
    pub fn record(&self, d: Duration) {
        self.0
            .borrow_mut()
            .get_or_insert_with(Latency::default)
            .record(d);
    }

    /// The samples since the last call, if any; the histogram is kept (reset) for reuse.
    fn take_into(&self, f: impl FnOnce(&Latency)) {
        if let Some(h) = self.0.borrow_mut().as_mut().filter(|h| h.count() > 0) {
            f(h);
            h.reset();
        }
    }
}

/// A histogram's identity: its scope (`http`, `listener`, `cluster`), the owner's label
/// (`listener`, `cluster`) and name, and the stat (`downstream_rq_time`...). Dotted, it is
/// `http.<listener>.downstream_rq_time`, `listener.<listener>.downstream_cx_length_ms`,
/// `cluster.<name>.upstream_rq_time`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistKey {
    pub scope: &'static str,
    pub label: &'static str,
    pub owner: String,
    pub stat: &'static str,
}

impl HistKey {
    pub fn downstream_rq_time(listener: &str) -> HistKey {
        HistKey {
            scope: "http",
            label: "listener",
            owner: listener.to_owned(),
            stat: "downstream_rq_time",
        }
    }

    pub fn downstream_cx_length(listener: &str) -> HistKey {
        HistKey {
            scope: "listener",
            label: "listener",
            owner: listener.to_owned(),
            stat: "downstream_cx_length_ms",
        }
    }

    pub fn upstream_rq_time(cluster: &str) -> HistKey {
        HistKey {
            scope: "cluster",
            label: "cluster",
            owner: cluster.to_owned(),
            stat: "upstream_rq_time",
        }
    }

    pub fn dotted(&self) -> String {
        format!("{}.{}.{}", self.scope, self.owner, self.stat)
    }
}

/// One core's histograms by name; they outlive config generations, as pools do.
#[derive(Debug, Default)]
pub struct LocalHistograms(RefCell<BTreeMap<HistKey, std::rc::Rc<LocalHistogram>>>);

impl LocalHistograms {
    /// The histogram `key` on this core, created on first use (at config apply or accept, not
    /// per request).
    pub fn get(&self, key: HistKey) -> std::rc::Rc<LocalHistogram> {
        self.0.borrow_mut().entry(key).or_default().clone()
    }

    /// Adds what each histogram recorded since the last fold to the registry.
    pub fn fold_into(&self, registry: &Registry, worker: usize) {
        for (key, h) in self.0.borrow().iter() {
            h.take_into(|recent| registry.fold_histogram(worker, key, recent));
        }
    }
}

/// Identifies an endpoint's counters: worker, cluster name, address.
pub type EndpointKey = (usize, String, SocketAddr);

/// Control-side facts about reloads.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    /// Unix seconds of the last reload attempt, and whether it succeeded (1) or not (0).
    pub last_reload_time: Counter,
    pub last_reload_ok: Counter,
    /// 1 while serving; 0 once shutdown began.
    pub live: Counter,
}

/// Every core's counters and histograms, reachable from the admin thread and from tests.
#[derive(Debug)]
pub struct Registry {
    workers: Vec<Arc<WorkerStats>>,
    /// Written when a worker builds a config generation, never on the request path.
    endpoints: Mutex<BTreeMap<EndpointKey, Arc<EndpointStats>>>,
    /// By (cluster name, worker); written likewise.
    clusters: Mutex<BTreeMap<(String, usize), Arc<ClusterStats>>>,
    /// By (listener name, worker): kept across reloads so that open connections stay counted.
    listeners: Mutex<BTreeMap<(String, usize), Arc<ListenerStats>>>,
    /// By listener name, over every core (`max_connections`).
    loads: Mutex<BTreeMap<String, Arc<ListenerLoad>>>,
    /// Each worker's histograms up to its last fold (about a second ago at most).
    histograms: Mutex<BTreeMap<(HistKey, usize), Latency>>,
    pub server: ServerStats,
    started: SystemTime,
}

impl Registry {
    pub fn new(workers: usize) -> Registry {
        let server = ServerStats::default();
        server.live.set(1);
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
            clusters: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            loads: Mutex::new(BTreeMap::new()),
            histograms: Mutex::new(BTreeMap::new()),
            server,
            started: SystemTime::now(),
        }
    }

    pub fn workers(&self) -> &[Arc<WorkerStats>] {
        &self.workers
    }

    /// Seconds since the registry (the process's gateway) started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed().unwrap_or_default()
    }

    /// Records the outcome of a reload attempt, now.
    pub fn record_reload(&self, ok: bool) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let s = &self.server;
        // Written by the control thread only: single writer.
        if ok { &s.reloads_ok } else { &s.reloads_failed }.inc();
        s.last_reload_time.set(now);
        s.last_reload_ok.set(u64::from(ok));
    }

    /// A cluster's own counters on a worker, created on first use.
    pub fn cluster(&self, worker: usize, cluster: &str) -> Arc<ClusterStats> {
        lock(&self.clusters)
            .entry((cluster.to_owned(), worker))
            .or_default()
            .clone()
    }

    /// A cluster's own counter summed over every worker.
    pub fn cluster_total(&self, cluster: &str, field: fn(&ClusterStats) -> &Counter) -> u64 {
        lock(&self.clusters)
            .iter()
            .filter(|((c, _), _)| c == cluster)
            .map(|(_, s)| field(s).get())
            .sum()
    }

    /// The counters of an endpoint on a worker, created on first use.
    pub fn endpoint(&self, worker: usize, cluster: &str, addr: SocketAddr) -> Arc<EndpointStats> {
        lock(&self.endpoints)
            .entry((worker, cluster.to_owned(), addr))
            .or_default()
            .clone()
    }

    /// A listener's counters on a worker, created on first use.
    pub fn listener(&self, name: &str, worker: usize) -> Arc<ListenerStats> {
        lock(&self.listeners)
            .entry((name.to_owned(), worker))
            .or_default()
            .clone()
    }

    /// A listener's connection count over every core, created on first use.
    pub fn listener_load(&self, name: &str) -> Arc<ListenerLoad> {
        lock(&self.loads)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// A listener's counters on each worker that served it, in worker order.
    pub fn listener_per_worker(&self, name: &str) -> Vec<Arc<ListenerStats>> {
        lock(&self.listeners)
            .iter()
            .filter(|((l, _), _)| l == name)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// A listener's counter summed over workers.
    pub fn listener_total(&self, name: &str, field: fn(&ListenerStats) -> &Counter) -> u64 {
        self.listener_per_worker(name)
            .iter()
            .map(|s| field(s).get())
            .sum()
    }

    /// One endpoint's counters on each worker that used it.
    pub fn endpoint_per_worker(
        &self,
        cluster: &str,
        addr: SocketAddr,
    ) -> Vec<(usize, Arc<EndpointStats>)> {
        lock(&self.endpoints)
            .iter()
            .filter(|((_, c, a), _)| c == cluster && *a == addr)
            .map(|((w, _, _), s)| (*w, s.clone()))
            .collect()
    }

    /// One endpoint's counters summed over workers.
    pub fn endpoint_totals(&self, cluster: &str, addr: SocketAddr) -> EndpointTotals {
        let t = EndpointTotals::default();
        for ((_, c, a), s) in lock(&self.endpoints).iter() {
            if c == cluster && *a == addr {
                t.add(s);
            }
        }
        t
    }

    /// Adds a worker's recent samples to its share of histogram `key`.
    pub fn fold_histogram(&self, worker: usize, key: &HistKey, recent: &Latency) {
        lock(&self.histograms)
            .entry((key.clone(), worker))
            .or_default()
            .merge(recent);
    }

    /// Histogram `key` over every worker: the sum of their histograms.
    pub fn histogram(&self, key: &HistKey) -> Latency {
        let mut all = Latency::default();
        for ((k, _), h) in lock(&self.histograms).iter() {
            if k == key {
                all.merge(h);
            }
        }
        all
    }

    /// Every histogram, merged over workers, in name order.
    fn histograms(&self) -> Vec<(HistKey, Latency)> {
        let mut out: BTreeMap<HistKey, Latency> = BTreeMap::new();
        for ((k, _), h) in lock(&self.histograms).iter() {
            out.entry(k.clone()).or_default().merge(h);
        }
        out.into_iter().collect()
    }

    /// Requests served, over every worker.
    pub fn total_requests(&self) -> u64 {
        self.workers.iter().map(|w| w.requests.get()).sum()
    }

    /// The plain-text dump (Envoy's `name: value`), every stat.
    pub fn render(&self) -> String {
        self.render_as(Format::Text, &Query::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_merge_across_workers() {
        let r = Registry::new(2);
        r.workers()[0].requests.inc();
        r.workers()[1].requests.add(2);
        assert_eq!(r.total_requests(), 3);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        r.endpoint(0, "c", a).upstream_cx_total.inc();
        r.endpoint(1, "c", a).upstream_cx_total.inc();
        r.endpoint(1, "c", a).upstream_cx_reused.inc();
        r.endpoint(1, "c", a).record_status(503);
        let t = r.endpoint_totals("c", a);
        assert_eq!(t.upstream_cx_total.get(), 2);
        assert_eq!(t.upstream_cx_reused.get(), 1);
        assert_eq!(t.upstream_rq_class[4].get(), 1);
        r.listener("main", 0).record_request(Some(200));
        r.listener("main", 1).record_request(Some(404));
        r.listener("main", 1).record_request(None);
        let local = LocalHistograms::default();
        let h = local.get(HistKey::downstream_rq_time("main"));
        h.record(Duration::from_micros(250));
        h.record(Duration::from_millis(3));
        local.fold_into(&r, 1);
        let other = LocalHistograms::default();
        other
            .get(HistKey::downstream_rq_time("main"))
            .record(Duration::from_millis(40));
        other.fold_into(&r, 0);
        let key = HistKey::downstream_rq_time("main");
        let merged = r.histogram(&key);
        assert_eq!(merged.count(), 3);
        assert!(merged.quantile_us(1.0) >= 39_600);
        // A fold takes only what is new.
        local.fold_into(&r, 1);
        assert_eq!(r.histogram(&key).count(), 3);
        let text = r.render();
        for line in [
            "http.main.downstream_rq_total: 3",
            "http.main.downstream_rq_2xx: 1",
            "http.main.downstream_rq_4xx: 1",
            "http.main.downstream_rq_incomplete: 1",
            "cluster.c.upstream_cx_total: 2",
            "cluster.c.endpoint.127.0.0.1:1.upstream_cx_reused: 1",
            "worker.1.downstream_rq_total: 2",
            "server.live: 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains("http.main.downstream_rq_time: P0(nan,0.25) "),
            "{text}"
        );
    }

    #[test]
    fn cumulative_buckets_count_each_sample_once() {
        let mut h = Latency::default();
        for us in [100, 1_000, 7_000, 7_000, 4_000_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(
            h.cumulative(&[500, 1_000, 5_000, 10_000, 1_000_000]),
            vec![1, 2, 2, 4, 4]
        );
        assert_eq!(h.count(), 5);
    }
}
