//! `restart: always` and `docker stop` (issue 11, part 5): a crash in the middle of a push is
//! restarted by the engine with every acknowledged image intact; `docker stop` (SIGTERM, SIGKILL
//! 10 s later) finds pier draining a stalled upload and exiting 0 on its own within the grace
//! period.
//!
//! The crash is a SIGKILL sent from the host to the container's process, as an OOM kill or a
//! segfault would end it: `docker kill` counts as a manual stop (dockerd 20.10 does not restart
//! a container the user killed), so it would not exercise the restart policy.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::*;

/// The engine's grace period for `docker stop` (its default, passed explicitly).
const STOP_GRACE_S: u64 = 10;

#[test]
fn crash_mid_push_is_restarted_with_acknowledged_images_intact_and_docker_stop_exits_0() {
    let engine = Dockerd::start();
    pier_image(&engine);
    let host = tmpdir();
    let data = host.path().join("data");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:5000");
    let volume = format!("{}:/var/lib/registry", data.display());
    engine.d(&["run", "-d", "--name", "registry", "--restart", "always", "-p", &publish, "-v", &volume, PIER_IMAGE]);
    let v2 = format!("http://127.0.0.1:{port}/v2/");
    wait_v2(&v2, Duration::from_secs(30));

    let acked = format!("127.0.0.1:{port}/crash/acked:1");
    let acked_id = small_image(&engine, &acked);
    engine.d(&["push", &acked]);

    // A push with a 48 MiB layer, killed as soon as pier has started its first upload.
    let big = format!("127.0.0.1:{port}/crash/big:1");
    let big_id = big_image(&engine, &big, 48 << 20);
    let push = engine.docker(&["push", &big]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("push");
    // The container's log file (json-file driver), read directly: polling `docker logs` would
    // spawn a client every 10 ms.
    let log_file = engine.inspect("registry", "{{.LogPath}}");
    let upload_started = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log_file).unwrap_or_default().contains("POST /v2/crash/big/blobs/uploads/")
    });
    assert!(upload_started, "no upload started: {}", engine.logs("registry"));
    let pid: i32 = engine.inspect("registry", "{{.State.Pid}}").parse().expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the container's pier");
    let before_crash = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(!before_crash.contains("/v2/crash/big/manifests/1"), "the push was over before the crash: {before_crash}");
    let pushed = push.wait_with_output().expect("docker push");
    eprintln!("push during the crash: {} {}", pushed.status, String::from_utf8_lossy(&pushed.stderr).trim());

    let restarted = wait_until(Duration::from_secs(60), || {
        engine.inspect("registry", "{{.RestartCount}} {{.State.Running}}") == "1 true"
    });
    assert!(restarted, "not restarted: {}", engine.inspect("registry", "{{json .State}}"));
    wait_v2(&v2, Duration::from_secs(30));
    pull_again(&engine, &acked, &acked_id);
    if pushed.status.success() {
        pull_again(&engine, &big, &big_id);
    } else {
        // Nothing half-written is visible: the same push goes through after the restart.
        push_rmi_pull(&engine, &big, &big_id);
    }
    assert_owned_by(&data, 65532, 65532);

    // `docker stop` while an upload stalls: pier stops accepting, waits for it up to the image's
    // http.draintimeout (7 s), then exits 0 before the engine's SIGKILL.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let post = request(addr, "POST", "/v2/crash/stalled/blobs/uploads/", &[], b"");
    assert_eq!(post.status, 202, "{}", show(&post));
    let loc = strip_origin(&location(&post));
    let body = Arc::new(vec![7u8; 1 << 20]);
    let stalled = slow_patch(addr, &loc, body, 0..(1 << 20), 4096, 1, Duration::from_millis(200));
    assert!(stalled.wait_sent(4096, Duration::from_secs(10)), "the stalled upload did not start");
    let started = Instant::now();
    engine.d(&["stop", "-t", &STOP_GRACE_S.to_string(), "registry"]);
    let took = started.elapsed();
    let logs = engine.logs("registry");
    assert_eq!(engine.inspect("registry", "{{.State.ExitCode}}"), "0", "docker stop took {took:?}; logs:\n{logs}");
    assert!(took < Duration::from_secs(STOP_GRACE_S), "docker stop took {took:?}");
    // It did drain: it waited for the stalled upload (the image's drain timeout), not exit at once.
    assert!(took >= Duration::from_secs(6), "docker stop took only {took:?}: no drain; logs:\n{logs}");
    assert!(logs.contains("SIGTERM: stopping") && logs.contains("waiting up to 7s"), "{logs}");
    eprintln!("docker stop with a stalled upload: {took:?}, exit code 0");
    drop(stalled);
}

/// An image `name` with one layer of `size` random bytes (a push takes a moment); returns its id.
fn big_image(engine: &Dockerd, name: &str, size: usize) -> String {
    let dir = tmpdir();
    let tar = dir.path().join("layer.tar");
    let bytes = random_bytes(size, size as u64 ^ 0x5eed);
    let text = nonce();
    std::fs::write(&tar, tar_archive(&[("big/", b""), ("big/nonce", text.as_bytes()), ("big/random", &bytes)]))
        .expect("write tar");
    engine.d(&["import", s(&tar), name]);
    engine.inspect(name, "{{.Id}}")
}
