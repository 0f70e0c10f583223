//! pier's container image under a real Docker engine (`harness::dockerd`): the image built from
//! `images/` with the static musl binary, run as a drop-in for `registry:2`.
//!
//! - `image`: `docker build`, `docker run`, push and pull with docker, skopeo and podman; the
//!   root-owned data volume handed to the unprivileged user; the privilege drop without an engine.
//! - `compose`: users' docker-compose files (`compose/*/`) with only `image:` changed.
//! - `lifecycle`: `docker stop` (SIGTERM drains, exit 0) and a crash under `restart: always`.
//! - `assemble`: the engine-free multi-arch OCI index (`images/assemble.py`), reproducible, pushed
//!   into a running pier and pulled and run from there by the engine.
//!
//! Each test starts its own engine ([`Dockerd::start`], about 1 s; engines run one at a time)
//! and builds the image in it ([`pier_image`], a few seconds: no `RUN` step). Test images are
//! tiny (`docker import` of a tar with a nonce), so that the vfs storage driver stays fast.

mod assemble;
mod compose;
mod image;
mod lifecycle;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The tag the tests build pier's image as, and the compose files name.
pub const PIER_IMAGE: &str = "pier:latest";

/// The repository root (the `images/` directory, the compose files, `target/`).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The static binary of pier's image for a Rust target, built once per test process with
/// `cargo build --profile image --target TARGET` (a no-op when `.ci/run` built it already; a
/// failed build fails the test).
pub fn image_binary(target: &'static str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    let bin = target_dir.join(target).join("image").join("pier");
    if !built.contains(&target) {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(repo_root()).args(["build", "--profile", "image", "--bin", "pier", "--target", target]);
        // Without what `cargo test` tells its tests about this package: build scripts (ring's)
        // watch CARGO_MANIFEST_DIR, and a different value would rebuild what `.ci/run` built.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let per_test = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
                .iter()
                .any(|p| k.starts_with(p));
            if per_test || k == "CARGO_TARGET_TMPDIR" || k == "CARGO_RUSTC_CURRENT_DIR" || k == "OUT_DIR" {
                cargo.env_remove(&key);
            }
        }
        run(&mut cargo);
        built.push(target);
    }
    assert!(bin.is_file(), "{} missing after cargo build", bin.display());
    bin
}

pub const AMD64_MUSL: &str = "x86_64-unknown-linux-musl";

/// Builds pier's image in `engine` as [`PIER_IMAGE`]: `docker build` (legacy builder) with a
/// context holding `images/Containerfile`, `images/config.yml` and the amd64 musl binary as
/// `pier`, as images/README.md says. Returns its size in bytes (`docker inspect .Size`).
pub fn pier_image(engine: &Dockerd) -> u64 {
    let ctx = tmpdir();
    for f in ["Containerfile", "config.yml"] {
        std::fs::copy(repo_root().join("images").join(f), ctx.path().join(f)).expect("copy images/");
    }
    std::fs::copy(image_binary(AMD64_MUSL), ctx.path().join("pier")).expect("copy the binary");
    let file = ctx.path().join("Containerfile");
    engine.run(&mut engine.docker(&["build", "-q", "-f", s(&file), "-t", PIER_IMAGE, s(ctx.path())]));
    engine.inspect(PIER_IMAGE, "{{.Size}}").parse().expect("image size")
}

/// A tiny single-layer image `name` in `engine` (one file holding a nonce, via `docker
/// import`); returns its image id (the config digest, which a pull must reproduce).
pub fn small_image(engine: &Dockerd, name: &str) -> String {
    let dir = tmpdir();
    let tar = dir.path().join("layer.tar");
    let text = format!("pier engine test {name} {}\n", nonce());
    std::fs::write(&tar, tar_archive(&[("hello/", b""), ("hello/nonce.txt", text.as_bytes())])).expect("write tar");
    engine.d(&["import", "--change", "CMD [\"/hello\"]", s(&tar), name]);
    engine.inspect(name, "{{.Id}}")
}

/// `docker push NAME`, `docker rmi NAME`, `docker pull NAME`; asserts the pulled image has
/// `id` (same config, so same layers: the engine verified their digests while pulling).
#[track_caller]
pub fn push_rmi_pull(engine: &Dockerd, name: &str, id: &str) {
    engine.d(&["push", name]);
    pull_again(engine, name, id);
}

/// `docker rmi NAME`, `docker pull NAME`, and the pulled image is `id`.
#[track_caller]
pub fn pull_again(engine: &Dockerd, name: &str, id: &str) {
    engine.d(&["rmi", name]);
    engine.d(&["pull", name]);
    assert_eq!(engine.inspect(name, "{{.Id}}"), id, "{name} pulled back as another image");
}

/// A free TCP port on 127.0.0.1 (bound and released: the engine publishes it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `GET URL` (curl, `-k` for https) until it answers 200 or 401 (a registry that asks
/// for credentials answers too); returns how long that took.
#[track_caller]
pub fn wait_v2(url: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    let answered = wait_until(timeout, || {
        let c = curl(&["-k", "--max-time", "2", url]);
        last = format!("{} {}", c.status, c.stderr.trim());
        c.status == 200 || c.status == 401
    });
    assert!(answered, "{url} did not answer within {timeout:?} (last: {last})");
    start.elapsed()
}

/// The uid and gid a process runs as (`/proc/PID/status`, effective ids).
pub fn process_ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| -> u32 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
        line.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
    };
    (field("Uid:"), field("Gid:"))
}

/// Asserts every entry under `dir` (and `dir`) is owned by `uid:gid`.
#[track_caller]
pub fn assert_owned_by(dir: &Path, uid: u32, gid: u32) {
    use std::os::unix::fs::MetadataExt;
    let mut todo = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{} is owned by {}:{}", p.display(), m.uid(), m.gid());
        seen += 1;
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).expect("read_dir").map(|e| e.expect("entry").path()));
        }
    }
    assert!(seen > 1, "{} is empty", dir.display());
}
