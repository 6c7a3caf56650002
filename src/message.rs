//! Protocol-neutral request and response heads: what the downstream codec hands the proxy and the
//! upstream codec consumes, with only end-to-end headers (hop-by-hop and framing are the codecs' job).
//!
//! Every head owns one byte arena; fields are spans into it. Heads are taken from a per-core
//! free list for one exchange and given back after it, so steady-state requests allocate
//! nothing and a connection waiting for its next request holds no head storage.

use std::cell::RefCell;
use std::ops::Range;

pub use http::{Method, Version};

/// A span of bytes in a head's arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: Span,
    value: Span,
}

/// End-to-end header fields in arrival order, names as received (compared case-insensitively).
#[derive(Debug, Default, Clone)]
pub struct Headers {
    arena: Vec<u8>,
    fields: Vec<Field>,
}

impl Headers {
    pub fn clear(&mut self) {
        self.arena.clear();
        self.fields.clear();
    }

    /// Copies bytes into the arena and returns their span (used for non-header fields too).
    pub fn store(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            end: self.arena.len() as u32,
        }
    }

    pub fn bytes(&self, span: Span) -> &[u8] {
        self.arena.get(span.range()).unwrap_or_default()
    }

    pub fn append(&mut self, name: &[u8], value: &[u8]) {
        let name = self.store(name);
        let value = self.store(value);
        self.fields.push(Field { name, value });
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.bytes(f.name), self.bytes(f.value)))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Keeps only the fields for which `keep(name, value)` is true; the bytes of the others
    /// stay in the arena until the next clear().
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        let arena = &self.arena;
        self.fields.retain(|f| {
            keep(
                arena.get(f.name.range()).unwrap_or_default(),
                arena.get(f.value.range()).unwrap_or_default(),
            )
        });
    }

    /// Removes every field called `name`; its bytes stay in the arena until the next clear().
    pub fn remove(&mut self, name: &[u8]) {
        self.retain(|n, _| !n.eq_ignore_ascii_case(name));
    }

    /// Joins every value of `name` with ", " and appends `extra`, replacing the fields with one
    /// (the list form of RFC 9110 §5.3), e.g. to extend X-Forwarded-For.
    pub fn append_to_list(&mut self, name: &'static [u8], extra: &[u8]) {
        let name_span = self.store(name);
        let start = self.arena.len() as u32;
        let mut any = false;
        for i in 0..self.fields.len() {
            let f = self.fields[i];
            if self.bytes(f.name).eq_ignore_ascii_case(name) {
                if any {
                    self.arena.extend_from_slice(b", ");
                }
                self.arena.extend_from_within(f.value.range());
                any = true;
            }
        }
        if any {
            self.arena.extend_from_slice(b", ");
        }
        self.arena.extend_from_slice(extra);
        let value = Span {
            start,
            end: self.arena.len() as u32,
        };
        self.remove(name);
        self.fields.push(Field {
            name: name_span,
            value,
        });
    }
}

/// How long a body is, as far as the codec that read the head knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyLength {
    /// No body at all.
    #[default]
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Delimited by the transport (chunked, end of stream, END_STREAM).
    Unknown,
}

impl BodyLength {
    pub fn is_empty(self) -> bool {
        matches!(self, BodyLength::Empty | BodyLength::Known(0))
    }
}

/// Heads kept per core for reuse; beyond this they are freed.
const MAX_FREE_HEADS: usize = 256;

thread_local! {
    static FREE_REQUESTS: RefCell<Vec<RequestHead>> = const { RefCell::new(Vec::new()) };
    static FREE_RESPONSES: RefCell<Vec<ResponseHead>> = const { RefCell::new(Vec::new()) };
}

/// Puts a head back on this core's free list (or frees it when the list is full).
fn give_back<T>(list: &'static std::thread::LocalKey<RefCell<Vec<T>>>, head: T) {
    list.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() < MAX_FREE_HEADS {
            l.push(head);
        }
    });
}

/// A request as the proxy sees it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    /// Origin-form target (path and query) as received, or "*".
    target: Span,
    /// Host header or the authority of an absolute-form target; empty when the client sent none.
    authority: Span,
    pub headers: Headers,
    pub body: BodyLength,
    /// The client accepts trailer fields in the response (`TE: trailers`).
    pub te_trailers: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::GET,
            version: Version::HTTP_11,
            target: Span::default(),
            authority: Span::default(),
            headers: Headers::default(),
            body: BodyLength::Empty,
            te_trailers: false,
        }
    }
}

impl RequestHead {
    /// A head with storage from this core's free list.
    pub fn take() -> RequestHead {
        FREE_REQUESTS
            .with(|l| l.borrow_mut().pop())
            .unwrap_or_default()
    }

    /// Whether this head has storage yet (a waiting connection's head has none).
    pub fn has_storage(&self) -> bool {
        self.headers.arena.capacity() > 0
    }

    /// Gives this head's storage back to the core; the head is left empty.
    pub fn recycle(&mut self) {
        let mut head = std::mem::take(self);
        head.clear();
        give_back(&FREE_REQUESTS, head);
    }

    pub fn clear(&mut self) {
        self.headers.clear();
        self.target = Span::default();
        self.authority = Span::default();
        self.body = BodyLength::Empty;
        self.te_trailers = false;
    }

    pub fn set_target(&mut self, target: &[u8]) {
        self.target = self.headers.store(target);
    }

    pub fn set_target_parts(&mut self, first: &[u8], rest: &[u8]) {
        let a = self.headers.store(first);
        let b = self.headers.store(rest);
        self.target = Span {
            start: a.start,
            end: b.end,
        };
    }

    pub fn set_authority(&mut self, authority: &[u8]) {
        self.authority = self.headers.store(authority);
    }

    pub fn target(&self) -> &[u8] {
        self.headers.bytes(self.target)
    }

    /// The target without its query.
    pub fn path(&self) -> &[u8] {
        let t = self.target();
        match memchr::memchr(b'?', t) {
            Some(q) => &t[..q],
            None => t,
        }
    }

    pub fn authority(&self) -> &[u8] {
        self.headers.bytes(self.authority)
    }

    /// Whether a retry on another connection cannot change the outcome (RFC 9110 §9.2.2).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
    }
}

/// A response as the proxy sees it.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    reason: Span,
    pub headers: Headers,
    pub body: BodyLength,
    /// The length the upstream declared. For a response without a body (to HEAD, a 304) it
    /// is repeated to the client as metadata; when it is None there, no length is sent.
    pub declared_length: Option<u64>,
}

impl ResponseHead {
    /// A head with storage from this core's free list.
    pub fn take() -> ResponseHead {
        FREE_RESPONSES
            .with(|l| l.borrow_mut().pop())
            .unwrap_or_default()
    }

    /// Gives this head's storage back to the core.
    pub fn recycle(mut self) {
        self.clear();
        give_back(&FREE_RESPONSES, self);
    }

    pub fn clear(&mut self) {
        self.headers.clear();
        self.reason = Span::default();
        self.status = 0;
        self.body = BodyLength::Empty;
        self.declared_length = None;
    }

    pub fn set_reason(&mut self, reason: &[u8]) {
        self.reason = self.headers.store(reason);
    }

    pub fn reason(&self) -> &[u8] {
        self.headers.bytes(self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_get_remove_and_list() {
        let mut h = Headers::default();
        h.append(b"X-Forwarded-For", b"10.0.0.1");
        h.append(b"Accept", b"*/*");
        h.append(b"x-forwarded-for", b"10.0.0.2");
        assert_eq!(h.get(b"accept"), Some(&b"*/*"[..]));
        h.append_to_list(b"x-forwarded-for", b"127.0.0.1");
        let xff: Vec<_> = h
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"))
            .collect();
        assert_eq!(xff.len(), 1);
        assert_eq!(xff[0].1, b"10.0.0.1, 10.0.0.2, 127.0.0.1");
        h.remove(b"ACCEPT");
        assert_eq!(h.get(b"accept"), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn list_without_previous_value() {
        let mut h = Headers::default();
        h.append_to_list(b"x-forwarded-for", b"127.0.0.1");
        assert_eq!(h.get(b"x-forwarded-for"), Some(&b"127.0.0.1"[..]));
    }

    #[test]
    fn path_strips_query() {
        let mut r = RequestHead::default();
        r.set_target(b"/a/b?x=1");
        r.set_authority(b"example.com:8080");
        assert_eq!(r.path(), b"/a/b");
        assert_eq!(r.target(), b"/a/b?x=1");
        assert_eq!(r.authority(), b"example.com:8080");
    }
}
