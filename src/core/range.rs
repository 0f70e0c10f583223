//! HTTP byte ranges: the `Range` request header of blob GETs (RFC 9110, a single range) and the
//! `Content-Range` header of chunked upload PATCHes (`<start>-<end>`, inclusive).
//!
//! Invariant of both types as parsed: `start <= end` and the length `end - start + 1` fits a
//! `u64` (a `ByteRange` lies within its resource; a `ContentRange` ends before `u64::MAX`), so
//! `len` never overflows; and `len` saturates, so even a value made by hand that breaks the
//! invariant cannot make it panic. The fuzz target `range` (tests/fuzz) checks both parsers.

/// An inclusive byte range `start..=end`, always within the resource it was resolved against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// `end - start + 1` (saturating: see the module's invariant).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// Syntactically invalid, or several ranges: RFC 9110 lets a server ignore it and send 200.
    Malformed,
    /// Valid but outside the resource: 416.
    Unsatisfiable,
}

/// Resolves a `Range` header against a resource of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> Result<ByteRange, RangeError> {
    let spec = header.trim().strip_prefix("bytes=").ok_or(RangeError::Malformed)?;
    if spec.contains(',') {
        return Err(RangeError::Malformed);
    }
    let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last n bytes.
        let n = parse_u64(b)?;
        if n == 0 || size == 0 {
            return Err(RangeError::Unsatisfiable);
        }
        let n = n.min(size);
        return Ok(ByteRange { start: size - n, end: size - 1 });
    }
    let start = parse_u64(a)?;
    let end = if b.is_empty() { u64::MAX } else { parse_u64(b)? };
    if end < start {
        return Err(RangeError::Malformed);
    }
    if start >= size {
        return Err(RangeError::Unsatisfiable);
    }
    Ok(ByteRange { start, end: end.min(size - 1) })
}

fn parse_u64(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse().map_err(|_| RangeError::Malformed)
}

/// The `Content-Range` of an upload chunk: `<start>-<end>` inclusive (also accepted with a
/// `bytes ` prefix and a `/<total>` suffix, as some clients send).
///
/// Invariant: `start <= end < u64::MAX`, so [`len`](Self::len) cannot overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
}

impl ContentRange {
    /// Parses `<start>-<end>[/<total>|/*]`; the total, when given as a number, must cover the
    /// range (`end < total`).
    pub fn parse(header: &str) -> Result<ContentRange, RangeError> {
        let s = header.trim();
        let s = s.strip_prefix("bytes ").unwrap_or(s).trim();
        let (s, total) = match s.split_once('/') {
            Some((range, total)) => (range, Some(total.trim())),
            None => (s, None),
        };
        let (a, b) = s.split_once('-').ok_or(RangeError::Malformed)?;
        let (start, end) = (parse_u64(a.trim())?, parse_u64(b.trim())?);
        // A range ending at u64::MAX has a length u64 cannot hold.
        if end < start || end == u64::MAX {
            return Err(RangeError::Malformed);
        }
        match total {
            None | Some("*") => {}
            Some(total) if parse_u64(total)? > end => {}
            Some(_) => return Err(RangeError::Malformed),
        }
        Ok(ContentRange { start, end })
    }

    /// `end - start + 1` (saturating: see the module's invariant).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(ByteRange { start: 0, end: 9 }));
        assert_eq!(parse_range("bytes=90-", 100), Ok(ByteRange { start: 90, end: 99 }));
        assert_eq!(parse_range("bytes=90-1000", 100), Ok(ByteRange { start: 90, end: 99 }));
        assert_eq!(parse_range("bytes=-10", 100), Ok(ByteRange { start: 90, end: 99 }));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(ByteRange { start: 0, end: 99 }));
        assert_eq!(parse_range("bytes=100-", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_range("bytes=-0", 100), Err(RangeError::Unsatisfiable));
        assert_eq!(parse_range("bytes=0-0", 0), Err(RangeError::Unsatisfiable));
        for bad in [
            "",
            "bytes=",
            "bytes=a-b",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(bad, 100), Err(RangeError::Malformed), "{bad}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(ContentRange::parse("0-99"), Ok(ContentRange { start: 0, end: 99 }));
        assert_eq!(ContentRange::parse("bytes 100-199/*"), Ok(ContentRange { start: 100, end: 199 }));
        assert_eq!(ContentRange::parse("5-5").map(|r| r.len()), Ok(1));
        assert_eq!(ContentRange::parse("bytes 0-9/10"), Ok(ContentRange { start: 0, end: 9 }));
        assert_eq!(ContentRange::parse("0-18446744073709551614").map(|r| r.len()), Ok(u64::MAX));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "9-1",
            "a-b",
            "0-1-2",
            // The length of 0-u64::MAX does not fit in a u64 (it wrapped to 0 once).
            "0-18446744073709551615",
            "5-18446744073709551615",
            // The total must cover the range and be a number or `*`.
            "bytes 0-9/9",
            "bytes 0-9/x",
            "bytes 0-9/",
            "bytes 0-9/-1",
        ] {
            assert!(ContentRange::parse(bad).is_err(), "{bad}");
        }
    }

    /// Found by the `range` fuzz target (issue 10): the length of `0-(2^64 - 1)` is 2^64, which
    /// wrapped to 0 in release builds and panicked in debug ones.
    #[test]
    fn content_range_of_2_pow_64_bytes_is_refused() {
        assert_eq!(ContentRange::parse("0-18446744073709551615"), Err(RangeError::Malformed));
        assert_eq!(ContentRange::parse("bytes 0-18446744073709551615/*"), Err(RangeError::Malformed));
        assert_eq!(ContentRange::parse("0-18446744073709551614").map(|r| r.len()), Ok(u64::MAX));
        // A value made by hand that breaks the invariant still has a length, not a panic.
        assert_eq!(ContentRange { start: 0, end: u64::MAX }.len(), u64::MAX);
        assert_eq!(ContentRange { start: 9, end: 1 }.len(), 1);
        assert_eq!(ByteRange { start: 9, end: 1 }.len(), 1);
    }

    /// Issue 10: the `/<total>` of a Content-Range is `*` or a number beyond the range's end.
    #[test]
    fn content_range_total_is_validated() {
        assert_eq!(ContentRange::parse("bytes 0-99/ 100 "), Ok(ContentRange { start: 0, end: 99 }));
        assert_eq!(ContentRange::parse("bytes 0-99/*"), Ok(ContentRange { start: 0, end: 99 }));
        for bad in [
            "bytes 0-99/99",
            "bytes 0-99/0",
            "bytes 0-99/",
            "bytes 0-99/x",
            "bytes 0-99/-100",
            "bytes 0-99/1e3",
            "bytes 0-99/100/100",
            "bytes 0-99/**",
            "bytes 0-99/99999999999999999999999",
            "0-18446744073709551614/18446744073709551615/",
        ] {
            assert_eq!(ContentRange::parse(bad), Err(RangeError::Malformed), "{bad}");
        }
        assert!(ContentRange::parse("0-18446744073709551614/18446744073709551615").is_ok());
    }
}
