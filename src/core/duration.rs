//! Durations written the Go way (`time.ParseDuration`), as CNCF Distribution's `config.yml`
//! has them: a sequence of decimal numbers, each with an optional fraction and a unit, with an
//! optional sign in front (`300ms`, `1.5h`, `2h45m30.5s`, `-1m`). Units: `ns`, `us` (also `µs`
//! and `μs`), `ms`, `s`, `m`, `h`.
//!
//! The value is Go's `time.Duration`: signed nanoseconds in an `i64`. The algorithm is Go's,
//! including its rounding of fractions (a fraction is scaled in `f64`, as Go does, so `1.1s` is
//! exactly what Go reads), with one deliberate difference: a sum that overflows is an error
//! (Go's check can be bypassed by two terms of 2^63 ns that wrap to zero).

use core::fmt;

/// Why a string is not a Go duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` (or `0`).
    Invalid,
    /// A number without a unit after it (`30`, `1h30`).
    MissingUnit,
    /// A unit that Go does not know (`1d`, `5 m`).
    UnknownUnit,
    /// Beyond ±2^63 nanoseconds (about 292 years).
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationError::Invalid => "not a duration",
            DurationError::MissingUnit => "a number without a unit (ns, us, ms, s, m, h)",
            DurationError::UnknownUnit => "an unknown unit (ns, us, ms, s, m, h)",
            DurationError::Overflow => "a duration longer than 292 years",
        })
    }
}

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1000 * NANOSECOND;
const MILLISECOND: u64 = 1000 * MICROSECOND;
const SECOND: u64 = 1000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// 2^63: the magnitude of `i64::MIN`, the largest any intermediate value may reach.
const LIMIT: u64 = 1 << 63;

fn unit(name: &str) -> Option<u64> {
    Some(match name {
        "ns" => NANOSECOND,
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Parses a Go duration into signed nanoseconds (Go's `time.ParseDuration`).
pub fn parse(text: &str) -> Result<i64, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(DurationError::Invalid);
        }
        let (whole, after_whole) = leading_int(rest)?;
        let had_whole = after_whole.len() != rest.len();
        rest = after_whole;
        let (mut fraction, mut scale, mut had_fraction) = (0u64, 1f64, false);
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (f, s, after_fraction) = leading_fraction(after_dot);
            had_fraction = after_fraction.len() != after_dot.len();
            (fraction, scale, rest) = (f, s, after_fraction);
        }
        if !had_whole && !had_fraction {
            return Err(DurationError::Invalid);
        }
        // The unit runs to the next digit or dot (both ASCII, so the split is on a character
        // boundary).
        let unit_len = rest.bytes().position(|b| b == b'.' || b.is_ascii_digit()).unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit = unit(&rest[..unit_len]).ok_or(DurationError::UnknownUnit)?;
        rest = &rest[unit_len..];
        if whole > LIMIT / unit {
            return Err(DurationError::Overflow);
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Go scales the fraction in f64: nanosecond-accurate for fractions of an hour.
            let scaled = (fraction as f64 * (unit as f64 / scale)) as u64;
            value = value.checked_add(scaled).filter(|v| *v <= LIMIT).ok_or(DurationError::Overflow)?;
        }
        total = total.checked_add(value).filter(|t| *t <= LIMIT).ok_or(DurationError::Overflow)?;
    }
    if negative {
        // 2^63 is i64::MIN's magnitude: wrapping negation of its bit pattern is exact.
        return Ok((total as i64).wrapping_neg());
    }
    i64::try_from(total).map_err(|_| DurationError::Overflow)
}

/// Consumes leading `[0-9]*`; more than 2^63 is an overflow.
fn leading_int(s: &str) -> Result<(u64, &str), DurationError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut x: u64 = 0;
    for b in s[..digits].bytes() {
        if x > LIMIT / 10 {
            return Err(DurationError::Overflow);
        }
        x = x * 10 + u64::from(b - b'0');
        if x > LIMIT {
            return Err(DurationError::Overflow);
        }
    }
    Ok((x, &s[digits..]))
}

/// Consumes leading `[0-9]*` after a decimal point: value and scale (10^digits kept). Digits
/// beyond what fits are consumed without adding precision, as Go does.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    for b in s[..digits].bytes() {
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn go_examples() {
        // The cases of Go's own `TestParseDuration` (time/time_test.go).
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", S / 2),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + S / 2),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400_000_000)),
            ("1h2m3s4ms5us6ns", 3600 * S + 2 * 60 * S + 3 * S + 4_000_000 + 5000 + 6),
            ("39h9m14.425s", 39 * 3600 * S + 9 * 60 * S + 14 * S + 425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * S),
            ("0.830103483285477580700h", 49 * 60 * S + 48 * S + 372_539_827),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), Ok(*nanos), "{text}");
        }
    }

    #[test]
    fn distribution_config_values() {
        for (text, nanos) in [
            ("1h30m", 5400 * S),
            ("500ms", S / 2),
            ("1.5h", 5400 * S),
            ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * S + S / 2),
            ("300us", 300_000),
            ("168h", 168 * 3600 * S),
            ("5m", 300 * S),
            ("300s", 300 * S),
        ] {
            assert_eq!(parse(text), Ok(nanos), "{text}");
        }
    }

    #[test]
    fn go_refusals() {
        let cases: &[(&str, DurationError)] = &[
            ("", DurationError::Invalid),
            ("3", DurationError::MissingUnit),
            ("-", DurationError::Invalid),
            ("s", DurationError::Invalid),
            (".", DurationError::Invalid),
            ("-.", DurationError::Invalid),
            (".s", DurationError::Invalid),
            ("+.s", DurationError::Invalid),
            ("1d", DurationError::UnknownUnit),
            ("1h30", DurationError::MissingUnit),
            ("5 m", DurationError::UnknownUnit),
            (" 5m", DurationError::Invalid),
            ("1.5", DurationError::MissingUnit),
            ("\u{85}\u{85}", DurationError::Invalid),
            ("\u{fffd}", DurationError::Invalid),
            ("9223372036854775810ns", DurationError::Overflow),
            ("9223372036854775808ns", DurationError::Overflow),
            ("-9223372036854775809ns", DurationError::Overflow),
            ("9223372036854776us", DurationError::Overflow),
            ("3000000h", DurationError::Overflow),
            ("9223372036854775.808us", DurationError::Overflow),
            ("9223372036854ms775us808ns", DurationError::Overflow),
            // Go wraps this sum to 0; here it is an overflow.
            ("9223372036854775808ns9223372036854775808ns", DurationError::Overflow),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text), Err(*error), "{text:?}");
        }
    }

    /// Printing a duration as Go's `Duration.String` would and parsing it back is the identity.
    #[test]
    fn round_trip_of_composed_durations() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let nanos = state % (1 << 62);
            let (h, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
            let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
            let (s, ns) = (rest / 1_000_000_000, rest % 1_000_000_000);
            let text = alloc::format!("{h}h{m}m{s}.{ns:09}s");
            assert_eq!(parse(&text), Ok(nanos as i64), "{text}");
            assert_eq!(parse(&alloc::format!("-{text}")), Ok(-(nanos as i64)), "-{text}");
        }
    }
}
