//! A raw HTTP/2 frame client for conformance tests: h2c prior knowledge over a blocking
//! loopback `TcpStream`, arbitrary (also invalid) frames out, parsed frames and decoded
//! header blocks in, every wait bounded.
//!
//! It deliberately trusts nothing of the server's: frames are built byte by byte (RFC 9113
//! §4.1, §6), requests are HPACK-encoded as literals without indexing (RFC 7541 §6.2.2, no
//! Huffman, so the bytes on the wire are exactly what a test wrote), and responses are decoded
//! by a small but complete HPACK decoder (static and dynamic tables, Huffman) so that a status
//! the server encodes however it likes is still read correctly.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound of every wait for the server (a frame, a close, the handshake).
pub const WAIT: Duration = Duration::from_secs(5);

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

// SETTINGS identifiers (RFC 9113 §6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The name of an error code, for failure messages.
pub fn error_name(code: u32) -> &'static str {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

fn kind_name(kind: u8) -> &'static str {
    const NAMES: [&str; 10] = [
        "DATA",
        "HEADERS",
        "PRIORITY",
        "RST_STREAM",
        "SETTINGS",
        "PUSH_PROMISE",
        "PING",
        "GOAWAY",
        "WINDOW_UPDATE",
        "CONTINUATION",
    ];
    NAMES.get(kind as usize).copied().unwrap_or("UNKNOWN")
}

// ---------------------------------------------------------------------------------------------
// Frame encoding
// ---------------------------------------------------------------------------------------------

/// One frame on the wire: the 9-byte header (24-bit length, type, flags, reserved bit + 31-bit
/// stream id) and the payload as given (RFC 9113 §4.1).
pub fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 1 << 24, "frame payload too long");
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings_frame(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(settings.len() * 6);
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn headers_frame<N, V>(stream_id: u32, fields: &[(N, V)], flags: u8) -> Vec<u8>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    frame(HEADERS, flags, stream_id, &encode_block(fields))
}

pub fn data_frame(stream_id: u32, data: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream_id,
        data,
    )
}

pub fn rst_stream_frame(stream_id: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream_id, &code.to_be_bytes())
}

pub fn window_update_frame(stream_id: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream_id, &increment.to_be_bytes())
}

// ---------------------------------------------------------------------------------------------
// HPACK (RFC 7541)
// ---------------------------------------------------------------------------------------------

/// Appends `value` as an HPACK integer with an `prefix`-bit prefix, `flags` in the first
/// byte's other bits (RFC 7541 §5.1): values from 2^N-1 up continue in 7-bit groups.
pub fn encode_int(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A raw (not Huffman-coded) string literal: H=0 and a 7-bit-prefix length (RFC 7541 §5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// A header block of "literal header field without indexing — new name" representations
/// (RFC 7541 §6.2.2, first byte 0x00): stateless, so any block can be sent on any stream in
/// any order without the two sides' dynamic tables drifting apart, and names are sent exactly
/// as given (uppercase, pseudo-headers in any place, duplicates).
pub fn encode_block<N, V>(fields: &[(N, V)]) -> Vec<u8>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_string(&mut out, name.as_ref());
        encode_string(&mut out, value.as_ref());
    }
    out
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code lengths of the HPACK Huffman code for symbols 0..=255 (RFC 7541 Appendix B); EOS (256)
/// is 30 bits. The code is canonical, so the lengths alone define it.
const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// (length, code) -> symbol, built once from the canonical code lengths: symbols sorted by
/// (length, value) take consecutive codes, shifted left whenever the length grows.
fn huffman_codes() -> &'static HashMap<(u8, u32), u16> {
    static CODES: OnceLock<HashMap<(u8, u32), u16>> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut symbols: Vec<(u8, u16)> = (0..=256u16)
            .map(|s| {
                (
                    HUFFMAN_LENGTHS.get(usize::from(s)).copied().unwrap_or(30),
                    s,
                )
            })
            .collect();
        symbols.sort_unstable();
        let mut codes = HashMap::with_capacity(symbols.len());
        let mut code = 0u32;
        let mut len = symbols[0].0;
        for (l, s) in symbols {
            code <<= l - len;
            len = l;
            codes.insert((l, code), s);
            code += 1;
        }
        codes
    })
}

/// Decodes a Huffman-coded string; the padding must be at most 7 one bits (RFC 7541 §5.2).
pub fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let codes = huffman_codes();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u8);
    for byte in bytes {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            match codes.get(&(len, code)) {
                Some(256) => return Err("EOS symbol in a Huffman string".to_owned()),
                Some(&sym) => {
                    out.push(sym as u8);
                    (code, len) = (0, 0);
                }
                None if len >= 30 => return Err("invalid Huffman code".to_owned()),
                None => {}
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err("invalid Huffman padding".to_owned());
    }
    Ok(out)
}

/// Reads an HPACK integer with a `prefix`-bit prefix at `*pos` (RFC 7541 §5.1).
fn decode_int(block: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, String> {
    let max = (1usize << prefix) - 1;
    let first = *block.get(*pos).ok_or("truncated integer")?;
    *pos += 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*pos).ok_or("truncated integer")?;
        *pos += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        if shift > 28 {
            return Err("integer too large".to_owned());
        }
    }
}

fn decode_string(block: &[u8], pos: &mut usize) -> Result<Vec<u8>, String> {
    let huffman = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = decode_int(block, pos, 7)?;
    let raw = block
        .get(*pos..*pos + len)
        .ok_or("truncated string literal")?;
    *pos += len;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// The response side's HPACK decoder: the static table, a dynamic table of the default 4,096
/// octets (this client never changes SETTINGS_HEADER_TABLE_SIZE unless a test does) and
/// Huffman strings. One per connection, fed every header block in order.
pub struct HpackDecoder {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

impl Default for HpackDecoder {
    fn default() -> Self {
        HpackDecoder::with_table_size(4096)
    }
}

impl HpackDecoder {
    /// A decoder whose dynamic table holds at most `size` octets (RFC 7541 §4.2).
    pub fn with_table_size(size: usize) -> HpackDecoder {
        HpackDecoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: size,
        }
    }

    fn entry(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
        if index == 0 {
            return Err("index 0".to_owned());
        }
        if let Some((n, v)) = STATIC_TABLE.get(index - 1) {
            return Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        self.dynamic
            .get(index - STATIC_TABLE.len() - 1)
            .cloned()
            .ok_or_else(|| format!("index {index} beyond the tables"))
    }

    /// Inserts at the front, evicting from the back until the entry fits (RFC 7541 §4.4).
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.size += size;
            self.dynamic.push_front((name, value));
        }
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some((n, v)) = self.dynamic.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }

    /// Decodes one complete header block into (name, value) pairs, in order.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < block.len() {
            let b = block[pos];
            let (name, value) = if b & 0x80 != 0 {
                self.entry(decode_int(block, &mut pos, 7)?)?
            } else if b & 0xe0 == 0x20 {
                let size = decode_int(block, &mut pos, 5)?;
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal: with incremental indexing (01), without indexing (0000) or never
                // indexed (0001); a zero index means a new name follows.
                let (prefix, index) = if b & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name = match decode_int(block, &mut pos, prefix)? {
                    0 => decode_string(block, &mut pos)?,
                    i => self.entry(i)?.0,
                };
                let value = decode_string(block, &mut pos)?;
                if index {
                    self.insert(name.clone(), value.clone());
                }
                (name, value)
            };
            fields.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        Ok(fields)
    }
}

// ---------------------------------------------------------------------------------------------
// Frames read
// ---------------------------------------------------------------------------------------------

/// A frame as read. For HEADERS (and PUSH_PROMISE) the CONTINUATION frames that follow are
/// already folded in: `fields` holds the decoded header block and `flags` has END_HEADERS.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
    pub fields: Option<Vec<(String, String)>>,
}

impl Frame {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The first 32-bit word of the payload (RST_STREAM's code, WINDOW_UPDATE's increment).
    pub fn word(&self, at: usize) -> u32 {
        self.payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `:status` of a decoded response header block.
    pub fn status(&self) -> Option<u16> {
        self.field(":status").and_then(|s| s.parse().ok())
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// SETTINGS parameters in order.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}(type {:#x}) flags={:#04x} stream={} len={}",
            kind_name(self.kind),
            self.kind,
            self.flags,
            self.stream_id,
            self.payload.len()
        );
        match self.kind {
            RST_STREAM => s.push_str(&format!(" code={}", error_name(self.word(0)))),
            GOAWAY => s.push_str(&format!(
                " last_stream={} code={} debug={:?}",
                self.word(0) & 0x7fff_ffff,
                error_name(self.word(4)),
                String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default())
            )),
            _ => {}
        }
        if let Some(f) = &self.fields {
            s.push_str(&format!(" fields={f:?}"));
        }
        s
    }
}

/// How the server reacted to what was sent on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// The response's first HEADERS (informational ones skipped) and whether it ended the
    /// stream.
    Response {
        status: u16,
        fields: Vec<(String, String)>,
        end_stream: bool,
    },
    /// RST_STREAM on the stream, with its code.
    Reset(u32),
    /// GOAWAY: a connection error (or a shutdown).
    GoAway { last_stream_id: u32, code: u32 },
    /// The connection closed (FIN or TCP reset) with no GOAWAY.
    Closed,
}

/// A complete response read by [`H2Client::read_response`].
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// The stream ended with RST_STREAM (its code) rather than END_STREAM.
    pub reset: Option<u32>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What one read attempt produced.
enum Next {
    Frame(Frame),
    Closed,
    TimedOut,
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// One h2c connection. Frames the server sends are read in order; SETTINGS are acknowledged
/// as they arrive, every header block goes through the one HPACK decoder (its dynamic table
/// is connection state), and everything else is handed to the caller.
pub struct H2Client {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: HpackDecoder,
    /// The server's first SETTINGS frame, in order.
    pub server_settings: Vec<(u16, u32)>,
    /// Every frame read so far (for failure messages).
    log: Vec<String>,
    closed: bool,
}

impl H2Client {
    /// Connects, sends the preface and an empty SETTINGS frame, and waits for the server's
    /// SETTINGS (which it acknowledges).
    pub fn connect(addr: SocketAddr) -> H2Client {
        Self::connect_with(addr, &[])
    }

    /// As [`connect`](Self::connect), with these parameters in the client's SETTINGS.
    pub fn connect_with(addr: SocketAddr, settings: &[(u16, u32)]) -> H2Client {
        assert!(addr.ip().is_loopback(), "h2frames talks to loopback only");
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        let mut c = H2Client {
            stream,
            buf: Vec::new(),
            decoder: HpackDecoder::default(),
            server_settings: Vec::new(),
            log: Vec::new(),
            closed: false,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings_frame(settings));
        c.send_raw(&hello);
        let deadline = Instant::now() + WAIT;
        loop {
            match c.read(deadline) {
                Next::Frame(f) if f.kind == SETTINGS && !f.has(ACK) => {
                    c.server_settings = f.settings();
                    return c;
                }
                Next::Frame(_) => {}
                Next::Closed => panic!("closed during the handshake:\n{}", c.history()),
                Next::TimedOut => panic!("no SETTINGS from the server within {WAIT:?}"),
            }
        }
    }

    /// The value the server's SETTINGS gave `id`, if it sent one.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Writes bytes as they are; a failure (the server already closed) is returned, not a
    /// panic, since tests of connection errors often write into a closing connection.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            panic!("write {} bytes: {e}\n{}", bytes.len(), self.history());
        }
    }

    /// Writes `bytes` from another thread (write timeout [`WAIT`]) so that the caller can
    /// read while a large burst is still going out; the handle gives the write's result.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<std::io::Result<()>> {
        let mut s = self.stream.try_clone().expect("clone socket");
        std::thread::spawn(move || s.write_all(&bytes))
    }

    pub fn send_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        self.send_raw(&frame(kind, flags, stream_id, payload));
    }

    /// HEADERS with the fields encoded as literals; `flags` as given (END_STREAM,
    /// END_HEADERS...).
    pub fn headers<N, V>(&mut self, stream_id: u32, fields: &[(N, V)], flags: u8)
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.send_raw(&headers_frame(stream_id, fields, flags));
    }

    /// A complete request head in one HEADERS frame (END_HEADERS, END_STREAM if `end_stream`).
    pub fn request<N, V>(&mut self, stream_id: u32, fields: &[(N, V)], end_stream: bool)
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.headers(stream_id, fields, flags);
    }

    pub fn continuation(&mut self, stream_id: u32, block: &[u8], end_headers: bool) {
        let flags = if end_headers { END_HEADERS } else { 0 };
        self.send_frame(CONTINUATION, flags, stream_id, block);
    }

    pub fn data(&mut self, stream_id: u32, data: &[u8], end_stream: bool) {
        self.send_raw(&data_frame(stream_id, data, end_stream));
    }

    pub fn rst_stream(&mut self, stream_id: u32, code: u32) {
        self.send_raw(&rst_stream_frame(stream_id, code));
    }

    pub fn window_update(&mut self, stream_id: u32, increment: u32) {
        self.send_raw(&window_update_frame(stream_id, increment));
    }

    pub fn ping(&mut self, payload: [u8; 8], ack: bool) {
        self.send_frame(PING, if ack { ACK } else { 0 }, 0, &payload);
    }

    pub fn settings(&mut self, settings: &[(u16, u32)]) {
        self.send_raw(&settings_frame(settings));
    }

    /// PRIORITY (RFC 9113 §6.3): exclusive bit + 31-bit dependency, then the weight.
    pub fn priority(&mut self, stream_id: u32, depends_on: u32, weight: u8, exclusive: bool) {
        let dep = (depends_on & 0x7fff_ffff) | if exclusive { 0x8000_0000 } else { 0 };
        let mut payload = dep.to_be_bytes().to_vec();
        payload.push(weight);
        self.send_frame(PRIORITY, 0, stream_id, &payload);
    }

    pub fn goaway(&mut self, last_stream_id: u32, code: u32) {
        let mut payload = (last_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&code.to_be_bytes());
        self.send_frame(GOAWAY, 0, 0, &payload);
    }

    /// Reads one frame, waiting until `deadline`. Header blocks are decoded (CONTINUATION
    /// folded in); server SETTINGS are acknowledged.
    fn read(&mut self, deadline: Instant) -> Next {
        let first = match self.read_one(deadline) {
            Next::Frame(f) => f,
            other => return other,
        };
        let mut f = first;
        if f.kind == HEADERS || f.kind == PUSH_PROMISE {
            let mut block = header_block_fragment(&f);
            while !f.has(END_HEADERS) {
                match self.read_one(deadline) {
                    Next::Frame(c) if c.kind == CONTINUATION && c.stream_id == f.stream_id => {
                        block.extend_from_slice(&c.payload);
                        f.flags |= c.flags & END_HEADERS;
                    }
                    Next::Frame(c) => panic!(
                        "server broke a header block with {}\n{}",
                        c.describe(),
                        self.history()
                    ),
                    other => return other,
                }
            }
            match self.decoder.decode(&block) {
                Ok(fields) => f.fields = Some(fields),
                Err(e) => panic!("HPACK decoding of the server's block failed: {e}"),
            }
        }
        self.log.push(f.describe());
        if f.kind == SETTINGS && !f.has(ACK) && f.stream_id == 0 {
            // Acknowledging is mandatory (RFC 9113 §6.5.3); a failed write means the server
            // is closing, which the next read will tell.
            let _ = self.try_send_raw(&frame(SETTINGS, ACK, 0, &[]));
        }
        Next::Frame(f)
    }

    /// Reads one raw frame.
    fn read_one(&mut self, deadline: Instant) -> Next {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Next::Frame(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream_id: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                        fields: None,
                    });
                }
            }
            if self.closed {
                return Next::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .expect("read timeout");
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset (the server closed with our bytes unread) ends the connection just
                // as a FIN does; what was read before it stays readable.
                Err(_) => self.closed = true,
            }
        }
    }

    /// The next frame, or None when the connection closed; panics after [`WAIT`].
    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.read(Instant::now() + WAIT) {
            Next::Frame(f) => Some(f),
            Next::Closed => None,
            Next::TimedOut => panic!("no frame within {WAIT:?}\n{}", self.history()),
        }
    }

    /// How the server answered on `stream_id`: its response HEADERS, an RST_STREAM, a GOAWAY
    /// or a close, whichever comes first. Frames of other streams, WINDOW_UPDATE, SETTINGS and
    /// PING are skipped. Panics after [`WAIT`].
    pub fn reaction(&mut self, stream_id: u32) -> Reaction {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline) {
                Next::Frame(f) => match f.kind {
                    GOAWAY => {
                        return Reaction::GoAway {
                            last_stream_id: f.word(0) & 0x7fff_ffff,
                            code: f.word(4),
                        };
                    }
                    RST_STREAM if f.stream_id == stream_id => return Reaction::Reset(f.word(0)),
                    HEADERS if f.stream_id == stream_id => {
                        let status = f.status().unwrap_or_else(|| {
                            panic!("response HEADERS without :status: {}", f.describe())
                        });
                        if (100..200).contains(&status) {
                            continue;
                        }
                        return Reaction::Response {
                            status,
                            fields: f.fields.clone().unwrap_or_default(),
                            end_stream: f.has(END_STREAM),
                        };
                    }
                    _ => {}
                },
                Next::Closed => return Reaction::Closed,
                Next::TimedOut => panic!(
                    "no reaction on stream {stream_id} within {WAIT:?}\n{}",
                    self.history()
                ),
            }
        }
    }

    /// Expects RST_STREAM on `stream_id` and returns its code.
    pub fn expect_rst(&mut self, stream_id: u32) -> u32 {
        match self.reaction(stream_id) {
            Reaction::Reset(code) => code,
            other => panic!(
                "expected RST_STREAM on stream {stream_id}, got {other:?}\n{}",
                self.history()
            ),
        }
    }

    /// Skips frames until a GOAWAY and returns (last stream id, error code).
    pub fn expect_goaway(&mut self) -> (u32, u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline) {
                Next::Frame(f) if f.kind == GOAWAY => return (f.word(0) & 0x7fff_ffff, f.word(4)),
                Next::Frame(_) => {}
                Next::Closed => panic!("closed without GOAWAY\n{}", self.history()),
                Next::TimedOut => panic!("no GOAWAY within {WAIT:?}\n{}", self.history()),
            }
        }
    }

    /// Expects the response HEADERS on `stream_id`: (status, END_STREAM set).
    pub fn expect_response_headers(&mut self, stream_id: u32) -> (u16, bool) {
        match self.reaction(stream_id) {
            Reaction::Response {
                status, end_stream, ..
            } => (status, end_stream),
            other => panic!(
                "expected a response on stream {stream_id}, got {other:?}\n{}",
                self.history()
            ),
        }
    }

    /// Reads a whole response on `stream_id`: head, DATA, trailers, until END_STREAM or
    /// RST_STREAM. The body is acknowledged with WINDOW_UPDATEs so a large one cannot stall.
    pub fn read_response(&mut self, stream_id: u32) -> Response {
        let mut r = Response::default();
        match self.reaction(stream_id) {
            Reaction::Response {
                status,
                fields,
                end_stream,
            } => {
                r.status = status;
                r.fields = fields;
                if end_stream {
                    return r;
                }
            }
            Reaction::Reset(code) => {
                r.reset = Some(code);
                return r;
            }
            other => panic!(
                "expected a response on stream {stream_id}, got {other:?}\n{}",
                self.history()
            ),
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self.read(deadline) {
                Next::Frame(f) if f.stream_id == stream_id => match f.kind {
                    DATA => {
                        let data = data_payload(&f);
                        r.body.extend_from_slice(data);
                        if !f.payload.is_empty() && !f.has(END_STREAM) {
                            let n = f.payload.len() as u32;
                            let _ = self.try_send_raw(&window_update_frame(0, n));
                            let _ = self.try_send_raw(&window_update_frame(stream_id, n));
                        }
                        if f.has(END_STREAM) {
                            return r;
                        }
                    }
                    HEADERS => {
                        r.trailers = f.fields.clone().unwrap_or_default();
                        return r;
                    }
                    RST_STREAM => {
                        r.reset = Some(f.word(0));
                        return r;
                    }
                    _ => {}
                },
                Next::Frame(f) if f.kind == GOAWAY && f.word(0) & 0x7fff_ffff < stream_id => {
                    panic!("GOAWAY before stream {stream_id} ended\n{}", self.history())
                }
                Next::Frame(_) => {}
                Next::Closed => {
                    panic!("closed before stream {stream_id} ended\n{}", self.history())
                }
                Next::TimedOut => panic!(
                    "stream {stream_id} did not end within {WAIT:?}\n{}",
                    self.history()
                ),
            }
        }
    }

    /// Reads (and returns) every frame until the server closes the connection; panics if it
    /// is still open after [`WAIT`].
    pub fn read_until_closed(&mut self) -> Vec<Frame> {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            match self.read(deadline) {
                Next::Frame(f) => frames.push(f),
                Next::Closed => return frames,
                Next::TimedOut => {
                    panic!("connection still open {WAIT:?} later\n{}", self.history())
                }
            }
        }
    }

    /// The frames read so far, one a line (the last 40), for failure messages.
    pub fn history(&self) -> String {
        let from = self.log.len().saturating_sub(40);
        let mut s = format!("frames read ({} in all):\n", self.log.len());
        for line in &self.log[from..] {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// HEADERS' header block fragment: without padding and priority fields (RFC 9113 §6.2).
fn header_block_fragment(f: &Frame) -> Vec<u8> {
    let mut p = &f.payload[..];
    let mut pad = 0;
    if f.has(PADDED) && !p.is_empty() {
        pad = usize::from(p[0]);
        p = &p[1..];
    }
    if f.kind == HEADERS && f.has(PRIORITY_FLAG) {
        p = p.get(5..).unwrap_or_default();
    }
    if f.kind == PUSH_PROMISE {
        p = p.get(4..).unwrap_or_default();
    }
    p[..p.len().saturating_sub(pad)].to_vec()
}

/// DATA's content without padding (RFC 9113 §6.1).
fn data_payload(f: &Frame) -> &[u8] {
    if f.has(PADDED) && !f.payload.is_empty() {
        let pad = usize::from(f.payload[0]);
        let p = &f.payload[1..];
        &p[..p.len().saturating_sub(pad)]
    } else {
        &f.payload
    }
}
