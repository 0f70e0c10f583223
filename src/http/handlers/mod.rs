//! One module per resource of the API.

pub mod blobs;
pub mod listing;
pub mod manifests;
pub mod uploads;
