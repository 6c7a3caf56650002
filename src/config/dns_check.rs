//! Validation of a cluster's discovery keys (`type`, `dns_*`, host-name endpoints): a child of
//! `validate`, so that it reports through the same checker with the same field paths.

use std::net::SocketAddr;

use super::super::dns::DEFAULT_REFRESH_RATE;
use super::*;

/// The cluster's `type`; capitals (Envoy's proto spelling) accepted too.
pub(super) fn cluster_type(c: &mut Checker, cl: &RawCluster, path: &str) -> ClusterType {
    let Some(name) = &cl.cluster_type else {
        return ClusterType::Static;
    };
    let name = name.trim().to_ascii_lowercase();
    if name == "logical_dns" {
        let why =
            "logical_dns is not supported; strict_dns resolves the names and uses every address";
        c.err(path, why);
        return ClusterType::Static;
    }
    c.one_of(&name, &ClusterType::ALL, "cluster type", path)
}

/// A static cluster's endpoint address: an IP:PORT. A host name gets an error that says how to
/// have it resolved.
pub(super) fn static_address(c: &mut Checker, raw: &str, path: &str) -> Option<SocketAddr> {
    if raw.trim().parse::<SocketAddr>().is_err() && host_port(raw).is_ok() {
        let why = format!(
            "{raw:?} is a host name, and a static cluster takes IP:PORT addresses only; \
             set the cluster's `type: strict_dns` to resolve it"
        );
        c.err(path, why);
        return None;
    }
    c.address(raw, path)
}

/// Errors for DNS keys set on a static cluster (they would silently do nothing).
pub(super) fn no_dns_keys(c: &mut Checker, cl: &RawCluster, ci: usize) {
    let set = [
        ("dns_refresh_rate", cl.dns_refresh_rate.is_some()),
        ("dns_lookup_family", cl.dns_lookup_family.is_some()),
        ("respect_dns_ttl", cl.respect_dns_ttl.is_some()),
        ("dns_resolvers", cl.dns_resolvers.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, on)| *on) {
        let why = "only a strict_dns cluster resolves names; set `type: strict_dns` or remove it";
        c.err(&format!("clusters[{ci}].{key}"), why);
    }
}

/// A strict_dns cluster's names and resolution settings.
pub(super) fn discovery(c: &mut Checker, cl: &RawCluster, ci: usize) -> DnsDiscovery {
    let p = |field: &str| format!("clusters[{ci}].{field}");
    let refresh_rate = c.dur(
        &cl.dns_refresh_rate,
        DEFAULT_REFRESH_RATE,
        &p("dns_refresh_rate"),
    );
    let lookup_family = match &cl.dns_lookup_family {
        None => LookupFamily::default(),
        Some(name) => {
            let name = name.trim().to_ascii_uppercase();
            c.one_of(
                &name,
                &LookupFamily::ALL,
                "lookup family",
                &p("dns_lookup_family"),
            )
        }
    };
    let mut resolvers = Vec::new();
    for (ri, r) in cl.dns_resolvers.iter().flatten().enumerate() {
        let path = format!("clusters[{ci}].dns_resolvers[{ri}].address");
        match c.address(&r.address, &path) {
            Some(a) if a.port() == 0 => c.err(&path, "port 0 cannot be queried"),
            Some(a) => resolvers.push(a),
            None => {}
        }
    }
    if cl.dns_resolvers.as_ref().is_some_and(Vec::is_empty) {
        c.err(
            &p("dns_resolvers"),
            "list at least one resolver, or leave the key out to use the system resolver",
        );
    }
    let mut hosts: Vec<DnsHost> = Vec::new();
    for (ei, e) in cl.endpoints.iter().enumerate() {
        let path = |field: &str| format!("clusters[{ci}].endpoints[{ei}].{field}");
        let weight = c.int(e.weight, 1u32, 1..=1_000_000, &path("weight"));
        match host_port(&e.address) {
            Ok((host, port)) => {
                if let Some(first) = hosts.iter().position(|h| h.host == host && h.port == port) {
                    let why = format!("duplicate endpoint {host}:{port} (see endpoints[{first}])");
                    c.err(&path("address"), why);
                }
                hosts.push(DnsHost { host, port, weight });
            }
            Err(why) => c.err(
                &path("address"),
                format!("invalid address {:?}: {why}", e.address),
            ),
        }
    }
    DnsDiscovery {
        hosts,
        refresh_rate,
        lookup_family,
        respect_dns_ttl: cl.respect_dns_ttl.unwrap_or(false),
        resolvers,
    }
}

/// Splits `HOST:PORT` (an IP literal, `[v6]:port`, or a host name) and checks both.
fn host_port(raw: &str) -> Result<(String, u16), String> {
    let raw = raw.trim();
    if let Ok(a) = raw.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("port 0 cannot be connected to".into());
        }
        return Ok((a.ip().to_string(), a.port()));
    }
    let why = "expected HOST:PORT like \"api.internal:8080\" or IP:PORT";
    let (host, port) = raw.rsplit_once(':').ok_or(why)?;
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{why}; the port must be 1-65535")),
        Ok(p) => p,
    };
    if !is_host_name(host) {
        return Err(format!(
            "{host:?} is not a host name (letters, digits, '-' and '_' in dot-separated labels \
             of at most 63, 253 in all)"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// RFC 1123 host-name syntax (underscores allowed, as resolvers do for service names).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // An all-numeric name is a mistyped IP, not a host.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError, parse};

    /// A config whose one cluster has `lines` (indented 4) and endpoint `address`.
    fn yaml(lines: &str, address: &str) -> String {
        format!(
            "listeners:
  - name: l
    address: 127.0.0.1:10000
    virtual_hosts:
      - name: v
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: c }}
clusters:
  - name: c
{lines}    endpoints:
      - {{ address: \"{address}\", weight: 3 }}
"
        )
    }

    fn ok(lines: &str, address: &str) -> Config {
        parse(&yaml(lines, address), "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// The one error of an invalid config.
    fn err(lines: &str, address: &str) -> ConfigError {
        let mut e = parse(&yaml(lines, address), "t.yaml").unwrap_err().0;
        assert_eq!(e.len(), 1, "{e:?}");
        e.remove(0)
    }

    #[test]
    fn strict_dns_takes_names_and_ips_with_envoy_defaults() {
        let c = ok("    type: strict_dns\n", "api.internal:8080");
        let cl = &c.clusters[0];
        assert!(
            cl.endpoints.is_empty(),
            "resolved later, on the control side"
        );
        let dns = cl.dns.as_ref().expect("strict_dns");
        assert_eq!(dns.refresh_rate, Duration::from_secs(5));
        assert_eq!(dns.lookup_family, LookupFamily::Auto);
        assert!(!dns.respect_dns_ttl);
        assert!(dns.resolvers.is_empty(), "the system resolver");
        let host = DnsHost {
            host: "api.internal".into(),
            port: 8080,
            weight: 3,
        };
        assert_eq!(dns.hosts, vec![host]);
        let c = ok(
            "    type: STRICT_DNS\n    dns_refresh_rate: 250ms\n    dns_lookup_family: v4_only\n    \
             respect_dns_ttl: true\n    dns_resolvers: [{ address: \"127.0.0.1:5353\" }]\n",
            "10.0.0.1:80",
        );
        let dns = c.clusters[0].dns.as_ref().expect("strict_dns");
        assert_eq!(dns.refresh_rate, Duration::from_millis(250));
        assert_eq!(dns.lookup_family, LookupFamily::V4Only);
        assert!(dns.respect_dns_ttl);
        assert_eq!(dns.resolvers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(dns.hosts[0].host, "10.0.0.1");
        assert!(
            ok("    type: static\n", "127.0.0.1:80").clusters[0]
                .dns
                .is_none()
        );
    }

    #[test]
    fn bad_discovery_keys_are_reported_with_their_paths() {
        let cases = [
            (
                "",
                "api.internal:80",
                "clusters[0].endpoints[0].address",
                "type: strict_dns",
            ),
            (
                "    type: eds\n",
                "127.0.0.1:80",
                "clusters[0].type",
                "unknown cluster type \"eds\"",
            ),
            (
                "    type: logical_dns\n",
                "127.0.0.1:80",
                "clusters[0].type",
                "logical_dns is not supported",
            ),
            (
                "    type: strict_dns\n    dns_refresh_rate: often\n",
                "a:80",
                "clusters[0].dns_refresh_rate",
                "invalid duration \"often\"",
            ),
            (
                "    type: strict_dns\n    dns_refresh_rate: 0s\n",
                "a:80",
                "clusters[0].dns_refresh_rate",
                "greater than zero",
            ),
            (
                "    type: strict_dns\n    dns_lookup_family: V5_ONLY\n",
                "a:80",
                "clusters[0].dns_lookup_family",
                "unknown lookup family \"V5_ONLY\" (accepted: AUTO, V4_ONLY",
            ),
            (
                "    type: strict_dns\n    dns_resolvers: [{ address: dns.local }]\n",
                "a:80",
                "clusters[0].dns_resolvers[0].address",
                "invalid address",
            ),
            (
                "    type: strict_dns\n    dns_resolvers: []\n",
                "a:80",
                "clusters[0].dns_resolvers",
                "at least one resolver",
            ),
            (
                "    type: strict_dns\n",
                "bad host:80",
                "clusters[0].endpoints[0].address",
                "not a host name",
            ),
            (
                "    type: strict_dns\n",
                "api.internal",
                "clusters[0].endpoints[0].address",
                "HOST:PORT",
            ),
            (
                "    dns_lookup_family: V4_ONLY\n",
                "127.0.0.1:80",
                "clusters[0].dns_lookup_family",
                "only a strict_dns cluster",
            ),
        ];
        for (lines, address, path, reason) in cases {
            let e = err(lines, address);
            assert_eq!(e.path, path, "{lines:?} {address:?}: {e:?}");
            assert!(
                e.reason.contains(reason),
                "{lines:?} {address:?}: {}",
                e.reason
            );
        }
    }

    #[test]
    fn host_port_splits_names_and_ips() {
        assert_eq!(host_port("localhost:80"), Ok(("localhost".into(), 80)));
        assert_eq!(
            host_port("API.internal.:8080"),
            Ok(("api.internal.".into(), 8080))
        );
        assert_eq!(host_port("[::1]:9"), Ok(("::1".into(), 9)));
        assert!(host_port("localhost").is_err());
        assert!(host_port("localhost:0").is_err());
        assert!(host_port("bad host:80").is_err());
        assert!(host_port("10.0.0.300:80").is_err());
        assert!(host_port("-a.b:80").is_err());
    }
}
