//! pier: a lean OCI container image registry.
//!
//! Layering (each layer only calls the ones below it):
//! - [`core`]: pure, `no_std` + `alloc` vocabulary: digests, names, references, manifests and
//!   descriptors, byte ranges, OCI error codes, access rules, the registry policy. No I/O.
//! - `store`: the only owner of the data directory (redb metadata + content-addressed blob
//!   files + per-repository OCI image layouts); no path or file handle leaves it.
//! - `http`: the OCI Distribution API on hyper; maps every error to OCI error JSON once.
//! - `cli`: the `pier` subcommands.
//! - `remote`: a remote registry read over its API (`pier export --from URL`), a `BundleSource`.
//!
//! Beside them: `config` (`config.yml` and `REGISTRY_*`), `htpasswd` (the password file's format,
//! for `http` and `cli`), `logging`, `systemd`.
//! ARCHITECTURE.md has the module map, the data directory, the commit protocol and its invariants.
//!
//! Everything except `core` sits behind the default `server` feature, so
//! `cargo build --lib --no-default-features` builds the core alone, as `no_std`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod core;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod bundle;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod htpasswd;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod remote;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod systemd;
