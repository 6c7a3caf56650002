//! The compiled, immutable runtime config: one router per listener, the clusters, the limits and
//! a generation number. Built once per (re)load on the control thread, shared by every core as
//! `Arc<Snapshot>`, never mutated after publication.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{Cluster, Config, HttpOptions, Limits};
use crate::health::{ClusterHealth, Verdicts};
use crate::route::Router;
use crate::tls::{ClientTls, ServerTls, Tickets};
use crate::trace::RequestIdOptions;
use crate::zipkin::{Exporter, Exporters};

/// What a reload carries over from the previous snapshot: session ticket keys (tickets issued
/// before it still resume), the span exporter (spans queued are not lost) and the health
/// verdicts (an endpoint found down stays out).
#[derive(Debug, Default)]
pub struct Carried {
    pub tickets: Tickets,
    pub exporters: Exporters,
    /// Health-check verdicts of the endpoints that stay.
    pub verdicts: Verdicts,
    /// The last good answers of the strict_dns clusters' names.
    pub resolved: Arc<crate::dns::Resolved>,
}

/// Tracing as the cores use it.
#[derive(Debug, Clone)]
pub struct Tracer {
    pub exporter: Arc<Exporter>,
    pub sample_percent: f64,
}

/// A listener as the workers serve it.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    pub backlog: u32,
    pub http: HttpOptions,
    /// Set: connections are TLS, served with these certificates.
    pub tls: Option<Arc<ServerTls>>,
    /// Set: the listener speaks HTTP/2 too, with these settings.
    pub http2: Option<crate::config::Http2Options>,
    /// The request header that carries a verified client certificate upstream.
    pub client_cert_header: Option<http::HeaderName>,
    /// Where each request is logged (a path, "-" for stdout), and how.
    pub access_log: Vec<(Arc<str>, crate::access_log::Format)>,
    pub request_id: RequestIdOptions,
    /// The listener's header edits (crate::header_edit), applied after the virtual host's.
    pub header_edits: Option<Arc<crate::header_edit::HeaderEdits>>,
    /// Some level's header value reads the connection's local address.
    pub needs_local_address: bool,
    /// Shared with the previous snapshot when the listener's config is the one it was built
    /// from (a reload that kept the validated listeners, config::Loader): building the route
    /// index of 10,000 routes (~1 ms) would double such a reload.
    pub router: Arc<Router>,
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
    /// Each cluster's TLS client config (by cluster index), for clusters with `tls`.
    pub upstream_tls: Vec<Option<ClientTls>>,
    /// Each cluster's health verdicts (by cluster index), for clusters with `health_check`.
    pub health: Vec<Option<Arc<ClusterHealth>>>,
    /// Each cluster's consistent-hash table (by cluster index), for ring_hash and maglev
    /// clusters: built here once, read by every core.
    pub tables: Vec<Option<Arc<crate::balance::Table>>>,
    /// Set: sampled spans are exported.
    pub tracer: Option<Tracer>,
    /// The validated config it was compiled from, for summaries and reload diffs.
    pub config: Config,
}

/// Whether a header value of the listener, one of its virtual hosts or routes reads
/// `%DOWNSTREAM_LOCAL_ADDRESS%` (looked up once per connection only then).
fn needs_local_address(l: &crate::config::Listener) -> bool {
    let vhosts = l.virtual_hosts.iter();
    let levels = std::iter::once(&l.header_edits)
        .chain(vhosts.clone().map(|v| &v.header_edits))
        .chain(vhosts.flat_map(|v| v.routes.iter().map(|r| &r.header_edits)));
    levels.flatten().any(|e| e.uses_local_address())
}

impl Snapshot {
    /// Compiles a validated config. Fails only where building the TLS configs does (which
    /// validation has checked the material of); session ticket keys come from `tickets`, so
    /// that tickets issued before a reload still resume after it. `previous`: the snapshot
    /// served so far, whose route indexes are kept when the listeners are the same ones.
    pub fn compile(
        config: Config,
        generation: u64,
        carried: &Carried,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let tickets = &carried.tickets;
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let kept = previous.filter(|p| Arc::ptr_eq(&p.config.listeners, &config.listeners));
        for (i, l) in config.listeners.iter().enumerate() {
            let router = match kept.and_then(|p| p.listeners.get(i)) {
                Some(spec) if spec.name == l.name => spec.router.clone(),
                _ => Arc::new(Router::new(&l.virtual_hosts)),
            };
            let tls = match &l.tls {
                Some(t) => Some(Arc::new(
                    ServerTls::new(&l.name, &t.server, tickets)
                        .map_err(|e| format!("listener {}: {e}", l.name))?,
                )),
                None => None,
            };
            let client_cert_header = l
                .tls
                .as_ref()
                .and_then(|t| t.client_cert_header.as_deref())
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok());
            listeners.push(ListenerSpec {
                name: l.name.clone(),
                address: l.address,
                backlog: l.backlog,
                http: l.http.clone(),
                tls,
                http2: l.http2,
                client_cert_header,
                access_log: l
                    .access_log
                    .iter()
                    .map(|a| (Arc::from(a.path.as_str()), a.format.clone()))
                    .collect(),
                request_id: l.request_id,
                header_edits: l.header_edits.clone(),
                needs_local_address: needs_local_address(l),
                router,
            });
        }
        let upstream_tls = config
            .clusters
            .iter()
            .map(|c| match &c.tls {
                Some(t) => ClientTls::new(t)
                    .map(Some)
                    .map_err(|e| format!("cluster {}: {e}", c.name)),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let tracer = match &config.tracing {
            Some(t) => Some(Tracer {
                exporter: carried
                    .exporters
                    .get(&t.collector)
                    .map_err(|e| format!("tracing: cannot start the span exporter: {e}"))?,
                sample_percent: t.sample_percent,
            }),
            None => None,
        };
        let (clusters, health) = resolve_clusters(&config, carried);
        let tables = clusters
            .iter()
            .map(|c| {
                let endpoints: Vec<(SocketAddr, u32)> =
                    c.endpoints.iter().map(|e| (e.address, e.weight)).collect();
                crate::balance::Table::build(c.lb_policy, &endpoints).map(Arc::new)
            })
            .collect();
        Ok(Snapshot {
            generation,
            limits: config.limits.clone(),
            listeners,
            clusters,
            upstream_tls,
            health,
            tables,
            tracer,
            config,
        })
    }

    /// This snapshot with the strict_dns clusters' endpoints as last resolved, as generation
    /// `generation`: what a DNS refresh publishes (no config was read; listeners, routes and
    /// TLS stay as they are).
    pub fn with_resolved(&self, generation: u64, carried: &Carried) -> Snapshot {
        let (clusters, health) = resolve_clusters(&self.config, carried);
        Snapshot {
            generation,
            clusters,
            health,
            ..self.clone()
        }
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// The clusters as the cores serve them (strict_dns ones with their resolved endpoints), and
/// each one's health view, reusing the verdicts of endpoints that stay.
fn resolve_clusters(
    config: &Config,
    carried: &Carried,
) -> (Vec<Cluster>, Vec<Option<Arc<ClusterHealth>>>) {
    let clusters: Vec<Cluster> = config
        .clusters
        .iter()
        .map(|c| match c.dns {
            Some(_) => Cluster {
                endpoints: carried.resolved.endpoints(c),
                ..c.clone()
            },
            None => c.clone(),
        })
        .collect();
    carried.verdicts.retain(&clusters);
    let health = clusters
        .iter()
        .map(|c| carried.verdicts.cluster(c))
        .collect();
    (clusters, health)
}
