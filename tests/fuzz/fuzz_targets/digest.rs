//! Digests (`core::digest`): `Digest::parse` accepts exactly `<sha256|sha512|blake3>:<hex of the
//! right length, lower case>`; an accepted digest keeps its text (algorithm name, `:`, hex) and
//! re-parses equal; a computed digest (one-shot or fed in two pieces) parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::core::{Algorithm, Digest};
use pier_fuzz::digest_model;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let parsed = Digest::parse(s);
        assert_eq!(parsed.is_ok(), digest_model(s), "Digest::parse({s:?}) = {parsed:?}");
        if let Ok(d) = parsed {
            assert_eq!(d.as_str(), s);
            assert_eq!(d.to_string(), s);
            assert_eq!(format!("{}:{}", d.algorithm().name(), d.hex()), s);
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
            assert_eq!(Algorithm::from_name(d.algorithm().name()), Ok(d.algorithm()));
            assert_eq!(s.parse::<Digest>().as_ref(), Ok(&d));
        }
    }

    let split = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
        let d = Digest::of(algorithm, data);
        assert_eq!(d.algorithm(), algorithm);
        assert_eq!(Digest::parse(d.as_str()).as_ref(), Ok(&d));
        let mut hasher = algorithm.hasher();
        hasher.update(&data[..split]);
        hasher.update(&data[split..]);
        assert_eq!(hasher.finish(), d, "hashing in two pieces");
    }
});
