//! Pure: least-request by the power of two choices: of two endpoints drawn at random, the one
//! with fewer requests in flight on this core (per unit of weight when weights differ).

use fastrand::Rng;

/// Power-of-two-choices least-request over one cluster on one core.
///
/// Two choices instead of a scan of every endpoint: O(1) whatever the cluster's size, and, as
/// Mitzenmacher showed, nearly all of the benefit of the full scan without its herd (every core
/// sending to the same least-loaded endpoint at once).
#[derive(Debug, Clone)]
pub struct LeastRequest {
    /// Each endpoint's weight, 0 read as 1.
    weights: Box<[u32]>,
    /// All weights are equal: compare in-flight counts alone (Envoy's unweighted mode).
    equal: bool,
    /// Candidates a pick draws (Envoy's `choice_count`); 2 unless built
    /// [`with_choices`](Self::with_choices).
    choices: usize,
    rng: Rng,
}

impl LeastRequest {
    /// Least-request over `weights`, drawing candidates from a PRNG seeded with `seed` (give each
    /// core its own). A weight of 0 counts as 1, as in [`super::Wrr`]. `None` when `weights` is
    /// empty.
    pub fn new(weights: &[u32], seed: u64) -> Option<Self> {
        let weights: Box<[u32]> = weights.iter().map(|&w| w.max(1)).collect();
        let first = *weights.first()?;
        Some(LeastRequest {
            equal: weights.iter().all(|&w| w == first),
            weights,
            choices: 2,
            rng: Rng::with_seed(seed),
        })
    }

    /// Like [`new`](Self::new), drawing `choices` candidates a pick (at least 2). Beyond two
    /// they are drawn with repetition, as Envoy draws them.
    pub fn with_choices(weights: &[u32], seed: u64, choices: usize) -> Option<Self> {
        let mut picker = Self::new(weights, seed)?;
        picker.choices = choices.max(2);
        Some(picker)
    }

    /// Whether `b` (with `load_b` in flight) is lighter than `a` (with `load_a`).
    #[inline]
    fn lighter(&self, b: usize, load_b: u32, a: usize, load_a: u32) -> bool {
        if self.equal {
            load_b < load_a
        } else {
            (u64::from(load_b) + 1) * u64::from(self.weights[a])
                < (u64::from(load_a) + 1) * u64::from(self.weights[b])
        }
    }

    /// The index of the next endpoint, given `active(i)`, the requests in flight to endpoint `i`
    /// from this core (indices are those of the weights this picker was built from).
    ///
    /// Draws two distinct endpoints uniformly at random and keeps the one with fewer in flight
    /// or, when weights differ, the lower `(active + 1) / weight`; ties keep the first drawn.
    /// Envoy draws with repetition; distinct draws keep a two-endpoint cluster from comparing an
    /// endpoint with itself on half of its picks. The `+ 1` is Envoy's too: at idle
    /// `active / weight` is 0 for everyone and would ignore the weights. Compared by
    /// cross-multiplication in u64: exact, and no division on the path (the products stay below
    /// 2^64 for any u32 counts and weights).
    #[inline]
    pub fn pick(&mut self, active: impl Fn(usize) -> u32) -> usize {
        let n = self.weights.len();
        if n < 2 {
            return 0;
        }
        let a = self.rng.usize(..n);
        // Draw from the other n - 1 and step over `a`: distinct, still uniform.
        let mut b = self.rng.usize(..n - 1);
        if b >= a {
            b += 1;
        }
        let (load_a, load_b) = (active(a), active(b));
        let (mut best, mut best_load) = if self.lighter(b, load_b, a, load_a) {
            (b, load_b)
        } else {
            (a, load_a)
        };
        for _ in 2..self.choices {
            let c = self.rng.usize(..n);
            let load_c = active(c);
            if self.lighter(c, load_c, best, best_load) {
                (best, best_load) = (c, load_c);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_single() {
        assert!(LeastRequest::new(&[], 1).is_none());
        let mut lr = LeastRequest::new(&[3], 1).unwrap();
        assert!((0..10).all(|_| lr.pick(|_| 5) == 0));
    }

    #[test]
    fn equal_weights_idle_is_uniform() {
        let mut lr = LeastRequest::new(&[1; 4], 3).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..100_000 {
            counts[lr.pick(|_| 0)] += 1;
        }
        for c in counts {
            assert!((c as f64 / 100_000.0 - 0.25).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn prefers_the_lightly_loaded() {
        // Half of ten endpoints busy: a busy one wins only when both candidates are busy,
        // 5/10 * 4/9 = 22% of picks.
        let active = [100u32, 100, 100, 100, 100, 0, 0, 0, 0, 0];
        let mut lr = LeastRequest::new(&[1; 10], 11).unwrap();
        let busy = (0..100_000)
            .filter(|_| active[lr.pick(|i| active[i])] > 0)
            .count();
        assert!((busy as f64 / 100_000.0 - 0.2222).abs() < 0.02, "{busy}");

        // One idle endpoint among loaded ones wins whenever it is drawn: 2/n of picks.
        let active = [7u32, 7, 0, 7, 7];
        let mut lr = LeastRequest::new(&[1; 5], 12).unwrap();
        let idle = (0..100_000).filter(|_| lr.pick(|i| active[i]) == 2).count();
        assert!((idle as f64 / 100_000.0 - 0.4).abs() < 0.02, "{idle}");
    }

    #[test]
    fn weights_scale_the_load() {
        // Same in flight everywhere: the weight-4 endpoint has the lowest (active+1)/weight and
        // wins whenever it is drawn, 2/3 of picks.
        let mut lr = LeastRequest::new(&[1, 1, 4], 5).unwrap();
        let heavy = (0..100_000).filter(|_| lr.pick(|_| 2) == 2).count();
        assert!((heavy as f64 / 100_000.0 - 0.6667).abs() < 0.02, "{heavy}");
        // 8 in flight on weight 4 weigh less than 3 on weight 1: (8+1)/4 < (3+1)/1.
        let mut lr = LeastRequest::new(&[4, 1], 5).unwrap();
        assert!((0..100).all(|_| lr.pick(|i| [8, 3][i]) == 0));
    }

    /// A steady load of `in_flight` requests with equal latencies: every pick adds a request,
    /// and a random one of those in flight completes. Least-request then keeps each endpoint's
    /// (active + 1) / weight level, so its share of the picks follows its weight.
    #[test]
    fn weights_honoured_under_steady_load() {
        let in_flight = 400;
        let weights = [1u32, 3];
        let mut lr = LeastRequest::new(&weights, 2024).unwrap();
        let mut completions = Rng::with_seed(7);
        let mut active = [0u32; 2];
        let mut picks = [0usize; 2];
        for round in 0..120_000 {
            let i = lr.pick(|i| active[i]);
            active[i] += 1;
            if round >= 20_000 {
                picks[i] += 1;
            }
            let total = active[0] + active[1];
            if total > in_flight {
                let done = if completions.u32(..total) < active[0] {
                    0
                } else {
                    1
                };
                active[done] -= 1;
            }
        }
        let share = picks[0] as f64 / 100_000.0;
        assert!((share - 0.25).abs() < 0.02, "{picks:?}");
    }

    #[test]
    fn more_choices_find_the_idle_endpoint_more_often() {
        // One idle endpoint among ten: two (distinct) choices find it 2/10 of the time, eight
        // choices 1 - 8/10 * (9/10)^6 = 57%.
        let active = [5u32, 5, 5, 5, 5, 5, 5, 0, 5, 5];
        let share = |choices| {
            let mut lr = LeastRequest::with_choices(&[1; 10], 9, choices).unwrap();
            (0..100_000).filter(|_| lr.pick(|i| active[i]) == 7).count() as f64 / 100_000.0
        };
        let (two, eight) = (share(2), share(8));
        assert!((two - 0.2).abs() < 0.02, "{two}");
        assert!((eight - 0.575).abs() < 0.02, "{eight}");
    }

    #[test]
    fn seeded() {
        let active = [3u32, 1, 4, 1, 5, 9, 2, 6];
        let run = |seed| {
            let mut lr = LeastRequest::new(&[1, 2, 1, 2, 1, 2, 1, 2], seed).unwrap();
            (0..100).map(|_| lr.pick(|i| active[i])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
