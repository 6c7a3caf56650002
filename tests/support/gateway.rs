//! Starts Coregate in-process from a YAML config for a test, on port 0.

use std::net::SocketAddr;
use std::time::Duration;

use coregate::Gateway;
use coregate::config;
use coregate::stats::EndpointTotals;

/// A running in-process gateway; stopped (without drain) when dropped.
pub struct TestGateway {
    pub gateway: Gateway,
    /// Address of the first listener.
    pub addr: SocketAddr,
}

impl TestGateway {
    /// Parses and validates `yaml` (panics with every error on an invalid config), starts it.
    pub fn start(yaml: &str) -> TestGateway {
        let config = config::parse(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{yaml}"));
        let first = config.listeners[0].name.clone();
        let gateway = Gateway::start(config).unwrap_or_else(|e| panic!("gateway start: {e}"));
        let addr = gateway.local_addr(&first).expect("first listener address");
        TestGateway { gateway, addr }
    }

    /// Starts the admin endpoints for this gateway on a free loopback port.
    pub fn start_admin(&self) -> SocketAddr {
        coregate::admin::start(
            "127.0.0.1:0".parse().expect("address"),
            self.gateway.registry().clone(),
            self.gateway.published(),
        )
        .expect("admin listener")
    }

    /// The bound address of a listener by name.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.gateway.local_addr(name).expect("listener address")
    }

    /// An endpoint's counters summed over workers.
    pub fn endpoint(&self, cluster: &str, addr: SocketAddr) -> EndpointTotals {
        self.gateway.registry().endpoint_totals(cluster, addr)
    }

    /// Requests counted by each worker.
    pub fn requests_per_worker(&self) -> Vec<u64> {
        self.gateway
            .registry()
            .workers()
            .iter()
            .map(|w| w.requests.get())
            .collect()
    }

    /// Connections accepted by each worker.
    pub fn connections_per_worker(&self) -> Vec<u64> {
        self.gateway
            .registry()
            .workers()
            .iter()
            .map(|w| w.connections_accepted.get())
            .collect()
    }

    /// Stops, letting in-flight requests finish for at most `drain`.
    pub fn shutdown(self, drain: Duration) {
        self.gateway.shutdown(drain);
    }
}

/// A single-cluster config: every host and path to `endpoints` ((address, weight) pairs), one
/// worker unless `workers` says otherwise, with `extra` appended to the cluster (indented YAML
/// lines such as "    max_idle_per_core: 4") and `limits` as a YAML flow mapping ("{}" for
/// defaults).
pub fn simple_config(
    endpoints: &[(SocketAddr, u32)],
    workers: usize,
    extra: &str,
    limits: &str,
) -> String {
    let mut eps = String::new();
    for (addr, weight) in endpoints {
        eps.push_str(&format!(
            "      - {{ address: \"{addr}\", weight: {weight} }}\n"
        ));
    }
    format!(
        "workers: {workers}
limits: {limits}
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
clusters:
  - name: backend
    connect_timeout: 500ms
{extra}
    endpoints:
{eps}"
    )
}

/// `simple_config` over endpoints `a` and `b` (weight 1 each, one worker, cluster lines
/// `extra`), with the route's `retry_policy` and, if `count_attempts`, the virtual host's
/// `include_request_attempt_count`.
pub fn retry_config(
    a: SocketAddr,
    b: SocketAddr,
    policy: &str,
    extra: &str,
    count_attempts: bool,
) -> String {
    let yaml = simple_config(&[(a, 1), (b, 1)], 1, extra, "{}").replace(
        "route: { cluster: backend }",
        &format!("route: {{ cluster: backend, retry_policy: {policy} }}"),
    );
    if !count_attempts {
        return yaml;
    }
    yaml.replace(
        "domains: [\"*\"]",
        "domains: [\"*\"]\n        include_request_attempt_count: true",
    )
}

/// One worker, one listener whose only virtual host answers `host` (any other host gets 404),
/// everything routed to `endpoint`.
pub fn single_host_config(host: &str, endpoint: SocketAddr) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: only
        domains: [\"{host}\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
clusters:
  - name: backend
    endpoints:
      - {{ address: \"{endpoint}\" }}
"
    )
}

/// A config with one listener that routes every host and path to one cluster of one endpoint,
/// with YAML lines added where a test needs them.
pub struct CatchAll {
    workers: usize,
    top: String,
    listener: &'static str,
    listener_lines: String,
    cluster: &'static str,
    cluster_lines: String,
    upstream: SocketAddr,
}

impl CatchAll {
    /// One worker, listener `main`, cluster `backend` at `upstream`.
    pub fn new(upstream: SocketAddr) -> CatchAll {
        CatchAll {
            workers: 1,
            top: String::new(),
            listener: "main",
            listener_lines: String::new(),
            cluster: "backend",
            cluster_lines: String::new(),
            upstream,
        }
    }

    pub fn workers(mut self, n: usize) -> CatchAll {
        self.workers = n;
        self
    }

    /// Top-level lines (`limits:`, `tracing:`...).
    pub fn top(mut self, yaml: &str) -> CatchAll {
        self.top = yaml.to_owned();
        self
    }

    /// The listener's name, and lines under it (indented 4: `    tls:`...).
    pub fn listener(mut self, name: &'static str, lines: &str) -> CatchAll {
        self.listener = name;
        self.listener_lines = lines.to_owned();
        self
    }

    /// The cluster's name, and lines under it (indented 4).
    pub fn cluster(mut self, name: &'static str, lines: &str) -> CatchAll {
        self.cluster = name;
        self.cluster_lines = lines.to_owned();
        self
    }

    pub fn yaml(&self) -> String {
        let line = |s: &str| {
            if s.is_empty() || s.ends_with('\n') {
                s.to_owned()
            } else {
                format!("{s}\n")
            }
        };
        format!(
            "workers: {}
{}listeners:
  - name: {}
    address: 127.0.0.1:0
{}    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: {} }}
clusters:
  - name: {}
{}    endpoints:
      - {{ address: \"{}\" }}
",
            self.workers,
            line(&self.top),
            self.listener,
            line(&self.listener_lines),
            self.cluster,
            self.cluster,
            line(&self.cluster_lines),
            self.upstream
        )
    }

    pub fn start(&self) -> TestGateway {
        TestGateway::start(&self.yaml())
    }
}
