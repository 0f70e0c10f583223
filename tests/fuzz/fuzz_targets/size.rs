//! Sizes in bytes (`core::size`): accepted exactly when a model of the documented grammar says
//! so, with its value (checked: `Overflow` beyond 2^64 - 1); an accepted size prints as a plain
//! number that reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::size::{parse, SizeError};
use pier_fuzz::size_model;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse(text);
    match size_model(text) {
        None => assert!(parsed.is_err(), "{text:?}: {parsed:?}"),
        Some(v) if v > u128::from(u64::MAX) => assert_eq!(parsed, Err(SizeError::Overflow), "{text:?}"),
        Some(v) => assert_eq!(parsed.map(u128::from), Ok(v), "{text:?}"),
    }
    if let Ok(bytes) = parsed {
        assert_eq!(parse(&bytes.to_string()), Ok(bytes));
    }
});
