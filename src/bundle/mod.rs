//! Air-gapped distribution: bundles of images written at a connected site and loaded at an
//! air-gapped one (`pier export`, `pier import`, `pier inventory`).
//!
//! A bundle is one OCI image layout as a tar stream (optionally zstd-compressed as a whole,
//! optionally split into volumes), with `pier-bundle.json` first (what it holds, what a delta
//! leaves out) and a docker `manifest.json` for `docker load`; ARCHITECTURE.md ("Bundles") has
//! the format. Blobs are streamed one at a time with fixed-size buffers: memory does not grow
//! with the bundle or its layers.
//!
//! Where images come from is a [`source::BundleSource`]: the local store, or a remote registry.
//! Imports: [`import`] (a plain tar stream into the store), reading tar with [`tar_in`] and
//! naming images with [`archive_names`].

pub mod archive_names;
pub mod export;
pub mod import;
pub mod inventory;
pub mod plan;
pub mod source;
pub mod store_source;
pub mod tar_in;
pub mod tar_out;
