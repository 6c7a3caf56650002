//! The admin endpoints, on their own thread, off the data-path cores: /stats (every core's
//! counters, summed), /ready, /config (the running config's summary).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{info, warn};

use crate::snapshot::Published;
use crate::stats::Registry;

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
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/stats" => respond(&mut stream, 200, &registry.render()),
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
        "/" => respond(&mut stream, 200, "/stats\n/ready\n/config\n"),
        _ => respond(&mut stream, 404, "not found\n"),
    }
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
