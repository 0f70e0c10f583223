//! Go durations (`core::duration`): accepted exactly when well formed (a model of Go's grammar),
//! with the exact value wherever no rounding question arises (fractions exact in their unit),
//! `Overflow` beyond ±2^63 ns; an accepted value prints as `<n>ns` and reads back, and negating
//! the text negates the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::duration::{parse, DurationError};
use pier_fuzz::duration_model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse(text);
    match duration_model(text) {
        None => assert!(parsed.is_err(), "{text:?} is not a duration, parsed as {parsed:?}"),
        Some(Some(exact)) if exact > i128::from(i64::MAX) || exact < i128::from(i64::MIN) => {
            assert_eq!(parsed, Err(DurationError::Overflow), "{text:?} = {exact} ns")
        }
        // Go checks each term against 2^63 too: a sum can only come back into range from
        // beyond it through a negative term, and terms are never negative.
        Some(Some(exact)) => assert_eq!(parsed.map(i128::from), Ok(exact), "{text:?}"),
        Some(None) => assert!(matches!(parsed, Ok(_) | Err(DurationError::Overflow)), "{text:?}: {parsed:?}"),
    }
    if let Ok(nanos) = parsed {
        assert_eq!(parse(&format!("{nanos}ns")), Ok(nanos));
        if !text.starts_with(['-', '+']) {
            assert_eq!(parse(&format!("-{text}")), Ok(-nanos), "-{text}");
        }
    }
});
