//! The running gateway: binds every listener's sockets, starts one pinned single-threaded
//! io_uring runtime per worker, hands each its sockets and the first snapshot, and stops them.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_util::StreamExt;
use tracing::{error, info};

use crate::admin::Published;
use crate::config::{Config, Workers};
use crate::io::{self as rt, TcpListener};
use crate::listener::{self, BindError};
use crate::snapshot::Snapshot;
use crate::stats::Registry;
use crate::worker::Worker;

/// How often a draining worker checks whether its connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("worker {worker}: {reason}")]
    Worker { worker: usize, reason: String },
}

/// A message from the control side to one worker.
enum Command {
    /// Serve this snapshot from now on.
    Apply(Arc<Snapshot>),
    /// Stop accepting, let connections finish (at most `drain`), then exit.
    Stop { drain: Duration },
}

struct WorkerHandle {
    commands: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// A running gateway. Dropping it stops the workers without draining.
pub struct Gateway {
    workers: Vec<WorkerHandle>,
    registry: Arc<Registry>,
    addresses: HashMap<String, SocketAddr>,
    published: Published,
}

/// The worker count `workers: auto` resolves to: the CPUs this process may run on.
pub fn available_cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

impl Gateway {
    /// Binds every listener, starts the workers and returns once all of them are serving.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        let cpus = available_cpus();
        let count = match config.workers {
            Workers::Auto => cpus.len().max(1),
            Workers::Count(n) => n.max(1),
        };
        let snapshot = Arc::new(Snapshot::compile(config, 1));
        let registry = Arc::new(Registry::new(count));

        // sockets[worker] = [(listener name, socket)]
        let mut sockets: Vec<Vec<(String, StdListener)>> = (0..count).map(|_| Vec::new()).collect();
        let mut addresses = HashMap::new();
        for l in &snapshot.listeners {
            let bound = listener::bind(&l.name, l.address, l.backlog, count)?;
            if let Some(first) = bound.first() {
                let addr = first.local_addr().map_err(|source| BindError::Io {
                    name: l.name.clone(),
                    address: l.address,
                    source,
                })?;
                addresses.insert(l.name.clone(), addr);
            }
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
                .spawn(move || run_worker(id, count, cpu, snapshot, registry, socks, rx, ready))
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
        let gateway = Gateway {
            workers,
            registry,
            addresses,
            published: Arc::new(Mutex::new(snapshot)),
        };
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

    /// Stops accepting, lets in-flight requests finish (telling keep-alive clients to close),
    /// and returns when every worker has exited or `drain` has passed.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop(drain);
    }

    fn stop(&mut self, drain: Duration) {
        for w in &self.workers {
            let _ = w.commands.unbounded_send(Command::Stop { drain });
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Sends every worker a new snapshot of the same listeners.
    pub fn apply(&mut self, snapshot: Arc<Snapshot>) {
        for w in &self.workers {
            let _ = w.commands.unbounded_send(Command::Apply(snapshot.clone()));
        }
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// The linux thread id of the calling thread.
fn gettid() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    u64::try_from(unsafe { libc::gettid() }).unwrap_or(0)
}

type Ready = std_mpsc::Sender<Result<(), (usize, String)>>;

#[allow(clippy::too_many_arguments)]
fn run_worker(
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
    let mut accepting = Vec::with_capacity(sockets.len());
    for (name, socket) in sockets {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err((id, format!("listener {name}: {e}"))));
                return;
            }
        };
        let slot = worker.add_listener(&name);
        accepting.push(rt::spawn_handle(listener::accept_loop(
            worker.clone(),
            slot,
            listener,
        )));
    }
    let _sweeper = rt::spawn_handle(worker.clone().sweep());
    let _timers = rt::spawn_handle(crate::timer::drive());
    let _ = ready.send(Ok(()));
    drop(ready);
    info!(worker = id, cpu = worker.stats.cpu.get(), "worker serving");

    let drain = loop {
        match commands.next().await {
            Some(Command::Apply(snapshot)) => worker.apply(snapshot),
            Some(Command::Stop { drain }) => break drain,
            None => break Duration::ZERO,
        }
    };
    // Closing the sockets drops connections still in their backlogs; by now the control side
    // has stopped sending traffic here (shutdown).
    drop(accepting);
    worker.stop();
    let deadline = Instant::now() + drain;
    while worker.stats.connections_active.get() > 0 && Instant::now() < deadline {
        rt::sleep(DRAIN_POLL).await;
    }
    worker.fold_latency();
}
