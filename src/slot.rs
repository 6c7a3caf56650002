//! A listener as one core serves it: its socket and accept task, the signal that it closes, and
//! the connections it started (so that a drain can count them and cut the last ones).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use slab::Slab;

use crate::notify::{Notify, Wait};
use crate::rt::{Task, TcpListener};
use crate::stats::{ListenerLoad, ListenerStats, LocalHistogram};

/// One listener on one core. Connections keep their slot; its index into the current
/// snapshot's listeners is updated on reload.
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
    /// The connection tasks, so that a drain can be cut short at its deadline. An entry is
    /// reserved at accept and filled with the task right after it is spawned.
    connections: RefCell<Slab<Option<Task>>>,
    /// The listener's connections over every core (for `max_connections`).
    load: Arc<ListenerLoad>,
    /// This core's counters of the listener, and its histograms of request durations
    /// (`http.<name>.downstream_rq_time`) and connection lifetimes.
    pub stats: Arc<ListenerStats>,
    pub rq_time: Rc<LocalHistogram>,
    pub cx_length: Rc<LocalHistogram>,
}

/// What a listener slot counts with on its core.
pub struct SlotStats {
    pub load: Arc<ListenerLoad>,
    pub stats: Arc<ListenerStats>,
    pub rq_time: Rc<LocalHistogram>,
    pub cx_length: Rc<LocalHistogram>,
}

impl ListenerSlot {
    pub fn new(name: &str, index: usize, socket: TcpListener, counted: SlotStats) -> ListenerSlot {
        ListenerSlot {
            name: name.to_owned(),
            index: Cell::new(index),
            socket: RefCell::new(Some(Rc::new(socket))),
            closing: Notify::new(),
            accepting: RefCell::new(None),
            connections: RefCell::new(Slab::new()),
            load: counted.load,
            stats: counted.stats,
            rq_time: counted.rq_time,
            cx_length: counted.cx_length,
        }
    }

    /// The listening socket, while the listener is open.
    pub fn socket(&self) -> Option<Rc<TcpListener>> {
        self.socket.borrow().clone()
    }

    /// Keeps the accept loop's task: it ends when the listener closes.
    pub fn set_accepting(&self, task: Task) {
        *self.accepting.borrow_mut() = Some(task);
    }

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
        // Taken out first: a connection's task, dropped, untracks itself.
        let tasks: Vec<Task> = self.connections.borrow_mut().drain().flatten().collect();
        drop(tasks);
    }

    /// Connections accepted on this slot and not yet closed.
    pub fn connections(&self) -> usize {
        self.connections.borrow().len()
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

    /// A place for a new connection's task, unless the listener has `max` connections open
    /// over every core already (None: the connection is to be closed).
    pub fn reserve(&self, max: Option<usize>) -> Option<usize> {
        self.load
            .admit(max)
            .then(|| self.connections.borrow_mut().insert(None))
    }

    /// Files the task of the connection that reserved `key`.
    pub fn track(&self, key: usize, task: Task) {
        if let Some(place) = self.connections.borrow_mut().get_mut(key) {
            *place = Some(task);
        }
    }

    /// Lets the task of the connection that reserved `key` end while the connection stays
    /// counted in (it parks, task-less, until a new task takes it up: [`Self::track`]).
    pub fn release_task(&self, key: usize) {
        let task = self
            .connections
            .borrow_mut()
            .get_mut(key)
            .and_then(Option::take);
        if let Some(task) = task {
            task.detach();
        }
    }

    /// Called by a connection as it ends (or is dropped by an abort).
    pub fn untrack(&self, key: usize) {
        self.load.release();
        let task = self.connections.borrow_mut().try_remove(key).flatten();
        if let Some(task) = task {
            task.detach();
        }
    }
}
