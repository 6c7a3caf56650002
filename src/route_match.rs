//! Pure: what a route match reads beyond its path literal (Envoy's RouteMatch): anchored
//! `safe_regex` patterns, header matchers (HeaderMatcher), query parameter matchers
//! (QueryParameterMatcher) and string matchers (StringMatcher), over a borrowed request view.

use std::cell::RefCell;
use std::fmt;

use http::Method;

use crate::message::{Headers, RequestHead};

/// The longest compiled program a `safe_regex` may have (regex's `size_limit`): a pattern
/// like `(a{100}){100}` is refused at load instead of growing without bound. 64 KiB holds any
/// route pattern seen in practice (`/api/v[0-9]+/users/[^/]+/orders` is ~2 KiB).
pub const REGEX_PROGRAM_LIMIT: usize = 64 * 1024;
/// The lazy DFA's cache per regex (regex's `dfa_size_limit`); past it, regex falls back to a
/// slower engine rather than using more memory.
pub const REGEX_DFA_LIMIT: usize = 256 * 1024;

/// A `safe_regex` compiled at load: it must match the whole input (Envoy's full match).
/// Compared and printed by its source text, so config diffs and dumps see the pattern.
///
/// A match is checked in three steps, cheapest first: the pattern's literal prefix (the route
/// index has usually compared it already), the literal suffixes every match ends with (a
/// path that ends otherwise is refused without running the regex), then the regex itself —
/// over the bytes after the prefix only, when the pattern has no look-around assertion that
/// could read across the seam. `cargo bench --bench route -- route/mixed`: a regex route's
/// hit went from ~70 ns of regex (the whole path through the lazy DFA) to ~25 ns (`[0-9]+`
/// over "42" in a full DFA), and a root pattern like `.*\.(css|js|png)` costs a few
/// `ends_with` for a path that is not an asset.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    /// The bytes every match starts with (often none).
    prefix: Box<[u8]>,
    /// Every match ends with one of these; empty: no usable set (or a match may be empty).
    suffixes: Box<[Box<[u8]>]>,
    /// Anchored at both ends, over the input after `prefix` when `tail_only`, else the whole.
    regex: regex_automata::meta::Regex,
    tail_only: bool,
}

/// More literal suffixes than this are not worth comparing one by one before a regex run.
const MAX_SUFFIXES: usize = 16;

impl Pattern {
    /// Compiles `source` anchored at both ends, within the size limits. The error is one line.
    pub fn new(source: &str) -> Result<Pattern, String> {
        use regex_syntax::hir::{Hir, Look};
        // utf8(false): the syntax regex::bytes accepts (e.g. `(?-u:.)`).
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(source)
            .map_err(|e| match e {
                regex_syntax::Error::Parse(e) => format!("invalid regex: {}", e.kind()),
                regex_syntax::Error::Translate(e) => format!("invalid regex: {}", e.kind()),
                other => format!("invalid regex: {other}"),
            })?;
        let (prefix, rest) = split_literal_prefix(&hir);
        // `$` means the end of the input for the tail as for the whole; any other assertion
        // (`^` inside, `\b`) may read the byte before the tail, so the whole input is matched.
        let tail_only =
            !prefix.is_empty() && rest.properties().look_set().remove(Look::End).is_empty();
        let body = if tail_only { rest } else { hir.clone() };
        let anchored = Hir::concat(vec![Hir::look(Look::Start), body, Hir::look(Look::End)]);
        let config = regex_automata::meta::Config::new()
            .match_kind(regex_automata::MatchKind::LeftmostFirst)
            .utf8_empty(false)
            .nfa_size_limit(Some(REGEX_PROGRAM_LIMIT))
            .hybrid_cache_capacity(REGEX_DFA_LIMIT);
        let regex = regex_automata::meta::Builder::new()
            .configure(config)
            .build_from_hir(&anchored)
            .map_err(|e| match e.size_limit() {
                Some(limit) => format!(
                    "regex too large: its compiled program exceeds {limit} bytes; simplify it \
                     (fewer or smaller repetitions)"
                ),
                None => format!("invalid regex: {}", e.to_string().replace('\n', " ")),
            })?;
        Ok(Pattern {
            source: source.to_owned(),
            prefix: prefix.into(),
            suffixes: literal_suffixes(&hir),
            regex,
            tail_only,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    #[inline]
    pub fn is_match(&self, input: &[u8]) -> bool {
        let Some(tail) = input.strip_prefix(&*self.prefix) else {
            return false;
        };
        if !self.suffixes.is_empty() && !self.suffixes.iter().any(|s| input.ends_with(s)) {
            return false;
        }
        self.regex
            .is_match(if self.tail_only { tail } else { input })
    }

    /// The bytes every match starts with (often empty): the route index files a regex route
    /// under them, so the pattern runs only for paths that start that way.
    pub fn literal_prefix(&self) -> &[u8] {
        &self.prefix
    }
}

/// The leading literal of a parsed pattern and the rest of it: conservative (a group, class,
/// repetition or alternation ends the literal), so an input without it can never match.
fn split_literal_prefix(hir: &regex_syntax::hir::Hir) -> (Vec<u8>, regex_syntax::hir::Hir) {
    use regex_syntax::hir::{Hir, HirKind, Look};
    match hir.kind() {
        HirKind::Literal(lit) => (lit.0.to_vec(), Hir::empty()),
        HirKind::Concat(parts) => {
            let mut out = Vec::new();
            let mut taken = 0;
            for (i, part) in parts.iter().enumerate() {
                match part.kind() {
                    HirKind::Literal(lit) => out.extend_from_slice(&lit.0),
                    // A leading `^` is redundant with the implied anchor.
                    HirKind::Look(Look::Start) if i == 0 => {}
                    _ => break,
                }
                taken = i + 1;
            }
            (out, Hir::concat(parts[taken..].to_vec()))
        }
        _ => (Vec::new(), hir.clone()),
    }
}

/// The literals every match of the pattern ends with, when there are a few and none is empty
/// (regex-syntax's extractor treats assertions as empty, which keeps the set a necessary
/// condition); otherwise none.
fn literal_suffixes(hir: &regex_syntax::hir::Hir) -> Box<[Box<[u8]>]> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let mut seq = Extractor::new().kind(ExtractKind::Suffix).extract(hir);
    seq.dedup();
    match seq.literals() {
        Some(lits)
            if !lits.is_empty()
                && lits.len() <= MAX_SUFFIXES
                && lits.iter().all(|l| !l.as_bytes().is_empty()) =>
        {
            lits.iter().map(|l| l.as_bytes().into()).collect()
        }
        _ => Box::default(),
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

/// Envoy's StringMatcher. With `ignore_case`, the literal is stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Contains(Box<[u8]>),
    Regex(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringMatcher {
    pub kind: StringMatch,
    /// ASCII case-insensitive (not for `Regex`: use `(?i)` in the pattern).
    pub ignore_case: bool,
}

impl StringMatcher {
    pub fn matches(&self, value: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.kind {
            StringMatch::Exact(s) => eq(value, s),
            StringMatch::Prefix(s) => value.get(..s.len()).is_some_and(|v| eq(v, s)),
            StringMatch::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| eq(&value[at..], s)),
            StringMatch::Contains(s) if self.ignore_case => value
                .windows(s.len().max(1))
                .any(|w| w.eq_ignore_ascii_case(s)),
            StringMatch::Contains(s) => memchr::memmem::find(value, s).is_some(),
            StringMatch::Regex(p) => p.is_match(value),
        }
    }
}

/// Which request value a header matcher reads: a header field (lower-cased name) or one of
/// the pseudo-headers Envoy matches on (`host` is `:authority`, as in Envoy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderName {
    Authority,
    Method,
    /// The request target, query included (Envoy's `:path`).
    Path,
    Scheme,
    Field(Box<[u8]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    String(StringMatcher),
    /// `present_match`: true matches a present header, false an absent one.
    Present(bool),
    /// `range_match`: the value as a signed integer in [start, end).
    Range {
        start: i64,
        end: i64,
    },
}

/// Envoy's HeaderMatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub test: HeaderTest,
    pub invert_match: bool,
    pub treat_missing_header_as_empty: bool,
}

impl HeaderMatcher {
    /// Envoy's HeaderUtility::matchHeaders, including its rules for a missing header.
    fn matches(&self, req: &RequestView<'_>) -> bool {
        req.with_header(&self.name, |value| {
            let value = match value {
                Some(v) => v,
                None if self.treat_missing_header_as_empty => b"",
                None => {
                    let present = matches!(self.test, HeaderTest::Present(_));
                    return if self.invert_match {
                        !present
                    } else {
                        matches!(self.test, HeaderTest::Present(false))
                    };
                }
            };
            let hit = match &self.test {
                HeaderTest::String(s) => s.matches(value),
                HeaderTest::Present(want) => *want,
                HeaderTest::Range { start, end } => std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_some_and(|n| *start <= n && n < *end),
            };
            hit != self.invert_match
        })
    }
}

/// Envoy's QueryParameterMatcher: the first parameter of that name (no percent-decoding)
/// must be present and, with a string matcher, match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatcher {
    pub name: Box<[u8]>,
    /// None: presence only.
    pub string_match: Option<StringMatcher>,
}

impl QueryMatcher {
    fn matches(&self, query: &[u8]) -> bool {
        first_param(query, &self.name)
            .is_some_and(|v| self.string_match.as_ref().is_none_or(|s| s.matches(v)))
    }
}

/// The value of the first `name` parameter (empty for `name` without `=`).
fn first_param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match memchr::memchr(b'=', pair) {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (key == name).then_some(value)
    })
}

/// A route's match rules beyond the path specifier, methods and TLS context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatchRules {
    /// `case_sensitive: false`: prefix, path and path_separated_prefix compare ASCII
    /// case-insensitively (a regex is unaffected, as in Envoy).
    pub case_insensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryMatcher>,
}

impl MatchRules {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query_parameters.is_empty()
    }

    /// Every header and query parameter matcher accepts the request.
    #[inline]
    pub fn accepts(&self, req: &RequestView<'_>) -> bool {
        self.headers.iter().all(|h| h.matches(req))
            && (self.query_parameters.is_empty() || {
                let query = req.query();
                self.query_parameters.iter().all(|q| q.matches(query))
            })
    }
}

/// What a route lookup reads of a request, borrowed (a lookup allocates nothing).
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The path without the query: what prefix, path and regex specifiers match.
    pub path: &'a [u8],
    /// The whole request target (`:path` for header matchers; the query comes from it).
    pub target: &'a [u8],
    pub method: &'a Method,
    pub authority: &'a [u8],
    pub headers: Option<&'a Headers>,
    /// The downstream connection is TLS (`:scheme` https).
    pub https: bool,
    /// The connection presented a verified client certificate.
    pub certified: bool,
}

impl<'a> RequestView<'a> {
    pub fn of(head: &'a RequestHead, https: bool, certified: bool) -> RequestView<'a> {
        RequestView {
            path: head.path(),
            target: head.target(),
            method: &head.method,
            authority: head.authority(),
            headers: Some(&head.headers),
            https,
            certified,
        }
    }

    /// A request with only a path and a method (no headers, no query).
    pub fn bare(path: &'a [u8], method: &'a Method) -> RequestView<'a> {
        RequestView {
            path,
            target: path,
            method,
            authority: b"",
            headers: None,
            https: false,
            certified: false,
        }
    }

    fn query(&self) -> &'a [u8] {
        match memchr::memchr(b'?', self.target) {
            Some(q) => &self.target[q + 1..],
            None => b"",
        }
    }

    /// Calls `f` with the value of `name`: several fields of that name are joined with ","
    /// as Envoy does (in a per-core scratch buffer, reused: no allocation once warm).
    fn with_header<R>(&self, name: &HeaderName, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let field = match name {
            HeaderName::Authority => return f(Some(self.authority)),
            HeaderName::Method => return f(Some(self.method.as_str().as_bytes())),
            HeaderName::Path => return f(Some(self.target)),
            HeaderName::Scheme => return f(Some(if self.https { b"https" } else { b"http" })),
            HeaderName::Field(n) => n,
        };
        let Some(headers) = self.headers else {
            return f(None);
        };
        let mut values = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(field))
            .map(|(_, v)| v);
        let Some(first) = values.next() else {
            return f(None);
        };
        let Some(second) = values.next() else {
            return f(Some(first));
        };
        let join = |buf: &mut Vec<u8>| {
            buf.clear();
            buf.extend_from_slice(first);
            buf.push(b',');
            buf.extend_from_slice(second);
            for v in values {
                buf.push(b',');
                buf.extend_from_slice(v);
            }
        };
        JOINED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                join(&mut buf);
                f(Some(&buf))
            }
            Err(_) => {
                let mut buf = Vec::new();
                join(&mut buf);
                f(Some(&buf))
            }
        })
    }
}

thread_local! {
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(kind: StringMatch, ignore_case: bool) -> StringMatcher {
        StringMatcher { kind, ignore_case }
    }

    /// The three-step match (prefix, suffixes, tail regex) answers as the plain anchored
    /// regex does, for patterns with and without assertions, classes, alternations, case
    /// folding and non-ASCII bytes, over inputs built from the same pieces.
    #[test]
    fn the_staged_match_agrees_with_the_plain_regex() {
        let patterns = [
            "/v1/resource-7/items/[0-9]+",
            ".*\\.(css|js|png)",
            "/api/v[0-9]+/users/[^/]+/orders",
            "/a\\b.*",
            "/a.*\\bx",
            "/ab?c$",
            "^/static/.*",
            "(?i)/Static/.*\\.JS",
            "/x(?-u:\\xFF)+",
            "/caf\u{e9}/.+",
            "/a(b|)",
            "/a/b/c",
            "/a^b",
            "/a.*$",
            "[0-9]*",
            "",
        ];
        let pieces: [&[u8]; 16] = [
            b"/",
            b"v1",
            b"/resource-7",
            b"/items/",
            b"42",
            b".css",
            b".js",
            b"x",
            b"a",
            b"b",
            b"c",
            b"/api/v3",
            b"/users",
            b"/orders",
            b"\xFF",
            "\u{e9}".as_bytes(),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for source in patterns {
            let staged = Pattern::new(source).expect("valid");
            let plain = regex::bytes::Regex::new(&format!("^(?:{source})$")).expect("valid");
            let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
            for _ in 0..3000 {
                let mut input = staged.literal_prefix().to_vec();
                if rng.bool() {
                    input.clear();
                }
                for _ in 0..rng.usize(0..6) {
                    input.extend_from_slice(pieces[rng.usize(..pieces.len())]);
                }
                inputs.push(input);
            }
            for input in &inputs {
                assert_eq!(
                    staged.is_match(input),
                    plain.is_match(input),
                    "{source} over {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        for (source, input) in [
            ("/v1/resource-7/items/[0-9]+", "/v1/resource-7/items/42"),
            (".*\\.(css|js|png)", "/app.js"),
            ("/a\\b.*", "/a"),
            ("/a/b/c", "/a/b/c"),
            ("/caf\u{e9}/.+", "/caf\u{e9}/x"),
        ] {
            assert!(
                Pattern::new(source)
                    .expect("valid")
                    .is_match(input.as_bytes())
            );
        }
    }

    #[test]
    fn patterns_are_anchored_and_expose_their_literal_prefix() {
        let p = Pattern::new("/api/v[0-9]+/users").expect("valid");
        assert!(p.is_match(b"/api/v12/users"));
        assert!(!p.is_match(b"/api/v12/users/x"));
        assert!(!p.is_match(b"/x/api/v1/users"));
        assert_eq!(p.literal_prefix(), b"/api/v");
        assert_eq!(
            Pattern::new("^/a.*").expect("valid").literal_prefix(),
            b"/a"
        );
        assert_eq!(Pattern::new("/a|/b").expect("valid").literal_prefix(), b"");
        assert_eq!(Pattern::new("/ab?").expect("valid").literal_prefix(), b"/a");
        assert_eq!(
            Pattern::new("(?i)/ab").expect("valid").literal_prefix(),
            b"/"
        );
        assert!(Pattern::new("a)|(b").is_err());
        let big = Pattern::new("(((a{100}){100}){100})").expect_err("too big");
        assert!(big.contains("too large"), "{big}");
    }

    #[test]
    fn string_matchers() {
        let b = |s: &str| s.as_bytes().into();
        assert!(string(StringMatch::Exact(b("abc")), false).matches(b"abc"));
        assert!(!string(StringMatch::Exact(b("abc")), false).matches(b"ABC"));
        assert!(string(StringMatch::Exact(b("abc")), true).matches(b"ABC"));
        assert!(string(StringMatch::Prefix(b("ab")), true).matches(b"ABc"));
        assert!(string(StringMatch::Suffix(b("bc")), false).matches(b"abc"));
        assert!(!string(StringMatch::Suffix(b("abcd")), false).matches(b"abc"));
        assert!(string(StringMatch::Contains(b("b")), false).matches(b"abc"));
        assert!(string(StringMatch::Contains(b("bc")), true).matches(b"aBC"));
        assert!(!string(StringMatch::Contains(b("x")), true).matches(b"abc"));
    }

    #[test]
    fn query_parameters_first_occurrence_wins() {
        assert_eq!(first_param(b"a=1&b=2&a=3", b"a"), Some(&b"1"[..]));
        assert_eq!(first_param(b"a&b=2", b"a"), Some(&b""[..]));
        assert_eq!(first_param(b"ab=1", b"a"), None);
        assert_eq!(first_param(b"", b"a"), None);
    }

    #[test]
    fn headers_join_repeated_values_and_follow_envoy_for_missing_ones() {
        let mut headers = Headers::default();
        headers.append(b"X-Tag", b"a");
        headers.append(b"x-tag", b"b");
        headers.append(b"x-n", b"42");
        let method = Method::GET;
        let req = RequestView {
            headers: Some(&headers),
            ..RequestView::bare(b"/", &method)
        };
        let m = |name: &str, test: HeaderTest, invert: bool| HeaderMatcher {
            name: HeaderName::Field(name.as_bytes().into()),
            test,
            invert_match: invert,
            treat_missing_header_as_empty: false,
        };
        let exact =
            |s: &str| HeaderTest::String(string(StringMatch::Exact(s.as_bytes().into()), false));
        assert!(m("x-tag", exact("a,b"), false).matches(&req));
        assert!(!m("x-tag", exact("a"), false).matches(&req));
        assert!(m("x-n", HeaderTest::Range { start: 40, end: 43 }, false).matches(&req));
        assert!(!m("x-n", HeaderTest::Range { start: 40, end: 42 }, false).matches(&req));
        assert!(m("x-gone", HeaderTest::Present(false), false).matches(&req));
        assert!(!m("x-gone", HeaderTest::Present(true), false).matches(&req));
        assert!(!m("x-gone", exact("a"), false).matches(&req));
        assert!(m("x-gone", exact("a"), true).matches(&req));
        assert!(!m("x-tag", HeaderTest::Present(false), false).matches(&req));
        let mut empty = m("x-gone", exact(""), false);
        empty.treat_missing_header_as_empty = true;
        assert!(empty.matches(&req));
    }
}
