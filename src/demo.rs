//! The demo upstreams behind `coregate demo`: two tiny HTTP/1.1 services on loopback that answer
//! every request with their own name, as in the classic Envoy front-proxy walkthrough.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

/// The config `coregate demo` serves when no file is given; see [`demo_config`].
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");

/// Where the demo config expects its certificate's directory.
const TLS_DIR_PLACEHOLDER: &str = "@DEMO_TLS_DIR@";

/// The demo config, with a self-signed certificate for `localhost` and 127.0.0.1 made now in
/// `dir` (the private key is written only there, readable by its owner).
pub fn demo_config(dir: &Path) -> io::Result<String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(io::Error::other)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(io::Error::other)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coregate demo");
    let cert = params.self_signed(&key).map_err(io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("demo.pem"), cert.pem())?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(dir.join("demo.key"))?
        .write_all(key.serialize_pem().as_bytes())?;
    let dir = dir
        .to_str()
        .ok_or_else(|| io::Error::other("non-UTF-8 temp directory"))?;
    Ok(DEMO_CONFIG.replace(TLS_DIR_PLACEHOLDER, dir))
}

/// The demo services: (address, answer).
pub const SERVICES: [(&str, &str); 2] = [
    ("127.0.0.1:10001", "this is bill-service-v1\n"),
    ("127.0.0.1:10002", "hello, this is bill-service-v2\n"),
];

/// Largest request head the demo services read.
const MAX_HEAD: usize = 16 * 1024;
/// A demo connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Binds every demo service and serves each on its own thread (a thread per connection: the
/// demo is about the gateway, not about these services' speed).
pub fn start_services() -> io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    for (address, answer) in SERVICES {
        let listener = TcpListener::bind(address)?;
        bound.push(listener.local_addr()?);
        thread::Builder::new()
            .name(format!("demo-{address}"))
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = thread::Builder::new()
                        .name("demo-conn".into())
                        .spawn(move || serve(stream, answer));
                }
            })?;
    }
    Ok(bound)
}

/// Answers requests on one connection until the client closes or goes idle.
fn serve(mut stream: TcpStream, answer: &str) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let (head_len, body_len, close) = match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let body_len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let close = req.version == Some(0)
                    || req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                    });
                (n, body_len, close)
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            _ => {
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                return;
            }
        };
        // Skip the request body (the demo ignores it).
        while buf.len() < head_len + body_len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_len + body_len);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{answer}",
            answer.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if stream.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}
