//! The admin endpoints, on their own thread, off the data-path cores: /stats (every core's
//! counters and histograms, merged; Envoy's text, JSON or Prometheus), /clusters, /config_dump,
//! /server_info, /ready, /reopen_logs, /config (the running config's summary).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{info, warn};

use std::fmt::Write as _;

use crate::snapshot::{Published, Snapshot};
use crate::stats::{EndpointStats, Format, Query, Registry};

/// Admin clients get this long to send their request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;

/// Binds the admin address and serves it on a new thread.
pub fn start(
    address: SocketAddr,
    registry: Arc<Registry>,
    published: Published,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name("coregate-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &registry, &published) {
                            warn!("admin request failed: {e}");
                        }
                    }
                    Err(e) => warn!("admin accept failed: {e}"),
                }
            }
        })?;
    info!(address = %bound, "admin listening");
    Ok(bound)
}

/// Serves one request and closes (admin traffic is rare; no keep-alive needed).
fn answer(mut stream: TcpStream, registry: &Registry, published: &Published) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path, html) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                // A browser asks for HTML; curl and scripts get the plain-text index.
                let html = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("accept")
                        && String::from_utf8_lossy(h.value).contains("text/html")
                });
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                    html,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            _ => return respond(&mut stream, 400, "bad request\n"),
        }
    };
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    match (method.as_str(), path) {
        ("POST", "/reopen_logs") => {
            // What SIGUSR1 does.
            crate::access_log::writer().reopen();
            return respond(&mut stream, 200, "access log files reopened\n");
        }
        ("GET", _) => {}
        _ => return respond(&mut stream, 405, "GET only (POST for /reopen_logs)\n"),
    }
    let json_wanted = query_pairs(query)
        .iter()
        .any(|(k, v)| k == "format" && v == "json");
    let snapshot = || {
        published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    match path {
        "/clusters" => {
            let body = clusters(registry, &snapshot(), json_wanted);
            let content_type = if json_wanted {
                "application/json"
            } else {
                TEXT
            };
            respond_as(&mut stream, 200, content_type, &body)
        }
        "/config_dump" => {
            let snapshot = snapshot();
            let body = serde_json::json!({
                "generation": snapshot.generation,
                "config": snapshot.config.dump(),
            });
            let body = format!("{body:#}\n");
            respond_as(&mut stream, 200, "application/json", &body)
        }
        "/server_info" => {
            let body = server_info(registry, &snapshot());
            respond_as(&mut stream, 200, "application/json", &format!("{body:#}\n"))
        }
        "/stats" | "/stats/prometheus" => {
            let mut format = match path {
                "/stats" => Format::Text,
                _ => Format::Prometheus,
            };
            let mut q = Query::default();
            for (key, value) in query_pairs(query) {
                match (key.as_str(), value.as_str()) {
                    ("format", "json") => format = Format::Json,
                    ("format", "prometheus") => format = Format::Prometheus,
                    ("format", "text") => format = Format::Text,
                    ("usedonly", _) => q.used_only = true,
                    ("filter", re) if !re.is_empty() => match regex::Regex::new(re) {
                        Ok(re) => q.filter = Some(re),
                        Err(e) => {
                            let why = format!("invalid filter regex: {e}\n");
                            return respond(&mut stream, 400, &why);
                        }
                    },
                    _ => {}
                }
            }
            let content_type = match format {
                Format::Text => "text/plain; charset=utf-8",
                Format::Json => "application/json",
                // The exposition format's version, as Prometheus expects.
                Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            };
            let body = registry.render_as(format, &q);
            respond_as(&mut stream, 200, content_type, &body)
        }
        "/ready" if registry.server.live.get() == 0 => respond(&mut stream, 503, "draining\n"),
        "/ready" => respond(&mut stream, 200, "ready\n"),
        "/config" => {
            let snapshot = snapshot();
            let body = format!(
                "generation {}\n{}",
                snapshot.generation,
                snapshot.config.summary()
            );
            respond(&mut stream, 200, &body)
        }
        "/" if html => respond_as(&mut stream, 200, "text/html; charset=utf-8", DASHBOARD),
        "/" => respond(&mut stream, 200, INDEX),
        _ => respond(&mut stream, 404, "not found\n"),
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The live dashboard a browser gets at `/`: requests/s, responses by class, latency, the
/// per-core share and the clusters, read from /stats?format=json once a second.
const DASHBOARD: &str = include_str!("dashboard.html");

const INDEX: &str = "\
/                   a live dashboard, in a browser
/stats              counters and histograms (?format=json, ?filter=REGEX, ?usedonly)
/stats/prometheus   the same in the Prometheus exposition format
/clusters           every endpoint: weight, connections, requests, per core and total (?format=json)
/config_dump        the effective config as JSON, with its generation
/server_info        version, uptime, workers and their CPUs, generation, last reload
/ready              200, or 503 once draining
/reopen_logs        (POST) reopen log files, as SIGUSR1
/config             the config's summary, as `coregate check` prints it
";

/// Every endpoint of every cluster of the running config: its weight and, per core and in
/// total, its connections and requests. Envoy's `cluster::endpoint::stat::value` lines, or JSON.
fn clusters(registry: &Registry, snapshot: &Snapshot, json: bool) -> String {
    let mut out = String::new();
    let mut all = Vec::new();
    for (ci, cluster) in snapshot.clusters.iter().enumerate() {
        let health = snapshot.health.get(ci).and_then(Option::as_ref);
        let mut endpoints = Vec::new();
        for (ei, e) in cluster.endpoints.iter().enumerate() {
            // Envoy's health_flags: healthy, or failed an active health check.
            let ejected = registry
                .endpoint_totals(&cluster.name, e.address)
                .outlier_ejected
                .get()
                > 0;
            let flags = match health {
                Some(h) if !h.is_healthy(ei) => "/failed_active_hc",
                _ if ejected => "/failed_outlier_check",
                _ => "healthy",
            };
            let per_worker = registry.endpoint_per_worker(&cluster.name, e.address);
            let total = registry.endpoint_totals(&cluster.name, e.address);
            let stats =
                |s: &crate::stats::EndpointStats| -> serde_json::Map<String, serde_json::Value> {
                    EndpointStats::FIELDS
                        .iter()
                        .map(|(name, read, _)| ((*name).to_owned(), read(s).get().into()))
                        .collect()
                };
            if !json {
                let p = format!("{}::{}", cluster.name, e.address);
                let _ = writeln!(out, "{p}::weight::{}", e.weight);
                let _ = writeln!(out, "{p}::health_flags::{flags}");
                for (name, read, _) in EndpointStats::FIELDS {
                    let _ = writeln!(out, "{p}::{name}::{}", read(&total).get());
                }
                for (worker, s) in &per_worker {
                    for (name, read, _) in EndpointStats::FIELDS {
                        let _ = writeln!(out, "{p}::worker_{worker}::{name}::{}", read(s).get());
                    }
                }
            }
            endpoints.push(serde_json::json!({
                "address": e.address.to_string(),
                "weight": e.weight,
                "health_flags": flags,
                "total": stats(&total),
                "workers": per_worker
                    .iter()
                    .map(|(w, s)| serde_json::json!({"worker": w, "stats": stats(s)}))
                    .collect::<Vec<_>>(),
            }));
        }
        all.push(serde_json::json!({"name": cluster.name, "endpoints": endpoints}));
    }
    if json {
        format!("{:#}\n", serde_json::json!({ "clusters": all }))
    } else {
        out
    }
}

fn server_info(registry: &Registry, snapshot: &Snapshot) -> serde_json::Value {
    let s = &registry.server;
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "state": if s.live.get() == 1 { "live" } else { "draining" },
        "uptime_seconds": registry.uptime().as_secs(),
        "generation": snapshot.generation,
        "config_file": snapshot.config.file,
        "workers": registry
            .workers()
            .iter()
            .map(|w| serde_json::json!({"worker": w.worker, "cpu": w.cpu.get(), "tid": w.tid.get()}))
            .collect::<Vec<_>>(),
        "reloads": {
            "ok": s.reloads_ok.get(),
            "failed": s.reloads_failed.get(),
            "last_time_unix": s.last_reload_time.get(),
            "last_ok": s.last_reload_ok.get() == 1,
        },
    })
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    respond_as(stream, status, TEXT, body)
}

fn respond_as(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
