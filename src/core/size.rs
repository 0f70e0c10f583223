//! Sizes in bytes as config files write them: a whole number with an optional unit, space
//! between them allowed (`268435456`, `256MiB`, `1GB`, `512 M`). Units, case-insensitive: `B`;
//! binary `KiB`, `MiB`, `GiB`, `TiB` (also `Ki`… and, as systemd and Docker read them, `K`, `M`,
//! `G`, `T`); decimal `KB`, `MB`, `GB`, `TB`.

use core::fmt;

/// Why a string is not a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// No whole number at the start (`MiB`, `-1`, `1.5GB`, empty).
    Invalid,
    /// A unit not in the list.
    UnknownUnit,
    /// More than 2^64 - 1 bytes.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeError::Invalid => "not a size (a whole number of bytes, with an optional unit)",
            SizeError::UnknownUnit => "a size with an unknown unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
            SizeError::Overflow => "a size beyond 16 EiB",
        })
    }
}

fn unit(name: &str) -> Option<u64> {
    const KI: u64 = 1 << 10;
    let lower: [u8; 3] = match name.len() {
        0..=3 => {
            let mut l = [0u8; 3];
            for (d, s) in l.iter_mut().zip(name.bytes()) {
                *d = s.to_ascii_lowercase();
            }
            l
        }
        _ => return None,
    };
    Some(match &lower[..name.len()] {
        b"" | b"b" => 1,
        b"k" | b"ki" | b"kib" => KI,
        b"m" | b"mi" | b"mib" => KI * KI,
        b"g" | b"gi" | b"gib" => KI * KI * KI,
        b"t" | b"ti" | b"tib" => KI * KI * KI * KI,
        b"kb" => 1000,
        b"mb" => 1000 * 1000,
        b"gb" => 1000 * 1000 * 1000,
        b"tb" => 1000 * 1000 * 1000 * 1000,
        _ => return None,
    })
}

/// Parses a size into bytes.
pub fn parse(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits_end = text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    if digits_end == 0 {
        return Err(SizeError::Invalid);
    }
    let (digits, rest) = text.split_at(digits_end);
    let rest = rest.trim_start();
    if rest.starts_with(['.', ',']) {
        return Err(SizeError::Invalid);
    }
    let number: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    let unit = unit(rest).ok_or(SizeError::UnknownUnit)?;
    number.checked_mul(unit).ok_or(SizeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("268435456"), Ok(256 << 20));
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("256 mib"), Ok(256 << 20));
        assert_eq!(parse("256M"), Ok(256 << 20));
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse("1gib"), Ok(1 << 30));
        assert_eq!(parse("3 KB"), Ok(3000));
        assert_eq!(parse(" 7B "), Ok(7));
        assert_eq!(parse("2Ti"), Ok(2 << 40));
        assert_eq!(parse(""), Err(SizeError::Invalid));
        assert_eq!(parse("MiB"), Err(SizeError::Invalid));
        assert_eq!(parse("-1"), Err(SizeError::Invalid));
        assert_eq!(parse("1.5GB"), Err(SizeError::Invalid));
        assert_eq!(parse("1 PB"), Err(SizeError::UnknownUnit));
        assert_eq!(parse("1 mibs"), Err(SizeError::UnknownUnit));
        assert_eq!(parse("1 Ḿ"), Err(SizeError::UnknownUnit));
        assert_eq!(parse("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse("17179869184 GiB"), Err(SizeError::Overflow));
    }
}
