//! Passive outlier detection, per core and per endpoint: consecutive 5xx answers or gateway
//! failures eject an endpoint for `base_ejection_time` x the times it was ejected (capped),
//! never more than `max_ejection_percent` of a cluster's endpoints at once (one at least).
//! Pure: the core calls [`Outlier::observe`] with what an exchange gave.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::config::OutlierDetection;

/// What one exchange with an endpoint told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// An answer below 500.
    Success,
    /// A 5xx answer; 502, 503 and 504 are gateway failures too.
    Status(u16),
    /// No answer: the connect failed or timed out, or the connection was reset or closed.
    LocalFailure,
}

/// One endpoint's record on this core.
#[derive(Debug, Default)]
pub struct Outlier {
    consecutive_5xx: Cell<u32>,
    consecutive_gateway: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
    times: Cell<u32>,
}

impl Outlier {
    #[inline]
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.get().is_some_and(|until| now < until)
    }

    /// Counts an exchange's result. Returns the ejection time when this result ejects the
    /// endpoint; `may_eject` says whether the cluster's cap allows one more.
    pub fn observe(
        &self,
        rules: &OutlierDetection,
        seen: Observed,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let bump = |c: &Cell<u32>| c.set(c.get().saturating_add(1));
        match seen {
            Observed::Success => {
                self.consecutive_5xx.set(0);
                self.consecutive_gateway.set(0);
                return None;
            }
            Observed::Status(s) => {
                bump(&self.consecutive_5xx);
                if matches!(s, 502..=504) {
                    bump(&self.consecutive_gateway);
                } else {
                    self.consecutive_gateway.set(0);
                }
            }
            Observed::LocalFailure => {
                bump(&self.consecutive_5xx);
                bump(&self.consecutive_gateway);
            }
        }
        let tripped = self.consecutive_5xx.get() >= rules.consecutive_5xx
            || self.consecutive_gateway.get() >= rules.consecutive_gateway_failure;
        if !tripped || self.is_ejected(now) || !may_eject() {
            return None;
        }
        let times = self.times.get().saturating_add(1);
        self.times.set(times);
        let length = rules
            .base_ejection_time
            .saturating_mul(times)
            .min(rules.max_ejection_time.max(rules.base_ejection_time));
        self.ejected_until.set(Some(now + length));
        self.consecutive_5xx.set(0);
        self.consecutive_gateway.set(0);
        Some(length)
    }
}

/// Whether a cluster of `total` endpoints with `ejected` out may eject one more: within
/// `max_percent`, and always at least one.
pub fn may_eject(ejected: usize, total: usize, max_percent: u8) -> bool {
    ejected == 0 || (ejected + 1) * 100 <= usize::from(max_percent) * total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(70),
            max_ejection_percent: 10,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_longer_each_time_up_to_the_cap() {
        let o = Outlier::default();
        let r = rules();
        let t0 = Instant::now();
        assert_eq!(o.observe(&r, Observed::Status(500), t0, || true), None);
        assert_eq!(o.observe(&r, Observed::Status(500), t0, || true), None);
        let first = o.observe(&r, Observed::Status(500), t0, || true);
        assert_eq!(first, Some(Duration::from_secs(30)));
        assert!(o.is_ejected(t0 + Duration::from_secs(29)));
        assert!(!o.is_ejected(t0 + Duration::from_secs(30)));
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(o.observe(&r, Observed::LocalFailure, t1, || true), None);
        let second = o.observe(&r, Observed::Status(503), t1, || true);
        assert_eq!(
            second,
            Some(Duration::from_secs(60)),
            "gateway failures, twice"
        );
        let t2 = t1 + Duration::from_secs(61);
        o.observe(&r, Observed::LocalFailure, t2, || true);
        let third = o.observe(&r, Observed::LocalFailure, t2, || true);
        assert_eq!(third, Some(Duration::from_secs(70)), "capped");
    }

    #[test]
    fn a_success_resets_the_streak_and_the_cap_holds() {
        let o = Outlier::default();
        let r = rules();
        let t = Instant::now();
        o.observe(&r, Observed::Status(500), t, || true);
        o.observe(&r, Observed::Status(500), t, || true);
        o.observe(&r, Observed::Success, t, || true);
        assert_eq!(o.observe(&r, Observed::Status(500), t, || true), None);
        o.observe(&r, Observed::Status(500), t, || true);
        assert_eq!(
            o.observe(&r, Observed::Status(500), t, || false),
            None,
            "capped"
        );
        assert!(may_eject(0, 2, 10), "at least one");
        assert!(!may_eject(1, 2, 10));
        assert!(may_eject(1, 4, 50));
        assert!(!may_eject(2, 4, 50));
    }
}
