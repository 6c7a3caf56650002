//! Active health checks: one prober thread per checked cluster on the control side (never on a
//! data-path core), whose verdict per endpoint every core reads as a single-writer atomic. The
//! verdicts outlive reloads for endpoints that stay.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{CheckKind, Cluster, HealthCheck};
use crate::stats::{EndpointStats, Registry};

/// The prober's verdict on one endpoint. New endpoints start healthy: a gateway that starts (or
/// reloads) serves at once, and the first round of probes, at once too, takes out what is down.
#[derive(Debug)]
pub struct EndpointHealth {
    healthy: AtomicBool,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            healthy: AtomicBool::new(true),
        }
    }
}

impl EndpointHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }
}

/// A checked cluster's endpoints as the cores see them, in the cluster's endpoint order.
#[derive(Debug)]
pub struct ClusterHealth {
    endpoints: Box<[Arc<EndpointHealth>]>,
    /// How many are healthy now (written by the prober alone).
    healthy: AtomicUsize,
    /// Below this share of healthy endpoints (percent), all are used.
    panic_threshold: u8,
}

impl ClusterHealth {
    /// Whether the core may send to endpoint `i`: it is healthy, or so few are that every
    /// endpoint is used (panic mode, Envoy's semantics).
    #[inline]
    pub fn admits(&self, i: usize) -> bool {
        let n = self.endpoints.len();
        let healthy = self.healthy.load(Relaxed);
        if healthy == n {
            return true;
        }
        // healthy / n < threshold%, in integers.
        if healthy * 100 < usize::from(self.panic_threshold) * n {
            return true;
        }
        self.endpoints.get(i).is_some_and(|e| e.is_healthy())
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.endpoints.get(i).is_some_and(|e| e.is_healthy())
    }
}

/// The verdicts by (cluster, endpoint), kept by the control side across reloads.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<HashMap<(String, SocketAddr), Arc<EndpointHealth>>>);

impl Verdicts {
    /// The cores' view of `cluster`'s health, reusing the verdicts of endpoints that stay.
    pub fn cluster(&self, cluster: &Cluster) -> Option<Arc<ClusterHealth>> {
        cluster.health_check.as_ref()?;
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let endpoints: Box<[Arc<EndpointHealth>]> = cluster
            .endpoints
            .iter()
            .map(|e| {
                known
                    .entry((cluster.name.clone(), e.address))
                    .or_default()
                    .clone()
            })
            .collect();
        let healthy = endpoints.iter().filter(|e| e.is_healthy()).count();
        Some(Arc::new(ClusterHealth {
            endpoints,
            healthy: AtomicUsize::new(healthy),
            panic_threshold: cluster.panic_threshold,
        }))
    }

    /// Forgets the verdicts of endpoints no checked cluster has any more.
    pub fn retain(&self, clusters: &[Cluster]) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        known.retain(|(name, addr), _| {
            clusters.iter().any(|c| {
                c.name == *name
                    && c.health_check.is_some()
                    && c.endpoints.iter().any(|e| e.address == *addr)
            })
        });
    }
}

/// The running probers, one per checked cluster; stopped (and joined) when dropped.
#[derive(Default)]
pub struct Probers(Vec<(mpsc::Sender<()>, JoinHandle<()>)>);

impl Probers {
    /// Starts a prober for every checked cluster of `clusters` (`health[i]` is cluster `i`'s
    /// view), stopping those that ran before.
    pub fn restart(
        &mut self,
        clusters: &[Cluster],
        health: &[Option<Arc<ClusterHealth>>],
        registry: &Arc<Registry>,
    ) {
        self.stop();
        for (cluster, health) in clusters.iter().zip(health) {
            let (Some(check), Some(health)) = (&cluster.health_check, health) else {
                continue;
            };
            let targets = cluster
                .endpoints
                .iter()
                .map(|e| {
                    // Counted as worker 0's: these counters have the prober as their one writer.
                    (e.address, registry.endpoint(0, &cluster.name, e.address))
                })
                .collect();
            let prober = Prober {
                cluster: cluster.name.clone(),
                check: check.clone(),
                health: health.clone(),
                targets,
            };
            let (stop, stopped) = mpsc::channel();
            let spawned = thread::Builder::new()
                .name(format!("coregate-hc-{}", cluster.name))
                .spawn(move || prober.run(&stopped));
            match spawned {
                Ok(handle) => self.0.push((stop, handle)),
                Err(e) => warn!(cluster = %cluster.name, "cannot start the health checker: {e}"),
            }
        }
    }

    pub fn stop(&mut self) {
        // Dropping each sender wakes its prober out of its wait.
        let running: Vec<_> = self.0.drain(..).map(|(_, handle)| handle).collect();
        for handle in running {
            let _ = handle.join();
        }
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One cluster's prober.
struct Prober {
    cluster: String,
    check: HealthCheck,
    health: Arc<ClusterHealth>,
    targets: Vec<(SocketAddr, Arc<EndpointStats>)>,
}

impl Prober {
    fn run(&self, stopped: &mpsc::Receiver<()>) {
        // Consecutive successes and failures per endpoint.
        let mut streaks = vec![(0u32, 0u32); self.targets.len()];
        for (i, (_, stats)) in self.targets.iter().enumerate() {
            stats
                .health_check_healthy
                .set(u64::from(self.health.is_healthy(i)));
        }
        loop {
            // Every endpoint at once: a dead one costs its timeout, not the others' turn.
            let results: Vec<bool> = thread::scope(|s| {
                let probes: Vec<_> = self
                    .targets
                    .iter()
                    .map(|(addr, _)| s.spawn(|| probe(*addr, &self.check)))
                    .collect();
                probes
                    .into_iter()
                    .map(|p| p.join().unwrap_or(false))
                    .collect()
            });
            for (i, ok) in results.into_iter().enumerate() {
                self.record(i, ok, &mut streaks[i]);
            }
            let jitter = if self.check.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.check.jitter.mul_f64(fastrand::f64())
            };
            match stopped.recv_timeout(self.check.interval + jitter) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Counts a probe of endpoint `i` and flips its verdict when a streak reaches its
    /// threshold.
    fn record(&self, i: usize, ok: bool, streak: &mut (u32, u32)) {
        let (addr, stats) = &self.targets[i];
        stats.health_check_attempt.inc();
        if ok {
            stats.health_check_success.inc();
            *streak = (streak.0.saturating_add(1), 0);
        } else {
            stats.health_check_failure.inc();
            *streak = (0, streak.1.saturating_add(1));
        }
        let endpoint = &self.health.endpoints[i];
        let was = endpoint.is_healthy();
        let now = if was {
            streak.1 < self.check.unhealthy_threshold
        } else {
            streak.0 >= self.check.healthy_threshold
        };
        if now == was {
            return;
        }
        endpoint.healthy.store(now, Relaxed);
        let healthy = self.health.healthy.load(Relaxed);
        let healthy = if now {
            healthy + 1
        } else {
            healthy.saturating_sub(1)
        };
        self.health.healthy.store(healthy, Relaxed);
        stats.health_check_healthy.set(u64::from(now));
        if now {
            info!(cluster = %self.cluster, endpoint = %addr, "health check: endpoint healthy again");
        } else {
            warn!(cluster = %self.cluster, endpoint = %addr, "health check: endpoint unhealthy, out of rotation");
        }
    }
}

/// One probe: a TCP connect, and for an HTTP check a `GET` whose status must be expected; all
/// within the check's timeout.
fn probe(addr: SocketAddr, check: &HealthCheck) -> bool {
    let deadline = Instant::now() + check.timeout;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, check.timeout) else {
        return false;
    };
    let CheckKind::Http {
        path,
        host,
        expected_statuses,
    } = &check.kind
    else {
        return true;
    };
    let left = || deadline.saturating_duration_since(Instant::now());
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: coregate-health-check\r\nconnection: close\r\n\r\n"
    );
    if stream
        .set_write_timeout(Some(left().max(Duration::from_millis(1))))
        .is_err()
        || stream.write_all(request.as_bytes()).is_err()
    {
        return false;
    }
    // The status line is all that is needed: "HTTP/1.1 200 ...".
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let wait = left();
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    let line = &head[..got];
    if !line.starts_with(b"HTTP/1.") || line.get(8) != Some(&b' ') {
        return false;
    }
    std::str::from_utf8(&line[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|status| expected_statuses.contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(flags: &[bool], panic_threshold: u8) -> ClusterHealth {
        ClusterHealth {
            endpoints: flags
                .iter()
                .map(|&h| {
                    Arc::new(EndpointHealth {
                        healthy: AtomicBool::new(h),
                    })
                })
                .collect(),
            healthy: AtomicUsize::new(flags.iter().filter(|&&h| h).count()),
            panic_threshold,
        }
    }

    #[test]
    fn unhealthy_endpoints_are_skipped_until_too_few_are_left() {
        let h = health(&[true, false, true, true], 50);
        assert!(h.admits(0));
        assert!(!h.admits(1), "3 of 4 healthy: the unhealthy one is out");
        let h = health(&[true, false, false, false], 50);
        assert!(
            h.admits(1),
            "1 of 4 healthy is under 50%: panic, all are used"
        );
        let h = health(&[false, false], 0);
        assert!(!h.admits(0), "threshold 0: never panic");
    }
}
