//! The integration tests: one binary (as ripgrep and rustls do), so the harness is compiled once
//! and every test runs the real `pier` binary over real sockets, against real clients (skopeo,
//! podman, nginx, curl, openssl, the ORAS Python SDK, systemd tools).
//!
//! Tests run in parallel threads of this one process, so none may rely on process-wide state:
//! every `Pier` has its own temporary directory and an ephemeral port; environment variables go
//! on a child's `Command`, never through `std::env::set_var`; podman gets private storage per
//! test; skopeo credentials come from per-test files (`REGISTRY_AUTH_FILE`); images carry a
//! per-call nonce, so the blob-info cache that every skopeo and podman on the machine shares
//! never links one test's digests to another's registry (a test whose assertion depends on what
//! that cache remembers, such as skopeo asking for a mount, gets a private one:
//! `PrivateBlobInfoCache`). A resource that cannot be made private gets its own lock in the
//! harness, never a global one: the Docker engine (`harness::dockerd`: its bridge and iptables
//! chains are the host's) is one at a time, behind a `flock` shared with other test processes.

mod harness;

mod admin;
mod api;
mod auth;
mod auth_legacy;
mod bundle_export;
mod bundle_import;
mod cli;
mod crash;
mod disk;
mod e2e;
mod engine;
mod fsck;
mod gc;
mod hostile;
mod migrate;
mod names;
mod policy;
mod proxy;
mod quota;
mod remote;
mod scrub;
mod systemd;
mod tls;
