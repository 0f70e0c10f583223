//! `pier fsck [--repair]` against the real binary: files and layouts damaged by hand are
//! reported, then rebuilt from the metadata (on a stopped store, and through the running
//! daemon); a blob with no intact file left is quarantined, reported lost, and healed by a push.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// `pier fsck ARGS --json`: (exit code, report).
fn fsck(p: &Pier, args: &[&str]) -> (i32, Value) {
    let out = output(Command::new(PIER).arg("fsck").arg("--config").arg(&p.config).args(args).arg("--json"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}\n{}", String::from_utf8_lossy(&out.stderr), p.log_tail()));
    (out.status.code().unwrap_or(-1), report)
}

fn link(p: &Pier, repo: &str, digest: &str) -> std::path::PathBuf {
    p.root.join("repositories").join(repo).join("blobs/sha256").join(&digest[7..])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn fsck_reports_damaged_files_and_repair_rebuilds_them_from_the_metadata() {
    let mut p = Pier::start();
    let (shared, only_a) = (random_bytes(150_000, 70), random_bytes(90_000, 71));
    let a = push_image(&p, "a", "v1", &[&shared, &only_a]);
    push_image(&p, "b", "v1", &[&shared]);
    let a_manifest = p.get("/v2/a/manifests/v1").body;
    let b_manifest = p.get("/v2/b/manifests/v1").body;
    let (shared_d, only_a_d) = (sha256_digest(&shared), sha256_digest(&only_a));
    let (code, clean) = fsck(&p, &[]);
    assert_eq!(code, 0, "a fresh store is consistent (through the daemon): {clean}");
    assert!(p.log().contains("admin: fsck (uid"), "{}", p.log_tail());
    p.stop();

    // Damage: a missing link, a link that is a copy (another inode), a global file gone (its
    // repository link remains), index.json gone and garbled, oci-layout gone.
    std::fs::remove_file(link(&p, "a", &only_a_d)).unwrap();
    let copy = link(&p, "b", &shared_d);
    std::fs::remove_file(&copy).unwrap();
    std::fs::write(&copy, &shared).unwrap();
    std::fs::remove_file(store_blob_path(&p.root, &a)).unwrap();
    std::fs::remove_file(p.root.join("repositories/b/index.json")).unwrap();
    std::fs::write(p.root.join("repositories/a/index.json"), b"{\"garbled\":").unwrap();
    std::fs::remove_file(p.root.join("repositories/a/oci-layout")).unwrap();

    let (code, found) = fsck(&p, &[]);
    assert_eq!(code, 1, "{found}");
    let problems = strings(&found["problems"]).join("\n");
    for what in [&only_a_d, &shared_d, &a, &"index.json".to_string()] {
        assert!(problems.contains(what.as_str()), "{what} not reported:\n{problems}");
    }
    assert!(!link(&p, "a", &only_a_d).exists(), "a check alone changes nothing");

    let (code, repair) = fsck(&p, &["--repair"]);
    assert_eq!(code, 0, "{repair}");
    assert_eq!((repair["lost"].clone(), repair["unrepairable"].clone()), (Value::Array(vec![]), Value::Array(vec![])));
    let repaired = strings(&repair["repaired"]).join("\n");
    assert!(repaired.contains(&format!("{a}: global file restored from repositories/a")), "{repaired}");
    assert!(repaired.contains(&format!("{only_a_d}: relinked into a")), "{repaired}");
    assert!(repaired.contains(&format!("{shared_d}: relinked into b")), "{repaired}");
    let (code, after) = fsck(&p, &[]);
    assert_eq!((code, after["problems"].clone()), (0, Value::Array(vec![])), "{after}");

    // One inode per blob again, complete layouts, and every byte serves.
    let global = std::fs::metadata(store_blob_path(&p.root, &shared_d)).unwrap();
    for repo in ["a", "b"] {
        assert_eq!(std::fs::metadata(link(&p, repo, &shared_d)).unwrap().ino(), global.ino(), "{repo}");
        assert_eq!(
            std::fs::read(p.root.join("repositories").join(repo).join("oci-layout")).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index: Value =
            serde_json::from_slice(&std::fs::read(p.root.join("repositories").join(repo).join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1", "{repo}: {index}");
    }
    p.serve(&[]);
    assert_eq!(p.get("/v2/a/manifests/v1").body, a_manifest);
    assert_eq!(p.get("/v2/b/manifests/v1").body, b_manifest);
    assert_eq!(p.get(&format!("/v2/a/blobs/{only_a_d}")).body, only_a);
    assert_eq!(p.get(&format!("/v2/b/blobs/{shared_d}")).body, shared);
}

#[test]
fn a_blob_with_no_intact_file_is_reported_lost_and_a_push_heals_it() {
    let p = Pier::start();
    let (layer, other) = (random_bytes(120_000, 72), random_bytes(60_000, 73));
    push_image(&p, "c", "v1", &[&layer, &other]);
    let d = sha256_digest(&layer);
    // Every file of the blob gone while the daemon serves.
    std::fs::remove_file(store_blob_path(&p.root, &d)).unwrap();
    std::fs::remove_file(link(&p, "c", &d)).unwrap();

    let (code, report) = fsck(&p, &["--repair"]);
    assert_eq!(code, 1, "data is lost: not a clean result: {report}");
    let lost = strings(&report["lost"]);
    assert_eq!(lost.len(), 1, "{report}");
    assert!(lost[0].starts_with(&d), "{report}");
    let r = p.get(&format!("/v2/c/blobs/{d}"));
    assert_eq!((r.status, r.error_code()), (404, "BLOB_UNKNOWN".to_string()), "never a broken read");
    assert_eq!(p.get(&format!("/v2/c/blobs/{}", sha256_digest(&other))).body, other);

    // The client pushes it again (it is unknown): healed, and fsck is clean.
    push_blob(&p, "c", &layer);
    assert_eq!(p.get(&format!("/v2/c/blobs/{d}")).body, layer);
    let (code, after) = fsck(&p, &[]);
    assert_eq!(code, 0, "{after}");
}
