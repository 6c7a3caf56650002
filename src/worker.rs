//! One core's state: its view of the current config (router, balancers), its upstream pools, its
//! listeners and its counters; applies a new snapshot between requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::balance::Wrr;
use crate::io::{self as rt};
use crate::pool::Pool;
use crate::snapshot::Snapshot;
use crate::stats::{EndpointStats, Latency, Registry, WorkerStats};
use crate::upstream::UpstreamConn;

/// How often idle upstream connections past their idle timeout are closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A pool's identity: cluster name and endpoint address.
type PoolKey = (String, SocketAddr);

/// An endpoint of a cluster as this core uses it.
#[derive(Debug)]
pub struct EndpointState {
    pub address: SocketAddr,
    pub pool: Rc<Pool<UpstreamConn>>,
    pub stats: Arc<EndpointStats>,
}

/// A cluster as this core uses it: its balancer state and endpoints.
#[derive(Debug)]
pub struct ClusterState {
    pub balancer: RefCell<Wrr>,
    pub endpoints: Box<[EndpointState]>,
}

/// This core's view of one snapshot. Requests hold an `Rc` to the generation they started
/// with, so a request already routed finishes where it was sent even if a reload lands.
#[derive(Debug)]
pub struct Generation {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Box<[ClusterState]>,
}

/// A listener as one core serves it. Connections keep their slot; its index into the current
/// snapshot's listeners is updated on reload.
#[derive(Debug)]
pub struct ListenerSlot {
    pub name: String,
    pub index: Cell<usize>,
    /// Set when the listener was removed: its connections finish their request and close.
    pub draining: Cell<bool>,
}

/// Per-core state: nothing here is shared with or locked against another core.
#[derive(Debug)]
pub struct Worker {
    pub id: usize,
    workers: usize,
    pub stats: Arc<WorkerStats>,
    /// Request latencies since the last fold into the registry.
    latency: RefCell<Latency>,
    registry: Arc<Registry>,
    current: RefCell<Rc<Generation>>,
    /// Pools by (cluster, endpoint): they outlive generations so that a reload keeps warm
    /// connections of endpoints that stay.
    pools: RefCell<HashMap<PoolKey, Rc<Pool<UpstreamConn>>>>,
    listeners: RefCell<Vec<Rc<ListenerSlot>>>,
    /// Set on shutdown: connections close after their current request.
    pub stopping: Cell<bool>,
    /// Idle connections waiting for their next request, woken on shutdown: a slab whose free
    /// slots are listed in `free_waiters`, so that waiting allocates nothing in steady state.
    stop_waiters: RefCell<Vec<Option<Waker>>>,
    free_waiters: RefCell<Vec<usize>>,
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
            latency: RefCell::new(Latency::default()),
            registry,
            current: RefCell::new(Rc::new(Generation {
                snapshot: snapshot.clone(),
                clusters: Box::new([]),
            })),
            pools: RefCell::new(HashMap::new()),
            listeners: RefCell::new(Vec::new()),
            stopping: Cell::new(false),
            stop_waiters: RefCell::new(Vec::new()),
            free_waiters: RefCell::new(Vec::new()),
        });
        worker.apply(snapshot);
        worker
    }

    /// The generation new requests use. An `Rc` clone: core-local, no atomic.
    #[inline]
    pub fn generation(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Switches this core to `snapshot`: rebuilds balancers, keeps the pools of endpoints that
    /// remain, closes the idle connections of endpoints that went away, re-indexes listeners.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let mut pools = self.pools.borrow_mut();
        let mut kept = HashMap::with_capacity(pools.len());
        let clusters = snapshot
            .clusters
            .iter()
            .map(|c| {
                let weights: Vec<u32> = c.endpoints.iter().map(|e| e.weight).collect();
                let start = self.id * weights.iter().map(|&w| w as usize).sum::<usize>()
                    / self.workers.max(1);
                let endpoints = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let key = (c.name.clone(), e.address);
                        let pool = pools.remove(&key).unwrap_or_else(|| {
                            Rc::new(Pool::new(c.max_idle_per_core, c.idle_timeout))
                        });
                        pool.set_limits(c.max_idle_per_core, c.idle_timeout);
                        kept.insert(key, pool.clone());
                        EndpointState {
                            address: e.address,
                            pool,
                            stats: self.registry.endpoint(self.id, &c.name, e.address),
                        }
                    })
                    .collect();
                ClusterState {
                    balancer: RefCell::new(Wrr::new(&weights, start)),
                    endpoints,
                }
            })
            .collect();
        // What is left belongs to removed endpoints: close their idle connections now;
        // connections in use finish their exchange and are then dropped.
        for pool in pools.values() {
            pool.clear();
        }
        *pools = kept;
        for slot in self.listeners.borrow().iter() {
            match snapshot.listeners.iter().position(|l| l.name == slot.name) {
                Some(i) => slot.index.set(i),
                None => slot.draining.set(true),
            }
        }
        self.stats.config_generation.set(snapshot.generation);
        *self.current.borrow_mut() = Rc::new(Generation { snapshot, clusters });
    }

    /// Registers a listener this core serves; returns its slot.
    pub fn add_listener(&self, name: &str) -> Rc<ListenerSlot> {
        let index = self
            .generation()
            .snapshot
            .listeners
            .iter()
            .position(|l| l.name == name)
            .unwrap_or(0);
        let slot = Rc::new(ListenerSlot {
            name: name.to_owned(),
            index: Cell::new(index),
            draining: Cell::new(false),
        });
        self.listeners.borrow_mut().push(slot.clone());
        slot
    }

    /// Starts shutdown on this core: connections close after their current request, idle ones
    /// at once.
    pub fn stop(&self) {
        self.stopping.set(true);
        let wakers: Vec<Waker> = self
            .stop_waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once shutdown has started on this core.
    pub fn stopped(&self) -> Stopped<'_> {
        Stopped {
            worker: self,
            slot: None,
        }
    }

    /// Records a finished request's duration on this core.
    #[inline]
    pub fn record_latency(&self, d: Duration) {
        self.latency.borrow_mut().record(d);
    }

    /// Once a second, forever: closes pooled upstream connections that outlived their idle
    /// timeout, and folds this core's latencies into the registry (the one lock, off the
    /// request path).
    pub async fn sweep(self: Rc<Self>) {
        loop {
            rt::sleep(SWEEP_INTERVAL).await;
            let now = rt::now();
            for pool in self.pools.borrow().values() {
                pool.evict_expired(now);
            }
            self.fold_latency();
        }
    }

    /// Moves this core's recent latencies into the registry.
    pub fn fold_latency(&self) {
        let mut recent = self.latency.borrow_mut();
        if recent.count() > 0 {
            self.registry.fold_latency(self.id, &recent);
            recent.reset();
        }
    }

    /// Idle upstream connections on this core (all pools).
    pub fn idle_upstreams(&self) -> usize {
        self.pools.borrow().values().map(|p| p.len()).sum()
    }
}

/// Future of [`Worker::stopped`].
pub struct Stopped<'a> {
    worker: &'a Worker,
    slot: Option<usize>,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let worker = self.worker;
        if worker.stopping.get() {
            return Poll::Ready(());
        }
        let mut waiters = worker.stop_waiters.borrow_mut();
        match self.slot {
            Some(i) => {
                if let Some(entry) = waiters.get_mut(i) {
                    *entry = Some(cx.waker().clone());
                }
            }
            None => {
                let i = match worker.free_waiters.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(entry) = self.worker.stop_waiters.borrow_mut().get_mut(i) {
                *entry = None;
            }
            self.worker.free_waiters.borrow_mut().push(i);
        }
    }
}
