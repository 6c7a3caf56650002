//! Validation: every semantic check on the parsed file, collecting all errors with their field
//! paths, producing the validated Config.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[path = "dns_check.rs"]
mod dns_check;

use super::file::*;
use super::route_items::Kept;
use super::*;
use crate::tls::{self, ClientAuth, ClientSettings, ServedCertificate, ServerSettings};

mod balance;
#[path = "validate_match.rs"]
mod matchers;

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

    /// HTTP status codes (100 to 599); each bad one is reported at `path[i]`.
    fn statuses(&mut self, raw: &[i64], path: &str) -> Vec<u16> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, &s) in raw.iter().enumerate() {
            match u16::try_from(s) {
                Ok(s) if (100..=599).contains(&s) => out.push(s),
                _ => self.err(
                    &format!("{path}[{i}]"),
                    format!("must be a status between 100 and 599, got {s}"),
                ),
            }
        }
        out
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

/// What a validation may take from the last load's (see config::Loader).
pub(super) enum Reuse<'a> {
    Nothing,
    /// The listeners validated from the same listener text, when nothing they were checked
    /// against changed.
    Listeners(Arc<[Listener]>),
    /// The validated routes whose entries are unchanged, when the cluster names are the same.
    Routes(KeptRoutes<'a>),
}

/// The last load's validated routes, list by list (virtual hosts in file order), with which
/// entries of each list are unchanged since.
pub(super) struct KeptRoutes<'a> {
    lists: Vec<(&'a [Arc<Route>], Kept)>,
}

impl<'a> KeptRoutes<'a> {
    pub(super) fn new(listeners: &'a [Listener], kept: &[Kept]) -> KeptRoutes<'a> {
        let hosts = || listeners.iter().flat_map(|l| &l.virtual_hosts);
        // A list count that differs: not the lists these were counted for, nothing is kept.
        if hosts().count() != kept.len() {
            return KeptRoutes { lists: Vec::new() };
        }
        let lists = hosts().map(|v| v.routes.as_slice());
        KeptRoutes {
            lists: lists.zip(kept.iter().copied()).collect(),
        }
    }

    /// The validated route for entry `at` of route list `list` (of `len` entries), if kept.
    fn get(&self, list: usize, at: usize, len: usize) -> Option<&'a Arc<Route>> {
        let &(routes, kept) = self.lists.get(list)?;
        routes.get(kept.was_at(at, len, routes.len())?)
    }
}

/// Whether validating this route reads a file (its direct_response body): it is validated at
/// every load, the file may have changed.
pub(super) fn reads_file(r: &RawRoute) -> bool {
    (r.direct_response.as_ref())
        .and_then(|d| d.body.as_ref())
        .is_some_and(|b| b.filename.is_some())
}

/// Validates a parse, taking what `reuse` allows from the last load; with the config, how
/// many routes were taken so.
pub(super) fn validate(
    raw: &RawConfig,
    file: &str,
    reuse: Reuse<'_>,
) -> Result<(Config, usize), ConfigErrors> {
    let mut c = Checker {
        file: file.to_owned(),
        errors: Vec::new(),
    };
    let admin = raw.admin.as_ref().map(|a| Admin {
        address: c.address(&a.address, "admin.address").unwrap_or(NO_ADDR),
    });
    let workers = match &raw.workers {
        None => Workers::Auto,
        Some(RawWorkers::Text(t)) if t == "auto" => Workers::Auto,
        Some(RawWorkers::Int(n)) if (1..=1024).contains(n) => {
            Workers::Count(usize::try_from(*n).unwrap_or(1))
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
    let tracing = raw.tracing.as_ref().map(|t| {
        let address = c
            .address(&t.zipkin.collector, "tracing.zipkin.collector")
            .unwrap_or(NO_ADDR);
        let path = t
            .zipkin
            .path
            .clone()
            .unwrap_or_else(|| "/api/v2/spans".to_owned());
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            c.err(
                "tracing.zipkin.path",
                format!("{path:?} must be a path like \"/api/v2/spans\""),
            );
        }
        let sample_percent = t.sample_percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&sample_percent) {
            c.err(
                "tracing.sample_percent",
                format!("must be between 0 and 100, got {sample_percent}"),
            );
        }
        let service_name = t
            .service_name
            .clone()
            .unwrap_or_else(|| "coregate".to_owned());
        c.name(&service_name, "tracing.service_name");
        Tracing {
            collector: crate::zipkin::Collector {
                address,
                path,
                service_name,
            },
            sample_percent,
        }
    });
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
    let mut reused = 0;
    let (valid, kept) = match reuse {
        Reuse::Nothing => (None, None),
        Reuse::Listeners(valid) => (Some(valid), None),
        Reuse::Routes(kept) => (None, Some(kept)),
    };
    let listeners = match valid {
        // The same listener text, cluster names and admin address as the last valid load, and
        // no file read while validating them: the same result.
        Some(valid) => valid,
        None => {
            let routes = Routes {
                index: &cluster_index,
                known: &known,
                kept: kept.as_ref(),
                reused: &mut reused,
            };
            listeners(&mut c, raw, admin.as_ref(), routes, file).into()
        }
    };
    let clusters = (raw.clusters.iter().enumerate())
        .map(|(ci, cl)| cluster(&mut c, cl, ci, &cluster_index, file))
        .collect();

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    let file = file.to_owned();
    let config = Config {
        file,
        admin,
        workers,
        limits,
        tracing,
        listeners,
        clusters,
    };
    Ok((config, reused))
}

/// What validating routes needs: the cluster names (and the hint listing them) and the last
/// load's routes that may be taken as they are, with a count of those taken.
struct Routes<'a> {
    index: &'a HashMap<&'a str, usize>,
    known: &'a str,
    kept: Option<&'a KeptRoutes<'a>>,
    reused: &'a mut usize,
}

/// Validates the listeners: sockets, virtual hosts, routes and their references to clusters.
fn listeners(
    c: &mut Checker,
    raw: &RawConfig,
    admin: Option<&Admin>,
    checked: Routes<'_>,
    file: &str,
) -> Vec<Listener> {
    // Route lists over every listener, in file order (KeptRoutes counts them so).
    let mut list = 0;
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
            if admin.is_some_and(|ad| ad.address == a) {
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
            let routes_path = p("routes");
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
            // One path buffer for every route, and the list sized once: at 10,000 routes a
            // format! each and the list's regrowth took ~10% of a reload's validation.
            let mut routes = Vec::with_capacity(v.routes.len());
            let mut rp = routes_path.clone();
            let len = v.routes.len();
            for (ri, r) in v.routes.iter().enumerate() {
                let kept = (checked.kept)
                    .and_then(|k| k.get(list, ri, len))
                    .filter(|_| !reads_file(r));
                if let Some(kept) = kept {
                    routes.push(kept.clone());
                    *checked.reused += 1;
                    continue;
                }
                rp.truncate(routes_path.len());
                rp.push('[');
                rp.push_str(itoa::Buffer::new().format(ri));
                rp.push(']');
                routes.push(Arc::new(route(c, r, &rp, checked.index, checked.known)));
            }
            list += 1;
            let redirect_to_https = v.redirect_to_https.unwrap_or(false);
            if redirect_to_https && l.tls.is_some() {
                let why = "this listener already serves TLS; redirect_to_https is for a \
                           plaintext listener";
                c.err(&p("redirect_to_https"), why);
            }
            let name = v.name.clone();
            let header_edits = header_edits::level(
                header_edits::RawLevel {
                    request_add: &v.request_headers_to_add,
                    request_remove: &v.request_headers_to_remove,
                    response_add: &v.response_headers_to_add,
                    response_remove: &v.response_headers_to_remove,
                },
                &p(""),
                &mut |path, why| c.err(path, why),
            );
            virtual_hosts.push(VirtualHost {
                name,
                domains,
                routes,
                redirect_to_https,
                include_request_attempt_count: v.include_request_attempt_count.unwrap_or(false),
                header_edits,
            });
        }
        let http = http_options(c, l, &p);
        let mut tls = l.tls.as_ref().map(|t| listener_tls(c, t, &p("tls"), file));
        let http2 = listener_http2(c, l, tls.as_mut(), &p);
        let access_log = (l.access_log.iter().flatten().enumerate())
            .filter_map(|(i, a)| access_log(c, a, &p(&format!("access_log[{i}]")), file))
            .collect();
        let header_edits = header_edits::level(
            header_edits::RawLevel {
                request_add: &l.request_headers_to_add,
                request_remove: &l.request_headers_to_remove,
                response_add: &l.response_headers_to_add,
                response_remove: &l.response_headers_to_remove,
            },
            &p(""),
            &mut |path, why| c.err(path, why),
        );
        let (name, address) = (l.name.clone(), address.unwrap_or(NO_ADDR));
        listeners.push(Listener {
            header_edits,
            name,
            address,
            backlog,
            http,
            tls,
            http2,
            access_log,
            request_id: l.request_id.as_ref().map_or_else(Default::default, |r| {
                let d = crate::trace::RequestIdOptions::default();
                crate::trace::RequestIdOptions {
                    generate: r.generate.unwrap_or(d.generate),
                    preserve_external: r.preserve_external.unwrap_or(d.preserve_external),
                }
            }),
            virtual_hosts,
        });
    }
    listeners
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
        max_requests_per_connection: l.max_requests_per_connection.map(|v| {
            let path = p("max_requests_per_connection");
            c.int(Some(v), 1u32, 1..=i64::from(u32::MAX), &path)
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
    let (path, rules) = matchers::path_and_rules(c, m, rp);
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
    let (cluster, action) = route_action(c, r, &path, rp, index, known);
    let fwd = r.route.as_ref();
    let max_request_body_bytes = fwd.and_then(|f| f.max_request_body_bytes).map(|v| {
        let path = format!("{rp}.route.max_request_body_bytes");
        c.int(Some(v), 0u64, 0..=MAX_BODY_LIMIT, &path)
    });
    // A presented certificate is always a validated one (an invalid one fails the
    // handshake), so `presented` and `validated` say the same; both must agree when given.
    let client_certificate =
        m.tls_context
            .as_ref()
            .and_then(|t| match (t.presented, t.validated) {
                (Some(p), Some(v)) if p != v => {
                    let why = "presented and validated must agree: a client certificate that is \
                       presented is always validated (an invalid one fails the handshake)";
                    c.err(&format!("{rp}.match.tls_context"), why);
                    None
                }
                (p, v) => p.or(v),
            });
    let timeout = fwd.and_then(|f| f.timeout.as_ref()).map(|t| {
        c.dur(
            &Some(t.clone()),
            Duration::ZERO,
            &format!("{rp}.route.timeout"),
        )
    });
    let idle_timeout = fwd.and_then(|f| f.idle_timeout.as_ref()).map(|t| {
        c.dur(
            &Some(t.clone()),
            Duration::ZERO,
            &format!("{rp}.route.idle_timeout"),
        )
    });
    let retry_policy = fwd
        .and_then(|f| f.retry_policy.as_ref())
        .map(|rp_raw| Box::new(retry_policy(c, rp_raw, &format!("{rp}.route.retry_policy"))));
    let hash_policy = fwd
        .and_then(|f| f.hash_policy.as_deref())
        .map_or_else(Vec::new, |raw| {
            balance::hash_policy(c, raw, &format!("{rp}.route.hash_policy"))
        });
    let edits = header_edits::RawLevel {
        request_add: &r.request_headers_to_add,
        request_remove: &r.request_headers_to_remove,
        response_add: &r.response_headers_to_add,
        response_remove: &r.response_headers_to_remove,
    };
    let header_edits = match edits.is_unset() {
        true => None,
        false => header_edits::level(edits, &format!("{rp}."), &mut |path, why| c.err(path, why)),
    };
    Route {
        path,
        methods,
        cluster,
        max_request_body_bytes,
        timeout,
        idle_timeout,
        retry_policy,
        client_certificate,
        hash_policy,
        rules,
        name: r.name.clone(),
        action,
        header_edits,
    }
}

fn cluster(
    c: &mut Checker,
    cl: &RawCluster,
    ci: usize,
    index: &HashMap<&str, usize>,
    file: &str,
) -> Cluster {
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
    let lb_policy = balance::lb_policy(c, cl, &p);
    if cl.endpoints.is_empty() {
        c.err(&p("endpoints"), "at least one endpoint is required");
    }
    let dns = match dns_check::cluster_type(c, cl, &p("type")) {
        ClusterType::StrictDns => Some(dns_check::discovery(c, cl, ci)),
        ClusterType::Static => {
            dns_check::no_dns_keys(c, cl, ci);
            None
        }
    };
    // A strict_dns cluster's endpoints are names, resolved on the control side.
    let statics = if dns.is_some() {
        &[][..]
    } else {
        &cl.endpoints[..]
    };
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut endpoints = Vec::new();
    for (ei, e) in statics.iter().enumerate() {
        let p = |field: &str| format!("clusters[{ci}].endpoints[{ei}].{field}");
        let address = dns_check::static_address(c, &e.address, &p("address"));
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
    let protocol = match &cl.protocol {
        None => UpstreamProtocol::default(),
        Some(name) => c.one_of(name, &UpstreamProtocol::ALL, "protocol", &p("protocol")),
    };
    if protocol == UpstreamProtocol::Auto && cl.tls.is_none() {
        let why = "auto picks the protocol by ALPN, which needs tls; use http1 or http2 (h2c)";
        c.err(&p("protocol"), why);
    }
    let http2 = http2_options(c, &cl.http2_options, &p("http2_options"));
    let health_check = cl
        .health_check
        .as_ref()
        .map(|h| health_check(c, h, &cl.name, &p("health_check")));
    let panic_threshold = c.int(cl.panic_threshold, 50u8, 0..=100, &p("panic_threshold"));
    let retry_budget = cl.retry_budget.as_ref().map_or_else(Default::default, |b| {
        let d = RetryBudget::default();
        let path = format!("clusters[{ci}].retry_budget");
        let budget_centipercent = match b.budget_percent {
            None => d.budget_centipercent,
            Some(pct) if (0.0..=100.0).contains(&pct) => (pct * 100.0).round() as u32,
            Some(pct) => {
                c.err(
                    &format!("{path}.budget_percent"),
                    format!("must be between 0 and 100, got {pct}"),
                );
                d.budget_centipercent
            }
        };
        let min = format!("{path}.min_retry_concurrency");
        RetryBudget {
            budget_centipercent,
            min_retry_concurrency: c.int(
                b.min_retry_concurrency,
                d.min_retry_concurrency,
                0..=1 << 30,
                &min,
            ),
        }
    });
    let outlier_detection = cl.outlier_detection.as_ref().map(|o| {
        let d = OutlierDetection::default();
        let p = |f: &str| format!("clusters[{ci}].outlier_detection.{f}");
        let max = 1_000_000;
        OutlierDetection {
            consecutive_5xx: c.int(
                o.consecutive_5xx,
                d.consecutive_5xx,
                1..=max,
                &p("consecutive_5xx"),
            ),
            consecutive_gateway_failure: c.int(
                o.consecutive_gateway_failure,
                d.consecutive_gateway_failure,
                1..=max,
                &p("consecutive_gateway_failure"),
            ),
            base_ejection_time: c.dur(
                &o.base_ejection_time,
                d.base_ejection_time,
                &p("base_ejection_time"),
            ),
            max_ejection_time: c.dur(
                &o.max_ejection_time,
                d.max_ejection_time,
                &p("max_ejection_time"),
            ),
            max_ejection_percent: c.int(
                o.max_ejection_percent,
                d.max_ejection_percent,
                0..=100,
                &p("max_ejection_percent"),
            ),
        }
    });
    let circuit_breakers = cl
        .circuit_breakers
        .as_ref()
        .map_or_else(Default::default, |b| {
            let d = CircuitBreakers::default();
            let p = |f: &str| format!("clusters[{ci}].circuit_breakers.{f}");
            const MAX: i64 = 1 << 30;
            CircuitBreakers {
                max_connections: c.int(
                    b.max_connections,
                    d.max_connections,
                    1..=MAX,
                    &p("max_connections"),
                ),
                max_pending_requests: c.int(
                    b.max_pending_requests,
                    d.max_pending_requests,
                    1..=MAX,
                    &p("max_pending_requests"),
                ),
                max_requests: c.int(b.max_requests, d.max_requests, 1..=MAX, &p("max_requests")),
                max_retries: c.int(b.max_retries, d.max_retries, 0..=MAX, &p("max_retries")),
            }
        });
    let tls = cl
        .tls
        .as_ref()
        .map(|t| upstream_tls(c, t, protocol, &p("tls"), file));
    Cluster {
        name: cl.name.clone(),
        connect_timeout,
        response_timeout,
        send_timeout,
        idle_timeout,
        max_idle_per_core: max_idle,
        lb_policy,
        tls,
        protocol,
        http2,
        health_check,
        panic_threshold,
        circuit_breakers,
        outlier_detection,
        retry_budget,
        endpoints,
        dns,
    }
}

fn access_log(c: &mut Checker, a: &RawAccessLog, path: &str, file: &str) -> Option<AccessLog> {
    use crate::access_log::{self as log, Format};
    let target = match a.path.trim() {
        "-" => "-".to_owned(),
        p => resolve(file, p).display().to_string(),
    };
    if let Err(why) = log::check_path(&target) {
        c.err(&format!("{path}.path"), why);
    }
    let format = match (&a.format, &a.json_format) {
        (Some(_), Some(_)) => {
            c.err(path, "set `format` or `json_format`, not both");
            return None;
        }
        (Some(f), None) => match log::compile(f) {
            Ok(pieces) => Format::Text(pieces),
            Err(why) => {
                c.err(&format!("{path}.format"), why);
                return None;
            }
        },
        (None, Some(map)) => {
            let mut fields = Vec::new();
            for (key, f) in map {
                match log::compile(f) {
                    Ok(pieces) => fields.push((key.clone(), pieces)),
                    Err(why) => c.err(&format!("{path}.json_format.{key}"), why),
                }
            }
            Format::Json(fields)
        }
        (None, None) => Format::Text(log::compile(log::DEFAULT_FORMAT).unwrap_or_default()),
    };
    Some(AccessLog {
        path: target,
        format,
    })
}

/// A file named in the config: relative paths are taken from the config file's directory, so
/// that a config and its certificates move together.
fn resolve(file: &str, path: &str) -> PathBuf {
    let path = Path::new(path.trim());
    match Path::new(file).parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

const TLS_VERSIONS: [(&str, TlsVersion); 4] = [
    ("1.2", TlsVersion::Tls12),
    ("1.3", TlsVersion::Tls13),
    ("TLSv1.2", TlsVersion::Tls12),
    ("TLSv1.3", TlsVersion::Tls13),
];

const CLIENT_AUTH_MODES: [(&str, ClientAuthMode); 2] = [
    ("required", ClientAuthMode::Required),
    ("optional", ClientAuthMode::Optional),
];

/// ALPN protocol names the gateway can speak.
const ALPN_PROTOCOLS: [&str; 2] = ["h2", "http/1.1"];

fn alpn(c: &mut Checker, raw: &Option<Vec<String>>, path: &str) -> Vec<String> {
    let Some(list) = raw else {
        return Vec::new();
    };
    if list.is_empty() {
        c.err(
            path,
            "an empty list offers no protocol; omit `alpn` for http/1.1",
        );
    }
    let mut out: Vec<String> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let p = p.trim();
        let ip = format!("{path}[{i}]");
        if !ALPN_PROTOCOLS.contains(&p) {
            let why = format!(
                "unsupported protocol {p:?} (supported: {})",
                ALPN_PROTOCOLS.join(", ")
            );
            c.err(&ip, why);
        } else if out.iter().any(|o| o == p) {
            c.err(&ip, format!("duplicate {p}"));
        } else {
            out.push(p.to_owned());
        }
    }
    out
}

/// A listener's HTTP/2: on with `http2: true` or with `h2` in its TLS ALPN list. Over TLS, `h2`
/// is offered first unless the ALPN list is explicit; without `h2` ALPN offers `http/1.1`.
fn listener_http2(
    c: &mut Checker,
    l: &RawListener,
    tls: Option<&mut ListenerTls>,
    p: &dyn Fn(&str) -> String,
) -> Option<Http2Options> {
    let in_alpn = tls
        .as_ref()
        .is_some_and(|t| t.server.alpn.iter().any(|a| a == "h2"));
    let on = match l.http2 {
        Some(false) if in_alpn => {
            let why = "tls.alpn offers h2 but http2 is false: remove h2 from alpn or turn http2 on";
            c.err(&p("http2"), why);
            false
        }
        Some(on) => on || in_alpn,
        None => in_alpn,
    };
    if let Some(t) = tls
        && t.server.alpn.is_empty()
    {
        t.server.alpn = if on {
            vec!["h2".to_owned(), "http/1.1".to_owned()]
        } else {
            vec!["http/1.1".to_owned()]
        };
    }
    if !on {
        if l.http2_options.is_some() {
            c.err(&p("http2_options"), "set http2: true to use HTTP/2 options");
        }
        return None;
    }
    Some(http2_options(c, &l.http2_options, &p("http2_options")))
}

fn http2_options(c: &mut Checker, raw: &Option<RawHttp2Options>, path: &str) -> Http2Options {
    let d = Http2Options::default();
    let Some(o) = raw else { return d };
    let p = |f: &str| format!("{path}.{f}");
    // RFC 9113 §6.5.2 and §6.9.1: windows up to 2^31-1, frames between 2^14 and 2^24-1.
    const MAX_WINDOW: i64 = (1 << 31) - 1;
    let keepalive = o.connection_keepalive.as_ref().map(|k| {
        let interval = c.dur(
            &Some(k.interval.clone()),
            Duration::from_secs(30),
            &p("connection_keepalive.interval"),
        );
        let timeout = c.dur(
            &k.timeout,
            Duration::from_secs(20),
            &p("connection_keepalive.timeout"),
        );
        (interval, timeout)
    });
    Http2Options {
        max_concurrent_streams: c.int(
            o.max_concurrent_streams,
            d.max_concurrent_streams,
            1..=10_000,
            &p("max_concurrent_streams"),
        ),
        initial_stream_window_size: c.int(
            o.initial_stream_window_size,
            d.initial_stream_window_size,
            65_535..=MAX_WINDOW,
            &p("initial_stream_window_size"),
        ),
        initial_connection_window_size: c.int(
            o.initial_connection_window_size,
            d.initial_connection_window_size,
            65_535..=MAX_WINDOW,
            &p("initial_connection_window_size"),
        ),
        max_frame_size: c.int(
            o.max_frame_size,
            d.max_frame_size,
            16_384..=16_777_215,
            &p("max_frame_size"),
        ),
        max_resets_per_second: c.int(
            o.max_resets_per_second,
            d.max_resets_per_second,
            1..=1_000_000,
            &p("max_resets_per_second"),
        ),
        keepalive,
    }
}

fn retry_policy(c: &mut Checker, r: &RawRetryPolicy, path: &str) -> RetryPolicy {
    let p = |f: &str| format!("{path}.{f}");
    let mut retry_on = Vec::new();
    for (i, on) in r.retry_on.iter().enumerate() {
        retry_on.push(c.one_of(
            on,
            &RetryOn::ALL,
            "condition",
            &p(&format!("retry_on[{i}]")),
        ));
    }
    if r.retry_on.is_empty() {
        c.err(&p("retry_on"), "at least one condition is required");
    }
    let codes = r.retriable_status_codes.as_deref().unwrap_or_default();
    let retriable_status_codes = c.statuses(codes, &p("retriable_status_codes"));
    for (i, pred) in r.retry_host_predicate.iter().flatten().enumerate() {
        if pred.trim() != "previous_hosts" {
            let why = format!("unknown predicate {pred:?} (accepted: previous_hosts, the default)");
            c.err(&p(&format!("retry_host_predicate[{i}]")), why);
        }
    }
    let per_try_timeout = r.per_try_timeout.as_ref().map(|t| {
        c.dur(
            &Some(t.clone()),
            Duration::from_secs(1),
            &p("per_try_timeout"),
        )
    });
    RetryPolicy {
        retry_on,
        num_retries: c.int(r.num_retries, 1u32, 0..=10, &p("num_retries")),
        per_try_timeout,
        retriable_status_codes,
        max_retry_body_bytes: c.int(
            r.max_retry_body_bytes,
            64 * 1024u64,
            0..=16 << 20,
            &p("max_retry_body_bytes"),
        ),
    }
}

fn health_check(c: &mut Checker, h: &RawHealthCheck, cluster: &str, path: &str) -> HealthCheck {
    let p = |f: &str| format!("{path}.{f}");
    let kind = match (&h.http, &h.tcp) {
        (Some(http), None) => {
            check_path(c, &http.path, || p("http.path"));
            let host = http.host.clone().unwrap_or_else(|| cluster.to_owned());
            if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                c.err(&p("http.host"), format!("invalid host {host:?}"));
            }
            let expected_statuses = match &http.expected_statuses {
                None => vec![200],
                Some(list) if list.is_empty() => {
                    c.err(
                        &p("http.expected_statuses"),
                        "an empty list accepts nothing",
                    );
                    vec![200]
                }
                Some(list) => c.statuses(list, &p("http.expected_statuses")),
            };
            CheckKind::Http {
                path: http.path.clone(),
                host,
                expected_statuses,
            }
        }
        (None, Some(_)) => CheckKind::Tcp,
        _ => {
            c.err(path, "exactly one of `http` and `tcp` is required");
            CheckKind::Tcp
        }
    };
    let secs = Duration::from_secs;
    let interval = c.dur(&h.interval, secs(5), &p("interval"));
    let timeout = c.dur(&h.timeout, secs(1), &p("timeout"));
    if timeout > interval {
        c.err(&p("timeout"), "must not be longer than the interval");
    }
    let jitter = match &h.jitter {
        Some(j) if j.trim() == "0" || j.trim() == "0s" => Duration::ZERO,
        j => c.dur(j, Duration::ZERO, &p("jitter")),
    };
    HealthCheck {
        kind,
        interval,
        timeout,
        healthy_threshold: c.int(h.healthy_threshold, 1u32, 1..=1000, &p("healthy_threshold")),
        unhealthy_threshold: c.int(
            h.unhealthy_threshold,
            2u32,
            1..=1000,
            &p("unhealthy_threshold"),
        ),
        jitter,
    }
}

fn client_auth(c: &mut Checker, raw: &RawClientAuth, path: &str, file: &str) -> Option<ClientAuth> {
    let mode = match &raw.mode {
        None => ClientAuthMode::Required,
        Some(m) => c.one_of(m, &CLIENT_AUTH_MODES, "mode", &format!("{path}.mode")),
    };
    match tls::load_ca(&resolve(file, &raw.ca)) {
        Ok(ca) => Some(ClientAuth { ca, mode }),
        Err(why) => {
            c.err(&format!("{path}.ca"), why);
            None
        }
    }
}

fn listener_tls(c: &mut Checker, t: &RawListenerTls, path: &str, file: &str) -> ListenerTls {
    let min_version = match &t.min_version {
        None => TlsVersion::default(),
        Some(v) => c.one_of(v, &TLS_VERSIONS, "version", &format!("{path}.min_version")),
    };
    let alpn = alpn(c, &t.alpn, &format!("{path}.alpn"));
    let listener_auth = t
        .client_auth
        .as_ref()
        .and_then(|a| client_auth(c, a, &format!("{path}.client_auth"), file));
    if t.certificates.is_empty() {
        c.err(
            &format!("{path}.certificates"),
            "at least one certificate is required",
        );
    }
    let mut owner: HashMap<Domain, usize> = HashMap::new();
    let mut certificates = Vec::new();
    let mut files = Vec::new();
    for (i, raw) in t.certificates.iter().enumerate() {
        let p = |field: &str| format!("{path}.certificates[{i}].{field}");
        if raw.server_names.is_empty() {
            let why = "at least one name is required (\"*\" makes it the default certificate)";
            c.err(&p("server_names"), why);
        }
        let mut server_names = Vec::new();
        for (ni, name) in raw.server_names.iter().enumerate() {
            let np = p(&format!("server_names[{ni}]"));
            match parse_domain(name) {
                Err(why) => c.err(&np, why),
                Ok(d) => {
                    if let Some(first) = owner.insert(d.clone(), i) {
                        let why = format!("\"{d}\" is already served by certificates[{first}]");
                        c.err(&np, why);
                    }
                    server_names.push(d);
                }
            }
        }
        let auth = match &raw.client_auth {
            Some(a) => client_auth(c, a, &p("client_auth"), file),
            None => listener_auth.clone(),
        };
        let (cert, key) = (resolve(file, &raw.cert), resolve(file, &raw.key));
        match tls::load_certificate(&cert, &key) {
            Ok(certificate) => certificates.push(ServedCertificate {
                certificate,
                server_names,
                client_auth: auth,
            }),
            Err((field, why)) => c.err(&p(field), why),
        }
        files.push(cert.display().to_string());
    }
    let client_cert_header = t.client_cert_header.as_ref().and_then(|h| {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() || !h.bytes().all(is_tchar) {
            let why = format!("invalid header name {h:?}: only RFC 9110 token characters");
            c.err(&format!("{path}.client_cert_header"), why);
            return None;
        }
        Some(h)
    });
    ListenerTls {
        server: ServerSettings {
            certificates,
            min_version,
            alpn,
        },
        files,
        client_cert_header,
    }
}

fn upstream_tls(
    c: &mut Checker,
    t: &RawUpstreamTls,
    protocol: UpstreamProtocol,
    path: &str,
    file: &str,
) -> ClientSettings {
    let p = |field: &str| format!("{path}.{field}");
    let verify = t.verify.unwrap_or(true);
    let ca =
        t.ca.as_ref()
            .and_then(|ca| match tls::load_ca(&resolve(file, ca)) {
                Ok(ca) => Some(ca),
                Err(why) => {
                    c.err(&p("ca"), why);
                    None
                }
            });
    if !verify && t.ca.is_some() {
        c.err(
            &p("verify"),
            "`verify: false` ignores the `ca` given; remove one of them",
        );
    }
    let sni = t.sni.as_ref().map(|s| s.trim().to_ascii_lowercase());
    if let Some(name) = &sni
        && let Err(why) = parse_domain(name).and_then(|d| match d {
            Domain::Exact(_) => Ok(()),
            _ => Err(format!(
                "invalid server name {name:?}: a wildcard cannot be sent"
            )),
        })
    {
        c.err(&p("sni"), why);
    }
    let client_certificate = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            match tls::load_certificate(&resolve(file, cert), &resolve(file, key)) {
                Ok(certificate) => Some(certificate),
                Err(("cert", why)) => {
                    c.err(&p("client_cert"), why);
                    None
                }
                Err((_, why)) => {
                    c.err(&p("client_key"), why);
                    None
                }
            }
        }
        (Some(_), None) => {
            c.err(&p("client_key"), "client_cert needs its client_key");
            None
        }
        (None, Some(_)) => {
            c.err(&p("client_cert"), "client_key needs its client_cert");
            None
        }
    };
    ClientSettings {
        sni,
        ca,
        verify,
        client_certificate,
        alpn: upstream_alpn(c, &t.alpn, protocol, &p("alpn")),
    }
}

/// What a cluster offers in ALPN: by default what its protocol allows (`h2`, `http/1.1` or both,
/// `h2` first); an explicit list must agree with the protocol.
fn upstream_alpn(
    c: &mut Checker,
    raw: &Option<Vec<String>>,
    protocol: UpstreamProtocol,
    path: &str,
) -> Vec<String> {
    let list = alpn(c, raw, path);
    let has_h2 = list.iter().any(|a| a == "h2");
    let has_h1 = list.iter().any(|a| a == "http/1.1");
    match protocol {
        _ if list.is_empty() => match protocol {
            UpstreamProtocol::Http1 => vec!["http/1.1".to_owned()],
            UpstreamProtocol::Http2 => vec!["h2".to_owned()],
            UpstreamProtocol::Auto => vec!["h2".to_owned(), "http/1.1".to_owned()],
        },
        UpstreamProtocol::Http1 if has_h2 => {
            c.err(path, "h2 is offered but the cluster's protocol is http1");
            list
        }
        UpstreamProtocol::Http2 if has_h1 || !has_h2 => {
            c.err(path, "the cluster's protocol is http2: offer h2 alone");
            list
        }
        _ => list,
    }
}

/// `path` is called only for an error (most routes have none).
fn check_path(c: &mut Checker, p: &str, path: impl FnOnce() -> String) {
    if !p.starts_with('/') {
        c.err(&path(), format!("{p:?} must start with '/'"));
    } else if p.bytes().any(|b| !b.is_ascii_graphic()) {
        // A request-target never carries these, so the route could never match.
        let why = format!("{p:?} has spaces or non-ASCII characters; percent-encode them");
        c.err(&path(), why);
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

// ---------------------------------------------------------------- route actions

/// A cluster named by a route: its index, or an error at `path` naming the known ones.
/// `path` is called only for an error.
fn cluster_ref(
    c: &mut Checker,
    name: &str,
    path: impl FnOnce() -> String,
    index: &HashMap<&str, usize>,
    known: &str,
) -> usize {
    index.get(name).copied().unwrap_or_else(|| {
        let why = match known {
            "" => format!("unknown cluster {name:?} (no clusters are defined)"),
            _ => format!("unknown cluster {name:?} (known: {known})"),
        };
        c.err(&path(), why);
        0
    })
}

/// A route's action (Envoy's `route`, `redirect` or `direct_response`, exactly one), and the
/// cluster it forwards to (the first weighted one; `NO_CLUSTER` when it answers itself).
fn route_action(
    c: &mut Checker,
    r: &RawRoute,
    matched: &PathMatch,
    rp: &str,
    index: &HashMap<&str, usize>,
    known: &str,
) -> (usize, Action) {
    use crate::action::NO_CLUSTER;
    if let Some(name) = &r.name
        && (name.trim().is_empty() || name.bytes().any(|b| b.is_ascii_control()))
    {
        c.err(
            &format!("{rp}.name"),
            "must not be empty or hold control characters",
        );
    }
    match (&r.route, &r.redirect, &r.direct_response) {
        (Some(f), None, None) => forward(c, f, matched, rp, index, known),
        (None, Some(red), None) => {
            let action = redirect(c, red, matched, &format!("{rp}.redirect"));
            (NO_CLUSTER, Action::Redirect(action))
        }
        (None, None, Some(d)) => {
            let action = direct_response(c, d, &format!("{rp}.direct_response"));
            (NO_CLUSTER, Action::DirectResponse(action))
        }
        _ => {
            let why = "set exactly one of `route`, `redirect` or `direct_response`";
            c.err(rp, why);
            (0, Action::default())
        }
    }
}

/// `route`: one cluster or weighted clusters, and the rewrites.
fn forward(
    c: &mut Checker,
    f: &RawRouteAction,
    matched: &PathMatch,
    rp: &str,
    index: &HashMap<&str, usize>,
    known: &str,
) -> (usize, Action) {
    use crate::action::{HostRewrite, Rewrite, WeightedClusters};
    // Formatted only for an error or a rewrite (most routes have neither).
    let path = || format!("{rp}.route");
    let p = |field: &str| format!("{rp}.route.{field}");
    let (cluster, weighted) = match (&f.cluster, &f.weighted_clusters) {
        (Some(name), None) => (cluster_ref(c, name, || p("cluster"), index, known), None),
        (None, Some(w)) => {
            let mut clusters = Vec::new();
            if w.clusters.is_empty() {
                c.err(
                    &p("weighted_clusters.clusters"),
                    "at least one cluster is required",
                );
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, wc) in w.clusters.iter().enumerate() {
                let wp = p(&format!("weighted_clusters.clusters[{i}]"));
                let ci = cluster_ref(c, &wc.name, || format!("{wp}.name"), index, known);
                if let Some(first) = seen.insert(wc.name.as_str(), i) {
                    let why = format!("duplicate cluster {:?} (see clusters[{first}])", wc.name);
                    c.err(&format!("{wp}.name"), why);
                }
                let weight = match wc.weight {
                    None => {
                        c.err(&format!("{wp}.weight"), "a weight is required");
                        0
                    }
                    Some(v) => c.int(Some(v), 0u32, 0..=1_000_000, &format!("{wp}.weight")),
                };
                clusters.push((ci, weight));
            }
            let sum: u64 = clusters.iter().map(|&(_, w)| u64::from(w)).sum();
            if !w.clusters.is_empty() && sum == 0 {
                c.err(
                    &p("weighted_clusters"),
                    "the weights add up to 0: nothing takes traffic",
                );
            }
            if let Some(total) = w.total_weight
                && u64::try_from(total).ok() != Some(sum)
            {
                let why = format!("must equal the sum of the weights ({sum}), got {total}");
                c.err(&p("weighted_clusters.total_weight"), why);
            }
            let first = clusters.first().map_or(0, |&(ci, _)| ci);
            (first, Some(WeightedClusters { clusters }))
        }
        (Some(_), Some(_)) => {
            c.err(&path(), "set `cluster` or `weighted_clusters`, not both");
            (0, None)
        }
        (None, None) => {
            c.err(&path(), "set `cluster` or `weighted_clusters`");
            (0, None)
        }
    };
    let path_rewrite = match (&f.prefix_rewrite, &f.regex_rewrite) {
        (None, None) => None,
        _ => path_rewrite(c, &f.prefix_rewrite, &f.regex_rewrite, matched, &path()),
    };
    let host = match (&f.host_rewrite_literal, f.auto_host_rewrite) {
        (Some(_), Some(true)) => {
            let why = "set `host_rewrite_literal` or `auto_host_rewrite`, not both";
            c.err(&path(), why);
            HostRewrite::Keep
        }
        (Some(h), _) => {
            check_host(c, h, &p("host_rewrite_literal"));
            HostRewrite::Literal(h.trim().to_owned())
        }
        (None, Some(true)) => HostRewrite::Auto,
        (None, _) => HostRewrite::Keep,
    };
    let rewrite = Rewrite {
        path: path_rewrite,
        host,
    };
    (cluster, Action::Forward { weighted, rewrite })
}

/// `prefix_rewrite` or `regex_rewrite` (not both), as a route's or a redirect's.
fn path_rewrite(
    c: &mut Checker,
    prefix: &Option<String>,
    regex: &Option<RawRegexRewrite>,
    matched: &PathMatch,
    path: &str,
) -> Option<crate::action::PathRewrite> {
    use crate::action::{PathRewrite, RegexRewrite, is_path_byte};
    match (prefix, regex) {
        (Some(_), Some(_)) => {
            c.err(path, "set `prefix_rewrite` or `regex_rewrite`, not both");
            None
        }
        (Some(with), None) => {
            let fp = format!("{path}.prefix_rewrite");
            // Replacing a route prefix "/api" of the request "/api" must still leave a path.
            if !with.starts_with('/') {
                c.err(&fp, format!("{with:?} must start with '/'"));
            } else if !with.bytes().all(is_path_byte) {
                let why = format!("{with:?} has spaces, controls, '?' or '#'");
                c.err(&fp, why);
            }
            // The bytes the match covers: the prefix (the same length when matched without
            // case), or the whole path (exact or regex: past the end, nothing is kept).
            let matched = match matched {
                PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::SeparatedPrefix(p) => {
                    p.len()
                }
                PathMatch::Regex(_) => usize::MAX,
            };
            Some(PathRewrite::Prefix {
                matched,
                with: with.clone(),
            })
        }
        (None, Some(r)) => match RegexRewrite::new(&r.pattern.regex, &r.substitution) {
            Ok(rw) => Some(PathRewrite::Regex(rw)),
            Err((field, why)) => {
                c.err(&format!("{path}.regex_rewrite.{field}"), why);
                None
            }
        },
        (None, None) => None,
    }
}

/// A Host value set by the config: a name or address, with an optional port.
fn check_host(c: &mut Checker, h: &str, path: &str) {
    let h = h.trim();
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._:[]~%".contains(&b);
    if h.is_empty() || !h.bytes().all(ok) {
        c.err(
            path,
            format!("invalid host {h:?}: expected a host name or address, with an optional :PORT"),
        );
    }
}

/// `redirect` (Envoy's RedirectAction).
fn redirect(
    c: &mut Checker,
    r: &RawRedirect,
    matched: &PathMatch,
    path: &str,
) -> crate::action::Redirect {
    use crate::action::{REDIRECT_CODES, Redirect, RedirectPath};
    let p = |field: &str| format!("{path}.{field}");
    let scheme = match (&r.scheme_redirect, r.https_redirect) {
        (Some(_), Some(true)) => {
            c.err(path, "set `scheme_redirect` or `https_redirect`, not both");
            None
        }
        (Some(s), _) => {
            let s = s.trim().to_ascii_lowercase();
            let ok = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if !ok {
                c.err(&p("scheme_redirect"), format!("invalid scheme {s:?}"));
            }
            Some(s)
        }
        (None, Some(true)) => Some("https".to_owned()),
        (None, _) => None,
    };
    if let Some(h) = &r.host_redirect {
        check_host(c, h, &p("host_redirect"));
    }
    let port = r
        .port_redirect
        .map(|v| c.int(Some(v), 80u16, 1..=65535, &p("port_redirect")));
    let set = [
        r.path_redirect.is_some(),
        r.prefix_rewrite.is_some(),
        r.regex_rewrite.is_some(),
    ];
    let path_kind = if set.iter().filter(|&&b| b).count() > 1 {
        let why = "set one of `path_redirect`, `prefix_rewrite` or `regex_rewrite`";
        c.err(path, why);
        RedirectPath::Keep
    } else if let Some(to) = &r.path_redirect {
        // A query of its own is allowed (and kept even with strip_query, as Envoy does).
        let (to_path, to_query) = to.split_once('?').unwrap_or((to, ""));
        let bad = |s: &str| s.bytes().any(|b| !b.is_ascii_graphic() || b == b'#');
        if !to_path.starts_with('/') || bad(to_path) || bad(to_query) {
            let why = format!("{to:?} must be a path starting with '/', without spaces or '#'");
            c.err(&p("path_redirect"), why);
        }
        RedirectPath::Replace(to.clone())
    } else {
        match path_rewrite(c, &r.prefix_rewrite, &r.regex_rewrite, matched, path) {
            Some(rw) => RedirectPath::Rewrite(rw),
            None => RedirectPath::Keep,
        }
    };
    let codes: Vec<String> = REDIRECT_CODES
        .iter()
        .map(|(n, s)| format!("{n} ({s})"))
        .collect();
    let status = match &r.response_code {
        None => 301,
        Some(code) => {
            let found = match code {
                RawScalar::Int(n) => REDIRECT_CODES.iter().find(|(_, s)| i64::from(*s) == *n),
                RawScalar::Text(t) => REDIRECT_CODES.iter().find(|(n, _)| *n == t.trim()),
            };
            match found {
                Some(&(_, s)) => s,
                None => {
                    let got = match code {
                        RawScalar::Int(n) => n.to_string(),
                        RawScalar::Text(t) => format!("{t:?}"),
                    };
                    let why = format!(
                        "unknown response code {got} (accepted: {})",
                        codes.join(", ")
                    );
                    c.err(&p("response_code"), why);
                    301
                }
            }
        }
    };
    Redirect {
        scheme,
        host: r.host_redirect.as_ref().map(|h| h.trim().to_owned()),
        port,
        path: path_kind,
        strip_query: r.strip_query.unwrap_or(false),
        status,
    }
}

/// `direct_response`: a status (200-599) and an optional body, inline or from a file read now.
fn direct_response(
    c: &mut Checker,
    d: &RawDirectResponse,
    path: &str,
) -> crate::action::DirectResponse {
    use crate::action::{DirectResponse, MAX_DIRECT_BODY};
    let p = |field: &str| format!("{path}.{field}");
    let status = match d.status {
        None => {
            c.err(&p("status"), "a status is required");
            200
        }
        Some(v) => c.int(Some(v), 200u16, 200..=599, &p("status")),
    };
    let mut filename = None;
    let body = d.body.as_ref().and_then(|b| {
        let (bytes, field) = match (&b.inline_string, &b.filename) {
            (Some(s), None) => (s.as_bytes().to_vec(), "body.inline_string"),
            (None, Some(f)) => {
                let file = resolve(&c.file, f);
                filename = Some(file.display().to_string());
                match std::fs::read(&file) {
                    Ok(bytes) => (bytes, "body.filename"),
                    Err(e) => {
                        let why = format!("cannot read {}: {e}", file.display());
                        c.err(&p("body.filename"), why);
                        return None;
                    }
                }
            }
            _ => {
                c.err(
                    &p("body"),
                    "set exactly one of `inline_string` or `filename`",
                );
                return None;
            }
        };
        if bytes.len() > MAX_DIRECT_BODY {
            let why = format!(
                "the body is {} bytes; at most {MAX_DIRECT_BODY} are allowed",
                bytes.len()
            );
            c.err(&p(field), why);
            return None;
        }
        Some(bytes.into_boxed_slice())
    });
    DirectResponse {
        status,
        body,
        filename,
    }
}
