//! The running gateway: binds every listener's sockets, starts one pinned single-threaded
//! io_uring runtime per worker, hands each its sockets and the first snapshot; reloads a new
//! config on every core at once (or changes nothing), and stops.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_channel::mpsc::{UnboundedSender, unbounded};

use crate::config::{Config, Workers};
use crate::dns::{Publish, Refreshers};
use crate::health::Probers;
use crate::listener::{self, BindError};
use crate::retire::Retired;
use crate::snapshot::{Carried, Published, Snapshot};
use crate::stats::Registry;
use crate::worker::{self, Command};

/// How long a reload waits for every worker to confirm it serves the new config.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("worker {worker}: {reason}")]
    Worker { worker: usize, reason: String },
    #[error("{0}")]
    Tls(String),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("worker {0} did not confirm the new config in time")]
    Unconfirmed(usize),
    #[error("{0}")]
    Tls(String),
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    /// One line: what changed (listeners, vhosts, routes, clusters, endpoints).
    pub changes: String,
    /// Settings that cannot change at runtime and kept their running value.
    pub kept: Vec<String>,
    /// From the reload's start until every worker serves the new config.
    pub took: Duration,
    /// When every worker served it (the old snapshot, freed after, is not counted).
    pub served_at: Instant,
}

struct WorkerHandle {
    commands: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// A running gateway. Dropping it stops the workers without draining.
pub struct Gateway {
    workers: Vec<WorkerHandle>,
    registry: Arc<Registry>,
    /// Bound address of each listener (port 0 resolved).
    addresses: HashMap<String, SocketAddr>,
    published: Published,
    /// What reloads and DNS refreshes publish with, one at a time.
    shared: Arc<Mutex<Shared>>,
    /// The strict_dns clusters' refreshers (outside `shared`: stopping one may wait for a
    /// refresh that waits for `shared`).
    refreshers: Refreshers,
}

/// What publishing a snapshot to the cores needs, shared by the control thread's reloads and
/// the DNS refreshers' endpoint updates.
struct Shared {
    commands: Vec<UnboundedSender<Command>>,
    published: Published,
    registry: Arc<Registry>,
    /// Session ticket keys (kept for the life of the process: a reload that made new ones
    /// would invalidate every ticket clients hold), the span exporter, health verdicts and
    /// the strict_dns clusters' answers.
    carried: Carried,
    /// The health checkers of the clusters that have one.
    probers: Probers,
    /// Frees replaced snapshots off the cores.
    retired: Retired<Snapshot>,
}

/// The worker count `workers: auto` resolves to: the CPUs this process may run on.
pub fn available_cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// One socket per worker for a listener, and the address they are bound to.
fn bind_for_workers(
    name: &str,
    address: SocketAddr,
    backlog: u32,
    workers: usize,
) -> Result<(SocketAddr, Vec<StdListener>), BindError> {
    let bound = listener::bind(name, address, backlog, workers)?;
    let addr = bound
        .first()
        .map(StdListener::local_addr)
        .transpose()
        .map_err(|source| BindError::Io {
            name: name.to_owned(),
            address,
            source,
        })?
        .unwrap_or(address);
    Ok((addr, bound))
}

impl Gateway {
    /// Binds every listener, starts the workers and returns once all of them are serving.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let cpus = available_cpus();
        let count = match config.workers {
            Workers::Auto => cpus.len().max(1),
            Workers::Count(n) => n.max(1),
        };
        crate::rt::count_panics();
        let carried = Carried::default();
        let registry = Arc::new(Registry::new(count));
        carried.resolved.prepare(&config.clusters, &registry);
        let snapshot =
            Arc::new(Snapshot::compile(config, 1, &carried, None).map_err(StartError::Tls)?);

        // sockets[worker] = [(listener name, socket)]
        let mut sockets: Vec<Vec<(String, StdListener)>> = (0..count).map(|_| Vec::new()).collect();
        let mut addresses = HashMap::new();
        for l in &snapshot.listeners {
            let (addr, bound) = bind_for_workers(&l.name, l.address, l.backlog, count)?;
            addresses.insert(l.name.clone(), addr);
            for (w, s) in bound.into_iter().enumerate() {
                sockets[w].push((l.name.clone(), s));
            }
        }

        let (ready_tx, ready_rx) = std_mpsc::channel();
        let mut workers = Vec::with_capacity(count);
        for (id, socks) in sockets.into_iter().enumerate() {
            let (tx, rx) = unbounded();
            let cpu = if cpus.is_empty() {
                None
            } else {
                Some(cpus[id % cpus.len()])
            };
            let snapshot = snapshot.clone();
            let registry = registry.clone();
            let ready = ready_tx.clone();
            let thread = thread::Builder::new()
                .name(format!("coregate-w{id}"))
                .spawn(move || worker::run(id, count, cpu, snapshot, registry, socks, rx, ready))
                .map_err(|e| StartError::Worker {
                    worker: id,
                    reason: e.to_string(),
                })?;
            workers.push(WorkerHandle {
                commands: tx,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        let mut probers = Probers::default();
        probers.restart(&snapshot.clusters, &snapshot.health, &registry);
        count_membership(&snapshot, &registry);
        let published = Arc::new(Mutex::new(snapshot.clone()));
        let shared = Shared {
            commands: workers.iter().map(|w| w.commands.clone()).collect(),
            published: published.clone(),
            registry: registry.clone(),
            carried,
            probers,
            retired: Retired::start(),
        };
        let mut gateway = Gateway {
            workers,
            registry,
            addresses,
            published,
            shared: Arc::new(Mutex::new(shared)),
            refreshers: Refreshers::default(),
        };
        gateway.restart_refreshers(&snapshot);
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((worker, reason))) => return Err(StartError::Worker { worker, reason }),
                Err(_) => {
                    return Err(StartError::Worker {
                        worker: 0,
                        reason: "a worker exited during start".into(),
                    });
                }
            }
        }
        Ok(gateway)
    }

    /// The address a listener is bound to (port 0 resolved).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addresses.get(listener).copied()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The snapshot the workers serve.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The published snapshot, for the admin thread.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Switches every worker to `config`, or changes nothing. New listeners are bound first
    /// (a listener that cannot be bound fails the reload); then every worker gets the new
    /// snapshot with its new sockets and the listeners to drain, and this returns once all of
    /// them serve it. Listeners that keep their name and address keep their sockets: closing a
    /// SO_REUSEPORT socket would drop the connections waiting in its backlog.
    pub fn reload(&mut self, config: Config) -> Result<Reloaded, ReloadError> {
        let started = Instant::now();
        let result = self.publish(config, started);
        match &result {
            Ok(_) => self.registry.record_reload(true),
            Err(_) => self.registry.record_reload(false),
        }
        result
    }

    fn publish(&mut self, config: Config, started: Instant) -> Result<Reloaded, ReloadError> {
        let shared = self.shared.clone();
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.snapshot();
        let count = self.workers.len();
        let mut kept = Vec::new();
        let mut config = config;
        let running_workers = old.config.workers;
        if config.workers != running_workers {
            kept.push(format!(
                "workers cannot change at runtime: still {count} (restart to apply)"
            ));
            config.workers = running_workers;
        }
        if config.admin != old.config.admin {
            kept.push("admin address cannot change at runtime (restart to apply)".to_owned());
            config.admin = old.config.admin.clone();
        }
        let changes = crate::config::diff(&old.config, &config);
        // New or changed strict_dns clusters are resolved before they are served.
        (shared.carried.resolved).prepare(&config.clusters, &self.registry);
        let snapshot = Arc::new(
            Snapshot::compile(config, old.generation + 1, &shared.carried, Some(&old))
                .map_err(ReloadError::Tls)?,
        );

        // Listeners keep their sockets when their name and address stay; a listener that
        // moves is closed and opened again.
        let close: Vec<String> = old
            .listeners
            .iter()
            .filter(|o| {
                snapshot
                    .listener(&o.name)
                    .is_none_or(|n| n.address != o.address)
            })
            .map(|o| o.name.clone())
            .collect();
        let mut open: Vec<Vec<(String, StdListener)>> = (0..count).map(|_| Vec::new()).collect();
        let mut addresses = self.addresses.clone();
        for l in &snapshot.listeners {
            let unchanged = old
                .listener(&l.name)
                .is_some_and(|o| o.address == l.address);
            if unchanged {
                continue;
            }
            // Nothing is published until every new socket is bound; on failure the sockets
            // bound so far close with `open`.
            let (addr, bound) = bind_for_workers(&l.name, l.address, l.backlog, count)?;
            addresses.insert(l.name.clone(), addr);
            for (w, s) in bound.into_iter().enumerate() {
                open[w].push((l.name.clone(), s));
            }
        }
        addresses.retain(|name, _| snapshot.listener(name).is_some());

        shared.apply(&snapshot, open, close)?;
        let served_at = Instant::now();
        self.addresses = addresses;
        let generation = snapshot.generation;
        drop(shared);
        self.restart_refreshers(&snapshot);
        Ok(Reloaded {
            generation,
            changes,
            kept,
            took: served_at - started,
            served_at,
        })
    }

    /// Stops accepting, lets in-flight requests finish (telling keep-alive clients to close),
    /// and returns when every worker has exited or `drain` has passed.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop(drain);
    }

    /// Starts a refresher for each strict_dns cluster of `snapshot` (stopping the previous
    /// ones), which publishes through `shared` when its names' answer changes.
    fn restart_refreshers(&mut self, snapshot: &Snapshot) {
        let shared = Arc::downgrade(&self.shared);
        let publish: Publish = Arc::new(move || {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = shared.refresh() {
                tracing::error!("DNS update not published: {e}");
            }
        });
        let resolved = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .carried
            .resolved
            .clone();
        self.refreshers.restart(
            &snapshot.config.clusters,
            &resolved,
            &self.registry,
            &publish,
        );
    }

    fn stop(&mut self, drain: Duration) {
        self.refreshers.stop();
        (self.shared.lock().unwrap_or_else(PoisonError::into_inner))
            .probers
            .stop();
        for w in &self.workers {
            let _ = w.commands.unbounded_send(Command::Stop { drain });
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Shared {
    /// Sends `snapshot` to every worker (with the listeners each opens and closes) and
    /// returns once all serve it; then restarts the probers on its endpoints and makes it the
    /// published one.
    fn apply(
        &mut self,
        snapshot: &Arc<Snapshot>,
        open: Vec<Vec<(String, StdListener)>>,
        close: Vec<String>,
    ) -> Result<(), ReloadError> {
        let drain = snapshot.limits.drain_timeout;
        let (done_tx, done_rx) = std_mpsc::channel();
        for (commands, sockets) in self.commands.iter().zip(open) {
            let _ = commands.unbounded_send(Command::Apply {
                snapshot: snapshot.clone(),
                open: sockets,
                close: close.clone(),
                drain,
                done: done_tx.clone(),
            });
        }
        drop(done_tx);
        let deadline = Instant::now() + APPLY_TIMEOUT;
        for confirmed in 0..self.commands.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                // Workers apply commands in order; one that has not confirmed has exited.
                return Err(ReloadError::Unconfirmed(confirmed));
            }
        }
        // The new probers write the verdicts the cores now read (kept ones included).
        self.probers
            .restart(&snapshot.clusters, &snapshot.health, &self.registry);
        count_membership(snapshot, &self.registry);
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut *published, snapshot.clone());
        drop(published);
        self.retired.retire(old);
        Ok(())
    }

    /// Publishes the running config again with the strict_dns clusters' endpoints as last
    /// resolved: no config is read, no listener changes; each core keeps the pools, outlier
    /// records and counters of the endpoints that stay, and drains those of the ones gone.
    fn refresh(&mut self) -> Result<(), ReloadError> {
        let old = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let snapshot = Arc::new(old.with_resolved(old.generation + 1, &self.carried));
        let open = (0..self.commands.len()).map(|_| Vec::new()).collect();
        self.apply(&snapshot, open, Vec::new())?;
        for (old, new) in old.clusters.iter().zip(&snapshot.clusters) {
            if old.dns.is_some() && old.endpoints != new.endpoints {
                self.registry
                    .cluster(0, &new.name)
                    .dns
                    .membership_change
                    .inc();
                tracing::info!(
                    cluster = %new.name,
                    endpoints = new.endpoints.len(),
                    generation = snapshot.generation,
                    "DNS: new endpoint set on every core"
                );
            }
        }
        Ok(())
    }
}

/// Sets each cluster's `membership_total` and `membership_healthy` gauges to what `snapshot`
/// serves (written under the publishing lock: one writer at a time).
fn count_membership(snapshot: &Snapshot, registry: &Registry) {
    for (cluster, health) in snapshot.clusters.iter().zip(&snapshot.health) {
        let total = cluster.endpoints.len();
        let healthy = match health {
            Some(h) => (0..total).filter(|&i| h.is_healthy(i)).count(),
            None => total,
        };
        let stats = registry.cluster(0, &cluster.name);
        stats.dns.membership_total.set(total as u64);
        stats.dns.membership_healthy.set(healthy as u64);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
