//! Validation of a route's `match` beyond methods and TLS context: the one path specifier,
//! `case_sensitive`, `headers` and `query_parameters` (Envoy's names and rules); regexes are
//! compiled here, once, at load.

use super::{Checker, check_path, is_tchar};
use crate::config::PathMatch;
use crate::config::file::{
    RawHeaderMatcher, RawMatch, RawQueryParameterMatcher, RawRegexMatcher, RawStringMatcher,
};
use crate::route_match::{
    HeaderMatcher, HeaderName, HeaderTest, MatchRules, Pattern, QueryMatcher, StringMatch,
    StringMatcher,
};

/// The path specifier and the extra rules of `{rp}.match`.
pub(super) fn path_and_rules(c: &mut Checker, m: &RawMatch, rp: &str) -> (PathMatch, MatchRules) {
    // Field paths are formatted only for an error: a reload of 10,000 routes formatted
    // ~60,000 of them for nothing.
    let mp = || format!("{rp}.match");
    let given = [
        ("prefix", m.prefix.is_some()),
        ("path", m.path.is_some()),
        ("safe_regex", m.safe_regex.is_some()),
        ("path_separated_prefix", m.path_separated_prefix.is_some()),
    ];
    let count = given.iter().filter(|(_, set)| *set).count();
    let path = match (&m.prefix, &m.path, &m.safe_regex, &m.path_separated_prefix) {
        _ if count != 1 => {
            let found = match count {
                0 => "none".to_owned(),
                _ => given
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let why = format!(
                "set exactly one of `prefix` (e.g. \"/\"), `path`, `safe_regex` or \
                 `path_separated_prefix` (found: {found})"
            );
            c.err(&mp(), why);
            PathMatch::Prefix("/".to_owned())
        }
        (Some(p), ..) => {
            check_path(c, p, || format!("{}.prefix", mp()));
            PathMatch::Prefix(p.clone())
        }
        (_, Some(p), ..) => {
            check_path(c, p, || format!("{}.path", mp()));
            PathMatch::Exact(p.clone())
        }
        (_, _, Some(r), _) => regex(c, r, &format!("{}.safe_regex.regex", mp()))
            .map_or_else(|| PathMatch::Prefix("/".to_owned()), PathMatch::Regex),
        (.., Some(p)) => {
            let path = format!("{}.path_separated_prefix", mp());
            check_path(c, p, || path.clone());
            if p.ends_with('/') {
                let bare = p.trim_end_matches('/');
                let why = format!(
                    "{p:?} must not end with '/': {bare:?} already matches {bare:?} and {bare:?} \
                     followed by '/'"
                );
                c.err(&path, why);
            } else if p.contains(['?', '#']) {
                c.err(&path, format!("{p:?} must not contain '?' or '#'"));
            }
            PathMatch::SeparatedPrefix(p.clone())
        }
        (None, None, None, None) => PathMatch::Prefix("/".to_owned()),
    };
    let case_insensitive = m.case_sensitive == Some(false);
    let headers = m
        .headers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, h)| header(c, h, &format!("{}.headers[{i}]", mp())))
        .collect();
    let query_parameters = m
        .query_parameters
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, q)| query(c, q, &format!("{}.query_parameters[{i}]", mp())))
        .collect();
    let rules = MatchRules {
        case_insensitive,
        headers,
        query_parameters,
    };
    (path, rules)
}

fn regex(c: &mut Checker, r: &RawRegexMatcher, path: &str) -> Option<Pattern> {
    Pattern::new(&r.regex)
        .map_err(|why| c.err(path, format!("{:?}: {why}", r.regex)))
        .ok()
}

/// A header matcher; None (with an error recorded) when it is invalid.
fn header(c: &mut Checker, h: &RawHeaderMatcher, hp: &str) -> Option<HeaderMatcher> {
    let lower = h.name.to_ascii_lowercase();
    let name = match lower.as_str() {
        ":authority" | "host" => Some(HeaderName::Authority),
        ":method" => Some(HeaderName::Method),
        ":path" => Some(HeaderName::Path),
        ":scheme" => Some(HeaderName::Scheme),
        "" => {
            c.err(&format!("{hp}.name"), "empty header name");
            None
        }
        n if n.starts_with(':') => {
            let why =
                format!("unknown pseudo-header {n:?} (known: :authority, :method, :path, :scheme)");
            c.err(&format!("{hp}.name"), why);
            None
        }
        n if !n.bytes().all(is_tchar) => {
            let why = format!("invalid header name {n:?}: only RFC 9110 token characters");
            c.err(&format!("{hp}.name"), why);
            None
        }
        n => Some(HeaderName::Field(n.as_bytes().into())),
    };
    let mut tests: Vec<(&str, Option<HeaderTest>)> = Vec::new();
    if let Some(s) = &h.string_match {
        let t = string_matcher(c, s, &format!("{hp}.string_match"));
        tests.push(("string_match", t.map(HeaderTest::String)));
    }
    if let Some(p) = h.present_match {
        tests.push(("present_match", Some(HeaderTest::Present(p))));
    }
    if let Some(r) = &h.range_match {
        let t = if r.start < r.end {
            Some(HeaderTest::Range {
                start: r.start,
                end: r.end,
            })
        } else {
            let why = format!(
                "start ({}) must be below end ({}); end is exclusive",
                r.start, r.end
            );
            c.err(&format!("{hp}.range_match"), why);
            None
        };
        tests.push(("range_match", t));
    }
    let direct = [
        ("exact_match", &h.exact_match, 0),
        ("prefix_match", &h.prefix_match, 1),
        ("suffix_match", &h.suffix_match, 1),
        ("contains_match", &h.contains_match, 1),
    ];
    for (key, value, min_len) in direct {
        let Some(v) = value else { continue };
        let t = if v.len() < min_len {
            c.err(&format!("{hp}.{key}"), "must not be empty");
            None
        } else {
            let b: Box<[u8]> = v.as_bytes().into();
            let kind = match key {
                "exact_match" => StringMatch::Exact(b),
                "prefix_match" => StringMatch::Prefix(b),
                "suffix_match" => StringMatch::Suffix(b),
                _ => StringMatch::Contains(b),
            };
            Some(HeaderTest::String(StringMatcher {
                kind,
                ignore_case: false,
            }))
        };
        tests.push((key, t));
    }
    if let Some(r) = &h.safe_regex_match {
        let t = regex(c, r, &format!("{hp}.safe_regex_match.regex")).map(|p| {
            HeaderTest::String(StringMatcher {
                kind: StringMatch::Regex(p),
                ignore_case: false,
            })
        });
        tests.push(("safe_regex_match", t));
    }
    let test = match tests.len() {
        // Envoy: a matcher with no specifier matches a present header.
        0 => Some(HeaderTest::Present(true)),
        1 => tests.pop().and_then(|(_, t)| t),
        _ => {
            let keys: Vec<&str> = tests.iter().map(|(k, _)| *k).collect();
            let why = format!("set at most one way to match (found: {})", keys.join(", "));
            c.err(hp, why);
            None
        }
    };
    Some(HeaderMatcher {
        name: name?,
        test: test?,
        invert_match: h.invert_match.unwrap_or(false),
        treat_missing_header_as_empty: h.treat_missing_header_as_empty.unwrap_or(false),
    })
}

fn query(c: &mut Checker, q: &RawQueryParameterMatcher, qp: &str) -> Option<QueryMatcher> {
    if q.name.is_empty() {
        c.err(&format!("{qp}.name"), "empty query parameter name");
    }
    if q.present_match == Some(false) {
        // Envoy matches a present parameter either way; say so rather than mislead.
        let why = "present_match: false is not an absence test (Envoy has none for query \
                   parameters); omit it or set true";
        c.err(&format!("{qp}.present_match"), why);
        return None;
    }
    let string_match = match (&q.string_match, q.present_match) {
        (Some(_), Some(true)) => {
            let why = "set one of string_match or present_match (found both)";
            c.err(qp, why);
            return None;
        }
        (Some(s), _) => Some(string_matcher(c, s, &format!("{qp}.string_match"))?),
        (None, _) => None,
    };
    (!q.name.is_empty()).then(|| QueryMatcher {
        name: q.name.as_bytes().into(),
        string_match,
    })
}

fn string_matcher(c: &mut Checker, s: &RawStringMatcher, sp: &str) -> Option<StringMatcher> {
    let ignore_case = s.ignore_case.unwrap_or(false);
    let literal = |v: &String| -> Box<[u8]> {
        match ignore_case {
            true => v.to_ascii_lowercase().into_bytes().into(),
            false => v.as_bytes().into(),
        }
    };
    let mut kinds: Vec<(&str, Option<StringMatch>)> = Vec::new();
    if let Some(v) = &s.exact {
        kinds.push(("exact", Some(StringMatch::Exact(literal(v)))));
    }
    for (key, value) in [
        ("prefix", &s.prefix),
        ("suffix", &s.suffix),
        ("contains", &s.contains),
    ] {
        let Some(v) = value else { continue };
        if v.is_empty() {
            c.err(&format!("{sp}.{key}"), "must not be empty");
            kinds.push((key, None));
            continue;
        }
        let kind = match key {
            "prefix" => StringMatch::Prefix(literal(v)),
            "suffix" => StringMatch::Suffix(literal(v)),
            _ => StringMatch::Contains(literal(v)),
        };
        kinds.push((key, Some(kind)));
    }
    if let Some(r) = &s.safe_regex {
        if ignore_case {
            let why = "ignore_case does not apply to safe_regex; use (?i) in the pattern";
            c.err(&format!("{sp}.ignore_case"), why);
        }
        let kind = regex(c, r, &format!("{sp}.safe_regex.regex")).map(StringMatch::Regex);
        kinds.push(("safe_regex", kind));
    }
    if kinds.len() != 1 {
        let found = match kinds.is_empty() {
            true => "none".to_owned(),
            false => kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
        };
        let why = format!(
            "set exactly one of exact, prefix, suffix, contains or safe_regex (found: {found})"
        );
        c.err(sp, why);
        return None;
    }
    Some(StringMatcher {
        kind: kinds.pop().and_then(|(_, k)| k)?,
        ignore_case,
    })
}
