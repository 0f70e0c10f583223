//! systemd integration, against the real binary over real sockets with the real systemd tools
//! (`systemd-socket-activate` and `systemd-analyze` from Debian's `systemd` package, which .ci/run
//! installs; a missing tool fails the test, it is never skipped). systemd does not have to be
//! PID 1: socket activation, sd_notify and the journal check are plain environment variables,
//! inherited file descriptors and sockets, all of which a test can provide.
//!
//! Covered: socket activation (one and two sockets, and `LISTEN_PID` naming another process);
//! sd_notify (`STATUS=` while starting, `READY=1` only when the socket serves, `WATCHDOG=1` at half
//! of `WATCHDOG_USEC`, `RELOADING=1` + `MONOTONIC_USEC=` then `READY=1` on SIGHUP, `STOPPING=1`,
//! SIGHUP/SIGTERM handled even when sent the instant READY=1 arrives);
//! SIGTERM draining in-flight uploads up to `http.draintimeout` and exiting 0, a second signal
//! exiting at once, 20 SIGKILL/restart cycles; the unit files under `systemd-analyze verify` and
//! `security`; text and JSON logs without credentials; the journald fallback.

use crate::harness::*;

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// A small image (two tar layers of a few KiB) unique to this run.
fn small_image(name: &str, seed: u64) -> Image {
    Image::new(name, "amd64", &[3000 + seed as usize % 1000, 1500], seed)
}

/// A configured, not yet running pier with deletes enabled, `http.addr: listen` and `http_yaml`
/// (indented lines) added under `http:`.
fn daemon(listen: &str, http_yaml: &str) -> Pier {
    Pier::new(Options {
        delete_enabled: true,
        listen: listen.into(),
        extra_yaml: http_yaml.into(),
        ..Default::default()
    })
}

/// Asserts a graceful stop: the process exits with code 0 within `within`.
fn assert_exits_zero(d: &mut Pier, within: Duration, why: &str) {
    let (st, _) = d.expect_exit(within, why);
    assert_eq!(st.code(), Some(0), "exit status {why}; log:\n{}", d.log_tail());
}

// ---------------------------------------------------------------------------------------------
// Socket activation

#[test]
fn socket_activation_serves_push_and_pull_on_the_inherited_socket() {
    // http.addr names a port this test holds: pier would fail to bind it, so serving at all
    // proves it uses the inherited socket instead.
    let occupied = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut d = daemon(&occupied.local_addr().unwrap().to_string(), "");
    let addr = free_addrs(1)[0];
    d.spawn_cmd(d.socket_activation_command(&[addr], None));
    d.wait_log(&format!("Listening on {addr}"), Duration::from_secs(10));
    assert!(
        exe_name(d.pid()).starts_with("systemd-socket-activ"),
        "before any connection the process must still be systemd-socket-activate, is {}",
        exe_name(d.pid())
    );
    assert!(!d.log().contains("listening on"), "pier started before the first connection:\n{}", d.log());

    // The first connection starts pier, which serves it.
    d.addr = addr;
    let r = d.get("/v2/");
    assert_eq!(r.status, 200, "first request through the activated socket: {}\n{}", r.text(), d.log());
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    assert!(exe_name(d.pid()).starts_with("pier"), "the activated process is {}, not pier", exe_name(d.pid()));
    let log = d.log();
    assert!(log.contains("socket activation"), "no `socket activation` in the log:\n{log}");
    assert_eq!(listen_addrs(&log), vec![addr], "`listening on` lines:\n{log}");

    let img = small_image("activated", 101);
    push_image_raw(&d, "activated/app", "v1", &img);
    assert_image(&d, "activated/app", "v1", &img);

    d.stop();
    drop(occupied);
}

#[test]
fn socket_activation_with_two_sockets_serves_both() {
    let occupied = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut d = daemon(&occupied.local_addr().unwrap().to_string(), "");
    let addrs = free_addrs(2);
    let (a1, a2) = (addrs[0], addrs[1]);
    d.spawn_cmd(d.socket_activation_command(&addrs, Some("web:alt")));
    d.wait_log(&format!("Listening on {a2}"), Duration::from_secs(10));

    // The first connection arrives on the second socket.
    let one = small_image("two-sockets-1", 111);
    let two = small_image("two-sockets-2", 112);
    d.addr = a2;
    push_image_raw(&d, "activated/two", "one", &one);
    d.addr = a1;
    assert_image(&d, "activated/two", "one", &one);
    push_image_raw(&d, "activated/two", "two", &two);
    d.addr = a2;
    assert_image(&d, "activated/two", "two", &two);
    assert_image(&d, "activated/two", "one", &one);

    let log = d.log();
    assert!(log.contains("socket activation"), "no `socket activation` in the log:\n{log}");
    let mut logged = listen_addrs(&log);
    logged.sort();
    let mut want = addrs.clone();
    want.sort();
    assert_eq!(logged, want, "one `listening on` per inherited socket:\n{log}");

    d.stop();
}

/// `LISTEN_FDS` meant for another process (`LISTEN_PID` differs) is ignored: pier binds http.addr.
/// Without `NOTIFY_SOCKET`, SIGHUP does not kill it and SIGINT stops it with exit code 0.
#[test]
fn foreign_listen_fds_are_ignored_and_signals_work_without_systemd() {
    let mut d = daemon("127.0.0.1:0", "");
    let addr = d.serve(&[("LISTEN_PID", "1"), ("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "other")]);
    assert_ne!(addr.port(), 0);
    let r = d.get("/v2/");
    assert_eq!(r.status, 200, "pier must serve on http.addr: {}\n{}", r.text(), d.log());

    d.signal("HUP");
    d.wait_log("configuration reloaded", Duration::from_secs(10));
    d.assert_running("after SIGHUP (it must reload, not die)");
    assert_eq!(d.get("/v2/").status, 200, "serving after SIGHUP");

    d.signal("INT");
    assert_exits_zero(&mut d, Duration::from_secs(10), "after SIGINT");
}

// ---------------------------------------------------------------------------------------------
// sd_notify

#[test]
fn notify_status_ready_watchdog_and_stopping() {
    // A data directory with something to recover: an image, then a blob file that no metadata
    // references (what a push interrupted at the wrong moment leaves).
    let mut d = daemon("127.0.0.1:0", "");
    d.serve(&[]);
    let img = small_image("notify", 201);
    push_image_raw(&d, "notify/app", "v1", &img);
    d.kill9();
    let stray = random_bytes(5000, 202);
    let stray_path = store_blob_path(&d.root, &sha256_digest(&stray));
    std::fs::write(&stray_path, &stray).unwrap();

    // A fixed port, so that a request can go out the moment READY=1 arrives.
    let port = free_addrs(1)[0];
    d.opts.listen = port.to_string();
    d.write_config();
    d.addr = port;
    let mut n = Notify::new();
    d.spawn(&[("NOTIFY_SOCKET", &n.env()), ("WATCHDOG_USEC", "1000000")]);
    let Some((ready_at, ready)) = n.wait_for(Duration::from_secs(30), |m| has_line(m, "READY=1")) else {
        panic!("no READY=1 within 30 s; received:\n{}\nlog:\n{}", n.dump(), d.log());
    };
    // The listener accepts and the store answers right away.
    let r = try_request(port, "GET", "/v2/notify/app/manifests/v1", &[("Accept", ACCEPT_ALL)], b"")
        .unwrap_or_else(|e| panic!("request right after READY=1 failed: {e}\n{}", d.log()));
    assert_eq!(r.status, 200, "GET right after READY=1: {}", r.text());
    assert!(r.body == img.manifest, "manifest right after READY=1");

    let before_ready: Vec<&str> =
        n.received.iter().take_while(|(t, _)| *t < ready_at).flat_map(|(_, m)| m.lines()).collect();
    let starting: Vec<&&str> = before_ready.iter().filter(|l| l.starts_with("STATUS=")).collect();
    eprintln!("before READY=1: {starting:?}; READY message: {ready:?}");
    assert!(!starting.is_empty(), "no STATUS= line while starting; received:\n{}", n.dump());
    assert!(
        value(&ready, "STATUS").is_some_and(|s| s.starts_with("serving")),
        "READY=1 should come with STATUS=serving ...: {ready:?}"
    );
    // WATCHDOG=1 at half of WATCHDOG_USEC (1 s): about every 0.5 s, never a gap of 1 s.
    let pings: Vec<Instant> = n
        .collect_for(Duration::from_millis(2500))
        .into_iter()
        .filter(|(_, m)| has_line(m, "WATCHDOG=1"))
        .map(|(t, _)| t)
        .collect();
    let mut gaps = Vec::new();
    let mut last = ready_at;
    for t in &pings {
        gaps.push(t.duration_since(last));
        last = *t;
    }
    eprintln!("{} WATCHDOG=1 in 2.5 s; gaps {gaps:?}", pings.len());
    assert!(
        pings.len() >= 3,
        "{} WATCHDOG=1 in 2.5 s with WATCHDOG_USEC=1000000; received:\n{}",
        pings.len(),
        n.dump()
    );
    assert!(pings.len() <= 15, "WATCHDOG=1 flood: {} in 2.5 s", pings.len());
    let worst = gaps.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(1000), "a {worst:?} gap between watchdog pings would trip a 1 s watchdog");
    d.assert_running("while pinging the watchdog");

    // The consistency walk (in the background, a moment after start) removed the stray file and
    // said so. (Checked after the pings: waiting for it above would hold the notifications the
    // test reads, and the gaps would look longer than they were.)
    d.wait_walked();
    assert!(!stray_path.exists(), "the unreferenced blob file survived start-up");
    let log = d.run_log().to_ascii_lowercase();
    assert!(log.contains("sweep") || log.contains("recover"), "start-up recovery not logged:\n{log}");

    sigterm_and_wait_stopping(&d, &mut n);
    assert_exits_zero(&mut d, Duration::from_secs(10), "after SIGTERM with nothing in flight");
}

#[test]
fn notify_reloading_then_ready_on_sighup() {
    let mut d = daemon("127.0.0.1:0", "");
    let mut n = Notify::new();
    spawn_until_ready(&mut d, &mut n);
    d.wait_listening(1);
    let img = small_image("reload", 211);
    push_image_raw(&d, "reload/app", "v1", &img);

    let mut reloads: Vec<(Instant, u64)> = Vec::new();
    for i in 0..2 {
        d.signal("HUP");
        let Some((at, msg)) = n.wait_for(Duration::from_secs(5), |m| has_line(m, "RELOADING=1")) else {
            panic!("no RELOADING=1 within 5 s of SIGHUP #{i}; received:\n{}\nlog:\n{}", n.dump(), d.log_tail());
        };
        let usec = value(&msg, "MONOTONIC_USEC")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("RELOADING=1 without a numeric MONOTONIC_USEC=: {msg:?}"));
        if n.wait_for(Duration::from_secs(5), |m| has_line(m, "READY=1")).is_none() {
            panic!("no READY=1 after RELOADING=1 (SIGHUP #{i}); received:\n{}\nlog:\n{}", n.dump(), d.log_tail());
        }
        reloads.push((at, usec));
        d.assert_running("after SIGHUP");
        assert_image(&d, "reload/app", "v1", &img);
        if i == 0 {
            // This pause is the test: it spaces the two reloads so that the two clocks' intervals
            // below are long enough to compare.
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    // MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds: the two reloads are as far apart in it as
    // in this process's monotonic clock.
    let (t0, u0) = reloads[0];
    let (t1, u1) = reloads[1];
    assert!(u1 > u0, "MONOTONIC_USEC went backwards: {u0} then {u1}");
    let ours = t1.duration_since(t0).as_micros() as i128;
    let theirs = (u1 - u0) as i128;
    assert!(
        (ours - theirs).abs() < 300_000,
        "MONOTONIC_USEC advanced {theirs} us between the reloads, the test's clock {ours} us"
    );

    d.signal("INT");
    assert_exits_zero(&mut d, Duration::from_secs(10), "after SIGINT");
}

/// Starts pier with a fresh `NOTIFY_SOCKET` and sends `sig` the moment READY=1 arrives, as
/// systemd may (`systemctl reload` or `stop` right after start). Returns the messages so far.
fn signal_right_after_ready(d: &mut Pier, sig: &str) -> Notify {
    let mut n = Notify::new();
    let killer = ArmedKill::new();
    spawn_until_ready(d, &mut n);
    killer.fire(sig, d.pid());
    n
}

/// After READY=1, SIGHUP means reload (RELOADING=1 ... READY=1), never the default action.
#[test]
fn sighup_right_after_ready_reloads() {
    let mut d = daemon("127.0.0.1:0", "");
    for round in 0..5 {
        let mut n = signal_right_after_ready(&mut d, "HUP");
        // A reload announces itself (RELOADING=1) and ends with READY=1; then pier must still run.
        let reloading = n.wait_for(Duration::from_secs(5), |m| has_line(m, "RELOADING=1")).is_some();
        let ready_again = reloading && n.wait_for(Duration::from_secs(5), |m| has_line(m, "READY=1")).is_some();
        if let Some((st, _)) = d.wait_exit(Duration::ZERO) {
            panic!("round {round}: SIGHUP sent right after READY=1 ended pier ({st}); received:\n{}", n.dump());
        }
        if !reloading {
            panic!("round {round}: no RELOADING=1 for a SIGHUP right after READY=1; received:\n{}", n.dump());
        }
        if !ready_again {
            panic!("round {round}: no READY=1 after RELOADING=1; received:\n{}", n.dump());
        }
        d.stop();
    }
}

/// After READY=1, SIGTERM means a graceful stop: STOPPING=1 and exit code 0.
#[test]
fn sigterm_right_after_ready_stops_gracefully() {
    let mut d = daemon("127.0.0.1:0", "");
    for round in 0..5 {
        let mut n = signal_right_after_ready(&mut d, "TERM");
        let (st, _) = d.expect_exit(Duration::from_secs(10), "after a SIGTERM right after READY=1");
        let _ = n.wait_for(Duration::from_millis(100), |m| has_line(m, "STOPPING=1"));
        assert_eq!(
            st.code(),
            Some(0),
            "round {round}: SIGTERM sent right after READY=1: {st}; received:\n{}\nlog:\n{}",
            n.dump(),
            d.run_log()
        );
        assert!(n.received.iter().any(|m| has_line(&m.1, "STOPPING=1")), "no STOPPING=1:\n{}", n.dump());
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping: drain, deadline, second signal

/// Spawns pier with `NOTIFY_SOCKET` pointing at `n` and waits for READY=1.
fn spawn_until_ready(d: &mut Pier, n: &mut Notify) {
    d.spawn(&[("NOTIFY_SOCKET", &n.env())]);
    if n.wait_for(Duration::from_secs(30), |m| has_line(m, "READY=1")).is_none() {
        panic!("no READY=1; received:\n{}\nlog:\n{}", n.dump(), d.log());
    }
}

/// Starts an upload of `total` random bytes to `repo`: the first MiB acknowledged by one PATCH,
/// the rest trickling at 640 KiB/s after a `fast` burst that has been sent, and partly written to
/// the upload's file by pier, when this returns. Returns the data, the location after the first
/// PATCH and the trickling PATCH.
fn start_slow_upload(d: &Pier, repo: &str, total: usize, seed: u64, fast: usize) -> (Arc<Vec<u8>>, String, SlowPatch) {
    let data = Arc::new(random_bytes(total, seed));
    let loc = start_upload(d, repo);
    let loc = patch(d, &loc, &data, 0..MIB);
    let up = slow_patch(d.addr, &loc, data.clone(), MIB..total, fast, 64 << 10, Duration::from_millis(100));
    assert!(up.wait_sent(fast, Duration::from_secs(30)), "upload stalled at {}\n{}", up.sent(), d.log_tail());
    assert!(
        wait_until(Duration::from_secs(30), || upload_bytes_on_disk(&d.root, &loc) > MIB as u64),
        "pier did not write any of the trickling PATCH ({} bytes sent) to {}\n{}",
        up.sent(),
        upload_file(&d.root, &loc).display(),
        d.log_tail()
    );
    (data, loc, up)
}

/// Stops a PATCH that the shutdown cut short, asserting pier did not accept it; returns how many
/// of its `len` bytes were sent.
fn stop_cut_patch(up: SlowPatch, len: usize) -> usize {
    up.stop();
    let sent = up.sent();
    match up.join() {
        Ok(r) if r.status == 202 => panic!("a PATCH with {sent} of {len} bytes was accepted"),
        other => eprintln!("cut PATCH: {:?}", other.map(|r| r.status)),
    }
    sent
}

/// Starts pier with `NOTIFY_SOCKET` (to know when a stop signal was taken) and pushes `before`.
fn start_notified(d: &mut Pier, n: &mut Notify, before: &Image) {
    spawn_until_ready(d, n);
    d.wait_listening(1);
    push_image_raw(d, "drain/before", "v1", before);
}

/// Sends SIGTERM and waits for STOPPING=1.
fn sigterm_and_wait_stopping(d: &Pier, n: &mut Notify) -> Instant {
    let t = Instant::now();
    d.signal("TERM");
    if n.wait_for(Duration::from_secs(5), |m| has_line(m, "STOPPING=1")).is_none() {
        panic!("no STOPPING=1 within 5 s of SIGTERM; received:\n{}\nlog:\n{}", n.dump(), d.log_tail());
    }
    t
}

/// After a restart: the upload at `loc` resumes where the server says it is (at least `acked`,
/// at most `acked + sent` bytes), is completed, and the blob serves `data` exactly.
fn resume_and_complete(d: &Pier, repo: &str, loc: &str, data: &[u8], acked: usize, sent: usize) {
    let r = d.get(loc);
    assert_eq!(r.status, 204, "GET upload location after restart: {} {:?}\n{}", r.text(), r.headers, d.log_tail());
    let held = range_len(&r) as usize;
    eprintln!("upload resumes at {held} ({acked} acknowledged, {} sent)", acked + sent);
    assert!(held >= acked, "acknowledged upload data lost: holds {held}, {acked} acknowledged");
    assert!(held <= acked + sent, "holds {held} bytes but only {} were sent", acked + sent);
    let loc = r.header("location").map(strip_origin).unwrap_or_else(|| loc.to_string());
    let loc = if held < data.len() { patch(d, &loc, data, held..data.len()) } else { loc };
    let digest = sha256_digest(data);
    let r = d.req("PUT", &with_digest(&loc, &digest), &[], b"");
    assert_eq!(r.status, 201, "PUT completing the resumed upload: {}\n{}", r.text(), d.log_tail());
    let r = d.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.status, 200, "GET the completed blob: {}", r.text());
    assert_eq!(r.body.len(), data.len(), "length of the completed blob");
    assert_eq!(sha256_digest(&r.body), digest, "content of the completed blob");
}

#[test]
fn sigterm_lets_an_inflight_upload_finish_then_exits_zero() {
    const BIG: usize = 64 * MIB;
    let mut d = daemon("127.0.0.1:0", "  draintimeout: 20s\n");
    let mut n = Notify::new();
    let before = small_image("before-drain", 301);
    start_notified(&mut d, &mut n, &before);

    let data = Arc::new(random_bytes(BIG + MIB, 302));
    let loc = start_upload(&d, "drain/big");
    // 64 MiB in 1 MiB writes with 40 ms pauses: ~2.6 s or more on the wire.
    let up = slow_patch(d.addr, &loc, data.clone(), 0..BIG, 8 * MIB, MIB, Duration::from_millis(40));
    assert!(up.wait_sent(16 * MIB, Duration::from_secs(60)), "upload stalled at {}\n{}", up.sent(), d.log_tail());
    let term = sigterm_and_wait_stopping(&d, &mut n);
    assert!(up.sent() < BIG, "the PATCH finished before SIGTERM; the test proves nothing");

    // New connections are no longer served (refused, reset, or at most an error status) once
    // pier says it stopped accepting.
    d.wait_log("stopped accepting", Duration::from_secs(10));
    let addr = d.addr;
    let late = std::thread::spawn(move || try_request(addr, "GET", "/v2/", &[], b""));

    let r = up.join().unwrap_or_else(|e| panic!("the in-flight PATCH failed during the drain: {e}\n{}", d.log_tail()));
    let done = Instant::now();
    assert_eq!(r.status, 202, "in-flight PATCH during the drain: {}\n{}", r.text(), d.log_tail());
    assert_eq!(range_len(&r), BIG as u64, "Range after the drained PATCH");
    let (st, exited) = d.expect_exit(Duration::from_secs(10), "after its last request finished");
    assert_eq!(st.code(), Some(0), "exit status after draining; log:\n{}", d.log_tail());
    eprintln!(
        "SIGTERM -> PATCH done {:?}, -> exit {:?}",
        done.duration_since(term),
        exited.saturating_duration_since(term)
    );
    assert!(
        exited.saturating_duration_since(done) < Duration::from_secs(5),
        "pier lingered {:?} after the last in-flight request",
        exited.saturating_duration_since(done)
    );
    match late.join().unwrap() {
        Ok(r) if r.status < 300 => panic!("a connection made after SIGTERM was served: {} {}", r.status, r.text()),
        other => eprintln!("request after SIGTERM: {:?}", other.map(|r| r.status)),
    }

    d.serve(&[]);
    assert_image(&d, "drain/before", "v1", &before);
    resume_and_complete(&d, "drain/big", &loc, &data, BIG, 0);
    assert_store_blobs_complete(&d.root);
    assert_store_links_consistent(&d.root);
}

#[test]
fn drain_deadline_cuts_a_slow_upload_and_exits_zero() {
    const TOTAL: usize = 16 * MIB;
    let mut d = daemon("127.0.0.1:0", "  draintimeout: 2s\n");
    let mut n = Notify::new();
    let before = small_image("before-deadline", 311);
    start_notified(&mut d, &mut n, &before);

    // The rest trickles at 640 KiB/s: it cannot finish within the 2 s drain.
    let (data, loc, up) = start_slow_upload(&d, "drain/slow", TOTAL, 312, 2 * MIB);
    let term = sigterm_and_wait_stopping(&d, &mut n);
    d.wait_log("stopped accepting", Duration::from_secs(10));
    let (st, exited) = d.expect_exit(Duration::from_secs(20), "after SIGTERM with http.draintimeout: 2s");
    let took = exited.duration_since(term);
    eprintln!("SIGTERM -> exit {took:?} ({st})");
    assert_eq!(st.code(), Some(0), "exit status after the drain deadline; log:\n{}", d.log_tail());
    assert!(took >= Duration::from_millis(1700), "exited after {took:?}, before the 2 s drain deadline");
    // Generous: the drain deadline is a timer, the rest (closing, exiting) takes milliseconds.
    assert!(took < Duration::from_secs(10), "exited after {took:?}, long after the 2 s drain deadline");
    let sent = stop_cut_patch(up, TOTAL - MIB);

    d.serve(&[]);
    assert_image(&d, "drain/before", "v1", &before);
    resume_and_complete(&d, "drain/slow", &loc, &data, MIB, sent);
    assert_store_blobs_complete(&d.root);
    assert_store_links_consistent(&d.root);
}

#[test]
fn second_sigterm_exits_at_once_without_losing_anything() {
    const TOTAL: usize = 24 * MIB;
    let mut d = daemon("127.0.0.1:0", "  draintimeout: 60s\n");
    let mut n = Notify::new();
    let before = small_image("before-second-signal", 321);
    start_notified(&mut d, &mut n, &before);
    // Acknowledged just before the signals: another image and part of an upload.
    let acked = small_image("acked-second-signal", 322);
    push_image_raw(&d, "drain/acked", "v1", &acked);
    let (data, loc, up) = start_slow_upload(&d, "drain/cut", TOTAL, 323, 4 * MIB);

    sigterm_and_wait_stopping(&d, &mut n);
    d.wait_log("stopped accepting", Duration::from_secs(10));
    // Draining: pier keeps writing the in-flight body to the upload's file and keeps running.
    let on_disk = upload_bytes_on_disk(&d.root, &loc);
    assert!(
        wait_until(Duration::from_secs(30), || upload_bytes_on_disk(&d.root, &loc) > on_disk),
        "the in-flight PATCH stopped growing the upload file at {on_disk} bytes after the first SIGTERM\n{}",
        d.log_tail()
    );
    d.assert_running("after the first SIGTERM although a request is in flight (draintimeout 60s)");
    let second = Instant::now();
    d.signal("TERM");
    let Some((st, exited)) = d.wait_exit(Duration::from_secs(10)) else {
        panic!("still running 10 s after the second SIGTERM; log:\n{}", d.log_tail());
    };
    let took = exited.duration_since(second);
    eprintln!("second SIGTERM -> exit {took:?} ({st})");
    // Generous (the drain would last 60 s): exiting at once takes milliseconds.
    assert!(took < Duration::from_secs(5), "the second SIGTERM took {took:?} to stop pier");
    let sent = stop_cut_patch(up, TOTAL - MIB);

    d.serve(&[]);
    assert_image(&d, "drain/before", "v1", &before);
    assert_image(&d, "drain/acked", "v1", &acked);
    resume_and_complete(&d, "drain/cut", &loc, &data, MIB, sent);
    assert_store_blobs_complete(&d.root);
    assert_store_links_consistent(&d.root);
    d.signal("TERM");
    assert_exits_zero(&mut d, Duration::from_secs(10), "after SIGTERM with nothing in flight");
}

// ---------------------------------------------------------------------------------------------
// Restarts

#[test]
fn twenty_kill9_restarts_keep_every_acknowledged_image() {
    let mut d = daemon("127.0.0.1:0", "");
    d.serve(&[]);
    let mut pushed: Vec<(String, String, Image)> = Vec::new();
    for i in 0..20u64 {
        let img = Image::new(&format!("loop{i}"), "amd64", &[200 + 37 * i as usize, 100], 400 + i);
        let (repo, tag) = (format!("restart/r{}", i % 3), format!("v{i}"));
        push_image_raw(&d, &repo, &tag, &img);
        pushed.push((repo, tag, img));
        d.kill9();
        d.serve(&[]);
        let check = if i % 5 == 4 { &pushed[..] } else { &pushed[pushed.len() - 1..] };
        for (repo, tag, img) in check {
            assert_image(&d, repo, tag, img);
        }
    }
    for (repo, tag, img) in &pushed {
        assert_image(&d, repo, tag, img);
    }
    for r in 0..3 {
        let repo = format!("restart/r{r}");
        let resp = d.get(&format!("/v2/{repo}/tags/list"));
        assert_eq!(resp.status, 200, "tags of {repo}: {}", resp.text());
        let mut tags: Vec<String> =
            resp.json()["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        tags.sort();
        let mut want: Vec<String> = pushed.iter().filter(|p| p.0 == repo).map(|p| p.1.clone()).collect();
        want.sort();
        assert_eq!(tags, want, "tags of {repo}");
    }
    assert_store_blobs_complete(&d.root);
    assert_store_links_consistent(&d.root);
    d.signal("INT");
    assert_exits_zero(&mut d, Duration::from_secs(10), "after SIGINT");
}

// ---------------------------------------------------------------------------------------------
// Unit files

/// The repository's unit files, copied into `dir` with every `Exec*=` command that runs `pier`
/// pointed at the binary under test: `systemd-analyze verify` checks that an `ExecStart=` binary
/// exists and is executable, and `/usr/bin/pier` is not installed on a test machine. Nothing else
/// is changed.
fn units_in(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for name in ["pier.service", "pier.socket"] {
        let text = std::fs::read_to_string(src.join(name))
            .unwrap_or_else(|e| panic!("{}: {e} (the unit files ship in systemd/)", src.join(name).display()));
        let rewritten: Vec<String> = text
            .lines()
            .map(|line| {
                let Some((key, cmd)) = line.split_once('=') else { return line.to_string() };
                if !key.trim().starts_with("Exec") {
                    return line.to_string();
                }
                let body = cmd.trim_start_matches(['-', '@', ':', '+', '!', '|']);
                let prefix = &cmd[..cmd.len() - body.len()];
                let (prog, rest) = body.split_once(' ').unwrap_or((body, ""));
                if Path::new(prog).file_name().is_some_and(|f| f == "pier") {
                    format!("{key}={prefix}{PIER} {rest}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(dir.join(name), rewritten.join("\n") + "\n").unwrap();
    }
}

#[test]
fn unit_files_pass_systemd_analyze_verify_and_security() {
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    let service = dir.path().join("pier.service");
    let socket = dir.path().join("pier.socket");
    let text = std::fs::read_to_string(&service).unwrap();
    assert!(text.contains(&format!("ExecStart={PIER} ")), "ExecStart not rewritten to the test binary:\n{text}");
    assert!(
        text.lines().any(|l| l.trim() == "Type=notify" || l.trim() == "Type=notify-reload"),
        "pier sends READY=1: the service should be Type=notify:\n{text}"
    );

    // `verify` exits 0 even for misspelled keys, only printing a warning: any output is a failure.
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").arg(&service).arg(&socket);
    let out = output(&mut verify);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", describe_failure(&verify, &out));
    assert!(
        stdout.trim().is_empty() && stderr.trim().is_empty(),
        "systemd-analyze verify printed something:\nstdout: {stdout}\nstderr: {stderr}"
    );

    let mut security = Command::new("systemd-analyze");
    security.args(["security", "--offline=yes"]).arg(&service);
    let out = output(&mut security);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", describe_failure(&security, &out));
    let score = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for pier.service"))
        .unwrap_or_else(|| panic!("no score line in systemd-analyze security:\n{stdout}\n{stderr}"));
    eprintln!("{}", score.trim());
    assert!(stderr.trim().is_empty(), "systemd-analyze security warned:\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Logging

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55word";
const WRONG: &str = "wr0ng-Pa55word";

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() { A[((n >> (18 - 6 * i)) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// A daemon with htpasswd auth for `USER`/`PASSWORD` (file made by `pier htpasswd`).
fn auth_daemon() -> Pier {
    let mut d = daemon("127.0.0.1:0", "");
    let file = d.dir.path().join("htpasswd");
    let mut child = Command::new(PIER)
        .args(["htpasswd", "add", USER, "--password-stdin", "--cost", "4", "--file"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pier htpasswd");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pier htpasswd add: {out:?}");
    d.opts.extra_yaml = format!("auth:\n  htpasswd:\n    realm: pier-test\n    path: {}\n", file.display());
    d.write_config();
    d
}

/// Requests with good, wrong and no credentials; then a graceful stop. Returns the run's log.
fn exercise_and_stop(d: &mut Pier) -> String {
    let good = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let bad = format!("Basic {}", base64(format!("{USER}:{WRONG}").as_bytes()));
    let r = d.req("GET", "/v2/", &[("Authorization", &good)], b"");
    assert_eq!(r.status, 200, "GET /v2/ with good credentials: {}\n{}", r.text(), d.log_tail());
    let r = d.req("GET", "/v2/", &[("Authorization", &bad)], b"");
    assert_eq!(r.status, 401, "GET /v2/ with a wrong password");
    let r = d.req("GET", "/v2/logs/app/manifests/latest", &[("Authorization", &good)], b"");
    assert_eq!(r.status, 404, "GET of a missing manifest: {}", r.text());
    d.stop();
    let log = d.run_log();
    for secret in [PASSWORD, WRONG, good.trim_start_matches("Basic "), bad.trim_start_matches("Basic ")] {
        assert!(!log.contains(secret), "the log contains the credential {secret:?}:\n{log}");
    }
    log
}

#[test]
fn text_and_json_logs_carry_request_fields_and_no_credentials() {
    // Text (the default when stderr is not the journal).
    let mut d = auth_daemon();
    d.serve(&[]);
    let log = exercise_and_stop(&mut d);
    assert!(log.lines().all(|l| !l.starts_with('{')), "JSON lines without log.formatter: json:\n{log}");
    assert!(log.lines().any(|l| l.contains("GET /v2/ 200")), "no text request line for `GET /v2/ 200`:\n{log}");

    // JSON lines (log.formatter: json, here through its REGISTRY_* variable).
    let mut d = auth_daemon();
    d.serve(&[("REGISTRY_LOG_FORMATTER", "json")]);
    let log = exercise_and_stop(&mut d);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    for l in &lines {
        assert!(l.is_object(), "not a JSON object: {l}");
        assert!(l["level"].is_string(), "no string `level`: {l}");
        assert!(l["message"].is_string() || l["msg"].is_string(), "no `message`/`msg`: {l}");
    }
    let text = |l: &serde_json::Value| l["message"].as_str().or(l["msg"].as_str()).unwrap_or("").to_string();
    assert!(lines.iter().any(|l| text(l).contains("listening on")), "no `listening on` message:\n{log}");
    let requests: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("method").is_some()).collect();
    assert!(!requests.is_empty(), "no request lines with a `method` field:\n{log}");
    let mut keys: Vec<&String> = requests[0].as_object().unwrap().keys().collect();
    keys.sort();
    eprintln!("request line fields: {keys:?}");
    let status = |l: &serde_json::Value| l["status"].as_u64().or_else(|| l["status"].as_str()?.parse().ok());
    let path = |l: &serde_json::Value| l["path"].as_str().or(l["uri"].as_str()).unwrap_or("").to_string();
    for want in [200u64, 401] {
        let line = requests
            .iter()
            .find(|l| l["method"] == "GET" && path(l) == "/v2/" && status(l) == Some(want))
            .unwrap_or_else(|| panic!("no request line GET /v2/ {want} (fields method, path|uri, status):\n{log}"));
        assert!(line["status"].is_u64(), "`status` should be a JSON number: {line}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "`duration_ms` should be a non-negative JSON number: {line}"
        );
    }
    assert!(
        requests.iter().any(|l| path(l) == "/v2/logs/app/manifests/latest" && status(l) == Some(404)),
        "no request line for the 404:\n{log}"
    );
}

#[test]
fn journal_stream_without_journald_falls_back_to_stderr() {
    let journald = Path::new("/run/systemd/journal/socket").exists();
    let mut d = daemon(&free_addrs(1)[0].to_string(), "");
    d.addr = d.opts.listen.parse().unwrap();
    // stderr will be this file: JOURNAL_STREAM names its device and inode, as systemd does for a
    // service whose stderr is the journal stream.
    std::fs::File::create(&d.log_path).unwrap();
    let m = std::fs::metadata(&d.log_path).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    d.spawn(&[("JOURNAL_STREAM", &stream)]);
    assert_eq!(d.wait_http(Duration::from_secs(30)), 200, "GET /v2/ with JOURNAL_STREAM={stream}");
    d.stop();
    let log = d.run_log();
    if journald {
        // journald runs here: the lines went there instead of stderr.
        eprintln!("journald is running: checking that stderr stayed quiet");
        assert!(!log.contains("listening on"), "JOURNAL_STREAM matches stderr and journald runs, yet:\n{log}");
    } else {
        assert!(
            log.lines().any(|l| l.to_ascii_lowercase().contains("journal")),
            "no word about falling back from the journal to stderr:\n{log}"
        );
        assert!(log.contains(&format!("listening on {}", d.addr)), "no `listening on` on stderr:\n{log}");
        assert!(log.lines().any(|l| l.contains("GET /v2/ 200")), "no request line on stderr:\n{log}");
        assert!(log.lines().all(|l| !l.starts_with('{')), "text expected, not JSON:\n{log}");
    }

    // JOURNAL_STREAM naming some other file: stderr is not the journal, text lines as usual.
    let other = std::fs::metadata(&d.config).unwrap();
    d.opts.listen = free_addrs(1)[0].to_string();
    d.write_config();
    d.addr = d.opts.listen.parse().unwrap();
    d.spawn(&[("JOURNAL_STREAM", &format!("{}:{}", other.dev(), other.ino()))]);
    assert_eq!(d.wait_http(Duration::from_secs(30)), 200, "GET /v2/ with a foreign JOURNAL_STREAM");
    d.stop();
    let log = d.run_log();
    assert!(log.contains(&format!("listening on {}", d.addr)), "no `listening on` on stderr:\n{log}");
    assert!(log.lines().any(|l| l.contains("GET /v2/ 200")), "no request line on stderr:\n{log}");
}
