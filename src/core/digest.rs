//! Content digests (`<algorithm>:<hex>`) and the incremental hashers that produce them.
//!
//! Invariant: a [`Digest`] value always holds a supported algorithm and exactly the right number
//! of lower-case hex characters for it, so its text is safe to use as a file name.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm pier can verify while streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
    /// Registered only on image-spec `main`, not in a release: accepted by the core, and by the
    /// server only when enabled in its configuration.
    Blake3,
}

impl Algorithm {
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// Length of the hex-encoded value.
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn from_name(name: &str) -> Result<Algorithm, DigestError> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            "blake3" => Ok(Algorithm::Blake3),
            _ => Err(DigestError::UnsupportedAlgorithm),
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algorithm::Blake3 => Hasher::Blake3(alloc::boxed::Box::new(blake3::Hasher::new())),
        }
    }
}

/// Why a digest string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded`.
    Malformed,
    /// An algorithm pier does not implement.
    UnsupportedAlgorithm,
    /// Wrong number of hex characters for the algorithm.
    WrongLength,
    /// A character outside `[0-9a-f]`.
    NotLowerHex,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestError::Malformed => "digest must look like <algorithm>:<hex>",
            DigestError::UnsupportedAlgorithm => "unsupported digest algorithm (sha256, sha512, blake3)",
            DigestError::WrongLength => "digest has the wrong length for its algorithm",
            DigestError::NotLowerHex => "digest must be lower-case hex",
        })
    }
}

/// A validated content digest, e.g. `sha256:e3b0c442...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The full text, `<algorithm>:<hex>`.
    text: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Malformed);
        }
        let algorithm = Algorithm::from_name(alg)?;
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::WrongLength);
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::NotLowerHex);
        }
        Ok(Digest { algorithm, text: String::from(s) })
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, safe as a file name.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Digest::parse(&text).map_err(|e| serde::de::Error::custom(alloc::format!("digest {text:?}: {e}")))
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// An incremental hasher for one [`Algorithm`].
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Blake3(alloc::boxed::Box<blake3::Hasher>),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
            Hasher::Blake3(_) => Algorithm::Blake3,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let mut text = String::with_capacity(7 + 128);
        let algorithm = self.algorithm();
        text.push_str(algorithm.name());
        text.push(':');
        match self {
            Hasher::Sha256(h) => push_hex(&mut text, &h.finalize()),
            Hasher::Sha512(h) => push_hex(&mut text, &h.finalize()),
            Hasher::Blake3(h) => push_hex(&mut text, h.finalize().as_bytes()),
        }
        Digest { algorithm, text }
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_valid_digests() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        let s512 = Digest::of(Algorithm::Sha512, b"");
        assert_eq!(Digest::parse(s512.as_str()).unwrap(), s512);
        assert!(s512.as_str().starts_with("sha512:cf83e1357eefb8bd"));
    }

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").as_str(), EMPTY_SHA256);
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish().as_str(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            Digest::of(Algorithm::Blake3, b"").as_str(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn refuses_malformed_digests() {
        use DigestError::*;
        let cases: &[(&str, DigestError)] = &[
            ("", Malformed),
            ("sha256", Malformed),
            ("sha256:", Malformed),
            (":abc", Malformed),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", UnsupportedAlgorithm),
            ("SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", UnsupportedAlgorithm),
            ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85", WrongLength),
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", NotLowerHex),
            ("sha256:../../../../../../../../../../../../../../../../../../../../../.", NotLowerHex),
            ("sha512:abc", WrongLength),
        ];
        for (s, e) in cases {
            assert_eq!(Digest::parse(s), Err(*e), "{s}");
        }
    }
}
