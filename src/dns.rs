//! strict_dns clusters on the control side: the last good answer of every name (kept across
//! reloads), the first resolution before a config is served, and one refresher thread per
//! cluster (never a data-path core) that resolves its names every `dns_refresh_rate` and has a
//! new endpoint set published to every core when the answer changes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{Cluster, DnsDiscovery, Endpoint};
use crate::resolve::{self, Answer};
use crate::stats::Registry;

/// A TTL-driven refresh comes no sooner than this (a TTL of 0 would spin).
const MIN_TTL_REFRESH: Duration = Duration::from_secs(1);

/// One strict_dns cluster's names as last resolved.
#[derive(Debug)]
struct Names {
    /// The settings they were resolved with: a reload that changes them resolves anew.
    spec: DnsDiscovery,
    /// Each name's last good addresses (by `spec.hosts` index); empty until one answered.
    addresses: Vec<Vec<IpAddr>>,
}

/// The last good answers of every strict_dns cluster, by cluster name.
#[derive(Debug, Default)]
pub struct Resolved(Mutex<HashMap<String, Names>>);

impl Resolved {
    /// `cluster`'s endpoints as last resolved: every address of every name, with the name's
    /// weight; an address two names share counts once (the first name's weight).
    pub fn endpoints(&self, cluster: &Cluster) -> Vec<Endpoint> {
        let Some(dns) = &cluster.dns else {
            return cluster.endpoints.clone();
        };
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(names) = known.get(&cluster.name).filter(|n| n.spec == *dns) else {
            return Vec::new();
        };
        let mut out: Vec<Endpoint> = Vec::new();
        for (host, ips) in dns.hosts.iter().zip(&names.addresses) {
            for ip in ips {
                let address = SocketAddr::new(*ip, host.port);
                if !out.iter().any(|e| e.address == address) {
                    out.push(Endpoint {
                        address,
                        weight: host.weight,
                    });
                }
            }
        }
        out
    }

    /// Resolves, before a config is served, the strict_dns clusters that are new or whose
    /// names or settings changed (those that stay keep their answers), and forgets the
    /// clusters gone. A name that does not resolve leaves its share of the cluster empty
    /// until a refresh finds it, as Envoy starts such a cluster empty.
    pub fn prepare(&self, clusters: &[Cluster], registry: &Registry) {
        let stale: Vec<&Cluster> = {
            let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            known.retain(|name, names| {
                clusters
                    .iter()
                    .any(|c| c.name == *name && c.dns.as_ref() == Some(&names.spec))
            });
            clusters
                .iter()
                .filter(|c| c.dns.is_some() && !known.contains_key(&c.name))
                .collect()
        };
        // Every cluster's names at once: start-up waits for the slowest name, not their sum.
        let answers: Vec<Vec<Result<Answer, String>>> = thread::scope(|s| {
            let running: Vec<_> = stale.iter().map(|c| s.spawn(|| lookup_all(c))).collect();
            running
                .into_iter()
                .map(|r| r.join().unwrap_or_default())
                .collect()
        });
        for (cluster, answers) in stale.into_iter().zip(answers) {
            let Some(spec) = &cluster.dns else { continue };
            {
                let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                known.insert(
                    cluster.name.clone(),
                    Names {
                        spec: spec.clone(),
                        addresses: vec![Vec::new(); spec.hosts.len()],
                    },
                );
            }
            self.record(&cluster.name, spec, answers, registry);
        }
    }

    /// Counts a round of answers for `cluster` and keeps the good ones. Returns whether the
    /// endpoint set changed; `None` when the cluster is no longer served with `spec` (a reload
    /// replaced it while the lookups ran).
    fn record(
        &self,
        cluster: &str,
        spec: &DnsDiscovery,
        answers: Vec<Result<Answer, String>>,
        registry: &Registry,
    ) -> Option<bool> {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let names = known.get_mut(cluster).filter(|n| n.spec == *spec)?;
        // Counted as worker 0's, under this lock: one writer at a time.
        let stats = registry.cluster(0, cluster);
        let stats = &stats.dns;
        let mut changed = false;
        for ((host, answer), last) in spec.hosts.iter().zip(answers).zip(&mut names.addresses) {
            stats.update_attempt.inc();
            match answer {
                Ok(answer) => {
                    stats.update_success.inc();
                    if answer.addresses.is_empty() {
                        stats.update_empty.inc();
                        warn!(cluster, host = %host.host, "DNS: the name has no address");
                    }
                    if *last != answer.addresses {
                        info!(cluster, host = %host.host, addresses = ?answer.addresses, "DNS: new answer");
                        *last = answer.addresses;
                        changed = true;
                    }
                }
                Err(why) => {
                    stats.update_failure.inc();
                    warn!(cluster, host = %host.host, "DNS lookup failed, the last answer stays: {why}");
                }
            }
        }
        Some(changed)
    }

    /// The shortest TTL of a round of answers (for `respect_dns_ttl`).
    fn ttl(answers: &[Result<Answer, String>]) -> Option<Duration> {
        answers
            .iter()
            .filter_map(|a| a.as_ref().ok().and_then(|a| a.ttl))
            .min()
    }
}

/// Looks up each of a strict_dns cluster's names, at once.
fn lookup_all(cluster: &Cluster) -> Vec<Result<Answer, String>> {
    let Some(dns) = &cluster.dns else {
        return Vec::new();
    };
    thread::scope(|s| {
        let running: Vec<_> = dns
            .hosts
            .iter()
            .map(|h| s.spawn(|| resolve::lookup(&h.host, dns)))
            .collect();
        running
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err("the lookup panicked".into()))
            })
            .collect()
    })
}

/// Publishes the current endpoint sets to every core (the gateway's side of a refresh).
pub type Publish = Arc<dyn Fn() + Send + Sync>;

/// The running refreshers, one per strict_dns cluster; stopped (and joined) when dropped.
#[derive(Default)]
pub struct Refreshers(Vec<(mpsc::Sender<()>, JoinHandle<()>)>);

impl Refreshers {
    /// Starts a refresher for every strict_dns cluster of `clusters`, stopping those that ran
    /// before.
    pub fn restart(
        &mut self,
        clusters: &[Cluster],
        resolved: &Arc<Resolved>,
        registry: &Arc<Registry>,
        publish: &Publish,
    ) {
        self.stop();
        for cluster in clusters.iter().filter(|c| c.dns.is_some()) {
            let refresher = Refresher {
                cluster: cluster.clone(),
                resolved: resolved.clone(),
                registry: registry.clone(),
                publish: publish.clone(),
            };
            let (stop, stopped) = mpsc::channel();
            let spawned = thread::Builder::new()
                .name(format!("coregate-dns-{}", cluster.name))
                .spawn(move || refresher.run(&stopped));
            match spawned {
                Ok(handle) => self.0.push((stop, handle)),
                Err(e) => warn!(cluster = %cluster.name, "cannot start the DNS refresher: {e}"),
            }
        }
    }

    pub fn stop(&mut self) {
        // Dropping each sender wakes its refresher out of its wait.
        let running: Vec<_> = self.0.drain(..).map(|(_, handle)| handle).collect();
        for handle in running {
            let _ = handle.join();
        }
    }
}

impl Drop for Refreshers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One strict_dns cluster's refresher.
struct Refresher {
    cluster: Cluster,
    resolved: Arc<Resolved>,
    registry: Arc<Registry>,
    publish: Publish,
}

impl Refresher {
    fn run(&self, stopped: &mpsc::Receiver<()>) {
        let Some(spec) = &self.cluster.dns else {
            return;
        };
        let mut wait = spec.refresh_rate;
        loop {
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let answers = lookup_all(&self.cluster);
            wait = match Resolved::ttl(&answers) {
                Some(ttl) if spec.respect_dns_ttl => ttl.max(MIN_TTL_REFRESH),
                _ => spec.refresh_rate,
            };
            let name = &self.cluster.name;
            match self.resolved.record(name, spec, answers, &self.registry) {
                Some(true) => (self.publish)(),
                Some(false) => self.registry.cluster(0, name).dns.update_no_rebuild.inc(),
                // Replaced by a reload: its own refresher takes over.
                None => return,
            }
        }
    }
}
