//! Conversions between wall-clock times (what users and snapshots speak) and the kernel's
//! monotonic clock (what `bpf_ktime_get_coarse_ns` reads).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The monotonic deadline for a wall-clock expiry. Already-past expiries map to 1 ns, which
/// the kernel treats as expired (0 would mean "never").
pub fn mono_deadline(expires_at_unix_ms: u64) -> u64 {
    let now_ms = now_unix_ms();
    let remaining_ns = expires_at_unix_ms
        .saturating_sub(now_ms)
        .saturating_mul(1_000_000);
    if remaining_ns == 0 {
        return 1;
    }
    monotonic_ns().saturating_add(remaining_ns)
}

/// The wall-clock time of a monotonic deadline.
pub fn wall_ms(mono_ns: u64) -> u64 {
    let now_mono = monotonic_ns();
    let now_ms = now_unix_ms();
    if mono_ns >= now_mono {
        now_ms.saturating_add((mono_ns - now_mono) / 1_000_000)
    } else {
        now_ms.saturating_sub((now_mono - mono_ns) / 1_000_000)
    }
}

/// The wall-clock expiry `ttl` after `now_ms`, saturating: a TTL is bounded by `max_ttl` where
/// it enters, and this never overflows whatever reaches it.
pub fn expiry_after(now_ms: u64, ttl: std::time::Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Last instant an RFC 3339 formatter can print: 9999-12-31T23:59:59Z.
const LAST_PRINTABLE_MS: u64 = 253_402_300_799_000;

/// RFC 3339 (seconds) for a time a formatter can print (up to year 9999), else the raw
/// milliseconds: an entry from an older daemon or a tampered snapshot must not crash a printer.
pub fn format_rfc3339_ms(ms: u64) -> String {
    if ms > LAST_PRINTABLE_MS {
        return format!("{ms}ms-after-epoch");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn expiry_never_overflows_and_never_precedes_now(now in any::<u64>(), secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let ttl = Duration::new(secs, nanos);
            let at = expiry_after(now, ttl);
            prop_assert!(at >= now);
            prop_assert!(at >= expiry_after(now, Duration::from_secs(secs)));
        }

        #[test]
        fn every_time_prints_and_printable_ones_read_back(ms in any::<u64>()) {
            let text = format_rfc3339_ms(ms);
            if ms <= LAST_PRINTABLE_MS {
                let back = humantime::parse_rfc3339(&text).expect("its own output parses");
                let back_ms = back.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
                prop_assert_eq!(back_ms, ms / 1000 * 1000);
            } else {
                prop_assert!(text.ends_with("ms-after-epoch"));
            }
        }

        #[test]
        fn any_rfc3339_text_parses_or_is_refused_without_panic(text in "[0-9]{4,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})") {
            if let Ok(t) = humantime::parse_rfc3339_weak(&text)
                && let Ok(d) = t.duration_since(UNIX_EPOCH)
            {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                prop_assert!(!format_rfc3339_ms(ms).is_empty());
            }
        }

        #[test]
        fn ttls_from_any_duration_text_are_bounded_by_max_ttl(text in "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|M|y)", max_secs in 1u64..=(20 * 365 * 86_400)) {
            let max = Duration::from_secs(max_secs);
            if let Ok(d) = crate::parse::parse_duration(&text)
                && let Ok(ttl) = crate::parse::check_ttl(d.as_secs(), max)
            {
                prop_assert!(ttl <= max && !ttl.is_zero());
                let at = expiry_after(now_unix_ms(), ttl);
                prop_assert!(!format_rfc3339_ms(at).is_empty());
            }
        }

        #[test]
        fn check_ttl_accepts_exactly_one_to_max(secs in any::<u64>(), max_secs in any::<u64>()) {
            let max = Duration::from_secs(max_secs);
            match crate::parse::check_ttl(secs, max) {
                Ok(ttl) => prop_assert!(secs >= 1 && secs <= max_secs && ttl.as_secs() == secs),
                Err(_) => prop_assert!(secs == 0 || secs > max_secs),
            }
        }
    }
}
