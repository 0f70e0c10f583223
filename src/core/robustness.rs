//! Every core parser is total: arbitrary input yields `Ok` or `Err`, never a panic. This runs a
//! deterministic stream of random and mutated inputs through each of them in every `cargo test`
//! (cheap and always on); the coverage-guided fuzz targets in `tests/fuzz/` drive the same
//! parsers much further and check properties of what they accept.

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::vec::Vec;

    use crate::core::access::glob_match;
    use crate::core::duration;
    use crate::core::manifest::Manifest;
    use crate::core::range::{parse_range, ContentRange};
    use crate::core::{Digest, Reference, RepoName, Tag};

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Characters that matter to the grammars, plus some that never should appear.
    const ALPHABET: &[u8] = b"abcz019AZ:._-/ =,*+%\\\"{}[]\x00\xff\xc3\xa9\xc2\xb5sha256512blake3bytesmhnu";

    fn random_text(rng: &mut Rng, max: usize) -> String {
        let len = rng.below(max + 1);
        let bytes: Vec<u8> = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(4) {
            if v.is_empty() {
                break;
            }
            let i = rng.below(v.len());
            match rng.below(3) {
                0 => v[i] = ALPHABET[rng.below(ALPHABET.len())],
                1 => {
                    v.remove(i);
                }
                _ => v.insert(i, ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        v
    }

    #[test]
    fn parsers_never_panic() {
        let mut rng = Rng(0x5eed_1234_abcd_9876);
        for _ in 0..20_000 {
            let s = random_text(&mut rng, 80);
            let _ = Digest::parse(&s);
            let _ = RepoName::parse(&s);
            let _ = Tag::parse(&s);
            let _ = Reference::parse(&s);
            let _ = parse_range(&s, rng.next() % 1000);
            let _ = ContentRange::parse(&s);
            let _ = glob_match(&s, &random_text(&mut rng, 20));
            let _ = Manifest::parse(Some(&s), s.as_bytes());
            let _ = duration::parse(&s);
        }
    }

    #[test]
    fn mutated_manifests_never_panic() {
        let seed = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"x/y","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1}],"subject":{"mediaType":"b","digest":"sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e","size":2},"annotations":{"k":"v"}}"#;
        let mut rng = Rng(42);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let m = mutate(&mut rng, seed);
            if Manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), &m).is_ok() {
                accepted += 1;
            }
        }
        // Some mutations keep the manifest valid (e.g. inside annotation values): the test
        // exercises both paths.
        assert!(accepted > 0);
        assert!(Manifest::parse(None, seed).is_ok());
    }

    #[test]
    fn mutated_durations_never_panic() {
        let mut rng = Rng(7);
        let mut accepted = 0;
        for seed in ["2h45m30.5s", "-9223372036854775.808us", "1.5µs", "0.3333333333333333333h"] {
            for _ in 0..5_000 {
                let m = mutate(&mut rng, seed.as_bytes());
                if duration::parse(&String::from_utf8_lossy(&m)).is_ok() {
                    accepted += 1;
                }
            }
        }
        // Many mutations stay valid durations (a digit for a digit): both paths are exercised.
        assert!(accepted > 0);
    }
}
