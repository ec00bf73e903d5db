//! Seeded hashing of a rate key onto the sketch rows.

use crate::state::RateKey;

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// A fast seeded mix of the key's words. The seed is random per load and secret, so an
/// attacker cannot choose sources that collide with a victim's cells.
#[inline(always)]
pub fn mix(seed: u64, key: &RateKey) -> u64 {
    let mut h = seed ^ (key.family as u64).wrapping_mul(MUL);
    let mut i = 0;
    while i < 4 {
        h = (h ^ key.addr[i] as u64).wrapping_mul(MUL);
        h ^= h >> 29;
        i += 1;
    }
    h ^= h >> 32;
    h.wrapping_mul(MUL) ^ (h >> 31)
}

/// Index of `key`'s cell in row `row` (0 or 1) of a sketch whose rows are `mask + 1` wide.
#[inline(always)]
pub fn cell(seed: u64, key: &RateKey, row: u32, mask: u32) -> u32 {
    (row * (mask + 1)) + (mix(seed, key) as u32 & mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::FAMILY_V4;

    #[test]
    fn spreads_consecutive_addresses() {
        let mask = 65_535u32;
        let mut seen = [false; 65_536];
        let mut distinct = 0;
        for a in 0..10_000u32 {
            let key = RateKey {
                family: FAMILY_V4,
                addr: [a.to_be(), 0, 0, 0],
            };
            let c = cell(0x1234_5678, &key, 0, mask) as usize;
            if !seen[c] {
                seen[c] = true;
                distinct += 1;
            }
        }
        // Random placement of 10,000 keys in 65,536 cells leaves about 9,270 distinct.
        assert!(distinct > 9_000, "only {distinct} distinct cells");
    }

    #[test]
    fn rows_do_not_overlap_and_seeds_differ() {
        let key = RateKey {
            family: FAMILY_V4,
            addr: [0xC612_0001, 0, 0, 0],
        };
        let c0 = cell(1, &key, 0, 1023);
        let c1 = cell(2, &key, 1, 1023);
        assert!(c0 < 1024);
        assert!((1024..2048).contains(&c1));
        assert_ne!(mix(1, &key), mix(2, &key));
    }
}
