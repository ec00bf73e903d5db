//! Collapsing entries that repeat a prefix.

use ipnet::IpNet;

use super::ListEntry;

/// Collapses the entries of the same prefix into the first one, merging them in file order;
/// returns how many were collapsed.
///
/// By sorting (prefix, position) pairs rather than with a hash set: a million lookups in a
/// table of a million entries miss the cache on almost every one, while the sort runs through
/// memory in order (and is linear for the sorted files most publishers produce).
pub(super) fn collapse_duplicates(entries: &mut Vec<ListEntry>) -> usize {
    // [address high, address low, family and length << 48 | position]: 24 bytes a key, equal
    // prefixes adjacent after sorting, in file order among themselves.
    const POSITION_BITS: u32 = 48;
    let mut keys: Vec<[u64; 3]> = entries
        .iter()
        .enumerate()
        .map(|(at, e)| {
            let (bits, kind) = match e.net {
                IpNet::V4(n) => (u128::from(n.addr().to_bits()), u64::from(n.prefix_len())),
                IpNet::V6(n) => (n.addr().to_bits(), 0x100 | u64::from(n.prefix_len())),
            };
            // Truncation intended: the two halves of the address. A list has far fewer than
            // 2^48 entries.
            [
                (bits >> 64) as u64,
                bits as u64,
                kind << POSITION_BITS | at as u64,
            ]
        })
        .collect();
    keys.sort_unstable();
    let mut removed: Vec<bool> = Vec::new();
    let position = |key: &[u64; 3]| (key[2] & ((1 << POSITION_BITS) - 1)) as usize;
    for run in
        keys.chunk_by(|a, b| a[..2] == b[..2] && a[2] >> POSITION_BITS == b[2] >> POSITION_BITS)
    {
        let [first, rest @ ..] = run else {
            continue;
        };
        let first = position(first);
        for key in rest {
            let at = position(key);
            if removed.is_empty() {
                removed.resize(entries.len(), false);
            }
            removed[at] = true;
            let repeat = ListEntry {
                net: entries[at].net,
                ttl: entries[at].ttl,
                reason: entries[at].reason.take(),
            };
            merge(&mut entries[first], repeat);
        }
    }
    if removed.is_empty() {
        return 0;
    }
    let mut at = 0;
    entries.retain(|_| {
        at += 1;
        !removed[at - 1]
    });
    removed.iter().filter(|&&r| r).count()
}

/// Folds a repeated entry into the one kept: the longer `ttl` (`None`, permanent, is the
/// longest) wins with its reason; a reason missing on the kept entry is taken from the other.
fn merge(kept: &mut ListEntry, new: ListEntry) {
    let longer = match (new.ttl, kept.ttl) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        (_, None) => false,
    };
    if longer {
        kept.ttl = new.ttl;
        if new.reason.is_some() {
            kept.reason = new.reason;
        }
    } else if kept.reason.is_none() {
        kept.reason = new.reason;
    }
}
