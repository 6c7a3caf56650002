//! The config file: YAML types (serde), then validate() collecting every error with its field path, into a validated Config.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
    pub listeners: Vec<Listener>,
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
            drain_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub backlog: u32,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<Domain>,
    pub routes: Vec<Route>,
}

/// Stored lowercased; `Suffix` keeps its leading dot so matching is a plain `ends_with`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    Exact(String),
    Suffix(String),
    Any,
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Exact(d) => f.write_str(d),
            Domain::Suffix(s) => write!(f, "*{s}"),
            Domain::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    /// `None` matches any method.
    pub methods: Option<Vec<http::Method>>,
    /// Index into `Config::clusters`.
    pub cluster: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) => write!(f, "prefix {p}"),
            PathMatch::Exact(p) => write!(f, "path {p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub connect_timeout: Duration,
    /// Wait for the upstream response head once the request is sent.
    pub response_timeout: Duration,
    /// Lifetime of a pooled idle upstream connection.
    pub idle_timeout: Duration,
    /// 0 disables pooling.
    pub max_idle_per_core: usize,
    pub lb_policy: LbPolicy,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    #[default]
    WeightedRoundRobin,
}

impl LbPolicy {
    const ALL: [(&'static str, LbPolicy); 1] =
        [("weighted_round_robin", LbPolicy::WeightedRoundRobin)];

    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::WeightedRoundRobin => "weighted_round_robin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
}

// ---------------------------------------------------------------- raw (serde) types
// Anything validate() can judge (durations, addresses, numbers with ranges) is kept in a
// type serde cannot reject, so one bad value does not hide every error after it.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    admin: Option<RawAdmin>,
    workers: Option<RawWorkers>,
    limits: Option<RawLimits>,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    clusters: Vec<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: String,
}

enum RawWorkers {
    Int(i128),
    Text(String),
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawWorkers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or an integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Text(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_head_bytes: Option<i64>,
    max_headers: Option<i64>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_timeout: Option<String>,
    drain_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    address: String,
    backlog: Option<i64>,
    #[serde(default)]
    virtual_hosts: Vec<RawVirtualHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualHost {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matcher: RawMatch,
    route: RawRouteAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    prefix: Option<String>,
    path: Option<String>,
    methods: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteAction {
    cluster: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_idle_per_core: Option<i64>,
    lb_policy: Option<String>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: String,
    weight: Option<i64>,
}

// ---------------------------------------------------------------- load / parse

pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            path: String::new(),
            reason: format!("cannot read file: {e}"),
        }])),
    }
}

pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let raw = parse_raw(text).map_err(|(path, reason)| {
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            path,
            reason,
        }])
    })?;
    validate(raw, file)
}

/// Returns (field path, reason). With yaml_reason, the only code that knows the YAML library.
fn parse_raw(text: &str) -> Result<RawConfig, (String, String)> {
    // An untyped pass first: serde would accept an empty file as "all defaults" and word a
    // non-mapping top level confusingly, while neither deserves more than one clear line.
    let untyped = serde_yaml::from_str::<serde_yaml::Value>(text);
    match &untyped {
        Ok(serde_yaml::Value::Null) => {
            let why = "the file is empty; expected a mapping with `listeners` and `clusters`";
            return Err((String::new(), why.to_owned()));
        }
        Ok(serde_yaml::Value::Mapping(_)) | Err(_) => {}
        Ok(other) => {
            let found = match other {
                serde_yaml::Value::Sequence(_) => "a list",
                serde_yaml::Value::Tagged(_) => "a tagged value",
                _ => "a scalar",
            };
            let why =
                format!("the top level must be a mapping (`key: value` lines), found {found}");
            return Err((String::new(), why));
        }
    }
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, RawConfig>(de) {
        Ok(raw) => match untyped {
            // Only the untyped pass failed (e.g. several documents): its error still stands.
            Err(e) => Err((String::new(), yaml_reason(&e, &[]))),
            Ok(_) => Ok(raw),
        },
        Err(e) => {
            let mut segments: Vec<String> = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            for seg in e.path().iter() {
                let is_seq = matches!(seg, serde_path_to_error::Segment::Seq { .. });
                let sep = if segments.is_empty() || is_seq {
                    ""
                } else {
                    "."
                };
                segments.push(format!("{sep}{seg}"));
                prefixes.push(segments.concat());
            }
            let reason = yaml_reason(e.inner(), &prefixes);
            // An unknown key is reported at the mapping holding it: the key itself is not a
            // valid path, and the reason names it anyway.
            if reason.starts_with("unknown field `") {
                segments.pop();
            }
            Err((segments.concat(), reason))
        }
    }
}

/// serde_yaml's message minus its own path prefix, with the position as "(line L, column C)".
fn yaml_reason(e: &serde_yaml::Error, path_prefixes: &[String]) -> String {
    let mut msg = e.to_string();
    for p in path_prefixes.iter().rev() {
        if let Some(rest) = msg.strip_prefix(&format!("{p}: ")) {
            msg = rest.to_owned();
            break;
        }
    }
    if let Some(loc) = e.location() {
        let (line, column) = (loc.line(), loc.column());
        msg = msg.replace(&format!(" at line {line} column {column}"), "");
        msg = format!("{msg} (line {line}, column {column})");
    }
    msg
}

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

fn validate(raw: RawConfig, file: &str) -> Result<Config, ConfigErrors> {
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
        let (name, address) = (l.name.clone(), address.unwrap_or(NO_ADDR));
        listeners.push(Listener {
            name,
            address,
            backlog,
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
    Route {
        path,
        methods,
        cluster,
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
    let idle_timeout = c.dur(&cl.idle_timeout, secs(60), &p("idle_timeout"));
    let max_idle = &p("max_idle_per_core");
    let max_idle = c.int(cl.max_idle_per_core, 128usize, 0..=65536, max_idle);
    let lb_policy = match &cl.lb_policy {
        None => LbPolicy::default(),
        Some(name) => LbPolicy::ALL.iter().find(|(n, _)| n == name).map_or_else(
            || {
                let accepted: Vec<&str> = LbPolicy::ALL.iter().map(|(n, _)| *n).collect();
                let accepted = accepted.join(", ");
                let why = format!("unknown policy {name:?} (accepted: {accepted})");
                c.err(&p("lb_policy"), why);
                LbPolicy::default()
            },
            |&(_, policy)| policy,
        ),
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

fn parse_domain(raw: &str) -> Result<Domain, String> {
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

fn parse_method(raw: &str) -> Result<http::Method, String> {
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

// ---------------------------------------------------------------- summary

impl Config {
    /// One screen for `coregate check`.
    pub fn summary(&self) -> String {
        Summary(self).to_string()
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
            "limits: head {} B, {} headers, header {}, idle {}, body {}, drain {}",
            l.max_request_head_bytes,
            l.max_headers,
            hd(l.header_timeout),
            hd(l.idle_timeout),
            hd(l.body_timeout),
            hd(l.drain_timeout)
        )?;
        for lis in &c.listeners {
            writeln!(
                f,
                "listener {} on {} (backlog {})",
                lis.name, lis.address, lis.backlog
            )?;
            for v in &lis.virtual_hosts {
                let domains: Vec<String> = v.domains.iter().map(Domain::to_string).collect();
                writeln!(f, "  vhost {}: {}", v.name, domains.join(", "))?;
                for r in &v.routes {
                    let methods = match &r.methods {
                        None => "*".to_owned(),
                        Some(ms) => ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
                    };
                    let cluster = c.clusters.get(r.cluster).map_or("?", |cl| cl.name.as_str());
                    writeln!(f, "    {methods} {} -> {cluster}", r.path)?;
                }
            }
        }
        for cl in &c.clusters {
            writeln!(
                f,
                "cluster {} ({}): connect {}, response {}, idle {}, max idle/core {}",
                cl.name,
                cl.lb_policy.name(),
                hd(cl.connect_timeout),
                hd(cl.response_timeout),
                hd(cl.idle_timeout),
                cl.max_idle_per_core
            )?;
            for e in &cl.endpoints {
                writeln!(f, "  {} weight {}", e.address, e.weight)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
admin: { address: 127.0.0.1:9901 }
workers: auto
limits: { max_request_head_bytes: 65536, max_headers: 100, header_timeout: 10s, idle_timeout: 60s, body_timeout: 60s, drain_timeout: 30s }
listeners:
  - name: ingress
    address: 0.0.0.0:10000
    backlog: 1024
    virtual_hosts:
      - name: bill
        domains: ["bill.example.com", "*.bill.example.com", "*"]
        routes:
          - match: { prefix: "/api/", methods: [GET, POST] }
            route: { cluster: bill_api }
          - match: { path: "/healthz" }
            route: { cluster: bill_web }
clusters:
  - name: bill_api
    connect_timeout: 250ms
    response_timeout: 15s
    idle_timeout: 60s
    max_idle_per_core: 128
    lb_policy: weighted_round_robin
    endpoints:
      - { address: 127.0.0.1:9001, weight: 3 }
      - { address: 127.0.0.1:9002 }
  - name: bill_web
    endpoints: [{ address: "[::1]:9003" }]
"#;

    const BASE: &str = r#"
listeners:
  - name: l
    address: 127.0.0.1:10000
    virtual_hosts:
      - name: v
        domains: ["a.example.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: c }
clusters:
  - name: c
    endpoints:
      - { address: 127.0.0.1:9001 }
"#;

    fn errs(yaml: &str) -> Vec<ConfigError> {
        parse(yaml, "t.yaml").unwrap_err().0
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn full_example_parses() {
        let c = parse(FULL, "gw.yaml").unwrap();
        assert_eq!(c.file, "gw.yaml");
        assert_eq!(
            c.admin,
            Some(Admin {
                address: addr("127.0.0.1:9901")
            })
        );
        assert_eq!(c.workers, Workers::Auto);
        assert_eq!(c.limits, Limits::default());
        let l = &c.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.address, l.backlog),
            ("ingress", addr("0.0.0.0:10000"), 1024)
        );
        let v = &l.virtual_hosts[0];
        assert_eq!(v.name, "bill");
        let want = [
            Domain::Exact("bill.example.com".into()),
            Domain::Suffix(".bill.example.com".into()),
            Domain::Any,
        ];
        assert_eq!(v.domains, want);
        let r0 = Route {
            path: PathMatch::Prefix("/api/".into()),
            methods: Some(vec![http::Method::GET, http::Method::POST]),
            cluster: 0,
        };
        let r1 = Route {
            path: PathMatch::Exact("/healthz".into()),
            methods: None,
            cluster: 1,
        };
        assert_eq!(v.routes, [r0, r1]);
        let api = &c.clusters[0];
        assert_eq!(api.name, "bill_api");
        assert_eq!(api.connect_timeout, Duration::from_millis(250));
        assert_eq!(api.response_timeout, Duration::from_secs(15));
        assert_eq!(api.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            (api.max_idle_per_core, api.lb_policy),
            (128, LbPolicy::WeightedRoundRobin)
        );
        let eps = [
            Endpoint {
                address: addr("127.0.0.1:9001"),
                weight: 3,
            },
            Endpoint {
                address: addr("127.0.0.1:9002"),
                weight: 1,
            },
        ];
        assert_eq!(api.endpoints, eps);
        assert_eq!(c.clusters[1].endpoints[0].address, addr("[::1]:9003"));
    }

    #[test]
    fn defaults_apply_when_omitted() {
        let c = parse(BASE, "t.yaml").unwrap();
        assert_eq!(
            (c.admin, c.workers, c.limits),
            (None, Workers::Auto, Limits::default())
        );
        assert_eq!(c.listeners[0].backlog, 1024);
        let cl = &c.clusters[0];
        let secs = Duration::from_secs;
        assert_eq!(
            (cl.connect_timeout, cl.response_timeout, cl.idle_timeout),
            (secs(1), secs(15), secs(60))
        );
        assert_eq!(
            (cl.max_idle_per_core, cl.lb_policy),
            (128, LbPolicy::WeightedRoundRobin)
        );
        assert_eq!(cl.endpoints[0].weight, 1);
        let with = parse(
            &format!("{BASE}workers: 8\nlimits: {{ max_headers: 50, drain_timeout: 1m }}\n"),
            "t",
        );
        let with = with.unwrap();
        assert_eq!(with.workers, Workers::Count(8));
        assert_eq!(
            (with.limits.max_headers, with.limits.drain_timeout),
            (50, secs(60))
        );
        assert_eq!(with.limits.header_timeout, secs(10));
    }

    /// One case a line: `from | to | path | reason substring`. `to` replaces the first `from`
    /// in BASE (`+` appends to it); `\n` is a newline. Each case must yield exactly one error.
    const CASES: &str = r#"
cluster: c } | cluster: cx } | listeners[0].virtual_hosts[0].routes[0].route.cluster | unknown cluster "cx" (known: c)
9001 } | 9001, weight: 0 } | clusters[0].endpoints[0].weight | must be between 1 and 1000000, got 0
9001 } | 9001, weight: -3 } | clusters[0].endpoints[0].weight | got -3
9001 } | 9001, weight: 1000001 } | clusters[0].endpoints[0].weight | got 1000001
9001 } | 9001 }\n      - { address: 127.0.0.1:9001 } | clusters[0].endpoints[1].address | duplicate endpoint 127.0.0.1:9001
9001 } | 0 } | clusters[0].endpoints[0].address | port 0
address: 127.0.0.1:9001 | address: localhost:9001 | clusters[0].endpoints[0].address | (no DNS names)
endpoints:\n      - { address: 127.0.0.1:9001 } | endpoints: [] | clusters[0].endpoints | at least one endpoint
- name: c\n | - name: c\n    connect_timeout: 5\n | clusters[0].connect_timeout | invalid duration "5"
- name: c\n | - name: c\n    response_timeout: 0s\n | clusters[0].response_timeout | must be greater than zero
- name: c\n | - name: c\n    idle_timeout: soon\n | clusters[0].idle_timeout | invalid duration "soon"
- name: c\n | - name: c\n    max_idle_per_core: 65537\n | clusters[0].max_idle_per_core | between 0 and 65536
- name: c\n | - name: c\n    max_idle_per_core: -1\n | clusters[0].max_idle_per_core | got -1
- name: c\n | - name: c\n    lb_policy: random\n | clusters[0].lb_policy | unknown policy "random" (accepted: weighted_round_robin)
+ |   - { name: c, endpoints: [{ address: 127.0.0.1:1 }] }\n | clusters[1].name | duplicate cluster name "c"
:10000\n | \n | listeners[0].address | invalid address "127.0.0.1"
:10000\n | :10000\n    backlog: 0\n | listeners[0].backlog | between 1 and 65535, got 0
:10000\n | :10000\n    backlog: 70000\n | listeners[0].backlog | got 70000
- name: l\n | - name: ""\n | listeners[0].name | must not be empty
- name: v\n | - name: " "\n | listeners[0].virtual_hosts[0].name | must not be empty
domains: ["a.example.com"] | domains: [] | listeners[0].virtual_hosts[0].domains | at least one domain
a.example.com | a.example.com:8080 | listeners[0].virtual_hosts[0].domains[0] | remove ':PORT'
a.example.com | foo.* | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
a.example.com | *foo.com | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
a.example.com | a.*.com | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
"a.example.com" | "" | listeners[0].virtual_hosts[0].domains[0] | invalid domain "": empty
a.example.com | a_b.com | listeners[0].virtual_hosts[0].domains[0] | only letters, digits
a.example.com | a..com | listeners[0].virtual_hosts[0].domains[0] | empty label
a.example.com | [::1] | listeners[0].virtual_hosts[0].domains[0] | IPv6
a.example.com" | a.example.com", "A.Example.COM" | listeners[0].virtual_hosts[0].domains[1] | "a.example.com" is already used by virtual host "v"
{ prefix: "/" } | { } | listeners[0].virtual_hosts[0].routes[0].match | set exactly one of `prefix`
{ prefix: "/" } | { prefix: "/", path: "/x" } | listeners[0].virtual_hosts[0].routes[0].match | set exactly one of `prefix`
{ prefix: "/" } | { prefix: "api" } | listeners[0].virtual_hosts[0].routes[0].match.prefix | "api" must start with '/'
{ prefix: "/" } | { path: "x" } | listeners[0].virtual_hosts[0].routes[0].match.path | must start with '/'
{ prefix: "/" } | { path: "/a b" } | listeners[0].virtual_hosts[0].routes[0].match.path | percent-encode
{ prefix: "/" } | { prefix: "/", methods: [] } | listeners[0].virtual_hosts[0].routes[0].match.methods | omit `methods`
{ prefix: "/" } | { prefix: "/", methods: [GET, ""] } | listeners[0].virtual_hosts[0].routes[0].match.methods[1] | empty method
{ prefix: "/" } | { prefix: "/", methods: ["GE T"] } | listeners[0].virtual_hosts[0].routes[0].match.methods[0] | token characters
{ prefix: "/" } | { prefix: "/", methods: [get] } | listeners[0].virtual_hosts[0].routes[0].match.methods[0] | use GET
{ prefix: "/" } | { prefix: "/", methods: [GET, GET] } | listeners[0].virtual_hosts[0].routes[0].match.methods[1] | duplicate GET
+ | workers: 0\n | workers | must be `auto` or 1..=1024, got 0
+ | workers: 1025\n | workers | got 1025
+ | workers: many\n | workers | got "many"
+ | workers: 2.5\n | workers | got "2.5"
+ | admin: { address: nope }\n | admin.address | invalid address "nope"
+ | admin: { address: 127.0.0.1:10000 }\n | listeners[0].address | already used by admin.address
+ | limits: { max_request_head_bytes: 1023 }\n | limits.max_request_head_bytes | between 1024 and 1048576
+ | limits: { max_headers: 0 }\n | limits.max_headers | between 1 and 1024
+ | limits: { header_timeout: 0ms }\n | limits.header_timeout | greater than zero
+ | limits: { idle_timeout: 10 }\n | limits.idle_timeout | invalid duration "10"
+ | limits: { body_timeout: 1x }\n | limits.body_timeout | invalid duration
+ | limits: { drain_timeout: "" }\n | limits.drain_timeout | invalid duration
"#;

    #[test]
    fn each_error_class_has_its_exact_path() {
        for case in CASES.lines().filter(|l| !l.is_empty()) {
            let f: Vec<String> = case.split(" | ").map(|f| f.replace("\\n", "\n")).collect();
            let [from, to, path, reason] = &f[..] else {
                panic!("bad case {case}")
            };
            let yaml = match from.as_str() {
                "+" => format!("{BASE}{to}"),
                _ => BASE.replacen(from.as_str(), to, 1),
            };
            assert_ne!(yaml, BASE, "{case}");
            let e = errs(&yaml);
            assert_eq!(e.len(), 1, "{case}: {e:?}");
            assert_eq!(e[0].path, *path, "{case}: {e:?}");
            assert!(
                e[0].reason.contains(reason.as_str()),
                "{case}: {:?}",
                e[0].reason
            );
        }
    }

    #[test]
    fn several_errors_are_all_reported_in_order() {
        let yaml = r#"
workers: 0
limits: { header_timeout: 0s, max_headers: 5000 }
listeners:
  - name: a
    address: 127.0.0.1:80
    virtual_hosts:
      - name: v
        domains: ["*", "x.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: bill_apix }
      - name: v
        domains: ["*", "X.com:80"]
  - name: a
    address: 127.0.0.1:80
    virtual_hosts: []
clusters:
  - { name: bill_api, endpoints: [{ address: 10.0.0.1:1, weight: 0 }] }
  - { name: bill_web, endpoints: [] }
  - { name: bill_api, endpoints: [{ address: host:1 }, { address: 10.0.0.1:2, weight: 2000000 }] }
"#;
        let e = errs(yaml);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        let want = [
            "workers",
            "limits.max_headers",
            "limits.header_timeout",
            "listeners[0].virtual_hosts[0].routes[0].route.cluster",
            "listeners[0].virtual_hosts[1].name",
            "listeners[0].virtual_hosts[1].domains[0]",
            "listeners[0].virtual_hosts[1].domains[1]",
            "listeners[1].name",
            "listeners[1].address",
            "listeners[1].virtual_hosts",
            "clusters[0].endpoints[0].weight",
            "clusters[1].endpoints",
            "clusters[2].name",
            "clusters[2].endpoints[0].address",
            "clusters[2].endpoints[1].weight",
        ];
        assert_eq!(paths, want, "{e:#?}");
        assert_eq!(
            e[3].reason,
            r#"unknown cluster "bill_apix" (known: bill_api, bill_web)"#
        );
        assert_eq!(e[5].reason, r#""*" is already used by virtual host "v""#);
        assert!(e[6].reason.contains("remove ':PORT'"));
    }

    #[test]
    fn no_listeners_and_no_clusters() {
        let e = errs("workers: auto\n");
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].path.as_str(), e[0].reason.as_str()),
            ("listeners", "at least one listener is required")
        );
        let e = errs(&BASE.replace(
            "clusters:\n  - name: c\n    endpoints:\n      - { address: 127.0.0.1:9001 }\n",
            "",
        ));
        assert_eq!(
            e[0].reason,
            r#"unknown cluster "c" (no clusters are defined)"#
        );
    }

    #[test]
    fn unknown_key_reports_the_mapping_path_and_position() {
        let e = errs(&BASE.replace("9001 }", "9001, weigth: 3 }"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "clusters[0].endpoints[0]");
        let want = "unknown field `weigth`, expected `address` or `weight` (line 14, column 36)";
        assert_eq!(e[0].reason, want);
        let e = errs(&format!("{BASE}extra: 1\n"));
        assert_eq!(e[0].path, "");
        assert!(
            e[0].reason
                .starts_with("unknown field `extra`, expected one of"),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_type_and_missing_field_report_their_path() {
        let e = errs(&BASE.replace(
            "    address: 127.0.0.1:10000\n",
            "    address: 127.0.0.1:10000\n    backlog: lots\n",
        ));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "listeners[0].backlog");
        assert!(
            e[0].reason
                .starts_with("invalid type: string \"lots\", expected i64 (line 5"),
            "{e:?}"
        );
        let e = errs(&BASE.replace("domains: [\"a.example.com\"]", "domains: \"a.example.com\""));
        assert_eq!(e[0].path, "listeners[0].virtual_hosts[0].domains");
        let e = errs(&BASE.replace("            route: { cluster: c }\n", ""));
        assert_eq!(e[0].path, "listeners[0].virtual_hosts[0].routes[0]");
        assert!(e[0].reason.starts_with("missing field `route`"), "{e:?}");
        let e = errs(&BASE.replace("9001 }", "9001, weight: 1.5 }"));
        assert_eq!(e[0].path, "clusters[0].endpoints[0].weight");
    }

    #[test]
    fn syntax_errors_empty_files_and_non_mappings() {
        let e = errs("listeners: [\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].reason.contains("(line 2, column 1)"), "{e:?}");
        for empty in ["", "  \n", "# just a comment\n"] {
            let e = errs(empty);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].path, "");
            assert!(e[0].reason.starts_with("the file is empty"), "{e:?}");
        }
        assert!(errs("- a\n- b\n")[0].reason.contains("must be a mapping"));
        assert!(errs("just text\n")[0].reason.contains("found a scalar"));
        assert!(
            errs(&format!("{BASE}---\n{BASE}"))[0]
                .reason
                .contains("more than one document")
        );
    }

    #[test]
    fn display_formats() {
        let e = ConfigError {
            file: "gw.yaml".into(),
            path: "workers".into(),
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "gw.yaml: workers: bad");
        let io = ConfigError {
            file: "gw.yaml".into(),
            path: String::new(),
            reason: "gone".into(),
        };
        assert_eq!(io.to_string(), "gw.yaml: gone");
        assert_eq!(
            ConfigErrors(vec![e, io]).to_string(),
            "gw.yaml: workers: bad\ngw.yaml: gone"
        );
        let all = parse("workers: 0\n", "x.yaml").unwrap_err().to_string();
        assert_eq!(all.lines().count(), 2, "{all}");
        assert!(all.starts_with("x.yaml: workers: must be"), "{all}");
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("coregate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.yaml");
        std::fs::write(&file, FULL).unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.file, file.display().to_string());
        let e = load(&dir.join("missing.yaml")).unwrap_err().0;
        assert_eq!((e.len(), e[0].path.as_str()), (1, ""));
        assert!(e[0].reason.starts_with("cannot read file"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn domains_and_methods() {
        assert_eq!(
            parse_domain("Bill.Example.COM"),
            Ok(Domain::Exact("bill.example.com".into()))
        );
        assert_eq!(
            parse_domain("*.Example.com"),
            Ok(Domain::Suffix(".example.com".into()))
        );
        assert_eq!(parse_domain("*"), Ok(Domain::Any));
        assert_eq!(
            parse_domain("127.0.0.1"),
            Ok(Domain::Exact("127.0.0.1".into()))
        );
        for bad in [
            "*.", "**", "*.*.com", ".a.com", "a.com.", "a b", "ü.com", "a.com:80",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_method("PURGE"),
            Ok(http::Method::from_bytes(b"PURGE").unwrap())
        );
        assert_eq!(parse_method("M-SEARCH").unwrap().as_str(), "M-SEARCH");
        assert!(parse_method("GET(").is_err());
        assert!(parse_method("Post").unwrap_err().contains("use POST"));
        assert!(parse_method("").is_err());
    }

    #[test]
    fn port_zero_listeners_may_repeat() {
        let yaml = BASE.replace("127.0.0.1:10000", "127.0.0.1:0");
        let second = "  - name: l2\n    address: 127.0.0.1:0\n    \
                      virtual_hosts: [{ name: v, domains: [\"*\"] }]\nclusters:";
        let c = parse(&yaml.replace("clusters:", second), "t").unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[1].virtual_hosts[0].routes.is_empty());
    }

    #[test]
    fn summary_mentions_everything() {
        let s = parse(FULL, "gw.yaml").unwrap().summary();
        for needle in [
            "gw.yaml",
            "workers: auto",
            "admin: 127.0.0.1:9901",
            "limits: head 65536 B, 100 headers, header 10s, idle 1m, body 1m, drain 30s",
            "listener ingress on 0.0.0.0:10000",
            "vhost bill: bill.example.com, *.bill.example.com, *",
            "    GET,POST prefix /api/ -> bill_api",
            "    * path /healthz -> bill_web",
            "cluster bill_api (weighted_round_robin): connect 250ms, response 15s, idle 1m",
            "  127.0.0.1:9001 weight 3",
            "  [::1]:9003 weight 1",
        ] {
            assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
        }
        assert!(s.lines().count() < 20, "{s}");
    }
}
