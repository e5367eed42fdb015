//! Seeded random streams of the generator and the load schedules: rand's [`StdRng`] keyed
//! by a seed, a [`Purpose`] and an index. Item `i` of a generated set (or slot `i` of a
//! load schedule) draws from a stream of its own, so what is drawn does not depend on
//! threads, chunking or the order in which items are made, and two purposes never share
//! a stream. No mixing of its own: the three numbers are the generator's key.
//!
//! `StdRng` (ChaCha12 in rand 0.9) is reproducible for one rand version; a generated set
//! cached by its seed records its recipe version (`datagen::RECIPE_VERSION`), to be bumped
//! when what it draws changes.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// What a stream is drawn for; part of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// A generated base vector (`datagen`), index = its row.
    Vector = 1,
    /// A search slot of `bench kinetic`, index = the slot.
    KineticSearch = 2,
    /// `bench kinetic`'s writes, index 0.
    KineticWrites = 3,
    /// `bench kinetic`'s second tenant ranking, index 0.
    KineticRanking = 4,
    /// A written vector of `bench faults` (the seed is the write's), index 0.
    FaultsVector = 5,
    /// `bench placement`'s random keys, index 0.
    PlacementKeys = 6,
}

/// The stream of `index` for `purpose` under `seed`.
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    StdRng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_deterministic_and_apart() {
        let first = |seed, purpose, index| stream(seed, purpose, index).random::<u64>();
        assert_eq!(first(1, Purpose::Vector, 5), first(1, Purpose::Vector, 5));
        assert_ne!(first(1, Purpose::Vector, 5), first(1, Purpose::Vector, 6));
        assert_ne!(first(1, Purpose::Vector, 5), first(2, Purpose::Vector, 5));
        assert_ne!(
            first(1, Purpose::Vector, 5),
            first(1, Purpose::KineticSearch, 5)
        );
    }
}
