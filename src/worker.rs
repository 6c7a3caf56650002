//! One core: its state (its view of the current config with the balancers, its upstream pools,
//! its listeners and counters) and its thread's loop, which applies the control side's commands
//! (a new snapshot, listeners to open or drain, stop) between two polls of its tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::StreamExt;
use tracing::{error, info, warn};

use crate::access_log;
use crate::balance::Picker;
use crate::config::CircuitBreakers;
use crate::conn;
use crate::h2::client::Sessions;
use crate::listener;
use crate::outlier::Outlier;
use crate::pool::Pool;
use crate::rt::{self, TcpListener};
use crate::slot::{ListenerSlot, SlotStats};
use crate::snapshot::Snapshot;
use crate::stats::{
    ClusterStats, EndpointStats, HistKey, LocalHistogram, LocalHistograms, Registry, WorkerStats,
};
use crate::timer;
use crate::upstream::{Idle, UpstreamConn};

/// How often idle upstream connections past their idle timeout are closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Connections parked within a sweep after which the allocator is asked to give free pages back.
const PARKS_BEFORE_TRIM: u64 = 1024;
/// How often a draining listener, or a stopping worker, checks whether its connections are
/// gone.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// A pool's identity: cluster name and endpoint address.
type PoolKey = (String, SocketAddr);

/// An endpoint's idle HTTP/1 connections, its HTTP/2 sessions, its outlier record and its
/// requests in flight on this core, kept across reloads that keep the endpoint.
type EndpointPools = (
    Rc<Pool<UpstreamConn>>,
    Rc<Sessions>,
    Rc<Outlier>,
    Rc<Cell<u32>>,
);

/// An endpoint of a cluster as this core uses it.
#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub pool: Rc<Pool<UpstreamConn>>,
    /// HTTP/2 connections, shared by many requests at once.
    pub h2: Rc<Sessions>,
    /// Its outlier-detection record on this core.
    pub outlier: Rc<Outlier>,
    /// Exchanges under way with it from this core (least_request reads it): one is held from
    /// the pick to the end of the attempt, whatever ends it.
    pub active: Rc<Cell<u32>>,
    pub stats: Arc<EndpointStats>,
}

/// A cluster as this core uses it: its balancer state and endpoints.
#[derive(Debug)]
pub struct ClusterState {
    /// None only for a cluster without endpoints (validation refuses one).
    pub balancer: RefCell<Option<Picker>>,
    pub endpoints: Box<[EndpointState]>,
    /// `cluster.<name>.upstream_rq_time` on this core.
    pub rq_time: Rc<LocalHistogram>,
    /// The cluster's own counters on this core (circuit-breaker overflows).
    pub stats: Arc<ClusterStats>,
    /// This core's share of the circuit breakers, and what is under way against them (kept
    /// across reloads, so requests that began before one still count).
    pub breakers: CircuitBreakers,
    pub load: Rc<ClusterLoad>,
}

/// What a cluster has under way on this core, against its circuit breakers.
#[derive(Debug, Default)]
pub struct ClusterLoad {
    pub requests: Cell<u32>,
    pub pending: Cell<u32>,
    pub retries: Cell<u32>,
}

/// Counts one unit in `cell` while it lives.
pub struct Held<'a>(&'a Cell<u32>);

impl<'a> Held<'a> {
    /// Holds one unit unless `max` are held already.
    pub fn take(cell: &'a Cell<u32>, max: u32) -> Option<Held<'a>> {
        let n = cell.get();
        if n >= max {
            return None;
        }
        cell.set(n + 1);
        Some(Held(cell))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// This core's view of one snapshot. Requests hold an `Rc` to the generation they started
/// with, so a request already routed finishes where it was sent even if a reload lands.
#[derive(Debug)]
pub struct Generation {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Box<[ClusterState]>,
    /// The weighted splits of each listener's routes on this core (by listener index, then by
    /// the route's `split` number).
    pub splits: Box<[Box<[crate::action::Split]>]>,
}

/// Per-core state: nothing here is shared with or locked against another core.
pub struct Worker {
    pub id: usize,
    workers: usize,
    pub stats: Arc<WorkerStats>,
    /// This core's histograms, folded into the registry once a second.
    pub histograms: LocalHistograms,
    /// Access log lines gathered on this core, by file, until they are handed to the writer.
    logs: RefCell<HashMap<Arc<str>, LogBuffer>>,
    registry: Arc<Registry>,
    current: RefCell<Rc<Generation>>,
    /// Pools by (cluster, endpoint): they outlive generations so that a reload keeps warm
    /// connections of endpoints that stay.
    pools: RefCell<HashMap<PoolKey, EndpointPools>>,
    /// The listeners this core serves, and removed ones still draining.
    listeners: RefCell<Vec<Rc<ListenerSlot>>>,
    /// Set on shutdown: every listener closes.
    pub stopping: Cell<bool>,
    /// Woken when an idle pooled upstream connection receives anything.
    pub idle_watch: IdleWatch,
}

/// Wakes this core's closing of idle upstream connections as soon as one receives anything
/// (the upstream closed it, or wrote to it unasked), rather than at the next sweep: a plain
/// connection's multishot receive (rt::ReadAhead) would otherwise go on filling the core's
/// buffer ring with whatever a misbehaving upstream sends, for up to the sweep's second.
pub struct IdleWatch {
    inner: Arc<WatchInner>,
    /// Handed to each idle connection's read (a clone: one reference count per checkin).
    waker: std::task::Waker,
}

struct WatchInner {
    woken: std::sync::atomic::AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WatchInner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.wake();
    }
}

impl IdleWatch {
    fn new() -> IdleWatch {
        let inner = Arc::new(WatchInner {
            woken: std::sync::atomic::AtomicBool::new(false),
            task: futures_util::task::AtomicWaker::new(),
        });
        let waker = std::task::Waker::from(inner.clone());
        IdleWatch { inner, waker }
    }

    pub fn waker(&self) -> &std::task::Waker {
        &self.waker
    }

    /// Waits until an idle connection's read completed since the last time.
    async fn woken(&self) {
        std::future::poll_fn(|cx| {
            self.inner.task.register(cx.waker());
            if self
                .inner
                .woken
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

impl Worker {
    pub fn new(
        id: usize,
        workers: usize,
        registry: Arc<Registry>,
        snapshot: Arc<Snapshot>,
    ) -> Rc<Worker> {
        let stats = registry.workers()[id % registry.workers().len()].clone();
        let worker = Rc::new(Worker {
            id,
            workers,
            stats,
            histograms: LocalHistograms::default(),
            logs: RefCell::new(HashMap::new()),
            registry,
            current: RefCell::new(Rc::new(Generation {
                snapshot: snapshot.clone(),
                clusters: Box::new([]),
                splits: Box::new([]),
            })),
            pools: RefCell::new(HashMap::new()),
            listeners: RefCell::new(Vec::new()),
            idle_watch: IdleWatch::new(),
            stopping: Cell::new(false),
        });
        worker.apply(snapshot);
        worker
    }

    /// The generation new requests use. An `Rc` clone: core-local, no atomic.
    #[inline]
    pub fn generation(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Switches this core to `snapshot`: rebuilds the balancers of changed clusters (unchanged
    /// ones keep their place in the sequence), keeps the pools of endpoints that remain,
    /// closes the idle connections of endpoints that went away, re-indexes listeners and
    /// applies changed backlogs.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let previous = self.generation();
        let before: HashMap<&str, usize> = previous
            .snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut pools = self.pools.borrow_mut();
        let mut kept = HashMap::with_capacity(pools.len());
        let clusters = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let weights: Vec<u32> = c.endpoints.iter().map(|e| e.weight).collect();
                let same = before
                    .get(c.name.as_str())
                    .filter(|&&i| {
                        let old = &previous.snapshot.clusters[i];
                        old.endpoints == c.endpoints && old.lb_policy == c.lb_policy
                    })
                    .and_then(|&i| previous.clusters.get(i));
                let balancer = match same {
                    Some(old) => old.balancer.borrow().clone(),
                    None => {
                        let start = self.id * weights.iter().map(|&w| w as usize).sum::<usize>()
                            / self.workers.max(1);
                        // Its own sequence on each core, reproducible from (cluster, core).
                        let seed = crate::balance::hash_key(c.name.as_bytes())
                            ^ (self.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let table = snapshot.tables.get(ci).cloned().flatten();
                        Picker::new(c.lb_policy, &weights, start, seed, table)
                    }
                };
                let endpoints = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let key = (c.name.clone(), e.address);
                        let (pool, h2, outlier, active) = pools.remove(&key).unwrap_or_else(|| {
                            let pool = Pool::new(c.max_idle_per_core, c.idle_timeout);
                            (Rc::new(pool), Rc::default(), Rc::default(), Rc::default())
                        });
                        pool.set_limits(c.max_idle_per_core, c.idle_timeout);
                        let carried = (pool.clone(), h2.clone(), outlier.clone(), active.clone());
                        kept.insert(key, carried);
                        EndpointState {
                            address: e.address,
                            pool,
                            h2,
                            outlier,
                            active,
                            stats: self.registry.endpoint(self.id, &c.name, e.address),
                        }
                    })
                    .collect();
                let load = before
                    .get(c.name.as_str())
                    .and_then(|&i| previous.clusters.get(i))
                    .map_or_else(Rc::default, |old| old.load.clone());
                // This core's share: the limit over the workers, rounded up.
                let workers = self.workers.max(1) as u32;
                let share = |limit: u32| limit.div_ceil(workers);
                let b = c.circuit_breakers;
                ClusterState {
                    balancer: RefCell::new(balancer),
                    endpoints,
                    rq_time: self.histograms.get(HistKey::upstream_rq_time(&c.name)),
                    stats: self.registry.cluster(self.id, &c.name),
                    breakers: CircuitBreakers {
                        max_connections: share(b.max_connections),
                        max_pending_requests: share(b.max_pending_requests),
                        max_requests: share(b.max_requests),
                        max_retries: share(b.max_retries),
                    },
                    load,
                }
            })
            .collect();
        // What is left belongs to removed endpoints: close their idle connections now;
        // connections in use finish their exchange and are then dropped.
        for (pool, h2, _, _) in pools.values() {
            pool.clear();
            h2.clear();
        }
        *pools = kept;
        for slot in self.listeners.borrow().iter().filter(|s| !s.is_closing()) {
            if let Some(i) = snapshot.listeners.iter().position(|l| l.name == slot.name) {
                slot.index.set(i);
                let backlog = snapshot.listeners[i].backlog;
                let before = previous.snapshot.listener(&slot.name).map(|l| l.backlog);
                if before != Some(backlog)
                    && let Err(e) = slot.set_backlog(backlog)
                {
                    warn!(listener = %slot.name, "cannot change the backlog: {e}");
                }
            }
        }
        let splits = self.splits(&previous, &snapshot);
        self.stats.config_generation.set(snapshot.generation);
        *self.current.borrow_mut() = Rc::new(Generation {
            snapshot,
            clusters,
            splits,
        });
    }

    /// This core's pickers of the weighted splits in `snapshot`; a split that a listener of the
    /// same name ran before, the same, keeps its place in the sequence.
    fn splits(
        &self,
        previous: &Generation,
        snapshot: &Snapshot,
    ) -> Box<[Box<[crate::action::Split]>]> {
        let before = |name: &str, n: usize| {
            let i = previous
                .snapshot
                .listeners
                .iter()
                .position(|l| l.name == name)?;
            previous.splits.get(i)?.get(n)
        };
        (snapshot.listeners.iter())
            .map(|l| {
                (l.router.splits().enumerate())
                    .map(|(n, w)| match before(&l.name, n).filter(|s| s.runs(w)) {
                        Some(same) => same.clone(),
                        None => crate::action::Split::new(w, self.id, self.workers),
                    })
                    .collect()
            })
            .collect()
    }

    /// Starts serving a listener's socket on this core.
    pub fn open_listener(self: &Rc<Self>, name: &str, socket: StdListener) -> std::io::Result<()> {
        let index = self
            .generation()
            .snapshot
            .listeners
            .iter()
            .position(|l| l.name == name)
            .unwrap_or(0);
        let slot = Rc::new(ListenerSlot::new(
            name,
            index,
            TcpListener::from_std(socket)?,
            SlotStats {
                load: self.registry.listener_load(name),
                stats: self.registry.listener(name, self.id),
                rq_time: self.histograms.get(HistKey::downstream_rq_time(name)),
                cx_length: self.histograms.get(HistKey::downstream_cx_length(name)),
            },
        ));
        let (worker, weak) = (self.clone(), Rc::downgrade(&slot));
        listener::open(&slot, move |stream, peer| {
            // The accept loop belongs to the slot: while it runs, the slot exists.
            let Some(slot) = weak.upgrade() else { return };
            let max = worker
                .generation()
                .snapshot
                .listeners
                .get(slot.index.get())
                .and_then(|l| l.http.max_connections);
            let Some(key) = slot.reserve(max) else {
                // Over the limit: closed at once, before a byte is read.
                slot.stats.downstream_cx_overflow.inc();
                drop(stream);
                return;
            };
            let tracked = conn::Tracked::new(&worker, &slot, key);
            let task = rt::spawn_handle(conn::serve(stream, peer, tracked));
            // Spawned, not yet run: it is in place before it can end and untrack itself.
            slot.track(key, task);
        });
        self.listeners.borrow_mut().push(slot);
        Ok(())
    }

    /// Stops accepting on a listener; its connections finish their current request and
    /// close, and those still open after `drain` are cut.
    pub fn close_listener(self: &Rc<Self>, name: &str, drain: Duration) {
        let slot = self
            .listeners
            .borrow()
            .iter()
            .find(|s| s.name == name && !s.is_closing())
            .cloned();
        if let Some(slot) = slot {
            slot.close();
            conn::close_parked(&self.stats);
            rt::spawn(self.clone().drain(slot, drain));
        }
    }

    /// Waits for a closed listener's connections to end, cuts the rest at `limit`, forgets it.
    async fn drain(self: Rc<Self>, slot: Rc<ListenerSlot>, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while slot.connections() > 0 && std::time::Instant::now() < deadline {
            timer::sleep(DRAIN_POLL).await;
        }
        slot.abort_connections();
        self.listeners
            .borrow_mut()
            .retain(|s| !Rc::ptr_eq(s, &slot));
    }

    /// Starts shutdown on this core: every listener stops accepting; connections close after
    /// their current request, idle ones at once.
    pub fn stop(&self) {
        self.stopping.set(true);
        for slot in self.listeners.borrow().iter() {
            slot.close();
        }
        conn::close_parked(&self.stats);
    }

    /// Connections still open on this core.
    pub fn connections(&self) -> usize {
        self.listeners
            .borrow()
            .iter()
            .map(|s| s.connections())
            .sum()
    }

    /// Once a second, forever: frees the spare I/O buffers no request needed in the last
    /// second (and gives the allocator's free pages back after a burst), closes pooled upstream connections that outlived their idle
    /// timeout or received anything while idle, and folds this core's latencies into the registry (the one lock, off the
    /// request path).
    pub async fn sweep(self: Rc<Self>) {
        let mut parks = conn::parks();
        loop {
            timer::sleep(SWEEP_INTERVAL).await;
            // A thousand connections that parked left ~0.5 MiB of tasks behind them.
            let parked = conn::parks();
            rt::release_memory(parked - parks >= PARKS_BEFORE_TRIM);
            parks = parked;
            let now = timer::now();
            for (pool, _, _, _) in self.pools.borrow().values() {
                pool.evict_expired(now);
            }
            // Idle connections the upstream closed or wrote to are closed now rather than at
            // their next checkout, so that the upstream's side of them goes too.
            let generation = self.generation();
            let specs = generation.snapshot.clusters.iter();
            for (cluster, spec) in generation.clusters.iter().zip(specs) {
                for ep in cluster.endpoints.iter() {
                    self.retire_idle(ep);
                    ep.h2.evict_idle(now, spec.idle_timeout);
                    let ejected = ep.outlier.is_ejected(std::time::Instant::now());
                    ep.stats.outlier_ejected.set(u64::from(ejected));
                }
            }
            self.fold_histograms();
            self.flush_logs();
        }
    }

    /// Forever: closes idle upstream connections that received anything, within a timer tick
    /// of the first one's read completing (the tick gathers the connections an upstream
    /// closes together into one pass).
    pub async fn watch_idle(self: Rc<Self>) {
        loop {
            self.idle_watch.woken().await;
            timer::sleep(Duration::from_millis(10)).await;
            let generation = self.generation();
            for cluster in generation.clusters.iter() {
                for ep in cluster.endpoints.iter() {
                    self.retire_idle(ep);
                }
            }
        }
    }

    /// Closes the endpoint's idle connections the upstream closed or wrote to.
    fn retire_idle(&self, ep: &EndpointState) {
        let watch = self.idle_watch.waker();
        ep.pool.retain(|conn| match conn.check(watch) {
            Idle::Clean => true,
            Idle::Stray => {
                ep.stats.upstream_cx_idle_stray.inc();
                false
            }
            Idle::Closed => {
                ep.stats.upstream_cx_idle_closed.inc();
                false
            }
        });
        ep.stats.upstream_cx_idle.set(ep.pool.len() as u64);
    }

    /// Moves this core's recent histogram samples into the registry.
    pub fn fold_histograms(&self) {
        self.histograms.fold_into(&self.registry, self.id);
    }

    /// Appends one access log line for `path` (written by `write`), and hands the file's
    /// lines to the writer once they pass [`access_log::FLUSH_BYTES`].
    pub fn log(&self, path: &Arc<str>, write: impl FnOnce(&mut Vec<u8>)) {
        let mut logs = self.logs.borrow_mut();
        let buf = match logs.get_mut(path) {
            Some(buf) => buf,
            None => logs.entry(path.clone()).or_default(),
        };
        write(&mut buf.bytes);
        buf.lines += 1;
        if buf.bytes.len() >= access_log::FLUSH_BYTES {
            buf.hand_over(path);
        }
    }

    /// Hands every gathered access log line to the writer (once a second, and when the
    /// worker stops).
    pub fn flush_logs(&self) {
        for (path, buf) in self.logs.borrow_mut().iter_mut() {
            if !buf.bytes.is_empty() {
                buf.hand_over(path);
            }
        }
    }
}

/// One file's access log lines gathered on a core.
#[derive(Debug, Default)]
struct LogBuffer {
    bytes: Vec<u8>,
    lines: u64,
}

impl LogBuffer {
    fn hand_over(&mut self, path: &Arc<str>) {
        let bytes = std::mem::replace(&mut self.bytes, Vec::with_capacity(access_log::FLUSH_BYTES));
        access_log::writer().send(path, bytes, self.lines);
        self.lines = 0;
    }
}

/// A message from the control side to one worker.
pub enum Command {
    /// Serve this snapshot from now on: open these listeners, close those (draining their
    /// connections for at most `drain`), then confirm.
    Apply {
        snapshot: Arc<Snapshot>,
        open: Vec<(String, StdListener)>,
        close: Vec<String>,
        drain: Duration,
        done: std_mpsc::Sender<usize>,
    },
    /// Stop accepting, let connections finish (at most `drain`), then exit.
    Stop { drain: Duration },
}

/// The linux thread id of the calling thread.
fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    u64::try_from(unsafe { libc::gettid() }).unwrap_or(0)
}

pub type Ready = std_mpsc::Sender<Result<(), (usize, String)>>;

/// The body of a worker thread: pins itself, builds its ring, serves its listeners and applies
/// the control side's commands until told to stop.
#[allow(clippy::too_many_arguments)]
pub fn run(
    id: usize,
    count: usize,
    cpu: Option<core_affinity::CoreId>,
    snapshot: Arc<Snapshot>,
    registry: Arc<Registry>,
    sockets: Vec<(String, StdListener)>,
    commands: UnboundedReceiver<Command>,
    ready: Ready,
) {
    let stats = registry.workers()[id].clone();
    stats.tid.set(gettid());
    if let Some(cpu) = cpu {
        if core_affinity::set_for_current(cpu) {
            stats.cpu.set(cpu.id as u64);
        } else {
            error!(worker = id, cpu = cpu.id, "could not pin worker to its CPU");
        }
    }
    let runtime = match rt::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err((id, format!("cannot create io_uring runtime: {e}"))));
            return;
        }
    };
    runtime.run(serve(
        id, count, snapshot, registry, sockets, commands, ready,
    ));
}

async fn serve(
    id: usize,
    count: usize,
    snapshot: Arc<Snapshot>,
    registry: Arc<Registry>,
    sockets: Vec<(String, StdListener)>,
    mut commands: UnboundedReceiver<Command>,
    ready: Ready,
) {
    let worker = Worker::new(id, count, registry, snapshot);
    for (name, socket) in sockets {
        if let Err(e) = worker.open_listener(&name, socket) {
            let _ = ready.send(Err((id, format!("listener {name}: {e}"))));
            return;
        }
    }
    let _sweeper = rt::spawn_handle(worker.clone().sweep());
    let _idle_watch = rt::spawn_handle(worker.clone().watch_idle());
    let _timers = rt::spawn_handle(crate::timer::drive());
    let _parked = rt::spawn_handle(conn::drive_parked(worker.stats.clone()));
    let _ = ready.send(Ok(()));
    drop(ready);
    info!(worker = id, cpu = worker.stats.cpu.get(), "worker serving");

    let drain = loop {
        match commands.next().await {
            Some(Command::Apply {
                snapshot,
                open,
                close,
                drain,
                done,
            }) => {
                // All at once, between two polls of this core's tasks: no request sees half of
                // a reload.
                for name in &close {
                    worker.close_listener(name, drain);
                }
                worker.apply(snapshot);
                for (name, socket) in open {
                    if let Err(e) = worker.open_listener(&name, socket) {
                        error!(worker = id, listener = %name, "cannot serve new listener: {e}");
                    }
                }
                let _ = done.send(id);
            }
            Some(Command::Stop { drain }) => break drain,
            None => break Duration::ZERO,
        }
    };
    // Closing the sockets drops connections still in their backlogs; the kernel stops routing
    // new ones to a closed SO_REUSEPORT socket.
    worker.stop();
    let deadline = Instant::now() + drain;
    while worker.connections() > 0 && Instant::now() < deadline {
        timer::sleep(DRAIN_POLL).await;
    }
    worker.fold_histograms();
    worker.flush_logs();
}
