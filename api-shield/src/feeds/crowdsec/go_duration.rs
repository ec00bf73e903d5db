//! Go's duration syntax, in which CrowdSec prints the lifetime a decision has left.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a Go duration")]
    Invalid(String),
    #[error("`{0}` lacks a unit (h, m, s, ms, us, ns)")]
    MissingUnit(String),
    #[error("`{token}` has the unknown unit `{unit}`")]
    UnknownUnit { token: String, unit: String },
    #[error("`{0}` is out of range (about ±292 years)")]
    Overflow(String),
}

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
const SECS_PER_MIN: u128 = 60;
const MINS_PER_HOUR: u128 = 60;
/// Fraction digits beyond these weigh less than a nanosecond even in hours (10^-13 h is
/// 0.36 ns), so they are read but not counted.
const MAX_FRACTION_DIGITS: u32 = 18;
const DECIMAL: u128 = 10;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => SECS_PER_MIN * NANOS_PER_SEC,
        "h" => MINS_PER_HOUR * SECS_PER_MIN * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a duration as Go's `time.ParseDuration` does (`3h59m58.123s`, `-1.5s`, `0`) into
/// signed nanoseconds. CrowdSec prints remaining lifetimes this way, negative once expired.
pub fn parse_go_duration(token: &str) -> Result<i64, GoDurationError> {
    let invalid = || GoDurationError::Invalid(token.to_string());
    let overflow = || GoDurationError::Overflow(token.to_string());
    if token.is_empty() {
        return Err(GoDurationError::Empty);
    }
    let (negative, mut rest) = match token.as_bytes()[0] {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    // Go's one unit-less form.
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // The most a result may weigh: i64::MIN's magnitude is one more than i64::MAX.
    let limit = i64::MAX.unsigned_abs() as u128 + u128::from(negative);
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(f.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(GoDurationError::MissingUnit(token.to_string()));
        }
        let scale = unit_nanos(unit).ok_or_else(|| GoDurationError::UnknownUnit {
            token: token.to_string(),
            unit: unit.to_string(),
        })?;
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(DECIMAL)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= limit)
                .ok_or_else(overflow)?;
        }
        let (mut fraction, mut denominator) = (0u128, 1u128);
        for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
            fraction = fraction * DECIMAL + u128::from(d - b'0');
            denominator *= DECIMAL;
        }
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction * scale / denominator))
            .and_then(|w| w.checked_add(total))
            .filter(|t| *t <= limit)
            .ok_or_else(overflow)?;
        rest = after;
    }
    let magnitude = i128::try_from(total).map_err(|_| overflow())?;
    i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| overflow())
}

/// The lifetime left, `None` once expired (zero or negative).
pub(super) fn remaining(nanos: i64) -> Option<Duration> {
    u64::try_from(nanos)
        .ok()
        .filter(|n| *n > 0)
        .map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;
    fn go(token: &str) -> i64 {
        parse_go_duration(token).unwrap_or_else(|e| panic!("{token}: {e}"))
    }

    #[test]
    fn go_durations_as_crowdsec_prints_them() {
        assert_eq!(go("3h59m58.123s"), 3 * H + 59 * M + 58 * S + 123 * MS);
        assert_eq!(go("59m59s"), 59 * M + 59 * S);
        assert_eq!(go("1h"), H);
        assert_eq!(go("59m59.0s"), 59 * M + 59 * S);
        assert_eq!(go("1m29.177866383s"), M + 29 * S + 177_866_383 * NS);
        assert_eq!(go("1h59m59.177861971s"), H + 59 * M + 59 * S + 177_861_971);
        assert_eq!(go("-13.955867ms"), -(13 * MS + 955_867 * NS));
        assert_eq!(go("-35.706207799s"), -(35 * S + 706_207_799));
        assert_eq!(go("-1.5s"), -(S + S / 2));
    }

    #[test]
    fn go_durations_every_unit_and_form() {
        assert_eq!(go("7ns"), 7 * NS);
        assert_eq!(go("10us"), 10 * US);
        assert_eq!(go("10\u{b5}s"), 10 * US, "micro sign");
        assert_eq!(go("10\u{3bc}s"), 10 * US, "Greek mu");
        assert_eq!(go("100ms"), 100 * MS);
        assert_eq!(go("1.5h"), H + 30 * M);
        assert_eq!(go(".5s"), S / 2);
        assert_eq!(go("1.s"), S);
        assert_eq!(go("1h30m"), H + 30 * M);
        assert_eq!(go("1m1m"), 2 * M, "Go adds repeated units");
        assert_eq!(go("+5s"), 5 * S);
        assert_eq!(go("1.000000001s"), S + 1);
        assert_eq!(go("0.1ns"), 0, "below a nanosecond truncates");
        // Digits beyond what can weigh a nanosecond are read and ignored.
        assert_eq!(go("1.00000000000000000000000009s"), S);
        assert_eq!(go("2562047h47m16.854775807s"), i64::MAX);
        assert_eq!(go("-2562047h47m16.854775808s"), i64::MIN);
    }

    #[test]
    fn go_durations_zero() {
        for zero in ["0", "-0", "+0", "0s", "0h0m0s", "0.0ms", "-0s"] {
            assert_eq!(go(zero), 0, "{zero}");
        }
    }

    #[test]
    fn go_durations_invalid() {
        use GoDurationError::*;
        assert_eq!(parse_go_duration(""), Err(Empty));
        for bad in [
            "-", "+", ".s", "s", "h5", "+-1s", "--1s", "1h 30m", " 1h", "1h ", "s5",
        ] {
            let err = parse_go_duration(bad).unwrap_err();
            assert!(
                matches!(err, Invalid(_) | UnknownUnit { .. }),
                "{bad}: {err:?}"
            );
        }
        for bad in ["5", "1h5", "1.5.5s", "00"] {
            assert_eq!(
                parse_go_duration(bad),
                Err(MissingUnit(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_go_duration("3d"),
            Err(UnknownUnit {
                token: "3d".into(),
                unit: "d".into()
            })
        );
        assert!(matches!(parse_go_duration("1hh"), Err(UnknownUnit { .. })));
        for big in [
            "2562047h47m16.854775808s",
            "3000000h",
            "99999999999999999999999999999999999999999s",
            "-2562047h47m16.854775809s",
        ] {
            assert_eq!(parse_go_duration(big), Err(Overflow(big.into())), "{big}");
        }
        assert!(
            parse_go_duration("3d")
                .unwrap_err()
                .to_string()
                .contains("3d")
        );
    }
}
