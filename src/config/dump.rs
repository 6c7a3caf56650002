//! The effective config as JSON for the admin `/config_dump`: every value as validation left it
//! (defaults filled in, paths resolved), certificates described by subject and expiry, never by
//! their key material.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Config, Domain, PathMatch, TlsVersion, Workers, escaped_slashes_name};

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// The config as JSON.
    pub fn dump(&self) -> Value {
        let l = &self.limits;
        json!({
            "file": self.file,
            "admin": self.admin.as_ref().map(|a| a.address.to_string()),
            "workers": match self.workers {
                Workers::Auto => json!("auto"),
                Workers::Count(n) => json!(n),
            },
            "limits": {
                "max_request_head_bytes": l.max_request_head_bytes,
                "max_headers": l.max_headers,
                "header_timeout": dur(l.header_timeout),
                "idle_timeout": dur(l.idle_timeout),
                "body_timeout": dur(l.body_timeout),
                "request_timeout": dur(l.request_timeout),
                "drain_timeout": dur(l.drain_timeout),
            },
            "listeners": self.listeners.iter().map(|lis| {
                let h = &lis.http;
                json!({
                    "name": lis.name,
                    "address": lis.address.to_string(),
                    "backlog": lis.backlog,
                    "max_connections": h.max_connections,
                    "max_request_body_bytes": h.max_request_body_bytes,
                    "normalize_path": h.path.normalize,
                    "merge_slashes": h.path.merge_slashes,
                    "path_with_escaped_slashes": escaped_slashes_name(h.path.escaped_slashes),
                    "headers_with_underscores": h.headers_with_underscores.name(),
                    "trusted_proxies": h.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "http2": lis.http2.as_ref().map(http2_options),
                    "header_edits": lis.header_edits.as_deref().map(crate::header_edit::HeaderEdits::dump),
                    "tls": lis.tls.as_ref().map(|t| json!({
                        "min_version": match t.server.min_version {
                            TlsVersion::Tls12 => "1.2",
                            TlsVersion::Tls13 => "1.3",
                        },
                        "alpn": t.server.alpn,
                        "client_cert_header": t.client_cert_header,
                        "certificates": t.server.certificates.iter().zip(&t.files).map(|(c, file)| json!({
                            "cert": file,
                            "subject": c.certificate.subject,
                            "not_after": c.certificate.not_after_text,
                            "server_names": c.server_names.iter().map(Domain::to_string).collect::<Vec<_>>(),
                            "client_auth": c.client_auth.as_ref().map(|a| format!("{:?}", a.mode).to_lowercase()),
                        })).collect::<Vec<_>>(),
                    })),
                    "virtual_hosts": lis.virtual_hosts.iter().map(|v| json!({
                        "name": v.name,
                        "domains": v.domains.iter().map(Domain::to_string).collect::<Vec<_>>(),
                        "redirect_to_https": v.redirect_to_https,
                        "include_request_attempt_count": v.include_request_attempt_count,
                        "header_edits": v.header_edits.as_deref().map(crate::header_edit::HeaderEdits::dump),
                        "routes": v.routes.iter().map(|r| with_action(r, self, json!({
                            "match": match_json(r),
                            "methods": r.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                            "client_certificate": r.client_certificate,
                            "header_edits": r.header_edits.as_deref().map(crate::header_edit::HeaderEdits::dump),
                            "cluster": self.clusters.get(r.cluster).map(|c| c.name.as_str()),
                            "max_request_body_bytes": r.max_request_body_bytes,
                            "timeout": r.timeout.map(dur),
                            "idle_timeout": r.idle_timeout.map(dur),
                            "retry_policy": r.retry_policy.as_ref().map(|p| json!({
                                "num_retries": p.num_retries,
                                "per_try_timeout": p.per_try_timeout.map(dur),
                                "retriable_status_codes": p.retriable_status_codes,
                                "max_retry_body_bytes": p.max_retry_body_bytes,
                                "retry_on": p.retry_on.iter().map(|on| {
                                    crate::config::RetryOn::ALL.iter().find(|(_, v)| v == on).map_or("?", |(n, _)| *n)
                                }).collect::<Vec<_>>(),
                            })),
                            "hash_policy": r.hash_policy.iter().map(hash_policy).collect::<Vec<_>>(),
                        }))).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
            "clusters": self.clusters.iter().map(|c| json!({
                "name": c.name,
                "lb_policy": c.lb_policy.name(),
                "lb_config": lb_config(c.lb_policy),
                "connect_timeout": dur(c.connect_timeout),
                "response_timeout": dur(c.response_timeout),
                "send_timeout": dur(c.send_timeout),
                "idle_timeout": dur(c.idle_timeout),
                "max_idle_per_core": c.max_idle_per_core,
                "protocol": c.protocol.name(),
                "panic_threshold": c.panic_threshold,
                "outlier_detection": c.outlier_detection.map(|o| json!({
                    "consecutive_5xx": o.consecutive_5xx,
                    "consecutive_gateway_failure": o.consecutive_gateway_failure,
                    "base_ejection_time": dur(o.base_ejection_time),
                    "max_ejection_time": dur(o.max_ejection_time),
                    "max_ejection_percent": o.max_ejection_percent,
                })),
                "circuit_breakers": json!({
                    "max_connections": c.circuit_breakers.max_connections,
                    "max_pending_requests": c.circuit_breakers.max_pending_requests,
                    "max_requests": c.circuit_breakers.max_requests,
                    "max_retries": c.circuit_breakers.max_retries,
                }),
                "health_check": c.health_check.as_ref().map(|h| json!({
                    "kind": match &h.kind {
                        crate::config::CheckKind::Tcp => json!({"tcp": {}}),
                        crate::config::CheckKind::Http { path, host, expected_statuses } => json!({
                            "http": {"path": path, "host": host, "expected_statuses": expected_statuses},
                        }),
                    },
                    "interval": dur(h.interval),
                    "timeout": dur(h.timeout),
                    "jitter": dur(h.jitter),
                    "healthy_threshold": h.healthy_threshold,
                    "unhealthy_threshold": h.unhealthy_threshold,
                })),
                "http2_options": (c.protocol != crate::config::UpstreamProtocol::Http1).then(|| http2_options(&c.http2)),
                "tls": c.tls.as_ref().map(|t| json!({
                    "sni": t.sni,
                    "verify": t.verify,
                    "ca": if t.ca.is_some() { "configured" } else { "system roots" },
                    "client_certificate": t.client_certificate.as_ref().map(|c| &c.subject),
                    "alpn": t.alpn,
                })),
                "type": if c.dns.is_some() { "strict_dns" } else { "static" },
                "dns": c.dns.as_ref().map(|d| json!({
                    "hosts": d.hosts.iter().map(|h| json!({
                        "address": format!("{}:{}", h.host, h.port),
                        "weight": h.weight,
                    })).collect::<Vec<_>>(),
                    "dns_refresh_rate": humantime::format_duration(d.refresh_rate).to_string(),
                    "dns_lookup_family": d.lookup_family.name(),
                    "respect_dns_ttl": d.respect_dns_ttl,
                    "dns_resolvers": d.resolvers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                })),
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.address.to_string(),
                    "weight": e.weight,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A listener's or cluster's HTTP/2 settings, with their config names.
fn http2_options(o: &crate::config::Http2Options) -> serde_json::Value {
    json!({
        "max_concurrent_streams": o.max_concurrent_streams,
        "initial_stream_window_size": o.initial_stream_window_size,
        "initial_connection_window_size": o.initial_connection_window_size,
        "max_frame_size": o.max_frame_size,
        "max_resets_per_second": o.max_resets_per_second,
        "connection_keepalive": o.keepalive.map(|(interval, timeout)| json!({
            "interval": humantime::format_duration(interval).to_string(),
            "timeout": humantime::format_duration(timeout).to_string(),
        })),
    })
}

/// The settings of a cluster's `lb_policy`, as its `*_lb_config` would give them.
fn lb_config(policy: crate::config::LbPolicy) -> serde_json::Value {
    use crate::config::LbPolicy;
    match policy {
        LbPolicy::LeastRequest { choice_count } => json!({ "choice_count": choice_count }),
        LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
        } => json!({
            "minimum_ring_size": minimum_ring_size,
            "maximum_ring_size": maximum_ring_size,
        }),
        LbPolicy::Maglev { table_size } => json!({ "table_size": table_size }),
        _ => serde_json::Value::Null,
    }
}

/// One `hash_policy` entry, in Envoy's shape.
fn hash_policy(p: &crate::config::HashPolicy) -> serde_json::Value {
    use crate::config::HashKey;
    let mut entry = match &p.key {
        HashKey::Header(name) => json!({ "header": { "header_name": name } }),
        HashKey::Cookie { name, ttl, path } => json!({
            "cookie": { "name": name, "ttl": ttl.map(|t| humantime::format_duration(t).to_string()), "path": path }
        }),
        HashKey::SourceIp => json!({ "connection_properties": { "source_ip": true } }),
    };
    if let Some(map) = entry.as_object_mut() {
        map.insert("terminal".to_owned(), json!(p.terminal));
    }
    entry
}

/// A route's path specifier, with its case sensitivity and matcher counts when not defaults.
fn match_json(r: &super::Route) -> serde_json::Value {
    let mut m = match &r.path {
        PathMatch::Prefix(p) => json!({"prefix": p}),
        PathMatch::Exact(p) => json!({"path": p}),
        PathMatch::SeparatedPrefix(p) => json!({"path_separated_prefix": p}),
        PathMatch::Regex(p) => json!({"safe_regex": {"regex": p.source()}}),
    };
    if r.rules.case_insensitive {
        m["case_sensitive"] = json!(false);
    }
    if !r.rules.headers.is_empty() {
        m["headers"] = json!(r.rules.headers.len());
    }
    if !r.rules.query_parameters.is_empty() {
        m["query_parameters"] = json!(r.rules.query_parameters.len());
    }
    m
}

/// A route's dump with its name and action added.
fn with_action(r: &super::Route, config: &Config, mut route: Value) -> Value {
    if let Some(map) = route.as_object_mut() {
        map.insert("name".to_owned(), json!(r.name));
        map.insert("action".to_owned(), action(&r.action, config));
    }
    route
}

/// A route's action with its config names (`route` extras, `redirect`, `direct_response`).
fn action(a: &crate::action::Action, config: &Config) -> Value {
    use crate::action::{Action, HostRewrite, PathRewrite, RedirectPath};
    let name = |i: usize| config.clusters.get(i).map(|c| c.name.as_str());
    let rewrite = |rw: &PathRewrite| match rw {
        PathRewrite::Prefix { with, .. } => json!({"prefix_rewrite": with}),
        PathRewrite::Regex(r) => json!({"regex_rewrite": {
            "pattern": {"regex": r.pattern}, "substitution": r.substitution,
        }}),
    };
    match a {
        Action::Forward {
            weighted,
            rewrite: rw,
        } => json!({
            "weighted_clusters": weighted.as_ref().map(|w| w.clusters.iter().map(|&(i, weight)| {
                json!({"name": name(i), "weight": weight})
            }).collect::<Vec<_>>()),
            "path_rewrite": rw.path.as_ref().map(rewrite),
            "host_rewrite_literal": match &rw.host {
                HostRewrite::Literal(h) => Some(h.as_str()),
                _ => None,
            },
            "auto_host_rewrite": rw.host == HostRewrite::Auto,
        }),
        Action::Redirect(r) => json!({"redirect": {
            "scheme_redirect": r.scheme,
            "host_redirect": r.host,
            "port_redirect": r.port,
            "path_redirect": match &r.path {
                RedirectPath::Replace(p) => Some(p.as_str()),
                _ => None,
            },
            "path_rewrite": match &r.path {
                RedirectPath::Rewrite(rw) => Some(rewrite(rw)),
                _ => None,
            },
            "strip_query": r.strip_query,
            "response_code": r.status,
        }}),
        Action::DirectResponse(d) => json!({"direct_response": {
            "status": d.status,
            "body_bytes": d.body.as_ref().map(|b| b.len()),
            "filename": d.filename,
        }}),
    }
}
