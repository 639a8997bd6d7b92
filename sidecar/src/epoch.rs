//! The sidecar's epoch: random bits drawn at every start and served with every snapshot, so
//! that a filter tells this run's versions from an earlier run's. An earlier run may have
//! counted higher on a database since replaced (empty, or restored from a backup); its
//! versions say nothing about this run's (see `linnet_core::stamp`).

use linnet_core::Epoch;
use std::hash::{BuildHasher, RandomState};

/// A fresh epoch. `RandomState` is keyed from the operating system's randomness, and each
/// one differently, so two of them hashing anything give 128 bits no other run draws.
pub fn draw() -> Epoch {
    let word = || RandomState::new().hash_one(std::process::id());
    Epoch::from_bits((u128::from(word()) << 64) | u128::from(word()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_draw_differs() {
        let (a, b) = (super::draw(), super::draw());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }
}
