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
        now_ms + (mono_ns - now_mono) / 1_000_000
    } else {
        now_ms.saturating_sub((now_mono - mono_ns) / 1_000_000)
    }
}
