//! Pure: consistent hashing, so that requests with the same key reach the same endpoint on every
//! core and in every process, and an endpoint that leaves or is excluded moves only its own keys.
//! [`RingHash`] is Envoy's ring_hash (ketama), [`Maglev`] Google's lookup table weighted as Envoy
//! weights it; both hash endpoints with xxHash64 of their address string, as Envoy does.

use std::fmt;
use std::net::SocketAddr;

/// Most distinct endpoints one pick asks `admits` about before it gives up. Sixteen keeps the
/// list of refused endpoints on the stack (64 bytes) and its linear scan to a few nanoseconds,
/// and giving up is rare: with half of the weight excluded, about one pick in 2^16 = 65,536.
/// With at most 16 endpoints every one is asked, so a pick fails only when none is admitted.
const MAX_ATTEMPTS: usize = 16;

/// Hash of a request key (a header value, a cookie, the client address bytes) for
/// [`RingHash::pick`] and [`Maglev::pick`]: xxHash64 with seed 0, Envoy's hash, so a key lands on
/// the same point on every core, in every process and across restarts.
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// Envoy's ring_hash: every endpoint owns points on a u64 ring in proportion to its weight, and a
/// key belongs to the first point at or after its hash, wrapping past the largest.
///
/// Built once from the endpoint set and then immutable: [`pick`](Self::pick) takes `&self`, so
/// one ring can be shared by every core. A 1,024-point ring (the default for up to 1,024 equal
/// endpoints) takes 12 KiB.
#[derive(Clone)]
pub struct RingHash {
    /// Point positions, ascending. Kept apart from `owners` so that the binary search touches only
    /// these 8-byte hashes: a 1,024-point ring's fit in 8 KiB of L1.
    hashes: Box<[u64]>,
    /// `owners[i]` is the caller's index of the endpoint that owns `hashes[i]`.
    owners: Box<[u32]>,
    /// How many endpoints own at least one point: a pick stops asking once it has refused them all.
    endpoints: usize,
}

impl RingHash {
    /// Envoy's default `minimum_ring_size`.
    pub const MINIMUM_RING_SIZE: u64 = 1024;
    /// Envoy's default and largest `maximum_ring_size`: 8,388,608 points, 96 MiB of ring.
    pub const MAXIMUM_RING_SIZE: u64 = 8 * 1024 * 1024;

    /// A ring over `endpoints` (address, weight) with Envoy's default sizes. `None` when
    /// `endpoints` is empty (or longer than `u32::MAX`). See [`with_ring_size`](Self::with_ring_size).
    pub fn new(endpoints: &[(SocketAddr, u32)]) -> Option<Self> {
        Self::with_ring_size(endpoints, Self::MINIMUM_RING_SIZE, Self::MAXIMUM_RING_SIZE)
    }

    /// A ring over `endpoints` (address, weight) of at least `minimum` points, grown until the
    /// lightest endpoint owns a whole number of them, and capped at `maximum`. As in Envoy,
    /// `maximum` is clamped to `1..=MAXIMUM_RING_SIZE` and `minimum` to `1..=maximum`.
    ///
    /// The ring depends only on the set of (address, weight) pairs, not on their order: endpoints
    /// are laid out in address order, and the point of replica `i` of an endpoint is
    /// `hash_key("{address}_{i}")`, as in Envoy. A weight of 0 counts as 1 (the config rejects it;
    /// [`super::Wrr`] reads it the same way). Under the cap an endpoint can own no point at all
    /// (weights 1 and 10^9 with the default cap) and is then never picked, as in Envoy. Duplicate
    /// addresses share the same points. `None` when `endpoints` is empty (or longer than
    /// `u32::MAX`). Building costs ~40 ns a point: ~40 µs for the default ring.
    pub fn with_ring_size(
        endpoints: &[(SocketAddr, u32)],
        minimum: u64,
        maximum: u64,
    ) -> Option<Self> {
        let order = address_order(endpoints)?;
        let maximum = maximum.clamp(1, Self::MAXIMUM_RING_SIZE);
        let minimum = minimum.clamp(1, maximum);
        let weight = |i: usize| u128::from(endpoints[i].1.max(1));
        let total: u128 = (0..endpoints.len()).map(weight).sum();
        let lightest: u128 = (0..endpoints.len()).map(weight).min()?;
        // Envoy's scale, in exact integers instead of doubles: the lightest endpoint gets
        // `whole = ceil(minimum * lightest / total)` points, everyone else `whole * weight /
        // lightest`, unless that ring exceeds `maximum`, which then is shared out by weight.
        let whole = (u128::from(minimum) * lightest).div_ceil(total);
        let (numerator, denominator) = if whole * total > u128::from(maximum) * lightest {
            (u128::from(maximum), total)
        } else {
            (whole, lightest)
        };
        let size = (numerator * total).div_ceil(denominator);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(usize::try_from(size).ok()?);
        let mut key = String::with_capacity(64);
        let mut replica_digits = itoa::Buffer::new();
        // Running sums, as in Envoy, so that fractional shares add up to whole points overall.
        let mut cumulative_weight: u128 = 0;
        let mut placed: u128 = 0;
        for (rank, &index) in order.iter().enumerate() {
            cumulative_weight += weight(index);
            let target = (numerator * cumulative_weight).div_ceil(denominator);
            key.clear();
            key.push_str(&endpoints[index].0.to_string());
            key.push('_');
            let prefix = key.len();
            let mut replica: u64 = 0;
            while placed < target {
                key.truncate(prefix);
                key.push_str(replica_digits.format(replica));
                points.push((xxh64(key.as_bytes(), 0), rank as u32));
                replica += 1;
                placed += 1;
            }
        }
        // Sorting by (hash, address rank) orders even colliding points the same in every build.
        points.sort_unstable();
        let hashes = points.iter().map(|&(hash, _)| hash).collect();
        let owners: Box<[u32]> = points
            .iter()
            .map(|&(_, rank)| order[rank as usize] as u32)
            .collect();
        let endpoints = distinct(&owners, endpoints.len());
        Some(RingHash {
            hashes,
            owners,
            endpoints,
        })
    }

    /// The endpoint index for a key hashed with [`hash_key`]: the owner of the first point at or
    /// after `key_hash`. When `admits` refuses that endpoint (unhealthy, ejected, already tried),
    /// the walk goes on along the ring to the next distinct endpoint, so only the refused
    /// endpoint's keys move, each to its ring successor. At most 16 distinct endpoints are asked;
    /// `None` when none of those is admitted. Costs one binary search (~10 probes over 1,024
    /// points) when the first endpoint is admitted; refusals cost a step per point walked.
    #[inline]
    pub fn pick(&self, key_hash: u64, admits: impl Fn(usize) -> bool) -> Option<usize> {
        let first = self.hashes.partition_point(|&point| point < key_hash);
        let first = if first == self.hashes.len() { 0 } else { first };
        walk(&self.owners, first, self.endpoints, admits)
    }

    /// Number of points on the ring.
    pub fn points(&self) -> usize {
        self.hashes.len()
    }
}

impl fmt::Debug for RingHash {
    /// Sizes only: a ring can hold 8 million points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHash")
            .field("points", &self.hashes.len())
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// Google's Maglev: a lookup table of prime size in which each endpoint fills slots along its own
/// permutation, in turns weighted as Envoy weights them; a key belongs to `table[key % size]`.
///
/// Against [`RingHash`]: a pick is O(1) (one division and one load, no search) and the shares
/// match the weights to within a slot or so (65,537 slots against the ring's ~1,024 points),
/// for slightly more disruption when the set changes. Immutable after it is built,
/// [`pick`](Self::pick) takes `&self`: one table can be shared by every core. The default table
/// takes 256 KiB.
#[derive(Clone)]
pub struct Maglev {
    /// `table[slot]` is the caller's index of the endpoint that owns `slot`.
    table: Box<[u32]>,
    /// How many endpoints own at least one slot: a pick stops asking once it has refused them all.
    endpoints: usize,
}

impl Maglev {
    /// Envoy's default table size, a prime: ~650 slots an endpoint at 100 endpoints, which the
    /// Maglev paper finds enough (M > 100·N) to keep shares within a few percent of the weights.
    pub const TABLE_SIZE: u64 = 65_537;
    /// Envoy's largest table size, a prime: 19 MiB of table.
    pub const MAXIMUM_TABLE_SIZE: u64 = 5_000_011;

    /// A table of the default size over `endpoints` (address, weight). See
    /// [`with_table_size`](Self::with_table_size).
    pub fn new(endpoints: &[(SocketAddr, u32)]) -> Option<Self> {
        Self::with_table_size(endpoints, Self::TABLE_SIZE)
    }

    /// A table of `table_size` slots over `endpoints` (address, weight).
    ///
    /// The table depends only on the set of (address, weight) pairs, not on their order:
    /// endpoints fill in address order, each from slot `xxh64(address, 0) % size` in steps of
    /// `xxh64(address, 1) % (size - 1) + 1`, as in Envoy. A weight of 0 counts as 1. Every
    /// endpoint owns at least one slot. `None` when `endpoints` is empty, when `table_size` is
    /// not a prime (the permutations would not cover the table), exceeds `MAXIMUM_TABLE_SIZE`
    /// or is smaller than the number of endpoints. Building costs ~2 ms for the default table.
    pub fn with_table_size(endpoints: &[(SocketAddr, u32)], table_size: u64) -> Option<Self> {
        if table_size > Self::MAXIMUM_TABLE_SIZE
            || !is_prime(table_size)
            || (endpoints.len() as u64) > table_size
        {
            return None;
        }
        let order = address_order(endpoints)?;
        let size = usize::try_from(table_size).ok()?;
        let mut entries: Vec<Filler> = order
            .iter()
            .map(|&index| {
                let (address, weight) = endpoints[index];
                let address = address.to_string();
                Filler {
                    owner: index as u32,
                    slot: (xxh64(address.as_bytes(), 0) % table_size) as usize,
                    skip: (xxh64(address.as_bytes(), 1) % (table_size - 1) + 1) as usize,
                    weight: u64::from(weight.max(1)),
                    turn: 0,
                }
            })
            .collect();
        let heaviest = entries.iter().map(|e| e.weight).max()?;
        let mut table = vec![EMPTY; size].into_boxed_slice();
        let mut filled = 0;
        // Envoy's weighting: the heaviest endpoint fills a slot in every round, one of a third of
        // its weight in every third round. The heaviest fills each round, so this ends within
        // `size` rounds; `round * weight` stays below 5e6 * 2^32 < 2^64.
        let mut round: u64 = 1;
        while filled < size {
            for entry in entries.iter_mut() {
                if filled == size {
                    break;
                }
                if round * entry.weight < entry.turn {
                    continue;
                }
                entry.turn += heaviest;
                // The permutation visits every slot once in `size` steps (size is prime and
                // 0 < skip < size) and the table is not full, so an empty slot comes.
                for _ in 0..size {
                    let slot = entry.slot;
                    entry.slot += entry.skip;
                    if entry.slot >= size {
                        entry.slot -= size;
                    }
                    if table[slot] == EMPTY {
                        table[slot] = entry.owner;
                        filled += 1;
                        break;
                    }
                }
            }
            round += 1;
        }
        let endpoints = distinct(&table, endpoints.len());
        Some(Maglev { table, endpoints })
    }

    /// The endpoint index for a key hashed with [`hash_key`]: the owner of slot
    /// `key_hash % size`. When `admits` refuses that endpoint (unhealthy, ejected, already
    /// tried), the walk goes on to the following slots until a slot of another, admitted
    /// endpoint, so only the refused endpoint's keys move, spread over the others by weight. At
    /// most 16 distinct endpoints are asked; `None` when none of those is admitted. Costs one
    /// 64-bit division and one load when the first endpoint is admitted.
    #[inline]
    pub fn pick(&self, key_hash: u64, admits: impl Fn(usize) -> bool) -> Option<usize> {
        let slot = (key_hash % self.table.len() as u64) as usize;
        walk(&self.table, slot, self.endpoints, admits)
    }

    /// Number of slots in the table.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }
}

impl fmt::Debug for Maglev {
    /// Sizes only: a table can hold 5 million slots.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("table_size", &self.table.len())
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// A Maglev slot no endpoint has filled yet (the build fills every slot).
const EMPTY: u32 = u32::MAX;

/// One endpoint while a Maglev table is filled.
struct Filler {
    owner: u32,
    /// The next slot of its permutation.
    slot: usize,
    skip: usize,
    weight: u64,
    /// Fills a slot in a round once `round * weight` reaches this.
    turn: u64,
}

/// The caller's indices in address order (ties by weight), so that the structures built from them
/// do not depend on the order the caller listed the endpoints in. `None` when there are none or
/// too many for a u32 index.
fn address_order(endpoints: &[(SocketAddr, u32)]) -> Option<Vec<usize>> {
    if endpoints.is_empty() || u32::try_from(endpoints.len()).is_err() {
        return None;
    }
    let mut order: Vec<usize> = (0..endpoints.len()).collect();
    order.sort_by_key(|&i| endpoints[i]);
    Some(order)
}

/// How many of `count` endpoints own at least one entry of `owners`.
fn distinct(owners: &[u32], count: usize) -> usize {
    let mut seen = vec![false; count];
    let mut n = 0;
    for &owner in owners {
        if let Some(s) = seen.get_mut(owner as usize)
            && !*s
        {
            *s = true;
            n += 1;
        }
    }
    n
}

/// From `start`, the first owner that `admits` accepts, going forward (wrapping) through
/// `owners` and skipping the entries of endpoints already refused. Gives up after refusing
/// `min(endpoints, MAX_ATTEMPTS)` distinct endpoints or one full lap.
#[inline]
fn walk(
    owners: &[u32],
    start: usize,
    endpoints: usize,
    admits: impl Fn(usize) -> bool,
) -> Option<usize> {
    let first = *owners.get(start)?;
    if admits(first as usize) {
        return Some(first as usize);
    }
    walk_on(owners, start, first, endpoints.min(MAX_ATTEMPTS), admits)
}

/// The refusal path of [`walk`], kept out of line so that the common pick stays small.
#[inline(never)]
fn walk_on(
    owners: &[u32],
    start: usize,
    first: u32,
    budget: usize,
    admits: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut refused = [first; MAX_ATTEMPTS];
    let mut count = 1;
    let mut at = start;
    for _ in 1..owners.len() {
        if count >= budget {
            return None;
        }
        at += 1;
        if at == owners.len() {
            at = 0;
        }
        let owner = owners[at];
        if refused[..count].contains(&owner) {
            continue;
        }
        if admits(owner as usize) {
            return Some(owner as usize);
        }
        refused[count] = owner;
        count += 1;
    }
    None
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// xxHash64 (XXH64) of `bytes` with `seed`: the hash Envoy uses for its rings, Maglev tables
/// and hash policies. ~10 ns for a 20-byte key.
#[inline]
fn xxh64(bytes: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, seed)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const KEYS: usize = 100_000;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
            8080,
        )
    }

    fn equal(n: usize) -> Vec<(SocketAddr, u32)> {
        (0..n).map(|i| (addr(i), 1)).collect()
    }

    fn key(i: usize) -> u64 {
        hash_key(format!("session-{i}").as_bytes())
    }

    /// Both pickers behind one signature, so that every property is checked on both.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Ring,
        Maglev,
    }

    enum Built {
        Ring(RingHash),
        Maglev(Maglev),
    }

    impl Built {
        fn new(kind: Kind, endpoints: &[(SocketAddr, u32)]) -> Self {
            match kind {
                Kind::Ring => Built::Ring(RingHash::new(endpoints).unwrap()),
                Kind::Maglev => Built::Maglev(Maglev::new(endpoints).unwrap()),
            }
        }

        fn pick(&self, key: u64, admits: impl Fn(usize) -> bool) -> Option<usize> {
            match self {
                Built::Ring(r) => r.pick(key, admits),
                Built::Maglev(m) => m.pick(key, admits),
            }
        }
    }

    /// The address each of the first `KEYS` keys lands on.
    fn landing(kind: Kind, endpoints: &[(SocketAddr, u32)]) -> Vec<SocketAddr> {
        let built = Built::new(kind, endpoints);
        (0..KEYS)
            .map(|i| endpoints[built.pick(key(i), |_| true).unwrap()].0)
            .collect()
    }

    #[test]
    fn xxh64_reference_vectors() {
        // Prefixes of the bytes '0', '1', ... (0x30 upwards), with seed 0 and with seed
        // 0x1234567890abcdef, from a published table; they cover every path of the algorithm:
        // the 32-byte stripes, 8-byte words, the 4-byte word and single bytes.
        let table: [(usize, u64, u64); 13] = [
            (0, 0xef46db3751d8e999, 0xa2f5c44d0f46c872),
            (1, 0x633457081244afec, 0xf47ebf7f5cb6795b),
            (3, 0x1c2dcb4b9024d73d, 0x8516f202e563cd06),
            (4, 0x4c33072b45647dcb, 0xe19fff0227e3b861),
            (7, 0x97ee4fe4a0ff4dfa, 0x281fef0a47387bf4),
            (8, 0xe4ba22a49ad89d3f, 0x5981b4a4e0a07d38),
            (13, 0x46a4c93f9ee1767e, 0x1ace702635ab26fd),
            (31, 0xc506e23012915790, 0xa2c0eddf74983bfe),
            (32, 0x96ee2fa935fdd556, 0x1396bc2a00938b77),
            (33, 0xa5cdc6940c6fde9e, 0x65cd9ed37dff8753),
            (43, 0xf5f53c79824b7ae5, 0x2171245c3d851fc5),
            (64, 0x3fe627fabdb30aea, 0xd2ff1b3750571f15),
            (65, 0xeddce6ec01f7e595, 0xb0aa81bc38df17b9),
        ];
        for (len, unseeded, seeded) in table {
            let input: Vec<u8> = (0..len as u8).map(|i| b'0' + i).collect();
            assert_eq!(xxh64(&input, 0), unseeded, "len {len}");
            assert_eq!(xxh64(&input, 0x1234567890abcdef), seeded, "len {len}");
        }
        // And from independent sources.
        assert_eq!(hash_key(b"a"), 15154266338359012955);
        assert_eq!(hash_key(b"abc"), 0x44bc2cf5ad770999);
        assert_eq!(hash_key(b"ABC"), 0xe66ae7354fcfee98);
        assert_eq!(hash_key(b"xxhash"), 0x32dd38952c4bc720);
    }

    #[test]
    fn ring_size_follows_envoy() {
        // The lightest endpoint gets ceil(1024 * lightest / total) points, the rest in proportion.
        assert_eq!(RingHash::new(&equal(5)).unwrap().points(), 5 * 205);
        assert_eq!(RingHash::new(&equal(1)).unwrap().points(), 1024);
        let weighted: Vec<_> = (0..4).map(|i| (addr(i), i as u32 + 1)).collect();
        assert_eq!(RingHash::new(&weighted).unwrap().points(), 103 * 10);
        // Beyond `maximum` the ring is capped and shared out by weight.
        let skewed = [(addr(0), 1), (addr(1), 1000)];
        assert_eq!(RingHash::new(&skewed).unwrap().points(), 2 * 1001);
        let ring = RingHash::with_ring_size(&skewed, 1024, 1500).unwrap();
        assert_eq!(ring.points(), 1500);
        let light = ring.owners.iter().filter(|&&o| o == 0).count();
        assert_eq!(light, 2); // ceil(1500 / 1001)
        // A minimum above the maximum is clamped to it; a maximum beyond Envoy's cap to the cap.
        assert_eq!(
            RingHash::with_ring_size(&equal(2), 5000, 100)
                .unwrap()
                .points(),
            100
        );
        assert_eq!(
            RingHash::with_ring_size(&equal(1), 0, 0).unwrap().points(),
            1
        );
    }

    #[test]
    fn rejects_what_cannot_be_built() {
        assert!(RingHash::new(&[]).is_none());
        assert!(Maglev::new(&[]).is_none());
        // Not a prime: the permutations would not cover the table.
        assert!(Maglev::with_table_size(&equal(3), 65_536).is_none());
        assert!(Maglev::with_table_size(&equal(3), 1).is_none());
        assert!(Maglev::with_table_size(&equal(3), 0).is_none());
        assert!(Maglev::with_table_size(&equal(3), 5_000_077).is_none()); // prime, too large
        assert!(Maglev::with_table_size(&equal(5), 3).is_none()); // fewer slots than endpoints
        assert_eq!(
            Maglev::with_table_size(&equal(3), 3).unwrap().table_size(),
            3
        );
        assert_eq!(Maglev::new(&equal(3)).unwrap().table_size(), 65_537);
    }

    #[test]
    fn maglev_slots_follow_weights() {
        let weighted: Vec<_> = (0..4).map(|i| (addr(i), i as u32 + 1)).collect();
        let maglev = Maglev::new(&weighted).unwrap();
        for (i, &(_, weight)) in weighted.iter().enumerate() {
            let slots = maglev.table.iter().filter(|&&o| o as usize == i).count() as f64;
            let expected = 65_537.0 * f64::from(weight) / 10.0;
            assert!(
                (slots - expected).abs() <= 4.0,
                "{i}: {slots} vs {expected}"
            );
        }
        assert!(!maglev.table.contains(&EMPTY));
    }

    #[test]
    fn key_shares_follow_weights() {
        let weighted: Vec<_> = (0..4).map(|i| (addr(i), i as u32 + 1)).collect();
        // Maglev's shares are the slot shares plus sampling noise (~1% relative at 100k keys;
        // measured within 0.7%); a 1,030-point ring places points at random, so its shares stray
        // further (measured: the weight-1 endpoint's 103 points take 13% less than its share;
        // Envoy documents the same: more points, better balance).
        for (kind, tolerance) in [(Kind::Maglev, 0.03), (Kind::Ring, 0.15)] {
            let mut counts = [0usize; 4];
            let built = Built::new(kind, &weighted);
            for i in 0..KEYS {
                counts[built.pick(key(i), |_| true).unwrap()] += 1;
            }
            for (i, &count) in counts.iter().enumerate() {
                let share = count as f64 / KEYS as f64;
                let expected = (i + 1) as f64 / 10.0;
                assert!(
                    (share / expected - 1.0).abs() <= tolerance,
                    "{kind:?} endpoint {i}: {share} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn deterministic_and_independent_of_order() {
        let weighted: Vec<_> = (0..10).map(|i| (addr(i), 1 + i as u32 % 3)).collect();
        let mut reversed = weighted.clone();
        reversed.reverse();
        let mut rotated = weighted.clone();
        rotated.rotate_left(4);
        for kind in [Kind::Ring, Kind::Maglev] {
            let first = landing(kind, &weighted);
            assert_eq!(first, landing(kind, &weighted), "{kind:?}");
            assert_eq!(first, landing(kind, &reversed), "{kind:?}");
            assert_eq!(first, landing(kind, &rotated), "{kind:?}");
        }
    }

    /// Removing one of N endpoints moves its own keys (1/N) and, on the ring, some more: Envoy
    /// sizes the ring from the set, so the survivors each gain points (1,030 points for 10
    /// endpoints, 103 each; 1,026 for 9, 114 each: ~10% of the ring is new and takes keys from
    /// everyone). Measured, for these fixed keys: ring 1.58/N kept 86% (N=5), 1.80/N kept 91%
    /// (N=10); Maglev 1.01/N kept 99.9%, 1.03/N kept 99.5%.
    #[test]
    fn removal_moves_about_one_nth() {
        for kind in [Kind::Ring, Kind::Maglev] {
            for n in [5usize, 10] {
                let all = equal(n);
                let gone = all[n / 2].0;
                let rest: Vec<_> = all.iter().copied().filter(|&(a, _)| a != gone).collect();
                let before = landing(kind, &all);
                let after = landing(kind, &rest);
                let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
                let fraction = moved as f64 / KEYS as f64;
                let ideal = 1.0 / n as f64;
                let (most, least_kept) = match kind {
                    Kind::Ring => (2.0 * ideal, 0.85),
                    Kind::Maglev => (1.5 * ideal, 0.99),
                };
                assert!(
                    fraction >= 0.5 * ideal && fraction <= most,
                    "{kind:?} n={n}: moved {fraction}"
                );
                // Keys that were not on the removed endpoint mostly stay where they were.
                let others = before.iter().filter(|&&b| b != gone).count();
                let stayed = before
                    .iter()
                    .zip(&after)
                    .filter(|&(b, a)| *b != gone && b == a)
                    .count();
                let kept = stayed as f64 / others as f64;
                assert!(kept >= least_kept, "{kind:?} n={n}: kept {kept}");
            }
        }
    }

    /// A removal that leaves every survivor's point count as it was moves only the removed
    /// endpoint's keys: the extra churn above comes from the resizing alone.
    #[test]
    fn removal_without_resizing_moves_only_its_keys() {
        // 8 endpoints at minimum 1024 own 128 points each; 7 at minimum 896 own 128 each too.
        let all = equal(8);
        let gone = all[3].0;
        let rest: Vec<_> = all.iter().copied().filter(|&(a, _)| a != gone).collect();
        let before = RingHash::with_ring_size(&all, 1024, RingHash::MAXIMUM_RING_SIZE).unwrap();
        let after = RingHash::with_ring_size(&rest, 896, RingHash::MAXIMUM_RING_SIZE).unwrap();
        assert_eq!((before.points(), after.points()), (1024, 896));
        for i in 0..KEYS {
            let b = all[before.pick(key(i), |_| true).unwrap()].0;
            let a = rest[after.pick(key(i), |_| true).unwrap()].0;
            if b != gone {
                assert_eq!(a, b, "key {i}");
            }
        }
    }

    #[test]
    fn refusing_an_endpoint_moves_only_its_keys() {
        for kind in [Kind::Ring, Kind::Maglev] {
            let n = 8;
            let built = Built::new(kind, &equal(n));
            let excluded = 3;
            let mut received = [0usize; 8];
            for i in 0..KEYS {
                let free = built.pick(key(i), |_| true).unwrap();
                let walked = built.pick(key(i), |e| e != excluded).unwrap();
                if free == excluded {
                    assert_ne!(walked, excluded);
                    received[walked] += 1;
                } else {
                    assert_eq!(walked, free, "{kind:?} key {i}");
                }
            }
            // The refused keys spread over the others, not onto one neighbour.
            let moved: usize = received.iter().sum();
            for (e, &r) in received.iter().enumerate() {
                if e != excluded {
                    assert!(r * 4 * (n - 1) >= moved, "{kind:?} {e}: {r} of {moved}");
                }
            }
        }
    }

    #[test]
    fn walk_is_bounded() {
        for kind in [Kind::Ring, Kind::Maglev] {
            // Nothing admitted: every endpoint asked once, then None.
            let built = Built::new(kind, &equal(5));
            let asked = Cell::new(0);
            let pick = built.pick(key(1), |_| {
                asked.set(asked.get() + 1);
                false
            });
            assert_eq!((pick, asked.get()), (None, 5), "{kind:?}");
            // Only one admitted among many: found when among the first 16 asked, else None.
            let built = Built::new(kind, &equal(40));
            let (mut found, mut gave_up) = (0, 0);
            for i in 0..1000 {
                let asked = Cell::new(0);
                let pick = built.pick(key(i), |e| {
                    asked.set(asked.get() + 1);
                    e == 7
                });
                assert!(asked.get() <= MAX_ATTEMPTS, "{kind:?}");
                match pick {
                    Some(e) => {
                        assert_eq!(e, 7);
                        found += 1;
                    }
                    None => gave_up += 1,
                }
            }
            assert!(found > 0 && gave_up > 0, "{kind:?}: {found} {gave_up}");
        }
    }

    #[test]
    fn single_endpoint_and_zero_weight() {
        for kind in [Kind::Ring, Kind::Maglev] {
            let built = Built::new(kind, &equal(1));
            for i in 0..100 {
                assert_eq!(built.pick(key(i), |_| true), Some(0));
                assert_eq!(built.pick(key(i), |_| false), None);
            }
            // Weight 0 reads as 1: the same structure as equal weights.
            let zero = [(addr(0), 0), (addr(1), 1)];
            assert_eq!(landing(kind, &zero), landing(kind, &equal(2)), "{kind:?}");
        }
    }

    #[test]
    fn ipv6_and_duplicate_addresses() {
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let set = [(v6, 1), (addr(0), 1), (v6, 1)];
        for kind in [Kind::Ring, Kind::Maglev] {
            let built = Built::new(kind, &set);
            let mut seen = [false; 3];
            for i in 0..1000 {
                seen[built.pick(key(i), |_| true).unwrap()] = true;
            }
            assert!(seen[1] && (seen[0] || seen[2]), "{kind:?}");
        }
        assert_eq!(
            RingHash::new(&set).unwrap().points(),
            3 * 342 // ceil(1024 / 3) each
        );
    }
}
