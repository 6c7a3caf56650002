//! Access logs: Envoy's format operators compiled at config load, one line per request written
//! into this core's buffer, and a writer thread that owns the files (flushed off the request
//! path; a full queue drops lines and counts them, never delays a request; SIGUSR1 reopens).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{ErrorKind, ProxyError};
use crate::message::{RequestHead, Version};

/// Envoy's default format, with the operators this gateway has.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESPONSE_DURATION% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// One operator of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    StartTime,
    /// A request header (lowercase), or a pseudo-header; `a?b` tries `a`, then `b`.
    Req(Vec<Field>),
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    ResponseDuration,
    UpstreamHost,
    UpstreamCluster,
    RouteName,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    TlsVersion,
    TlsCipher,
    PeerSubject,
    PeerUriSan,
}

/// What `%REQ(...)%` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Method,
    Path,
    Authority,
    Scheme,
    Header(String),
}

/// A piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece(Part);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// An operator, with an optional length limit (`%REQ(X):10%`).
    Op(Op, Option<usize>),
}

/// A compiled format: text lines or JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Text(Vec<Piece>),
    /// Key -> operator (or literal text), written as one JSON object per line.
    Json(Vec<(String, Vec<Piece>)>),
}

/// `REQ(a?b)` as the fields it reads, in order; None for another operator.
pub fn parse_req(name: &str) -> Option<Result<Vec<Field>, String>> {
    let inner = name.strip_prefix("REQ(")?.strip_suffix(')')?;
    Some(
        inner
            .split('?')
            .map(|f| match f.to_ascii_lowercase().as_str() {
                "" => Err("empty header name in REQ()".to_owned()),
                ":method" => Ok(Field::Method),
                ":path" => Ok(Field::Path),
                ":authority" | "host" => Ok(Field::Authority),
                ":scheme" => Ok(Field::Scheme),
                h if h.starts_with(':') => Err(format!("unknown pseudo-header {h}")),
                h => Ok(Field::Header(h.to_owned())),
            })
            .collect(),
    )
}

/// The value `%REQ(a?b)%` reads: the first of `fields` that the request has, not empty.
pub fn read_req<'h>(fields: &[Field], head: &'h RequestHead, scheme: &'h str) -> Option<&'h [u8]> {
    fields.iter().find_map(|f| {
        let v = match f {
            Field::Method => Some(head.method.as_str().as_bytes()),
            Field::Path => Some(head.target()),
            Field::Authority => Some(head.authority())
                .filter(|a| !a.is_empty())
                .or_else(|| head.headers.get(b"host")),
            Field::Scheme => Some(scheme.as_bytes()),
            Field::Header(h) => head.headers.get(h.as_bytes()),
        };
        v.filter(|v| !v.is_empty())
    })
}

fn parse_op(name: &str) -> Result<Op, String> {
    if let Some(fields) = parse_req(name) {
        return Ok(Op::Req(fields?));
    }
    Ok(match name {
        "START_TIME" => Op::StartTime,
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "RESPONSE_DURATION" => Op::ResponseDuration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "ROUTE_NAME" => Op::RouteName,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "DOWNSTREAM_TLS_VERSION" => Op::TlsVersion,
        "DOWNSTREAM_TLS_CIPHER" => Op::TlsCipher,
        "DOWNSTREAM_PEER_SUBJECT" => Op::PeerSubject,
        "DOWNSTREAM_PEER_URI_SAN" => Op::PeerUriSan,
        other => return Err(format!("unknown operator %{other}%")),
    })
}

/// A piece of a format before its operators mean anything: shared by the access log and the
/// header values of `request_headers_to_add` (crate::header_edit), so both read `%OP%`,
/// `%OP(args):N%` and `%%` alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<T> {
    Text(String),
    /// An operator as `parse` understood it, with an optional length limit (`%REQ(X):10%`).
    Op(T, Option<usize>),
}

/// Splits a format into text and operators, each operator's name (`REQ(X)`, `START_TIME`)
/// handed to `parse`. Err: the first unknown or malformed operator.
pub fn tokenize<T>(
    format: &str,
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<Token<T>>, String> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        text.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!("unterminated operator at {:?}", &rest[start..]));
        };
        let spec = &after[..end];
        rest = &after[end + 1..];
        if spec.is_empty() {
            // "%%" is a literal percent sign.
            text.push('%');
            continue;
        }
        // `OP(args):N` limits the value to N bytes; a ':' inside the parentheses is not one.
        let (name, limit) = match spec.rfind("):") {
            Some(i) => {
                let n = spec[i + 2..]
                    .parse::<usize>()
                    .map_err(|_| format!("invalid length in %{spec}%"))?;
                (&spec[..=i], Some(n))
            }
            None => (spec, None),
        };
        let op = parse(name)?;
        if !text.is_empty() {
            tokens.push(Token::Text(std::mem::take(&mut text)));
        }
        tokens.push(Token::Op(op, limit));
    }
    text.push_str(rest);
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

/// Compiles a format string. Err: the first unknown or malformed operator.
pub fn compile(format: &str) -> Result<Vec<Piece>, String> {
    let tokens = tokenize(format, parse_op)?;
    Ok(tokens
        .into_iter()
        .map(|t| match t {
            Token::Text(text) => Piece(Part::Text(text)),
            Token::Op(op, limit) => Piece(Part::Op(op, limit)),
        })
        .collect())
}

/// What one finished request leaves for its log line.
pub struct Entry<'a> {
    pub head: &'a RequestHead,
    pub scheme: &'a str,
    pub started: SystemTime,
    pub duration: Duration,
    pub status: Option<u16>,
    pub error: Option<&'a ProxyError>,
    pub retried: bool,
    pub body_in: u64,
    pub body_out: u64,
    pub upstream_time: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    /// The matched route's `name`.
    pub route_name: Option<&'a str>,
    pub peer: SocketAddr,
    pub sni: Option<&'a str>,
    pub tls_version: Option<&'a str>,
    pub tls_cipher: Option<&'a str>,
    pub peer_subject: Option<&'a str>,
    pub peer_uri_san: Option<&'a str>,
}

/// Envoy's response flags for an outcome: NR no route, UH no upstream host took the request,
/// UF upstream connection (TLS) failure, UC upstream connection terminated, UT upstream
/// timeout, UPE upstream protocol error, DC downstream connection terminated, DPE downstream
/// protocol error, DT downstream request timeout, URX the retry failed too; `-` for none.
pub fn response_flags(error: Option<&ProxyError>, retried: bool) -> Cow<'static, str> {
    let Some(e) = error else {
        return Cow::Borrowed("-");
    };
    let flag = match e.kind {
        ErrorKind::NoRoute => "NR",
        ErrorKind::NoUpstream => "UH",
        ErrorKind::Overflow => "UO",
        ErrorKind::UpstreamTls => "UF",
        ErrorKind::UpstreamClosed | ErrorKind::Aborted => "UC",
        ErrorKind::UpstreamTimeout | ErrorKind::UpstreamSendTimeout | ErrorKind::RouteTimeout => {
            "UT"
        }
        ErrorKind::BadResponse(_) => "UPE",
        ErrorKind::ClientGone => "DC",
        ErrorKind::RequestTimeout => "DT",
        ErrorKind::BadRequest(_)
        | ErrorKind::HeadTooLarge
        | ErrorKind::VersionNotSupported
        | ErrorKind::NotImplemented(_)
        | ErrorKind::ExpectationFailed
        | ErrorKind::PayloadTooLarge => "DPE",
        // Envoy has no letter for a request the gateway could not rewrite.
        ErrorKind::Internal(_) => "-",
    };
    if retried {
        Cow::Owned(format!("{flag},URX"))
    } else {
        Cow::Borrowed(flag)
    }
}

impl Entry<'_> {
    /// Writes the value of one operator into `out`; false when there is none (the caller
    /// writes `-`, or `null` in JSON). Straight into the core's buffer: no allocation for a
    /// text line (the default format cost ~0.9 µs per request with a String per operator).
    fn value(&self, op: &Op, out: &mut Vec<u8>) -> bool {
        use std::io::Write as _;
        let mut num = itoa::Buffer::new();
        let mut put = |b: &[u8]| out.extend_from_slice(b);
        match op {
            Op::StartTime => {
                let _ = write!(out, "{}", humantime::format_rfc3339_millis(self.started));
            }
            Op::Req(fields) => match read_req(fields, self.head, self.scheme) {
                Some(v) => put(v),
                None => return false,
            },
            Op::Protocol => put(match self.head.version {
                Version::HTTP_10 => b"HTTP/1.0",
                Version::HTTP_2 => b"HTTP/2",
                _ => b"HTTP/1.1",
            }),
            Op::ResponseCode => put(num.format(self.status.unwrap_or(0)).as_bytes()),
            Op::ResponseFlags => put(response_flags(self.error, self.retried).as_bytes()),
            Op::BytesReceived => put(num.format(self.body_in).as_bytes()),
            Op::BytesSent => put(num.format(self.body_out).as_bytes()),
            Op::Duration => put(num.format(self.duration.as_millis() as u64).as_bytes()),
            Op::ResponseDuration => match self.upstream_time {
                Some(d) => put(num.format(d.as_millis() as u64).as_bytes()),
                None => return false,
            },
            Op::UpstreamHost => match self.upstream_host {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => return false,
            },
            Op::DownstreamRemoteAddress => {
                let _ = write!(out, "{}", self.peer);
            }
            Op::DownstreamRemoteAddressWithoutPort => {
                let _ = write!(out, "{}", self.peer.ip());
            }
            Op::UpstreamCluster
            | Op::RouteName
            | Op::RequestedServerName
            | Op::TlsVersion
            | Op::TlsCipher
            | Op::PeerSubject
            | Op::PeerUriSan => {
                let v = match op {
                    Op::UpstreamCluster => self.upstream_cluster,
                    Op::RouteName => self.route_name,
                    Op::RequestedServerName => self.sni,
                    Op::TlsVersion => self.tls_version,
                    Op::TlsCipher => self.tls_cipher,
                    Op::PeerSubject => self.peer_subject,
                    _ => self.peer_uri_san,
                };
                match v {
                    Some(v) => put(v.as_bytes()),
                    None => return false,
                }
            }
        }
        true
    }

    /// Writes one piece; false for an operator without a value (`-` written instead).
    fn piece(&self, piece: &Piece, out: &mut Vec<u8>) -> bool {
        match &piece.0 {
            Part::Text(t) => {
                out.extend_from_slice(t.as_bytes());
                true
            }
            Part::Op(op, limit) => {
                let start = out.len();
                if !self.value(op, out) {
                    out.push(b'-');
                    return false;
                }
                if let Some(n) = limit {
                    let mut end = start + (*n).min(out.len() - start);
                    // Never cut a UTF-8 character in two.
                    while end > start && end < out.len() && out[end] & 0xc0 == 0x80 {
                        end -= 1;
                    }
                    out.truncate(end);
                }
                true
            }
        }
    }

    /// Appends this entry's line in `format` to `out`.
    pub fn write(&self, format: &Format, out: &mut Vec<u8>) {
        match format {
            Format::Text(pieces) => {
                for p in pieces {
                    self.piece(p, out);
                }
            }
            Format::Json(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                let mut v = Vec::new();
                for (key, pieces) in fields {
                    v.clear();
                    let mut any = false;
                    for p in pieces {
                        any |= self.piece(p, &mut v);
                    }
                    let text = String::from_utf8_lossy(&v).into_owned();
                    let value = match pieces.as_slice() {
                        // A lone operator without a value is null; numbers stay numbers.
                        [Piece(Part::Op(..))] if !any => serde_json::Value::Null,
                        [Piece(Part::Op(..))] => text
                            .parse::<u64>()
                            .map(serde_json::Value::from)
                            .unwrap_or(serde_json::Value::String(text)),
                        _ => serde_json::Value::String(text),
                    };
                    map.insert(key.clone(), value);
                }
                let _ = serde_json::to_writer(&mut *out, &serde_json::Value::Object(map));
                out.push(b'\n');
            }
        }
    }
}

/// Bytes a core gathers before it hands them to the writer (also handed over every second).
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Batches queued for the writer; beyond it a core drops its batch and counts the lines.
const QUEUE: usize = 256;

/// What the writer thread is told.
enum Message {
    Lines { path: Arc<str>, bytes: Vec<u8> },
    Reopen,
}

/// The process's log writer: the only owner of the log files.
pub struct Writer {
    tx: SyncSender<Message>,
}

/// Lines dropped because the writer fell behind (a slow disk), over every core.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access log lines dropped so far (`access_log.dropped_lines`).
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// The writer thread, started on first use.
pub fn writer() -> &'static Writer {
    static WRITER: OnceLock<Writer> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE);
        let _ = std::thread::Builder::new()
            .name("coregate-log".into())
            .spawn(move || write_loop(rx));
        Writer { tx }
    })
}

impl Writer {
    /// Hands a core's lines for `path` to the writer, never waiting: when the queue is full
    /// they are dropped and counted (`lines` of them).
    pub fn send(&self, path: &Arc<str>, bytes: Vec<u8>, lines: u64) {
        let msg = Message::Lines {
            path: path.clone(),
            bytes,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(msg) {
            // Several cores may drop at once: this one counter is shared, touched only when
            // lines are lost.
            DROPPED.fetch_add(lines, Relaxed);
        }
    }

    /// Reopens every file at its path (after logrotate renamed it): SIGUSR1, /reopen_logs.
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Message::Reopen);
    }
}

fn open(path: &str) -> io::Result<Box<dyn Write + Send>> {
    if path == "-" {
        return Ok(Box::new(io::stdout()));
    }
    Ok(Box::new(
        OpenOptions::new().create(true).append(true).open(path)?,
    ))
}

fn write_loop(rx: Receiver<Message>) {
    let mut files: HashMap<Arc<str>, Box<dyn Write + Send>> = HashMap::new();
    for msg in rx {
        match msg {
            Message::Lines { path, bytes } => {
                if !files.contains_key(&path) {
                    match open(&path) {
                        Ok(f) => {
                            files.insert(path.clone(), f);
                        }
                        Err(e) => {
                            tracing::warn!(path = %path, "cannot open the access log: {e}");
                            continue;
                        }
                    }
                }
                if let Some(f) = files.get_mut(&path)
                    && let Err(e) = f.write_all(&bytes).and_then(|()| f.flush())
                {
                    tracing::warn!(path = %path, "cannot write the access log: {e}");
                    files.remove(&path);
                }
            }
            Message::Reopen => {
                // Dropped now, reopened (created anew) by the next line for each path.
                files.clear();
            }
        }
    }
}

/// Whether a log file can be written, without creating it (so that `check` leaves no file
/// behind): an existing file must open for appending, a new one needs an existing directory.
pub fn check_path(path: &str) -> Result<(), String> {
    if path == "-" {
        return Ok(());
    }
    let p = std::path::Path::new(path);
    if p.exists() {
        return OpenOptions::new()
            .append(true)
            .open(p)
            .map(drop::<File>)
            .map_err(|e| format!("cannot open {path} for appending: {e}"));
    }
    match p.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(format!(
            "cannot create {path}: {} is not a directory",
            dir.display()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_compile_or_say_why() {
        assert!(compile(DEFAULT_FORMAT).is_ok());
        let p = compile("a %REQ(User-Agent):5% b %% %DURATION%\n").unwrap();
        assert_eq!(
            p,
            vec![
                Piece(Part::Text("a ".into())),
                Piece(Part::Op(
                    Op::Req(vec![Field::Header("user-agent".into())]),
                    Some(5)
                )),
                Piece(Part::Text(" b % ".into())),
                Piece(Part::Op(Op::Duration, None)),
                Piece(Part::Text("\n".into())),
            ]
        );
        assert!(
            compile("%NOPE%")
                .unwrap_err()
                .contains("unknown operator %NOPE%")
        );
        assert!(compile("x %DURATION").unwrap_err().contains("unterminated"));
        assert!(
            compile("%REQ(:bogus)%")
                .unwrap_err()
                .contains("pseudo-header")
        );
        assert!(
            compile("%REQ(A):x%")
                .unwrap_err()
                .contains("invalid length")
        );
    }

    #[test]
    fn lines_carry_the_request_and_its_outcome() {
        let mut head = RequestHead::default();
        head.method = http::Method::POST;
        head.set_target(b"/pay?x=1");
        head.headers.append(b"host", b"shop.test");
        head.headers.append(b"user-agent", b"curl/8 \"quoted\"");
        let e = ProxyError::upstream(ErrorKind::UpstreamClosed);
        let entry = Entry {
            head: &head,
            scheme: "https",
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_millis(42),
            status: Some(502),
            error: Some(&e),
            retried: true,
            body_in: 3,
            body_out: 0,
            upstream_time: None,
            upstream_host: Some("10.0.0.7:80".parse().unwrap()),
            upstream_cluster: Some("shop"),
            route_name: None,
            peer: "192.0.2.1:5555".parse().unwrap(),
            sni: None,
            tls_version: None,
            tls_cipher: None,
            peer_subject: None,
            peer_uri_san: None,
        };
        let mut out = Vec::new();
        entry.write(&Format::Text(compile(DEFAULT_FORMAT).unwrap()), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.123Z] \"POST /pay?x=1 HTTP/1.1\" 502 UC,URX 3 0 42 - \"-\" \
             \"curl/8 \\\"quoted\\\"\" \"-\" \"shop.test\" \"10.0.0.7:80\"\n"
                .replace("\\\"quoted\\\"", "\"quoted\"")
        );
        let json = Format::Json(vec![
            ("code".into(), compile("%RESPONSE_CODE%").unwrap()),
            ("flags".into(), compile("%RESPONSE_FLAGS%").unwrap()),
            ("sni".into(), compile("%REQUESTED_SERVER_NAME%").unwrap()),
            ("ua".into(), compile("%REQ(USER-AGENT)%").unwrap()),
            (
                "peer".into(),
                compile("ip %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").unwrap(),
            ),
        ]);
        let mut out = Vec::new();
        entry.write(&json, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["code"], 502);
        assert_eq!(v["flags"], "UC,URX");
        assert_eq!(v["sni"], serde_json::Value::Null);
        assert_eq!(v["ua"], "curl/8 \"quoted\"");
        assert_eq!(v["peer"], "ip 192.0.2.1");
        assert!(out.ends_with(b"}\n"));
    }
}
