//! The integration-test harness, shared by every test module of the `it` binary.
//!
//! - `daemon`: [`Pier`], the one launcher for the real binary (config, environment, restarts,
//!   signals, kill -9, graceful stop, its log and waits on log lines).
//! - `distribution`: CNCF Distribution (Debian's `docker-registry`) as an upstream, with token
//!   auth and its token service (`token_server.py`).
//! - `dockerd`: a private Docker engine (one at a time), `docker` and `docker-compose` for it.
//! - `http`: the one raw HTTP/1.1 client and response helpers.
//! - `command`: the one runner for external tools, with failure messages that show the command,
//!   its exit status and output.
//! - `wait`: waiting on observable events instead of sleeping.
//! - `image`: images, digests, tar archives and OCI layouts.
//! - `loopfs`: a small loop-mounted ext4 of a test's own, for full-disk tests.
//! - `registry`: pushing and checking images over HTTP and with skopeo.
//! - `store`: checks of pier's data directory on disk.
//! - `pki`: a throwaway PKI, curl and `openssl s_client`.
//! - `systemd`: a fake sd_notify socket and other things systemd would provide.
//!
//! Test modules `use crate::harness::*`.

pub mod command;
pub mod daemon;
pub mod distribution;
pub mod dockerd;
pub mod http;
pub mod image;
pub mod loopfs;
pub mod pki;
pub mod registry;
pub mod store;
pub mod systemd;
pub mod wait;

pub use command::*;
pub use daemon::*;
pub use distribution::*;
pub use dockerd::*;
pub use http::*;
pub use image::*;
pub use loopfs::*;
pub use pki::*;
pub use registry::*;
pub use store::*;
pub use systemd::*;
pub use wait::*;
