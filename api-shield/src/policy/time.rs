//! Time as the engine sees it: a monotonic instant for buckets and detector windows, and the
//! wall clock for JWT `exp`/`nbf` and calendar quota windows. Both come from the caller, so
//! tests drive the clock and nothing here reads it behind the caller's back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One moment, on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: token buckets, detector windows, JWKS cooldowns.
    pub mono: Instant,
    /// Wall-clock time: JWT validity, hour/day/month quota windows (UTC).
    pub wall: SystemTime,
}

impl Now {
    /// The current moment from the system clocks.
    pub fn system() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Both clocks moved forward by `d` (tests and simulations).
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }

    /// Seconds since the Unix epoch on the wall clock (0 before the epoch).
    pub fn unix_secs(&self) -> u64 {
        unix_secs(self.wall)
    }
}

/// Seconds since the Unix epoch (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A calendar window, aligned to UTC boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarWindow {
    /// From hh:00:00 to the next hour.
    Hour,
    /// From 00:00:00 UTC to the next midnight.
    Day,
    /// From the first of the month 00:00:00 UTC to the first of the next month.
    Month,
}

impl CalendarWindow {
    /// `[start, end)` of the window containing `unix` (seconds, UTC).
    pub fn bounds(self, unix: u64) -> (u64, u64) {
        match self {
            Self::Hour => {
                let start = unix - unix % 3600;
                (start, start + 3600)
            }
            Self::Day => {
                let start = unix - unix % 86_400;
                (start, start + 86_400)
            }
            Self::Month => {
                let days = unix / 86_400;
                let (y, m, _) = civil_from_days(days as i64);
                let start = days_from_civil(y, m, 1) as u64 * 86_400;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
                (start, end)
            }
        }
    }

    /// Nominal length in seconds, for the `w` parameter of `RateLimit-Policy`
    /// (a month is reported as 30 days; `t` in `RateLimit` stays exact).
    pub fn nominal_secs(self) -> u64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Month => 30 * 86_400,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for z in [-1000_i64, 0, 59, 60, 365, 11_016, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn month_bounds_handle_leap_february_and_december() {
        // 2024-02-15 12:00:00 UTC
        let t = days_from_civil(2024, 2, 15) as u64 * 86_400 + 43_200;
        let (s, e) = CalendarWindow::Month.bounds(t);
        assert_eq!(s, days_from_civil(2024, 2, 1) as u64 * 86_400);
        assert_eq!(e - s, 29 * 86_400);
        let t = days_from_civil(2025, 12, 31) as u64 * 86_400 + 86_399;
        let (s, e) = CalendarWindow::Month.bounds(t);
        assert_eq!(s, days_from_civil(2025, 12, 1) as u64 * 86_400);
        assert_eq!(e, days_from_civil(2026, 1, 1) as u64 * 86_400);
        assert_eq!(CalendarWindow::Hour.bounds(7199), (3600, 7200));
        assert_eq!(CalendarWindow::Day.bounds(86_400), (86_400, 172_800));
    }
}
