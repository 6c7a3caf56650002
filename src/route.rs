//! Pure: (host, path, method) -> route. The host picks the virtual host (exact name, then the
//! longest wildcard suffix, then `*`); its routes are tried in order and the first match wins.

use http::Method;

use std::sync::Arc;

use crate::config::{self, PathMatch, VirtualHost};
use crate::hosts::HostIndex;
use crate::route_match::RequestView;

/// Where a route is in its listener's config: its virtual host's index and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteId {
    pub vhost: u32,
    pub route: u32,
}

/// A route as its table serves it: the validated route, shared with the config it came from
/// (a reload keeps the routes whose entries did not change: a table of 10,000 routes is built
/// without copying one), and what depends on where it is in its listener.
#[derive(Debug, Clone)]
pub struct Route {
    pub id: RouteId,
    /// With `weighted_clusters`: this route's split among its listener's, in the order of
    /// [`Router::splits`] (the per-core pickers are kept in that order).
    pub split: u32,
    /// The route forwards to `cluster` as is (config::Action::is_plain).
    plain: bool,
    config: Arc<config::Route>,
}

impl std::ops::Deref for Route {
    type Target = config::Route;

    #[inline]
    fn deref(&self) -> &config::Route {
        &self.config
    }
}

impl Route {
    pub fn new(id: RouteId, split: u32, config: Arc<config::Route>) -> Route {
        Route {
            id,
            split,
            plain: config.action.is_plain(),
            config,
        }
    }

    /// What the route does besides forwarding to its `cluster` as is: rewrites, a weighted
    /// split, or an answer of the gateway's own.
    #[inline]
    pub fn action(&self) -> Option<&crate::action::Action> {
        (!self.plain).then_some(&self.config.action)
    }

    #[inline]
    fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req.path) && self.accepts(req)
    }

    #[inline]
    fn path_matches(&self, path: &[u8]) -> bool {
        let ci = self.rules.case_insensitive;
        let starts = |p: &str| {
            path.get(..p.len())
                .is_some_and(|head| same(head, p.as_bytes(), ci))
        };
        match &self.path {
            PathMatch::Prefix(p) => starts(p),
            PathMatch::Exact(p) => same(path, p.as_bytes(), ci),
            PathMatch::SeparatedPrefix(p) => {
                starts(p) && matches!(path.get(p.len()), None | Some(b'/' | b'?'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    #[inline]
    fn accepts(&self, req: &RequestView<'_>) -> bool {
        self.client_certificate
            .is_none_or(|want| want == req.certified)
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == req.method))
            && (self.rules.is_empty() || self.rules.accepts(req))
    }

    /// Whether `path`, known to start with this route's index key followed by `rest`,
    /// matches the path specifier (for a literal route the key is the whole literal).
    #[inline]
    fn fits_after_key(&self, path: &[u8], rest: &[u8]) -> bool {
        match &self.path {
            PathMatch::Prefix(_) => true,
            PathMatch::Exact(_) => rest.is_empty(),
            PathMatch::SeparatedPrefix(_) => matches!(rest.first(), None | Some(b'/' | b'?')),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// The bytes the route index files this route under, or None when it cannot be indexed
    /// (a case-insensitive literal: the index walk compares bytes exactly).
    fn index_key(&self) -> Option<&[u8]> {
        match &self.path {
            PathMatch::Regex(r) => Some(r.literal_prefix()),
            _ if self.rules.case_insensitive => None,
            PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::SeparatedPrefix(p) => {
                Some(p.as_bytes())
            }
        }
    }
}

#[inline]
fn same(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// One virtual host's ordered routes.
#[derive(Debug, Clone)]
pub struct VirtualRoutes {
    pub name: String,
    /// Every request is answered with a redirect to https.
    pub redirect_to_https: bool,
    /// Upstream requests carry `x-envoy-attempt-count`.
    pub include_request_attempt_count: bool,
    /// The virtual host's header edits.
    pub header_edits: Option<std::sync::Arc<crate::header_edit::HeaderEdits>>,
    pub routes: RouteTable,
}

/// Up to this many routes a linear scan beats the index (a handful of short compares).
const LINEAR_MAX: usize = 8;

/// Ordered routes with a first-match lookup. Beyond a few routes, a radix tree over the route
/// paths finds the candidates (the prefixes of the request path, and the path itself) in one
/// walk down the path, instead of comparing every route: ~5 µs -> well under 200 ns for 10,000
/// routes.
///
/// A `safe_regex` route is filed under its pattern's literal prefix (`/api/v[0-9]+/` under
/// `/api/v`), so it runs only for paths the walk passes through there: scanning the 100 regex
/// routes of a 10,000-route table for every request would cost ~100 x 20-40 ns = 2-4 µs, and a
/// RegexSet still runs every pattern's automaton over the path. Regexes are tried last, in
/// config order, only below the best literal match, so a typical lookup runs none or one
/// (`cargo bench --bench route -- route/mixed`, quiet machine: 78-108 ns without a regex run,
/// ~144 ns with one). Patterns with no literal prefix sit at the root: they are checked for
/// every request no earlier route answers (a path that lacks their literal suffixes is refused
/// without running them: route_match::Pattern); keep them few. Case-insensitive literals are in
/// a side list scanned in order (a few ns each).
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Box<[Route]>,
    index: Option<Radix>,
    /// Routes the index cannot hold, by config index, ascending.
    side: Box<[u32]>,
}

impl RouteTable {
    pub fn new(routes: Box<[Route]>) -> RouteTable {
        let index = (routes.len() > LINEAR_MAX).then(|| Radix::build(&routes));
        let side = match index {
            Some(_) => (0..routes.len() as u32)
                .filter(|&i| routes[i as usize].index_key().is_none())
                .collect(),
            None => Box::default(),
        };
        RouteTable {
            routes,
            index,
            side,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route, in config order, that accepts this path and method from a connection
    /// without a client certificate.
    pub fn find(&self, path: &[u8], method: &Method) -> Option<&Route> {
        self.find_for(&RequestView::bare(path, method))
    }

    /// The first route, in config order, that accepts this request (path, method, headers,
    /// query, client certificate).
    pub fn find_for(&self, req: &RequestView<'_>) -> Option<&Route> {
        let Some(radix) = &self.index else {
            return self.routes.iter().find(|r| r.matches(req));
        };
        let accept = |i: u32| self.routes.get(i as usize).is_some_and(|r| r.matches(req));
        // The walk has compared the literal: only what follows it is left to check.
        let accept_literal = |i: u32, rest: &[u8]| {
            self.routes
                .get(i as usize)
                .is_some_and(|r| r.fits_after_key(req.path, rest) && r.accepts(req))
        };
        // Cheapest first, so the costly regexes run only below the best index found so far.
        let (mut best, mut regexes) = radix.first_literal(req.path, accept_literal);
        if let Some(&i) = self
            .side
            .iter()
            .take_while(|&&i| i < best)
            .find(|&&i| accept(i))
        {
            best = i;
        }
        if let Some(i) = regexes.first_match(radix, req.path, best, accept) {
            best = i;
        }
        self.routes.get(best as usize)
    }
}

/// A radix tree over route paths. Every route's key (its path literal, or its regex's literal
/// prefix) ends at a node, which lists the routes (by config index, ascending) filed there;
/// each candidate is then checked in full (exact length, separator, other matchers). Regex
/// routes are listed apart: they are tried last, only below the best literal match, in config
/// order, so a typical lookup runs one regex at most.
///
/// Built as a tree of nodes, then frozen into flat arrays (node records, edge bytes, labels,
/// route lists): a lookup touches a few contiguous arrays instead of five heap blocks per node,
/// finds the child by a short linear scan of its first bytes (at most one per byte value, ~10
/// for the digits of numbered resources: cheaper than a binary search's dependent loads) and
/// compares labels inline. `route/routes/prefix-middle/10000`: 119 -> 60 ns (see README).
#[derive(Debug, Clone)]
struct Radix {
    nodes: Box<[Flat]>,
    /// Every node's label, back to back.
    labels: Box<[u8]>,
    /// Per node, its children's first label bytes (in any order) and the children themselves.
    edge_bytes: Box<[u8]>,
    edge_nodes: Box<[u32]>,
    /// Per node, its literal routes then its regex routes, each ascending.
    ids: Box<[u32]>,
}

/// A node of the frozen tree: where its parts are in the radix's arrays.
#[derive(Debug, Clone, Copy, Default)]
struct Flat {
    label_at: u32,
    label_len: u32,
    edges_at: u32,
    edges_len: u32,
    ids_at: u32,
    routes_len: u32,
    regexes_len: u32,
}

/// Regex candidates gathered on the stack for one lookup (more fall back to walk order).
const REGEX_CANDIDATES: usize = 16;

/// A node of the tree while it is built. Labels borrow the routes' keys and every list is a
/// chain through indices, so building allocates nothing per node: with a `Vec` per label, child
/// list and route list, building the index of 10,000 routes took ~2 ms, a fifth of a reload.
#[derive(Debug, Clone, Copy)]
struct Node<'a> {
    /// The bytes on the edge into this node, and the first of them.
    label: &'a [u8],
    first: u8,
    /// The first child, and the next child of this node's parent (NONE ends a chain).
    child: u32,
    sibling: u32,
    /// The literal and the regex routes filed here, ascending, chained through `Build::next`.
    routes: Chain,
    regexes: Chain,
}

/// Ends a chain of nodes or routes.
const NONE: u32 = u32::MAX;

/// A list of route indices kept as a chain: its ends and its length.
#[derive(Debug, Clone, Copy)]
struct Chain {
    head: u32,
    tail: u32,
    len: u32,
}

impl Chain {
    const EMPTY: Chain = Chain {
        head: NONE,
        tail: NONE,
        len: 0,
    };

    /// Appends route `i`, whose link is `next[i]`.
    fn push(&mut self, i: u32, next: &mut [u32]) {
        match next.get_mut(self.tail as usize) {
            Some(link) => *link = i,
            None => self.head = i,
        }
        self.tail = i;
        self.len += 1;
    }

    /// The routes of the chain in order.
    fn iter<'n>(&self, next: &'n [u32]) -> impl Iterator<Item = u32> + 'n {
        let head = Some(self.head).filter(|&h| h != NONE);
        std::iter::successors(head, move |&i| {
            next.get(i as usize).copied().filter(|&n| n != NONE)
        })
        .take(self.len as usize)
    }
}

impl<'a> Node<'a> {
    fn new(label: &'a [u8]) -> Node<'a> {
        Node {
            label,
            first: label.first().copied().unwrap_or(0),
            child: NONE,
            sibling: NONE,
            routes: Chain::EMPTY,
            regexes: Chain::EMPTY,
        }
    }
}

/// The tree while it is built: its nodes (the root first) and each route's link in its node's
/// chain.
struct Build<'a> {
    nodes: Vec<Node<'a>>,
    next: Vec<u32>,
}

/// What a walk shows of a node: the route lists filed there and the path after its key.
struct Stop<'a> {
    routes: &'a [u32],
    regexes: &'a [u32],
    rest: &'a [u8],
}

impl Radix {
    fn build(routes: &[Route]) -> Radix {
        let mut tree = Build {
            nodes: Vec::with_capacity(routes.len() * 2 + 1),
            next: vec![NONE; routes.len()],
        };
        tree.nodes.push(Node::new(&[]));
        for (i, r) in routes.iter().enumerate() {
            if let Some(key) = r.index_key() {
                let at = tree.insert(key);
                let node = &mut tree.nodes[at];
                let chain = match r.path {
                    PathMatch::Regex(_) => &mut node.regexes,
                    _ => &mut node.routes,
                };
                chain.push(i as u32, &mut tree.next);
            }
        }
        tree.freeze()
    }

    /// Calls `visit` with each node along `path`, root first (the nodes whose key is a prefix
    /// of the path).
    #[inline]
    fn walk<'a>(&'a self, path: &'a [u8], mut visit: impl FnMut(Stop<'a>)) {
        let mut node = 0usize;
        let mut rest = path;
        while let Some(n) = self.nodes.get(node) {
            let ids = self.ids.get(n.ids_at as usize..).unwrap_or_default();
            let (routes, ids) = ids.split_at(ids.len().min(n.routes_len as usize));
            let regexes = ids.get(..n.regexes_len as usize).unwrap_or_default();
            visit(Stop {
                routes,
                regexes,
                rest,
            });
            let Some(&b) = rest.first() else {
                break;
            };
            let at = n.edges_at as usize;
            let Some(edges) = self.edge_bytes.get(at..at + n.edges_len as usize) else {
                break;
            };
            let Some(child) = edges
                .iter()
                .position(|&e| e == b)
                .and_then(|k| self.edge_nodes.get(at + k))
                .and_then(|&c| self.nodes.get(c as usize).map(|f| (c, f)))
            else {
                break;
            };
            let (c, f) = child;
            let label_at = f.label_at as usize;
            let Some(label) = self.labels.get(label_at..label_at + f.label_len as usize) else {
                break;
            };
            match strip(rest, label) {
                Some(r) => rest = r,
                None => break,
            }
            node = c as usize;
        }
    }

    /// The smallest literal route index filed along `path` that passes `accept` (given the
    /// path after the route's key; u32::MAX for none), and the regex routes met on the way
    /// below it, in one walk.
    fn first_literal<'a>(
        &'a self,
        path: &'a [u8],
        accept: impl Fn(u32, &[u8]) -> bool,
    ) -> (u32, RegexCandidates) {
        let mut best = u32::MAX;
        let mut regexes = RegexCandidates::default();
        self.walk(path, |stop| {
            if let Some(&i) = stop
                .routes
                .iter()
                .take_while(|&&i| i < best)
                .find(|&&i| accept(i, stop.rest))
            {
                best = i;
            }
            for &i in stop.regexes.iter().take_while(|&&i| i < best) {
                match regexes.found.get_mut(regexes.count) {
                    Some(slot) => {
                        *slot = i;
                        regexes.count += 1;
                    }
                    None => regexes.overflow = true,
                }
            }
        });
        (best, regexes)
    }
}

/// `rest` without its leading `label`, or None when it does not start so. Labels are short
/// (a few bytes to a path segment): a byte loop inline beats a call to memcmp.
#[inline]
fn strip<'a>(rest: &'a [u8], label: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(label.len())?;
    head.iter().zip(label).all(|(a, b)| a == b).then_some(tail)
}

impl<'a> Build<'a> {
    /// The node where `key` ends, splitting an edge or adding a leaf as needed.
    fn insert(&mut self, key: &'a [u8]) -> usize {
        let nodes = &mut self.nodes;
        let mut node = 0;
        let mut rest = key;
        while let Some(&b) = rest.first() {
            // The child whose label starts with `b`, and the one before it.
            let mut prev = NONE;
            let mut child = nodes[node].child;
            while child != NONE && nodes[child as usize].first != b {
                prev = child;
                child = nodes[child as usize].sibling;
            }
            if child == NONE {
                let leaf = nodes.len() as u32;
                nodes.push(Node {
                    sibling: nodes[node].child,
                    ..Node::new(rest)
                });
                nodes[node].child = leaf;
                return leaf as usize;
            }
            if prev != NONE {
                // To the front: routes listed together share their prefixes, so the next key
                // most likely goes the same way (building 10,000 numbered routes' index: the
                // scan of siblings was ~40% of it; 1.15 -> 0.6 ms).
                nodes[prev as usize].sibling = nodes[child as usize].sibling;
                nodes[child as usize].sibling = nodes[node].child;
                nodes[node].child = child;
            }
            let label = nodes[child as usize].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // Split the edge: a middle node takes the common part, in the child's place.
                let middle = nodes.len() as u32;
                let tail = &label[common..];
                nodes.push(Node {
                    child,
                    sibling: nodes[child as usize].sibling,
                    ..Node::new(&label[..common])
                });
                let split = &mut nodes[child as usize];
                split.label = tail;
                split.first = tail[0];
                split.sibling = NONE;
                nodes[node].child = middle;
                node = middle as usize;
            } else {
                node = child as usize;
            }
            rest = &rest[common..];
        }
        node
    }

    fn freeze(&self) -> Radix {
        let mut flat = Vec::with_capacity(self.nodes.len());
        let (mut labels, mut edge_bytes, mut edge_nodes, mut ids) = (
            Vec::new(),
            Vec::with_capacity(self.nodes.len()),
            Vec::with_capacity(self.nodes.len()),
            Vec::with_capacity(self.next.len()),
        );
        for n in &self.nodes {
            let (label_at, edges_at, ids_at) = (
                labels.len() as u32,
                edge_bytes.len() as u32,
                ids.len() as u32,
            );
            labels.extend_from_slice(n.label);
            let head = Some(n.child).filter(|&c| c != NONE);
            let children = std::iter::successors(head, |&c| {
                Some(self.nodes[c as usize].sibling).filter(|&s| s != NONE)
            });
            for c in children {
                edge_bytes.push(self.nodes[c as usize].first);
                edge_nodes.push(c);
            }
            ids.extend(n.routes.iter(&self.next));
            ids.extend(n.regexes.iter(&self.next));
            flat.push(Flat {
                label_at,
                label_len: n.label.len() as u32,
                edges_at,
                edges_len: edge_bytes.len() as u32 - edges_at,
                ids_at,
                routes_len: n.routes.len,
                regexes_len: n.regexes.len,
            });
        }
        Radix {
            nodes: flat.into(),
            labels: labels.into(),
            edge_bytes: edge_bytes.into(),
            edge_nodes: edge_nodes.into(),
            ids: ids.into(),
        }
    }
}

/// Regex routes along one path, gathered on the stack (allocation-free).
#[derive(Default)]
struct RegexCandidates {
    found: [u32; REGEX_CANDIDATES],
    count: usize,
    /// More than fit: they are found again by a second walk.
    overflow: bool,
}

impl RegexCandidates {
    /// The smallest candidate below `below` that passes `accept`: tried in config order, so
    /// the first that matches ends the search.
    fn first_match(
        &mut self,
        radix: &Radix,
        path: &[u8],
        below: u32,
        accept: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        if self.overflow {
            // Rare (over 16 regexes along one path): every candidate, in walk order.
            let mut best = below;
            radix.walk(path, |stop| {
                if let Some(&i) = stop
                    .regexes
                    .iter()
                    .take_while(|&&i| i < best)
                    .find(|&&i| accept(i))
                {
                    best = i;
                }
            });
            return (best != below).then_some(best);
        }
        let found = &mut self.found[..self.count];
        found.sort_unstable();
        found
            .iter()
            .copied()
            .take_while(|&i| i < below)
            .find(|&i| accept(i))
    }
}

/// The routing table of one listener.
#[derive(Debug, Clone, Default)]
pub struct Router {
    hosts: HostIndex,
    vhosts: Vec<VirtualRoutes>,
}

impl Router {
    /// Compiles validated virtual hosts. Domains are unique per listener (validated), so
    /// insertion order does not matter.
    pub fn new(vhosts: &[VirtualHost]) -> Router {
        let mut router = Router::default();
        // Weighted routes, numbered in config order.
        let mut splits = 0u32;
        let mut split = |action: &crate::action::Action| {
            let n = splits;
            if matches!(
                action,
                crate::action::Action::Forward {
                    weighted: Some(_),
                    ..
                }
            ) {
                splits += 1;
            }
            n
        };
        for (i, vh) in vhosts.iter().enumerate() {
            let i = i as u32;
            for d in &vh.domains {
                router.hosts.insert(d, i);
            }
            router.vhosts.push(VirtualRoutes {
                name: vh.name.clone(),
                redirect_to_https: vh.redirect_to_https,
                include_request_attempt_count: vh.include_request_attempt_count,
                header_edits: vh.header_edits.clone(),
                routes: RouteTable::new(
                    vh.routes
                        .iter()
                        .enumerate()
                        .map(|(ri, r)| {
                            let id = RouteId {
                                vhost: i,
                                route: ri as u32,
                            };
                            Route::new(id, split(&r.action), r.clone())
                        })
                        .collect(),
                ),
            });
        }
        router
    }

    /// The virtual host for an authority ("Host" value, port and case ignored).
    pub fn virtual_host(&self, authority: &[u8]) -> Option<&VirtualRoutes> {
        self.hosts
            .find(authority)
            .and_then(|i| self.vhosts.get(i as usize))
    }

    /// The first route of the matching virtual host that accepts this path and method.
    pub fn route(&self, authority: &[u8], path: &[u8], method: &Method) -> Option<&Route> {
        self.virtual_host(authority)?.routes.find(path, method)
    }

    pub fn virtual_hosts(&self) -> &[VirtualRoutes] {
        &self.vhosts
    }

    /// The weighted splits of this listener's routes, in the order of their `split` numbers.
    pub fn splits(&self) -> impl Iterator<Item = &crate::action::WeightedClusters> + '_ {
        let routes = self.vhosts.iter().flat_map(|v| v.routes.routes());
        routes.filter_map(|r| match r.action() {
            Some(crate::action::Action::Forward {
                weighted: Some(w), ..
            }) => Some(w),
            _ => None,
        })
    }

    /// The name of a route, if it has one.
    pub fn route_name(&self, id: RouteId) -> Option<&str> {
        let vhost = self.vhosts.get(id.vhost as usize)?;
        vhost
            .routes
            .routes()
            .get(id.route as usize)?
            .name
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Domain};
    use crate::route_match::MatchRules;

    fn vhost(name: &str, domains: &[&str], routes: Vec<config::Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains
                .iter()
                .map(|d| match *d {
                    "*" => Domain::Any,
                    d if d.starts_with("*.") => Domain::Suffix(d[1..].into()),
                    d => Domain::Exact(d.into()),
                })
                .collect(),
            routes: routes.into_iter().map(std::sync::Arc::new).collect(),
            redirect_to_https: false,
            include_request_attempt_count: false,
            header_edits: None,
        }
    }

    fn prefix(p: &str, cluster: usize) -> config::Route {
        config::Route {
            path: PathMatch::Prefix(p.into()),
            methods: None,
            cluster,
            max_request_body_bytes: None,
            timeout: None,
            idle_timeout: None,
            retry_policy: None,
            client_certificate: None,
            hash_policy: Default::default(),
            rules: Default::default(),
            name: None,
            action: Default::default(),
            header_edits: None,
        }
    }

    fn router() -> Router {
        Router::new(&[
            vhost(
                "api",
                &["api.example.com"],
                vec![
                    config::Route {
                        path: PathMatch::Exact("/health".into()),
                        methods: Some(vec![Method::GET]),
                        cluster: 9,
                        max_request_body_bytes: None,
                        timeout: None,
                        idle_timeout: None,
                        retry_policy: None,
                        client_certificate: None,
                        hash_policy: Default::default(),
                        rules: Default::default(),
                        name: None,
                        action: Default::default(),
                        header_edits: None,
                    },
                    prefix("/v1/", 1),
                    prefix("/", 2),
                ],
            ),
            vhost("wild", &["*.example.com"], vec![prefix("/", 3)]),
            vhost("deeper", &["*.eu.example.com"], vec![prefix("/", 4)]),
            vhost("default", &["*"], vec![prefix("/only/", 5)]),
        ])
    }

    fn cluster(r: &Router, host: &str, path: &str, method: Method) -> Option<usize> {
        r.route(host.as_bytes(), path.as_bytes(), &method)
            .map(|r| r.cluster)
    }

    #[test]
    fn host_selection() {
        let r = router();
        assert_eq!(cluster(&r, "api.example.com", "/x", Method::GET), Some(2));
        assert_eq!(
            cluster(&r, "API.Example.COM:8080", "/x", Method::GET),
            Some(2)
        );
        assert_eq!(cluster(&r, "api.example.com.", "/x", Method::GET), Some(2));
        assert_eq!(cluster(&r, "www.example.com", "/x", Method::GET), Some(3));
        assert_eq!(cluster(&r, "a.eu.example.com", "/x", Method::GET), Some(4));
        assert_eq!(cluster(&r, "example.com", "/only/x", Method::GET), Some(5));
        assert_eq!(cluster(&r, "", "/only/x", Method::GET), Some(5));
        assert_eq!(cluster(&r, "[::1]:80", "/only/", Method::GET), Some(5));
    }

    #[test]
    fn first_matching_route_wins() {
        let r = router();
        assert_eq!(
            cluster(&r, "api.example.com", "/v1/users", Method::GET),
            Some(1)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/health", Method::GET),
            Some(9)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/health", Method::POST),
            Some(2)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/healthz", Method::GET),
            Some(2)
        );
        assert_eq!(cluster(&r, "nothing.org", "/x", Method::GET), None);
    }

    /// The radix index gives exactly the linear scan's answer, on random route sets.
    #[test]
    fn index_agrees_with_linear_scan() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let parts = ["/", "a", "ab", "b/", "api/", "v1", "/x", "users", "/", "s"];
        let random_path = |n: u64, next: &mut dyn FnMut() -> u64| -> String {
            let mut p = String::from("/");
            for _ in 0..n {
                p.push_str(parts[(next() % parts.len() as u64) as usize]);
            }
            p
        };
        for round in 0..200 {
            let count = 9 + round % 40;
            let mut routes = Vec::new();
            for i in 0..count {
                let path = random_path(i as u64 % 4, &mut next);
                routes.push(config::Route {
                    path: match i % 7 {
                        _ if i % 5 == 0 => PathMatch::Exact(path.clone()),
                        3 => PathMatch::Regex(
                            crate::route_match::Pattern::new(&format!("{path}[a-z/]*"))
                                .expect("valid"),
                        ),
                        4 if path.len() > 1 => {
                            PathMatch::SeparatedPrefix(path.trim_end_matches('/').to_owned())
                        }
                        6 => PathMatch::Regex(
                            crate::route_match::Pattern::new(&format!(".*{}", &path[1..]))
                                .expect("valid"),
                        ),
                        _ => PathMatch::Prefix(path.clone()),
                    },
                    methods: (i % 3 == 0).then(|| vec![Method::GET]),
                    cluster: i,
                    max_request_body_bytes: None,
                    timeout: None,
                    idle_timeout: None,
                    retry_policy: None,
                    client_certificate: None,
                    hash_policy: Default::default(),
                    rules: MatchRules {
                        case_insensitive: i % 4 == 1,
                        ..MatchRules::default()
                    },
                    name: None,
                    action: Default::default(),
                    header_edits: None,
                });
                if i % 4 == 1
                    && let Some(config::Route {
                        path: PathMatch::Prefix(p),
                        ..
                    }) = routes.last_mut()
                {
                    *p = p.to_ascii_uppercase();
                }
            }
            let routes: Vec<Route> = (routes.into_iter())
                .map(|r| Route::new(RouteId::default(), 0, Arc::new(r)))
                .collect();
            let table = RouteTable::new(routes.clone().into_boxed_slice());
            assert!(table.index.is_some());
            for _ in 0..50 {
                let n = 1 + next() % 5;
                let mut path = random_path(n, &mut next);
                if n % 2 == 0 {
                    path = path.replacen('a', "A", 1);
                }
                for method in [Method::GET, Method::POST] {
                    let linear = routes
                        .iter()
                        .find(|r| r.matches(&RequestView::bare(path.as_bytes(), &method)));
                    let indexed = table.find(path.as_bytes(), &method);
                    assert_eq!(
                        linear.map(|r| r.cluster),
                        indexed.map(|r| r.cluster),
                        "path {path} {method} routes {routes:?}"
                    );
                }
            }
        }
    }

    /// More regex candidates along one path than the stack holds: still the first in order.
    #[test]
    fn many_regexes_along_one_path_keep_config_order() {
        let mut routes: Vec<config::Route> = (0..20)
            .map(|i| {
                let mut r = prefix("/", i);
                let re = format!("/a/.*{}", 19 - i);
                r.path = PathMatch::Regex(crate::route_match::Pattern::new(&re).expect("valid"));
                r
            })
            .collect();
        routes.push(prefix("/", 99));
        let r = Router::new(&[vhost("a", &["*"], routes)]);
        assert_eq!(cluster(&r, "a", "/a/x5", Method::GET), Some(14));
        assert_eq!(cluster(&r, "a", "/a/x19", Method::GET), Some(0));
        assert_eq!(cluster(&r, "a", "/a/x", Method::GET), Some(99));
    }

    #[test]
    fn no_fallback_means_no_match() {
        let r = Router::new(&[vhost("a", &["a.com"], vec![prefix("/", 1)])]);
        assert_eq!(cluster(&r, "b.com", "/", Method::GET), None);
        assert_eq!(cluster(&r, "a.com", "/", Method::GET), Some(1));
    }
}
