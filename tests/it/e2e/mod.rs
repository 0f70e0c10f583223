//! End to end with real clients: skopeo, podman and the ORAS Python SDK.

mod oras;
mod podman;
mod skopeo;
