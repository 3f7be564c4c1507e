//! Choosing which of the matching hosts an experiment actually targets.
//!
//! Picks are uniform random samples without replacement. Callers sort the
//! candidates first, so a given seed always yields the same targets and a
//! dry run can be reproduced exactly by the real run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many of the candidates to pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Every candidate.
    All,
    /// Exactly this many (or all of them, if there are fewer).
    Count(usize),
    /// This percentage of the candidates, rounded up; values above 100 act as 100.
    Percent(u8),
}

impl Pick {
    /// How many of `available` candidates this pick selects.
    pub fn count(self, available: usize) -> usize {
        match self {
            Pick::All => available,
            Pick::Count(n) => n.min(available),
            Pick::Percent(p) => {
                // Round up so a small percentage of a small fleet still picks
                // one host; u128 keeps `available * p` from overflowing.
                let p = u128::from(p.min(100));
                let n = (available as u128 * p).div_ceil(100);
                usize::try_from(n).unwrap_or(available).min(available)
            }
        }
    }
}

/// Picks targets from `candidates` at random, keeping their original order.
pub fn pick<T: Clone>(candidates: &[T], how: Pick, rng: &mut impl Rng) -> Vec<T> {
    let wanted = how.count(candidates.len());
    if wanted == candidates.len() {
        // Nothing to choose, so leave the RNG untouched.
        return candidates.to_vec();
    }
    let mut indices = rand::seq::index::sample(rng, candidates.len(), wanted).into_vec();
    // Sampling returns indices in random order; sort them for stable display.
    indices.sort_unstable();
    indices.into_iter().map(|i| candidates[i].clone()).collect()
}

/// A random generator seeded for reproducible picks, or from OS entropy when `None`.
///
/// The same seed gives the same sequence only with the same `rand` version,
/// since `StdRng`'s algorithm may change between releases.
pub fn rng_from_seed(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

#[cfg(test)]
mod tests;
