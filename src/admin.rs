//! The admin endpoints, on their own thread, off the data-path cores: /stats (every core's
//! counters and histograms, merged; Envoy's text, JSON or Prometheus), /ready, /config (the
//! running config's summary).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{info, warn};

use crate::snapshot::Published;
use crate::stats::{Format, Query, Registry};

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
    let (method, path) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            _ => return respond(&mut stream, 400, "bad request\n"),
        }
    };
    if method != "GET" {
        return respond(&mut stream, 405, "only GET\n");
    }
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    match path {
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
            let snapshot = published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let body = format!(
                "generation {}\n{}",
                snapshot.generation,
                snapshot.config.summary()
            );
            respond(&mut stream, 200, &body)
        }
        "/" => respond(
            &mut stream,
            200,
            "/stats (?format=json, ?filter=REGEX, ?usedonly)\n/stats/prometheus\n/ready\n/config\n",
        ),
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

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    respond_as(stream, status, "text/plain; charset=utf-8", body)
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
