//! Pure: one cluster's picker on one core, whatever its `lb_policy`: the per-core state of
//! the sequential and random pickers, or a shared, immutable hash table and a PRNG for requests
//! without a key.

use std::net::SocketAddr;
use std::sync::Arc;

use fastrand::Rng;

use super::{LeastRequest, Maglev, Random, RingHash, RoundRobin, Wrr};
use crate::config::LbPolicy;

/// A consistent-hash structure, built once per snapshot on the control side and shared by
/// every core through an `Arc` (a pick reads it, nothing writes it).
#[derive(Debug)]
pub enum Table {
    Ring(RingHash),
    Maglev(Maglev),
}

impl Table {
    /// The table of a ring_hash or maglev cluster over `endpoints` (address, weight); None for
    /// the other policies (or endpoints validation rejects: none, a table size not prime).
    pub fn build(policy: LbPolicy, endpoints: &[(SocketAddr, u32)]) -> Option<Table> {
        match policy {
            LbPolicy::RingHash {
                minimum_ring_size,
                maximum_ring_size,
            } => RingHash::with_ring_size(endpoints, minimum_ring_size, maximum_ring_size)
                .map(Table::Ring),
            LbPolicy::Maglev { table_size } => {
                Maglev::with_table_size(endpoints, table_size).map(Table::Maglev)
            }
            _ => None,
        }
    }

    #[inline]
    fn pick(&self, key: u64, admits: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Table::Ring(ring) => ring.pick(key, admits),
            Table::Maglev(maglev) => maglev.pick(key, admits),
        }
    }
}

/// One cluster's picker on one core.
#[derive(Debug, Clone)]
pub enum Picker {
    Wrr(Wrr),
    RoundRobin(RoundRobin),
    Random(Random),
    LeastRequest(LeastRequest),
    /// ring_hash or maglev: the shared table, and a PRNG for requests without a key (Envoy
    /// picks those at random; a random point of the table keeps the weights).
    Hash(Arc<Table>, Rng),
}

impl Picker {
    /// The picker of `policy` over endpoints of `weights` (non-empty, as validated). `start`
    /// places this core in the sequential pickers' cycle, `seed` seeds the random ones (give
    /// each core its own), `table` is the snapshot's table for a hashing policy. None when the
    /// endpoints are empty or a hashing policy has no table.
    pub fn new(
        policy: LbPolicy,
        weights: &[u32],
        start: usize,
        seed: u64,
        table: Option<Arc<Table>>,
    ) -> Option<Picker> {
        if weights.is_empty() {
            return None;
        }
        Some(match policy {
            LbPolicy::WeightedRoundRobin => Picker::Wrr(Wrr::new(weights, start)),
            LbPolicy::RoundRobin => Picker::RoundRobin(RoundRobin::new(weights.len(), start)?),
            LbPolicy::Random => Picker::Random(Random::new(weights, seed)?),
            LbPolicy::LeastRequest { choice_count } => Picker::LeastRequest(
                LeastRequest::with_choices(weights, seed, choice_count as usize)?,
            ),
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => {
                Picker::Hash(table?, Rng::with_seed(seed))
            }
        })
    }

    /// The next endpoint of `n`, skipping those `refused` (tried, failed, unhealthy, ejected);
    /// None when every one is refused. `key` is the request's hash for a hashing picker (None:
    /// a random point); `active(i)` is this core's requests in flight to endpoint `i`.
    ///
    /// A sequential picker moves on through its cycle past refused endpoints (so the others
    /// keep their shares), a random one draws again, a hash walks on from the key's point (so
    /// only a refused endpoint's keys move). Each falls back on a scan when that finds nothing.
    #[inline]
    pub fn pick(
        &mut self,
        n: usize,
        key: Option<u64>,
        refused: impl Fn(usize) -> bool,
        active: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        // Draws before the scan: a random picker with a refused share f misses all of them
        // with probability f^draws.
        let draws = n + 2;
        let found = match self {
            Picker::Wrr(wrr) => (0..wrr.period().max(1))
                .map(|_| wrr.pick())
                .find(|&i| !refused(i)),
            Picker::RoundRobin(rr) => (0..n).map(|_| rr.pick()).find(|&i| !refused(i)),
            Picker::Random(random) => (0..draws).map(|_| random.pick()).find(|&i| !refused(i)),
            Picker::LeastRequest(lr) => (0..draws).map(|_| lr.pick(&active)).find(|&i| !refused(i)),
            Picker::Hash(table, rng) => {
                let key = key.unwrap_or_else(|| rng.u64(..));
                table.pick(key, |i| !refused(i))
            }
        };
        found.or_else(|| (0..n).find(|&i| !refused(i)))
    }

    /// Whether this picker uses a request key.
    pub fn hashes(&self) -> bool {
        matches!(self, Picker::Hash(..))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::balance::hash_key;

    fn endpoints(n: u8) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| {
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i + 1)), 80),
                    1,
                )
            })
            .collect()
    }

    fn picker(policy: LbPolicy, n: u8, seed: u64) -> Picker {
        let eps = endpoints(n);
        let table = Table::build(policy, &eps).map(Arc::new);
        Picker::new(policy, &vec![1; n as usize], 0, seed, table).unwrap()
    }

    const ALL: [LbPolicy; 6] = [
        LbPolicy::WeightedRoundRobin,
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest { choice_count: 2 },
        LbPolicy::RingHash {
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024,
        },
        LbPolicy::Maglev { table_size: 65537 },
    ];

    #[test]
    fn every_policy_skips_refused_endpoints() {
        for policy in ALL {
            let mut p = picker(policy, 4, 3);
            for k in 0..200u64 {
                let i = p.pick(4, Some(hash_key(&k.to_le_bytes())), |i| i != 2, |_| 0);
                assert_eq!(i, Some(2), "{policy:?}");
                let i = p.pick(4, Some(k), |i| i == 1 || i == 3, |_| 0).unwrap();
                assert!(i == 0 || i == 2, "{policy:?}");
            }
            assert_eq!(p.pick(4, None, |_| true, |_| 0), None, "{policy:?}");
        }
    }

    #[test]
    fn hashing_follows_the_key_and_spreads_without_one() {
        for policy in &ALL[4..] {
            let mut p = picker(*policy, 4, 3);
            assert!(p.hashes());
            let key = hash_key(b"user-42");
            let first = p.pick(4, Some(key), |_| false, |_| 0);
            assert!((0..100).all(|_| p.pick(4, Some(key), |_| false, |_| 0) == first));
            let mut seen = [0usize; 4];
            for _ in 0..4000 {
                seen[p.pick(4, None, |_| false, |_| 0).unwrap()] += 1;
            }
            assert!(seen.iter().all(|&c| c > 700), "{policy:?}: {seen:?}");
        }
    }

    #[test]
    fn least_request_reads_active_counts() {
        let mut p = picker(LbPolicy::LeastRequest { choice_count: 2 }, 2, 1);
        assert!((0..100).all(|_| p.pick(2, None, |_| false, |i| [9, 0][i]) == Some(1)));
    }
}
