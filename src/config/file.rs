//! The config file as YAML: serde types that cannot reject a value validation can judge, and
//! the only code that knows the YAML library.

use std::fmt;

use serde::Deserialize;

// ---------------------------------------------------------------- raw (serde) types
// Anything validate() can judge (durations, addresses, numbers with ranges) is kept in a
// type serde cannot reject, so one bad value does not hide every error after it.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) admin: Option<RawAdmin>,
    pub(super) workers: Option<RawWorkers>,
    pub(super) limits: Option<RawLimits>,
    pub(super) tracing: Option<RawTracing>,
    #[serde(default)]
    pub(super) listeners: Vec<RawListener>,
    #[serde(default)]
    pub(super) clusters: Vec<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    pub(super) zipkin: RawZipkin,
    pub(super) service_name: Option<String>,
    pub(super) sample_percent: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZipkin {
    pub(super) collector: String,
    pub(super) path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequestId {
    pub(super) generate: Option<bool>,
    pub(super) preserve_external: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) address: String,
}

pub(super) enum RawWorkers {
    Int(i128),
    Text(String),
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawWorkers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or an integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Text(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_request_head_bytes: Option<i64>,
    pub(super) max_headers: Option<i64>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) drain_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) backlog: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_request_body_bytes: Option<i64>,
    pub(super) max_requests_per_connection: Option<i64>,
    pub(super) normalize_path: Option<bool>,
    pub(super) merge_slashes: Option<bool>,
    pub(super) path_with_escaped_slashes: Option<String>,
    pub(super) headers_with_underscores: Option<String>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) tls: Option<RawListenerTls>,
    pub(super) http2: Option<bool>,
    pub(super) http2_options: Option<RawHttp2Options>,
    pub(super) access_log: Option<Vec<RawAccessLog>>,
    pub(super) request_id: Option<RawRequestId>,
    pub(super) request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) request_headers_to_remove: Option<Vec<String>>,
    pub(super) response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) response_headers_to_remove: Option<Vec<String>>,
    #[serde(default)]
    pub(super) virtual_hosts: Vec<RawVirtualHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub(super) path: String,
    pub(super) format: Option<String>,
    pub(super) json_format: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp2Options {
    pub(super) max_concurrent_streams: Option<i64>,
    pub(super) initial_stream_window_size: Option<i64>,
    pub(super) initial_connection_window_size: Option<i64>,
    pub(super) max_frame_size: Option<i64>,
    pub(super) max_resets_per_second: Option<i64>,
    pub(super) connection_keepalive: Option<RawKeepalive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) http: Option<RawHttpCheck>,
    pub(super) tcp: Option<RawTcpCheck>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) healthy_threshold: Option<i64>,
    pub(super) unhealthy_threshold: Option<i64>,
    pub(super) jitter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutlierDetection {
    pub(super) consecutive_5xx: Option<i64>,
    pub(super) consecutive_gateway_failure: Option<i64>,
    pub(super) base_ejection_time: Option<String>,
    pub(super) max_ejection_time: Option<String>,
    pub(super) max_ejection_percent: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCircuitBreakers {
    pub(super) max_connections: Option<i64>,
    pub(super) max_pending_requests: Option<i64>,
    pub(super) max_requests: Option<i64>,
    pub(super) max_retries: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpCheck {
    pub(super) path: String,
    pub(super) host: Option<String>,
    pub(super) expected_statuses: Option<Vec<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcpCheck {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeepalive {
    pub(super) interval: String,
    pub(super) timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenerTls {
    #[serde(default)]
    pub(super) certificates: Vec<RawCertificate>,
    pub(super) min_version: Option<String>,
    pub(super) alpn: Option<Vec<String>>,
    pub(super) client_auth: Option<RawClientAuth>,
    pub(super) client_cert_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: String,
    pub(super) key: String,
    #[serde(default)]
    pub(super) server_names: Vec<String>,
    pub(super) client_auth: Option<RawClientAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientAuth {
    pub(super) ca: String,
    pub(super) mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub(super) sni: Option<String>,
    pub(super) ca: Option<String>,
    pub(super) verify: Option<bool>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
    pub(super) alpn: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVirtualHost {
    pub(super) name: String,
    #[serde(default)]
    pub(super) domains: Vec<String>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) redirect_to_https: Option<bool>,
    pub(super) include_request_attempt_count: Option<bool>,
    pub(super) request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) request_headers_to_remove: Option<Vec<String>>,
    pub(super) response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) response_headers_to_remove: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<String>,
    #[serde(rename = "match")]
    pub(super) matcher: RawMatch,
    pub(super) route: Option<RawRouteAction>,
    pub(super) redirect: Option<RawRedirect>,
    pub(super) direct_response: Option<RawDirectResponse>,
    pub(super) request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) request_headers_to_remove: Option<Vec<String>>,
    pub(super) response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub(super) response_headers_to_remove: Option<Vec<String>>,
}

/// Envoy's HeaderValueOption: one header a level adds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderValueOption {
    pub(super) header: Option<RawHeaderValue>,
    pub(super) append_action: Option<String>,
    pub(super) append: Option<bool>,
    pub(super) keep_empty_value: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderValue {
    pub(super) key: String,
    #[serde(default)]
    pub(super) value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) prefix: Option<String>,
    pub(super) path: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) tls_context: Option<RawTlsContext>,
    pub(super) safe_regex: Option<RawRegexMatcher>,
    pub(super) path_separated_prefix: Option<String>,
    pub(super) case_sensitive: Option<bool>,
    pub(super) headers: Option<Vec<RawHeaderMatcher>>,
    pub(super) query_parameters: Option<Vec<RawQueryParameterMatcher>>,
}

/// Envoy's RegexMatcher (`google_re2: {}` is accepted and ignored: the engine is regex).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegexMatcher {
    pub(super) regex: String,
    #[serde(rename = "google_re2")]
    pub(super) _google_re2: Option<serde::de::IgnoredAny>,
}

/// Envoy's StringMatcher.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStringMatcher {
    pub(super) exact: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) suffix: Option<String>,
    pub(super) contains: Option<String>,
    pub(super) safe_regex: Option<RawRegexMatcher>,
    pub(super) ignore_case: Option<bool>,
}

/// Envoy's HeaderMatcher, with its older direct forms (`exact_match`, ...).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderMatcher {
    pub(super) name: String,
    pub(super) string_match: Option<RawStringMatcher>,
    pub(super) present_match: Option<bool>,
    pub(super) range_match: Option<RawRange>,
    pub(super) exact_match: Option<String>,
    pub(super) prefix_match: Option<String>,
    pub(super) suffix_match: Option<String>,
    pub(super) contains_match: Option<String>,
    pub(super) safe_regex_match: Option<RawRegexMatcher>,
    pub(super) invert_match: Option<bool>,
    pub(super) treat_missing_header_as_empty: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRange {
    pub(super) start: i64,
    pub(super) end: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueryParameterMatcher {
    pub(super) name: String,
    pub(super) string_match: Option<RawStringMatcher>,
    pub(super) present_match: Option<bool>,
}

/// Envoy's route match on the connection's client certificate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsContext {
    pub(super) presented: Option<bool>,
    pub(super) validated: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteAction {
    pub(super) cluster: Option<String>,
    pub(super) max_request_body_bytes: Option<i64>,
    pub(super) timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) retry_policy: Option<RawRetryPolicy>,
    pub(super) hash_policy: Option<Vec<RawHashPolicy>>,
    pub(super) weighted_clusters: Option<RawWeightedClusters>,
    pub(super) prefix_rewrite: Option<String>,
    pub(super) regex_rewrite: Option<RawRegexRewrite>,
    pub(super) host_rewrite_literal: Option<String>,
    pub(super) auto_host_rewrite: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeightedClusters {
    #[serde(default)]
    pub(super) clusters: Vec<RawClusterWeight>,
    pub(super) total_weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClusterWeight {
    pub(super) name: String,
    pub(super) weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegexRewrite {
    pub(super) pattern: RawRegex,
    pub(super) substitution: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegex {
    pub(super) regex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub(super) scheme_redirect: Option<String>,
    pub(super) https_redirect: Option<bool>,
    pub(super) host_redirect: Option<String>,
    pub(super) port_redirect: Option<i64>,
    pub(super) path_redirect: Option<String>,
    pub(super) prefix_rewrite: Option<String>,
    pub(super) regex_rewrite: Option<RawRegexRewrite>,
    pub(super) strip_query: Option<bool>,
    pub(super) response_code: Option<RawScalar>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectResponse {
    pub(super) status: Option<i64>,
    pub(super) body: Option<RawDataSource>,
}

/// Envoy's DataSource, the kinds the gateway reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataSource {
    pub(super) inline_string: Option<String>,
    pub(super) filename: Option<String>,
}

/// A value that may be written as a number or a name (e.g. `response_code: 302` or `FOUND`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawScalar {
    Int(i64),
    Text(String),
}

/// Envoy's route `hash_policy` entry: one of `header`, `cookie`, `connection_properties`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashPolicy {
    pub(super) header: Option<RawHashHeader>,
    pub(super) cookie: Option<RawHashCookie>,
    pub(super) connection_properties: Option<RawConnectionProperties>,
    pub(super) terminal: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashHeader {
    pub(super) header_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashCookie {
    pub(super) name: String,
    pub(super) ttl: Option<String>,
    pub(super) path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnectionProperties {
    pub(super) source_ip: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeastRequestLbConfig {
    pub(super) choice_count: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRingHashLbConfig {
    pub(super) minimum_ring_size: Option<i64>,
    pub(super) maximum_ring_size: Option<i64>,
    pub(super) hash_function: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaglevLbConfig {
    pub(super) table_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetryPolicy {
    #[serde(default)]
    pub(super) retry_on: Vec<String>,
    pub(super) num_retries: Option<i64>,
    pub(super) per_try_timeout: Option<String>,
    pub(super) retriable_status_codes: Option<Vec<i64>>,
    pub(super) retry_host_predicate: Option<Vec<String>>,
    pub(super) max_retry_body_bytes: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetryBudget {
    pub(super) budget_percent: Option<f64>,
    pub(super) min_retry_concurrency: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: String,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) send_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_idle_per_core: Option<i64>,
    pub(super) lb_policy: Option<String>,
    pub(super) least_request_lb_config: Option<RawLeastRequestLbConfig>,
    pub(super) ring_hash_lb_config: Option<RawRingHashLbConfig>,
    pub(super) maglev_lb_config: Option<RawMaglevLbConfig>,
    pub(super) tls: Option<RawUpstreamTls>,
    pub(super) protocol: Option<String>,
    pub(super) http2_options: Option<RawHttp2Options>,
    pub(super) health_check: Option<RawHealthCheck>,
    pub(super) panic_threshold: Option<i64>,
    pub(super) circuit_breakers: Option<RawCircuitBreakers>,
    pub(super) outlier_detection: Option<RawOutlierDetection>,
    pub(super) retry_budget: Option<RawRetryBudget>,
    #[serde(default)]
    pub(super) endpoints: Vec<RawEndpoint>,
    /// `static` (the default) or `strict_dns`.
    #[serde(rename = "type")]
    pub(super) cluster_type: Option<String>,
    pub(super) dns_refresh_rate: Option<String>,
    pub(super) dns_lookup_family: Option<String>,
    pub(super) respect_dns_ttl: Option<bool>,
    pub(super) dns_resolvers: Option<Vec<RawDnsResolver>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsResolver {
    pub(super) address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) address: String,
    pub(super) weight: Option<i64>,
}

/// A list of routes parsed alone (config/route_items.rs): None on any error, and the section
/// is parsed whole for the error's path and reason.
pub(super) fn parse_routes(text: &str) -> Option<Vec<RawRoute>> {
    serde_yaml::from_str(text).ok()
}

/// Returns (field path, reason). With yaml_reason, the only code that knows the YAML library.
///
/// One typed pass over the first document; an untyped pass only when that pass fails or
/// finds nothing, to word an empty file or a non-mapping top level in one clear line (serde
/// would accept an empty file as "all defaults"), and a check that no second document
/// follows. Parsing the file twice on every load took ~45% of a 10,000-route reload.
pub(super) fn parse(text: &str) -> Result<RawConfig, (String, String)> {
    let mut documents = serde_yaml::Deserializer::from_str(text);
    let Some(first) = documents.next() else {
        return Err(shape(text).unwrap_or_else(|| (String::new(), EMPTY.to_owned())));
    };
    match serde_path_to_error::deserialize::<_, RawConfig>(first) {
        Ok(raw) => {
            let more = documents.next().is_some();
            if !(more || raw.is_blank()) {
                return Ok(raw);
            }
            // Words an empty file, or a second document, as one clear line.
            match shape(text) {
                Some(err) => Err(err),
                None if more => Err((
                    String::new(),
                    "the file holds more than one YAML document".to_owned(),
                )),
                None => Ok(raw),
            }
        }
        Err(e) => {
            if let Some(err) = shape(text) {
                return Err(err);
            }
            let mut segments: Vec<String> = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            for seg in e.path().iter() {
                let is_seq = matches!(seg, serde_path_to_error::Segment::Seq { .. });
                let sep = if segments.is_empty() || is_seq {
                    ""
                } else {
                    "."
                };
                segments.push(format!("{sep}{seg}"));
                prefixes.push(segments.concat());
            }
            let reason = yaml_reason(e.inner(), &prefixes);
            // An unknown key is reported at the mapping holding it: the key itself is not a
            // valid path, and the reason names it anyway.
            if reason.starts_with("unknown field `") {
                segments.pop();
            }
            Err((segments.concat(), reason))
        }
    }
}

const EMPTY: &str = "the file is empty; expected a mapping with `listeners` and `clusters`";

/// The error for a file whose top level is not one mapping (empty, a list, a scalar, several
/// documents, or not YAML at all), from an untyped pass; None when it is one mapping.
fn shape(text: &str) -> Option<(String, String)> {
    let found = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Mapping(_)) => return None,
        Ok(serde_yaml::Value::Null) => return Some((String::new(), EMPTY.to_owned())),
        Ok(serde_yaml::Value::Sequence(_)) => "a list",
        Ok(serde_yaml::Value::Tagged(_)) => "a tagged value",
        Ok(_) => "a scalar",
        Err(e) => return Some((String::new(), yaml_reason(&e, &[]))),
    };
    let why = format!("the top level must be a mapping (`key: value` lines), found {found}");
    Some((String::new(), why))
}

impl RawConfig {
    /// Nothing set at all (an empty mapping, or a document that is only `~`).
    pub(super) fn is_blank(&self) -> bool {
        self.admin.is_none()
            && self.workers.is_none()
            && self.limits.is_none()
            && self.tracing.is_none()
            && self.listeners.is_empty()
            && self.clusters.is_empty()
    }
}

/// serde_yaml's message minus its own path prefix, with the position as "(line L, column C)".
fn yaml_reason(e: &serde_yaml::Error, path_prefixes: &[String]) -> String {
    let mut msg = e.to_string();
    for p in path_prefixes.iter().rev() {
        if let Some(rest) = msg.strip_prefix(&format!("{p}: ")) {
            msg = rest.to_owned();
            break;
        }
    }
    if let Some(loc) = e.location() {
        let (line, column) = (loc.line(), loc.column());
        msg = msg.replace(&format!(" at line {line} column {column}"), "");
        msg = format!("{msg} (line {line}, column {column})");
    }
    msg
}
