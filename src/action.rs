//! Pure: what a route does besides forwarding to one cluster (Envoy's route actions): a weighted
//! split over clusters, path and Host rewrites of the request sent upstream, a redirect, or a
//! response of the gateway's own. The validated types, and the steps that apply them to bytes.

use std::net::SocketAddr;

/// Largest body of a `direct_response` (Envoy's default `max_direct_response_body_size_bytes`).
pub const MAX_DIRECT_BODY: usize = 4096;

/// Size limit of a compiled `regex_rewrite` pattern (the regex crate's program size, bytes):
/// far above any real path pattern, and a bound on what one request's rewrite can cost.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Stands in for `Route::cluster` on a route that answers itself (redirect, direct response).
pub const NO_CLUSTER: usize = usize::MAX;

/// What a route does with a request it matched. Envoy's `route` (forward), `redirect` and
/// `direct_response`, siblings of `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward to the route's `cluster`, or to one of `weighted`; the request rewritten first.
    Forward {
        weighted: Option<WeightedClusters>,
        rewrite: Rewrite,
    },
    /// Answer with a redirect built from the request.
    Redirect(Redirect),
    /// Answer with a fixed status and body.
    DirectResponse(DirectResponse),
}

impl Default for Action {
    fn default() -> Self {
        Action::Forward {
            weighted: None,
            rewrite: Rewrite::default(),
        }
    }
}

impl Action {
    /// Whether the route forwards to its `cluster` as is (nothing for the data path to do).
    pub fn is_plain(&self) -> bool {
        matches!(self, Action::Forward { weighted: None, rewrite } if rewrite.is_empty())
    }
}

/// `weighted_clusters`: each request goes to one of the clusters, in proportion to the weights,
/// exactly per period (smooth weighted round-robin on each core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedClusters {
    /// (cluster index, weight); weights of 0 take no traffic; at least one is positive.
    pub clusters: Vec<(usize, u32)>,
}

impl WeightedClusters {
    /// The clusters that take traffic and their weights, for the picker: the picker's index
    /// `i` means cluster `clusters()[i]`.
    pub fn live(&self) -> (Vec<usize>, Vec<u32>) {
        self.clusters
            .iter()
            .filter(|(_, w)| *w > 0)
            .copied()
            .unzip()
    }
}

/// The rewrites of the request sent upstream (Envoy's `prefix_rewrite` / `regex_rewrite` and
/// `host_rewrite_literal` / `auto_host_rewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub path: Option<PathRewrite>,
    pub host: HostRewrite,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.host == HostRewrite::Keep
    }
}

/// How the path (without the query) is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// `prefix_rewrite`: the first `matched` bytes (what the route's prefix, or exact path,
    /// matched) are replaced with `with`.
    Prefix {
        matched: usize,
        with: String,
    },
    Regex(RegexRewrite),
}

/// `regex_rewrite`: every match of `pattern` in the path is replaced with `substitution`.
#[derive(Debug, Clone)]
pub struct RegexRewrite {
    /// As written in the config (RE2 syntax, `\1` groups in the substitution).
    pub pattern: String,
    pub substitution: String,
    regex: regex::bytes::Regex,
    /// The substitution in the regex crate's syntax (`${1}`, `$$`).
    replacement: Vec<u8>,
}

impl PartialEq for RegexRewrite {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.substitution == other.substitution
    }
}

impl Eq for RegexRewrite {}

impl RegexRewrite {
    /// Compiles `pattern` (bounded in size) and checks `substitution`: groups it names must
    /// exist, and its literal text must be path characters. Err: why, and which of the two.
    pub fn new(pattern: &str, substitution: &str) -> Result<RegexRewrite, (&'static str, String)> {
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| ("pattern.regex", format!("invalid regex: {e}")))?;
        let groups = regex.captures_len() - 1;
        let replacement =
            envoy_substitution(substitution, groups).map_err(|e| ("substitution", e))?;
        Ok(RegexRewrite {
            pattern: pattern.to_owned(),
            substitution: substitution.to_owned(),
            regex,
            replacement,
        })
    }
}

/// Converts an RE2 rewrite string (`\0`..`\9` groups, `\\` a backslash) to the regex crate's
/// replacement syntax (`${N}`, `$$` a dollar sign), checking each group exists and that the
/// literal text is made of path characters.
fn envoy_substitution(s: &str, groups: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(d @ b'0'..=b'9') => {
                    let n = usize::from(d - b'0');
                    if n > groups {
                        return Err(format!(
                            "\\{n} names a group the pattern does not have ({groups} groups)"
                        ));
                    }
                    out.extend_from_slice(format!("${{{n}}}").as_bytes());
                }
                Some(b'\\') => out.push(b'\\'),
                _ => {
                    return Err(
                        "a backslash must be followed by a digit (a group) or another backslash"
                            .to_owned(),
                    );
                }
            },
            b'$' => out.extend_from_slice(b"$$"),
            b if is_path_byte(b) => out.push(b),
            b => {
                return Err(format!(
                    "{:?} cannot be in a path (spaces, controls, '?' and '#' are not allowed)",
                    char::from(b)
                ));
            }
        }
    }
    Ok(out)
}

/// A byte a rewritten path may hold: visible ASCII except the query and fragment delimiters.
pub fn is_path_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'?' && b != b'#'
}

/// Whether `path` is a valid origin-form path: `/`, then path bytes.
pub fn is_valid_path(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && path.iter().all(|&b| is_path_byte(b))
}

/// How the Host (`:authority`) sent upstream is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostRewrite {
    /// As the client sent it.
    #[default]
    Keep,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the picked endpoint's address.
    Auto,
}

/// The rewritten path (without the query) for `path`, or None when the rewrite changes nothing.
/// Err: the result is not a valid origin-form path (answered 500).
pub fn rewrite_path(rewrite: &PathRewrite, path: &[u8]) -> Result<Option<Vec<u8>>, InvalidPath> {
    let out = match rewrite {
        PathRewrite::Prefix { matched, with } => {
            let rest = path.get(*matched..).unwrap_or_default();
            let mut out = Vec::with_capacity(with.len() + rest.len());
            out.extend_from_slice(with.as_bytes());
            out.extend_from_slice(rest);
            out
        }
        PathRewrite::Regex(r) => match r.regex.replace_all(path, r.replacement.as_slice()) {
            std::borrow::Cow::Borrowed(_) => return Ok(None),
            std::borrow::Cow::Owned(out) => out,
        },
    };
    if is_valid_path(&out) {
        Ok(Some(out))
    } else {
        Err(InvalidPath)
    }
}

/// A rewrite made something that is not an origin-form path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPath;

/// A target (path and query) with its path replaced by `path`, the query kept.
pub fn with_path(target: &[u8], path: &[u8]) -> Vec<u8> {
    let query = memchr::memchr(b'?', target).map_or(&[][..], |q| &target[q..]);
    let mut out = Vec::with_capacity(path.len() + query.len());
    out.extend_from_slice(path);
    out.extend_from_slice(query);
    out
}

/// The Host `auto_host_rewrite` sends to an endpoint: its address as `host:port`. A cluster
/// whose endpoints have names (strict_dns, later) passes the name here instead.
pub fn endpoint_host(address: SocketAddr) -> String {
    address.to_string()
}

/// A weighted split as one core runs it: its smooth WRR picker, and the cluster each pick
/// stands for. Per core and mutable, so it lives beside the core's cluster state, not in the
/// shared route.
#[derive(Debug, Clone)]
pub struct Split {
    picker: std::cell::RefCell<crate::balance::Wrr>,
    clusters: Box<[usize]>,
    weights: Box<[u32]>,
}

impl Split {
    /// Core `core` of `cores` starts at its share of the period, so that cores do not all
    /// send their first requests to the same cluster.
    pub fn new(w: &WeightedClusters, core: usize, cores: usize) -> Split {
        let (clusters, weights) = w.live();
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let start = core * total / cores.max(1);
        Split {
            picker: std::cell::RefCell::new(crate::balance::Wrr::new(&weights, start)),
            clusters: clusters.into(),
            weights: weights.into(),
        }
    }

    /// Whether this split runs `w` (so a reload can keep its place in the sequence).
    pub fn runs(&self, w: &WeightedClusters) -> bool {
        let (clusters, weights) = w.live();
        *self.clusters == *clusters && *self.weights == *weights
    }

    /// The cluster (index in the snapshot) for the next request.
    #[inline]
    pub fn pick(&self) -> usize {
        let i = self.picker.borrow_mut().pick();
        self.clusters.get(i).copied().unwrap_or(NO_CLUSTER)
    }
}

/// `redirect` (Envoy's RedirectAction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `scheme_redirect`, or "https" for `https_redirect`; None keeps the request's.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect`.
    pub port: Option<u16>,
    pub path: RedirectPath,
    /// `strip_query`: the query is dropped (a `path_redirect` with its own query keeps that).
    pub strip_query: bool,
    /// `response_code`: 301 (default), 302, 303, 307 or 308.
    pub status: u16,
}

/// How a redirect's path is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// The request's path.
    Keep,
    /// `path_redirect`: this path (and its query, if it has one, instead of the request's).
    Replace(String),
    /// `prefix_rewrite` (or `regex_rewrite`) applied to the request's path.
    Rewrite(PathRewrite),
}

/// Envoy's `response_code` names, and the statuses they stand for.
pub const REDIRECT_CODES: [(&str, u16); 5] = [
    ("MOVED_PERMANENTLY", 301),
    ("FOUND", 302),
    ("SEE_OTHER", 303),
    ("TEMPORARY_REDIRECT", 307),
    ("PERMANENT_REDIRECT", 308),
];

/// What a redirect is built from: the request as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// "http" or "https": how the request reached the gateway.
    pub scheme: &'a [u8],
    /// Host, with its port if the client sent one.
    pub authority: &'a [u8],
    /// Path and query.
    pub target: &'a [u8],
}

/// The Location of a redirect (Envoy's `Http::Utility::newUri`): scheme, host, port and path
/// replaced as configured. A port the client sent is dropped when a `port_redirect` replaces it,
/// or when the scheme changes and it was the old scheme's default (`:80` going to https).
/// Err: a rewrite of the path made something invalid.
pub fn location(r: &Redirect, req: Requested<'_>) -> Result<Vec<u8>, InvalidPath> {
    let scheme = r.scheme.as_deref().map_or(req.scheme, str::as_bytes);
    let (path, query) = match memchr::memchr(b'?', req.target) {
        Some(q) => req.target.split_at(q),
        None => (req.target, &[][..]),
    };
    let query = if r.strip_query { &[][..] } else { query };
    let mut out = Vec::with_capacity(64 + req.authority.len() + req.target.len());
    out.extend_from_slice(scheme);
    out.extend_from_slice(b"://");
    match &r.host {
        Some(host) => out.extend_from_slice(without_port(host.as_bytes(), r.port.is_some())),
        None => {
            let (host, port) = split_port(req.authority);
            let default_port = match req.scheme {
                b"https" => &b"443"[..],
                _ => &b"80"[..],
            };
            let drop_port =
                r.port.is_some() || (scheme != req.scheme && port == Some(default_port));
            out.extend_from_slice(if drop_port { host } else { req.authority });
        }
    }
    if let Some(port) = r.port {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
    }
    match &r.path {
        RedirectPath::Keep => {
            out.extend_from_slice(path);
            out.extend_from_slice(query);
        }
        RedirectPath::Replace(p) => {
            out.extend_from_slice(p.as_bytes());
            if !p.contains('?') {
                out.extend_from_slice(query);
            }
        }
        RedirectPath::Rewrite(rw) => {
            match rewrite_path(rw, path)? {
                Some(p) => out.extend_from_slice(&p),
                None => out.extend_from_slice(path),
            }
            out.extend_from_slice(query);
        }
    }
    Ok(out)
}

/// An authority split into host and port (None without one); IPv6 literals keep their brackets.
fn split_port(authority: &[u8]) -> (&[u8], Option<&[u8]>) {
    let colon = match authority.first() {
        Some(b'[') => memchr::memchr(b']', authority)
            .and_then(|end| (authority.get(end + 1) == Some(&b':')).then_some(end + 1)),
        _ => memchr::memrchr(b':', authority),
    };
    match colon {
        Some(c) => (&authority[..c], Some(&authority[c + 1..])),
        None => (authority, None),
    }
}

fn without_port(authority: &[u8], strip: bool) -> &[u8] {
    if strip {
        split_port(authority).0
    } else {
        authority
    }
}

/// `direct_response`: a fixed status and body (inline, or a file read at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    /// Sent as text/plain; None: no body.
    pub body: Option<Box<[u8]>>,
    /// The file the body was read from, for the config dump.
    pub filename: Option<String>,
}

/// How the gateway answered a request itself, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Redirect,
    DirectResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(p: &str, s: &str) -> PathRewrite {
        PathRewrite::Regex(RegexRewrite::new(p, s).expect("valid"))
    }

    fn rewritten(rw: &PathRewrite, path: &str) -> Result<Option<String>, InvalidPath> {
        rewrite_path(rw, path.as_bytes()).map(|o| o.map(|v| String::from_utf8(v).unwrap()))
    }

    #[test]
    fn prefix_rewrite_replaces_what_matched() {
        let rw = PathRewrite::Prefix {
            matched: 5,
            with: "/v2/".into(),
        };
        assert_eq!(rewritten(&rw, "/api/users"), Ok(Some("/v2/users".into())));
        assert_eq!(rewritten(&rw, "/api/"), Ok(Some("/v2/".into())));
        // An exact path match: the whole path goes.
        let rw = PathRewrite::Prefix {
            matched: 7,
            with: "/status".into(),
        };
        assert_eq!(rewritten(&rw, "/health"), Ok(Some("/status".into())));
    }

    #[test]
    fn regex_rewrite_uses_envoy_groups() {
        let rw = regex(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1");
        assert_eq!(
            rewritten(&rw, "/service/foo/v1/api"),
            Ok(Some("/v1/api/instance/foo".into()))
        );
        // No match: unchanged.
        assert_eq!(rewritten(&rw, "/other"), Ok(None));
        // Every match is replaced, as RE2's GlobalReplace does.
        let rw = regex("one", "two");
        assert_eq!(rewritten(&rw, "/one/one"), Ok(Some("/two/two".into())));
        // A dollar sign is literal in Envoy's syntax.
        let rw = regex("^/a", "/$1");
        assert_eq!(rewritten(&rw, "/a/b"), Ok(Some("/$1/b".into())));
        let rw = regex("^/a", r"/x\\y");
        assert_eq!(rewritten(&rw, "/a"), Ok(Some(r"/x\y".into())));
    }

    #[test]
    fn a_rewrite_that_leaves_no_path_is_invalid() {
        let rw = regex("^/drop(.*)$", r"\1");
        assert_eq!(rewritten(&rw, "/drop/x"), Ok(Some("/x".into())));
        assert_eq!(rewritten(&rw, "/drop"), Err(InvalidPath));
    }

    #[test]
    fn bad_substitutions_are_refused() {
        assert_eq!(
            RegexRewrite::new("^/(a)$", r"/\2").unwrap_err().0,
            "substitution"
        );
        assert_eq!(
            RegexRewrite::new("^/a$", r"/\q").unwrap_err().0,
            "substitution"
        );
        assert_eq!(
            RegexRewrite::new("^/a$", "/a b").unwrap_err().0,
            "substitution"
        );
        assert_eq!(
            RegexRewrite::new("^/a$", "/a?b").unwrap_err().0,
            "substitution"
        );
        assert_eq!(RegexRewrite::new("(", "/").unwrap_err().0, "pattern.regex");
        // Beyond the size limit.
        assert_eq!(
            RegexRewrite::new(r"\w{1000}\w{1000}", "/").unwrap_err().0,
            "pattern.regex"
        );
    }

    #[test]
    fn a_split_is_exact_per_period() {
        let w = WeightedClusters {
            clusters: vec![(4, 1), (7, 3), (9, 0)],
        };
        let split = Split::new(&w, 0, 1);
        let picks: Vec<usize> = (0..8).map(|_| split.pick()).collect();
        assert_eq!(picks.iter().filter(|&&c| c == 4).count(), 2);
        assert_eq!(picks.iter().filter(|&&c| c == 7).count(), 6);
        assert!(split.runs(&w));
    }

    #[test]
    fn target_keeps_its_query() {
        assert_eq!(with_path(b"/a?x=1", b"/b/c"), b"/b/c?x=1");
        assert_eq!(with_path(b"/a", b"/b"), b"/b");
    }

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            host: None,
            port: None,
            path: RedirectPath::Keep,
            strip_query: false,
            status: 301,
        }
    }

    fn loc(r: &Redirect, scheme: &str, authority: &str, target: &str) -> String {
        let req = Requested {
            scheme: scheme.as_bytes(),
            authority: authority.as_bytes(),
            target: target.as_bytes(),
        };
        String::from_utf8(location(r, req).expect("valid")).unwrap()
    }

    #[test]
    fn locations_follow_envoy() {
        let mut r = redirect();
        r.scheme = Some("https".into());
        assert_eq!(loc(&r, "http", "a.com", "/x?q=1"), "https://a.com/x?q=1");
        // The old scheme's default port goes; another stays.
        assert_eq!(loc(&r, "http", "a.com:80", "/"), "https://a.com/");
        assert_eq!(loc(&r, "http", "a.com:8080", "/"), "https://a.com:8080/");
        assert_eq!(loc(&r, "http", "[::1]:80", "/"), "https://[::1]/");
        r.port = Some(8443);
        assert_eq!(loc(&r, "http", "a.com:8080", "/"), "https://a.com:8443/");
        let mut r = redirect();
        r.host = Some("b.org".into());
        r.path = RedirectPath::Replace("/new".into());
        r.strip_query = true;
        assert_eq!(
            loc(&r, "http", "a.com:8080", "/old?q=1"),
            "http://b.org/new"
        );
        r.strip_query = false;
        assert_eq!(loc(&r, "http", "a.com", "/old?q=1"), "http://b.org/new?q=1");
        r.path = RedirectPath::Replace("/new?n=2".into());
        assert_eq!(loc(&r, "http", "a.com", "/old?q=1"), "http://b.org/new?n=2");
        let mut r = redirect();
        r.path = RedirectPath::Rewrite(PathRewrite::Prefix {
            matched: 4,
            with: "/new".into(),
        });
        assert_eq!(
            loc(&r, "https", "a.com", "/old/x?q"),
            "https://a.com/new/x?q"
        );
    }
}
