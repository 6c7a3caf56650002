//! The one data-path error: what went wrong, on which side, whether a retry is safe, and the
//! status code the client gets for it.

use std::fmt;
use std::io;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// What went wrong. Each variant's doc names the status the client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400, connection closed: malformed request or ambiguous framing (smuggling defences).
    BadRequest(&'static str),
    /// 431, connection closed: the request head is larger than the configured limit.
    HeadTooLarge,
    /// 408, connection closed: the request head (header timeout) or its body (body timeout)
    /// did not arrive in time.
    RequestTimeout,
    /// 417: an Expect value other than 100-continue.
    ExpectationFailed,
    /// 413, connection closed: the request body is larger than the listener allows.
    PayloadTooLarge,
    /// 505, connection closed: an HTTP major version other than 1 on an HTTP/1 connection.
    VersionNotSupported,
    /// 501: a method or transfer coding the proxy does not implement (CONNECT, gzip TE).
    NotImplemented(&'static str),
    /// 404: no virtual host or route matched.
    NoRoute,
    /// 503: no endpoint of the cluster accepted a connection.
    NoUpstream,
    /// 503: a circuit breaker of the cluster is open (too many connections, requests, or
    /// requests waiting for a connection under way on this core).
    Overflow,
    /// 502: the upstream closed or reset before a complete response head.
    UpstreamClosed,
    /// 502: no endpoint completed a TLS handshake (a certificate that does not verify, no
    /// common version or protocol); the cause is logged and counted per endpoint.
    UpstreamTls,
    /// 502: the upstream sent a malformed response or ambiguous framing.
    BadResponse(&'static str),
    /// 504: the upstream did not answer within the cluster's response timeout.
    UpstreamTimeout,
    /// 504: the exchange did not complete within its route's timeout (a response under way is
    /// cut instead).
    RouteTimeout,
    /// 504: the upstream stopped reading the request (no write progress within the cluster's
    /// send timeout).
    UpstreamSendTimeout,
    /// 500: the gateway could not make a valid request of this one (a route's path rewrite
    /// made something that is not a path).
    Internal(&'static str),
    /// No response possible: the client went away or stopped reading/sending.
    ClientGone,
    /// No response possible: the response was already under way when the upstream failed;
    /// the client connection is aborted so a truncated body is never passed off as complete.
    Aborted,
}

/// A failure on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    /// The request never reached the upstream application, so sending it again is safe
    /// (for idempotent requests whose body is still at hand).
    pub retryable: bool,
    /// The I/O error behind it, if any (for logs).
    pub cause: Option<io::ErrorKind>,
}

impl ProxyError {
    pub const fn downstream(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            side: Side::Downstream,
            retryable: false,
            cause: None,
        }
    }

    pub const fn upstream(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            side: Side::Upstream,
            retryable: false,
            cause: None,
        }
    }

    pub const fn bad_request(why: &'static str) -> Self {
        Self::downstream(ErrorKind::BadRequest(why))
    }

    pub const fn bad_response(why: &'static str) -> Self {
        Self::upstream(ErrorKind::BadResponse(why))
    }

    pub const fn client_gone() -> Self {
        Self::downstream(ErrorKind::ClientGone)
    }

    pub const fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Records the I/O error behind this one.
    pub fn caused_by(mut self, e: &io::Error) -> Self {
        self.cause = Some(e.kind());
        self
    }

    /// The status the client receives, or None when no response can be sent.
    pub fn status(&self) -> Option<u16> {
        Some(match self.kind {
            ErrorKind::BadRequest(_) => 400,
            ErrorKind::HeadTooLarge => 431,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::NotImplemented(_) => 501,
            ErrorKind::NoRoute => 404,
            ErrorKind::NoUpstream | ErrorKind::Overflow => 503,
            ErrorKind::UpstreamClosed | ErrorKind::UpstreamTls | ErrorKind::BadResponse(_) => 502,
            ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamSendTimeout
            | ErrorKind::RouteTimeout => 504,
            ErrorKind::Internal(_) => 500,
            ErrorKind::ClientGone | ErrorKind::Aborted => return None,
        })
    }

    /// Whether the downstream connection must close after the error response: framing is in
    /// doubt, or the client is known to be gone.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::BadRequest(_)
                | ErrorKind::HeadTooLarge
                | ErrorKind::RequestTimeout
                | ErrorKind::PayloadTooLarge
                | ErrorKind::VersionNotSupported
                | ErrorKind::ClientGone
                | ErrorKind::Aborted
        )
    }

    /// The short text body of the error response.
    pub fn body(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest(why) => why,
            ErrorKind::HeadTooLarge => "request header fields too large\n",
            ErrorKind::RequestTimeout => "request timeout\n",
            ErrorKind::ExpectationFailed => "only 100-continue is supported in Expect\n",
            ErrorKind::PayloadTooLarge => "request body too large\n",
            ErrorKind::VersionNotSupported => "only HTTP/1.x is supported on this connection\n",
            ErrorKind::NotImplemented(why) => why,
            ErrorKind::NoRoute => "no route matched this request\n",
            ErrorKind::NoUpstream => "no upstream endpoint available\n",
            ErrorKind::Overflow => "upstream overflow: too many requests under way\n",
            ErrorKind::UpstreamClosed => "upstream closed the connection before responding\n",
            ErrorKind::UpstreamTls => "upstream TLS handshake failed\n",
            ErrorKind::BadResponse(why) => why,
            ErrorKind::UpstreamTimeout => "upstream response timeout\n",
            ErrorKind::RouteTimeout => "upstream request timeout\n",
            ErrorKind::UpstreamSendTimeout => "upstream stopped reading the request\n",
            ErrorKind::Internal(why) => why,
            ErrorKind::ClientGone | ErrorKind::Aborted => "",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        };
        write!(f, "{side}: {:?}", self.kind)?;
        match self.cause {
            Some(cause) => write!(f, " ({cause})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_close() {
        assert_eq!(ProxyError::bad_request("x").status(), Some(400));
        assert!(ProxyError::bad_request("x").closes_connection());
        assert_eq!(
            ProxyError::downstream(ErrorKind::NoRoute).status(),
            Some(404)
        );
        assert!(!ProxyError::downstream(ErrorKind::NoRoute).closes_connection());
        assert_eq!(
            ProxyError::upstream(ErrorKind::NoUpstream).status(),
            Some(503)
        );
        assert_eq!(ProxyError::client_gone().status(), None);
    }
}
