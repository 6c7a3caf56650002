//! Header edits as Envoy configures them (`request_headers_to_add` / `_remove`,
//! `response_headers_to_add` / `_remove` at listener, virtual host and route level): names and
//! values checked and compiled at load, values expanded per request, edits applied to a head's
//! header list. Pure: no I/O.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::access_log::{self, Field, Token};
use crate::message::{Headers, RequestHead, ResponseHead, Version};

/// What an added header does to the fields of that name already there (Envoy's
/// `append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Another field of that name (the default; `append: true`).
    AppendIfExistsOrAdd,
    /// Only when there is none.
    AddIfAbsent,
    /// Replaces every field of that name, or adds one (`append: false`).
    OverwriteIfExistsOrAdd,
    /// Replaces every field of that name; nothing when there is none.
    OverwriteIfExists,
}

impl AppendAction {
    /// Envoy's name for it.
    pub fn name(self) -> &'static str {
        match self {
            AppendAction::AppendIfExistsOrAdd => "APPEND_IF_EXISTS_OR_ADD",
            AppendAction::AddIfAbsent => "ADD_IF_ABSENT",
            AppendAction::OverwriteIfExistsOrAdd => "OVERWRITE_IF_EXISTS_OR_ADD",
            AppendAction::OverwriteIfExists => "OVERWRITE_IF_EXISTS",
        }
    }

    pub fn parse(raw: &str) -> Result<AppendAction, String> {
        Ok(match raw {
            "APPEND_IF_EXISTS_OR_ADD" => AppendAction::AppendIfExistsOrAdd,
            "ADD_IF_ABSENT" => AppendAction::AddIfAbsent,
            "OVERWRITE_IF_EXISTS_OR_ADD" => AppendAction::OverwriteIfExistsOrAdd,
            "OVERWRITE_IF_EXISTS" => AppendAction::OverwriteIfExists,
            other => {
                return Err(format!(
                    "unknown append_action {other:?} (known: APPEND_IF_EXISTS_OR_ADD, \
                     ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS)"
                ));
            }
        })
    }
}

/// A dynamic part of a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The client's address and port.
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    /// The address the client connected to.
    DownstreamLocalAddress,
    /// A request header or pseudo-header (`a?b` tries `a`, then `b`).
    Req(Vec<Field>),
    /// The endpoint picked for this attempt.
    UpstreamHost,
    /// The request's `x-request-id` (the one the gateway generated, or kept).
    RequestId,
    /// The downstream protocol: HTTP/1.0, HTTP/1.1, HTTP/2.
    Protocol,
    StartTime,
}

fn parse_op(name: &str) -> Result<Op, String> {
    if let Some(fields) = access_log::parse_req(name) {
        return Ok(Op::Req(fields?));
    }
    Ok(match name {
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "REQUEST_ID" => Op::RequestId,
        "PROTOCOL" => Op::Protocol,
        "START_TIME" => Op::StartTime,
        other => {
            return Err(format!(
                "unknown operator %{other}% in a header value (known: \
                 %DOWNSTREAM_REMOTE_ADDRESS%, %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, \
                 %DOWNSTREAM_LOCAL_ADDRESS%, %REQ(name)%, %UPSTREAM_HOST%, %REQUEST_ID%, \
                 %PROTOCOL%, %START_TIME%; %% for a literal %)"
            ));
        }
    })
}

/// A header value compiled at load: literal text and operators, and the text it came from
/// (for the config dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(Vec<Token<Op>>, String);

impl Value {
    /// Compiles a value. Err: an unknown or malformed operator, or a byte no header value may
    /// carry (CR, LF, NUL or another control character).
    pub fn compile(raw: &str) -> Result<Value, String> {
        if let Some(b) = raw.bytes().find(|&b| !is_value_byte(b)) {
            return Err(format!(
                "a header value cannot contain byte 0x{b:02x} (CR, LF, NUL and other control \
                 characters would split or corrupt the head)"
            ));
        }
        access_log::tokenize(raw, parse_op).map(|tokens| Value(tokens, raw.to_owned()))
    }

    fn uses(&self, wanted: impl Fn(&Op) -> bool) -> bool {
        self.0
            .iter()
            .any(|t| matches!(t, Token::Op(op, _) if wanted(op)))
    }
}

/// Whether a byte may appear in a field value (RFC 9110 §5.5: VCHAR, SP, HTAB, obs-text).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// What makes a header name unfit for an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Add,
    Remove,
}

/// Hop-by-hop and framing fields: the codecs own them on each side, an edit would desync the
/// framing or the connection's management.
const FRAMING: [&str; 7] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "keep-alive",
    "proxy-connection",
];

/// Checks a header name for an edit and lower-cases it. Err: why it cannot be edited.
pub fn check_name(raw: &str, purpose: Purpose) -> Result<String, String> {
    let verb = match purpose {
        Purpose::Add => "added",
        Purpose::Remove => "removed",
    };
    if raw.is_empty() {
        return Err("a header name cannot be empty".into());
    }
    if raw.starts_with(':') {
        return Err(format!(
            "pseudo-header {raw} cannot be {verb} (the request line and :authority are set \
             by route actions)"
        ));
    }
    if let Some(c) = raw.chars().find(|&c| !c.is_ascii() || !is_tchar(c as u8)) {
        return Err(format!(
            "{raw:?} is not a valid header name ({c:?} is not a token character)"
        ));
    }
    let name = raw.to_ascii_lowercase();
    if name == "host" {
        return Err(format!(
            "host cannot be {verb} (it routes the request; rewrite it with the route's \
             host_rewrite_literal)"
        ));
    }
    if FRAMING.contains(&name.as_str()) {
        return Err(format!(
            "{name} cannot be {verb}: it is a hop-by-hop or framing header that the gateway \
             sets itself on each connection"
        ));
    }
    Ok(name)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One header to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Lower-case.
    pub name: String,
    pub value: Value,
    pub action: AppendAction,
    /// Added even when the value expands to nothing (else skipped).
    pub keep_empty_value: bool,
}

/// The edits of one direction at one level: removals first, then additions, as Envoy does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub remove: Vec<String>,
    pub add: Vec<Add>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    fn uses(&self, wanted: impl Fn(&Op) -> bool + Copy) -> bool {
        self.add.iter().any(|a| a.value.uses(wanted))
    }
}

/// The header edits of one level (a listener, a virtual host or a route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub request: Edits,
    pub response: Edits,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// The level's keys as the config dump shows them (Envoy's names).
    pub fn dump(&self) -> serde_json::Value {
        let adds = |edits: &Edits| {
            (edits.add.iter())
                .map(|a| {
                    serde_json::json!({
                        "header": { "key": a.name, "value": a.value.1 },
                        "append_action": a.action.name(),
                        "keep_empty_value": a.keep_empty_value,
                    })
                })
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "request_headers_to_add": adds(&self.request),
            "request_headers_to_remove": self.request.remove,
            "response_headers_to_add": adds(&self.response),
            "response_headers_to_remove": self.response.remove,
        })
    }

    /// Whether a value reads the connection's local address (which then has to be looked up
    /// once per connection).
    pub fn uses_local_address(&self) -> bool {
        let wanted = |op: &Op| *op == Op::DownstreamLocalAddress;
        self.request.uses(wanted) || self.response.uses(wanted)
    }
}

/// The levels that apply to a request, in the order they are applied: route, virtual host,
/// listener. Envoy's default (`most_specific_header_mutations_wins: false`): the outer level
/// goes last, so its overwrite wins.
pub type Levels<'a> = [Option<&'a HeaderEdits>; 3];

/// What values read besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    pub upstream: Option<SocketAddr>,
    /// The scheme the client used, for `%REQ(:scheme)%`.
    pub scheme: &'a str,
}

/// Appends `value` expanded for this request to `out`. False when the expansion carries a
/// byte no header value may (a CR smuggled through a dynamic value): the header is dropped.
pub fn expand(value: &Value, head: &RequestHead, env: &Env<'_>, out: &mut Vec<u8>) -> bool {
    for token in &value.0 {
        match token {
            Token::Text(t) => out.extend_from_slice(t.as_bytes()),
            Token::Op(op, limit) => {
                let start = out.len();
                write_op(op, head, env, out);
                if let Some(n) = limit {
                    let mut end = start + (*n).min(out.len() - start);
                    // Never cut a UTF-8 character in two.
                    while end > start && end < out.len() && out[end] & 0xc0 == 0x80 {
                        end -= 1;
                    }
                    out.truncate(end);
                }
                if !out[start..].iter().all(|&b| is_value_byte(b)) {
                    return false;
                }
            }
        }
    }
    true
}

/// An operator's value; nothing when it has none (Envoy's header formatter writes "").
fn write_op(op: &Op, head: &RequestHead, env: &Env<'_>, out: &mut Vec<u8>) {
    match op {
        Op::DownstreamRemoteAddress => {
            let _ = write!(out, "{}", env.remote);
        }
        Op::DownstreamRemoteAddressWithoutPort => {
            let _ = write!(out, "{}", env.remote.ip());
        }
        Op::DownstreamLocalAddress => {
            if let Some(a) = env.local {
                let _ = write!(out, "{a}");
            }
        }
        Op::Req(fields) => {
            if let Some(v) = access_log::read_req(fields, head, env.scheme) {
                out.extend_from_slice(v);
            }
        }
        Op::UpstreamHost => {
            if let Some(a) = env.upstream {
                let _ = write!(out, "{a}");
            }
        }
        Op::RequestId => {
            if let Some(v) = head.headers.get(b"x-request-id") {
                out.extend_from_slice(v);
            }
        }
        Op::Protocol => out.extend_from_slice(match head.version {
            Version::HTTP_10 => b"HTTP/1.0",
            Version::HTTP_2 => b"HTTP/2",
            _ => b"HTTP/1.1",
        }),
        Op::StartTime => {
            let _ = write!(
                out,
                "{}",
                humantime::format_rfc3339_millis(SystemTime::now())
            );
        }
    }
}

/// Adds one expanded value as its action says.
fn add(headers: &mut Headers, add: &Add, value: &[u8]) {
    if value.is_empty() && !add.keep_empty_value {
        return;
    }
    let name = add.name.as_bytes();
    match add.action {
        AppendAction::AppendIfExistsOrAdd => {}
        AppendAction::AddIfAbsent => {
            if headers.get(name).is_some() {
                return;
            }
        }
        AppendAction::OverwriteIfExistsOrAdd => headers.remove(name),
        AppendAction::OverwriteIfExists => {
            if headers.get(name).is_none() {
                return;
            }
            headers.remove(name);
        }
    }
    headers.append(name, value);
}

/// Applies the request edits of every level to `head` (a value reads the head as the edits
/// before it left it, as Envoy's do).
pub fn apply_request(levels: &Levels<'_>, head: &mut RequestHead, env: &Env<'_>) {
    let mut value = Vec::new();
    for edits in levels.iter().flatten().map(|l| &l.request) {
        for name in &edits.remove {
            head.headers.remove(name.as_bytes());
        }
        for a in &edits.add {
            value.clear();
            if expand(&a.value, head, env, &mut value) {
                add(&mut head.headers, a, &value);
            }
        }
    }
}

/// The request edits of one request across its attempts: applied once the first endpoint is
/// picked; applied again from the unedited head on a retry when a value reads the endpoint.
/// Response values expanded for the current attempt, ready for its response head.
#[derive(Debug)]
pub struct Plan<'a> {
    levels: Levels<'a>,
    /// A request value reads `%UPSTREAM_HOST%`.
    per_endpoint: bool,
    /// The head before the edits, kept only when a retry would have to edit it again.
    pristine: Option<RequestHead>,
    applied: bool,
    /// Response values, expanded, one span (or None: dropped) per response add in level order.
    values: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

impl<'a> Plan<'a> {
    /// None when no level edits anything: the request path then does no work at all.
    pub fn new(levels: Levels<'a>) -> Option<Plan<'a>> {
        if levels.iter().flatten().all(|l| l.is_empty()) {
            return None;
        }
        let per_endpoint =
            (levels.iter().flatten()).any(|l| l.request.uses(|op| *op == Op::UpstreamHost));
        Some(Plan {
            levels,
            per_endpoint,
            pristine: None,
            applied: false,
            values: Vec::new(),
            spans: Vec::new(),
        })
    }

    /// Edits the request for the attempt on `env.upstream`; `may_retry`: another attempt may
    /// follow. True when the head changed (an encoded copy must be encoded again).
    pub fn edit_request(&mut self, head: &mut RequestHead, env: &Env<'_>, may_retry: bool) -> bool {
        if self.applied {
            let Some(pristine) = &self.pristine else {
                return false;
            };
            head.clone_from(pristine);
        } else if self.per_endpoint && may_retry {
            self.pristine = Some(head.clone());
        }
        self.applied = true;
        apply_request(&self.levels, head, env);
        true
    }

    /// Expands the response values for this attempt (they may read the request as edited and
    /// the endpoint).
    pub fn prepare_response(&mut self, head: &RequestHead, env: &Env<'_>) {
        self.values.clear();
        self.spans.clear();
        for a in self.levels.iter().flatten().flat_map(|l| &l.response.add) {
            let start = self.values.len();
            let ok = expand(&a.value, head, env, &mut self.values);
            if !ok {
                self.values.truncate(start);
            }
            self.spans.push(ok.then_some((start, self.values.len())));
        }
    }

    /// Whether there is anything to do to a response head.
    pub fn edits_response(&self) -> bool {
        self.levels.iter().flatten().any(|l| !l.response.is_empty())
    }

    /// Applies the response edits of every level, with the values prepare_response expanded.
    pub fn apply_response(&self, response: &mut ResponseHead) {
        let mut spans = self.spans.iter();
        for edits in self.levels.iter().flatten().map(|l| &l.response) {
            for name in &edits.remove {
                response.headers.remove(name.as_bytes());
            }
            for a in &edits.add {
                if let Some(Some((start, end))) = spans.next()
                    && let Some(value) = self.values.get(*start..*end)
                {
                    add(&mut response.headers, a, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_of(name: &str, value: &str, action: AppendAction) -> Add {
        Add {
            name: name.into(),
            value: Value::compile(value).unwrap(),
            action,
            keep_empty_value: false,
        }
    }

    fn env() -> Env<'static> {
        Env {
            remote: "192.0.2.1:5555".parse().unwrap(),
            local: Some("10.0.0.1:8080".parse().unwrap()),
            upstream: Some("10.0.0.7:80".parse().unwrap()),
            scheme: "https",
        }
    }

    fn request() -> RequestHead {
        let mut head = RequestHead::default();
        head.set_target(b"/pay?x=1");
        head.set_authority(b"shop.test");
        head.headers.append(b"x-request-id", b"abc");
        head.headers.append(b"x-tag", b"one");
        head
    }

    fn values<'h>(h: &'h Headers, name: &str) -> Vec<&'h [u8]> {
        h.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(check_name("X-Tag", Purpose::Add).unwrap(), "x-tag");
        for (bad, why) in [
            ("", "empty"),
            ("x tag", "token"),
            ("x:y", "token"),
            (":path", "pseudo-header"),
            ("Host", "host cannot be removed"),
            ("transfer-encoding", "hop-by-hop"),
            ("Content-Length", "hop-by-hop"),
            ("TE", "hop-by-hop"),
        ] {
            let e = check_name(bad, Purpose::Remove).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(
            check_name("connection", Purpose::Add)
                .unwrap_err()
                .contains("cannot be added")
        );
    }

    #[test]
    fn values_compile_or_say_why() {
        assert!(Value::compile("a\r\nb").unwrap_err().contains("0x0d"));
        assert!(Value::compile("a\0").unwrap_err().contains("0x00"));
        assert!(
            Value::compile("%NOPE%")
                .unwrap_err()
                .contains("unknown operator %NOPE%")
        );
        assert!(Value::compile("%RESPONSE_CODE%").is_err());
        assert!(Value::compile("50%").unwrap_err().contains("unterminated"));
        assert!(Value::compile("100%% %REQ(X-A?x-b):3%").is_ok());
        let mut edits = HeaderEdits::default();
        edits.response.remove.push("server".into());
        edits
            .request
            .add
            .push(add_of("x-a", "%PROTOCOL% 100%%", AppendAction::AddIfAbsent));
        let dump = edits.dump();
        assert_eq!(
            dump["request_headers_to_add"][0]["header"]["value"],
            "%PROTOCOL% 100%%"
        );
        assert_eq!(
            dump["request_headers_to_add"][0]["append_action"],
            "ADD_IF_ABSENT"
        );
        assert_eq!(dump["response_headers_to_remove"][0], "server");
    }

    #[test]
    fn values_expand() {
        let head = request();
        let env = env();
        let cases = [
            ("%DOWNSTREAM_REMOTE_ADDRESS%", "192.0.2.1:5555"),
            ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "192.0.2.1"),
            ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.1:8080"),
            ("%UPSTREAM_HOST%", "10.0.0.7:80"),
            ("%REQUEST_ID%/%REQ(x-request-id)%", "abc/abc"),
            ("%REQ(x-none?X-Tag)%", "one"),
            (
                "%REQ(:path)% %REQ(:authority)% %REQ(:scheme)%",
                "/pay?x=1 shop.test https",
            ),
            ("%PROTOCOL%", "HTTP/1.1"),
            ("100%% %REQ(x-tag):2%", "100% on"),
            ("[%REQ(x-none)%]", "[]"),
        ];
        for (raw, want) in cases {
            let mut out = Vec::new();
            assert!(expand(&Value::compile(raw).unwrap(), &head, &env, &mut out));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{raw}");
        }
        let mut out = Vec::new();
        assert!(expand(
            &Value::compile("%START_TIME%").unwrap(),
            &head,
            &env,
            &mut out
        ));
        assert!(out.ends_with(b"Z"));
    }

    #[test]
    fn a_dynamic_value_with_a_line_break_is_dropped() {
        let mut head = request();
        // Headers from a codec never carry one; a value built in memory might.
        head.headers.append(b"x-evil", b"a\r\nb");
        let levels_owned = HeaderEdits {
            request: Edits {
                remove: vec![],
                add: vec![add_of(
                    "x-copy",
                    "%REQ(x-evil)%",
                    AppendAction::AppendIfExistsOrAdd,
                )],
            },
            response: Edits::default(),
        };
        apply_request(&[Some(&levels_owned), None, None], &mut head, &env());
        assert!(head.headers.get(b"x-copy").is_none());
    }

    #[test]
    fn append_actions() {
        use AppendAction::*;
        // (action, the values with a client's x-tag, the values without one)
        type Case = (
            AppendAction,
            &'static [&'static [u8]],
            &'static [&'static [u8]],
        );
        let cases: [Case; 4] = [
            (AppendIfExistsOrAdd, &[b"one", b"new"], &[b"new"]),
            (AddIfAbsent, &[b"one"], &[b"new"]),
            (OverwriteIfExistsOrAdd, &[b"new"], &[b"new"]),
            (OverwriteIfExists, &[b"new"], &[]),
        ];
        for (action, present, absent) in cases {
            let edits = HeaderEdits {
                request: Edits {
                    remove: vec![],
                    add: vec![add_of("x-tag", "new", action)],
                },
                response: Edits::default(),
            };
            let mut head = request();
            apply_request(&[Some(&edits), None, None], &mut head, &env());
            assert_eq!(values(&head.headers, "x-tag"), present, "{action:?}");
            let mut head = request();
            head.headers.remove(b"x-tag");
            apply_request(&[Some(&edits), None, None], &mut head, &env());
            assert_eq!(values(&head.headers, "x-tag"), absent, "{action:?}");
        }
    }

    #[test]
    fn empty_values_are_skipped_unless_kept() {
        let mut a = add_of(
            "x-empty",
            "%REQ(x-none)%",
            AppendAction::AppendIfExistsOrAdd,
        );
        let mut edits = HeaderEdits::default();
        edits.request.add.push(a.clone());
        let mut head = request();
        apply_request(&[Some(&edits), None, None], &mut head, &env());
        assert_eq!(head.headers.get(b"x-empty"), None);
        a.keep_empty_value = true;
        edits.request.add = vec![a];
        apply_request(&[Some(&edits), None, None], &mut head, &env());
        assert_eq!(head.headers.get(b"x-empty"), Some(&b""[..]));
    }

    #[test]
    fn outer_levels_go_last_and_removals_before_additions() {
        let level = |value: &str, remove: &[&str]| HeaderEdits {
            request: Edits {
                remove: remove.iter().map(|s| s.to_string()).collect(),
                add: vec![add_of(
                    "x-level",
                    value,
                    AppendAction::OverwriteIfExistsOrAdd,
                )],
            },
            response: Edits::default(),
        };
        let route = level("route", &["x-tag"]);
        let vhost = level("vhost", &[]);
        let listener = level("listener", &["x-level"]);
        let mut head = request();
        apply_request(
            &[Some(&route), Some(&vhost), Some(&listener)],
            &mut head,
            &env(),
        );
        assert_eq!(values(&head.headers, "x-level"), [b"listener"]);
        assert_eq!(head.headers.get(b"x-tag"), None);
    }

    #[test]
    fn a_retry_edits_the_unedited_head_again_for_a_new_endpoint() {
        let mut edits = HeaderEdits::default();
        edits.request.add.push(add_of(
            "x-up",
            "%UPSTREAM_HOST%",
            AppendAction::AppendIfExistsOrAdd,
        ));
        let mut plan = Plan::new([Some(&edits), None, None]).unwrap();
        let mut head = request();
        let mut env = env();
        assert!(plan.edit_request(&mut head, &env, true));
        env.upstream = Some("10.0.0.8:80".parse().unwrap());
        assert!(plan.edit_request(&mut head, &env, true));
        assert_eq!(values(&head.headers, "x-up"), [b"10.0.0.8:80"]);
        // Without a value that reads the endpoint, a retry keeps the edited head as it is.
        let mut edits = HeaderEdits::default();
        edits
            .request
            .add
            .push(add_of("x-a", "a", AppendAction::AppendIfExistsOrAdd));
        let mut plan = Plan::new([None, Some(&edits), None]).unwrap();
        let mut head = request();
        assert!(plan.edit_request(&mut head, &env, true));
        assert!(!plan.edit_request(&mut head, &env, true));
        assert_eq!(values(&head.headers, "x-a"), [b"a"]);
        assert!(Plan::new([None, Some(&HeaderEdits::default()), None]).is_none());
    }

    #[test]
    fn responses_get_prepared_values() {
        let mut edits = HeaderEdits::default();
        edits.response.remove.push("server".into());
        edits.response.add.push(add_of(
            "x-up",
            "%UPSTREAM_HOST% %REQ(x-tag)%",
            AppendAction::AppendIfExistsOrAdd,
        ));
        let mut plan = Plan::new([None, None, Some(&edits)]).unwrap();
        assert!(plan.edits_response());
        plan.prepare_response(&request(), &env());
        let mut response = ResponseHead::default();
        response.headers.append(b"Server", b"origin");
        plan.apply_response(&mut response);
        assert_eq!(response.headers.get(b"server"), None);
        assert_eq!(response.headers.get(b"x-up"), Some(&b"10.0.0.7:80 one"[..]));
    }
}
