//! `quotas:` against the real binary: a push that would take a repository past its quota is
//! refused with `DENIED` naming the quota and the usage, leaves nothing visible, and other
//! repositories are not concerned; deletes make room again.

use crate::harness::*;

/// `small/*` may hold 300,000 bytes.
fn with_quota() -> Pier {
    Pier::start_with(Options {
        delete_enabled: true,
        extra_yaml: String::from("quotas:\n  - repos: \"small/*\"\n    size: 300KB\n"),
        ..Options::default()
    })
}

/// A monolithic push (POST, then PUT with the body): the PUT's answer.
fn try_push_blob(p: &Pier, repo: &str, data: &[u8]) -> Response {
    let loc = start_upload(p, repo);
    p.req("PUT", &with_digest(&loc, &sha256_digest(data)), &[("Content-Type", "application/octet-stream")], data)
}

#[test]
fn a_push_past_the_quota_is_denied_and_leaves_nothing() {
    let p = with_quota();
    let first = random_bytes(200_000, 70);
    let second = random_bytes(150_000, 71);
    push_blob(&p, "small/app", &first);

    let r = try_push_blob(&p, "small/app", &second);
    assert_eq!((r.status, r.error_code()), (403, "DENIED".to_string()), "{}", r.text());
    let message = r.text();
    assert!(message.contains("quota") && message.contains("0.3 MiB") && message.contains("0.2 MiB used"), "{message}");
    let d = sha256_digest(&second);
    assert_eq!(p.req("HEAD", &format!("/v2/small/app/blobs/{d}"), &[], b"").status, 404, "nothing visible");
    assert!(p.log().contains("push refused: repository small/app would go past its quota"), "{}", p.log_tail());

    // A blob the repository has costs nothing; other repositories have no quota.
    push_blob(&p, "small/app", &first);
    push_blob(&p, "big", &second);
    // Nor may a mount take it past the quota.
    let r = p.req("POST", &format!("/v2/small/app/blobs/uploads/?mount={d}&from=big"), &[], b"");
    assert_eq!((r.status, r.error_code()), (403, "DENIED".to_string()), "{}", r.text());

    // A deleted blob makes room.
    let fd = sha256_digest(&first);
    assert_eq!(p.req("DELETE", &format!("/v2/small/app/blobs/{fd}"), &[], b"").status, 202);
    push_blob(&p, "small/app", &second);
    assert_eq!(p.get(&format!("/v2/small/app/blobs/{d}")).body, second);
}

#[test]
fn a_repository_at_its_quota_refuses_new_uploads_at_once_and_skopeo_says_why() {
    let p = with_quota();
    push_blob(&p, "small/full", &random_bytes(300_000, 72));
    let r = p.req("POST", "/v2/small/full/blobs/uploads/", &[], b"");
    assert_eq!((r.status, r.error_code()), (403, "DENIED".to_string()), "{}", r.text());
    assert!(r.text().contains("is at its quota"), "{}", r.text());

    // A real client gets the message.
    let img = Image::new("quota", "amd64", &[400_000], 73);
    let src = tmpdir();
    write_image_layout(src.path(), "t", &img);
    let out = skopeo_output(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", src.path().display()),
        &format!("docker://{}/small/img:t", p.host()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push must fail");
    assert!(stderr.contains("quota"), "skopeo shows the reason: {stderr}");
    assert_eq!(p.get("/v2/small/img/manifests/t").status, 404);
    assert_store_links_consistent(&p.root);
}

/// `quotas:` is live: a SIGHUP with a larger quota lets the refused push through, without a
/// restart.
#[test]
fn a_reload_changes_the_quota_at_once() {
    let mut p = with_quota();
    let (first, second) = (random_bytes(200_000, 74), random_bytes(150_000, 75));
    push_blob(&p, "small/app", &first);
    assert_eq!(try_push_blob(&p, "small/app", &second).status, 403);
    p.opts.extra_yaml = String::from("quotas:\n  - repos: \"small/*\"\n    size: 1MB\n");
    p.write_config();
    p.signal("HUP");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || try_push_blob(&p, "small/app", &second).status == 201),
        "the larger quota was not applied after SIGHUP:\n{}",
        p.log_tail()
    );
    assert!(!p.log().contains("take effect after a restart"), "quotas are live: {}", p.log_tail());
    assert!(p.is_running());
}
