//! Sampled spans to a Zipkin-compatible collector (Zipkin v2 JSON over HTTP; Jaeger's Zipkin
//! endpoint takes it too), sent in batches by a thread of its own: the cores only hand a span
//! over (never waiting; a full queue drops it and counts it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::trace::{FinishedSpan, hex};

/// Spans queued for the exporter; beyond it they are dropped and counted.
const QUEUE: usize = 4096;
/// Spans per POST, and the longest a span waits for its batch.
const BATCH: usize = 100;
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Bounds on one POST to the collector.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped (queue full, or a POST that failed), and spans the collector accepted.
pub fn counts() -> (u64, u64) {
    (
        DROPPED.load(Relaxed) + FAILED.load(Relaxed),
        SENT.load(Relaxed),
    )
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    pub address: SocketAddr,
    pub path: String,
    pub service_name: String,
}

/// The exporters of the process, by collector: kept across reloads that keep the collector, so
/// that a reload neither loses queued spans nor starts another thread.
#[derive(Debug, Default)]
pub struct Exporters(std::sync::Mutex<Option<(Collector, std::sync::Arc<Exporter>)>>);

impl Exporters {
    /// The exporter for `collector`: the running one if it goes to the same place.
    pub fn get(&self, collector: &Collector) -> std::io::Result<std::sync::Arc<Exporter>> {
        let mut current = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((c, e)) = current.as_ref()
            && c == collector
        {
            return Ok(e.clone());
        }
        let exporter = std::sync::Arc::new(Exporter::start(collector.clone())?);
        *current = Some((collector.clone(), exporter.clone()));
        Ok(exporter)
    }
}

/// A running exporter for one collector: its thread ends (after a last POST) once the last
/// handle is dropped, as a reload with another collector does.
#[derive(Debug)]
pub struct Exporter {
    tx: SyncSender<FinishedSpan>,
}

impl Exporter {
    pub fn start(collector: Collector) -> std::io::Result<Exporter> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("coregate-zipkin".into())
            .spawn(move || export_loop(&collector, rx))?;
        Ok(Exporter { tx })
    }

    /// Hands a finished span over, never waiting.
    pub fn send(&self, span: FinishedSpan) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(span) {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

fn export_loop(collector: &Collector, rx: Receiver<FinishedSpan>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = Instant::now() + BATCH_WAIT;
        let closed = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => {
                    batch.push(span);
                    if batch.len() >= BATCH {
                        break false;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break false,
                Err(RecvTimeoutError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match post(collector, &batch) {
                Ok(()) => SENT.fetch_add(n, Relaxed),
                Err(e) => {
                    tracing::debug!(collector = %collector.address, "span export failed: {e}");
                    FAILED.fetch_add(n, Relaxed)
                }
            };
            batch.clear();
        }
        if closed {
            return;
        }
    }
}

/// Zipkin v2 JSON for a batch.
pub fn encode(collector: &Collector, spans: &[FinishedSpan]) -> String {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|f| {
            let s = &f.span;
            let micros = |d: Duration| d.as_micros() as u64;
            let mut v = serde_json::json!({
                "traceId": hex(&s.trace_id),
                "id": hex(&s.span_id),
                "kind": "SERVER",
                "name": f.name,
                "timestamp": micros(s.start.duration_since(UNIX_EPOCH).unwrap_or_default()),
                "duration": micros(f.duration).max(1),
                "localEndpoint": {"serviceName": collector.service_name},
                "tags": f.tags.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            });
            if let Some(parent) = &s.parent_id {
                v["parentId"] = hex(parent).into();
            }
            if let Some(remote) = f.remote {
                let ip = match remote.ip() {
                    std::net::IpAddr::V4(ip) => serde_json::json!({"ipv4": ip.to_string(), "port": remote.port()}),
                    std::net::IpAddr::V6(ip) => serde_json::json!({"ipv6": ip.to_string(), "port": remote.port()}),
                };
                v["remoteEndpoint"] = ip;
            }
            v
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn post(collector: &Collector, spans: &[FinishedSpan]) -> std::io::Result<()> {
    let body = encode(collector, spans);
    let mut s = TcpStream::connect_timeout(&collector.address, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        collector.path,
        collector.address,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer)?;
    let status = std::str::from_utf8(&answer[..n])
        .ok()
        .and_then(|a| a.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(()),
        other => Err(std::io::Error::other(format!(
            "collector answered {other:?}"
        ))),
    }
}
