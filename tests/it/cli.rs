//! The `pier` command line and configuration, against the real binary: embedded defaults,
//! Distribution config keys, `REGISTRY_*` overrides, clear failures, idle (not total) timeouts.

use crate::harness::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `pier` binary under `timeout`, so a `serve` that wrongly starts fails the test (exit 124)
/// instead of hanging it.
fn pier() -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", "30", PIER]);
    c
}

#[test]
fn unparsable_yaml_exits_2_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "version: 0.1\nhttp:\n  addr: [127.0.0.1:0\nstorage: {}\n").unwrap();
    let out = output(pier().arg("serve").arg("--config").arg(&cfg));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line") && err.contains("column"), "no position in: {err}");
}

#[test]
fn bad_values_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "storage:\n  delete:\n    enabled: sometimes\n").unwrap();
    let out = output(pier().args(["serve", "--config"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.delete.enabled"));

    let out = output(pier().args(["serve", "--config", "/nonexistent/pier.yml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pier.yml"));

    let out = output(pier().arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
    let out = output(pier().arg("--version"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pier "));
}

#[test]
fn unknown_keys_are_named_in_a_warning() {
    let p = Pier::start_with(Options {
        extra_yaml: "  frobnicate: true\nnotifications:\n  endpoints: []\n".into(),
        env: vec![("REGISTRY_HTTP_FROBNICATE".into(), "1".into())],
        ..Default::default()
    });
    assert_eq!(p.get("/v2/").status, 200);
    let log = p.log();
    assert!(log.contains("http.frobnicate"), "{log}");
    assert!(log.contains("REGISTRY_HTTP_FROBNICATE"), "{log}");
    assert!(log.contains("notifications") && log.contains("ignored"), "{log}");
}

/// `pier serve` without a file: embedded defaults (data in ./pier-data), with the listen address
/// moved by the Distribution-style environment override so the test does not need port 5000.
#[test]
fn embedded_defaults_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    // The harness's launcher, running `pier serve` without --config in `dir`.
    let mut p = Pier::new(Options::default());
    let mut serve = Command::new(PIER);
    serve
        .arg("serve")
        .current_dir(dir.path())
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .env("REGISTRY_STORAGE_DELETE_ENABLED", "true");
    p.spawn_cmd(serve);
    let addr = p.wait_listening(1)[0];
    let r = request(addr, "GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
    // Data lands in ./pier-data, and delete is enabled by the override.
    let r = request(addr, "POST", &format!("/v2/x/blobs/uploads/?digest={}", sha256_digest(b"hi")), &[], b"hi");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(dir.path().join("pier-data/meta.redb").is_file());
    assert!(dir.path().join("pier-data/repositories/x/oci-layout").is_file());
    let r = request(addr, "DELETE", &format!("/v2/x/blobs/{}", sha256_digest(b"hi")), &[], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    p.stop();
}

#[test]
fn extra_headers_and_relative_urls() {
    let p = Pier::start_with(Options {
        extra_yaml: "  relativeurls: true\n  headers:\n    X-Content-Type-Options: [nosniff]\n".into(),
        ..Default::default()
    });
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    assert!(r.header("location").unwrap().starts_with("/v2/r/blobs/uploads/"), "{:?}", r.headers);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn prefix_applies_to_every_route_and_location() {
    let p = Pier::start_with(Options { extra_yaml: "  prefix: /registry/\n".into(), ..Default::default() });
    assert_eq!(p.get("/v2/").status, 404);
    assert_eq!(p.get("/registry/v2/").status, 200);
    let r = p.req("POST", "/registry/v2/r/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202);
    let loc = strip_origin(r.header("location").unwrap());
    assert!(loc.starts_with("/registry/v2/r/blobs/uploads/"), "{loc}");
    let d = sha256_digest(b"data");
    let r = p.req("PUT", &format!("{loc}?digest={d}"), &[], b"data");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(strip_origin(r.header("location").unwrap()), format!("/registry/v2/r/blobs/{d}"));
    assert_eq!(p.get(&format!("/registry/v2/r/blobs/{d}")).body, b"data");
}

/// The timeout is on idleness, not on the total: a slow upload that keeps bytes moving for
/// longer than the timeout succeeds; a stalled one is cut.
#[test]
fn idle_timeout_is_not_a_total_timeout() {
    let p = Pier::start_with(Options { extra_yaml: "  idletimeout: 1s\n".into(), ..Default::default() });
    let data = random_bytes(40, 7);
    let d = sha256_digest(&data);
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /v2/slow/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()).unwrap();
    let started = Instant::now();
    for chunk in data.chunks(4) {
        // The pause is the test: a client slower than nothing, faster than the idle timeout.
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(chunk).unwrap();
    }
    assert!(started.elapsed() > Duration::from_secs(2), "the upload must outlast the idle timeout");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(p.get(&format!("/v2/slow/blobs/{d}")).body, data);

    // A stalled body: the server drops the connection after ~1 s of silence.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /v2/slow/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(10), "closed after {waited:?}");
    assert!(p.get(&format!("/v2/slow/blobs/{d}")).status == 200, "the earlier blob is still there");
}

/// `storage.maintenance.uploadpurging` (set here through its `REGISTRY_*` variables): an
/// abandoned upload disappears after `age`; one that keeps receiving data does not.
#[test]
fn abandoned_uploads_are_purged_by_age() {
    let p = Pier::start_with(Options {
        env: vec![
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE".into(), "2s".into()),
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL".into(), "500ms".into()),
        ],
        ..Default::default()
    });
    let start = |p: &Pier| {
        let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
        assert_eq!(r.status, 202);
        strip_origin(r.header("location").unwrap())
    };
    let abandoned = start(&p);
    let active = start(&p);
    let mut sent = 0u64;
    for _ in 0..8 {
        // The pause is the test: an upload active every 500 ms for 4 s outlives the 2 s age.
        std::thread::sleep(Duration::from_millis(500));
        let end = sent + 9;
        let r = p.req(
            "PATCH",
            &active,
            &[("Content-Range", &format!("{sent}-{end}")), ("Content-Type", "application/octet-stream")],
            b"0123456789",
        );
        assert_eq!(r.status, 202, "active upload was purged: {}", r.text());
        sent += 10;
    }
    let r = p.get(&abandoned);
    assert_eq!(r.status, 404, "abandoned upload still there after 4 s: {}", r.text());
    assert_eq!(r.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(std::fs::read_dir(p.root.join("uploads")).unwrap().count(), 1, "only the active upload's file is left");
    assert!(p.log().contains("purged 1 upload"), "{}", p.log());
}

/// blake3 (image-spec `main` only) is an opt-in: refused by default, verified end to end when
/// `storage.digests.blake3` is on.
#[test]
fn blake3_digests_are_opt_in() {
    use pier::core::{Algorithm, Digest};
    let data = random_bytes(300_000, 3);
    let d = Digest::of(Algorithm::Blake3, &data).to_string();

    let off = Pier::start();
    let r = off.req("POST", &format!("/v2/b/blobs/uploads/?digest={d}"), &[], &data);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    assert_eq!(off.req("POST", "/v2/b/blobs/uploads/?digest-algorithm=blake3", &[], b"").status, 400);

    let on = Pier::start_with(Options {
        env: vec![("REGISTRY_STORAGE_DIGESTS_BLAKE3".into(), "true".into())],
        ..Default::default()
    });
    let r = on.req("POST", "/v2/b/blobs/uploads/?digest-algorithm=blake3", &[], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = strip_origin(r.header("location").unwrap());
    let (a, b) = data.split_at(100_000);
    let r = on.req("PATCH", &loc, &[("Content-Range", &format!("0-{}", a.len() - 1))], a);
    assert_eq!(r.status, 202, "{}", r.text());
    let wrong = Digest::of(Algorithm::Blake3, b"other").to_string();
    let r = on.req("PUT", &format!("{}?digest={wrong}", strip_origin(r.header("location").unwrap())), &[], b);
    assert_eq!(r.status, 400, "a wrong blake3 digest is refused: {}", r.text());
    // Again, correctly this time (the failed session was cancelled).
    let r = on.req("POST", &format!("/v2/b/blobs/uploads/?digest={d}"), &[], &data);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = on.get(&format!("/v2/b/blobs/{d}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert!(on.root.join("blobs/blake3").join(&d["blake3:".len()..]).is_file());
}

/// SIGHUP re-reads the config file: reloadable settings (read-only mode, extra headers,
/// deletion) change without a restart, a broken file leaves the running configuration in force,
/// and a change that needs a restart is reported.
#[test]
fn sighup_reloads_the_configuration() {
    let p = Pier::start();
    let original = std::fs::read_to_string(&p.config).unwrap();
    let d = push_blob(&p, "r", b"before reload");

    let reloaded = original
        .replace("storage:\n", "storage:\n  maintenance:\n    readonly:\n      enabled: true\n")
        .replace("http:\n", "http:\n  headers:\n    X-Reloaded: [yes]\n");
    std::fs::write(&p.config, reloaded).unwrap();
    p.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || p.req("POST", "/v2/r/blobs/uploads/", &[], b"").status == 405),
        "read-only mode not applied: {}",
        p.log()
    );
    let r = p.get(&format!("/v2/r/blobs/{d}"));
    assert_eq!(r.status, 200, "reads still work");
    assert_eq!(r.header("x-reloaded"), Some("yes"));
    assert!(p.log().contains("configuration reloaded"), "{}", p.log());

    // A broken file: logged, the running configuration stays.
    std::fs::write(&p.config, "http: [unclosed\n").unwrap();
    p.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || p.log().contains("configuration not reloaded")), "{}", p.log());
    assert_eq!(p.req("POST", "/v2/r/blobs/uploads/", &[], b"").status, 405);

    // Back to the original, plus a change that only a restart can apply.
    std::fs::write(&p.config, original.replace("addr: 127.0.0.1:0", "addr: 127.0.0.1:1")).unwrap();
    p.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || p.req("POST", "/v2/r/blobs/uploads/", &[], b"").status == 202),
        "read-only mode not lifted: {}",
        p.log()
    );
    assert!(p.log().contains("http.addr"), "the address change is reported as needing a restart: {}", p.log());
    assert_eq!(p.get("/v2/").status, 200, "still serving on the original address");
}

/// A config file that is no configuration (what a file being rewritten holds after a power
/// loss, or a wrong path) stops pier with exit 2 and the reason: starting on the defaults would
/// serve the data directory without authentication on every interface.
#[test]
fn unusable_config_files_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "is empty"),
        ("NUL bytes", vec![0; 4096], "NUL bytes"),
        ("NUL bytes after text", b"version: 0.1\n\0\0\0".to_vec(), "NUL bytes"),
        ("comments only", b"# nothing here\n\n".to_vec(), "is empty"),
        ("an empty mapping", b"{}\n".to_vec(), "is empty"),
        ("a scalar", b"hello\n".to_vec(), "expected a mapping"),
        ("a list", b"- version: 0.1\n".to_vec(), "expected a mapping"),
        ("no version", b"http:\n  addr: 127.0.0.1:0\n".to_vec(), "no `version` key"),
        ("not UTF-8", b"version: 0.1\nhttp:\n  addr: \xff\xfe\n".to_vec(), "not UTF-8"),
    ];
    for (what, bytes, why) in cases {
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, &bytes).unwrap();
        let out = output(pier().current_dir(dir.path()).args(["serve", "--config"]).arg(&cfg));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert!(err.contains(why), "{what}: {err}");
        assert!(!err.contains("listening on"), "{what}: pier listened:\n{err}");
    }
    assert!(!dir.path().join("pier-data").exists(), "a refused start created the default data directory");
}

/// Non-UTF-8 bytes in the command line or in unrelated environment variables never crash pier
/// (exit 101 is a Rust panic); a `REGISTRY_*` one is a clear configuration error.
#[test]
fn non_utf8_arguments_and_environment() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let garbage = OsStr::from_bytes(b"\xff\xfe-not-utf8");
    // An argument where a word is expected: a usage error.
    let out = output(pier().arg("serve").arg(garbage));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = output(pier().arg(garbage));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A config path is any bytes: here one that does not exist, reported as such.
    let out = output(pier().args(["serve", "--config"]).arg(garbage));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"), "{out:?}");
    // A REGISTRY_* variable must be text.
    let mut p = Pier::new(Options::default());
    let out = output(p.serve_command().env("REGISTRY_HTTP_ADDR", garbage));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("REGISTRY_HTTP_ADDR"), "{out:?}");
    // Unrelated ones are none of pier's business, at start and at a reload.
    let mut cmd = p.serve_command();
    cmd.env("PIER_TEST_GARBAGE", garbage);
    p.spawn_cmd(cmd);
    p.wait_listening(1);
    assert_eq!(p.get("/v2/").status, 200, "{}", p.log_tail());
    p.signal("HUP");
    p.wait_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(p.get("/v2/").status, 200, "{}", p.log_tail());
    p.stop();
}

/// The soft limit of open files is raised to the hard limit at start (a shell's 1024 would lock
/// clients out at 1,024 connections).
#[test]
fn open_files_limit_is_raised_to_the_hard_limit() {
    let mut p = Pier::new(Options::default());
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=1024:4096").arg(PIER).arg("serve").arg("--config").arg(&p.config);
    p.spawn_cmd(cmd);
    p.wait_listening(1);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let numbers: Vec<&str> = line.split_whitespace().filter(|w| w.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}\n{}", p.log_tail());
    assert!(p.log().contains("open files limit raised from 1024 to 4096"), "{}", p.log_tail());
    p.stop();
}

/// The access log reports the body bytes actually sent and the time until the body ended: a
/// client that reads a few KiB of a 32 MiB blob and goes away is not logged as served 32 MiB.
#[test]
fn access_log_reports_the_bytes_sent_and_the_time_to_the_end() {
    let p = Pier::start();
    let size = 32 << 20;
    let blob = random_bytes(size, 91);
    let d = push_blob(&p, "r", &blob);
    let path = format!("/v2/r/blobs/{d}");
    let line_of = |n: usize| -> String {
        let needle = format!("GET {path} 200 ");
        p.wait_log_count(&needle, n, Duration::from_secs(20));
        p.log().lines().filter(|l| l.contains(&needle)).nth(n - 1).unwrap().to_string()
    };
    let bytes_in = |line: &str| -> u64 {
        let field = line.split_whitespace().find(|w| w.ends_with('B') && w[..w.len() - 1].parse::<u64>().is_ok());
        field.and_then(|w| w[..w.len() - 1].parse().ok()).unwrap_or_else(|| panic!("no byte count in {line:?}"))
    };
    // Read whole: every byte.
    let r = p.get(&path);
    assert_eq!(r.body.len(), size);
    assert_eq!(bytes_in(&line_of(1)), size as u64);
    // Headers and 64 KiB, then gone.
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = vec![0u8; 64 << 10];
    s.read_exact(&mut first).unwrap();
    let asked = Instant::now();
    std::thread::sleep(Duration::from_millis(300)); // the client stalls (this is the test)
    drop(s);
    let line = line_of(2);
    let sent = bytes_in(&line);
    assert!(sent < size as u64 / 2, "{sent} bytes logged for a client that read 64 KiB: {line}");
    let ms: f64 = line.rsplit(' ').next().and_then(|w| w.strip_suffix("ms")?.parse().ok()).unwrap();
    assert!(ms >= 250.0 && ms < asked.elapsed().as_secs_f64() * 1000.0 + 1000.0, "duration {ms} ms: {line}");
    // HEAD sends no body.
    assert_eq!(p.req("HEAD", &path, &[], b"").status, 200);
    p.wait_log(&format!("HEAD {path} 200 0B"), Duration::from_secs(10));
}
