//! Re-parses only the top-level sections of a config file whose text changed since the last
//! load: a reload that changes a cluster's weights does not parse 10,000 routes again.
//!
//! The file is split at the lines that start a top-level key (`listeners:` at column 0); in a
//! YAML block mapping nothing else can start there (a value's lines are indented, or are `- `
//! entries of a sequence under the key), so each section parsed alone reads as it does in the
//! whole file. Anything this split does not handle — a document marker or directive after the
//! start, a top level that is not a plain block mapping, a quoted or repeated key, a section
//! that does not parse alone (an alias of an anchor in another section) — is parsed as one
//! file instead, and the whole file's errors are the ones reported.

use std::collections::HashMap;

use super::file::{self, RawConfig};
use super::route_items::{Kept, RouteItems};

/// The last file's typed parse, with the text of each top-level section it came from.
#[derive(Default)]
pub(super) struct Sections {
    raw: RawConfig,
    texts: HashMap<String, String>,
    /// How many sections the last call parsed (all of them when the file was parsed whole).
    pub(super) parsed: usize,
    /// The keys whose section the last call parsed or reset to its default.
    changed: Vec<&'static str>,
    /// The route entries of the `listeners` section, parsed one by one when it changes.
    pub(super) routes: RouteItems,
    /// Set when the last call took route entries from the call before: which ones.
    routes_kept: Option<Vec<Kept>>,
}

impl Sections {
    /// Parses `text`, keeping the sections whose text is unchanged since the last call.
    /// Returns (field path, reason) as file::parse does.
    pub(super) fn parse(&mut self, text: &str) -> Result<&RawConfig, (String, String)> {
        self.parsed = 0;
        self.changed.clear();
        self.routes_kept = None;
        if self.update(text).is_none() {
            self.routes_kept = None;
            self.texts.clear();
            self.routes = RouteItems::default();
            self.parsed = usize::MAX;
            self.raw = file::parse(text)?;
        }
        Ok(&self.raw)
    }

    /// Brings the cached parse up to date section by section; None when the file must be
    /// parsed whole (the cache is then left empty).
    fn update(&mut self, text: &str) -> Option<()> {
        let sections = split(text)?;
        let mut raw = std::mem::take(&mut self.raw);
        let mut texts = std::mem::take(&mut self.texts);
        // Keys that are gone take their defaults.
        texts.retain(|key, _| sections.iter().any(|(k, _)| k == key));
        for key in KEYS {
            if !texts.contains_key(*key) {
                take(&mut raw, key, RawConfig::default())?;
                self.changed.push(key);
            }
        }
        for (key, body) in sections {
            if texts.get(key).is_some_and(|t| t == body) {
                continue;
            }
            if key == "listeners" {
                let old = std::mem::take(&mut raw.listeners);
                if let Some(listeners) = self.routes.parse(body, old) {
                    raw.listeners = listeners;
                    self.routes_kept = Some(self.routes.kept.clone());
                    self.changed.push("listeners");
                    self.parsed += 1;
                    texts.insert(key.to_owned(), body.to_owned());
                    continue;
                }
            }
            let part = file::parse(body).ok()?;
            let key = take(&mut raw, key, part)?;
            self.changed.push(key);
            self.parsed += 1;
            texts.insert(key.to_owned(), body.to_owned());
        }
        if raw.is_blank() {
            return None;
        }
        self.raw = raw;
        self.texts = texts;
        Some(())
    }

    /// The last file's typed parse.
    pub(super) fn raw(&self) -> &RawConfig {
        &self.raw
    }

    /// How each route list (virtual hosts in file order) of the last call's parse relates to
    /// the one before it, when the last call knows: its listeners section unchanged (every
    /// entry kept) or split into route entries. None when that section was parsed whole.
    pub(super) fn kept_routes(&self) -> Option<Vec<Kept>> {
        if self.parsed == usize::MAX {
            return None;
        }
        if !self.changed.contains(&"listeners") {
            let lists = self.raw.listeners.iter().flat_map(|l| &l.virtual_hosts);
            let all = |v: &file::RawVirtualHost| Kept {
                head: v.routes.len(),
                tail: 0,
            };
            return Some(lists.map(all).collect());
        }
        self.routes_kept.clone()
    }

    /// Whether the last call parsed the section `key` (or the whole file), or reset it.
    pub(super) fn reparsed(&self, key: &str) -> bool {
        self.parsed == usize::MAX || self.changed.contains(&key)
    }
}

/// The top-level keys of a config file.
const KEYS: &[&str] = &[
    "admin",
    "workers",
    "limits",
    "tracing",
    "listeners",
    "clusters",
];

/// Moves the field `key` of `part` into `raw`; None for a key the config does not have.
fn take(raw: &mut RawConfig, key: &str, part: RawConfig) -> Option<&'static str> {
    match key {
        "admin" => raw.admin = part.admin,
        "workers" => raw.workers = part.workers,
        "limits" => raw.limits = part.limits,
        "tracing" => raw.tracing = part.tracing,
        "listeners" => raw.listeners = part.listeners,
        "clusters" => raw.clusters = part.clusters,
        _ => return None,
    }
    KEYS.iter().find(|k| **k == key).copied()
}

/// The file's top-level sections as (key, text from the key's line to the next key's line),
/// or None when its layout is not one this split handles.
fn split(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut open: Option<(usize, &str)> = None;
    let mut at = 0;
    // memchr: `split_inclusive` took ~0.6 ms of a 10,000-route file's reload.
    let last = (!text.ends_with('\n')).then_some(text.len());
    for end in memchr::memchr_iter(b'\n', text.as_bytes())
        .map(|n| n + 1)
        .chain(last)
    {
        let line = &text[at..end];
        let start = at;
        at = end;
        let content = line.trim_end_matches(['\n', '\r']);
        let first = content.as_bytes().first().copied();
        match first {
            None | Some(b'#') => {}
            // A leading document start marker changes nothing; one after that starts another
            // document.
            Some(b'-') if content.starts_with("---") => {
                if open.is_some() || !content[3..].trim().is_empty() {
                    return None;
                }
            }
            // Entries of a sequence under the open key (`listeners:` then `- name: a`).
            Some(b'-') if open.is_some() => {}
            Some(b' ') if open.is_some() => {}
            // Indented content before any key, a top-level sequence, tabs.
            Some(b' ')
                if content.trim_start().is_empty() || content.trim_start().starts_with('#') => {}
            Some(b' ' | b'-' | b'\t') => return None,
            Some(_) => {
                let key = key_of(content)?;
                if let Some((s, k)) = open {
                    out.push((k, &text[s..start]));
                }
                open = Some((start, key));
            }
        }
    }
    let (s, k) = open?;
    out.push((k, &text[s..]));
    let mut keys: Vec<&str> = out.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    let unique = keys.windows(2).all(|w| w[0] != w[1]);
    unique.then_some(out)
}

/// `name` of a line `name:` or `name: value` where name is a plain lower-case key.
fn key_of(line: &str) -> Option<&str> {
    let colon = line.find(':')?;
    let key = &line[..colon];
    let after = line[colon + 1..].chars().next();
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (plain && matches!(after, None | Some(' '))).then_some(key)
}
