//! Full disks, for real: pier's data directory on a small loop-mounted ext4 (`LoopFs`).
//!
//! Covered: a client cannot reserve space it does not send (a PATCH announcing 10 GiB that sends
//! 10 bytes); a disk filled up to ENOSPC answers 507, shows nothing partial, and works again
//! once space is free, without a restart, although redb failed a metadata commit (which latches
//! the database handle until it is reopened); the free-space reserve (`storage.filesystem.reserve`)
//! refuses uploads at once with 507 while pulls go on, live across SIGHUP; the systemd watchdog
//! stops pinging while metadata writes fail and the database cannot be reopened (an immutable
//! file: `chattr +i`), and pings again once it can.

use crate::harness::*;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A pier whose data directory is on `fs`, with `storage.filesystem.reserve: reserve`; not
/// started.
fn pier_on(fs: &LoopFs, reserve: &str) -> Pier {
    let mut p = Pier::new(Options { delete_enabled: true, ..Default::default() });
    p.root = fs.path().join("data");
    set_reserve(&p, reserve);
    p
}

/// Writes the config with `storage.filesystem.reserve: reserve` (pier re-reads it on SIGHUP).
fn set_reserve(p: &Pier, reserve: &str) {
    p.write_config();
    let text = std::fs::read_to_string(&p.config).unwrap();
    let root_line = format!("    rootdirectory: {}\n", p.root.display());
    assert!(text.contains(&root_line), "config layout changed:\n{text}");
    let text = text.replace(&root_line, &format!("{root_line}    reserve: {reserve}\n"));
    std::fs::write(&p.config, text).unwrap();
}

/// Changes the reserve of a running pier with SIGHUP.
fn reload_reserve(p: &Pier, reserve: &str) {
    set_reserve(p, reserve);
    let n = p.log_count("configuration reloaded");
    p.signal("HUP");
    p.wait_log_count("configuration reloaded", n + 1, Duration::from_secs(10));
}

/// An image config blob and a manifest referring to it (no layers).
fn config_and_manifest(seed: &str) -> (Vec<u8>, Vec<u8>) {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}-{}\"}}", nonce()).into_bytes();
    let manifest = image_manifest((&sha256_digest(&config), config.len()), &[]);
    (config, manifest)
}

/// Bytes allocated to a file (0 if it is missing).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// A monolithic blob push (POST, then PUT with the body); the last response.
fn try_push_blob(p: &Pier, repo: &str, data: &[u8]) -> Response {
    let r = p.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    if r.status != 202 {
        return r;
    }
    let loc = strip_origin(r.header("location").expect("Location on POST"));
    p.req("PUT", &with_digest(&loc, &sha256_digest(data)), &[("Content-Type", "application/octet-stream")], data)
}

/// Asserts a 507 with an OCI error body whose message contains `message`.
#[track_caller]
fn assert_insufficient_storage(r: &Response, message: &str, what: &str) {
    assert_eq!(r.status, 507, "{what}: {}", show(r));
    let m = r.json()["errors"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(m.contains(message), "{what}: message {m:?} does not say {message:?}");
    assert!(!r.error_code().is_empty(), "{what}: no OCI error code: {}", show(r));
}

fn tags(p: &Pier, repo: &str) -> Vec<String> {
    let r = p.get(&format!("/v2/{repo}/tags/list"));
    assert_eq!(r.status, 200, "tags of {repo}: {}", show(&r));
    r.json()["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn catalog(p: &Pier) -> Vec<String> {
    let r = p.get("/v2/_catalog");
    assert_eq!(r.status, 200, "catalog: {}", show(&r));
    r.json()["repositories"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// Space follows the bytes received: on a 160 MiB filesystem, a PATCH announcing 10 GiB that
/// sends 10 bytes and goes away takes at most the preallocation window (64 MiB) while it runs,
/// not all of it, and once it ended, nothing beyond its bytes.
#[test]
fn an_announced_length_does_not_take_the_free_space() {
    let fs = LoopFs::new(160);
    let mut p = pier_on(&fs, "0");
    p.serve(&[]);
    let loc = start_upload(&p, "r");
    let before = fs.free();
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10737418240\r\n\r\n0123456789")
        .unwrap();
    s.flush().unwrap();
    let file = upload_file(&p.root, &loc);
    assert!(wait_until(Duration::from_secs(10), || allocated(&file) > 0), "nothing allocated for {file:?}");
    assert!(allocated(&file) <= 65 * MIB, "{} MiB allocated for 10 bytes", allocated(&file) / MIB);
    drop(s);
    p.wait_log(&format!("PATCH {loc} 400"), Duration::from_secs(10));
    let after = fs.free();
    eprintln!("free space: {} KiB before the PATCH, {} KiB after it", before >> 10, after >> 10);
    assert!(before > 140 * MIB, "the filesystem should have room for far more than the window: {before}");
    assert!(before - after <= MIB, "{} KiB taken for 10 bytes received", (before - after) >> 10);
    // The session goes on from the 10 bytes.
    let r = p.get(&loc);
    assert_eq!(r.status, 204, "{}", show(&r));
    assert_eq!(r.header("range"), Some("0-9"));
}

/// A disk filled up to ENOSPC: every failure is a 507 (never a 500) and leaves nothing partial
/// visible; when a metadata commit failed too (redb then fails every write of that handle), the
/// next write reopens the database, and once space is free, pushes work again: same process.
#[test]
fn a_full_disk_answers_507_and_heals_without_a_restart() {
    let fs = LoopFs::new(40);
    let mut p = pier_on(&fs, "0");
    p.serve(&[]);
    let pid = p.pid();
    let (config, manifest) = config_and_manifest("full");
    let config_digest = push_blob(&p, "r", &config);
    push_manifest(&p, "r", "v0", OCI_MANIFEST, &manifest);

    // Blobs until the disk is full: the one that does not fit is a 507 and stays unknown.
    let mut pushed = Vec::new();
    let refused = loop {
        assert!(pushed.len() < 20, "40 MiB took twenty 4 MiB blobs");
        let blob = random_bytes(4 * MIB as usize, pushed.len() as u64 + 1);
        let r = try_push_blob(&p, "r", &blob);
        if r.status == 201 {
            pushed.push(sha256_digest(&blob));
            continue;
        }
        assert_insufficient_storage(&r, "storage full", "the blob that does not fit");
        break sha256_digest(&blob);
    };
    eprintln!("{} blobs of 4 MiB fit; {} KiB left", pushed.len(), fs.free() >> 10);
    assert_eq!(p.req("HEAD", &format!("/v2/r/blobs/{refused}"), &[], b"").status, 404, "the refused blob is visible");
    // Then the rest of the space, and new tags (metadata only) until a commit fails.
    let filler = fs.fill("filler");
    assert!(fs.free() < MIB, "{} bytes still free after the filler", fs.free());
    let mut failed_commit = None;
    for i in 0..2000 {
        let r = p.req("PUT", &format!("/v2/r/manifests/t{i}"), &[("Content-Type", OCI_MANIFEST)], &manifest);
        if r.status == 201 {
            continue;
        }
        assert_insufficient_storage(&r, "storage full", &format!("tag t{i} on a full disk"));
        if r.text().contains("commit metadata") {
            failed_commit = Some(i);
            break;
        }
    }
    let Some(i) = failed_commit else { panic!("no metadata commit failed on the full disk:\n{}", p.log_tail()) };
    // Nothing partial: the tag is not there; pulls go on.
    assert_eq!(get_manifest(&p, "r", &format!("t{i}")).status, 404, "tag t{i} exists though its commit failed");
    assert!(!tags(&p, "r").contains(&format!("t{i}")), "tag list shows t{i}");
    assert_eq!(catalog(&p), ["r"]);
    assert_eq!(get_manifest(&p, "r", "v0").body, manifest, "pull after the failed commit");
    assert_eq!(p.get(&format!("/v2/r/blobs/{config_digest}")).body, config);
    // Still full. The next write reopens the database; a tag (metadata only: index.json is
    // written in the background) then either fits in the pages the failed commit left free
    // (201) or fails again (507): either way the registry shows what the client was told.
    let r = p.req("PUT", "/v2/r/manifests/still-full", &[("Content-Type", OCI_MANIFEST)], &manifest);
    if r.status == 201 {
        assert!(tags(&p, "r").contains(&"still-full".to_string()), "acknowledged tag missing");
    } else {
        assert_insufficient_storage(&r, "storage full", "a tag while the disk is still full");
        assert!(!tags(&p, "r").contains(&"still-full".to_string()), "refused tag visible");
    }
    assert!(p.log_count("metadata database reopened") >= 1, "no reopen logged:\n{}", p.log_tail());
    // Data does not fit: a blob is still refused.
    let r = try_push_blob(&p, "r", &random_bytes(MIB as usize, 98));
    assert_insufficient_storage(&r, "storage full", "a blob while the disk is still full");

    // Space comes back (the filler goes): the next push works, in the same process; a delete
    // frees more, and blobs fit again.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    let freed = Instant::now();
    let r = p.req("PUT", &format!("/v2/r/manifests/t{i}"), &[("Content-Type", OCI_MANIFEST)], &manifest);
    eprintln!(
        "{filler} bytes of filler removed; tag t{i} pushed {} ms later: {}",
        freed.elapsed().as_millis(),
        r.status
    );
    assert_eq!(r.status, 201, "a push after space came back: {}\n{}", show(&r), p.log_tail());
    assert!(tags(&p, "r").contains(&format!("t{i}")));
    let deleted = pushed.remove(0);
    let r = p.req("DELETE", &format!("/v2/r/blobs/{deleted}"), &[], b"");
    assert_eq!(r.status, 202, "DELETE of a blob: {}", show(&r));
    let blob = random_bytes(MIB as usize, 99);
    let d = push_blob(&p, "r", &blob);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).body, blob);
    assert_eq!(p.pid(), pid, "pier was restarted");
    assert!(p.is_running());
    for d in &pushed {
        assert_eq!(p.req("HEAD", &format!("/v2/r/blobs/{d}"), &[], b"").status, 200, "blob {d} acknowledged before");
    }
    // And the data directory is consistent after a restart's sweep.
    p.stop();
    p.serve(&[]);
    assert_store_blobs_complete(&p.root);
    assert_store_links_consistent(&p.root);
    assert_eq!(get_manifest(&p, "r", &format!("t{i}")).body, manifest);
    assert_eq!(p.req("HEAD", &format!("/v2/r/blobs/{refused}"), &[], b"").status, 404);
}

/// Below `storage.filesystem.reserve`, uploads are refused at once (507, before the body is
/// read) while pulls, status and cancels go on; the reserve changes live on SIGHUP.
#[test]
fn below_the_reserve_uploads_are_refused_at_once_and_pulls_go_on() {
    let fs = LoopFs::new(64);
    let mut p = pier_on(&fs, "0");
    p.serve(&[]);
    let (config, manifest) = config_and_manifest("reserve");
    let config_digest = push_blob(&p, "r", &config);
    push_manifest(&p, "r", "v1", OCI_MANIFEST, &manifest);
    let open_session = start_upload(&p, "r");

    // 1GB is more than the whole filesystem.
    reload_reserve(&p, "1GB");
    let free_mib = fs.free() / MIB;
    let reason = "free space below the configured reserve (";
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
    assert_insufficient_storage(&r, reason, "POST below the reserve");
    let m = r.json()["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(m.contains(" MiB free, reserve 953 MiB)"), "message {m:?} (about {free_mib} MiB free)");
    // A monolithic POST announcing 50 MiB is answered before its body is sent.
    let data = random_bytes(1000, 7);
    let path = format!("/v2/r/blobs/uploads/?digest={}", sha256_digest(&data));
    let mut s = send_partial(p.addr, "POST", &path, &[("Content-Type", "application/octet-stream")], b"", 50 << 20);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = try_read_response(&mut s, false).expect("an answer without the body");
    assert_insufficient_storage(&r, reason, "monolithic POST below the reserve");
    // A chunk for a session opened before, and a manifest.
    let r = p.req("PATCH", &open_session, &[("Content-Type", "application/octet-stream")], &data);
    assert_insufficient_storage(&r, "below the configured reserve", "PATCH below the reserve");
    let (other_config, other) = config_and_manifest("other");
    let r = p.req("PUT", "/v2/r/manifests/v2", &[("Content-Type", OCI_MANIFEST)], &other);
    assert_insufficient_storage(&r, "below the configured reserve", "manifest PUT below the reserve");
    // Pulls, listings and upload status go on; a cancel frees space.
    assert_eq!(get_manifest(&p, "r", "v1").body, manifest);
    let r = p.get(&format!("/v2/r/blobs/{config_digest}"));
    assert_eq!((r.status, &r.body), (200, &config));
    assert_eq!(tags(&p, "r"), ["v1"]);
    assert_eq!(catalog(&p), ["r"]);
    assert_eq!(p.get(&open_session).status, 204);
    assert_eq!(p.req("DELETE", &open_session, &[], b"").status, 204);
    assert!(p.log_count("upload refused: free space below the configured reserve") >= 1, "{}", p.log_tail());

    // A reserve the filesystem has room for: uploads are accepted again, without a restart,
    // except one announcing more than fits above the reserve.
    reload_reserve(&p, "8MiB");
    let d = push_blob(&p, "r", &data);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).body, data);
    push_blob(&p, "r", &other_config);
    push_manifest(&p, "r", "v2", OCI_MANIFEST, &other);
    let loc = start_upload(&p, "r");
    // 4 bytes of the 10 GiB are sent, and the refusal comes at once.
    let mut s = TcpStream::connect(p.addr).unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        10u64 << 30
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"0123").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = try_read_response(&mut s, false).expect("an answer to the 10 GiB PATCH");
    assert_insufficient_storage(
        &r,
        "10240 MiB more would take free space below the configured reserve",
        "10 GiB PATCH",
    );
    assert_eq!(allocated(&upload_file(&p.root, &loc)), 0, "the refused PATCH wrote or allocated space");
}

/// A body of unknown length (chunked) that streams past the reserve is stopped mid-stream with
/// 507, and its bytes are cut back off: the space comes back at once and the session stays
/// usable from where it was.
#[test]
fn a_streamed_body_that_reaches_the_reserve_is_stopped_and_gives_its_space_back() {
    let fs = LoopFs::new(96);
    let mut p = pier_on(&fs, "0");
    p.serve(&[]);
    let free = fs.free();
    // Leave room for ~24 MiB above the reserve.
    let reserve_mib = free / MIB - 24;
    reload_reserve(&p, &format!("{reserve_mib}MiB"));
    let loc = start_upload(&p, "r");
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let piece = random_bytes(1 << 20, 3);
    let mut sent = 0u64;
    // Up to 64 MiB: far past the reserve; the server stops reading at some point.
    for _ in 0..64 {
        if write!(s, "{:x}\r\n", piece.len())
            .and_then(|()| s.write_all(&piece))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent += piece.len() as u64;
    }
    let _ = s.write_all(b"0\r\n\r\n");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = try_read_response(&mut s, false).expect("an answer to the streamed PATCH");
    assert_insufficient_storage(&r, "below the configured reserve", "streamed PATCH past the reserve");
    eprintln!("streamed {} MiB; free space {} MiB before, {} MiB after", sent / MIB, free / MIB, fs.free() / MIB);
    assert!(
        fs.free() + 2 * MIB >= free,
        "the refused chunk's bytes stay on disk: {} MiB free of {}",
        fs.free() / MIB,
        free / MIB
    );
    let status = p.get(&loc);
    assert_eq!(
        (status.status, status.header("range")),
        (204, Some("0-0")),
        "the session is back at its start: {}",
        show(&status)
    );
}

/// The watchdog pings only while metadata can be written: a commit that fails (the database
/// file made immutable) latches redb, the file cannot be reopened, so pings stop and STATUS says
/// why, while pulls go on; once the file is writable again the probe reopens it and pings resume.
#[test]
fn the_watchdog_stops_pinging_while_metadata_writes_fail() {
    let fs = LoopFs::new(64);
    let mut p = pier_on(&fs, "0");
    let mut n = Notify::new();
    p.serve(&[("NOTIFY_SOCKET", &n.env()), ("WATCHDOG_USEC", "400000")]);
    let pings =
        |n: &mut Notify, d: Duration| n.collect_for(d).into_iter().filter(|(_, m)| has_line(m, "WATCHDOG=1")).count();
    assert!(pings(&mut n, Duration::from_secs(2)) >= 3, "no regular pings:\n{}", n.dump());
    let (config, manifest) = config_and_manifest("watchdog");
    push_blob(&p, "r", &config);
    push_manifest(&p, "r", "v1", OCI_MANIFEST, &manifest);

    let db = p.root.join("meta.redb");
    run(std::process::Command::new("chattr").arg("+i").arg(&db));
    let _undo = Immutable(db.clone());
    let r = p.req("PUT", "/v2/r/manifests/v2", &[("Content-Type", OCI_MANIFEST)], &manifest);
    assert_eq!(r.status, 500, "a tag whose commit fails: {}", show(&r));
    // Pings stop (after at most one already on its way) and STATUS says why.
    let Some(_) =
        n.wait_for(Duration::from_secs(5), |m| value(m, "STATUS").is_some_and(|s| s.starts_with("degraded:")))
    else {
        panic!("no STATUS=degraded: while writes fail:\n{}\n{}", n.dump(), p.log_tail())
    };
    let stopped = pings(&mut n, Duration::from_secs(2));
    assert_eq!(stopped, 0, "pings went on while metadata writes fail:\n{}", n.dump());
    assert_eq!(get_manifest(&p, "r", "v1").body, manifest, "pull while writes fail");
    assert_eq!(get_manifest(&p, "r", "v2").status, 404, "tag whose commit failed");

    run(std::process::Command::new("chattr").arg("-i").arg(&db));
    let healed = Instant::now();
    let Some(_) = n.wait_for(Duration::from_secs(5), |m| has_line(m, "WATCHDOG=1")) else {
        panic!("pings did not resume once the file was writable:\n{}\n{}", n.dump(), p.log_tail())
    };
    eprintln!("pings resumed {} ms after the file became writable", healed.elapsed().as_millis());
    assert!(pings(&mut n, Duration::from_secs(2)) >= 3, "pings did not go on:\n{}", n.dump());
    assert!(
        n.received.iter().any(|(_, m)| value(m, "STATUS").is_some_and(|s| s.contains("probes pass again"))),
        "STATUS not restored:\n{}",
        n.dump()
    );
    push_manifest(&p, "r", "v2", OCI_MANIFEST, &manifest);
    assert!(p.is_running());
}

/// Makes a file mutable again when dropped (the loop filesystem can then be cleaned up even if
/// the test failed).
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}
