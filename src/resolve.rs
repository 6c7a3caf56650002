//! Name lookups for strict_dns clusters, on the control side only (a lookup blocks): the system
//! resolver (getaddrinfo, so /etc/hosts and resolv.conf), or A/AAAA queries sent over UDP to the
//! cluster's own `dns_resolvers` (hickory-proto encodes and decodes the messages).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::config::{DnsDiscovery, LookupFamily};

/// How long one name server gets to answer one query (Envoy's `dns_query_timeout` default).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest UDP answer read (EDNS-less DNS allows 512 bytes; room for more costs nothing).
const MAX_ANSWER: usize = 4096;

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sorted, without duplicates: a name server that rotates its answers does not make the
    /// endpoint set look changed.
    pub addresses: Vec<IpAddr>,
    /// The smallest TTL of the records used; none from the system resolver.
    pub ttl: Option<Duration>,
}

/// Resolves `host` as `dns` says: an IP literal is itself; otherwise the cluster's resolvers,
/// or the system's. Err: the lookup failed (no answer, SERVFAIL, REFUSED, a timeout), which
/// leaves the name's last answer in use. A name that does not exist is an empty answer.
pub fn lookup(host: &str, dns: &DnsDiscovery) -> Result<Answer, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Answer {
            addresses: vec![ip],
            ttl: None,
        });
    }
    if dns.resolvers.is_empty() {
        system(host, dns.lookup_family)
    } else {
        udp(host, dns.lookup_family, &dns.resolvers)
    }
}

/// Keeps the families `family` asks for from both families' addresses.
fn pick(family: LookupFamily, v4: Vec<IpAddr>, v6: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = match family {
        LookupFamily::V4Only => v4,
        LookupFamily::V6Only => v6,
        LookupFamily::Auto if v6.is_empty() => v4,
        LookupFamily::Auto => v6,
        LookupFamily::V4Preferred if v4.is_empty() => v6,
        LookupFamily::V4Preferred => v4,
        LookupFamily::All => v4.into_iter().chain(v6).collect(),
    };
    out.sort();
    out.dedup();
    out
}

/// getaddrinfo through the standard library (it blocks: this runs on a resolver thread).
fn system(host: &str, family: LookupFamily) -> Result<Answer, String> {
    let found = (host, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?;
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = found.map(|a| a.ip()).partition(IpAddr::is_ipv4);
    Ok(Answer {
        addresses: pick(family, v4, v6),
        ttl: None,
    })
}

/// Queries the resolvers for the record types `family` needs (the second family only when the
/// preferred one is empty, as Envoy's AUTO and V4_PREFERRED do).
fn udp(host: &str, family: LookupFamily, resolvers: &[SocketAddr]) -> Result<Answer, String> {
    let mut name = Name::from_ascii(host).map_err(|e| format!("{host}: {e}"))?;
    // Fully qualified: no search domains are appended.
    name.set_fqdn(true);
    let ask = |kind| query(&name, kind, resolvers);
    let (v4, v6, ttl) = match family {
        LookupFamily::V4Only => {
            let (a, ttl) = ask(RecordType::A)?;
            (a, Vec::new(), ttl)
        }
        LookupFamily::V6Only => {
            let (a, ttl) = ask(RecordType::AAAA)?;
            (Vec::new(), a, ttl)
        }
        LookupFamily::V4Preferred | LookupFamily::Auto => {
            let (first, second) = if family == LookupFamily::Auto {
                (RecordType::AAAA, RecordType::A)
            } else {
                (RecordType::A, RecordType::AAAA)
            };
            let (mut got, mut ttl) = ask(first)?;
            if got.is_empty() {
                (got, ttl) = ask(second)?;
            }
            let (v4, v6) = got.into_iter().partition(IpAddr::is_ipv4);
            (v4, v6, ttl)
        }
        LookupFamily::All => {
            let (a, t4) = ask(RecordType::A)?;
            let (aaaa, t6) = ask(RecordType::AAAA)?;
            let ttl = match (t4, t6) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            (a, aaaa, ttl)
        }
    };
    Ok(Answer {
        addresses: pick(family, v4, v6),
        ttl,
    })
}

/// One question to the resolvers in turn until one answers; the addresses and smallest TTL.
fn query(
    name: &Name,
    kind: RecordType,
    resolvers: &[SocketAddr],
) -> Result<(Vec<IpAddr>, Option<Duration>), String> {
    let mut why = String::from("no resolver");
    for &resolver in resolvers {
        match ask(name, kind, resolver) {
            Ok(answer) => return Ok(answer),
            Err(e) => why = format!("{resolver}: {e}"),
        }
    }
    Err(format!("{name} {kind}: {why}"))
}

fn ask(
    name: &Name,
    kind: RecordType,
    resolver: SocketAddr,
) -> Result<(Vec<IpAddr>, Option<Duration>), String> {
    let id = fastrand::u16(..);
    let mut request = Message::new(id, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(name.clone(), kind));
    let bytes = request.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if resolver.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    // Connected: datagrams from any other address are dropped by the kernel.
    socket.connect(resolver).map_err(|e| e.to_string())?;
    socket.send(&bytes).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut buf = [0u8; MAX_ANSWER];
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        // Anything that is not the answer to this question (a late answer to an earlier
        // one, garbage) is ignored.
        let Ok(message) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if message.metadata.id == id
            && message.metadata.message_type == MessageType::Response
            && message.queries.first().is_some_and(|q| q.name() == name)
        {
            break message;
        }
    };
    match answer.metadata.response_code {
        ResponseCode::NoError => {}
        // The name does not exist: an answer, with no address.
        ResponseCode::NXDomain => return Ok((Vec::new(), None)),
        code => return Err(format!("answered {code}")),
    }
    if answer.metadata.truncation {
        return Err("answer truncated (TCP is not supported)".into());
    }
    let mut addresses = Vec::new();
    let mut ttl: Option<u32> = None;
    for record in &answer.answers {
        let ip = match &record.data {
            RData::A(a) if kind == RecordType::A => IpAddr::V4(a.0),
            RData::AAAA(a) if kind == RecordType::AAAA => IpAddr::V6(a.0),
            // CNAMEs the resolver followed: their targets' records come along.
            _ => continue,
        };
        addresses.push(ip);
        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
    }
    Ok((addresses, ttl.map(|t| Duration::from_secs(u64::from(t)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_pick_as_envoy_does() {
        let v4 = || ips(&["10.0.0.2", "10.0.0.1", "10.0.0.1"]);
        let v6 = || ips(&["::1"]);
        assert_eq!(
            pick(LookupFamily::V4Only, v4(), v6()),
            ips(&["10.0.0.1", "10.0.0.2"])
        );
        assert_eq!(pick(LookupFamily::V6Only, v4(), v6()), ips(&["::1"]));
        assert_eq!(pick(LookupFamily::Auto, v4(), v6()), ips(&["::1"]));
        assert_eq!(
            pick(LookupFamily::Auto, v4(), vec![]),
            ips(&["10.0.0.1", "10.0.0.2"])
        );
        assert_eq!(pick(LookupFamily::V4Preferred, vec![], v6()), ips(&["::1"]));
        assert_eq!(pick(LookupFamily::All, v4(), v6()).len(), 3);
    }

    #[test]
    fn localhost_resolves_through_the_system() {
        let a = system("localhost", LookupFamily::V4Only).expect("localhost resolves");
        assert!(a.addresses.contains(&"127.0.0.1".parse().unwrap()), "{a:?}");
    }
}
