//! The pure core: the registry's vocabulary as types that can only hold valid values.
//!
//! Nothing here performs I/O or depends on `std`; every function is deterministic and total
//! (malformed input is an `Err`, never a panic), which makes the module a natural fuzz target.

pub mod access;
pub mod bundle;
pub mod digest;
pub mod duration;
pub mod error;
pub mod manifest;
pub mod name;
pub mod policy;
pub mod quota;
pub mod range;
pub mod retention;
mod robustness;
pub mod size;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind};
pub use name::{NameError, Reference, RepoName, Tag};
pub use range::{ByteRange, ContentRange, RangeError};
