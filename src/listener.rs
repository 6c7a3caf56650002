//! Listening sockets: one SO_REUSEPORT socket per worker per listener, built with socket2 so that
//! the backlog and options are ours; each core's accept loop, and the connections it started,
//! which a removed listener drains.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use crate::conn;
use crate::io::{self as rt, Task, TcpListener};
use crate::notify::{Notify, Wait};
use crate::worker::Worker;

/// Pause after an accept error (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listener {name}: {address} is already in use by another socket")]
    InUse { name: String, address: SocketAddr },
    #[error("listener {name}: cannot listen on {address}: {source}")]
    Io {
        name: String,
        address: SocketAddr,
        source: io::Error,
    },
}

fn socket(address: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds `count` sockets on `address` with SO_REUSEPORT, one per worker, so the kernel spreads
/// new connections over the cores. Port 0 is resolved by the first socket and shared by the rest.
///
/// Before binding, a plain socket (without SO_REUSEPORT) probes the address: with
/// SO_REUSEPORT another process of the same user could otherwise silently share the port and
/// take part of the traffic.
pub fn bind(
    name: &str,
    address: SocketAddr,
    backlog: u32,
    count: usize,
) -> Result<Vec<StdListener>, BindError> {
    let io_err = |source| BindError::Io {
        name: name.to_owned(),
        address,
        source,
    };
    if address.port() != 0 {
        let probe = socket(address, false).map_err(io_err)?;
        match probe.bind(&address.into()) {
            Ok(()) => drop(probe),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(BindError::InUse {
                    name: name.to_owned(),
                    address,
                });
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    let mut bound = address;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let s = socket(bound, true).map_err(io_err)?;
        // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt here instead of one
        // per connection.
        s.set_tcp_nodelay(true).map_err(io_err)?;
        s.bind(&bound.into()).map_err(io_err)?;
        s.listen(backlog.min(i32::MAX as u32) as i32)
            .map_err(io_err)?;
        s.set_nonblocking(true).map_err(io_err)?;
        if bound.port() == 0 {
            bound = s
                .local_addr()
                .map_err(io_err)?
                .as_socket()
                .ok_or_else(|| io_err(io::Error::other("not an IP socket")))?;
        }
        out.push(StdListener::from(s));
    }
    Ok(out)
}

/// A listener as one core serves it: its socket, its accept loop and its connections.
/// Connections keep their slot; its index into the current snapshot's listeners is updated on
/// reload.
pub struct ListenerSlot {
    pub name: String,
    pub index: Cell<usize>,
    /// The listening socket, shared with the accept loop; released on close so that the
    /// port stops accepting at once.
    socket: RefCell<Option<Rc<TcpListener>>>,
    /// Fired when the listener is removed or the worker stops: connections finish their
    /// current request and close, idle ones at once.
    closing: Notify,
    accepting: RefCell<Option<Task>>,
    /// The connection tasks, so that a drain can be cut short at its deadline.
    connections: RefCell<Vec<Option<Task>>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
}

impl ListenerSlot {
    pub fn is_closing(&self) -> bool {
        self.closing.is_fired()
    }

    /// Resolves once the listener is closing.
    pub fn closed(&self) -> Wait<'_> {
        self.closing.wait()
    }

    /// Stops accepting (the socket closes with the accept loop) and tells the connections to
    /// finish.
    pub fn close(&self) {
        self.accepting.borrow_mut().take();
        self.socket.borrow_mut().take();
        self.closing.fire();
    }

    /// Ends every connection still open at once (a drain past its deadline).
    pub fn abort_connections(&self) {
        let tasks: Vec<Task> = self
            .connections
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        drop(tasks);
    }

    /// Connections accepted on this slot and not yet closed.
    pub fn connections(&self) -> usize {
        self.live.get()
    }

    /// Applies a new accept backlog to the open socket (listen() again adjusts it).
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        match self.socket.borrow().as_deref() {
            Some(socket) => {
                socket2::SockRef::from(socket).listen(backlog.min(i32::MAX as u32) as i32)
            }
            None => Ok(()),
        }
    }

    /// A place for a new connection's task.
    fn reserve(&self) -> usize {
        self.live.set(self.live.get() + 1);
        let mut conns = self.connections.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                conns.push(None);
                conns.len() - 1
            }
        }
    }

    /// Called by a connection as it ends.
    pub fn untrack(&self, key: usize) {
        self.live.set(self.live.get().saturating_sub(1));
        if let Some(task) = self
            .connections
            .borrow_mut()
            .get_mut(key)
            .and_then(Option::take)
        {
            task.detach();
        }
        self.free.borrow_mut().push(key);
    }
}

/// Starts serving a listening socket on this core.
pub fn open(
    worker: &Rc<Worker>,
    name: &str,
    index: usize,
    socket: StdListener,
) -> io::Result<Rc<ListenerSlot>> {
    let slot = Rc::new(ListenerSlot {
        name: name.to_owned(),
        index: Cell::new(index),
        socket: RefCell::new(Some(Rc::new(TcpListener::from_std(socket)?))),
        closing: Notify::new(),
        accepting: RefCell::new(None),
        connections: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        live: Cell::new(0),
    });
    let task = rt::spawn_handle(accept_loop(worker.clone(), slot.clone()));
    *slot.accepting.borrow_mut() = Some(task);
    Ok(slot)
}

/// Accepts connections on this core's socket and serves each on this core, until the slot
/// closes.
async fn accept_loop(worker: Rc<Worker>, slot: Rc<ListenerSlot>) {
    let Some(socket) = slot.socket.borrow().clone() else {
        return;
    };
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let key = slot.reserve();
                let task =
                    rt::spawn_handle(conn::serve(worker.clone(), slot.clone(), stream, peer, key));
                // Spawned, not yet run: it is in place before it can end and untrack itself.
                if let Some(place) = slot.connections.borrow_mut().get_mut(key) {
                    *place = Some(task);
                }
            }
            Err(e) => {
                warn!(listener = %slot.name, "accept failed: {e}");
                rt::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
