//! Pure balancing algorithms: which endpoint of a cluster takes the next request. No I/O, no
//! clocks, no globals: weights, in-flight counts, health, key hashes and seeds are all passed in,
//! and every picker answers with an index into the endpoint list it was built from.
//!
//! | picker | state | a pick costs | for |
//! | --- | --- | --- | --- |
//! | [`Wrr`] | per core, `&mut` | O(1) | the default: smooth weighted round-robin |
//! | [`RoundRobin`] | per core, `&mut` | O(1) | equal endpoints, weights ignored |
//! | [`Random`] | per core, seeded | O(log n) | weighted random |
//! | [`LeastRequest`] | per core, seeded | O(1) | power of two choices over in-flight counts |
//! | [`RingHash`] | immutable, `&self` | O(log points) | sticky by key, Envoy's ring_hash |
//! | [`Maglev`] | immutable, `&self` | O(1) | sticky by key, Google's Maglev |
//!
//! The two consistent hashes are deterministic (the same endpoint set gives the same structure on
//! every core and in every process) and immutable after they are built, so one build per
//! snapshot can be shared by all cores. [`Picker`] puts them behind one per-core type, and
//! [`Table`] is the shared, immutable part of a hashing picker.

mod hash;
mod least;
mod picker;
mod simple;
mod wrr;

pub use hash::{Maglev, RingHash, hash_key};
pub use least::LeastRequest;
pub use picker::{Picker, Table};
pub use simple::{Random, RoundRobin};
pub use wrr::Wrr;
