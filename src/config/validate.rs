//! Validation: every semantic check on the parsed file, collecting all errors with their field
//! paths, producing the validated Config.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::file::*;
use super::*;

// ---------------------------------------------------------------- validate

const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

struct Checker {
    file: String,
    errors: Vec<ConfigError>,
}

impl Checker {
    fn err(&mut self, path: &str, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn dur(&mut self, raw: &Option<String>, default: Duration, path: &str) -> Duration {
        let Some(text) = raw else { return default };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                self.err(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                let ex = "use e.g. \"250ms\", \"5s\", \"1m\"";
                self.err(path, format!("invalid duration {text:?} ({e}); {ex}"));
                default
            }
        }
    }

    fn int<T: TryFrom<i64> + Copy>(
        &mut self,
        raw: Option<i64>,
        default: T,
        range: RangeInclusive<i64>,
        path: &str,
    ) -> T {
        let Some(v) = raw else { return default };
        match T::try_from(v) {
            Ok(t) if range.contains(&v) => t,
            _ => {
                let (lo, hi) = (range.start(), range.end());
                self.err(path, format!("must be between {lo} and {hi}, got {v}"));
                default
            }
        }
    }

    fn address(&mut self, raw: &str, path: &str) -> Option<SocketAddr> {
        // Resolving names would make startup depend on DNS and pin whatever it said once.
        let why = "expected IP:PORT like \"127.0.0.1:8080\" or \"[::1]:8080\" (no DNS names)";
        let parsed = raw.trim().parse::<SocketAddr>();
        if parsed.is_err() {
            self.err(path, format!("invalid address {raw:?}: {why}"));
        }
        parsed.ok()
    }

    /// One of a fixed set of names; an unknown one is reported with the accepted ones.
    fn one_of<T: Copy + Default>(
        &mut self,
        raw: &str,
        all: &[(&str, T)],
        what: &str,
        path: &str,
    ) -> T {
        match all.iter().find(|(n, _)| *n == raw.trim()) {
            Some(&(_, v)) => v,
            None => {
                let accepted: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
                let why = format!("unknown {what} {raw:?} (accepted: {})", accepted.join(", "));
                self.err(path, why);
                T::default()
            }
        }
    }

    fn name(&mut self, raw: &str, path: &str) {
        if raw.trim().is_empty() {
            self.err(path, "must not be empty");
        }
    }
}

/// Stands in for an address already reported as an error; never escapes, since any
/// error means no Config.
const NO_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

pub(super) fn validate(raw: RawConfig, file: &str) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        file: file.to_owned(),
        errors: Vec::new(),
    };
    let admin = raw.admin.as_ref().map(|a| Admin {
        address: c.address(&a.address, "admin.address").unwrap_or(NO_ADDR),
    });
    let workers = match raw.workers {
        None => Workers::Auto,
        Some(RawWorkers::Text(t)) if t == "auto" => Workers::Auto,
        Some(RawWorkers::Int(n)) if (1..=1024).contains(&n) => {
            Workers::Count(usize::try_from(n).unwrap_or(1))
        }
        Some(RawWorkers::Int(n)) => {
            c.err("workers", format!("must be `auto` or 1..=1024, got {n}"));
            Workers::Auto
        }
        Some(RawWorkers::Text(t)) => {
            c.err("workers", format!("must be `auto` or 1..=1024, got {t:?}"));
            Workers::Auto
        }
    };
    let d = Limits::default();
    let limits = match &raw.limits {
        None => d,
        Some(l) => Limits {
            max_request_head_bytes: c.int(
                l.max_request_head_bytes,
                d.max_request_head_bytes,
                1024..=1_048_576,
                "limits.max_request_head_bytes",
            ),
            max_headers: c.int(l.max_headers, d.max_headers, 1..=1024, "limits.max_headers"),
            header_timeout: c.dur(&l.header_timeout, d.header_timeout, "limits.header_timeout"),
            idle_timeout: c.dur(&l.idle_timeout, d.idle_timeout, "limits.idle_timeout"),
            body_timeout: c.dur(&l.body_timeout, d.body_timeout, "limits.body_timeout"),
            request_timeout: c.dur(
                &l.request_timeout,
                d.request_timeout,
                "limits.request_timeout",
            ),
            drain_timeout: c.dur(&l.drain_timeout, d.drain_timeout, "limits.drain_timeout"),
        },
    };

    // First occurrence wins so routes still resolve while a later duplicate is reported.
    let mut cluster_index: HashMap<&str, usize> = HashMap::new();
    for (i, cl) in raw.clusters.iter().enumerate() {
        cluster_index.entry(cl.name.as_str()).or_insert(i);
    }
    // Declaration order, once each, so the hint reads like the file.
    let known: Vec<&str> = (raw.clusters.iter().enumerate())
        .filter(|&(i, cl)| !cl.name.is_empty() && cluster_index.get(cl.name.as_str()) == Some(&i))
        .map(|(_, cl)| cl.name.as_str())
        .collect();
    let known = known.join(", ");

    if raw.listeners.is_empty() {
        c.err("listeners", "at least one listener is required");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
    let mut listeners = Vec::new();
    for (li, l) in raw.listeners.iter().enumerate() {
        let p = |field: &str| format!("listeners[{li}].{field}");
        c.name(&l.name, &p("name"));
        if let Some(first) = names.insert(&l.name, li) {
            let why = format!(
                "duplicate listener name {:?} (see listeners[{first}])",
                l.name
            );
            c.err(&p("name"), why);
        }
        let address = c.address(&l.address, &p("address"));
        // Port 0 asks the kernel for a fresh port on each bind, so it never collides.
        if let Some(a) = address.filter(|a| a.port() != 0) {
            if let Some(first) = addrs.insert(a, li) {
                let why = format!("{a} is already used by listeners[{first}]");
                c.err(&p("address"), why);
            }
            if admin.as_ref().is_some_and(|ad| ad.address == a) {
                let why = format!("{a} is already used by admin.address");
                c.err(&p("address"), why);
            }
        }
        let backlog = c.int(l.backlog, 1024u32, 1..=65535, &p("backlog"));
        if l.virtual_hosts.is_empty() {
            c.err(&p("virtual_hosts"), "at least one virtual host is required");
        }
        let mut vhost_names: HashMap<&str, usize> = HashMap::new();
        let mut domain_owner: HashMap<Domain, &str> = HashMap::new();
        let mut virtual_hosts = Vec::new();
        for (vi, v) in l.virtual_hosts.iter().enumerate() {
            let p = |field: &str| format!("listeners[{li}].virtual_hosts[{vi}].{field}");
            c.name(&v.name, &p("name"));
            if let Some(first) = vhost_names.insert(&v.name, vi) {
                let why = format!(
                    "duplicate virtual host name {:?} (see virtual_hosts[{first}])",
                    v.name
                );
                c.err(&p("name"), why);
            }
            if v.domains.is_empty() {
                let why = "at least one domain is required (\"*\" for any host)";
                c.err(&p("domains"), why);
            }
            let mut domains = Vec::new();
            for (di, raw_domain) in v.domains.iter().enumerate() {
                match parse_domain(raw_domain) {
                    Err(why) => c.err(&p(&format!("domains[{di}]")), why),
                    Ok(dom) => {
                        if let Some(owner) = domain_owner.get(&dom) {
                            let why =
                                format!("\"{dom}\" is already used by virtual host {owner:?}");
                            c.err(&p(&format!("domains[{di}]")), why);
                        } else {
                            domain_owner.insert(dom.clone(), &v.name);
                        }
                        domains.push(dom);
                    }
                }
            }
            let mut routes = Vec::new();
            for (ri, r) in v.routes.iter().enumerate() {
                let rp = p(&format!("routes[{ri}]"));
                routes.push(route(&mut c, r, &rp, &cluster_index, &known));
            }
            let name = v.name.clone();
            virtual_hosts.push(VirtualHost {
                name,
                domains,
                routes,
            });
        }
        let http = http_options(&mut c, l, &p);
        let (name, address) = (l.name.clone(), address.unwrap_or(NO_ADDR));
        listeners.push(Listener {
            name,
            address,
            backlog,
            http,
            virtual_hosts,
        });
    }
    let clusters = (raw.clusters.iter().enumerate())
        .map(|(ci, cl)| cluster(&mut c, cl, ci, &cluster_index))
        .collect();

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    let file = file.to_owned();
    Ok(Config {
        file,
        admin,
        workers,
        limits,
        listeners,
        clusters,
    })
}

/// Largest body limit accepted (2^62 bytes: far beyond any real body, and still a positive i64).
const MAX_BODY_LIMIT: i64 = 1 << 62;

fn http_options(c: &mut Checker, l: &RawListener, p: &dyn Fn(&str) -> String) -> HttpOptions {
    let d = PathOptions::default();
    let escaped_slashes = match &l.path_with_escaped_slashes {
        None => d.escaped_slashes,
        Some(v) => c.one_of(
            v,
            &EscapedSlashes::ALL,
            "action",
            &p("path_with_escaped_slashes"),
        ),
    };
    let headers_with_underscores = match &l.headers_with_underscores {
        None => UnderscoreHeaders::default(),
        Some(v) => c.one_of(
            v,
            &UnderscoreHeaders::ALL,
            "action",
            &p("headers_with_underscores"),
        ),
    };
    let mut trusted_proxies = Vec::new();
    for (i, raw) in l.trusted_proxies.iter().flatten().enumerate() {
        let raw = raw.trim();
        // A bare address is a network of one.
        let net = raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(net) => trusted_proxies.push(net.trunc()),
            Err(_) => {
                let why = format!(
                    "invalid network {raw:?}: expected a CIDR like \"10.0.0.0/8\" or an address"
                );
                c.err(&p(&format!("trusted_proxies[{i}]")), why);
            }
        }
    }
    HttpOptions {
        max_connections: l
            .max_connections
            .map(|v| c.int(Some(v), 1usize, 1..=100_000_000, &p("max_connections"))),
        max_request_body_bytes: l.max_request_body_bytes.map(|v| {
            c.int(
                Some(v),
                0u64,
                0..=MAX_BODY_LIMIT,
                &p("max_request_body_bytes"),
            )
        }),
        path: PathOptions {
            normalize: l.normalize_path.unwrap_or(d.normalize),
            merge_slashes: l.merge_slashes.unwrap_or(d.merge_slashes),
            escaped_slashes,
        },
        headers_with_underscores,
        trusted_proxies,
    }
}

fn route(
    c: &mut Checker,
    r: &RawRoute,
    rp: &str,
    index: &HashMap<&str, usize>,
    known: &str,
) -> Route {
    let m = &r.matcher;
    let path = match (&m.prefix, &m.path) {
        (Some(p), None) => {
            check_path(c, p, &format!("{rp}.match.prefix"));
            PathMatch::Prefix(p.clone())
        }
        (None, Some(p)) => {
            check_path(c, p, &format!("{rp}.match.path"));
            PathMatch::Exact(p.clone())
        }
        _ => {
            let why = "set exactly one of `prefix` (e.g. \"/\") or `path`";
            c.err(&format!("{rp}.match"), why);
            PathMatch::Prefix("/".to_owned())
        }
    };
    let methods = m.methods.as_ref().map(|list| {
        if list.is_empty() {
            let why = "an empty list matches nothing; omit `methods` to match any method";
            c.err(&format!("{rp}.match.methods"), why);
        }
        let mut out: Vec<http::Method> = Vec::new();
        for (mi, raw) in list.iter().enumerate() {
            let mp = format!("{rp}.match.methods[{mi}]");
            match parse_method(raw) {
                Err(why) => c.err(&mp, why),
                Ok(method) if out.contains(&method) => c.err(&mp, format!("duplicate {raw}")),
                Ok(method) => out.push(method),
            }
        }
        out
    });
    let name = &r.route.cluster;
    let cluster = index.get(name.as_str()).copied().unwrap_or_else(|| {
        let why = match known {
            "" => format!("unknown cluster {name:?} (no clusters are defined)"),
            _ => format!("unknown cluster {name:?} (known: {known})"),
        };
        c.err(&format!("{rp}.route.cluster"), why);
        0
    });
    let max_request_body_bytes = r.route.max_request_body_bytes.map(|v| {
        let path = format!("{rp}.route.max_request_body_bytes");
        c.int(Some(v), 0u64, 0..=MAX_BODY_LIMIT, &path)
    });
    Route {
        path,
        methods,
        cluster,
        max_request_body_bytes,
    }
}

fn cluster(c: &mut Checker, cl: &RawCluster, ci: usize, index: &HashMap<&str, usize>) -> Cluster {
    let p = |field: &str| format!("clusters[{ci}].{field}");
    c.name(&cl.name, &p("name"));
    if let Some(first) = index.get(cl.name.as_str()).filter(|&&f| f != ci) {
        let why = format!(
            "duplicate cluster name {:?} (see clusters[{first}])",
            cl.name
        );
        c.err(&p("name"), why);
    }
    let secs = Duration::from_secs;
    let connect_timeout = c.dur(&cl.connect_timeout, secs(1), &p("connect_timeout"));
    let response_timeout = c.dur(&cl.response_timeout, secs(15), &p("response_timeout"));
    let send_timeout = c.dur(&cl.send_timeout, secs(60), &p("send_timeout"));
    let idle_timeout = c.dur(&cl.idle_timeout, secs(60), &p("idle_timeout"));
    let max_idle = &p("max_idle_per_core");
    let max_idle = c.int(cl.max_idle_per_core, 128usize, 0..=65536, max_idle);
    let lb_policy = match &cl.lb_policy {
        None => LbPolicy::default(),
        Some(name) => c.one_of(name, &LbPolicy::ALL, "policy", &p("lb_policy")),
    };
    if cl.endpoints.is_empty() {
        c.err(&p("endpoints"), "at least one endpoint is required");
    }
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut endpoints = Vec::new();
    for (ei, e) in cl.endpoints.iter().enumerate() {
        let p = |field: &str| format!("clusters[{ci}].endpoints[{ei}].{field}");
        let address = c.address(&e.address, &p("address"));
        match address {
            Some(a) if a.port() == 0 => c.err(&p("address"), "port 0 cannot be connected to"),
            Some(a) => {
                if let Some(first) = seen.insert(a, ei) {
                    let why = format!("duplicate endpoint {a} (see endpoints[{first}])");
                    c.err(&p("address"), why);
                }
            }
            None => {}
        }
        let weight = c.int(e.weight, 1u32, 1..=1_000_000, &p("weight"));
        let address = address.unwrap_or(NO_ADDR);
        endpoints.push(Endpoint { address, weight });
    }
    Cluster {
        name: cl.name.clone(),
        connect_timeout,
        response_timeout,
        send_timeout,
        idle_timeout,
        max_idle_per_core: max_idle,
        lb_policy,
        endpoints,
    }
}

fn check_path(c: &mut Checker, p: &str, path: &str) {
    if !p.starts_with('/') {
        c.err(path, format!("{p:?} must start with '/'"));
    } else if p.bytes().any(|b| !b.is_ascii_graphic()) {
        // A request-target never carries these, so the route could never match.
        let why = format!("{p:?} has spaces or non-ASCII characters; percent-encode them");
        c.err(path, why);
    }
}

pub(super) fn parse_domain(raw: &str) -> Result<Domain, String> {
    let d = raw.trim().to_ascii_lowercase();
    let (host, wildcard) = match d.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (d.as_str(), false),
    };
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let why = match () {
        _ if d.is_empty() => "empty (use \"*\" for any host)",
        _ if d == "*" => return Ok(Domain::Any),
        _ if d.contains(['[', ']']) => "IPv6 literals are not supported",
        _ if d.contains(':') => "ports are ignored for matching; remove ':PORT'",
        _ if host.contains('*') => {
            "'*' must be alone (\"*\") or a leading label (\"*.example.com\")"
        }
        _ if !host.bytes().all(host_byte) => "only letters, digits, '-' and '.' are allowed",
        _ if host.split('.').any(str::is_empty) => "empty label (leading, trailing or doubled '.')",
        _ if wildcard => return Ok(Domain::Suffix(format!(".{host}"))),
        _ => return Ok(Domain::Exact(host.to_owned())),
    };
    Err(format!("invalid domain {raw:?}: {why}"))
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn parse_method(raw: &str) -> Result<http::Method, String> {
    let upper = raw.to_ascii_uppercase();
    let why = match () {
        _ if raw.is_empty() => "empty method",
        _ if !raw.bytes().all(is_tchar) => "only RFC 9110 token characters are allowed",
        // Methods are case-sensitive, so "get" would silently never match a real GET.
        _ if upper != raw && STANDARD_METHODS.contains(&upper.as_str()) => {
            return Err(format!(
                "methods are case-sensitive: use {upper}, not {raw}"
            ));
        }
        _ => return http::Method::from_bytes(raw.as_bytes()).map_err(|e| e.to_string()),
    };
    Err(format!("invalid method {raw:?}: {why}"))
}
