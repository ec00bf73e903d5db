//! The token-bucket step, shared so host tests cover exactly what the kernel runs.

use crate::NS_PER_SEC;
use crate::config::RateParams;
use crate::state::TokenState;

/// What one packet costs, in scaled tokens.
pub const PACKET_COST: u64 = NS_PER_SEC;

/// Refills `state` for the time since it was last touched and tries to take one packet's
/// worth. Returns whether the packet fits. A disabled bucket always admits.
///
/// Never divides and never overflows: `elapsed * rate` is only computed when `elapsed` is below
/// `full_refill_ns`, so the product stays below `capacity + rate`.
#[inline(always)]
pub fn take(state: &mut TokenState, now_ns: u64, params: &RateParams) -> bool {
    if params.rate_per_sec == 0 {
        return true;
    }
    // Another CPU may have stored a later timestamp: treat as no time passed.
    let elapsed = now_ns.saturating_sub(state.last_ns);
    let refilled = if elapsed >= params.full_refill_ns {
        params.capacity
    } else {
        let t = state.tokens + elapsed * params.rate_per_sec;
        if t > params.capacity {
            params.capacity
        } else {
            t
        }
    };
    if elapsed != 0 {
        state.last_ns = now_ns;
    }
    if refilled >= PACKET_COST {
        state.tokens = refilled - PACKET_COST;
        true
    } else {
        state.tokens = refilled;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_000 * NS_PER_SEC;

    #[test]
    fn fresh_bucket_admits_a_full_burst_then_refuses() {
        let p = RateParams::new(10, 5);
        let mut s = TokenState::default();
        let admitted = (0..20).filter(|_| take(&mut s, START, &p)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn refills_at_the_rate() {
        let p = RateParams::new(10, 5);
        let mut s = TokenState::default();
        while take(&mut s, START, &p) {}
        // 100 ms at 10/s is one packet.
        assert!(take(&mut s, START + NS_PER_SEC / 10, &p));
        assert!(!take(&mut s, START + NS_PER_SEC / 10, &p));
        // 50 ms later is half a token: not enough.
        assert!(!take(&mut s, START + NS_PER_SEC / 10 + NS_PER_SEC / 20, &p));
        // Another 50 ms completes it.
        assert!(take(&mut s, START + 2 * NS_PER_SEC / 10, &p));
    }

    #[test]
    fn long_idle_caps_at_burst() {
        let p = RateParams::new(1_000_000, 3);
        let mut s = TokenState::default();
        while take(&mut s, START, &p) {}
        let later = START + 86_400 * NS_PER_SEC;
        let admitted = (0..10).filter(|_| take(&mut s, later, &p)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn clock_going_backwards_grants_nothing() {
        let p = RateParams::new(10, 1);
        let mut s = TokenState::default();
        assert!(take(&mut s, START, &p));
        assert!(!take(&mut s, START - NS_PER_SEC, &p));
    }

    #[test]
    fn disabled_bucket_admits_everything() {
        let p = RateParams::new(0, 0);
        let mut s = TokenState::default();
        assert!((0..1000).all(|_| take(&mut s, START, &p)));
    }

    #[test]
    fn sustained_rate_matches_configuration() {
        // 1000 pps offered for 10 s against a 100 pps limit admits about 100 * 10 + burst.
        let p = RateParams::new(100, 50);
        let mut s = TokenState::default();
        let mut admitted = 0;
        for i in 0..10_000u64 {
            if take(&mut s, START + i * NS_PER_SEC / 1000, &p) {
                admitted += 1;
            }
        }
        assert!((1_045..=1_052).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn extreme_parameters_do_not_overflow() {
        let p = RateParams::new(u32::MAX as u64, u32::MAX as u64);
        let mut s = TokenState::default();
        assert!(take(&mut s, START, &p));
        assert!(take(&mut s, START + 1, &p));
    }
}
