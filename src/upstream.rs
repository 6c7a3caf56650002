//! The upstream side of one exchange: connect with a timeout, write the request, read the
//! response head (skipping interim 1xx) and pull response body bytes through the body decoder.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, ProxyError};
use crate::h1::body::{BodyDecoder, Framing};
use crate::h1::head::{self, ResponseMeta};
use crate::message::ResponseHead;
use crate::rt::{self, TcpStream};
use crate::timer;

/// Bytes of upstream response head accepted; larger heads are a bad response.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header fields accepted in an upstream response.
const MAX_RESPONSE_HEADERS: usize = 256;

/// An open connection to an endpoint, idle in a pool or serving one exchange.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: TcpStream,
}

impl UpstreamConn {
    pub async fn connect(addr: SocketAddr, limit: Duration) -> io::Result<UpstreamConn> {
        Ok(UpstreamConn {
            stream: rt::connect(addr, limit).await?,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether the upstream closed (or reset) this idle connection: a non-blocking peek sees
    /// end of stream or an error instead of "nothing to read". One syscall, spent only before
    /// sending a request that could not be repeated if the connection turned out dead.
    pub fn closed_by_peer(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let socket = socket2::SockRef::from(&self.stream);
        match socket.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(0) => true,
            // Stray bytes on an idle connection: it cannot be reused either.
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

/// Whether an I/O failure on a reused connection means the upstream closed it while idle
/// (so the request never reached the application).
fn stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// Writes request bytes to the upstream. A failure is retryable: nothing of a response exists.
pub async fn send(conn: &UpstreamConn, buf: &mut Vec<u8>, keep: bool) -> Result<(), ProxyError> {
    let stream = &conn.stream;
    let res = if keep {
        rt::write_kept(stream, buf).await
    } else {
        rt::write_all(stream, buf).await
    };
    res.map_err(|e| {
        let err = ProxyError::upstream(ErrorKind::UpstreamClosed);
        if stale(&e) { err.retryable() } else { err }
    })
}

/// Reading side of one response: the bytes received and how far they are consumed.
#[derive(Debug)]
pub struct ResponseReader {
    buf: Vec<u8>,
    pos: usize,
    decoder: BodyDecoder,
    /// Set once the body is complete and no stray bytes followed it.
    clean_end: bool,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader {
            buf: Vec::new(),
            pos: 0,
            decoder: BodyDecoder::new(Framing::None, 0),
            clean_end: false,
        }
    }
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            buf: rt::take_buffer(),
            ..ResponseReader::default()
        }
    }

    /// Reads the final response head before `deadline` (if any), skipping 1xx interim responses (the
    /// proxy answers Expect itself). A failure before any byte arrived is marked retryable.
    pub async fn read_head(
        &mut self,
        conn: &UpstreamConn,
        head_request: bool,
        deadline: Option<Instant>,
        head: &mut ResponseHead,
    ) -> Result<ResponseMeta, ProxyError> {
        let stream = &conn.stream;
        let mut received_any = false;
        loop {
            let unparsed = &self.buf[self.pos..];
            if !unparsed.is_empty() {
                received_any = true;
                if let Some(meta) =
                    head::parse_response(unparsed, MAX_RESPONSE_HEADERS, head_request, head)?
                {
                    self.pos += meta.head_len;
                    if head.status < 200 {
                        if head.status == 101 {
                            return Err(ProxyError::bad_response(
                                "unexpected 101 Switching Protocols from upstream\n",
                            ));
                        }
                        continue;
                    }
                    self.decoder = BodyDecoder::new(meta.framing, MAX_RESPONSE_HEAD);
                    return Ok(meta);
                }
                if unparsed.len() > MAX_RESPONSE_HEAD {
                    return Err(ProxyError::bad_response(
                        "upstream response head too large\n",
                    ));
                }
            }
            self.compact();
            let read = match deadline {
                Some(deadline) => {
                    timer::until(deadline, rt::read_some(stream, &mut self.buf, 4096)).await
                }
                None => Some(rt::read_some(stream, &mut self.buf, 4096).await),
            };
            match read {
                None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)),
                Some(Ok(0)) | Some(Err(_)) if !received_any => {
                    return Err(ProxyError::upstream(ErrorKind::UpstreamClosed).retryable());
                }
                Some(Ok(0)) | Some(Err(_)) => {
                    return Err(ProxyError::upstream(ErrorKind::UpstreamClosed));
                }
                Some(Ok(_)) => {}
            }
        }
    }

    fn compact(&mut self) {
        rt::compact(&mut self.buf, &mut self.pos);
    }

    /// Hands every body byte already received to `f`; true when the body is complete.
    pub fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        let (consumed, done) = self.decoder.drain(&self.buf[self.pos..], f, |_| {
            ProxyError::upstream(ErrorKind::Aborted)
        })?;
        self.pos += consumed;
        if done {
            self.clean_end = self.pos == self.buf.len();
        }
        Ok(done)
    }

    /// Reads more body bytes, waiting at most `limit`. End of stream completes a close-delimited
    /// body; anywhere else it is a truncation and the exchange is aborted.
    pub async fn fill(&mut self, conn: &UpstreamConn, limit: Duration) -> Result<(), ProxyError> {
        let stream = &conn.stream;
        self.compact();
        match timer::within(limit, rt::read_some(stream, &mut self.buf, 4096)).await {
            Some(Ok(0)) => self
                .decoder
                .eof()
                .map_err(|_| ProxyError::upstream(ErrorKind::Aborted)),
            Some(Ok(_)) => Ok(()),
            Some(Err(_)) | None => Err(ProxyError::upstream(ErrorKind::Aborted)),
        }
    }

    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Forgets a failed exchange, keeping the buffer, before the request is sent again.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.decoder = BodyDecoder::new(Framing::None, 0);
        self.clean_end = false;
    }

    /// Whether the connection can serve another request: the body ended by its framing (not by
    /// close) and nothing unexpected followed it.
    pub fn reusable(&self) -> bool {
        self.clean_end && self.decoder.is_done()
    }

    pub fn recycle(self) {
        rt::recycle_buffer(self.buf);
    }
}
