//! Pure: the two simplest pickers, plain round-robin (weights ignored) and weighted random, for
//! clusters that ask for them by name.

use fastrand::Rng;

/// Plain round-robin over this core's view of a cluster: endpoints in turn, weights ignored.
#[derive(Debug, Clone)]
pub struct RoundRobin {
    endpoints: usize,
    next: usize,
}

impl RoundRobin {
    /// Round-robin over `endpoints` endpoints, starting at `start % endpoints`, so that cores do
    /// not all send their first request to the same endpoint. `None` when `endpoints` is 0.
    pub fn new(endpoints: usize, start: usize) -> Option<Self> {
        if endpoints == 0 {
            return None;
        }
        Some(RoundRobin {
            endpoints,
            next: start % endpoints,
        })
    }

    /// The index of the next endpoint.
    #[inline]
    pub fn pick(&mut self) -> usize {
        let i = self.next;
        // A compare instead of `%`: a 64-bit division would be most of the ~1 ns pick.
        self.next += 1;
        if self.next == self.endpoints {
            self.next = 0;
        }
        i
    }
}

/// Weighted random: each pick is independent and lands on an endpoint with probability
/// weight / total. Seeded, so that tests can fix the sequence and cores can differ.
#[derive(Debug, Clone)]
pub struct Random {
    /// `cumulative[i]` is the sum of the weights of endpoints `0..=i`; empty when all weights are
    /// equal and a uniform index does.
    cumulative: Box<[u64]>,
    endpoints: usize,
    rng: Rng,
}

impl Random {
    /// Weighted random over `weights`, drawing from a PRNG seeded with `seed` (give each core its
    /// own). A weight of 0 counts as 1, as in [`super::Wrr`]. `None` when `weights` is empty.
    pub fn new(weights: &[u32], seed: u64) -> Option<Self> {
        let first = *weights.first()?;
        let cumulative = if weights.iter().all(|&w| w.max(1) == first.max(1)) {
            Box::default()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum += u64::from(w.max(1));
                    Some(*sum)
                })
                .collect()
        };
        Some(Random {
            cumulative,
            endpoints: weights.len(),
            rng: Rng::with_seed(seed),
        })
    }

    /// The index of the next endpoint: O(1) with equal weights, otherwise a binary search over
    /// the cumulative weights (8 probes over 256 endpoints).
    #[inline]
    pub fn pick(&mut self) -> usize {
        match self.cumulative.last() {
            None => self.rng.usize(..self.endpoints),
            Some(&total) => {
                let r = self.rng.u64(..total);
                self.cumulative.partition_point(|&c| c <= r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(mut pick: impl FnMut() -> usize, endpoints: usize, picks: usize) -> Vec<f64> {
        let mut counts = vec![0usize; endpoints];
        for _ in 0..picks {
            counts[pick()] += 1;
        }
        counts
            .into_iter()
            .map(|c| c as f64 / picks as f64)
            .collect()
    }

    #[test]
    fn round_robin_exact_counts() {
        let mut rr = RoundRobin::new(3, 0).unwrap();
        let seq: Vec<usize> = (0..6).map(|_| rr.pick()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        let mut rr = RoundRobin::new(7, 12).unwrap();
        assert_eq!(rr.pick(), 5);
        let mut counts = [0usize; 7];
        for _ in 0..7 * 1000 {
            counts[rr.pick()] += 1;
        }
        assert_eq!(counts, [1000; 7]);
    }

    #[test]
    fn round_robin_single_and_empty() {
        assert!(RoundRobin::new(0, 3).is_none());
        let mut rr = RoundRobin::new(1, 9).unwrap();
        assert!((0..10).all(|_| rr.pick() == 0));
    }

    #[test]
    fn random_follows_weights() {
        let mut random = Random::new(&[1, 3], 42).unwrap();
        let s = shares(|| random.pick(), 2, 100_000);
        assert!((s[0] - 0.25).abs() < 0.02, "{s:?}");
        assert!((s[1] - 0.75).abs() < 0.02, "{s:?}");

        let mut random = Random::new(&[5, 1, 0, 4], 7).unwrap();
        let s = shares(|| random.pick(), 4, 100_000);
        for (share, expected) in s
            .iter()
            .zip([5.0 / 11.0, 1.0 / 11.0, 1.0 / 11.0, 4.0 / 11.0])
        {
            assert!((share - expected).abs() < 0.02, "{s:?}");
        }
    }

    #[test]
    fn random_equal_weights_are_uniform() {
        let mut random = Random::new(&[2, 2, 2, 2], 1).unwrap();
        assert!(random.cumulative.is_empty());
        let s = shares(|| random.pick(), 4, 100_000);
        assert!(s.iter().all(|&x| (x - 0.25).abs() < 0.02), "{s:?}");
    }

    #[test]
    fn random_is_seeded() {
        let mut a = Random::new(&[1, 2, 3], 99).unwrap();
        let mut b = Random::new(&[1, 2, 3], 99).unwrap();
        let mut c = Random::new(&[1, 2, 3], 100).unwrap();
        let sa: Vec<usize> = (0..100).map(|_| a.pick()).collect();
        let sb: Vec<usize> = (0..100).map(|_| b.pick()).collect();
        let sc: Vec<usize> = (0..100).map(|_| c.pick()).collect();
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
    }

    #[test]
    fn random_single_and_empty() {
        assert!(Random::new(&[], 0).is_none());
        let mut random = Random::new(&[9], 0).unwrap();
        assert!((0..10).all(|_| random.pick() == 0));
    }
}
