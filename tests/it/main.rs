//! The integration tests: one binary (as ripgrep and rustls do), so the harness is compiled once
//! and every test runs the real `pier` binary over real sockets, against real clients (skopeo,
//! podman, nginx, curl, openssl, the ORAS Python SDK, systemd tools).
//!
//! Tests run in parallel threads of this one process. Anything process-wide they would share
//! (the environment, fixed ports, a client's global storage) is either avoided (every `Pier`
//! has its own directory and an ephemeral port; child processes get their environment on their
//! `Command`, never through `std::env::set_var`) or serialised with a lock in `harness::locks`.

mod harness;

mod api;
mod auth;
mod cli;
mod crash;
mod e2e;
mod names;
mod proxy;
mod systemd;
mod tls;
