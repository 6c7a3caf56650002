//! How a cluster finds its endpoints (Envoy's cluster `type`): listed addresses (`static`), or
//! host names the control side resolves, and keeps resolving, into addresses (`strict_dns`).

use std::net::SocketAddr;
use std::time::Duration;

/// Envoy's cluster discovery types that Coregate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterType {
    /// The endpoints are IP:PORT addresses, fixed until a reload.
    #[default]
    Static,
    /// Every endpoint is a host name (or an IP), resolved every `dns_refresh_rate`; each
    /// address of each answer is an endpoint.
    StrictDns,
}

impl ClusterType {
    /// Envoy's names (its proto enum spells them in capitals; both are accepted).
    pub const ALL: [(&'static str, ClusterType); 2] = [
        ("static", ClusterType::Static),
        ("strict_dns", ClusterType::StrictDns),
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClusterType::Static => "static",
            ClusterType::StrictDns => "strict_dns",
        }
    }
}

/// Which address families a lookup asks for (Envoy's `dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookupFamily {
    /// IPv6 addresses if the name has any, else IPv4 (Envoy's default for a cluster).
    #[default]
    Auto,
    V4Only,
    V6Only,
    /// IPv4 addresses if the name has any, else IPv6.
    V4Preferred,
    /// Both families.
    All,
}

impl LookupFamily {
    pub const ALL: [(&'static str, LookupFamily); 5] = [
        ("AUTO", LookupFamily::Auto),
        ("V4_ONLY", LookupFamily::V4Only),
        ("V6_ONLY", LookupFamily::V6Only),
        ("V4_PREFERRED", LookupFamily::V4Preferred),
        ("ALL", LookupFamily::All),
    ];

    pub fn name(self) -> &'static str {
        LookupFamily::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("AUTO", |(n, _)| n)
    }
}

/// One `strict_dns` endpoint as written: a host name (or IP) and a port, and the weight every
/// address it resolves to gets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsHost {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

/// A `strict_dns` cluster's names and how they are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    pub hosts: Vec<DnsHost>,
    /// How often every name is resolved again (Envoy's default: 5 s).
    pub refresh_rate: Duration,
    pub lookup_family: LookupFamily,
    /// Set: the next lookup comes after the answer's TTL (at least 1 s) instead of
    /// `refresh_rate`. Only answers from `dns_resolvers` carry a TTL; the system resolver's
    /// do not, and keep `refresh_rate`.
    pub respect_dns_ttl: bool,
    /// Empty: the system resolver (getaddrinfo: /etc/hosts, resolv.conf). Otherwise these
    /// name servers are asked over UDP, in order, the next one when one fails.
    pub resolvers: Vec<SocketAddr>,
}

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_REFRESH_RATE: Duration = Duration::from_secs(5);
