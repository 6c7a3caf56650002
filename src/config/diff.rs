//! What changed between two validated configs, said in one line for the reload log.

use std::collections::BTreeMap;

use super::{Cluster, Config, Endpoint, VirtualHost};

/// Added, removed and changed names of one kind of thing.
struct Delta {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Delta {
    fn of<T: PartialEq>(
        old: impl IntoIterator<Item = (String, T)>,
        new: impl IntoIterator<Item = (String, T)>,
    ) -> Delta {
        let old: BTreeMap<String, T> = old.into_iter().collect();
        let new: BTreeMap<String, T> = new.into_iter().collect();
        Delta {
            added: new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .cloned()
                .collect(),
            removed: old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect(),
            changed: new
                .iter()
                .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// "+a,b -c ~d" with names, for things operators name (listeners, clusters).
    fn names(&self) -> String {
        let mut out = Vec::new();
        for (sign, list) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if !list.is_empty() {
                out.push(format!("{sign}{}", list.join(",")));
            }
        }
        out.join(" ")
    }

    /// "+2 -1 ~3" with counts, for things there may be many of.
    fn counts(&self) -> String {
        let mut out = Vec::new();
        for (sign, n) in [
            ("+", self.added.len()),
            ("-", self.removed.len()),
            ("~", self.changed.len()),
        ] {
            if n > 0 {
                out.push(format!("{sign}{n}"));
            }
        }
        out.join(" ")
    }
}

/// Each virtual host's routes by "listener/vhost", compared as values (printing 10,000 routes
/// to compare them took ~13% of a reload); a route a reload kept is the same `Arc`, and `Arc`
/// compares equal addresses without looking further (its `PartialEq` for `Eq` types).
fn route_lists(c: &Config) -> BTreeMap<String, &[std::sync::Arc<super::Route>]> {
    vhosts(c).map(|(k, v)| (k, v.routes.as_slice())).collect()
}

fn vhosts(c: &Config) -> impl Iterator<Item = (String, &VirtualHost)> {
    c.listeners.iter().flat_map(|l| {
        l.virtual_hosts
            .iter()
            .map(move |v| (format!("{}/{}", l.name, v.name), v))
    })
}

fn endpoints(c: &Config) -> impl Iterator<Item = (String, &Endpoint)> {
    c.clusters.iter().flat_map(|cl| {
        cl.endpoints
            .iter()
            .map(move |e| (format!("{}/{}", cl.name, e.address), e))
    })
}

/// Clusters compared on their settings, endpoints apart (those are counted on their own).
fn cluster_settings(c: &Cluster) -> Cluster {
    Cluster {
        endpoints: Vec::new(),
        ..c.clone()
    }
}

/// One line: "listeners +admin2 -old; vhosts +1; routes 12 -> 14 (changed); clusters ~api;
/// endpoints +1 -1 ~2", or "no changes".
pub fn diff(old: &Config, new: &Config) -> String {
    let mut parts: Vec<String> = Vec::new();
    // The listeners kept from the last load (config::Loader) are the same ones: nothing to
    // compare (comparing 10,000 routes' virtual hosts took ~4% of a reload).
    if !std::sync::Arc::ptr_eq(&old.listeners, &new.listeners) {
        listener_parts(old, new, &mut parts);
    }
    let settings = |c: &Config| {
        c.clusters
            .iter()
            .map(|cl| (cl.name.clone(), cluster_settings(cl)))
            .collect::<Vec<_>>()
    };
    let clusters = Delta::of(settings(old), settings(new));
    if !clusters.is_empty() {
        parts.push(format!("clusters {}", clusters.names()));
    }
    let eps = Delta::of(endpoints(old), endpoints(new));
    if !eps.is_empty() {
        parts.push(format!("endpoints {}", eps.counts()));
    }
    if old.limits != new.limits {
        parts.push("limits changed".to_owned());
    }
    if parts.is_empty() {
        return "no changes".to_owned();
    }
    parts.join("; ")
}

/// What changed in the listeners, their TLS, virtual hosts and routes.
fn listener_parts(old: &Config, new: &Config, parts: &mut Vec<String>) {
    // A listener changes with its socket (address, backlog) or its HTTP options (limits,
    // paths, trusted proxies); its vhosts are counted apart.
    let sockets = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), (l.address, l.backlog, l.http.clone())))
            .collect::<Vec<_>>()
    };
    let listeners = Delta::of(sockets(old), sockets(new));
    if !listeners.is_empty() {
        parts.push(format!("listeners {}", listeners.names()));
    }
    // Certificates, keys, CAs and TLS settings: a renewed certificate shows here.
    let tls = |c: &Config| {
        c.listeners
            .iter()
            .filter(|l| l.tls.is_some())
            .map(|l| (l.name.clone(), l.tls.clone()))
            .collect::<Vec<_>>()
    };
    let tls = Delta::of(tls(old), tls(new));
    if !tls.is_empty() {
        parts.push(format!("tls {}", tls.names()));
    }
    let hosts = Delta::of(vhosts(old), vhosts(new));
    if !hosts.is_empty() {
        parts.push(format!("vhosts {}", hosts.counts()));
    }
    let routes_of = |c: &Config| -> usize { vhosts(c).map(|(_, v)| v.routes.len()).sum() };
    let (before, after) = (routes_of(old), routes_of(new));
    // Unchanged virtual hosts have unchanged routes: the lists are compared only otherwise.
    if before != after || (!hosts.is_empty() && route_lists(old) != route_lists(new)) {
        let mut s = format!("routes {before} -> {after}");
        if before == after {
            s.push_str(" (changed)");
        }
        parts.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const BASE: &str = r#"
listeners:
  - name: main
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: "/api/" }
            route: { cluster: api }
          - match: { prefix: "/" }
            route: { cluster: web }
clusters:
  - name: api
    endpoints:
      - { address: 127.0.0.1:9001, weight: 3 }
      - { address: 127.0.0.1:9002 }
  - name: web
    endpoints:
      - { address: 127.0.0.1:9003 }
"#;

    #[test]
    fn identical_configs_have_no_changes() {
        let a = parse(BASE, "a").unwrap();
        assert_eq!(diff(&a, &a.clone()), "no changes");
    }

    #[test]
    fn every_kind_of_change_is_named() {
        let a = parse(BASE, "a").unwrap();
        let changed = BASE
            .replace("weight: 3", "weight: 5")
            .replace("127.0.0.1:9002", "127.0.0.1:9004")
            .replace("prefix: \"/api/\"", "prefix: \"/v2/\"")
            .replace(
                "clusters:\n",
                "  - name: admin\n    address: 127.0.0.1:8081\n    virtual_hosts:\n      - name: adm\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: \"/\" }\n            route: { cluster: web }\nclusters:\n",
            );
        let b = parse(&changed, "b").unwrap();
        let d = diff(&a, &b);
        assert!(d.contains("listeners +admin"), "{d}");
        assert!(d.contains("vhosts +1 ~1"), "{d}");
        assert!(d.contains("routes 2 -> 3"), "{d}");
        assert!(d.contains("endpoints +1 -1 ~1"), "{d}");
        assert!(!d.contains("clusters"), "settings unchanged: {d}");
        let trusting = BASE.replace("8080\n", "8080\n    trusted_proxies: [\"10.0.0.0/8\"]\n");
        let c = parse(&trusting, "c").unwrap();
        assert_eq!(diff(&a, &c), "listeners ~main");
    }
}
