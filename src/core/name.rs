//! Repository names, tags and manifest references, validated against the distribution-spec
//! grammar.
//!
//! Invariant: a [`RepoName`] is a relative path of `/`-separated components made only of
//! `[a-z0-9._-]`, none of them `.` or `..`, none empty, and none (after the first) equal to a
//! file name the OCI image layout reserves. It can therefore be joined to the data directory
//! without escaping it or colliding with another repository's layout files.

use alloc::string::String;
use core::fmt;

/// Maximum length of a repository name (the spec suggests clients keep names ≤ 255).
pub const MAX_NAME_LEN: usize = 255;
/// Maximum length of a tag, from the spec grammar.
pub const MAX_TAG_LEN: usize = 128;

/// Names that a component after the first may not take, because each repository directory is
/// also an OCI image layout holding these entries.
const RESERVED_COMPONENTS: &[&str] = &["blobs", "index.json", "oci-layout"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// A component does not match `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
    BadComponent,
    /// A component clashes with the OCI image layout of a parent repository.
    ReservedComponent,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "repository name is empty",
            NameError::TooLong => "repository name is longer than 255 characters",
            NameError::BadComponent => {
                "repository name must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*"
            }
            NameError::ReservedComponent => {
                "a repository name component after the first cannot be 'blobs', 'index.json' or 'oci-layout' (reserved by the OCI image layout on disk)"
            }
        })
    }
}

/// A valid repository name such as `library/alpine`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for (i, component) in s.split('/').enumerate() {
            if !valid_component(component) {
                return Err(NameError::BadComponent);
            }
            if i > 0 && RESERVED_COMPONENTS.contains(&component) {
                return Err(NameError::ReservedComponent);
            }
        }
        Ok(RepoName(String::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    // Leading alnum run.
    if b.is_empty() || !alnum(b[0]) {
        return false;
    }
    while i < b.len() {
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == b.len() {
            return true;
        }
        // A separator: '.', '_', '__' or '-'+.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        // Must be followed by alnum.
        if i == b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagError;

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    }
}

/// A valid tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, TagError> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && b.len() <= MAX_TAG_LEN {
            Ok(Tag(String::from(s)))
        } else {
            Err(TagError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(crate::core::Digest),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    Tag(TagError),
    Digest(crate::core::DigestError),
}

impl Reference {
    /// Anything with a `:` is a digest (tags cannot contain one).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            crate::core::Digest::parse(s).map(Reference::Digest).map_err(ReferenceError::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag).map_err(ReferenceError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

impl serde::Serialize for RepoName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RepoName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RepoName::parse(&text).map_err(|e| serde::de::Error::custom(alloc::format!("repository name {text:?}: {e}")))
    }
}

impl serde::Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Tag::parse(&text).map_err(|e| serde::de::Error::custom(alloc::format!("tag {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for n in [
            "a",
            "library/alpine",
            "a/b/c/d",
            "foo.bar",
            "foo_bar",
            "foo__bar",
            "foo---bar",
            "0",
            "a1/b2.c3-d4_e5",
            "blobs",
            "x/blobsy",
        ] {
            assert_eq!(RepoName::parse(n).map(|r| r.0), Ok(String::from(n)), "{n}");
        }
        let long = "a".repeat(255);
        assert!(RepoName::parse(&long).is_ok());
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(256);
        for n in [
            "",
            "A",
            "Library/alpine",
            "a//b",
            "a/",
            "/a",
            "..",
            "a/../b",
            ".",
            "./a",
            "a/.",
            "-a",
            "a-",
            "a.",
            "_a",
            "a___b",
            "a..b",
            "a._b",
            "a b",
            "a\0b",
            "a%2fb",
            "é",
            "a\\b",
            "a/b/",
            &long,
        ] {
            assert!(RepoName::parse(n).is_err(), "{n:?} should be refused");
        }
        assert_eq!(RepoName::parse("a/blobs"), Err(NameError::ReservedComponent));
        assert_eq!(RepoName::parse("a/index.json"), Err(NameError::ReservedComponent));
        assert_eq!(RepoName::parse("a/oci-layout"), Err(NameError::ReservedComponent));
    }

    #[test]
    fn tags() {
        for t in ["latest", "v1.0.0", "_x", "A-b_c.D", &"a".repeat(128)] {
            assert!(Tag::parse(t).is_ok(), "{t}");
        }
        for t in ["", ".a", "-a", "a:b", "a/b", "a b", &"a".repeat(129)] {
            assert!(Tag::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(Reference::parse("sha256:zz"), Err(ReferenceError::Digest(_))));
    }
}
