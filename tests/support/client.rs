//! Clients for end-to-end tests: raw-socket exchanges with a small HTTP/1.1 response parser, a keep-alive raw client, and a real hyper HTTP/1.1 client.
//!
//! All traffic is to loopback addresses given by the caller; every wait is bounded by a timeout.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::upstream::{Checksum, DEFAULT_TIMEOUT, PATTERN_FRAME, pattern_bytes};

/// Largest message head the parser accepts.
const MAX_HEAD: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Message parser (test use only)
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP/1.x response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedResponse {
    /// e.g. "HTTP/1.1".
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Lowercase names, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked encoding removed).
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body (lowercase names).
    pub trailers: Vec<(String, String)>,
    /// True if the body ended as its framing says (content-length reached, last chunk and
    /// trailers read, or connection closed for a close-delimited body).
    pub complete: bool,
}

impl ParsedResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_header_all(&self.headers, name)
    }

    /// Body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request read by `RawConn::read_request`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRequest {
    /// The raw head, up to and including the blank line.
    pub head: String,
    pub method: String,
    pub target: String,
    pub version: String,
    /// Lowercase names, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Decoded body.
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_header_all(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find_header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf,
    Trailers,
    UntilClose,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    /// `no_body`: the response answers a HEAD request.
    Response {
        no_body: bool,
    },
}

/// Incremental HTTP/1.x message decoder: feed it the unconsumed bytes, it says how many it used.
pub(crate) struct MessageDecoder {
    kind: Kind,
    state: State,
    head: String,
    start_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_field(line: &str) -> Result<(String, String), String> {
    let (n, v) = line
        .split_once(':')
        .ok_or_else(|| format!("header line without ':': {line:?}"))?;
    if n.is_empty() || n.contains([' ', '\t']) {
        return Err(format!("bad header name in {line:?}"));
    }
    Ok((
        n.to_ascii_lowercase(),
        v.trim_matches([' ', '\t']).to_string(),
    ))
}

fn snippet(bytes: &[u8]) -> String {
    let n = bytes.len().min(200);
    format!("{:?}", String::from_utf8_lossy(&bytes[..n]))
}

impl MessageDecoder {
    pub(crate) fn request() -> Self {
        Self::new(Kind::Request)
    }

    pub(crate) fn response(no_body: bool) -> Self {
        Self::new(Kind::Response { no_body })
    }

    fn new(kind: Kind) -> Self {
        MessageDecoder {
            kind,
            state: State::Head,
            head: String::new(),
            start_line: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn head_parsed(&self) -> bool {
        self.state != State::Head
    }

    /// Consumes from `input` (the bytes not yet consumed); `eof`: no more bytes will come.
    /// Returns how many bytes were used. Errors on malformed input.
    pub(crate) fn advance(&mut self, input: &[u8], eof: bool) -> Result<usize, String> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Head => {
                    let Some(end) = find(rest, b"\r\n\r\n") else {
                        if rest.len() > MAX_HEAD {
                            return Err(format!("message head over {MAX_HEAD} bytes"));
                        }
                        return Ok(pos);
                    };
                    self.parse_head(&rest[..end + 4])?;
                    pos += end + 4;
                }
                State::Fixed(0) => self.state = State::Done,
                State::Fixed(n) | State::ChunkData(n) => {
                    let take = (rest.len() as u64).min(n) as usize;
                    if take == 0 {
                        return Ok(pos);
                    }
                    self.body.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = n - take as u64;
                    self.state = match self.state {
                        State::Fixed(_) => State::Fixed(left),
                        _ if left == 0 => State::ChunkCrlf,
                        _ => State::ChunkData(left),
                    };
                }
                State::ChunkSize => {
                    let Some(end) = find(rest, b"\r\n") else {
                        if rest.len() > 4096 {
                            return Err("chunk-size line over 4096 bytes".to_string());
                        }
                        return Ok(pos);
                    };
                    let line = String::from_utf8_lossy(&rest[..end]);
                    let size_str = line
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim_matches([' ', '\t']);
                    let size = u64::from_str_radix(size_str, 16)
                        .map_err(|_| format!("bad chunk-size line {line:?}"))?;
                    pos += end + 2;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkCrlf => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(format!(
                            "chunk data not followed by CRLF: {}",
                            snippet(rest)
                        ));
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(end) = find(rest, b"\r\n") else {
                        if rest.len() > MAX_HEAD {
                            return Err("trailer section too large".to_string());
                        }
                        return Ok(pos);
                    };
                    let line = String::from_utf8_lossy(&rest[..end]).into_owned();
                    pos += end + 2;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else {
                        let field = parse_field(&line)?;
                        self.trailers.push(field);
                    }
                }
                State::UntilClose => {
                    self.body.extend_from_slice(rest);
                    pos += rest.len();
                    if eof {
                        self.state = State::Done;
                    }
                    return Ok(pos);
                }
            }
        }
    }

    fn parse_head(&mut self, raw: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| format!("message head is not UTF-8: {}", snippet(raw)))?;
        self.head = text.to_string();
        let mut lines = text[..text.len() - 4].split("\r\n");
        self.start_line = lines.next().unwrap_or("").to_string();
        for line in lines {
            self.headers.push(parse_field(line)?);
        }
        let mut parts = self.start_line.splitn(3, ' ');
        let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let chunked = find_header_all(&self.headers, "transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .next_back()
            .map(|c| c == "chunked");
        let length = self.content_length()?;
        self.state = match self.kind {
            Kind::Request => {
                if !a.chars().all(|c| c.is_ascii_uppercase()) || a.is_empty() || b.is_empty() {
                    return Err(format!("bad request line {:?}", self.start_line));
                }
                match (chunked, length) {
                    (Some(true), _) => State::ChunkSize,
                    (Some(false), _) => {
                        return Err("request with non-chunked transfer-encoding".to_string());
                    }
                    (None, Some(n)) => State::Fixed(n),
                    (None, None) => State::Done,
                }
            }
            Kind::Response { no_body } => {
                if !a.starts_with("HTTP/") {
                    return Err(format!("bad status line {:?}", self.start_line));
                }
                let status: u16 = b
                    .parse()
                    .ok()
                    .filter(|s| (100..1000).contains(s) && b.len() == 3)
                    .ok_or_else(|| format!("bad status code in {:?}", self.start_line))?;
                if no_body || (100..200).contains(&status) || status == 204 || status == 304 {
                    State::Done
                } else {
                    match (chunked, length) {
                        (Some(true), _) => State::ChunkSize,
                        (Some(false), _) => State::UntilClose,
                        (None, Some(n)) => State::Fixed(n),
                        (None, None) => State::UntilClose,
                    }
                }
            }
        };
        Ok(())
    }

    fn content_length(&self) -> Result<Option<u64>, String> {
        let mut found: Option<u64> = None;
        for v in find_header_all(&self.headers, "content-length") {
            for part in v.split(',') {
                let part = part.trim();
                let n: u64 = part
                    .parse()
                    .ok()
                    .filter(|_| part.bytes().all(|c| c.is_ascii_digit()))
                    .ok_or_else(|| format!("bad content-length {v:?}"))?;
                if found.is_some_and(|f| f != n) {
                    return Err(format!("conflicting content-length values: {v:?}"));
                }
                found = Some(n);
            }
        }
        Ok(found)
    }

    pub(crate) fn into_response(self) -> ParsedResponse {
        let mut parts = self.start_line.splitn(3, ' ');
        ParsedResponse {
            version: parts.next().unwrap_or("").to_string(),
            status: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            reason: parts.next().unwrap_or("").to_string(),
            complete: self.state == State::Done,
            headers: self.headers,
            body: self.body,
            trailers: self.trailers,
        }
    }

    pub(crate) fn into_request(self) -> Option<RawRequest> {
        if !self.head_parsed() {
            return None;
        }
        let mut parts = self.start_line.splitn(3, ' ');
        Some(RawRequest {
            method: parts.next().unwrap_or("").to_string(),
            target: parts.next().unwrap_or("").to_string(),
            version: parts.next().unwrap_or("").to_string(),
            head: self.head,
            headers: self.headers,
            body: self.body,
            trailers: self.trailers,
        })
    }
}

/// Parses every response in `bytes`; `eof`: the connection was closed after them.
fn parse_responses(bytes: &[u8], eof: bool) -> Result<Vec<ParsedResponse>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let mut dec = MessageDecoder::response(false);
        let used = dec
            .advance(&bytes[pos..], eof)
            .map_err(|e| format!("response #{} at byte {pos}: {e}", out.len() + 1))?;
        if !dec.head_parsed() {
            return Err(format!(
                "response #{} at byte {pos}: incomplete head: {}",
                out.len() + 1,
                snippet(&bytes[pos..])
            ));
        }
        pos += used;
        let done = dec.is_done();
        out.push(dec.into_response());
        if !done {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// raw_exchange
// ---------------------------------------------------------------------------------------------

/// What [`raw_exchange`] read.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The peer closed (EOF or reset) before the timeout.
    pub closed: bool,
    /// The close was a reset (ECONNRESET / ECONNABORTED).
    pub reset: bool,
}

impl RawResponse {
    /// Status code of the first response, if the bytes start with a status line.
    pub fn status(&self) -> Option<u16> {
        let line_end = find(&self.bytes, b"\r\n")?;
        let line = std::str::from_utf8(&self.bytes[..line_end]).ok()?;
        let mut parts = line.split(' ');
        if !parts.next()?.starts_with("HTTP/") {
            return None;
        }
        let code = parts.next()?;
        if code.len() != 3 {
            return None;
        }
        code.parse().ok()
    }

    /// Every response in the bytes, in order; the last may be incomplete (`complete == false`).
    /// Panics with a clear message if the bytes are not well-formed responses.
    pub fn responses(&self) -> Vec<ParsedResponse> {
        self.try_responses().unwrap_or_else(|e| {
            panic!(
                "raw response bytes do not parse: {e}; bytes: {}",
                self.text()
            )
        })
    }

    /// Like [`responses`](Self::responses), but malformed bytes are an `Err`.
    pub fn try_responses(&self) -> Result<Vec<ParsedResponse>, String> {
        parse_responses(&self.bytes, self.closed)
    }

    /// Every byte as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// Connects, writes `request` (write errors are ignored: the peer may close early), then reads
/// until the peer closes or `timeout` (overall, from the call) passes. Panics if the connect fails.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    let deadline = Instant::now() + timeout;
    let mut s = connect(addr, timeout);
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.write_all(request);
    let mut bytes = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return RawResponse {
                bytes,
                closed: false,
                reset: false,
            };
        }
        let _ = s.set_read_timeout(Some(deadline - now));
        match s.read(&mut tmp) {
            Ok(0) => {
                return RawResponse {
                    bytes,
                    closed: true,
                    reset: false,
                };
            }
            Ok(n) => bytes.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_reset(e.kind()) => {
                return RawResponse {
                    bytes,
                    closed: true,
                    reset: true,
                };
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("raw_exchange with {addr}: read error: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RawClient
// ---------------------------------------------------------------------------------------------

/// A keep-alive raw-socket client. Bytes read beyond one response are kept for the next.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    reset: bool,
}

enum Fill {
    Data,
    Eof,
    Timeout,
}

impl RawClient {
    /// Connects (10 s bound); panics on failure.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = connect(addr, DEFAULT_TIMEOUT);
        let _ = stream.set_write_timeout(Some(DEFAULT_TIMEOUT));
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
            reset: false,
        }
    }

    /// A second handle on the connection, to write from another thread while this one reads.
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream
            .try_clone()
            .expect("RawClient: clone the stream")
    }

    /// Writes all bytes; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("RawClient::send failed: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-close: sends FIN; reading stays possible.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("RawClient: local_addr")
    }

    /// Bytes received beyond the responses read so far.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    fn fill(&mut self, deadline: Instant) -> Result<Fill, String> {
        if self.eof {
            return Ok(Fill::Eof);
        }
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Fill::Timeout);
            }
            let _ = self.stream.set_read_timeout(Some(deadline - now));
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(Fill::Eof);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(Fill::Data);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if is_reset(e.kind()) => {
                    self.eof = true;
                    self.reset = true;
                    return Ok(Fill::Eof);
                }
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    fn read_one(&mut self, timeout: Duration, no_body: bool) -> Result<ParsedResponse, String> {
        let deadline = Instant::now() + timeout;
        let mut dec = MessageDecoder::response(no_body);
        loop {
            let used = dec.advance(&self.buf, self.eof)?;
            self.buf.drain(..used);
            if dec.is_done() {
                return Ok(dec.into_response());
            }
            let had_head = dec.head_parsed();
            match self.fill(deadline)? {
                Fill::Data => {}
                Fill::Eof if !self.buf.is_empty() || dec.state == State::UntilClose => {
                    // Let the decoder see the EOF (completes a close-delimited body).
                    let used = dec.advance(&self.buf, true)?;
                    self.buf.drain(..used);
                    if dec.is_done() {
                        return Ok(dec.into_response());
                    }
                    return Err(self.partial_err("connection closed", dec, had_head));
                }
                Fill::Eof => return Err(self.partial_err("connection closed", dec, had_head)),
                Fill::Timeout => {
                    return Err(self.partial_err(
                        &format!("timed out after {timeout:?}"),
                        dec,
                        had_head,
                    ));
                }
            }
        }
    }

    fn partial_err(&self, what: &str, dec: MessageDecoder, had_head: bool) -> String {
        let how = if self.reset { " (reset)" } else { "" };
        if had_head {
            let r = dec.into_response();
            format!(
                "{what}{how} in the middle of a response: status {}, {} body bytes so far, headers {:?}",
                r.status,
                r.body.len(),
                r.headers
            )
        } else {
            format!(
                "{what}{how} before a full response head; buffered: {}",
                snippet(&self.buf)
            )
        }
    }

    /// Reads exactly one full response (content-length, chunked, or until close); panics if none
    /// arrives complete within `timeout`.
    pub fn read_response(&mut self, timeout: Duration) -> ParsedResponse {
        self.try_read_response(timeout)
            .unwrap_or_else(|e| panic!("RawClient::read_response: {e}"))
    }

    /// Like [`read_response`](Self::read_response), errors as `Err`.
    pub fn try_read_response(&mut self, timeout: Duration) -> Result<ParsedResponse, String> {
        self.read_one(timeout, false)
    }

    /// Reads one response to a HEAD request (head only, whatever its content-length says).
    pub fn read_head_response(&mut self, timeout: Duration) -> ParsedResponse {
        self.read_one(timeout, true)
            .unwrap_or_else(|e| panic!("RawClient::read_head_response: {e}"))
    }

    /// True if the peer closes (EOF or reset) within `timeout`. Bytes that arrive meanwhile are
    /// kept in the buffer ([`leftover`](Self::leftover)).
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(Fill::Data) => {}
                Ok(Fill::Eof) => return true,
                Ok(Fill::Timeout) => return false,
                Err(_) => return true,
            }
        }
    }

    /// True if the close seen was a reset.
    pub fn was_reset(&self) -> bool {
        self.reset
    }
}

// ---------------------------------------------------------------------------------------------
// HttpClient (hyper)
// ---------------------------------------------------------------------------------------------

/// A request body for [`HttpClient`].
#[derive(Clone, Debug)]
pub enum Body {
    Empty,
    /// Sent with content-length.
    Bytes(Vec<u8>),
    /// `len` pattern bytes (see `upstream::pattern_bytes`) streamed in 64 KiB frames, never
    /// wholly in memory; `chunked`: no content-length, so hyper uses chunked encoding.
    Pattern {
        len: u64,
        chunked: bool,
    },
}

/// A response with its body collected.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    /// Lowercase names (hyper groups the values of one name together).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_header_all(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response whose body was consumed frame by frame, only measured.
#[derive(Clone, Debug)]
pub struct StreamedResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// `upstream::Checksum` (FNV-1a) of the body.
    pub body_checksum: u64,
}

impl StreamedResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        find_header_all(&self.headers, name)
    }
}

enum ReqBody {
    Full(Option<Bytes>),
    Pattern { sent: u64, len: u64, chunked: bool },
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ReqBody::Pattern { sent, len, .. } => {
                if *sent >= *len {
                    return Poll::Ready(None);
                }
                let n = (*len - *sent).min(PATTERN_FRAME as u64) as usize;
                let chunk = pattern_bytes(*sent, n);
                *sent += n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ReqBody::Pattern { sent, len, .. } => sent >= len,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Pattern { chunked: true, .. } => SizeHint::default(),
            ReqBody::Pattern { sent, len, .. } => SizeHint::with_exact(len - sent),
        }
    }
}

/// An error and its chain of causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A real HTTP/1.1 client (hyper) over one keep-alive TCP connection, driven by a private
/// current-thread tokio runtime that each blocking method runs. Every call is bounded by the
/// client's timeout (default 10 s). Do not use it from inside an async runtime.
pub struct HttpClient {
    addr: SocketAddr,
    timeout: Duration,
    sender: SendRequest<ReqBody>,
    conn: Option<tokio::task::JoinHandle<Result<(), hyper::Error>>>,
    rt: tokio::runtime::Runtime,
}

impl HttpClient {
    /// Connects and completes the HTTP/1 handshake.
    pub fn connect(addr: SocketAddr) -> Result<HttpClient, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let timeout = DEFAULT_TIMEOUT;
        let (sender, conn) = rt.block_on(async {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect to {addr} timed out after {timeout:?}"))?
                .map_err(|e| format!("connect to {addr} failed: {e}"))?;
            let _ = stream.set_nodelay(true);
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake with {addr} failed: {}", error_chain(&e)))
        })?;
        let conn = rt.spawn(conn);
        Ok(HttpClient {
            addr,
            timeout,
            sender,
            conn: Some(conn),
            rt,
        })
    }

    /// Bound for each later call (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path` with `Host: host`, body collected.
    pub fn get(&mut self, path: &str, host: &str) -> Result<Resp, String> {
        self.request("GET", path, &[("host", host)], Body::Empty)
    }

    /// Sends exactly the given headers (include `host` yourself); hyper adds only framing
    /// headers (content-length / transfer-encoding). The response body is collected; a
    /// truncated or malformed response is an `Err`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Resp, String> {
        let req = build_request(method, path, headers, body)?;
        let what = format!("{method} {path}");
        self.run(&what, |sender| async move {
            let resp = exchange(sender, req).await?;
            let status = resp.status().as_u16();
            let headers = header_pairs(resp.headers());
            let mut body = resp.into_body();
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    format!(
                        "response body error after {} bytes (status {status}): {}",
                        out.len(),
                        error_chain(&e)
                    )
                })?;
                if let Some(d) = frame.data_ref() {
                    out.extend_from_slice(d);
                }
            }
            Ok(Resp {
                status,
                headers,
                body: out,
            })
        })
    }

    /// Like [`request`](Self::request), but the response body is consumed frame by frame and only
    /// its length and checksum are kept (for multi-MiB bodies).
    pub fn request_streaming(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<StreamedResp, String> {
        let req = build_request(method, path, headers, body)?;
        let what = format!("{method} {path}");
        self.run(&what, |sender| async move {
            let resp = exchange(sender, req).await?;
            let status = resp.status().as_u16();
            let headers = header_pairs(resp.headers());
            let mut body = resp.into_body();
            let mut sum = Checksum::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    format!(
                        "response body error after {len} bytes (status {status}): {}",
                        error_chain(&e)
                    )
                })?;
                if let Some(d) = frame.data_ref() {
                    len += d.len() as u64;
                    sum.update(d);
                }
            }
            Ok(StreamedResp {
                status,
                headers,
                body_len: len,
                body_checksum: sum.value(),
            })
        })
    }

    /// Runs `f` on the private runtime, bounded by the client's timeout.
    fn run<'a, T, F, Fut>(&'a mut self, what: &str, f: F) -> Result<T, String>
    where
        F: FnOnce(&'a mut SendRequest<ReqBody>) -> Fut,
        Fut: Future<Output = Result<T, String>> + 'a,
    {
        let timeout = self.timeout;
        let addr = self.addr;
        let fut = f(&mut self.sender);
        self.rt.block_on(async move {
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| format!("{what} to {addr}: timed out after {timeout:?}"))?
                .map_err(|e| format!("{what} to {addr}: {e}"))
        })
    }

    /// Waits up to `timeout` for the connection to be closed (by the peer, or after an error).
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let done = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, conn).await.is_ok() });
        if done {
            self.conn = None;
        }
        done
    }
}

fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Result<Request<ReqBody>, String> {
    let (body, length) = match body {
        Body::Empty => (ReqBody::Full(None), None),
        Body::Bytes(b) => {
            let n = b.len() as u64;
            (ReqBody::Full(Some(Bytes::from(b))), Some(n))
        }
        Body::Pattern { len, chunked } => (
            ReqBody::Pattern {
                sent: 0,
                len,
                chunked,
            },
            (!chunked).then_some(len),
        ),
    };
    let mut b = Request::builder().method(method).uri(path);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let has_length = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if let (Some(n), false) = (length, has_length) {
        b = b.header("content-length", n);
    }
    b.body(body)
        .map_err(|e| format!("bad request {method} {path}: {e}"))
}

async fn exchange(
    sender: &mut SendRequest<ReqBody>,
    req: Request<ReqBody>,
) -> Result<Response<Incoming>, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not usable: {}", error_chain(&e)))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))
}
