//! The local admin channel (`admin.sock` in the data directory) and `pier status`, against the
//! real binary: the same answer from a running daemon and from the store read directly; only
//! the daemon's user and root are answered; malformed requests get an error and change nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn status(p: &Pier, json: bool) -> (bool, String) {
    let mut cmd = Command::new(PIER);
    cmd.arg("status").arg("--config").arg(&p.config);
    if json {
        cmd.arg("--json");
    }
    let out = output(&mut cmd);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn status_json(p: &Pier) -> Value {
    let (ok, text) = status(p, true);
    assert!(ok, "pier status --json failed: {text}\n{}", p.log_tail());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Sends one raw request line and returns the answer's lines.
fn raw_request(socket: &std::path::Path, line: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(socket).expect("connect to the admin socket");
    s.write_all(line).unwrap();
    BufReader::new(s).lines().map(|l| serde_json::from_str(&l.unwrap()).expect("a JSON event")).collect()
}

#[test]
fn status_answers_the_same_from_the_daemon_and_from_the_store() {
    let mut p = Pier::start();
    push_image(&p, "team/app", "v1", &[b"layer one", b"layer two"]);
    push_image(&p, "team/app", "v2", &[b"layer one", b"layer three"]);
    push_blob(&p, "other", b"layer one");
    let socket = p.root.join("admin.sock");
    let meta = std::fs::metadata(&socket).expect("admin.sock in the data directory");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "only the daemon's user may connect");

    let running = status_json(&p);
    assert_eq!(running["daemon"]["pid"], p.pid(), "{running}");
    assert_eq!(running["daemon"]["listening"][0], p.addr.to_string(), "{running}");
    let store = running["store"].clone();
    assert_eq!(store["repositories"], 2, "{running}");
    assert_eq!(store["tags"], 2, "{running}");
    assert_eq!(store["manifests"], 2, "{running}");
    // Two configs, three distinct layers, two manifests.
    assert_eq!(store["blobs"], 7, "{running}");
    assert_eq!(store["uploads"], 0, "{running}");
    let (ok, human) = status(&p, false);
    assert!(ok && human.contains(&format!("running, pid {}", p.pid())), "{human}");
    assert!(human.contains("repositories    2"), "{human}");
    assert!(p.log().contains("admin: status (uid 0)"), "{}", p.log_tail());

    p.stop();
    assert!(!socket.exists(), "the socket goes with the daemon");
    let stopped = status_json(&p);
    assert_eq!(stopped["daemon"], Value::Null, "{stopped}");
    // The same counts read directly; the shutdown wrote every index.json still due.
    let mut expected = store.clone();
    expected["layouts_due"] = 0.into();
    assert_eq!(stopped["store"], expected, "the same counts read directly");
    let (ok, human) = status(&p, false);
    assert!(ok && human.contains("no daemon running"), "{human}");

    // A socket file left by a crash is replaced at the next start.
    p.serve(&[]);
    p.kill9();
    assert!(socket.exists());
    p.serve(&[]);
    assert_eq!(status_json(&p)["daemon"]["pid"], p.pid());
}

#[test]
fn the_admin_channel_answers_only_its_user_and_refuses_malformed_requests() {
    let p = Pier::start();
    let socket = p.root.join("admin.sock");

    // Another user, even with the file opened up to everyone, is refused by the peer check.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&p.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(p.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", PIER, "status", "--config"])
            .arg(&p.config),
    );
    let answer = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{answer}");
    assert!(answer.contains("uid 65534 may not use the admin channel"), "{answer}");
    assert!(!answer.contains("repositories"), "nothing about the store leaks: {answer}");
    assert!(p.log().contains("admin socket: refused a connection: uid 65534"), "{}", p.log_tail());

    // Malformed, unknown and oversized requests get an error event and nothing else.
    for (line, expected) in [
        (b"not json\n".to_vec(), "malformed request"),
        (b"{\"command\":\"format-disk\"}\n".to_vec(), "malformed request"),
        (b"{\"command\":\"status\",\"extra\":1}\n".to_vec(), "malformed request"),
        ([vec![b' '; 70 * 1024], b"\n".to_vec()].concat(), "request longer than"),
    ] {
        let events = raw_request(&socket, &line);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], "error", "{events:?}");
        assert!(events[0]["message"].as_str().unwrap().contains(expected), "{events:?}");
    }
    // A well-formed one still works, and the registry serves on.
    let events = raw_request(&socket, b"{\"command\":\"status\"}\n");
    assert_eq!(events.last().unwrap()["event"], "done", "{events:?}");
    assert_eq!(p.get("/v2/").status, 200);
}

/// The admin socket can be systemd's (socket activation, `ListenStream=<root>/admin.sock`):
/// the first maintenance command starts pier, which takes the inherited Unix socket as its admin
/// channel (beside the registry's TCP socket) and answers; the file stays systemd's.
#[test]
fn a_maintenance_command_starts_pier_through_an_activated_admin_socket() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = Pier::new(Options { listen: occupied.local_addr().unwrap().to_string(), ..Options::default() });
    std::fs::create_dir_all(&p.root).unwrap();
    let admin = p.root.join("admin.sock");
    let addr = free_addrs(1)[0];
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(addr.to_string()).arg("-l").arg(&admin);
    cmd.arg(PIER).arg("serve").arg("--config").arg(&p.config);
    p.spawn_cmd(cmd);
    wait_until(std::time::Duration::from_secs(10), || admin.exists());
    assert!(!p.log().contains("listening on"), "pier runs before any connection:\n{}", p.log());

    // `pier status` connects to the socket: systemd-socket-activate execs pier, which answers.
    let running = status_json(&p);
    assert_eq!(running["daemon"]["pid"], p.pid(), "{running}");
    assert_eq!(running["daemon"]["listening"][0], addr.to_string(), "{running}");
    assert!(p.log().contains("socket activation: the admin socket from systemd"), "{}", p.log_tail());
    assert!(!p.log().contains("will not find it"), "{}", p.log_tail());
    p.addr = addr;
    assert_eq!(p.get("/v2/").status, 200, "the registry serves on the activated TCP socket");
    p.stop();
    assert!(admin.exists(), "the socket file is systemd's: pier leaves it");
    drop(occupied);
}
