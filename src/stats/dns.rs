//! A cluster's endpoint-discovery counters (Envoy's `cluster.<name>.update_*` and
//! `membership_*`): written on the control side, under the lock that orders lookups and
//! publications, never by a core.

use super::{Counter, Field};

#[derive(Debug, Default)]
pub struct DnsStats {
    /// Name lookups started (one per strict_dns endpoint name per refresh).
    pub update_attempt: Counter,
    /// ... that answered (an empty answer included).
    pub update_success: Counter,
    /// ... that failed (no answer, SERVFAIL, a timeout): the name's last answer stays.
    pub update_failure: Counter,
    /// ... that answered with no address.
    pub update_empty: Counter,
    /// Refreshes after which the endpoint set was the same: nothing was published.
    pub update_no_rebuild: Counter,
    /// Times the endpoint set changed and reached every core.
    pub membership_change: Counter,
    /// Endpoints in the set the cores serve, and how many of them the health checker found
    /// healthy, as of the last publication.
    pub membership_total: Counter,
    pub membership_healthy: Counter,
}

impl DnsStats {
    pub const FIELDS: [Field<DnsStats>; 8] = [
        ("update_attempt", |c| &c.update_attempt, false),
        ("update_success", |c| &c.update_success, false),
        ("update_failure", |c| &c.update_failure, false),
        ("update_empty", |c| &c.update_empty, false),
        ("update_no_rebuild", |c| &c.update_no_rebuild, false),
        ("membership_change", |c| &c.membership_change, false),
        ("membership_total", |c| &c.membership_total, true),
        ("membership_healthy", |c| &c.membership_healthy, true),
    ];
}
