//! HTTP/1 body framing: the strict chunked decoder, the body decoder over every framing, and the body encoder.
//!
//! Everything here is incremental and allocation-free: decoders never buffer input (every byte
//! they are given is either consumed or, after the body ends, left for the next message), and
//! the encoder only grows the caller's output buffer.
//!
//! The chunked decoder is deliberately strict. Request smuggling (RFC 9112 §11.2) happens when
//! two hops disagree about where a body ends; lenient chunk parsing — accepting a bare LF as a
//! line end, ignoring junk after chunk data, truncating oversized chunk sizes, tolerating
//! whitespace or `0x` prefixes — is the classic way two parsers come to disagree. Anything that is
//! not exactly the RFC 9112 §7.1 grammar is therefore an error, and the connection must be closed.

use std::ops::Range;

use memchr::memchr2;

use crate::message::{BodyLength, Headers};

/// Upper bound on one chunk-size line (size, extensions and CRLF). RFC 9112 §7.1.1 lets a
/// recipient limit extension length; without a cap an attacker could stream extensions forever.
const MAX_SIZE_LINE: usize = 1024;

/// 16 significant hex digits exactly fill a u64, so a 17th is an overflow (RFC 9112 §7.1:
/// "anticipate potentially large hexadecimal numerals and prevent parsing errors due to integer
/// conversion overflows"). Silently wrapping the size is a smuggling vector.
const MAX_SIZE_DIGITS: u8 = 16;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (e.g. a GET without Content-Length, a 204 or 304 response).
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// The body runs until the connection closes (responses only).
    Close,
}

impl Framing {
    /// The framing that carries a body of `length` on HTTP/1; a body of unknown length goes
    /// `unknown` (chunked, or close-delimited to a 1.0 client).
    pub fn for_length(length: BodyLength, unknown: Framing) -> Framing {
        match length {
            BodyLength::Empty => Framing::None,
            BodyLength::Known(n) => Framing::Length(n),
            BodyLength::Unknown => unknown,
        }
    }

    /// The body length this framing announces.
    pub fn length(self) -> BodyLength {
        match self {
            Framing::None => BodyLength::Empty,
            Framing::Length(n) => BodyLength::Known(n),
            Framing::Chunked | Framing::Close => BodyLength::Unknown,
        }
    }
}

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every input byte was consumed and the body is not finished: read more.
    NeedMore,
    /// Body data at this range of the input given to decode() (range lies within the consumed bytes).
    Data(Range<usize>),
    /// The body is complete; bytes after `consumed` belong to the next message.
    Done,
}

/// Why a body could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The chunk size is empty or is not made of hex digits only.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// The chunk size does not fit in 64 bits, or its line is too long.
    #[error("chunk size too large")]
    ChunkSizeTooLarge,
    /// The chunk extension does not match the RFC 9112 grammar, or is too long.
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    /// A bare LF, or a byte other than CRLF where a line must end.
    #[error("missing CRLF in chunked framing")]
    MissingCrlf,
    /// A trailer field line is malformed.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The trailer section exceeds the configured limit.
    #[error("trailer section too large")]
    TrailerTooLarge,
    /// The stream ended before the body was complete.
    #[error("body truncated by end of stream")]
    Truncated,
    /// More body data than the framing allows.
    #[error("body longer than its declared length")]
    TooLong,
    /// The body ended before its declared length.
    #[error("body shorter than its declared length")]
    TooShort,
}

/// Where the chunked decoder is in the RFC 9112 §7.1 grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line: a hex digit is required.
    SizeStart,
    /// Inside the hex digits of the chunk size.
    SizeDigits,
    /// BWS after the size or after an extension; only `;` may follow (trailing BWS before CRLF
    /// is not in the grammar).
    SizeBws,
    /// After `;`: optional BWS then an ext-name.
    ExtNameStart,
    /// Inside an ext-name token.
    ExtName,
    /// BWS after an ext-name; `=` or `;` must follow.
    ExtNameBws,
    /// After `=`: optional BWS then a token or quoted-string.
    ExtValueStart,
    /// Inside a token ext-val.
    ExtToken,
    /// Inside a quoted-string ext-val.
    ExtQuoted,
    /// After a backslash in a quoted-string.
    ExtQuotedPair,
    /// After the closing quote of a quoted-string.
    ExtValueEnd,
    /// After the CR that ends a chunk-size line.
    SizeLf,
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data: CR required.
    DataCr,
    /// After chunk data and CR: LF required.
    DataLf,
    /// Start of a trailer field line, or of the final empty line.
    TrailerLineStart,
    /// Inside a trailer field-name.
    TrailerName,
    /// Inside a trailer field-value.
    TrailerValue,
    /// After the CR that ends a trailer field line.
    TrailerLf,
    /// After the CR of the final empty line.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

impl State {
    /// States that belong to a chunk-size line, counted against `MAX_SIZE_LINE`.
    fn in_size_line(self) -> bool {
        matches!(
            self,
            State::SizeStart
                | State::SizeDigits
                | State::SizeBws
                | State::ExtNameStart
                | State::ExtName
                | State::ExtNameBws
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtValueEnd
                | State::SizeLf
        )
    }

    /// States whose bytes belong to a trailer field line, counted against the trailer limit.
    fn in_trailer_field(self) -> bool {
        matches!(
            self,
            State::TrailerLineStart | State::TrailerName | State::TrailerValue | State::TrailerLf
        )
    }

    /// States in which an LF is legal: only right after a CR. Anywhere else an LF is a bare LF,
    /// which RFC 9112 §2.2 lets some recipients treat as a line end; we must not, because a
    /// peer that disagrees would frame the body differently.
    fn expects_lf(self) -> bool {
        matches!(
            self,
            State::SizeLf | State::DataLf | State::TrailerLf | State::TrailerEndLf
        )
    }
}

/// tchar (RFC 9110 §5.6.2), used for ext-name, token ext-val and trailer field-name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// qdtext (RFC 9110 §5.6.4): HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// The byte after a backslash in a quoted-pair: HTAB / SP / VCHAR / obs-text.
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

/// A byte of a field-value (RFC 9110 §5.5): VCHAR, obs-text, SP or HTAB; no other CTL. CR and
/// LF are excluded so that a value can never contain a line end.
fn is_field_value_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Strict, incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// It never buffers body data: input may be split at any byte and the decoder's state carries
/// across calls. Extensions are validated and discarded; trailer fields are validated and kept
/// (bounded by the trailer limit) for the next hop.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk size accumulated so far on the current size line.
    size: u64,
    /// Significant (non-leading-zero) hex digits in `size`.
    size_digits: u8,
    /// Bytes of the current size line seen so far.
    line_len: usize,
    /// Bytes of trailer field lines seen so far.
    trailer_len: usize,
    max_trailer_bytes: usize,
    /// The trailer section's field lines as received (name ':' value, each line ended by LF),
    /// then the fields; boxed and allocated only when a body has trailers, so that a decoder
    /// (which every connection holds) stays small.
    trailers: Option<Box<Trailers>>,
    /// Once decoding fails, the same error is returned forever: the framing is lost.
    error: Option<BodyError>,
}

#[derive(Debug, Clone, Default)]
struct Trailers {
    raw: Vec<u8>,
    fields: Headers,
}

/// Whether a trailer field may be passed on. Fields that frame, route, authenticate or
/// describe the message must not be sent as trailers (RFC 9110 §6.5.1), and hop-by-hop fields
/// never travel: a recipient that merged them into the head would be misled.
fn forwardable_trailer(name: &[u8]) -> bool {
    const DENIED: [&[u8]; 16] = [
        b"content-length",
        b"transfer-encoding",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"authorization",
        b"proxy-authorization",
        b"set-cookie",
        b"expect",
    ];
    !DENIED.iter().any(|d| d.eq_ignore_ascii_case(name))
}

impl ChunkedDecoder {
    /// A decoder that accepts a trailer section of at most `max_trailer_bytes` bytes (field
    /// lines with their CRLFs, not counting the final empty line).
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            size_digits: 0,
            line_len: 0,
            trailer_len: 0,
            max_trailer_bytes,
            trailers: None,
            error: None,
        }
    }

    /// The trailer fields that may be passed on, once the body is complete (None when it had
    /// none).
    pub fn trailers(&self) -> Option<&Headers> {
        self.trailers
            .as_deref()
            .filter(|_| self.is_done())
            .map(|t| &t.fields)
            .filter(|f| !f.is_empty())
    }

    /// Keeps bytes of a trailer field line.
    fn keep_trailer(&mut self, bytes: &[u8]) {
        self.trailers
            .get_or_insert_with(Box::default)
            .raw
            .extend_from_slice(bytes);
    }

    /// Turns the kept field lines into fields, at the end of the trailer section.
    fn collect_trailers(&mut self) {
        let Some(t) = self.trailers.as_deref_mut() else {
            return;
        };
        let Trailers { raw, fields } = t;
        for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(colon) = memchr::memchr(b':', line) {
                let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
                if forwardable_trailer(name) {
                    fields.append(name, value);
                }
            }
        }
    }

    /// Consumes framing and returns at most one data range per call; returns (consumed, step).
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Step), BodyError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let result = self.run(input);
        if let Err(err) = &result {
            self.error = Some(err.clone());
        }
        result
    }

    /// True once the final CRLF of the trailer section has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn run(&mut self, input: &[u8]) -> Result<(usize, Step), BodyError> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match self.state {
                State::Done => return Ok((pos, Step::Done)),
                State::Data { remaining } => {
                    if rest.is_empty() {
                        return Ok((pos, Step::NeedMore));
                    }
                    // The largest range available: the rest of the chunk or of the input.
                    let n = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok((pos + n, Step::Data(pos..pos + n)));
                }
                State::TrailerValue => {
                    // Fast path: find the end of the value with memchr and validate it in one
                    // go. It must fail exactly as the byte-at-a-time path would (size limit
                    // checked before validity for each byte) so results do not depend on how
                    // the input was split.
                    let value_end = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    let budget = self.max_trailer_bytes.saturating_sub(self.trailer_len);
                    let take = value_end.min(budget);
                    let value = rest.get(..take).unwrap_or_default();
                    if !value.iter().all(|&b| is_field_value_byte(b)) {
                        return Err(BodyError::InvalidTrailer);
                    }
                    if take < value_end {
                        return Err(BodyError::TrailerTooLarge);
                    }
                    self.keep_trailer(value);
                    self.trailer_len += take;
                    pos += take;
                    match input.get(pos) {
                        Some(&b) => {
                            pos += 1;
                            self.step_byte(b)?;
                        }
                        None => return Ok((pos, Step::NeedMore)),
                    }
                }
                _ => match rest.first() {
                    Some(&b) => {
                        pos += 1;
                        self.step_byte(b)?;
                    }
                    None => return Ok((pos, Step::NeedMore)),
                },
            }
        }
    }

    /// Adds one hex digit to the chunk size. Leading zeros are not significant, so a long run
    /// of zeros is not an overflow (it is still bounded by `MAX_SIZE_LINE`).
    fn push_digit(&mut self, digit: u8) -> Result<(), BodyError> {
        if self.size == 0 && digit == 0 {
            return Ok(());
        }
        if self.size_digits >= MAX_SIZE_DIGITS {
            return Err(BodyError::ChunkSizeTooLarge);
        }
        self.size_digits += 1;
        self.size = (self.size << 4) | u64::from(digit);
        Ok(())
    }

    /// The LF of a chunk-size line: start the chunk data, or the trailer section for the
    /// last-chunk (size 0).
    fn end_size_line(&mut self) -> State {
        let size = self.size;
        self.size = 0;
        self.size_digits = 0;
        self.line_len = 0;
        if size == 0 {
            self.trailer_len = 0;
            State::TrailerLineStart
        } else {
            State::Data { remaining: size }
        }
    }

    /// Advances the framing state machine by one byte. Never called in `Data` or `Done`.
    fn step_byte(&mut self, b: u8) -> Result<(), BodyError> {
        use BodyError::*;
        use State::*;

        // Limits first, so an endless line fails at the same byte however it is split.
        if self.state.in_size_line() {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                return Err(if matches!(self.state, SizeStart | SizeDigits) {
                    ChunkSizeTooLarge
                } else {
                    InvalidChunkExtension
                });
            }
        } else if self.state.in_trailer_field() && !(self.state == TrailerLineStart && b == b'\r') {
            // A CR at the start of a line begins the final empty line, which is not counted.
            self.trailer_len += 1;
            if self.trailer_len > self.max_trailer_bytes {
                return Err(TrailerTooLarge);
            }
        }
        if b == b'\n' && !self.state.expects_lf() {
            return Err(MissingCrlf);
        }

        let ws = b == b' ' || b == b'\t';
        self.state = match self.state {
            // chunk-size = 1*HEXDIG: no sign, no "0x", no leading whitespace, not empty.
            SizeStart => match hex_value(b) {
                Some(d) => {
                    self.push_digit(d)?;
                    SizeDigits
                }
                None => return Err(InvalidChunkSize),
            },
            SizeDigits => match hex_value(b) {
                Some(d) => {
                    self.push_digit(d)?;
                    SizeDigits
                }
                None if b == b'\r' => SizeLf,
                None if b == b';' => ExtNameStart,
                None if ws => SizeBws,
                None => return Err(InvalidChunkSize),
            },
            // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
            SizeBws => match b {
                b';' => ExtNameStart,
                _ if ws => SizeBws,
                _ => return Err(InvalidChunkExtension),
            },
            ExtNameStart => match b {
                _ if ws => ExtNameStart,
                _ if is_tchar(b) => ExtName,
                _ => return Err(InvalidChunkExtension),
            },
            ExtName => match b {
                _ if is_tchar(b) => ExtName,
                b'=' => ExtValueStart,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ if ws => ExtNameBws,
                _ => return Err(InvalidChunkExtension),
            },
            ExtNameBws => match b {
                b'=' => ExtValueStart,
                b';' => ExtNameStart,
                _ if ws => ExtNameBws,
                _ => return Err(InvalidChunkExtension),
            },
            ExtValueStart => match b {
                b'"' => ExtQuoted,
                _ if ws => ExtValueStart,
                _ if is_tchar(b) => ExtToken,
                _ => return Err(InvalidChunkExtension),
            },
            ExtToken => match b {
                _ if is_tchar(b) => ExtToken,
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ if ws => SizeBws,
                _ => return Err(InvalidChunkExtension),
            },
            ExtQuoted => match b {
                b'"' => ExtValueEnd,
                b'\\' => ExtQuotedPair,
                _ if is_qdtext(b) => ExtQuoted,
                _ => return Err(InvalidChunkExtension),
            },
            ExtQuotedPair => {
                if is_quoted_pair_char(b) {
                    ExtQuoted
                } else {
                    return Err(InvalidChunkExtension);
                }
            }
            ExtValueEnd => match b {
                b';' => ExtNameStart,
                b'\r' => SizeLf,
                _ if ws => SizeBws,
                _ => return Err(InvalidChunkExtension),
            },
            // Line ends are CRLF exactly (RFC 9112 §7.1); a CR followed by anything else is
            // rejected rather than guessed at.
            SizeLf => {
                if b == b'\n' {
                    self.end_size_line()
                } else {
                    return Err(MissingCrlf);
                }
            }
            // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF: the data must be followed
            // by CRLF immediately. Accepting extra bytes here would let a chunk carry more
            // data than its size says.
            DataCr => {
                if b == b'\r' {
                    DataLf
                } else {
                    return Err(MissingCrlf);
                }
            }
            DataLf => {
                if b == b'\n' {
                    SizeStart
                } else {
                    return Err(MissingCrlf);
                }
            }
            // trailer-section = *( field-line CRLF ), then CRLF (RFC 9112 §7.1.2). A line that
            // starts with SP/HTAB is obs-fold, which must not be accepted (RFC 9112 §5.2).
            TrailerLineStart => match b {
                b'\r' => TrailerEndLf,
                _ if is_tchar(b) => {
                    self.keep_trailer(&[b]);
                    TrailerName
                }
                _ => return Err(InvalidTrailer),
            },
            // field-name ":" with no whitespace before the colon (RFC 9112 §5.1).
            TrailerName => match b {
                _ if is_tchar(b) => {
                    self.keep_trailer(&[b]);
                    TrailerName
                }
                b':' => {
                    self.keep_trailer(b":");
                    TrailerValue
                }
                _ => return Err(InvalidTrailer),
            },
            TrailerValue => match b {
                b'\r' => TrailerLf,
                _ if is_field_value_byte(b) => {
                    self.keep_trailer(&[b]);
                    TrailerValue
                }
                _ => return Err(InvalidTrailer),
            },
            TrailerLf => {
                if b == b'\n' {
                    self.keep_trailer(b"\n");
                    TrailerLineStart
                } else {
                    return Err(MissingCrlf);
                }
            }
            TrailerEndLf => {
                if b == b'\n' {
                    self.collect_trailers();
                    Done
                } else {
                    return Err(MissingCrlf);
                }
            }
            // Unreachable: run() handles these states without calling step_byte.
            state @ (Data { .. } | Done) => state,
        };
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum DecoderKind {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// Decodes a message body in any framing (RFC 9112 §6.3).
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: DecoderKind,
}

impl BodyDecoder {
    /// A decoder for `framing`. `Framing::None` and `Length(0)` start done.
    pub fn new(framing: Framing, max_trailer_bytes: usize) -> Self {
        let kind = match framing {
            Framing::None | Framing::Length(0) => DecoderKind::Done,
            Framing::Length(remaining) => DecoderKind::Length { remaining },
            Framing::Chunked => DecoderKind::Chunked(ChunkedDecoder::new(max_trailer_bytes)),
            Framing::Close => DecoderKind::Close,
        };
        BodyDecoder { kind }
    }

    /// Decodes one step. Length: data up to the remaining length, then Done, leaving later
    /// bytes unconsumed. Close: all input is data; only `eof()` ends the body.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Step), BodyError> {
        match &mut self.kind {
            DecoderKind::Done => Ok((0, Step::Done)),
            DecoderKind::Chunked(chunked) => chunked.decode(input),
            DecoderKind::Close => {
                if input.is_empty() {
                    Ok((0, Step::NeedMore))
                } else {
                    Ok((input.len(), Step::Data(0..input.len())))
                }
            }
            DecoderKind::Length { remaining } => {
                if input.is_empty() {
                    return Ok((0, Step::NeedMore));
                }
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                let left = *remaining - n as u64;
                if left == 0 {
                    self.kind = DecoderKind::Done;
                } else {
                    *remaining = left;
                }
                Ok((n, Step::Data(0..n)))
            }
        }
    }

    /// The stream reached EOF: Ok(()) for Close (the body is complete, then is_done() is true),
    /// Err(Truncated) for Length/Chunked that are not done; Ok if already done.
    pub fn eof(&mut self) -> Result<(), BodyError> {
        match &self.kind {
            DecoderKind::Done => Ok(()),
            DecoderKind::Close => {
                self.kind = DecoderKind::Done;
                Ok(())
            }
            DecoderKind::Chunked(chunked) if chunked.is_done() => Ok(()),
            // A Length or chunked body cut short must not be forwarded as if complete: the
            // next hop would otherwise wait for, or misattribute, the missing bytes.
            DecoderKind::Chunked(_) | DecoderKind::Length { .. } => Err(BodyError::Truncated),
        }
    }

    /// Decodes everything `input` holds, handing each piece of body data to `f`. Returns the
    /// bytes consumed (framing included) and whether the body is complete; after completion the
    /// rest of `input` is the next message's. A decode error is mapped by `framing`.
    pub fn drain<E>(
        &mut self,
        input: &[u8],
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
        framing: impl Fn(BodyError) -> E,
    ) -> Result<(usize, bool), E> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let (consumed, step) = self.decode(rest).map_err(&framing)?;
            match step {
                Step::Data(range) => f(rest.get(range).unwrap_or_default())?,
                Step::NeedMore => return Ok((pos + consumed, false)),
                Step::Done => return Ok((pos + consumed, true)),
            }
            pos += consumed;
        }
    }

    /// The trailer fields of a complete chunked body that may be passed on.
    pub fn trailers(&self) -> Option<&Headers> {
        match &self.kind {
            DecoderKind::Chunked(chunked) => chunked.trailers(),
            _ => None,
        }
    }

    /// True once the body is complete.
    pub fn is_done(&self) -> bool {
        match &self.kind {
            DecoderKind::Done => true,
            DecoderKind::Chunked(chunked) => chunked.is_done(),
            DecoderKind::Length { .. } | DecoderKind::Close => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncoderKind {
    Length { remaining: u64 },
    Chunked,
    Close,
    None,
}

/// Frames a message body for the wire.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    kind: EncoderKind,
    /// Set by `finish()`: the body has ended, so further data is rejected as `TooLong`.
    finished: bool,
}

impl BodyEncoder {
    /// An encoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        let kind = match framing {
            Framing::None => EncoderKind::None,
            Framing::Length(remaining) => EncoderKind::Length { remaining },
            Framing::Chunked => EncoderKind::Chunked,
            Framing::Close => EncoderKind::Close,
        };
        BodyEncoder {
            kind,
            finished: false,
        }
    }

    /// Appends `data` framed to `out`. Length: error TooLong if data exceeds the remaining
    /// length; Chunked: "{len:x}\r\n" data "\r\n" (empty data writes nothing — an empty chunk
    /// would end the body); Close: data as is; None: TooLong if data is non-empty. Nothing is
    /// written on error.
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.finished {
            return Err(BodyError::TooLong);
        }
        match &mut self.kind {
            EncoderKind::Length { remaining } => {
                let len = data.len() as u64;
                if len > *remaining {
                    return Err(BodyError::TooLong);
                }
                *remaining -= len;
                out.extend_from_slice(data);
            }
            EncoderKind::Chunked => {
                // 16 hex digits + 2 CRLFs at most of framing.
                out.reserve(data.len() + 20);
                push_hex(out, data.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            EncoderKind::Close => out.extend_from_slice(data),
            EncoderKind::None => return Err(BodyError::TooLong),
        }
        Ok(())
    }

    /// Ends the body: Chunked appends the last chunk, the trailer fields and the final CRLF;
    /// Length errors TooShort unless all bytes were written; Close/None nothing. Calling it
    /// again after success writes nothing.
    pub fn finish(
        &mut self,
        trailers: Option<&Headers>,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        if self.finished {
            return Ok(());
        }
        match self.kind {
            EncoderKind::Length { remaining } if remaining > 0 => return Err(BodyError::TooShort),
            EncoderKind::Chunked => {
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.iter().flat_map(|t| t.iter()) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
            // Only chunked framing can carry trailers; elsewhere they are dropped.
            EncoderKind::Length { .. } | EncoderKind::Close | EncoderKind::None => {}
        }
        self.finished = true;
        Ok(())
    }

    /// True if the body is sent with Transfer-Encoding: chunked.
    pub fn is_chunked(&self) -> bool {
        self.kind == EncoderKind::Chunked
    }
}

/// Appends `n` as lowercase hex without allocating a temporary string.
fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 16];
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        let digit = (n & 0xf) as u8;
        *slot = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        start -= 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {

    #[test]
    fn drain_hands_over_every_piece_and_stops_at_the_end() {
        let mut d = BodyDecoder::new(Framing::Chunked, 1024);
        let mut got = Vec::new();
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET / HTTP/1.1";
        let (consumed, done) = d
            .drain(
                input,
                |data| {
                    got.extend_from_slice(data);
                    Ok::<(), BodyError>(())
                },
                |e| e,
            )
            .unwrap();
        assert!(done);
        assert_eq!(got, b"abcde");
        assert_eq!(&input[consumed..], b"GET / HTTP/1.1");
        let mut partial = BodyDecoder::new(Framing::Length(10), 0);
        let (consumed, done) = partial
            .drain(b"12345", |_| Ok::<(), BodyError>(()), |e| e)
            .unwrap();
        assert_eq!((consumed, done), (5, false));
        let err = BodyDecoder::new(Framing::Chunked, 0).drain(b"zz\r\n", |_| Ok(()), |_| "bad");
        assert_eq!(err, Err("bad"));
    }

    use super::*;

    /// What a caller ends up with after feeding a whole input.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Done { data: Vec<u8>, consumed: usize },
        NeedMore { data: Vec<u8> },
        Failed { data: Vec<u8>, err: BodyError },
    }

    /// Feeds `input` cut at `cuts` (sorted positions) the way the proxy does: call decode in a
    /// loop on each piece until it asks for more, checking the Step contract on the way.
    fn run_pieces(input: &[u8], cuts: &[usize], max_trailer: usize) -> Outcome {
        let mut dec = ChunkedDecoder::new(max_trailer);
        let mut data = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain(std::iter::once(input.len())) {
            let piece = &input[start..end];
            let mut off = 0;
            loop {
                let rest = &piece[off..];
                match dec.decode(rest) {
                    Err(err) => {
                        assert!(!dec.is_done());
                        // A failed decoder stays failed.
                        assert_eq!(dec.decode(b"0\r\n\r\n"), Err(err.clone()));
                        return Outcome::Failed { data, err };
                    }
                    Ok((n, Step::NeedMore)) => {
                        assert_eq!(n, rest.len(), "NeedMore must consume everything");
                        break;
                    }
                    Ok((n, Step::Data(r))) => {
                        assert!(!r.is_empty(), "empty data range");
                        assert!(r.end <= n && n <= rest.len());
                        data.extend_from_slice(&rest[r]);
                        off += n;
                    }
                    Ok((n, Step::Done)) => {
                        assert!(n <= rest.len());
                        assert!(dec.is_done());
                        assert_eq!(dec.decode(b"more"), Ok((0, Step::Done)));
                        assert_eq!(dec.decode(b""), Ok((0, Step::Done)));
                        return Outcome::Done {
                            data,
                            consumed: start + off + n,
                        };
                    }
                }
            }
            start = end;
        }
        Outcome::NeedMore { data }
    }

    fn one_shot(input: &[u8]) -> Outcome {
        run_pieces(input, &[], 1024)
    }

    fn done(data: &[u8], consumed: usize) -> Outcome {
        Outcome::Done {
            data: data.to_vec(),
            consumed,
        }
    }

    fn err_of(input: &[u8]) -> BodyError {
        match one_shot(input) {
            Outcome::Failed { err, .. } => err,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                input.escape_ascii()
            ),
        }
    }

    fn data_of(input: &[u8]) -> Vec<u8> {
        match one_shot(input) {
            Outcome::Done { data, consumed } => {
                assert_eq!(consumed, input.len(), "for {:?}", input.escape_ascii());
                data
            }
            other => panic!(
                "expected done for {:?}, got {other:?}",
                input.escape_ascii()
            ),
        }
    }

    use crate::testing::Rng;

    // ---- chunked: basics ----

    #[test]
    fn simple_body() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new(0);
        assert_eq!(dec.decode(input), Ok((8, Step::Data(3..8))));
        assert_eq!(dec.decode(&input[8..]), Ok((7, Step::Done)));
        assert!(dec.is_done());
        assert_eq!(dec.decode(&input[15..]), Ok((0, Step::Done)));
    }

    #[test]
    fn empty_body() {
        assert_eq!(one_shot(b"0\r\n\r\n"), done(b"", 5));
    }

    #[test]
    fn multiple_chunks() {
        assert_eq!(
            data_of(b"3\r\nabc\r\n1\r\nd\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"),
            b"abcd0123456789abcdef"
        );
    }

    #[test]
    fn data_range_is_largest_available() {
        let mut dec = ChunkedDecoder::new(0);
        // Input ends mid-chunk: the whole available part is returned.
        assert_eq!(dec.decode(b"a\r\n0123"), Ok((7, Step::Data(3..7))));
        assert_eq!(dec.decode(b"456789\r\n0"), Ok((6, Step::Data(0..6))));
        assert_eq!(dec.decode(b"\r\n0\r\n\r\n"), Ok((7, Step::Done)));
    }

    #[test]
    fn empty_input_needs_more() {
        let mut dec = ChunkedDecoder::new(0);
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(dec.decode(b"5\r"), Ok((2, Step::NeedMore)));
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(dec.decode(b"\n"), Ok((1, Step::NeedMore)));
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert!(!dec.is_done());
    }

    #[test]
    fn pipelined_bytes_left_unconsumed() {
        let input = b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(one_shot(input), done(b"hi", 12));
        let input = b"0\r\nX: y\r\n\r\n0\r\n\r\n";
        assert_eq!(one_shot(input), done(b"", 11));
        // Even bytes that look like a bad continuation are not looked at after Done.
        assert_eq!(one_shot(b"0\r\n\r\n\n\n"), done(b"", 5));
    }

    #[test]
    fn truncated_needs_more() {
        for input in [
            &b"5\r\nhel"[..],
            b"5\r\nhello",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\n",
            b"5\r\nhello\r\n0\r\nX: y\r\n",
            b"5;a=\"x",
            b"0\r\n\r",
        ] {
            assert!(
                matches!(one_shot(input), Outcome::NeedMore { .. }),
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    // ---- chunked: sizes ----

    #[test]
    fn size_hex_case_and_leading_zeros() {
        assert_eq!(data_of(b"a\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
        assert_eq!(data_of(b"A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
        assert_eq!(
            data_of(b"000000000000000000005\r\nhello\r\n0\r\n\r\n"),
            b"hello"
        );
        assert_eq!(data_of(b"5\r\nhello\r\n0000\r\n\r\n"), b"hello");
        let mut dec = ChunkedDecoder::new(0);
        assert_eq!(dec.decode(b"1F\r\n"), Ok((4, Step::NeedMore)));
        assert_eq!(dec.decode(&[b'x'; 40]), Ok((31, Step::Data(0..31))));
    }

    #[test]
    fn size_sixteen_digits_fit() {
        let mut dec = ChunkedDecoder::new(0);
        assert_eq!(
            dec.decode(b"ffffffffffffffff\r\n"),
            Ok((18, Step::NeedMore))
        );
        assert_eq!(dec.decode(b"abc"), Ok((3, Step::Data(0..3))));
        let mut dec = ChunkedDecoder::new(0);
        assert_eq!(
            dec.decode(b"0000FFFFFFFFFFFFFFFF\r\n"),
            Ok((22, Step::NeedMore))
        );
    }

    #[test]
    fn size_too_large() {
        assert_eq!(
            err_of(b"10000000000000000\r\n"),
            BodyError::ChunkSizeTooLarge
        );
        assert_eq!(
            err_of(b"fffffffffffffffff\r\n"),
            BodyError::ChunkSizeTooLarge
        );
        assert_eq!(
            err_of(b"00000000000000000000000000000000000000000000000100000000000000000\r\n"),
            BodyError::ChunkSizeTooLarge
        );
        let mut long = vec![b'0'; 2000];
        long.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(err_of(&long), BodyError::ChunkSizeTooLarge);
    }

    #[test]
    fn size_invalid() {
        for input in [
            &b"\r\nhello\r\n0\r\n\r\n"[..],
            b";a\r\n",
            b"-1\r\n",
            b"+5\r\n",
            b" 5\r\n",
            b"\t5\r\n",
            b"0x5\r\n",
            b"5g\r\n",
            b"g\r\n",
            b"5,3\r\n",
            b"5\"\r\n",
        ] {
            assert_eq!(
                err_of(input),
                BodyError::InvalidChunkSize,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn size_trailing_whitespace_rejected() {
        // BWS is only allowed as part of an extension: "5 " must be followed by ';'.
        assert_eq!(
            err_of(b"5 \r\nhello\r\n0\r\n\r\n"),
            BodyError::InvalidChunkExtension
        );
        assert_eq!(
            err_of(b"5\t\r\nhello\r\n0\r\n\r\n"),
            BodyError::InvalidChunkExtension
        );
        assert_eq!(err_of(b"5 5\r\n"), BodyError::InvalidChunkExtension);
        assert_eq!(data_of(b"5 ;ext\r\nhello\r\n0\r\n\r\n"), b"hello");
        assert_eq!(data_of(b"5 \t ;ext\r\nhello\r\n0\r\n\r\n"), b"hello");
    }

    // ---- chunked: extensions ----

    #[test]
    fn extensions_valid() {
        for ext in [
            &b";a"[..],
            b"; a=b",
            b";a=\"q \\\" x\"",
            b";a=b;c",
            b";a=b ;c=\"\" ; d",
            b" ; a = b",
            b";a\t=\tb",
            b";a=\"tab\there\"",
            b";a=\"\\\\\"",
            b";a=\"\xff\"",
            b";!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~",
            b";a;b;c;d",
        ] {
            let mut input = b"5".to_vec();
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\nhello\r\n0");
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\n\r\n");
            assert_eq!(data_of(&input), b"hello", "{:?}", input.escape_ascii());
        }
    }

    #[test]
    fn extensions_invalid() {
        for ext in [
            &b";"[..],
            b"; ",
            b";a=",
            b";a= ",
            b";=b",
            b";a b",
            b";a ",
            b";a=b ",
            b";a=b c",
            b";a=\"unterminated",
            b";a=\"x\"y",
            b";a=\"x\"\"y\"",
            b";a==b",
            b";a=b=c",
            b";a;;b",
            b";a\x01",
            b";a=\x01",
            b";a=\"\x01\"",
            b";a=\"\x7f\"",
            b";a=\"\\\x01\"",
            b";a\x7f",
            b";a=b\x00",
            b";a(b)",
            b";a=b\r",
            b";a=\"x\r",
            b";\"a\"",
            b";a=@",
        ] {
            let mut input = b"5".to_vec();
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            let err = err_of(&input);
            // A stray CR inside a line is a CR not followed by LF.
            let expected = if ext.ends_with(b"\r") && !ext.ends_with(b"x\r") {
                BodyError::MissingCrlf
            } else {
                BodyError::InvalidChunkExtension
            };
            assert_eq!(err, expected, "{:?}", input.escape_ascii());
        }
    }

    #[test]
    fn extension_line_too_long() {
        let mut input = b"5;a=\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1100));
        input.extend_from_slice(b"\"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(err_of(&input), BodyError::InvalidChunkExtension);
        // Many small extensions add up too.
        let mut input = b"5".to_vec();
        for _ in 0..400 {
            input.extend_from_slice(b";ab");
        }
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(err_of(&input), BodyError::InvalidChunkExtension);
        // Just under the cap is fine: 1024 bytes including CRLF.
        let mut input = b"5;".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1024 - 5));
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(data_of(&input), b"hello");
    }

    // ---- chunked: line ends ----

    #[test]
    fn bare_lf_everywhere() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nX: y\n\r\n",
            b"5\r\nhello\r\n0\r\nX\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a=b\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\"\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\n",
            b"5;a=\n",
            b"5;\n",
            b"5 \n",
            b"\n",
            b"5\r\nhello\r\n\n",
        ] {
            assert_eq!(
                err_of(input),
                BodyError::MissingCrlf,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn cr_without_lf() {
        for input in [
            &b"5\rhello\r\n0\r\n\r\n"[..],
            b"5\r\rhello",
            b"5\r\nhello\r0\r\n\r\n",
            b"5\r\nhello\r\r\n",
            b"5\r\nhello\r\n0\r\r\n",
            b"5\r\nhello\r\n0\r\n\rX",
            b"5\r\nhello\r\n0\r\nX: y\rZ",
            b"5;a\rX",
        ] {
            assert_eq!(
                err_of(input),
                BodyError::MissingCrlf,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn data_followed_by_garbage() {
        // The classic smuggling payload: more data than the chunk size declares.
        assert_eq!(
            one_shot(b"5\r\nhelloX\r\n0\r\n\r\n"),
            Outcome::Failed {
                data: b"hello".to_vec(),
                err: BodyError::MissingCrlf
            }
        );
        assert_eq!(err_of(b"5\r\nhello0\r\n\r\n"), BodyError::MissingCrlf);
        assert_eq!(err_of(b"5\r\nhello \r\n0\r\n\r\n"), BodyError::MissingCrlf);
        assert_eq!(
            err_of(b"3\r\nhello\r\n0\r\n\r\n"),
            BodyError::MissingCrlf,
            "fewer declared bytes than sent"
        );
    }

    // ---- chunked: trailers ----

    #[test]
    fn trailers_valid() {
        for trailers in [
            &b""[..],
            b"X-Checksum: abc\r\n",
            b"A:b\r\n",
            b"A:\r\n",
            b"A: \t v a l \t\r\nB: 2\r\n",
            b"Expires: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
            b"X: \x80\xff\r\n",
            b"!#$%&'*+-.^_`|~09AZaz: x\r\n",
        ] {
            let mut input = b"5\r\nhello\r\n0\r\n".to_vec();
            input.extend_from_slice(trailers);
            input.extend_from_slice(b"\r\n");
            assert_eq!(data_of(&input), b"hello", "{:?}", input.escape_ascii());
        }
    }

    #[test]
    fn trailers_invalid() {
        for trailers in [
            &b"Bad Name: x\r\n"[..],
            b"Name : x\r\n",
            b": x\r\n",
            b"NoColon\r\n",
            b"A(b): x\r\n",
            b"\"a\": x\r\n",
            b"X: a\x01b\r\n",
            b"X: a\x7fb\r\n",
            b"X: a\x00\r\n",
            b" folded: x\r\n",
            b"A: b\r\n continued\r\n",
            b"A: b\r\n\tcontinued\r\n",
        ] {
            let mut input = b"5\r\nhello\r\n0\r\n".to_vec();
            input.extend_from_slice(trailers);
            input.extend_from_slice(b"\r\n");
            assert_eq!(
                err_of(&input),
                BodyError::InvalidTrailer,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn trailers_too_large() {
        let input = b"0\r\nX-A: 12345\r\n\r\n"; // field line is 12 bytes with CRLF
        assert_eq!(run_pieces(input, &[], 12), done(b"", input.len()));
        assert_eq!(
            run_pieces(input, &[], 11),
            Outcome::Failed {
                data: Vec::new(),
                err: BodyError::TrailerTooLarge
            }
        );
        assert_eq!(
            run_pieces(input, &[], 5),
            Outcome::Failed {
                data: Vec::new(),
                err: BodyError::TrailerTooLarge
            }
        );
        // With no trailer budget, an empty trailer section still works.
        assert_eq!(run_pieces(b"0\r\n\r\n", &[], 0), done(b"", 5));
        assert!(matches!(
            run_pieces(b"0\r\nA:b\r\n\r\n", &[], 0),
            Outcome::Failed {
                err: BodyError::TrailerTooLarge,
                ..
            }
        ));
        // Many small fields add up.
        let mut input = b"0\r\n".to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b"A: b\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(run_pieces(&input, &[], 600), done(b"", input.len()));
        assert!(matches!(
            run_pieces(&input, &[], 599),
            Outcome::Failed {
                err: BodyError::TrailerTooLarge,
                ..
            }
        ));
        // An endless value fails once it passes the limit without waiting for its end.
        let mut dec = ChunkedDecoder::new(100);
        assert_eq!(dec.decode(b"0\r\nX: "), Ok((6, Step::NeedMore)));
        assert_eq!(dec.decode(&[b'v'; 90]), Ok((90, Step::NeedMore)));
        assert_eq!(dec.decode(&[b'v'; 90]), Err(BodyError::TrailerTooLarge));
    }

    // ---- chunked: incremental feeding ----

    /// (input, max_trailer_bytes) pairs covering success, errors and truncation.
    fn corpus() -> Vec<(Vec<u8>, usize)> {
        let cases: &[(&[u8], usize)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", 64),
            (b"0\r\n\r\nNEXT", 64),
            (
                b"5;a=b\r\nhello\r\n6 ; c = \"x\\\"y\"\r\n world\r\n0;z\r\nX-T: v\r\nY:\t w \r\n\r\nNEXT",
                64,
            ),
            (b"000000000000000000005\r\nhello\r\n0\r\n\r\n", 64),
            (b"A\r\n0123456789\r\n1\r\n\n\r\n0\r\n\r\n", 64),
            (b"1\r\n\r\r\n2\r\n\r\n\r\n0\r\n\r\nGET", 64),
            (b"5\nhello\r\n0\r\n\r\n", 64),
            (b"5\r\nhelloX\r\n0\r\n\r\n", 64),
            (b"5;a=\r\nhello\r\n0\r\n\r\n", 64),
            (b"5;a=\"unterminated\r\nhello\r\n0\r\n\r\n", 64),
            (b"5;a b\r\nhello\r\n0\r\n\r\n", 64),
            (b"5 \r\nhello\r\n0\r\n\r\n", 64),
            (b"0x5\r\nhello\r\n0\r\n\r\n", 64),
            (b"10000000000000000\r\n", 64),
            (b"5\r\nhello\r\n0\r\n x: y\r\n\r\n", 64),
            (b"1\r\na\r\n0\r\nBad Name: x\r\n\r\n", 64),
            (b"1\r\na\r\n0\r\nX: bad\x01\r\n\r\n", 64),
            (b"1\r\na\r\n0\r\nX-Long: 0123456789\r\n\r\n", 12),
            (b"1\r\na\r\n0\r\nX-Long: 012345\x01789\r\n\r\n", 12),
            (b"1\r\na\r\n0\r\nX-Long: 012\x01456789\r\n\r\n", 12),
            (b"1\r\na\r\n0\r\nX-Long: 0123\r\n", 12),
            (b"1\r\na\r\n0\r\nX-Long: 01234\r\n", 12),
            (b"1\r\na\r\n0\r\nX-Long: 0123\n", 12),
            (b"5\r\nhello\r\n0\r\n\r\r", 64),
            (b"5\r\nhello\r\n0\r\nA: b\r\r\n\r\n", 64),
            (b"5\r\nhel", 64),
            (b"5;a=\"x\\", 64),
        ];
        cases.iter().map(|(i, m)| (i.to_vec(), *m)).collect()
    }

    #[test]
    fn split_at_every_position_matches_one_shot() {
        for (input, max) in corpus() {
            let expected = run_pieces(&input, &[], max);
            for cut in 0..=input.len() {
                assert_eq!(
                    run_pieces(&input, &[cut], max),
                    expected,
                    "{:?} cut at {cut}",
                    input.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn split_at_every_pair_of_positions_matches_one_shot() {
        for (input, max) in corpus() {
            let expected = run_pieces(&input, &[], max);
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    assert_eq!(
                        run_pieces(&input, &[a, b], max),
                        expected,
                        "{:?} cut at {a} and {b}",
                        input.escape_ascii()
                    );
                }
            }
        }
    }

    #[test]
    fn one_byte_pieces_match_one_shot() {
        for (input, max) in corpus() {
            let expected = run_pieces(&input, &[], max);
            let cuts: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                run_pieces(&input, &cuts, max),
                expected,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn random_garbage_never_panics_and_is_split_invariant() {
        let alphabet = b"0123456789abcdefABx;= \t\"\\\r\n:\x01\x7f\xff";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let len = rng.below(40);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let expected = run_pieces(&input, &[], 16);
            let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                run_pieces(&input, &cuts, 16),
                expected,
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn many_small_chunks_one_data_range_per_call() {
        let mut input = Vec::new();
        for i in 0..1000u32 {
            input.extend_from_slice(b"1\r\n");
            input.push(b'a' + (i % 26) as u8);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let mut dec = ChunkedDecoder::new(0);
        let mut pos = 0;
        let mut calls = 0;
        loop {
            calls += 1;
            match dec.decode(&input[pos..]).unwrap() {
                (n, Step::Data(r)) => {
                    assert_eq!(r.len(), 1);
                    pos += n;
                }
                (n, Step::Done) => {
                    pos += n;
                    break;
                }
                (_, Step::NeedMore) => panic!("input was complete"),
            }
        }
        assert_eq!(pos, input.len());
        assert_eq!(calls, 1001);
    }

    // ---- BodyDecoder ----

    fn drain(dec: &mut BodyDecoder, input: &[u8]) -> (Vec<u8>, usize, Step) {
        let mut data = Vec::new();
        let mut pos = 0;
        loop {
            match dec.decode(&input[pos..]).unwrap() {
                (n, Step::Data(r)) => {
                    data.extend_from_slice(&input[pos..][r]);
                    pos += n;
                }
                (n, step) => return (data, pos + n, step),
            }
        }
    }

    #[test]
    fn length_exact() {
        let mut dec = BodyDecoder::new(Framing::Length(5), 0);
        assert!(!dec.is_done());
        assert_eq!(dec.decode(b"hel"), Ok((3, Step::Data(0..3))));
        assert!(!dec.is_done());
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(dec.decode(b"lo"), Ok((2, Step::Data(0..2))));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"next"), Ok((0, Step::Done)));
        assert_eq!(dec.eof(), Ok(()));
    }

    #[test]
    fn length_extra_bytes_left_unconsumed() {
        let mut dec = BodyDecoder::new(Framing::Length(5), 0);
        let (data, consumed, step) = drain(&mut dec, b"helloGET / HTTP/1.1");
        assert_eq!(
            (data.as_slice(), consumed, step),
            (&b"hello"[..], 5, Step::Done)
        );
    }

    #[test]
    fn length_short_then_eof_is_truncated() {
        let mut dec = BodyDecoder::new(Framing::Length(10), 0);
        assert_eq!(dec.decode(b"hello"), Ok((5, Step::Data(0..5))));
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(dec.eof(), Err(BodyError::Truncated));
        assert!(!dec.is_done());
    }

    #[test]
    fn length_huge() {
        let mut dec = BodyDecoder::new(Framing::Length(u64::MAX), 0);
        assert_eq!(dec.decode(b"abc"), Ok((3, Step::Data(0..3))));
        assert!(!dec.is_done());
    }

    #[test]
    fn length_zero_and_none_start_done() {
        for framing in [Framing::Length(0), Framing::None] {
            let mut dec = BodyDecoder::new(framing, 0);
            assert!(dec.is_done());
            assert_eq!(dec.decode(b"GET /"), Ok((0, Step::Done)));
            assert_eq!(dec.eof(), Ok(()));
        }
    }

    #[test]
    fn close_reads_until_eof() {
        let mut dec = BodyDecoder::new(Framing::Close, 0);
        assert_eq!(dec.decode(b""), Ok((0, Step::NeedMore)));
        assert_eq!(dec.decode(b"abc"), Ok((3, Step::Data(0..3))));
        assert_eq!(dec.decode(b"0\r\n\r\n"), Ok((5, Step::Data(0..5))));
        assert!(!dec.is_done());
        assert_eq!(dec.eof(), Ok(()));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"x"), Ok((0, Step::Done)));
        assert_eq!(dec.eof(), Ok(()));
    }

    #[test]
    fn chunked_through_body_decoder() {
        let mut dec = BodyDecoder::new(Framing::Chunked, 64);
        let (data, consumed, step) = drain(&mut dec, b"3\r\nabc\r\n0\r\nX: y\r\n\r\nNEXT");
        assert_eq!(
            (data.as_slice(), consumed, step),
            (&b"abc"[..], 19, Step::Done)
        );
        assert!(dec.is_done());
        assert_eq!(dec.eof(), Ok(()));

        let mut dec = BodyDecoder::new(Framing::Chunked, 64);
        assert_eq!(dec.decode(b"3\r\nab"), Ok((5, Step::Data(3..5))));
        assert_eq!(dec.eof(), Err(BodyError::Truncated));

        let mut dec = BodyDecoder::new(Framing::Chunked, 64);
        assert_eq!(dec.decode(b"3\nabc"), Err(BodyError::MissingCrlf));
    }

    // ---- BodyEncoder ----

    #[test]
    fn encode_length() {
        let mut enc = BodyEncoder::new(Framing::Length(5));
        assert!(!enc.is_chunked());
        let mut out = Vec::new();
        enc.encode(b"hel", &mut out).unwrap();
        assert_eq!(enc.finish(None, &mut out), Err(BodyError::TooShort));
        assert_eq!(enc.encode(b"lo!", &mut out), Err(BodyError::TooLong));
        assert_eq!(out, b"hel", "nothing written on error");
        enc.encode(b"", &mut out).unwrap();
        enc.encode(b"lo", &mut out).unwrap();
        assert_eq!(enc.encode(b"!", &mut out), Err(BodyError::TooLong));
        enc.finish(None, &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn encode_chunked() {
        let mut enc = BodyEncoder::new(Framing::Chunked);
        assert!(enc.is_chunked());
        let mut out = Vec::new();
        enc.encode(b"hello", &mut out).unwrap();
        enc.encode(b"", &mut out).unwrap();
        enc.encode(&[b'x'; 26], &mut out).unwrap();
        enc.finish(None, &mut out).unwrap();
        let mut expected = b"5\r\nhello\r\n1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
        // Finished: no more data, finish is idempotent, still reports chunked.
        assert_eq!(enc.encode(b"x", &mut out), Err(BodyError::TooLong));
        enc.finish(None, &mut out).unwrap();
        assert_eq!(out, expected);
        assert!(enc.is_chunked());
    }

    #[test]
    fn encode_close_and_none() {
        let mut enc = BodyEncoder::new(Framing::Close);
        let mut out = Vec::new();
        enc.encode(b"abc", &mut out).unwrap();
        enc.encode(b"0\r\n\r\n", &mut out).unwrap();
        enc.finish(None, &mut out).unwrap();
        assert_eq!(out, b"abc0\r\n\r\n");
        assert!(!enc.is_chunked());

        let mut enc = BodyEncoder::new(Framing::None);
        let mut out = Vec::new();
        enc.encode(b"", &mut out).unwrap();
        assert_eq!(enc.encode(b"a", &mut out), Err(BodyError::TooLong));
        enc.finish(None, &mut out).unwrap();
        assert!(out.is_empty());

        let mut enc = BodyEncoder::new(Framing::Length(0));
        let mut out = Vec::new();
        assert_eq!(enc.encode(b"a", &mut out), Err(BodyError::TooLong));
        enc.finish(None, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn hex_digits() {
        for n in [
            0u64,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            0xdead_beef,
            u64::MAX,
            1 << 63,
        ] {
            let mut out = b"pre".to_vec();
            push_hex(&mut out, n);
            assert_eq!(out, format!("pre{n:x}").into_bytes());
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for chunk_max in [1usize, 2, 3, 7, 15, 16, 17, 255, 256, 4096, 70_000] {
            for _ in 0..4 {
                let len = rng.below(100_000);
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                for framing in [
                    Framing::Chunked,
                    Framing::Length(len as u64),
                    Framing::Close,
                ] {
                    let mut enc = BodyEncoder::new(framing);
                    let mut wire = Vec::new();
                    let mut pos = 0;
                    while pos < data.len() {
                        let n = (1 + rng.below(chunk_max)).min(data.len() - pos);
                        enc.encode(&data[pos..pos + n], &mut wire).unwrap();
                        pos += n;
                    }
                    enc.finish(None, &mut wire).unwrap();
                    wire.extend_from_slice(b"NEXT");

                    // Decode fed in random-sized reads.
                    let mut dec = BodyDecoder::new(framing, 0);
                    let mut got = Vec::new();
                    let mut start = 0;
                    let mut consumed_total = None;
                    'reads: while start < wire.len() {
                        let end = (start + 1 + rng.below(chunk_max * 2 + 8)).min(wire.len());
                        let piece = &wire[start..end];
                        let mut off = 0;
                        loop {
                            match dec.decode(&piece[off..]).unwrap() {
                                (n, Step::Data(r)) => {
                                    got.extend_from_slice(&piece[off..][r]);
                                    off += n;
                                }
                                (n, Step::Done) => {
                                    consumed_total = Some(start + off + n);
                                    break 'reads;
                                }
                                (_, Step::NeedMore) => break,
                            }
                        }
                        start = end;
                    }
                    if framing == Framing::Close {
                        dec.eof().unwrap();
                        assert!(consumed_total.is_none());
                        assert_eq!(got.len(), data.len() + 4);
                        got.truncate(data.len());
                    } else {
                        assert_eq!(consumed_total, Some(wire.len() - 4));
                    }
                    assert!(dec.is_done());
                    assert_eq!(got, data, "framing {framing:?}, chunk_max {chunk_max}");
                }
            }
        }
    }
}
