//! The compiled, immutable runtime config: one router per listener, the clusters, the limits and
//! a generation number. Built once per (re)load on the control thread, shared by every core as
//! `Arc<Snapshot>`, never mutated after publication.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{Cluster, Config, HttpOptions, Limits};
use crate::route::Router;

/// A listener as the workers serve it.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub backlog: u32,
    pub http: HttpOptions,
    pub router: Router,
}

/// The snapshot the workers serve, as the control side publishes it for the admin thread (off
/// the data path: workers get theirs over their command channel).
pub type Published = Arc<Mutex<Arc<Snapshot>>>;

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub limits: Limits,
    pub listeners: Vec<ListenerSpec>,
    pub clusters: Vec<Cluster>,
    /// The validated config it was compiled from, for summaries and reload diffs.
    pub config: Config,
}

impl Snapshot {
    /// Compiles a validated config. Infallible: everything that can be wrong was caught by
    /// validation.
    pub fn compile(config: Config, generation: u64) -> Snapshot {
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerSpec {
                name: l.name.clone(),
                address: l.address,
                backlog: l.backlog,
                http: l.http.clone(),
                router: Router::new(&l.virtual_hosts),
            })
            .collect();
        Snapshot {
            generation,
            limits: config.limits.clone(),
            listeners,
            clusters: config.clusters.clone(),
            config,
        }
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.name == name)
    }
}
