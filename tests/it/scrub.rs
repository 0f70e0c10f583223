//! `pier scrub` against the real binary: a blob corrupted on disk by hand is found, taken out of
//! service (never served again as it is) and healed for every repository by a push of the same
//! content.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// `pier scrub --json`: (exit code, report).
fn scrub(p: &Pier) -> (i32, Value) {
    let out = output(Command::new(PIER).arg("scrub").arg("--config").arg(&p.config).arg("--json"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}\n{}", String::from_utf8_lossy(&out.stderr), p.log_tail()));
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn a_corrupt_blob_is_quarantined_and_a_push_heals_it_everywhere() {
    let mut p = Pier::start();
    let layer = random_bytes(200_000, 60);
    let other = random_bytes(50_000, 61);
    let manifest = push_image(&p, "a", "v1", &[&layer, &other]);
    push_image(&p, "b", "v1", &[&layer]);
    let digest = sha256_digest(&layer);
    let (code, clean) = scrub(&p);
    assert_eq!((code, clean["corrupt"].clone()), (0, Value::Array(vec![])), "a clean store: {clean}");

    // Bit rot: one byte of the file (every repository's hardlink is the same inode).
    let global = store_blob_path(&p.root, &digest);
    std::fs::set_permissions(&global, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&global).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&global, &bytes).unwrap();

    let (code, report) = scrub(&p);
    assert_eq!(code, 1, "corruption found: {report}");
    let corrupt = report["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{report}");
    assert_eq!(corrupt[0]["digest"], digest.as_str());
    assert!(corrupt[0]["why"].as_str().unwrap().contains("content hashes to"), "{report}");
    assert!(p.log().contains(&format!("{digest} is corrupt")), "{}", p.log_tail());
    // Never served again as it is: unknown everywhere, its files out of the layouts.
    for repo in ["a", "b"] {
        let r = p.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!((r.status, r.error_code()), (404, "BLOB_UNKNOWN".to_string()), "{repo}");
        assert_eq!(p.req("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], b"").status, 404, "{repo}");
        assert!(!p.root.join("repositories").join(repo).join("blobs/sha256").join(&digest[7..]).exists());
    }
    assert!(p.root.join("quarantine/sha256").join(&digest[7..]).exists(), "kept for inspection");
    assert_eq!(p.get(&format!("/v2/a/blobs/{}", sha256_digest(&other))).body, other, "the rest serves");
    let (code, again) = scrub(&p);
    assert_eq!((code, again["still_quarantined"].clone()), (0, Value::from(1)), "not found again: {again}");

    // It stays out of service across a restart, and a push of the same content heals it for
    // both repositories.
    p.restart();
    assert_eq!(p.get(&format!("/v2/b/blobs/{digest}")).status, 404);
    push_blob(&p, "a", &layer);
    for repo in ["a", "b"] {
        assert_eq!(p.get(&format!("/v2/{repo}/blobs/{digest}")).body, layer, "{repo} healed");
    }
    assert_eq!(p.get(&format!("/v2/a/manifests/{manifest}")).status, 200);
    assert!(!p.root.join("quarantine/sha256").join(&digest[7..]).exists(), "the corrupt copy is gone");
    assert!(p.log().contains("healed by a push of the same content"), "{}", p.log_tail());
    assert_store_links_consistent(&p.root);
    let (code, report) = scrub(&p);
    assert_eq!((code, report["still_quarantined"].clone()), (0, Value::from(0)), "{report}");

    // With no daemon running the command scrubs the store itself.
    p.stop();
    let (code, report) = scrub(&p);
    assert_eq!(code, 0, "{report}");
    assert!(report["blobs"].as_u64().unwrap() >= 5, "{report}");
}

/// `storage.maintenance.scrub`: the daemon scrubs by itself at the configured rate, finds a
/// blob corrupted on disk and takes it out of service, and a stop interrupts a scrub at once.
#[test]
fn the_background_scrub_finds_corruption_at_its_rate() {
    let env = [
        ("REGISTRY_STORAGE_MAINTENANCE_SCRUB_ENABLED", "true"),
        ("REGISTRY_STORAGE_MAINTENANCE_SCRUB_INTERVAL", "2s"),
        ("REGISTRY_STORAGE_MAINTENANCE_SCRUB_RATE", "1MiB"),
    ];
    let mut p = Pier::start_with(Options {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    });
    // 3 MiB of blobs: at 1 MiB/s a scrub takes about 3 s.
    let (a, b, c) = (random_bytes(1 << 20, 80), random_bytes(1 << 20, 81), random_bytes(1 << 20, 82));
    push_image(&p, "bg", "v1", &[&a, &b, &c]);
    let digest = sha256_digest(&b);
    let global = store_blob_path(&p.root, &digest);
    std::fs::set_permissions(&global, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&global).unwrap();
    bytes[77] ^= 1;
    std::fs::write(&global, &bytes).unwrap();

    let finished =
        |p: &Pier| p.log().lines().filter(|l| l.contains("background scrub:") && l.contains("checked in")).count();
    wait_until(std::time::Duration::from_secs(60), || finished(&p) >= 1);
    let line =
        p.log().lines().find(|l| l.contains("background scrub:") && l.contains("checked in")).unwrap().to_string();
    assert!(line.contains("1 corrupt"), "{line}");
    // Paced: 3 MiB (and the small config) at 1 MiB/s cannot take less than about 2 s.
    let secs: u64 =
        line.split(" checked in ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(secs >= 2, "a scrub at 1 MiB/s of 3 MiB took {secs} s: {line}");
    assert!(p.log().contains(&format!("{digest} is corrupt")), "{}", p.log_tail());
    let r = p.get(&format!("/v2/bg/blobs/{digest}"));
    assert_eq!((r.status, r.error_code()), (404, "BLOB_UNKNOWN".to_string()));
    assert_eq!(p.get(&format!("/v2/bg/blobs/{}", sha256_digest(&a))).body, a);

    // A push heals it; the next scrubs (every 2 s here) find nothing.
    push_blob(&p, "bg", &b);
    let before = finished(&p);
    wait_until(std::time::Duration::from_secs(60), || finished(&p) > before);
    let last = p
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("background scrub:") && l.contains("checked in"))
        .unwrap()
        .to_string();
    assert!(last.contains(" 0 corrupt"), "{last}");
    p.stop();
    assert!(!p.log().contains("panicked"), "{}", p.log_tail());
}
