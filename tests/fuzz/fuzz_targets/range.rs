//! `Range` and `Content-Range` (`core::range`). Input: a size on the first line (decimal), the
//! header on the rest; each header is also resolved against edge sizes (0, 1, 2^64 - 1...).
//! - `parse_range`: an accepted range lies within the resource (start <= end < size), its length
//!   is computed without overflow, and its canonical form `bytes=<start>-<end>` resolves to it.
//! - `ContentRange::parse`: an accepted range has start <= end, a length that fits a `u64`, a
//!   total (when given) that is `*` or beyond its end, and its canonical forms (`<start>-<end>`,
//!   `bytes <start>-<end>/*`, `bytes <start>-<end>/<end + 1>`) re-parse equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::range::{parse_range, ContentRange, RangeError};
use pier_fuzz::first_line;

const EDGE_SIZES: [u64; 7] = [0, 1, 2, 100, 1 << 32, u64::MAX - 1, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let (size_line, header) = first_line(data);
    let Ok(header) = std::str::from_utf8(header) else { return };
    let given = std::str::from_utf8(size_line).ok().and_then(|l| l.trim().parse::<u64>().ok());

    for size in given.into_iter().chain(EDGE_SIZES) {
        check_range(header, size);
    }
    check_content_range(header);
});

fn check_range(header: &str, size: u64) {
    match parse_range(header, size) {
        Ok(r) => {
            assert!(r.start <= r.end && r.end < size, "{header:?} of {size}: {r:?}");
            let len = u128::from(r.end) - u128::from(r.start) + 1;
            assert_eq!(u128::from(r.len()), len);
            assert!(!r.is_empty());
            let canonical = format!("bytes={}-{}", r.start, r.end);
            assert_eq!(parse_range(&canonical, size), Ok(r), "{canonical}");
            if r.end == size - 1 {
                assert_eq!(parse_range(&format!("bytes={}-", r.start), size), Ok(r));
                assert_eq!(parse_range(&format!("bytes=-{}", r.len()), size), Ok(r));
            }
        }
        Err(RangeError::Unsatisfiable) => {
            // Only a range the resource is too small for: it would be satisfiable by a bigger one
            // (not a syntax error).
            assert!(parse_range(header, u64::MAX) != Err(RangeError::Malformed), "{header:?}");
        }
        Err(RangeError::Malformed) => {}
    }
}

fn check_content_range(header: &str) {
    let Ok(c) = ContentRange::parse(header) else { return };
    assert!(c.start <= c.end, "{header:?}: {c:?}");
    let len = u128::from(c.end) - u128::from(c.start) + 1;
    assert!(len <= u128::from(u64::MAX), "{header:?}: a length of {len} does not fit a u64");
    assert_eq!(u128::from(c.len()), len);
    assert!(!c.is_empty());
    // A total, when given, is `*` or a number beyond the end.
    if let Some((_, total)) = header.split_once('/') {
        let total = total.trim();
        assert!(total == "*" || total.parse::<u64>().is_ok_and(|t| c.end < t), "{header:?}: {c:?}");
    }
    let (start, end) = (c.start, c.end);
    for form in [format!("{start}-{end}"), format!("bytes {start}-{end}/*"), format!("bytes {start}-{end}/{}", end + 1)]
    {
        assert_eq!(ContentRange::parse(&form), Ok(c), "{form}");
    }
    assert!(ContentRange::parse(&format!("bytes {start}-{end}/{end}")).is_err(), "a total that does not cover it");
}
