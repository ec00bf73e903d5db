//! Seeded hashing of a rate key onto the sketch rows.

use crate::state::RateKey;

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// A fast seeded mix of the key. The seeds are random per load and secret, so an attacker
/// cannot choose sources that collide with a victim's cells. Two words enter per multiply:
/// three multiplies in all, which matters on the per-packet path.
#[inline(always)]
pub fn mix(seeds: &[u64; 2], key: &RateKey) -> u64 {
    let lo = u64::from(key.addr[0]) | (u64::from(key.addr[1]) << 32);
    let hi = u64::from(key.addr[2]) | (u64::from(key.addr[3]) << 32);
    let mut h = (seeds[0] ^ u64::from(key.family) ^ lo).wrapping_mul(MUL);
    h ^= h >> 32;
    h = (h ^ hi).wrapping_mul(MUL);
    h ^= h >> 29;
    h = (h ^ seeds[1]).wrapping_mul(MUL);
    h ^ (h >> 32)
}

/// The key's cell in each of the two sketch rows (rows are `mask + 1` wide): the low and the
/// high half of one hash, so both rows cost a single mix.
#[inline(always)]
pub fn cells(seeds: &[u64; 2], key: &RateKey, mask: u32) -> (u32, u32) {
    let h = mix(seeds, key);
    let a = h as u32 & mask;
    let b = (mask + 1) + ((h >> 32) as u32 & mask);
    (a, b)
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
            let c = cells(&[0x1234_5678, 0x9abc_def0], &key, mask).0 as usize;
            if !seen[c] {
                seen[c] = true;
                distinct += 1;
            }
        }
        // Random placement of 10,000 keys in 65,536 cells leaves about 9,270 distinct.
        assert!(distinct > 9_000, "only {distinct} distinct cells");
    }

    #[test]
    fn rows_do_not_overlap_and_seeds_matter() {
        let key = RateKey {
            family: FAMILY_V4,
            addr: [0xC612_0001, 0, 0, 0],
        };
        let (c0, c1) = cells(&[1, 2], &key, 1023);
        assert!(c0 < 1024);
        assert!((1024..2048).contains(&c1));
        assert_ne!(mix(&[1, 2], &key), mix(&[3, 2], &key));
        assert_ne!(mix(&[1, 2], &key), mix(&[1, 3], &key));
    }
}

#[cfg(test)]
mod independence {
    use super::*;
    use crate::state::FAMILY_V4;
    use std::vec::Vec;

    /// Two sources sharing their row-0 cell rarely share their row-1 cell too: that is what
    /// keeps a heavy source from limiting a light one it collides with.
    #[test]
    fn rows_collide_independently() {
        let mask = 1023u32;
        let seeds = [0xdead_beef, 0x1234_5678];
        let keys: Vec<RateKey> = (0..4096u32)
            .map(|a| RateKey {
                family: FAMILY_V4,
                addr: [0xC612_0000 | a, 0, 0, 0],
            })
            .collect();
        let cells: Vec<(u32, u32)> = keys.iter().map(|k| cells(&seeds, k, mask)).collect();
        let (mut same_a, mut same_both) = (0u32, 0u32);
        for i in 0..cells.len() {
            for j in i + 1..cells.len() {
                if cells[i].0 == cells[j].0 {
                    same_a += 1;
                    if cells[i].1 == cells[j].1 {
                        same_both += 1;
                    }
                }
            }
        }
        // About n^2 / 2 / 1024 = 8,190 pairs share a row-0 cell; about 8 of those would share
        // both by chance.
        assert!(same_a > 6_000, "{same_a}");
        assert!(same_both < 40, "{same_both} of {same_a}");
    }
}
