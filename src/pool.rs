//! Pure: one core's idle upstream connections to one endpoint, newest first, bounded in count and
//! in idle time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Idle connections of one endpoint on one core. Generic over the connection so that it knows
/// nothing of sockets.
#[derive(Debug)]
pub struct Pool<C> {
    /// Oldest at the front, newest at the back.
    idle: RefCell<VecDeque<(C, Instant)>>,
    max_idle: Cell<usize>,
    idle_timeout: Cell<Duration>,
}

impl<C> Pool<C> {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: RefCell::new(VecDeque::new()),
            max_idle: Cell::new(max_idle),
            idle_timeout: Cell::new(idle_timeout),
        }
    }

    /// Applies new limits (a reload); surplus connections are closed at once.
    pub fn set_limits(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.idle_timeout.set(idle_timeout);
        let mut idle = self.idle.borrow_mut();
        while idle.len() > max_idle {
            idle.pop_front();
        }
    }

    /// The most recently used live connection. The newest is the one most likely still open at
    /// the upstream, and reusing it lets the old ones age out.
    pub fn checkout(&self, now: Instant) -> Option<C> {
        let mut idle = self.idle.borrow_mut();
        let timeout = self.idle_timeout.get();
        while let Some((conn, since)) = idle.pop_back() {
            if now.saturating_duration_since(since) < timeout {
                return Some(conn);
            }
            // Everything older is expired too.
            idle.clear();
        }
        None
    }

    /// Keeps `conn` for reuse; when the pool is full the oldest idle connection is dropped.
    pub fn checkin(&self, conn: C, now: Instant) {
        let max = self.max_idle.get();
        if max == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= max {
            idle.pop_front();
        }
        idle.push_back((conn, now));
    }

    /// Drops connections idle for longer than the idle timeout; returns how many.
    pub fn evict_expired(&self, now: Instant) -> usize {
        let mut idle = self.idle.borrow_mut();
        let timeout = self.idle_timeout.get();
        let before = idle.len();
        while let Some((_, since)) = idle.front() {
            if now.saturating_duration_since(*since) < timeout {
                break;
            }
            idle.pop_front();
        }
        before - idle.len()
    }

    /// Keeps only the idle connections for which `keep` is true.
    pub fn retain(&self, mut keep: impl FnMut(&mut C) -> bool) {
        self.idle.borrow_mut().retain_mut(|(conn, _)| keep(conn));
    }

    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    pub fn len(&self) -> usize {
        self.idle.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.idle.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_bounded() {
        let p = Pool::new(2, Duration::from_secs(10));
        let t = Instant::now();
        p.checkin(1, t);
        p.checkin(2, t);
        p.checkin(3, t);
        assert_eq!(p.len(), 2);
        assert_eq!(p.checkout(t), Some(3));
        assert_eq!(p.checkout(t), Some(2));
        assert_eq!(p.checkout(t), None);
    }

    #[test]
    fn expired_are_not_reused() {
        let p = Pool::new(4, Duration::from_secs(1));
        let t = Instant::now();
        p.checkin(1, t);
        p.checkin(2, t + Duration::from_millis(900));
        assert_eq!(p.evict_expired(t + Duration::from_millis(1500)), 1);
        assert_eq!(p.checkout(t + Duration::from_secs(3)), None);
        assert!(p.is_empty());
    }

    #[test]
    fn retain_drops_what_fails_the_check() {
        let p = Pool::new(4, Duration::from_secs(10));
        let t = Instant::now();
        for c in 1..=4 {
            p.checkin(c, t);
        }
        p.retain(|c| *c % 2 == 0);
        assert_eq!(
            (p.checkout(t), p.checkout(t), p.checkout(t)),
            (Some(4), Some(2), None)
        );
    }

    #[test]
    fn zero_max_disables_pooling() {
        let p = Pool::new(0, Duration::from_secs(1));
        p.checkin(1, Instant::now());
        assert!(p.is_empty());
    }
}
