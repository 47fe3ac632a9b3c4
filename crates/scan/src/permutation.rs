//! A seeded pseudo-random permutation of `0..n`, computed one index at a time in
//! O(1) memory, so a scan of a /16 on every port visits its 4 billion (address,
//! port) pairs in an order that spreads load across hosts and ports without a
//! shuffled table.
//!
//! It is a balanced Feistel network over the smallest power-of-four domain that
//! holds `n`, with cycle-walking: encrypting an index that lands outside `0..n`
//! is repeated until it lands inside. A Feistel network is a bijection on its
//! domain whatever its round function, and cycle-walking restricts a bijection to
//! a subset, so the whole is a bijection on `0..n` by construction; the domain is
//! at most four times `n`, so a walk takes four steps on average. Hand-written
//! because no maintained crate offers a format-preserving permutation over an
//! arbitrary `u64` domain.
//!
//! The seed is recorded in `ScanInfo`: the same seed over the same targets and
//! ports replays the same order.

/// Rounds of the Feistel network. Four make it a strong pseudo-random
/// permutation in theory (Luby-Rackoff); six leave margin for a simple round
/// function.
const ROUNDS: usize = 6;

/// A permutation of `0..len`.
#[derive(Debug, Clone)]
pub struct Permutation {
    len: u64,
    half_bits: u32,
    half_mask: u64,
    keys: [u64; ROUNDS],
}

impl Permutation {
    pub fn new(len: u64, seed: u64) -> Permutation {
        // Bits needed for the largest index, rounded up to an even count so the
        // two halves are equal; at least one bit per half.
        let index_bits = 64 - len.saturating_sub(1).leading_zeros();
        let half_bits = index_bits.div_ceil(2).max(1);
        let half_mask = if half_bits >= 32 {
            u64::from(u32::MAX)
        } else {
            (1u64 << half_bits) - 1
        };
        let mut state = seed;
        let keys = std::array::from_fn(|_| splitmix64(&mut state));
        Permutation {
            len,
            half_bits,
            half_mask,
            keys,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index at `position` in the permuted order. Only meaningful for
    /// `position < len`; other positions give a value outside `0..len`'s image
    /// order but never loop forever.
    pub fn get(&self, position: u64) -> u64 {
        if position >= self.len {
            return position;
        }
        let mut value = self.encrypt(position);
        // Terminates: `position` lies on a cycle of the domain's permutation, and
        // that cycle comes back inside `0..len` at the latest at `position`.
        while value >= self.len {
            value = self.encrypt(value);
        }
        value
    }

    /// The permuted indices in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).map(move |position| self.get(position))
    }

    fn encrypt(&self, value: u64) -> u64 {
        let mut left = (value >> self.half_bits) & self.half_mask;
        let mut right = value & self.half_mask;
        for &key in &self.keys {
            let next = left ^ (round(right, key) & self.half_mask);
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }
}

/// The round function: a keyed mix of one half (the finaliser of splitmix64, a
/// good avalanche for its cost).
fn round(half: u64, key: u64) -> u64 {
    let mut z = half ^ key;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64: derives independent round keys from one seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    round(*state, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn is_a_bijection(len in 0u64..3000, seed in any::<u64>()) {
            let permutation = Permutation::new(len, seed);
            let mut seen = vec![false; usize::try_from(len).unwrap_or(0)];
            for value in permutation.iter() {
                let slot = seen.get_mut(usize::try_from(value).unwrap_or(usize::MAX));
                prop_assert!(slot.is_some(), "{} out of range for len {}", value, len);
                if let Some(slot) = slot {
                    prop_assert!(!*slot, "{} visited twice", value);
                    *slot = true;
                }
            }
            prop_assert!(seen.iter().all(|&s| s));
        }

        #[test]
        fn replays_with_the_same_seed(len in 1u64..100_000, seed in any::<u64>()) {
            let first: Vec<u64> = Permutation::new(len, seed).iter().take(200).collect();
            let again: Vec<u64> = Permutation::new(len, seed).iter().take(200).collect();
            prop_assert_eq!(first, again);
        }
    }

    #[test]
    fn different_seeds_give_different_orders() {
        let a: Vec<u64> = Permutation::new(1000, 1).iter().collect();
        let b: Vec<u64> = Permutation::new(1000, 2).iter().collect();
        assert_ne!(a, b);
        let identity: Vec<u64> = (0..1000).collect();
        assert_ne!(a, identity);
    }

    #[test]
    fn huge_domains_work_in_constant_memory() {
        let permutation = Permutation::new(u64::MAX, 7);
        let values: Vec<u64> = (0..1000)
            .map(|position| permutation.get(position))
            .collect();
        assert!(values.iter().all(|&v| v < u64::MAX));
        let unique: std::collections::HashSet<_> = values.iter().collect();
        assert_eq!(unique.len(), values.len());
        // 2^40 + 1 forces a domain four times larger than needed: the worst case
        // for cycle-walking, which must still land inside.
        let awkward = Permutation::new((1 << 40) + 1, 3);
        assert!((0..1000).all(|position| awkward.get(position) <= 1 << 40));
    }

    /// The engine maps an index to (address = index % n_addresses, port = index /
    /// n_addresses); consecutive positions should rarely hit the same host, which
    /// is what keeps a scan from hammering one machine.
    #[test]
    fn consecutive_positions_rarely_share_a_host() {
        let (n_addresses, n_ports) = (256u64, 100u64);
        let permutation = Permutation::new(n_addresses * n_ports, 42);
        let hosts: Vec<u64> = permutation.iter().map(|idx| idx % n_addresses).collect();
        let same_host = hosts.windows(2).filter(|pair| pair[0] == pair[1]).count();
        // A uniform shuffle repeats a host 1 time in 256: about 100 of 25,599 pairs.
        assert!(
            same_host < 250,
            "{same_host} consecutive probes on the same host"
        );
        // And no host is hit in a long run.
        let longest_run = hosts
            .windows(4)
            .filter(|w| w[0] == w[1] && w[1] == w[2] && w[2] == w[3])
            .count();
        assert_eq!(longest_run, 0);
    }
}
