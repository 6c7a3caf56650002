//! Renders the registry for the admin endpoints, off the data path: Envoy's plain `name: value`
//! text (with `filter` and `usedonly`), JSON, and the Prometheus text exposition format with
//! labels instead of dotted names.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;

use super::{
    ClusterStats, DnsStats, EndpointStats, Field, HistKey, Latency, ListenerStats, Registry,
    TlsStats, WorkerStats, lock,
};

/// How the stats are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Envoy's `/stats`: `name: value` lines, sorted; histograms as quantiles in ms.
    Text,
    Json,
    Prometheus,
}

/// Which stats: names matching `filter` (a regex, as Envoy's `?filter=`), and with
/// `used_only` only those that counted something.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Option<regex::Regex>,
    pub used_only: bool,
}

impl Query {
    fn wants(&self, name: &str, used: bool) -> bool {
        (!self.used_only || used) && self.filter.as_ref().is_none_or(|f| f.is_match(name))
    }
}

/// Histogram bucket bounds in ms for Prometheus (Envoy's defaults).
const BUCKETS_MS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// Quantiles shown in the text and JSON formats (Envoy's).
const QUANTILES: [(&str, f64); 10] = [
    ("P0", 0.0),
    ("P25", 0.25),
    ("P50", 0.5),
    ("P75", 0.75),
    ("P90", 0.9),
    ("P95", 0.95),
    ("P99", 0.99),
    ("P99.5", 0.995),
    ("P99.9", 0.999),
    ("P100", 1.0),
];

/// Labels of one owner (a listener, a cluster, an endpoint, a worker), shared by its stats.
type Labels = Rc<[(&'static str, String)]>;

/// One counter or gauge: its dotted name, and its Prometheus family (`<scope>_<field>`, kept
/// as two static parts: 85,000 stats are no 85,000 family strings) and labels.
struct Stat {
    name: String,
    family: (&'static str, &'static str),
    labels: Labels,
    gauge: bool,
    value: u64,
}

struct Collector {
    stats: Vec<Stat>,
}

impl Collector {
    fn push(
        &mut self,
        name: String,
        family: (&'static str, &'static str),
        labels: Labels,
        gauge: bool,
        value: u64,
    ) {
        self.stats.push(Stat {
            name,
            family,
            labels,
            gauge,
            value,
        });
    }

    /// Each field of `fields`, read from every one of `items` and summed.
    fn fields<T>(
        &mut self,
        prefix: &str,
        scope: &'static str,
        labels: &Labels,
        fields: &[Field<T>],
        items: &[&T],
    ) {
        for (name, read, gauge) in fields {
            let value = items.iter().map(|t| read(t).get()).sum();
            self.push(
                format!("{prefix}.{name}"),
                (scope, name),
                labels.clone(),
                *gauge,
                value,
            );
        }
    }
}

impl Registry {
    /// Every counter and gauge, in no particular order.
    fn collect(&self) -> Vec<Stat> {
        let mut c = Collector { stats: Vec::new() };
        let s = &self.server;
        let generation = self
            .workers
            .iter()
            .map(|w| w.config_generation.get())
            .max()
            .unwrap_or(0);
        let none: Labels = Rc::from(Vec::new());
        for (name, value, gauge) in [
            ("live", s.live.get(), true),
            ("uptime", self.uptime().as_secs(), true),
            ("concurrency", self.workers.len() as u64, true),
            ("config_generation", generation, true),
            ("reloads_ok", s.reloads_ok.get(), false),
            ("reloads_failed", s.reloads_failed.get(), false),
            ("last_reload_time", s.last_reload_time.get(), true),
            ("last_reload_ok", s.last_reload_ok.get(), true),
            ("panics", crate::rt::panics(), false),
        ] {
            c.push(
                format!("server.{name}"),
                ("coregate_server", name),
                none.clone(),
                gauge,
                value,
            );
        }

        c.push(
            "access_log.dropped_lines".to_owned(),
            ("coregate_access_log", "dropped_lines"),
            none.clone(),
            false,
            crate::access_log::dropped(),
        );

        let (spans_dropped, spans_sent) = crate::zipkin::counts();
        for (name, value) in [("spans_sent", spans_sent), ("spans_dropped", spans_dropped)] {
            c.push(
                format!("tracing.{name}"),
                ("coregate_tracing", name),
                none.clone(),
                false,
                value,
            );
        }

        let listeners = lock(&self.listeners).clone();
        let mut by_listener: BTreeMap<&str, Vec<(usize, &ListenerStats)>> = BTreeMap::new();
        for ((name, worker), stats) in &listeners {
            by_listener
                .entry(name)
                .or_default()
                .push((*worker, stats.as_ref()));
        }
        for (name, per_worker) in &by_listener {
            let all: Vec<&ListenerStats> = per_worker.iter().map(|(_, s)| *s).collect();
            let labels: Labels = Rc::from(vec![("listener", (*name).to_owned())]);
            let conns = &ListenerStats::CONNECTIONS;
            let prefix = format!("listener.{name}");
            c.fields(&prefix, "coregate_listener", &labels, conns, &all);
            let ssl: Vec<&TlsStats> = all.iter().map(|s| &s.ssl).collect();
            let prefix = format!("listener.{name}.ssl");
            let tls = &TlsStats::FIELDS;
            c.fields(&prefix, "coregate_listener_ssl", &labels, tls, &ssl);
            for (worker, stats) in per_worker {
                let prefix = format!("listener.{name}.worker_{worker}");
                let labels: Labels = Rc::from(vec![
                    ("listener", (*name).to_owned()),
                    ("worker", worker.to_string()),
                ]);
                let scope = "coregate_listener_worker";
                c.fields(&prefix, scope, &labels, &conns[..2], &[*stats]);
            }
            let reqs = &ListenerStats::REQUESTS;
            c.fields(
                &format!("http.{name}"),
                "coregate_http",
                &labels,
                reqs,
                &all,
            );
        }

        // Read under the lock rather than cloned: the cores take it only when they apply a
        // config, and a copy of 8,000 keyed entries cost more than the rest of this step.
        let endpoints = lock(&self.endpoints);
        let mut by_cluster: BTreeMap<&str, BTreeMap<SocketAddr, Vec<&EndpointStats>>> =
            BTreeMap::new();
        for ((_, cluster, addr), stats) in endpoints.iter() {
            by_cluster
                .entry(cluster)
                .or_default()
                .entry(*addr)
                .or_default()
                .push(stats);
        }
        let fields = &EndpointStats::FIELDS;
        for (cluster, eps) in &by_cluster {
            let all: Vec<&EndpointStats> = eps.values().flatten().copied().collect();
            let labels: Labels = Rc::from(vec![("cluster", (*cluster).to_owned())]);
            let prefix = format!("cluster.{cluster}");
            c.fields(&prefix, "coregate_cluster", &labels, fields, &all);
            for (addr, per_worker) in eps {
                let labels: Labels = Rc::from(vec![
                    ("cluster", (*cluster).to_owned()),
                    ("endpoint", addr.to_string()),
                ]);
                let prefix = format!("cluster.{cluster}.endpoint.{addr}");
                c.fields(&prefix, "coregate_endpoint", &labels, fields, per_worker);
            }
        }
        drop(by_cluster);
        drop(endpoints);
        let clusters = lock(&self.clusters);
        let mut own: BTreeMap<&str, Vec<&ClusterStats>> = BTreeMap::new();
        for ((cluster, _), stats) in clusters.iter() {
            own.entry(cluster).or_default().push(stats);
        }
        for (cluster, per_worker) in &own {
            let labels: Labels = Rc::from(vec![("cluster", (*cluster).to_owned())]);
            let prefix = format!("cluster.{cluster}");
            let fields = &ClusterStats::FIELDS;
            c.fields(&prefix, "coregate_cluster", &labels, fields, per_worker);
            let dns: Vec<&DnsStats> = per_worker.iter().map(|s| &s.dns).collect();
            c.fields(
                &prefix,
                "coregate_cluster",
                &labels,
                &DnsStats::FIELDS,
                &dns,
            );
        }
        drop(own);
        drop(clusters);

        for w in &self.workers {
            let labels: Labels = Rc::from(vec![("worker", w.worker.to_string())]);
            let prefix = format!("worker.{}", w.worker);
            let worker = &[w.as_ref()];
            c.fields(
                &prefix,
                "coregate_worker",
                &labels,
                &WorkerStats::FIELDS,
                worker,
            );
        }
        c.stats
    }

    /// The stats `query` selects, written as `format`. Runs on the admin thread: the cores
    /// only ever store their counters.
    pub fn render_as(&self, format: Format, query: &Query) -> String {
        let mut stats: Vec<Stat> = self
            .collect()
            .into_iter()
            .filter(|s| query.wants(&s.name, s.value != 0))
            .collect();
        // Envoy's text and JSON are sorted by name; Prometheus groups by family instead.
        if format != Format::Prometheus {
            stats.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        }
        let histograms: Vec<(HistKey, Latency)> = self
            .histograms()
            .into_iter()
            .filter(|(k, h)| query.wants(&k.dotted(), h.count() > 0))
            .collect();
        match format {
            Format::Text => text(&stats, &histograms),
            Format::Json => json(&stats, &histograms),
            Format::Prometheus => prometheus(&stats, &histograms),
        }
    }
}

/// Microseconds as milliseconds, without trailing zeros.
fn ms(us: u64) -> String {
    let v = format!("{:.3}", us as f64 / 1000.0);
    v.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn text(stats: &[Stat], histograms: &[(HistKey, Latency)]) -> String {
    let mut out = String::new();
    for s in stats {
        let _ = writeln!(out, "{}: {}", s.name, s.value);
    }
    for (key, h) in histograms {
        let _ = write!(out, "{}:", key.dotted());
        if h.count() == 0 {
            out.push_str(" No recorded values\n");
            continue;
        }
        for (label, q) in QUANTILES {
            let _ = write!(out, " {label}(nan,{})", ms(h.quantile_us(q)));
        }
        out.push('\n');
    }
    out
}

fn json(stats: &[Stat], histograms: &[(HistKey, Latency)]) -> String {
    let stats: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
        .collect();
    let histograms: Vec<serde_json::Value> = histograms
        .iter()
        .map(|(key, h)| {
            let quantiles: serde_json::Map<String, serde_json::Value> = QUANTILES
                .iter()
                .map(|(label, q)| {
                    let value = h.quantile_us(*q) as f64 / 1000.0;
                    ((*label).to_owned(), serde_json::json!(value))
                })
                .collect();
            serde_json::json!({
                "name": key.dotted(),
                "count": h.count(),
                "sum_ms": h.sum_us() as f64 / 1000.0,
                "quantiles_ms": quantiles,
            })
        })
        .collect();
    let mut out = serde_json::json!({"stats": stats, "histograms": histograms}).to_string();
    out.push('\n');
    out
}

/// Writes `{k="v",...}` (nothing when there are no labels), escaping backslash, quote and
/// newline in values as the exposition format wants.
fn write_labels(out: &mut String, pairs: &[(&'static str, String)], extra: Option<(&str, &str)>) {
    if pairs.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = pairs.iter().map(|(k, v)| (*k, v.as_str())).chain(extra);
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        if v.contains(['\\', '"', '\n']) {
            out.push_str(
                &v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n"),
            );
        } else {
            out.push_str(v);
        }
        out.push('"');
    }
    out.push('}');
}

fn prometheus(stats: &[Stat], histograms: &[(HistKey, Latency)]) -> String {
    // Grouped by family with a hash map, then the few hundred families sorted: a tree keyed
    // by family compared strings 17 times per stat.
    let mut families: HashMap<(&str, &str), (bool, Vec<&Stat>)> = HashMap::new();
    for s in stats {
        families
            .entry(s.family)
            .or_insert((s.gauge, Vec::new()))
            .1
            .push(s);
    }
    let mut names: Vec<(&str, &str)> = families.keys().copied().collect();
    names.sort_unstable();
    let mut out = String::with_capacity(stats.len() * 64);
    for family in names {
        let (gauge, series) = &families[&family];
        let kind = if *gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE {}_{} {kind}", family.0, family.1);
        for s in series {
            out.push_str(family.0);
            out.push('_');
            out.push_str(family.1);
            write_labels(&mut out, &s.labels, None);
            let _ = writeln!(out, " {}", s.value);
        }
    }
    let mut hist_families: BTreeMap<String, Vec<&(HistKey, Latency)>> = BTreeMap::new();
    for entry in histograms {
        let family = format!("coregate_{}_{}", entry.0.scope, entry.0.stat);
        hist_families.entry(family).or_default().push(entry);
    }
    let bounds = BUCKETS_MS.map(|ms| (ms * 1000.0) as u64);
    for (family, series) in hist_families {
        let _ = writeln!(out, "# TYPE {family} histogram");
        for (key, h) in series {
            let own = [(key.label, key.owner.clone())];
            for (bound, n) in BUCKETS_MS.iter().zip(h.cumulative(&bounds)) {
                let le = format!("{bound}");
                out.push_str(&family);
                out.push_str("_bucket");
                write_labels(&mut out, &own, Some(("le", &le)));
                let _ = writeln!(out, " {n}");
            }
            out.push_str(&family);
            out.push_str("_bucket");
            write_labels(&mut out, &own, Some(("le", "+Inf")));
            let _ = writeln!(out, " {}", h.count());
            for (suffix, value) in [("_sum", ms(h.sum_us())), ("_count", h.count().to_string())] {
                out.push_str(&family);
                out.push_str(suffix);
                write_labels(&mut out, &own, None);
                let _ = writeln!(out, " {value}");
            }
        }
    }
    out
}
