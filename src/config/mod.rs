//! The config file: parse (serde, in `file`), validate collecting every error with its field
//! path (in `validate`), into the validated [`Config`] that the snapshot is compiled from.

mod diff;
mod dns;
mod dump;
mod file;
mod header_edits;
mod route_items;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use diff::diff;
pub use dns::{ClusterType, DnsDiscovery, DnsHost, LookupFamily};

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use crate::action::Action;
pub use crate::hosts::Domain;
pub use crate::path::{EscapedSlashes, PathOptions};
pub use crate::tls::{ClientAuthMode, TlsVersion};

// ---------------------------------------------------------------- errors

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------- validated types

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: String,
    pub admin: Option<Admin>,
    pub workers: Workers,
    pub limits: Limits,
    /// Spans exported to a Zipkin-compatible collector; None: no tracing (incoming trace
    /// context is still continued and passed on).
    pub tracing: Option<Tracing>,
    /// Shared: a reload that leaves the listeners' text alone keeps the validated listeners
    /// (config::Loader), and a reload is compared and compiled faster when they are the same.
    pub listeners: Arc<[Listener]>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_request_head_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    /// Downstream keep-alive idle time.
    pub idle_timeout: Duration,
    /// Longest wait between two body reads or writes.
    pub body_timeout: Duration,
    /// Longest time for a whole request (head and body) to arrive, from its first byte: a
    /// client that trickles a body in just under `body_timeout` per read is cut here (408).
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_head_bytes: 65536,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub backlog: u32,
    pub http: HttpOptions,
    /// Set: the listener terminates TLS.
    pub tls: Option<ListenerTls>,
    /// Set: the listener speaks HTTP/2 too (ALPN `h2` over TLS, prior knowledge in plaintext).
    pub http2: Option<Http2Options>,
    /// Where each request is logged, and how.
    pub access_log: Vec<AccessLog>,
    pub request_id: crate::trace::RequestIdOptions,
    /// `request_headers_to_add` ... at listener level (Envoy's route configuration level).
    pub header_edits: Option<std::sync::Arc<crate::header_edit::HeaderEdits>>,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Tracing: where spans go and how many new traces are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub collector: crate::zipkin::Collector,
    /// Share of new traces (those without an incoming decision) that are sampled, 0..=100.
    pub sample_percent: f64,
}

impl Eq for Tracing {}

/// One access log of a listener: a file (or "-" for stdout) and its compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub path: String,
    pub format: crate::access_log::Format,
}

/// A listener's TLS: its certificates (read and checked), versions, ALPN, client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub server: crate::tls::ServerSettings,
    /// The certificate files, in the order of `server.certificates`.
    pub files: Vec<String>,
    /// A request header that carries the verified client certificate upstream (lowercase). A
    /// copy the client sent is always removed.
    pub client_cert_header: Option<String>,
}

/// How a listener treats what its clients send. The defaults are the safe ones for an edge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpOptions {
    /// Connections open at once on this listener, over every core; beyond it a new connection
    /// is closed at accept (and counted). None: unlimited.
    pub max_connections: Option<usize>,
    /// Largest request body (413 beyond it). None: unlimited (bodies stream, memory is bounded
    /// either way). A route may set its own.
    pub max_request_body_bytes: Option<u64>,
    /// Requests (HTTP/2 streams) a connection may carry; the last one's response closes it
    /// (HTTP/1: `Connection: close`; HTTP/2: GOAWAY). None: unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// How request paths are normalised before routing and forwarding.
    pub path: PathOptions,
    pub headers_with_underscores: UnderscoreHeaders,
    /// Peers whose X-Forwarded-* / Forwarded / X-Real-IP headers are kept (an L4 or L7
    /// balancer in front): the client address is appended to their X-Forwarded-For. From any
    /// other peer those headers are removed and set by the gateway.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// What to do with a request header whose name has an underscore (CGI-style servers map `-`
/// and `_` to the same variable, so `X_Forwarded_For` can shadow a trusted `X-Forwarded-For`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnderscoreHeaders {
    Allow,
    /// Remove the header (Envoy's DROP_HEADER).
    #[default]
    Drop,
    /// Answer 400.
    Reject,
}

impl UnderscoreHeaders {
    const ALL: [(&'static str, UnderscoreHeaders); 3] = [
        ("allow", UnderscoreHeaders::Allow),
        ("drop", UnderscoreHeaders::Drop),
        ("reject", UnderscoreHeaders::Reject),
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnderscoreHeaders::Allow => "allow",
            UnderscoreHeaders::Drop => "drop",
            UnderscoreHeaders::Reject => "reject",
        }
    }
}

impl EscapedSlashes {
    const ALL: [(&'static str, EscapedSlashes); 3] = [
        ("keep", EscapedSlashes::Keep),
        ("reject", EscapedSlashes::Reject),
        ("decode", EscapedSlashes::Decode),
    ];
}

fn escaped_slashes_name(e: EscapedSlashes) -> &'static str {
    match e {
        EscapedSlashes::Keep => "keep",
        EscapedSlashes::Reject => "reject",
        EscapedSlashes::Decode => "decode",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<Domain>,
    /// Shared: a reload keeps the routes whose entries did not change (config::Loader), and
    /// its diff compares those by address.
    pub routes: Vec<Arc<Route>>,
    /// On a plaintext listener: every request is answered with a redirect to https.
    pub redirect_to_https: bool,
    /// Upstream requests carry `x-envoy-attempt-count`: 1, then 2 on the first retry, ...
    pub include_request_attempt_count: bool,
    /// `request_headers_to_add` ... at virtual host level.
    pub header_edits: Option<std::sync::Arc<crate::header_edit::HeaderEdits>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    /// `None` matches any method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into `Config::clusters`.
    pub cluster: usize,
    /// Overrides the listener's `max_request_body_bytes` for this route.
    pub max_request_body_bytes: Option<u64>,
    /// The whole exchange (connect, request, the complete response) within this, or 504 (a
    /// response already under way is cut). None: no limit beyond the cluster's timeouts.
    pub timeout: Option<Duration>,
    /// Overrides `limits.body_timeout` for this route's upstream waits: the longest pause in
    /// a response body before the exchange is cut.
    pub idle_timeout: Option<Duration>,
    /// Set: failed attempts are retried on another endpoint under these rules.
    pub retry_policy: Option<Box<RetryPolicy>>,
    /// `match.tls_context`: set, the route matches only connections that presented (true) or
    /// did not present (false) a verified client certificate.
    pub client_certificate: Option<bool>,
    /// Where the key of a ring_hash or maglev cluster comes from (empty: a random pick).
    pub hash_policy: Vec<HashPolicy>,
    /// `match.case_sensitive`, `match.headers`, `match.query_parameters`.
    pub rules: crate::route_match::MatchRules,
    /// `name`: shown in the access log (`%ROUTE_NAME%`) and the config dump.
    pub name: Option<String>,
    /// A weighted split, rewrites, or an answer of the gateway's own (`redirect`,
    /// `direct_response`: then `cluster` is [`crate::action::NO_CLUSTER`]). With
    /// `weighted_clusters`, `cluster` is the first of them.
    pub action: Action,
    /// `request_headers_to_add` ... at route level.
    pub header_edits: Option<std::sync::Arc<crate::header_edit::HeaderEdits>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// `path_separated_prefix`: the prefix, then the end of the path or a '/'.
    SeparatedPrefix(String),
    /// `safe_regex`: the whole path (without the query) matches.
    Regex(crate::route_match::Pattern),
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "prefix {p}"),
            PathMatch::Exact(p) => write!(f, "path {p}"),
            PathMatch::SeparatedPrefix(p) => write!(f, "path_separated_prefix {p}"),
            PathMatch::Regex(p) => write!(f, "safe_regex {}", p.source()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub connect_timeout: Duration,
    /// Wait for the upstream response head once the request is sent.
    pub response_timeout: Duration,
    /// Longest wait for the upstream to take the next piece of a request (a write that makes
    /// no progress): 504, or a cut exchange once the response started.
    pub send_timeout: Duration,
    /// Lifetime of a pooled idle upstream connection.
    pub idle_timeout: Duration,
    /// 0 disables pooling.
    pub max_idle_per_core: usize,
    pub lb_policy: LbPolicy,
    /// Set: connections to the endpoints use TLS.
    pub tls: Option<crate::tls::ClientSettings>,
    /// The protocol spoken to the endpoints, and the HTTP/2 settings when it is HTTP/2.
    pub protocol: UpstreamProtocol,
    pub http2: Http2Options,
    /// Set: one prober on the control side checks every endpoint, and endpoints it finds
    /// unhealthy leave rotation on every core.
    pub health_check: Option<HealthCheck>,
    /// Below this share of healthy endpoints (percent), every endpoint is used anyway
    /// (Envoy's panic threshold): a cluster half down still spreads its load.
    pub panic_threshold: u8,
    pub circuit_breakers: CircuitBreakers,
    /// Set: each core ejects endpoints that fail in a row (passive, per core).
    pub outlier_detection: Option<OutlierDetection>,
    /// Retries under way may be at most this share of the requests under way (on each core),
    /// or `min_retry_concurrency`, whichever is more.
    pub retry_budget: RetryBudget,
    /// A `static` cluster's endpoints; a `strict_dns` cluster's are resolved on the control
    /// side and filled in when a snapshot is compiled (empty here).
    pub endpoints: Vec<Endpoint>,
    /// Set for a `strict_dns` cluster: the names its endpoints are resolved from.
    pub dns: Option<DnsDiscovery>,
}

/// When and how a route retries (Envoy's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `connect-failure` (every endpoint refused), `refused-stream`, `reset` (closed or reset
    /// before an answer), `5xx`, `gateway-error` (502, 503, 504, and failures to answer),
    /// `retriable-4xx` (409), `retriable-status-codes`.
    pub retry_on: Vec<RetryOn>,
    pub num_retries: u32,
    /// Each attempt's wait for the response head (the cluster's `response_timeout` if
    /// shorter).
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// Bodies up to this size are held so the request can be sent again.
    pub max_retry_body_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryOn {
    #[default]
    ConnectFailure,
    RefusedStream,
    Reset,
    Status5xx,
    GatewayError,
    Retriable4xx,
    RetriableStatusCodes,
}

impl RetryOn {
    pub const ALL: [(&'static str, RetryOn); 7] = [
        ("connect-failure", RetryOn::ConnectFailure),
        ("refused-stream", RetryOn::RefusedStream),
        ("reset", RetryOn::Reset),
        ("5xx", RetryOn::Status5xx),
        ("gateway-error", RetryOn::GatewayError),
        ("retriable-4xx", RetryOn::Retriable4xx),
        ("retriable-status-codes", RetryOn::RetriableStatusCodes),
    ];
}

impl RetryPolicy {
    /// Whether an answer with `status` is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        self.retry_on.iter().any(|on| match on {
            RetryOn::Status5xx => status >= 500,
            RetryOn::GatewayError => matches!(status, 502..=504),
            RetryOn::Retriable4xx => status == 409,
            RetryOn::RetriableStatusCodes => self.retriable_status_codes.contains(&status),
            _ => false,
        })
    }

    /// Whether a failure to answer (a reset or close before the head, a per-try timeout) is
    /// retried.
    pub fn retries_failure(&self) -> bool {
        self.retry_on.iter().any(|on| {
            matches!(
                on,
                RetryOn::Reset | RetryOn::Status5xx | RetryOn::GatewayError
            )
        })
    }
}

/// The share of requests that may be retries at once (Envoy's `retry_budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Percent of the requests under way, in hundredths (2000 = 20%).
    pub budget_centipercent: u32,
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            budget_centipercent: 2000,
            min_retry_concurrency: 3,
        }
    }
}

/// Passive outlier detection (Envoy's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 5xx answers (or failures to answer) in a row that eject an endpoint.
    pub consecutive_5xx: u32,
    /// 502, 503, 504 answers or failures to answer in a row that eject it.
    pub consecutive_gateway_failure: u32,
    /// An ejection lasts this x the times the endpoint was ejected, up to the max.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share of a cluster's endpoints is ejected at once (one at least).
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// Limits on what a cluster may have under way (Envoy's names and defaults), for the whole
/// gateway: each core enforces its share, the limit divided by the workers (rounded up).
/// Past one, a request is answered 503 at once and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Upstream connections open.
    pub max_connections: u32,
    /// Requests waiting for a connection (a connect under way).
    pub max_pending_requests: u32,
    /// Requests under way.
    pub max_requests: u32,
    /// Retries under way.
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// An active health check (Envoy's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy endpoint back, and failures that take a
    /// healthy one out.
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Up to this much is added to each interval at random, so probes of many gateways do not
    /// arrive together.
    pub jitter: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// The endpoint accepts a TCP connection.
    Tcp,
    /// `GET path` (Host: `host`, the cluster's name by default) answers one of the statuses.
    Http {
        path: String,
        host: String,
        expected_statuses: Vec<u16>,
    },
}

/// What a cluster speaks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`) or in plaintext with prior knowledge (h2c).
    Http2,
    /// What ALPN agrees on over TLS (`h2` preferred); HTTP/1.1 in plaintext.
    Auto,
}

impl UpstreamProtocol {
    pub const ALL: [(&'static str, UpstreamProtocol); 3] = [
        ("http1", UpstreamProtocol::Http1),
        ("http2", UpstreamProtocol::Http2),
        ("auto", UpstreamProtocol::Auto),
    ];

    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// HTTP/2 settings of a listener or a cluster (Envoy's `http2_protocol_options` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Options {
    /// Streams the peer may open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Flow-control windows: how much a peer may send before the gateway has forwarded it, per
    /// stream and per connection; they bound the memory one stream and one connection hold.
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_frame_size: u32,
    /// Streams a client may reset, or make the gateway reset, per second (with a burst of
    /// twice as many) before it is told ENHANCE_YOUR_CALM and closed: the rapid-reset
    /// (CVE-2023-44487) and MadeYouReset defences.
    pub max_resets_per_second: u32,
    /// PING every `interval` on a connection; no answer within `timeout` closes it.
    pub keepalive: Option<(Duration, Duration)>,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 100,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_resets_per_second: 100,
            keepalive: None,
        }
    }
}

/// How a cluster picks the endpoint of each request (Envoy's `lb_policy`, with the settings of
/// its `*_lb_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Smooth weighted round-robin, per core.
    #[default]
    WeightedRoundRobin,
    /// Endpoints in turn, weights ignored, per core.
    RoundRobin,
    /// Weighted random, per core.
    Random,
    /// The lightest of `choice_count` endpoints drawn at random, by this core's requests in
    /// flight per unit of weight.
    LeastRequest { choice_count: u32 },
    /// Envoy's ring_hash over the route's `hash_policy` key.
    RingHash {
        minimum_ring_size: u64,
        maximum_ring_size: u64,
    },
    /// Maglev over the route's `hash_policy` key; `table_size` is a prime.
    Maglev { table_size: u64 },
}

impl LbPolicy {
    /// Accepted names, with the defaults of their settings; Envoy's upper-case enum names too.
    pub(crate) const ALL: [(&'static str, LbPolicy); 11] = [
        ("weighted_round_robin", LbPolicy::WeightedRoundRobin),
        ("round_robin", LbPolicy::RoundRobin),
        ("random", LbPolicy::Random),
        ("least_request", LbPolicy::LEAST_REQUEST),
        ("ring_hash", LbPolicy::RING_HASH),
        ("maglev", LbPolicy::MAGLEV),
        ("ROUND_ROBIN", LbPolicy::RoundRobin),
        ("RANDOM", LbPolicy::Random),
        ("LEAST_REQUEST", LbPolicy::LEAST_REQUEST),
        ("RING_HASH", LbPolicy::RING_HASH),
        ("MAGLEV", LbPolicy::MAGLEV),
    ];
    const LEAST_REQUEST: LbPolicy = LbPolicy::LeastRequest { choice_count: 2 };
    const RING_HASH: LbPolicy = LbPolicy::RingHash {
        minimum_ring_size: crate::balance::RingHash::MINIMUM_RING_SIZE,
        maximum_ring_size: crate::balance::RingHash::MAXIMUM_RING_SIZE,
    };
    const MAGLEV: LbPolicy = LbPolicy::Maglev {
        table_size: crate::balance::Maglev::TABLE_SIZE,
    };

    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::WeightedRoundRobin => "weighted_round_robin",
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::Random => "random",
            LbPolicy::LeastRequest { .. } => "least_request",
            LbPolicy::RingHash { .. } => "ring_hash",
            LbPolicy::Maglev { .. } => "maglev",
        }
    }

    /// Whether the policy picks by the route's `hash_policy` key (ring_hash, maglev).
    pub fn hashes(self) -> bool {
        matches!(self, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. })
    }
}

/// One entry of a route's `hash_policy` (Envoy's names): where the key of a hashing balancer
/// comes from. The hashes of the entries that yield one are combined, in order, until a
/// `terminal` entry yields one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub key: HashKey,
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of a request header (name lowercase).
    Header(String),
    /// The value of a cookie; with `ttl`, a request without it gets one generated and set on
    /// the response (`ttl` zero: a session cookie).
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    /// The client's IP address.
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
}

// ---------------------------------------------------------------- load / parse

pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    parse(&read(path, &file)?, &file)
}

pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let raw = file::parse(text).map_err(|(path, reason)| one_error(file, path, reason))?;
    Ok(validate::validate(&raw, file, validate::Reuse::Nothing)?.0)
}

/// Loads one config file again and again (start, then each reload), parsing only the
/// top-level sections whose text changed since the last load (config/sections.rs): a
/// 10,000-route file whose routes stay is not parsed again. Nor are its listeners validated
/// again when their text, the cluster names and the admin address are those of the last load
/// and validating them reads no file (TLS certificates, direct_response bodies: their
/// contents may have changed): a reload that changes a cluster's weights takes ~1 ms of
/// validation instead of ~5 ms at 10,000 routes. When the listeners changed, a route whose
/// entry's text is the last load's (config/route_items.rs) is that load's validated route,
/// while the cluster names stay and it reads no file: a reload that edits one of 10,000 routes
/// validates one. Everything else is validated every time.
#[derive(Default)]
pub struct Loader {
    sections: sections::Sections,
    /// The last load's validated listeners and what validating them depended on. None after a
    /// load that failed: the parse caches moved on without a validation to match.
    last: Option<Validated>,
    /// Routes the last load took from the one before (tests).
    #[cfg(test)]
    routes_reused: usize,
}

/// The listeners of a load and what validating them depended on beyond their own text.
struct Validated {
    inputs: ListenerInputs,
    listeners: Arc<[Listener]>,
}

/// What validating the listeners depends on beyond their own text.
#[derive(PartialEq)]
struct ListenerInputs {
    file: String,
    admin: Option<String>,
    clusters: Vec<String>,
    /// Validating the listeners reads files.
    reads_files: bool,
}

impl ListenerInputs {
    fn of(raw: &file::RawConfig, file: &str) -> ListenerInputs {
        let reads_files = raw.listeners.iter().any(|l| {
            l.tls.is_some()
                || (l.virtual_hosts.iter().flat_map(|v| &v.routes)).any(validate::reads_file)
        });
        ListenerInputs {
            file: file.to_owned(),
            admin: raw.admin.as_ref().map(|a| a.address.clone()),
            clusters: raw.clusters.iter().map(|c| c.name.clone()).collect(),
            reads_files,
        }
    }
}

impl Loader {
    pub fn load(&mut self, path: &Path) -> Result<Config, ConfigErrors> {
        let last = self.last.take();
        let file = path.display().to_string();
        let text = read(path, &file)?;
        (self.sections)
            .parse(&text)
            .map_err(|(path, reason)| one_error(&file, path, reason))?;
        let raw = self.sections.raw();
        let inputs = ListenerInputs::of(raw, &file);
        let kept = self.sections.kept_routes();
        let reuse = match &last {
            Some(last)
                if !self.sections.reparsed("listeners")
                    && !inputs.reads_files
                    && last.inputs == inputs =>
            {
                validate::Reuse::Listeners(last.listeners.clone())
            }
            // A route's validation reads the cluster names (and the file's directory, for a
            // body file: such routes are validated again anyway).
            Some(last)
                if last.inputs.file == inputs.file && last.inputs.clusters == inputs.clusters =>
            {
                match &kept {
                    Some(kept) => {
                        validate::Reuse::Routes(validate::KeptRoutes::new(&last.listeners, kept))
                    }
                    None => validate::Reuse::Nothing,
                }
            }
            _ => validate::Reuse::Nothing,
        };
        let (config, _reused) = validate::validate(raw, &file, reuse)?;
        #[cfg(test)]
        {
            self.routes_reused = _reused;
        }
        self.last = Some(Validated {
            inputs,
            listeners: config.listeners.clone(),
        });
        Ok(config)
    }
}

fn read(path: &Path, file: &str) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| one_error(file, String::new(), format!("cannot read file: {e}")))
}

fn one_error(file: &str, path: String, reason: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_owned(),
        path,
        reason,
    }])
}

// ---------------------------------------------------------------- summary

/// Certificates that expire within this many days are warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;

impl Config {
    /// One screen for `coregate check`.
    pub fn summary(&self) -> String {
        Summary(self).to_string()
    }

    /// What is valid but deserves the operator's attention: certificates that have expired or
    /// expire within 30 days, each with its file.
    pub fn warnings(&self) -> Vec<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut out = Vec::new();
        for l in self.listeners.iter() {
            let Some(tls) = &l.tls else { continue };
            for (served, file) in tls.server.certificates.iter().zip(&tls.files) {
                if let Some(w) = served.certificate.expiry_warning(now, EXPIRY_WARNING_DAYS) {
                    out.push(format!("listener {}: {file}: {w}", l.name));
                }
            }
        }
        for c in &self.clusters {
            let cert = c.tls.as_ref().and_then(|t| t.client_certificate.as_ref());
            if let Some(w) = cert.and_then(|c| c.expiry_warning(now, EXPIRY_WARNING_DAYS)) {
                out.push(format!("cluster {}: client certificate: {w}", c.name));
            }
        }
        out
    }
}

struct Summary<'a>(&'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let hd = |d: Duration| humantime::format_duration(d).to_string();
        writeln!(f, "config {}", c.file)?;
        match c.workers {
            Workers::Auto => writeln!(f, "workers: auto (one per core)")?,
            Workers::Count(n) => writeln!(f, "workers: {n}")?,
        }
        if let Some(a) = &c.admin {
            writeln!(f, "admin: {}", a.address)?;
        }
        let l = &c.limits;
        writeln!(
            f,
            "limits: head {} B, {} headers, header {}, idle {}, body {}, request {}, drain {}",
            l.max_request_head_bytes,
            l.max_headers,
            hd(l.header_timeout),
            hd(l.idle_timeout),
            hd(l.body_timeout),
            hd(l.request_timeout),
            hd(l.drain_timeout)
        )?;
        let limit = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        for lis in c.listeners.iter() {
            writeln!(
                f,
                "listener {} on {} (backlog {})",
                lis.name, lis.address, lis.backlog
            )?;
            let h = &lis.http;
            let trusted: Vec<String> = h.trusted_proxies.iter().map(|n| n.to_string()).collect();
            writeln!(
                f,
                "  connections {}, request body {}, paths: normalize {}, merge slashes {}, \
                 escaped slashes {}; underscore headers {}; trusted proxies [{}]",
                limit(h.max_connections.map(|n| n as u64)),
                limit(h.max_request_body_bytes),
                h.path.normalize,
                h.path.merge_slashes,
                escaped_slashes_name(h.path.escaped_slashes),
                h.headers_with_underscores.name(),
                trusted.join(", ")
            )?;
            if let Some(t) = &lis.tls {
                let names: Vec<String> = t
                    .server
                    .certificates
                    .iter()
                    .map(|c| {
                        let names: Vec<String> =
                            c.server_names.iter().map(Domain::to_string).collect();
                        format!("{} [{}]", c.certificate.subject, names.join(", "))
                    })
                    .collect();
                let version = match t.server.min_version {
                    TlsVersion::Tls12 => "1.2",
                    TlsVersion::Tls13 => "1.3",
                };
                writeln!(
                    f,
                    "  tls: min {version}, alpn {}, certificates: {}",
                    t.server.alpn.join(","),
                    names.join("; ")
                )?;
            }
            for v in &lis.virtual_hosts {
                let domains: Vec<String> = v.domains.iter().map(Domain::to_string).collect();
                writeln!(f, "  vhost {}: {}", v.name, domains.join(", "))?;
                for r in &v.routes {
                    let methods = match &r.methods {
                        None => "*".to_owned(),
                        Some(ms) => ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
                    };
                    let cluster = c.clusters.get(r.cluster).map_or("?", |cl| cl.name.as_str());
                    let target = match &r.action {
                        Action::Forward {
                            weighted: Some(w), ..
                        } => (w.clusters.iter())
                            .map(|&(i, weight)| {
                                let name = c.clusters.get(i).map_or("?", |cl| cl.name.as_str());
                                format!("{name}={weight}")
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        Action::Forward { .. } => cluster.to_owned(),
                        Action::Redirect(r) => format!("redirect {}", r.status),
                        Action::DirectResponse(d) => format!("direct response {}", d.status),
                    };
                    writeln!(f, "    {methods} {} -> {target}", r.path)?;
                }
            }
        }
        for cl in &c.clusters {
            writeln!(
                f,
                "cluster {} ({}): connect {}, response {}, send {}, idle {}, max idle/core {}",
                cl.name,
                cl.lb_policy.name(),
                hd(cl.connect_timeout),
                hd(cl.response_timeout),
                hd(cl.send_timeout),
                hd(cl.idle_timeout),
                cl.max_idle_per_core
            )?;
            if let Some(t) = &cl.tls {
                let verify = match (t.verify, &t.ca) {
                    (false, _) => "NOT verified (verify: false)",
                    (true, Some(_)) => "verified against the cluster's CA",
                    (true, None) => "verified against the system roots",
                };
                let sni = t.sni.as_deref().unwrap_or("(endpoint address)");
                writeln!(f, "  tls: server name {sni}, {verify}")?;
            }
            for e in &cl.endpoints {
                writeln!(f, "  {} weight {}", e.address, e.weight)?;
            }
            if let Some(d) = &cl.dns {
                let via = if d.resolvers.is_empty() {
                    "the system resolver".to_owned()
                } else {
                    let r: Vec<String> = d.resolvers.iter().map(|a| a.to_string()).collect();
                    r.join(", ")
                };
                writeln!(
                    f,
                    "  strict_dns every {} ({}) via {via}",
                    hd(d.refresh_rate),
                    d.lookup_family.name()
                )?;
                for h in &d.hosts {
                    writeln!(f, "  {}:{} weight {}", h.host, h.port, h.weight)?;
                }
            }
        }
        Ok(())
    }
}
