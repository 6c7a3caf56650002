//! Listening sockets: one SO_REUSEPORT socket per worker per listener, built with socket2 so that
//! the backlog and options are ours, and each core's accept loop.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use crate::rt::{self, TcpStream};
use crate::slot::ListenerSlot;
use crate::timer;

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

/// Starts accepting on a slot's socket; `serve` takes each accepted connection (and is
/// responsible for tracking it in the slot). The loop ends when the slot closes.
pub fn open<F>(slot: &Rc<ListenerSlot>, serve: F)
where
    F: Fn(TcpStream, SocketAddr) + 'static,
{
    let task = rt::spawn_handle(accept_loop(slot.clone(), serve));
    slot.set_accepting(task);
}

thread_local! {
    /// A descriptor each core keeps in reserve, given back when the process runs out of them
    /// so that the connection waiting at the head of the backlog can be taken and closed:
    /// the client learns at once that it was refused, instead of waiting in the backlog.
    static RESERVE: RefCell<Option<File>> = const { RefCell::new(None) };
}

/// Takes a descriptor into this core's reserve, if it has none.
fn reserve_fd() {
    RESERVE.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_none() {
            *r = File::open("/dev/null").ok();
        }
    });
}

/// Whether an accept failed for want of file descriptors (the process's or the system's).
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Accepts connections on this core's socket until the slot closes.
async fn accept_loop<F: Fn(TcpStream, SocketAddr)>(slot: Rc<ListenerSlot>, serve: F) {
    let Some(socket) = slot.socket() else {
        return;
    };
    reserve_fd();
    // Failures are logged at most once a second: a flood would otherwise write a line per
    // refused connection.
    let mut logged: Option<Instant> = None;
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => serve(stream, peer),
            Err(e) => {
                if out_of_fds(&e) {
                    slot.stats.downstream_cx_fd_exhausted.inc();
                    // Close the waiting connection with the reserve's descriptor, then take
                    // the reserve back (it fails while the process is still out).
                    RESERVE.with(|r| r.borrow_mut().take());
                    if let Ok((refused, _)) = socket.accept().await {
                        drop(refused);
                    }
                    reserve_fd();
                }
                if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    warn!(listener = %slot.name, "accept failed: {e}");
                    logged = Some(Instant::now());
                }
                // A short pause, so the loop never spins while the condition lasts.
                timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
