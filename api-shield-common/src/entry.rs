//! Encoding of one slot of the IPv4 DIR-24-4-4 table and of an IPv6 list value.
//!
//! A slot is a `u32`:
//! - `0`: no entry covers this source;
//! - bit 31 set (first level and first-level nodes only): the /24 (or /28) is split, the low
//!   bits name the node of `V4_TBL8` that resolves the next 4 bits;
//! - otherwise bits 29..31 hold the action and the low 29 bits a rule index, whose `Rule`
//!   carries the origin and the expiry.
//!
//! Allow and block share the table, so one lookup answers both questions.

pub const NONE: u32 = 0;
pub const GROUP_FLAG: u32 = 1 << 31;
pub const ACTION_SHIFT: u32 = 29;
pub const ACTION_MASK: u32 = 0b11 << ACTION_SHIFT;
pub const RULE_MASK: u32 = (1 << ACTION_SHIFT) - 1;

pub const ACTION_ALLOW: u32 = 1;
pub const ACTION_BLOCK: u32 = 2;

/// Largest rule index an entry can carry.
pub const MAX_RULE: u32 = RULE_MASK;

/// Set in the rule field of an entry that never expires: the low bits are then the origin
/// itself, so the common permanent entry costs no `RULES` lookup in the kernel.
pub const DIRECT_ORIGIN: u32 = 1 << (ACTION_SHIFT - 1);
pub const DIRECT_ORIGIN_MASK: u32 = DIRECT_ORIGIN - 1;

/// The rule field of a permanent entry of `origin`.
#[inline(always)]
pub const fn direct_origin(origin: u32) -> u32 {
    DIRECT_ORIGIN | (origin & DIRECT_ORIGIN_MASK)
}

/// `Some(origin)` when the rule field names an origin directly.
#[inline(always)]
pub const fn as_direct_origin(rule: u32) -> Option<u32> {
    if rule & DIRECT_ORIGIN != 0 {
        Some(rule & DIRECT_ORIGIN_MASK)
    } else {
        None
    }
}

#[inline(always)]
pub const fn encode(action: u32, rule: u32) -> u32 {
    ((action << ACTION_SHIFT) & ACTION_MASK) | (rule & RULE_MASK)
}

#[inline(always)]
pub const fn group(index: u32) -> u32 {
    GROUP_FLAG | index
}

#[inline(always)]
pub const fn is_group(entry: u32) -> bool {
    entry & GROUP_FLAG != 0
}

#[inline(always)]
pub const fn group_index(entry: u32) -> u32 {
    entry & !GROUP_FLAG
}

#[inline(always)]
pub const fn action(entry: u32) -> u32 {
    (entry & ACTION_MASK) >> ACTION_SHIFT
}

#[inline(always)]
pub const fn rule(entry: u32) -> u32 {
    entry & RULE_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = encode(ACTION_BLOCK, 12345);
        assert!(!is_group(e));
        assert_eq!(action(e), ACTION_BLOCK);
        assert_eq!(rule(e), 12345);
        let g = group(77);
        assert!(is_group(g));
        assert_eq!(group_index(g), 77);
        assert_ne!(encode(ACTION_ALLOW, 0), NONE);
        assert_eq!(rule(encode(ACTION_ALLOW, MAX_RULE)), MAX_RULE);
        let d = encode(ACTION_BLOCK, direct_origin(42));
        assert_eq!(as_direct_origin(rule(d)), Some(42));
        assert_eq!(as_direct_origin(rule(e)), None);
        assert!(!is_group(d));
    }
}
