//! What expiry the kernel holds for an expiring block, so that the number of distinct expiries
//! never exhausts the `RULES` array.
//!
//! The daemon keeps each entry's exact expiry and removes the entry on time in its sweep; the
//! kernel's rule only has to be an upper bound, a safety net for when the daemon is not running.
//! So the exact deadline is rounded UP (never down: a block must never end early in the kernel)
//! to a grid aligned on multiples of a power of two whose width grows with the time left: about
//! `1 / 2^FINE_SHIFT` of it at level 0. The grid is aligned on absolute times, so a deadline
//! keeps its rounded value from one compilation to the next (as long as the width stays) and
//! rules are not churned; and per origin only a few cells exist per doubling of the time left,
//! whatever the number of entries. When the table is still too small, the grid is coarsened
//! (a higher level) for the whole compilation; when even the coarsest grid does not fit, the
//! entries left over get no kernel expiry at all (`Unbounded`): they are still enforced, and
//! still removed on time by the daemon, and this is reported.

use super::{TableError, rules::RuleTable};
use std::collections::HashSet;

/// At level 0 a cell is the smallest power of two of at least `remaining >> FINE_SHIFT`:
/// 128 to 256 cells per doubling of the time left, so a kernel expiry is late by under 1/128
/// of the time that was left when it was compiled.
const FINE_SHIFT: u32 = 8;
/// The narrowest cell, in ns (about 1 ms; the kernel reads a coarse clock of a few ms anyway):
/// deadlines in the next quarter second share cells of this width.
const MIN_WIDTH: u64 = 1 << 20;
/// The widest cell: at this width every deadline the monotonic clock can reach in practice
/// shares one cell per origin.
const MAX_WIDTH: u64 = 1 << 63;
/// The levels tried, finest first. Up to `FINE_SHIFT` each step halves the cells per doubling;
/// beyond it a cell spans `2^(level - FINE_SHIFT)` doublings, and the last level makes every
/// width `MAX_WIDTH`.
const LEVELS: [u32; 11] = [0, 2, 4, 6, 8, 12, 16, 24, 32, 48, FINE_SHIFT + u64::BITS];

/// The kernel expiry for a block whose exact monotonic deadline is `exact_ns` (not 0), compiled
/// at `now_ns` on the grid of `level`: the smallest multiple of the cell width that is at least
/// `exact_ns` (`u64::MAX`, which the kernel never reaches, if that multiple does not fit).
pub fn kernel_expiry(exact_ns: u64, now_ns: u64, level: u32) -> u64 {
    let remaining = exact_ns.saturating_sub(now_ns);
    let scaled = if level <= FINE_SHIFT {
        remaining >> (FINE_SHIFT - level)
    } else {
        let shift = level - FINE_SHIFT;
        if shift >= u64::BITS || remaining.leading_zeros() < shift {
            MAX_WIDTH
        } else {
            remaining << shift
        }
    };
    let width = scaled
        .clamp(MIN_WIDTH, MAX_WIDTH)
        .checked_next_power_of_two()
        .unwrap_or(MAX_WIDTH);
    exact_ns.div_ceil(width).saturating_mul(width)
}

/// Where an expiring block's kernel rule went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRule {
    /// Index into `RULES`, and the (rounded-up) expiry that rule holds.
    Interned { rule: u32, expires_at_ns: u64 },
    /// No room even at the coarsest grid: the kernel holds the entry without an expiry.
    Unbounded,
}

/// What `intern_all` settled on, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpiryPlan {
    /// The grid level used (0 = finest); above 0 the table was too small for the finest.
    pub level: u32,
    /// Expiring blocks the kernel holds with no expiry, as no rule was left for them.
    pub unbounded: usize,
}

/// Interns a rule for every `(origin, exact deadline)` of `wanted` (deadlines not 0), at the
/// finest level whose rules fit in `rules`, and returns them in order. Never fails: what does
/// not fit at the coarsest level is `Unbounded`. Rules interned at a level that did not fit
/// are given back before the next is tried, so only the chosen level's rules stay.
pub fn intern_all(
    rules: &mut RuleTable,
    wanted: &[(u32, u64)],
    now_ns: u64,
) -> (Vec<KernelRule>, ExpiryPlan) {
    let before: HashSet<u32> = rules.indices().collect();
    let mut out = Vec::with_capacity(wanted.len());
    let (&coarsest, finer) = LEVELS.split_last().expect("LEVELS is not empty");
    for &level in finer {
        out.clear();
        let all_fit = wanted.iter().try_for_each(|&(origin, exact)| {
            let expires_at_ns = kernel_expiry(exact, now_ns, level);
            let rule = rules.intern(origin, expires_at_ns)?;
            out.push(KernelRule::Interned {
                rule,
                expires_at_ns,
            });
            Ok::<(), TableError>(())
        });
        if all_fit.is_ok() {
            return (
                out,
                ExpiryPlan {
                    level,
                    unbounded: 0,
                },
            );
        }
        rules.retain(&before);
    }
    // Nothing fits whole. Any level's rounding is an upper bound, so a rule already held for
    // one (such as those the live tables still use) serves as well as a new one; only then is
    // a slot taken, and when none is left the entry goes without.
    out.clear();
    let mut unbounded = 0;
    for &(origin, exact) in wanted {
        let held = LEVELS.iter().find_map(|&level| {
            let expires_at_ns = kernel_expiry(exact, now_ns, level);
            rules
                .find(origin, expires_at_ns)
                .map(|rule| (rule, expires_at_ns))
        });
        let expires_at_ns = kernel_expiry(exact, now_ns, coarsest);
        let interned = held.or_else(|| {
            rules
                .intern(origin, expires_at_ns)
                .ok()
                .map(|rule| (rule, expires_at_ns))
        });
        out.push(match interned {
            Some((rule, expires_at_ns)) => KernelRule::Interned {
                rule,
                expires_at_ns,
            },
            None => {
                unbounded += 1;
                KernelRule::Unbounded
            }
        });
    }
    (
        out,
        ExpiryPlan {
            level: coarsest,
            unbounded,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_shield_common::maps::DEFAULT_RULES;

    const SECOND: u64 = 1_000_000_000;
    const NOW: u64 = 1_000 * SECOND;

    /// A cheap deterministic spread of deadlines from `NOW` up to about 24 days ahead.
    fn deadlines(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| NOW + 1 + i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (1 << 51))
    }

    #[test]
    fn never_rounds_down_and_stays_close_at_the_finest_level() {
        for exact in deadlines(100_000).chain([NOW + 1, NOW + SECOND, u64::MAX - 1]) {
            let k = kernel_expiry(exact, NOW, 0);
            assert!(k >= exact, "{exact} rounded down to {k}");
            let remaining = exact - NOW;
            // Late by under 1/128 of the time left, or one narrowest cell.
            let slack = (remaining >> (FINE_SHIFT - 1)).max(MIN_WIDTH);
            assert!(
                k - exact <= slack || k == u64::MAX,
                "{exact}: {k} is late by {}",
                k - exact
            );
        }
    }

    #[test]
    fn never_rounds_down_at_any_level_and_coarser_levels_are_never_earlier() {
        for exact in deadlines(10_000).chain([NOW + 1, u64::MAX]) {
            let mut last = exact;
            for level in LEVELS {
                let k = kernel_expiry(exact, NOW, level);
                assert!(k >= last, "level {level}: {exact} -> {k} < {last}");
                assert_ne!(k, 0, "0 would mean never");
                last = k;
            }
        }
    }

    #[test]
    fn later_deadlines_never_get_earlier_kernel_expiries() {
        // The grids nest, so rounding keeps the order of deadlines (ties allowed): the block
        // that expires last stays the one the table chooses.
        let mut all: Vec<u64> = deadlines(50_000).collect();
        all.sort_unstable();
        for level in LEVELS {
            let rounded: Vec<u64> = all.iter().map(|&e| kernel_expiry(e, NOW, level)).collect();
            assert!(rounded.windows(2).all(|w| w[0] <= w[1]), "level {level}");
        }
    }

    #[test]
    fn a_deadline_keeps_its_kernel_expiry_as_time_passes_within_its_cell_width() {
        let exact = NOW + 3_600 * SECOND;
        let first = kernel_expiry(exact, NOW, 0);
        // A second later the time left has barely changed: same width, same cell.
        assert_eq!(kernel_expiry(exact, NOW + SECOND, 0), first);
        // Close to the deadline the cell is narrow, and still not before it.
        let near = kernel_expiry(exact, exact - SECOND, 0);
        assert!(near >= exact && near <= first);
        assert!(near - exact <= SECOND / 128 + MIN_WIDTH);
    }

    #[test]
    fn a_million_distinct_deadlines_need_a_few_thousand_rules_per_origin() {
        let distinct: HashSet<u64> = deadlines(1_000_000)
            .map(|e| kernel_expiry(e, NOW, 0))
            .collect();
        // 2^51 ns ahead is 31 doublings past 2^20 ns: at most 256 cells for each.
        assert!(distinct.len() < 32 * 256, "{}", distinct.len());
        assert!(distinct.len() > 1_000, "{}", distinct.len());
        let coarsest: HashSet<u64> = deadlines(1_000_000)
            .map(|e| kernel_expiry(e, NOW, FINE_SHIFT + u64::BITS))
            .collect();
        assert_eq!(coarsest.len(), 1);
    }

    #[test]
    fn a_million_distinct_deadlines_fit_the_default_table_at_the_finest_level() {
        let mut rules = RuleTable::new(DEFAULT_RULES);
        let wanted: Vec<(u32, u64)> = deadlines(1_000_000).map(|e| (7, e)).collect();
        let (out, plan) = intern_all(&mut rules, &wanted, NOW);
        assert_eq!(plan, ExpiryPlan::default());
        assert_eq!(out.len(), wanted.len());
        let held: std::collections::HashMap<u32, u64> =
            rules.rules().map(|(i, r)| (i, r.expires_at_ns)).collect();
        for (k, &(_, exact)) in out.iter().zip(&wanted) {
            let KernelRule::Interned {
                rule,
                expires_at_ns,
            } = *k
            else {
                panic!("{k:?}");
            };
            assert!(expires_at_ns >= exact);
            assert_eq!(
                held[&rule], expires_at_ns,
                "the rule holds what was returned"
            );
        }
    }

    #[test]
    fn a_small_table_coarsens_instead_of_refusing() {
        let mut rules = RuleTable::new(64);
        let wanted: Vec<(u32, u64)> = deadlines(100_000).map(|e| (3, e)).collect();
        let (out, plan) = intern_all(&mut rules, &wanted, NOW);
        assert!(plan.level > 0, "{plan:?}");
        assert_eq!(plan.unbounded, 0);
        assert!(rules.len() < 64);
        for (k, &(_, exact)) in out.iter().zip(&wanted) {
            assert!(
                matches!(*k, KernelRule::Interned { expires_at_ns, .. } if expires_at_ns >= exact)
            );
        }
        // Only the chosen level's rules were kept.
        let used: HashSet<u32> = out
            .iter()
            .filter_map(|k| match k {
                KernelRule::Interned { rule, .. } => Some(*rule),
                KernelRule::Unbounded => None,
            })
            .collect();
        assert_eq!(used.len(), rules.len());
    }

    #[test]
    fn what_no_grid_fits_is_held_without_expiry_and_counted() {
        // Two rules of room, five origins: at the coarsest level each origin needs one.
        let mut rules = RuleTable::new(3);
        let wanted: Vec<(u32, u64)> = (0..5u32)
            .flat_map(|o| deadlines(100).map(move |e| (o, e)))
            .collect();
        let (out, plan) = intern_all(&mut rules, &wanted, NOW);
        assert_eq!(plan.level, FINE_SHIFT + u64::BITS);
        assert_eq!(plan.unbounded, 300);
        assert_eq!(
            out.iter().filter(|k| **k == KernelRule::Unbounded).count(),
            300
        );
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn a_full_table_reuses_the_rules_it_holds_before_going_without() {
        // Two rules of room, both taken by what the live tables use at the finest grid.
        let mut rules = RuleTable::new(3);
        let (a, b) = (NOW + 600 * SECOND, NOW + 700 * SECOND);
        rules.intern(1, kernel_expiry(a, NOW, 0)).unwrap();
        rules.intern(2, kernel_expiry(b, NOW, 0)).unwrap();
        // A third origin arrives: no level fits whole, yet the first two keep their rules.
        let wanted = [(1, a), (2, b), (3, NOW + 800 * SECOND)];
        let (out, plan) = intern_all(&mut rules, &wanted, NOW + SECOND);
        assert_eq!(plan.unbounded, 1);
        assert!(matches!(out[0], KernelRule::Interned { expires_at_ns, .. } if expires_at_ns >= a));
        assert!(matches!(out[1], KernelRule::Interned { expires_at_ns, .. } if expires_at_ns >= b));
        assert_eq!(out[2], KernelRule::Unbounded);
    }

    #[test]
    fn rules_in_use_before_are_kept_when_a_level_is_given_up() {
        let mut rules = RuleTable::new(8);
        let kept = rules.intern(1, 42).unwrap();
        let wanted: Vec<(u32, u64)> = deadlines(10_000).map(|e| (2, e)).collect();
        let (_, plan) = intern_all(&mut rules, &wanted, NOW);
        assert!(plan.level > 0);
        assert_eq!(rules.intern(1, 42).unwrap(), kept);
    }
}
