//! Re-parses only the route entries whose text changed when the `listeners` section changes: a
//! reload that adds or edits one of 10,000 routes parses that route and the section's other
//! lines, not the 10,000 routes (~40 ms -> ~1 ms of YAML).
//!
//! The split: a line `routes:` (the key alone, a comment may follow) followed by block sequence
//! entries (`-` at one indentation, each running until the next line at that indentation or
//! less; blank and comment lines run on). The skeleton is the section with each such list cut
//! out and `routes: []` in its place; each entry is taken from the last parse when its text is
//! the same, and parsed otherwise (the new entries of a list together, as a list of their
//! own). Every list cut must be a virtual host's, one per virtual host (counted against the
//! skeleton's parse: any other `routes:` makes the counts differ). A section where a line's
//! meaning could depend on more than its indentation — anchors, aliases, tags, block scalars,
//! quoted strings or flow collections spanning lines, tabs — is not split, nor is one whose
//! skeleton or entries do not parse alone: it is parsed whole, and its errors are the whole
//! section's.

use std::ops::Range;

use super::file::{self, RawListener, RawRoute};

/// The route entries of the last parse: the section's text and, list by list (in virtual-host
/// order), each entry's span in it, in the order of the routes they became.
#[derive(Default)]
pub(super) struct RouteItems {
    text: String,
    lists: Vec<Vec<Range<usize>>>,
    /// Entries the last call parsed (the rest were taken from the call before).
    pub(super) parsed: usize,
    /// List by list, which entries the last call took from the call before.
    pub(super) kept: Vec<Kept>,
}

/// How a route list of a parse relates to the same list of the parse before: its first `head`
/// and last `tail` entries are that list's first and last ones, their text unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Kept {
    pub(super) head: usize,
    pub(super) tail: usize,
}

impl Kept {
    /// Where entry `at` of a list of `len` entries was in the list before (of `was` entries),
    /// if it is one of those kept.
    pub(super) fn was_at(self, at: usize, len: usize, was: usize) -> Option<usize> {
        if self.head + self.tail > len.min(was) {
            return None;
        }
        match at {
            _ if at < self.head => Some(at),
            _ if at >= len - self.tail && at < len => Some(was - (len - at)),
            _ => None,
        }
    }
}

/// One `routes:` list found in a section: the line to replace and its entries.
struct List {
    /// The `routes:` line (without its line end) and its indentation.
    key_line: Range<usize>,
    indent: usize,
    /// From the first entry's line to the end of the last entry.
    span: Range<usize>,
    entries: Vec<Range<usize>>,
}

impl RouteItems {
    /// Parses the `listeners` section `body` (from its key's line), taking unchanged route
    /// entries from `old`, the listeners this cache's last call returned. None: the section
    /// must be parsed whole; the cache is then empty.
    pub(super) fn parse(&mut self, body: &str, old: Vec<RawListener>) -> Option<Vec<RawListener>> {
        let parsed = self.update(body, old);
        if parsed.is_none() {
            *self = RouteItems::default();
        }
        parsed
    }

    /// Whether the last parse split the section (tests).
    #[cfg(test)]
    pub(super) fn is_split(&self) -> bool {
        !self.lists.is_empty()
    }

    fn update(&mut self, body: &str, old: Vec<RawListener>) -> Option<Vec<RawListener>> {
        self.parsed = 0;
        let (lines, lists) = split(body)?;
        // The last call's routes, list by list, if they are the ones its spans describe.
        let mut was: Vec<Vec<RawRoute>> = old
            .into_iter()
            .flat_map(|l| l.virtual_hosts)
            .map(|v| v.routes)
            .collect();
        let same_shape = was.len() == lists.len()
            && was.len() == self.lists.len()
            && was.iter().zip(&self.lists).all(|(w, s)| w.len() == s.len());
        if !same_shape {
            was = lists.iter().map(|_| Vec::new()).collect();
            self.lists = lists.iter().map(|_| Vec::new()).collect();
        }
        // The entries before and after the first and last that changed are kept where they
        // are (a route is ~1 KB: 10,000 of them are not moved); those between are parsed.
        let kept: Vec<Kept> = (lists.iter().zip(&self.lists))
            .map(|(list, spans)| {
                let same = |a: usize, b: usize| {
                    self.text[spans[a].clone()] == body[list.entries[b].clone()]
                };
                let (olds, news) = (spans.len(), list.entries.len());
                let mut head = 0;
                while head < olds.min(news) && same(head, head) {
                    head += 1;
                }
                let mut tail = 0;
                while tail < (olds - head).min(news - head)
                    && same(olds - 1 - tail, news - 1 - tail)
                {
                    tail += 1;
                }
                Kept { head, tail }
            })
            .collect();
        // Kept entries are the text of entries the last call found plain; every other line
        // is looked at now.
        let mut known = (lists.iter().zip(&kept))
            .flat_map(|(list, &Kept { head, tail })| {
                let news = list.entries.len();
                [&list.entries[..head], &list.entries[news - tail..]]
            })
            .filter_map(|known| Some(known.first()?.start..known.last()?.end))
            .peekable();
        for line in &lines {
            while known.next_if(|k| k.end <= line.whole.start).is_some() {}
            if !known.peek().is_some_and(|k| k.contains(&line.whole.start)) {
                plain_line(&body[line.content.clone()])?;
            }
        }
        drop(known);
        let mut listeners = file::parse(&skeleton(body, &lists)).ok()?.listeners;
        let hosts = listeners
            .iter()
            .map(|l| l.virtual_hosts.len())
            .sum::<usize>();
        if hosts != lists.len() {
            return None;
        }
        for ((list, routes), &Kept { head, tail }) in lists.iter().zip(&mut was).zip(&kept) {
            let news = list.entries.len();
            let olds = routes.len();
            let new = &list.entries[head..news - tail];
            let parsed = match new {
                [] => Vec::new(),
                [one] => file::parse_routes(&body[one.clone()])?,
                [first, .., last] => file::parse_routes(&body[first.start..last.end])?,
            };
            if parsed.len() != new.len() {
                return None;
            }
            self.parsed += parsed.len();
            routes.splice(head..olds - tail, parsed);
        }
        for (host, routes) in listeners
            .iter_mut()
            .flat_map(|l| &mut l.virtual_hosts)
            .zip(was)
        {
            host.routes = routes;
        }
        self.text = body.to_owned();
        self.lists = lists.into_iter().map(|l| l.entries).collect();
        self.kept = kept;
        Some(listeners)
    }
}

/// The section with each list cut out and `routes: []` in its place.
fn skeleton(body: &str, lists: &[List]) -> String {
    let mut out = String::with_capacity(body.len() / 8);
    let mut at = 0;
    for list in lists {
        out.push_str(&body[at..list.key_line.start]);
        out.push_str(&" ".repeat(list.indent));
        out.push_str("routes: []\n");
        at = list.span.end;
    }
    out.push_str(&body[at..]);
    out
}

/// One line of the section: its span with and without its line end, its indentation, and what
/// it holds.
struct Line {
    whole: Range<usize>,
    content: Range<usize>,
    indent: usize,
    /// Blank or a comment only.
    empty: bool,
}

/// The section's lines and its `routes:` lists, or None when its layout is one this split does
/// not take. Whether each line is plain is left to the caller: most are known already.
fn split(body: &str) -> Option<(Vec<Line>, Vec<List>)> {
    let mut lines = Vec::with_capacity(body.len() / 32);
    let mut at = 0;
    let last = (!body.ends_with('\n')).then_some(body.len());
    let ends = memchr::memchr_iter(b'\n', body.as_bytes()).map(|n| n + 1);
    for end in ends.chain(last) {
        let whole = at..end;
        at = end;
        let text = body[whole.clone()].trim_end_matches(['\n', '\r']);
        let trimmed = text.trim_start_matches(' ');
        if trimmed.starts_with('\t') {
            return None;
        }
        lines.push(Line {
            content: whole.start..whole.start + text.len(),
            whole,
            indent: text.len() - trimmed.len(),
            empty: trimmed.is_empty() || trimmed.starts_with('#'),
        });
    }
    let mut lists = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let line = &lines[n];
        n += 1;
        if line.empty || !is_routes_key(&body[line.content.start + line.indent..line.content.end]) {
            continue;
        }
        let key_indent = line.indent;
        let key_line = line.content.clone();
        // The first entry: the next line that is not blank or a comment.
        let Some(first) = (n..lines.len()).find(|&k| !lines[k].empty) else {
            break;
        };
        let indent = lines[first].indent;
        if indent < key_indent || !is_entry(body, &lines[first]) {
            continue; // Not a block list under this key: left to the skeleton's parse.
        }
        let mut entries: Vec<Range<usize>> = Vec::new();
        let mut k = first;
        while k < lines.len() {
            let l = &lines[k];
            if !l.empty && l.indent <= indent {
                if l.indent < indent || !is_entry(body, l) {
                    break;
                }
                entries.push(l.whole.start..l.whole.end);
            } else if let Some(last) = entries.last_mut() {
                last.end = l.whole.end;
            }
            k += 1;
        }
        let span = lines[first].whole.start..entries.last()?.end;
        // A line end after the last entry, so the skeleton's next line stays a line.
        if !body[..span.end].ends_with('\n') {
            return None;
        }
        lists.push(List {
            key_line: key_line.start..lines[n - 1].whole.end,
            indent: key_indent,
            span,
            entries,
        });
        n = k;
    }
    Some((lines, lists))
}

/// `routes:` alone on its line (a comment may follow).
fn is_routes_key(content: &str) -> bool {
    let Some(rest) = content.strip_prefix("routes:") else {
        return false;
    };
    let after = rest.trim_start_matches(' ');
    after.is_empty() || (rest.starts_with(' ') && after.starts_with('#'))
}

/// A block sequence entry at its line's indentation: `-` then a space or nothing.
fn is_entry(body: &str, line: &Line) -> bool {
    let content = &body[line.content.start + line.indent..line.content.end];
    content == "-" || content.starts_with("- ")
}

/// Some(()) when the line's meaning depends on nothing but its indentation: no quoted string
/// or flow collection left open at its end, no anchor, alias, tag, block scalar, merge key or
/// reserved indicator where a value or key starts.
fn plain_line(line: &str) -> Option<()> {
    let bytes = line.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    // Where a node may start: the line's start, after `- `, `: `, `[`, `{`, `,`, `?`.
    let mut node_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(b'"') => match b {
                b'\\' => i += 1,
                b'"' => quote = None,
                _ => {}
            },
            Some(_) => {
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        quote = None;
                    }
                }
            }
            None => {
                if node_start {
                    match b {
                        b' ' => {
                            i += 1;
                            continue;
                        }
                        b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'?' => {
                            return None;
                        }
                        b'<' if bytes.get(i + 1) == Some(&b'<') => return None,
                        b'-' if matches!(bytes.get(i + 1), None | Some(b' ')) => {
                            i += 1;
                            continue;
                        }
                        _ => {}
                    }
                }
                node_start = false;
                match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'#' if i == 0 || bytes[i - 1] == b' ' => break,
                    b'[' | b'{' => {
                        depth += 1;
                        node_start = true;
                    }
                    b']' | b'}' => depth = depth.checked_sub(1)?,
                    b',' => node_start = depth > 0,
                    b':' if matches!(bytes.get(i + 1), None | Some(b' ')) => node_start = true,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    (quote.is_none() && depth == 0).then_some(())
}
