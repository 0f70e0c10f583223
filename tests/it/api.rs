//! End-to-end tests of the OCI Distribution API (v1.1) served by the real `pier` binary.
//!
//! Every test starts its own `Pier` (own data directory, own port), so they run in parallel.

use crate::harness::*;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const FOUR_MIB: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[track_caller]
pub(crate) fn assert_status(r: &Response, status: u16) {
    assert_eq!(r.status, status, "unexpected status: {}", show(r));
    assert_api_header(r);
}

#[track_caller]
pub(crate) fn assert_api_header(r: &Response) {
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "missing Docker-Distribution-Api-Version: {}",
        show(r)
    );
}

/// Asserts an OCI error response: status, JSON content type, `errors[0].code` and a message.
#[track_caller]
pub(crate) fn assert_error(r: &Response, status: u16, code: &str) {
    assert_error_ctx(r, status, code, "");
}

/// [`assert_error`] with a description of the request for the failure message.
#[track_caller]
pub(crate) fn assert_error_ctx(r: &Response, status: u16, code: &str, ctx: &str) {
    assert_eq!(r.status, status, "{ctx}: expected {status} {code}: {}", show(r));
    assert_api_header(r);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "{ctx}: error Content-Type {ct:?}: {}", show(r));
    let v = r.json();
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{ctx}: no errors array: {}", show(r)));
    assert!(!errors.is_empty(), "{ctx}: empty errors array: {}", show(r));
    assert_eq!(errors[0]["code"].as_str(), Some(code), "{ctx}: wrong error code: {}", show(r));
    assert!(errors[0]["message"].is_string(), "{ctx}: error without message: {}", show(r));
}

/// Opens an upload session; returns (upload path, response).
#[track_caller]
pub(crate) fn start_upload(p: &Pier, repo: &str) -> (String, Response) {
    let r = p.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_status(&r, 202);
    (location(&r), r)
}

/// Opens an upload session and PATCHes `first` into it; asserts 202 and returns the next
/// location.
#[track_caller]
fn start_upload_with(p: &Pier, repo: &str, first: &[u8]) -> String {
    let (loc, _) = start_upload(p, repo);
    let r = patch_chunk(p, &loc, 0, first);
    assert_status(&r, 202);
    location(&r)
}

pub(crate) fn patch_chunk(p: &Pier, loc: &str, start: usize, data: &[u8]) -> Response {
    let cr = format!("{}-{}", start, start + data.len() - 1);
    p.req("PATCH", loc, &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)], data)
}

pub(crate) fn put_digest(p: &Pier, loc: &str, digest: &str, body: &[u8]) -> Response {
    p.req("PUT", &with_query(loc, &format!("digest={digest}")), &[("Content-Type", "application/octet-stream")], body)
}

/// `OCI-Chunk-Min-Length` of a POST response, as a chunk size usable by the tests.
#[track_caller]
pub(crate) fn chunk_size(r: &Response) -> usize {
    let v = r.header("oci-chunk-min-length").unwrap_or_else(|| panic!("no OCI-Chunk-Min-Length: {}", show(r)));
    let n: usize = v.trim().parse().unwrap_or_else(|_| panic!("OCI-Chunk-Min-Length not a number: {v:?}"));
    n.max(1000)
}

fn split_digest(d: &str) -> (&str, &str) {
    d.split_once(':').expect("digest")
}

fn global_blob(p: &Pier, digest: &str) -> PathBuf {
    let (alg, hex) = split_digest(digest);
    p.root.join("blobs").join(alg).join(hex)
}

pub(crate) fn repo_dir(p: &Pier, repo: &str) -> PathBuf {
    p.root.join("repositories").join(repo)
}

fn repo_blob(p: &Pier, repo: &str, digest: &str) -> PathBuf {
    let (alg, hex) = split_digest(digest);
    repo_dir(p, repo).join("blobs").join(alg).join(hex)
}

/// Closes the upload at `loc` with a PUT `?digest=` of `data` carrying `last` (what is left of
/// `data`, possibly nothing); asserts 201 and that `repo` then serves exactly `data`.
#[track_caller]
fn finish_upload(p: &Pier, repo: &str, loc: &str, data: &[u8], last: &[u8]) {
    let d = sha256_digest(data);
    let r = put_digest(p, loc, &d, last);
    assert_status(&r, 201);
    get_blob_ok(p, repo, &d, data);
}

#[track_caller]
pub(crate) fn get_blob_ok(p: &Pier, repo: &str, digest: &str, data: &[u8]) {
    let r = p.get(&format!("/v2/{repo}/blobs/{digest}"));
    assert_status(&r, 200);
    assert!(r.body == data, "blob {digest} in {repo}: body differs ({} vs {} bytes)", r.body.len(), data.len());
    assert_eq!(r.header("docker-content-digest"), Some(digest), "{}", show(&r));
}

pub(crate) fn tags_of(p: &Pier, repo: &str) -> Vec<String> {
    let r = p.get(&format!("/v2/{repo}/tags/list"));
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["name"], repo, "{}", show(&r));
    v["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("tags not an array: {}", show(&r)))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// The path of a `Link: <...>; rel="next"` header, if any.
#[track_caller]
fn next_link(r: &Response) -> Option<String> {
    let l = r.header("link")?;
    assert!(l.contains("rel=\"next\""), "Link without rel=\"next\": {l:?}");
    let start = l.find('<').expect("Link has <") + 1;
    let end = l.find('>').expect("Link has >");
    Some(strip_origin(&l[start..end]))
}

/// HEAD over a raw socket, returning the parsed head and whatever bytes followed it.
fn raw_head(p: &Pier, path: &str) -> (Response, Vec<u8>) {
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "HEAD {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", p.addr).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("end of head") + 4;
    let resp = read_response(&mut &all[..end], true);
    (resp, all[end..].to_vec())
}

/// `Transfer-Encoding: chunked` framing of `parts`.
fn chunked_framing(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Pushes `{}` (the OCI empty descriptor's content) and returns its descriptor.
fn push_empty_config(p: &Pier, repo: &str) -> Value {
    let d = push_blob(p, repo, b"{}");
    json!({"mediaType": OCI_EMPTY, "digest": d, "size": 2})
}

/// An OCI image manifest (as JSON value) with the given config descriptor and one layer.
fn artifact_manifest(
    config: Value,
    layer: (&str, usize),
    artifact_type: Option<&str>,
    subject: Option<Value>,
    annotations: Option<Value>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.0, "size": layer.1}],
    });
    if let Some(a) = artifact_type {
        m["artifactType"] = json!(a);
    }
    if let Some(s) = subject {
        m["subject"] = s;
    }
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    serde_json::to_vec(&m).unwrap()
}

/// An OCI image index of exactly `total` bytes (padded with an annotation).
fn padded_index(total: usize) -> Vec<u8> {
    let mk = |pad: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
            "annotations": {"pad": "x".repeat(pad)},
        }))
        .unwrap()
    };
    let base = mk(0).len();
    let v = mk(total - base);
    assert_eq!(v.len(), total);
    v
}

// ---------------------------------------------------------------------------------------------
// Base, routing, error format
// ---------------------------------------------------------------------------------------------

#[test]
fn base_endpoint() {
    let p = Pier::start();
    let r = p.get("/v2/");
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({}), "{}", show(&r));
}

#[test]
fn unknown_routes_are_404_with_api_header() {
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"layer"]);
    for path in ["/", "/v3/", "/favicon.ico", "/v2/r/tags/lists", "/v2/r/foo/bar", "/v2/r/manifests"] {
        let r = p.get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", show(&r));
        assert_api_header(&r);
    }
}

#[test]
fn error_body_format() {
    let p = Pier::start();
    let r = p.get("/v2/nosuchrepo/manifests/latest");
    assert_error(&r, 404, "NAME_UNKNOWN");
    let v = r.json();
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{}", show(&r));
    assert!(!v["errors"][0]["message"].as_str().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Blob reads
// ---------------------------------------------------------------------------------------------

#[test]
fn blob_get_and_head_headers() {
    let p = Pier::start();
    let data = random_bytes(1000, 1);
    let d = push_blob(&p, "r", &data);
    let path = format!("/v2/r/blobs/{d}");

    let r = p.get(&path);
    assert_status(&r, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-length"), Some("1000"), "{}", show(&r));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));

    let (h, rest) = raw_head(&p, &path);
    assert_status(&h, 200);
    assert!(rest.is_empty(), "HEAD sent {} body bytes", rest.len());
    assert_eq!(h.header("content-length"), Some("1000"), "{}", show(&h));
    assert_eq!(h.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(h.header("etag"), Some(format!("\"{d}\"").as_str()));
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    assert_eq!(h.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn blob_range_requests() {
    let p = Pier::start();
    let data = random_bytes(100, 2);
    let d = push_blob(&p, "r", &data);
    let path = format!("/v2/r/blobs/{d}");
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=95-200", 95, 99),
        ("bytes=-1000", 0, 99),
    ];
    for (range, a, b) in cases {
        let r = p.req("GET", &path, &[("Range", range)], b"");
        assert_eq!(r.status, 206, "Range {range}: {}", show(&r));
        assert_api_header(&r);
        assert_eq!(r.header("content-range"), Some(format!("bytes {a}-{b}/100").as_str()), "Range {range}");
        assert_eq!(r.header("content-length"), Some((b - a + 1).to_string().as_str()), "Range {range}");
        assert_eq!(r.body, &data[*a..=*b], "Range {range}");
    }
    for range in ["bytes=100-", "bytes=100-200", "bytes=5000-"] {
        let r = p.req("GET", &path, &[("Range", range)], b"");
        assert_eq!(r.status, 416, "Range {range}: {}", show(&r));
        assert_api_header(&r);
        assert_eq!(r.header("content-range"), Some("bytes */100"), "Range {range}: {}", show(&r));
        assert_eq!(r.error_code(), "RANGE_INVALID", "Range {range}: not BLOB_UNKNOWN: the blob is there");
    }
}

#[test]
fn empty_blob() {
    let p = Pier::start();
    let r = p.req("POST", &format!("/v2/r/blobs/uploads/?digest={EMPTY_SHA256}"), &[], b"");
    assert_status(&r, 201);
    let r = p.get(&format!("/v2/r/blobs/{EMPTY_SHA256}"));
    assert_status(&r, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("docker-content-digest"), Some(EMPTY_SHA256));
    let r = p.req("GET", &format!("/v2/r/blobs/{EMPTY_SHA256}"), &[("Range", "bytes=0-")], b"");
    assert_eq!(r.status, 416, "{}", show(&r));
    assert_eq!(r.header("content-range"), Some("bytes */0"));
}

#[test]
fn blobs_are_scoped_to_their_repository() {
    let p = Pier::start();
    let data = b"only in repo a".to_vec();
    let d = push_blob(&p, "a", &data);
    push_blob(&p, "b", b"something else in b");
    get_blob_ok(&p, "a", &d, &data);

    let r = p.get(&format!("/v2/b/blobs/{d}"));
    assert_error(&r, 404, "BLOB_UNKNOWN");
    let r = p.req("HEAD", &format!("/v2/b/blobs/{d}"), &[], b"");
    assert_status(&r, 404);

    // Never-seen repository.
    let r = p.get(&format!("/v2/never/seen/blobs/{d}"));
    assert_error(&r, 404, "NAME_UNKNOWN");

    // Unknown digest in a known repository.
    let r = p.get(&format!("/v2/a/blobs/{}", sha256_digest(b"nope")));
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

#[test]
fn blob_delete() {
    let p = Pier::start();
    let data = b"to be deleted".to_vec();
    let d = push_blob(&p, "a", &data);
    push_blob(&p, "b", &data);
    let r = p.req("DELETE", &format!("/v2/a/blobs/{d}"), &[], b"");
    assert_status(&r, 202);
    let r = p.get(&format!("/v2/a/blobs/{d}"));
    assert_error(&r, 404, "BLOB_UNKNOWN");
    let r = p.req("HEAD", &format!("/v2/a/blobs/{d}"), &[], b"");
    assert_status(&r, 404);
    // Repository b still has its copy.
    get_blob_ok(&p, "b", &d, &data);
    // Deleting again: unknown.
    let r = p.req("DELETE", &format!("/v2/a/blobs/{d}"), &[], b"");
    assert_error(&r, 404, "BLOB_UNKNOWN");
    // Same after a restart.
    let mut p = p;
    p.kill9();
    p.restart();
    assert_error(&p.get(&format!("/v2/a/blobs/{d}")), 404, "BLOB_UNKNOWN");
    get_blob_ok(&p, "b", &d, &data);
}

#[test]
fn manifest_delete_is_scoped_to_its_repository() {
    let mut p = Pier::start();
    let d = push_image(&p, "a", "v1", &[b"shared layer"]);
    let m = p.get("/v2/a/manifests/v1").body;
    push_image(&p, "b", "v1", &[b"shared layer"]);
    assert_eq!(p.get("/v2/b/manifests/v1").body, m, "same config and layer give the same manifest");
    assert_status(&p.req("DELETE", &format!("/v2/a/manifests/{d}"), &[], b""), 202);
    assert_error(&p.get("/v2/a/manifests/v1"), 404, "MANIFEST_UNKNOWN");
    for _ in 0..2 {
        for reference in ["v1", d.as_str()] {
            let r = p.get(&format!("/v2/b/manifests/{reference}"));
            assert_eq!(r.status, 200, "b:{reference}: {}", show(&r));
            assert_eq!(r.body, m);
        }
        p.kill9();
        p.restart();
    }
    // Pushing it again into a works.
    push_manifest(&p, "a", "v1", OCI_MANIFEST, &m);
    assert_eq!(p.get(&format!("/v2/a/manifests/{d}")).body, m);
}

#[test]
fn delete_disabled_is_unsupported() {
    let p = Pier::start_with(Options { delete_enabled: false, ..Default::default() });
    let md = push_image(&p, "r", "v1", &[b"layer one"]);
    let ld = sha256_digest(b"layer one");
    let r = p.req("DELETE", &format!("/v2/r/blobs/{ld}"), &[], b"");
    assert_error(&r, 405, "UNSUPPORTED");
    let r = p.req("DELETE", &format!("/v2/r/manifests/{md}"), &[], b"");
    assert_error(&r, 405, "UNSUPPORTED");
    let r = p.req("DELETE", "/v2/r/manifests/v1", &[], b"");
    assert_error(&r, 405, "UNSUPPORTED");
    get_blob_ok(&p, "r", &ld, b"layer one");
    assert_status(&p.get("/v2/r/manifests/v1"), 200);
    assert_status(&p.get(&format!("/v2/r/manifests/{md}")), 200);
}

// ---------------------------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------------------------

#[test]
fn upload_session_headers_and_status() {
    let p = Pier::start();
    let (loc, r) = start_upload(&p, "r");
    assert!(loc.starts_with("/v2/r/blobs/uploads/"), "Location {loc:?}");
    let uuid = r.header("docker-upload-uuid").expect("Docker-Upload-UUID").to_string();
    assert!(!uuid.is_empty());
    assert_eq!(r.header("range"), Some("0-0"), "{}", show(&r));
    chunk_size(&r);

    let s = p.get(&loc);
    assert_status(&s, 204);
    assert_eq!(s.header("docker-upload-uuid"), Some(uuid.as_str()), "{}", show(&s));
    assert!(s.header("range").is_some(), "{}", show(&s));
    assert!(location(&s).starts_with("/v2/r/blobs/uploads/"), "{}", show(&s));

    // After a chunk the status reports the bytes received.
    let r = patch_chunk(&p, &loc, 0, &[7u8; 1234]);
    assert_status(&r, 202);
    let loc = location(&r);
    let s = p.get(&loc);
    assert_status(&s, 204);
    assert_eq!(s.header("range"), Some("0-1233"), "{}", show(&s));
    assert_eq!(s.header("docker-upload-uuid"), Some(uuid.as_str()));
}

#[test]
fn single_request_push() {
    let p = Pier::start();
    let data = random_bytes(5000, 3);
    let d = sha256_digest(&data);
    let r = p.req(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        &data,
    );
    assert_status(&r, 201);
    assert_eq!(location(&r), format!("/v2/r/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    get_blob_ok(&p, "r", &d, &data);

    // Wrong digest: refused, not stored.
    let other = sha256_digest(b"other");
    let r = p.req(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={other}"),
        &[("Content-Type", "application/octet-stream")],
        b"not other",
    );
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_eq!(p.get(&format!("/v2/r/blobs/{other}")).status, 404);
    assert_eq!(p.get(&format!("/v2/r/blobs/{}", sha256_digest(b"not other"))).status, 404);
}

#[test]
fn monolithic_put() {
    let p = Pier::start();
    let data = random_bytes(70_000, 4);
    let d = sha256_digest(&data);
    let (loc, _) = start_upload(&p, "r");
    let r = put_digest(&p, &loc, &d, &data);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let l = location(&r);
    assert_eq!(l, format!("/v2/r/blobs/{d}"));
    get_blob_ok(&p, "r", &d, &data);
    // The finished session is gone.
    let r = p.get(&loc);
    assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn chunked_upload() {
    let p = Pier::start();
    let (mut loc, r) = start_upload(&p, "r");
    let c = chunk_size(&r);
    let data = random_bytes(3 * c + 17, 5);
    let d = sha256_digest(&data);
    let mut off = 0;
    while off < data.len() {
        let end = (off + c).min(data.len());
        let r = patch_chunk(&p, &loc, off, &data[off..end]);
        assert_status(&r, 202);
        assert_eq!(r.header("range"), Some(format!("0-{}", end - 1).as_str()), "{}", show(&r));
        loc = location(&r);
        off = end;
    }
    let r = p.get(&loc);
    assert_status(&r, 204);
    assert_eq!(r.header("range"), Some(format!("0-{}", data.len() - 1).as_str()));
    let r = put_digest(&p, &loc, &d, b"");
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn chunked_upload_with_last_chunk_in_put() {
    let p = Pier::start();
    let (loc, r) = start_upload(&p, "r");
    let c = chunk_size(&r);
    let data = random_bytes(c + 333, 6);
    let d = sha256_digest(&data);
    let r = patch_chunk(&p, &loc, 0, &data[..c]);
    assert_status(&r, 202);
    let loc = location(&r);
    let cr = format!("{}-{}", c, data.len() - 1);
    let r = p.req(
        "PUT",
        &with_query(&loc, &format!("digest={d}")),
        &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
        &data[c..],
    );
    assert_status(&r, 201);
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn chunked_upload_last_chunk_in_put_without_content_range() {
    let p = Pier::start();
    let (loc, r) = start_upload(&p, "r");
    let c = chunk_size(&r);
    let data = random_bytes(c + 99, 7);
    let r = patch_chunk(&p, &loc, 0, &data[..c]);
    assert_status(&r, 202);
    finish_upload(&p, "r", &location(&r), &data, &data[c..]);
}

/// An error answered before the request body is read still reaches a client that writes its
/// whole body before reading (as Go's HTTP client does: docker, podman, skopeo, crane): pier
/// reads and discards the rest of the body before closing (a lingering close), so the client
/// never sees `broken pipe`/`connection reset` instead of the 416. 200 times in a row.
#[test]
fn early_errors_reach_clients_that_write_the_whole_body_first() {
    use std::io::Write;
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let chunk = random_bytes(1 << 20, 9);
    for i in 0..200 {
        // Small socket buffers, as over a real network: the body cannot all sit in the kernel's
        // buffers before the server has answered.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_send_buffer_size(64 << 10).unwrap();
        socket.connect(&p.addr.into()).unwrap();
        let mut s: std::net::TcpStream = socket.into();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: 5-{}\r\nContent-Length: {}\r\n\r\n",
            p.addr,
            5 + chunk.len() - 1,
            chunk.len()
        );
        s.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("PATCH {i}: writing the head: {e}"));
        s.write_all(&chunk).unwrap_or_else(|e| panic!("PATCH {i}: writing the body: {e}"));
        let r = try_read_response(&mut s, false).unwrap_or_else(|e| panic!("PATCH {i}: reading the answer: {e}"));
        assert_error_ctx(&r, 416, "BLOB_UPLOAD_INVALID", &format!("out-of-order PATCH {i}"));
    }
    assert_eq!(p.get(&loc).header("range"), Some("0-0"), "the session is untouched");
}

#[test]
fn out_of_order_chunk_is_416() {
    let p = Pier::start();
    let (loc, r) = start_upload(&p, "r");
    let c = chunk_size(&r);
    let data = random_bytes(3 * c, 8);
    let r = patch_chunk(&p, &loc, 0, &data[..c]);
    assert_status(&r, 202);
    let loc = location(&r);
    let cur = format!("0-{}", c - 1);

    // Skipping ahead, rewinding to 0, and overlapping by one byte are all refused.
    for start in [2 * c, 0, c - 1] {
        let r = patch_chunk(&p, &loc, start, &data[start..start + c]);
        assert_error(&r, 416, "BLOB_UPLOAD_INVALID");
        assert_eq!(r.header("range"), Some(cur.as_str()), "chunk at {start}: {}", show(&r));
    }
    // The session is intact and continues at the right offset.
    let s = p.get(&loc);
    assert_status(&s, 204);
    assert_eq!(s.header("range"), Some(cur.as_str()));
    let r = patch_chunk(&p, &loc, c, &data[c..2 * c]);
    assert_status(&r, 202);
    assert_eq!(r.header("range"), Some(format!("0-{}", 2 * c - 1).as_str()));
    let r = patch_chunk(&p, &location(&r), 2 * c, &data[2 * c..]);
    assert_status(&r, 202);
    finish_upload(&p, "r", &location(&r), &data, b"");
}

#[test]
fn streamed_patch_with_transfer_encoding_chunked() {
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let a = random_bytes(10_000, 9);
    let b = random_bytes(3, 10);
    let c = random_bytes(70_001, 11);
    let body = chunked_framing(&[&a, &b, &c]);
    let r =
        p.req("PATCH", &loc, &[("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")], &body);
    assert_status(&r, 202);
    let total = a.len() + b.len() + c.len();
    assert_eq!(r.header("range"), Some(format!("0-{}", total - 1).as_str()), "{}", show(&r));
    let data = [a, b, c].concat();
    finish_upload(&p, "r", &location(&r), &data, b"");
}

#[test]
fn streamed_patch_without_content_length_twice() {
    // Two streamed PATCHes in a row append.
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let a = random_bytes(4096, 12);
    let b = random_bytes(5000, 13);
    let hdrs = [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")];
    let r = p.req("PATCH", &loc, &hdrs, &chunked_framing(&[&a]));
    assert_status(&r, 202);
    let r = p.req("PATCH", &location(&r), &hdrs, &chunked_framing(&[&b[..100], &b[100..]]));
    assert_status(&r, 202);
    assert_eq!(r.header("range"), Some(format!("0-{}", a.len() + b.len() - 1).as_str()));
    let data = [a, b].concat();
    finish_upload(&p, "r", &location(&r), &data, b"");
}

#[test]
fn cancel_upload() {
    let p = Pier::start();
    let loc = start_upload_with(&p, "r", b"some bytes");
    let r = p.req("DELETE", &loc, &[], b"");
    assert_status(&r, 204);
    assert_error(&p.get(&loc), 404, "BLOB_UPLOAD_UNKNOWN");
    let r = put_digest(&p, &loc, &sha256_digest(b"some bytes"), b"");
    assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(p.get(&format!("/v2/r/blobs/{}", sha256_digest(b"some bytes"))).status, 404);
}

#[test]
fn unknown_upload_uuid() {
    let p = Pier::start();
    push_blob(&p, "r", b"make the repo exist");
    let loc = "/v2/r/blobs/uploads/0b6f3b7c-6a4c-4f7e-9d7a-3b2f1e0d9c8b";
    assert_error(&p.get(loc), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&patch_chunk(&p, loc, 0, b"abc"), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&put_digest(&p, loc, &sha256_digest(b"abc"), b"abc"), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&p.req("DELETE", loc, &[], b""), 404, "BLOB_UPLOAD_UNKNOWN");
    let loc = "/v2/r/blobs/uploads/not-a-uuid-at-all";
    assert_eq!(p.get(loc).status, 404);
}

#[test]
fn upload_session_is_bound_to_its_repository() {
    // An upload opened for repo a cannot be continued or finished through repo b's URL.
    let p = Pier::start();
    push_blob(&p, "b", b"b exists");
    let (loc, _) = start_upload(&p, "a");
    let uuid = loc.trim_start_matches("/v2/a/blobs/uploads/").to_string();
    let other = format!("/v2/b/blobs/uploads/{uuid}");
    let data = b"smuggled".to_vec();
    let d = sha256_digest(&data);
    let r = put_digest(&p, &other, &d, &data);
    assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(p.get(&format!("/v2/b/blobs/{d}")).status, 404);
    // Still usable through its own repository.
    finish_upload(&p, "a", &loc, &data, &data);
    assert_error(&p.get(&format!("/v2/b/blobs/{d}")), 404, "BLOB_UNKNOWN");
}

#[test]
fn wrong_digest_at_put_is_refused_and_leaves_nothing() {
    let p = Pier::start();
    let data = random_bytes(20_000, 14);
    let actual = sha256_digest(&data);
    let claimed = sha256_digest(b"something else");
    let (loc, _) = start_upload(&p, "r");
    let r = put_digest(&p, &loc, &claimed, &data);
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_eq!(p.get(&format!("/v2/r/blobs/{claimed}")).status, 404);
    assert_eq!(p.get(&format!("/v2/r/blobs/{actual}")).status, 404);
    let left = files_under(&p.root.join("blobs"));
    assert!(left.is_empty(), "files left under <root>/blobs: {left:?}");
    assert!(!repo_blob(&p, "r", &claimed).exists());
    assert!(!repo_blob(&p, "r", &actual).exists());

    // Same via chunks.
    let (loc, _) = start_upload(&p, "r");
    let r = patch_chunk(&p, &loc, 0, &data);
    assert_status(&r, 202);
    let r = put_digest(&p, &location(&r), &claimed, b"");
    assert_error(&r, 400, "DIGEST_INVALID");
    let left = files_under(&p.root.join("blobs"));
    assert!(left.is_empty(), "files left under <root>/blobs: {left:?}");
    assert_eq!(p.get(&format!("/v2/r/blobs/{actual}")).status, 404);
}

#[test]
fn malformed_digests_are_digest_invalid() {
    let p = Pier::start();
    push_blob(&p, "r", b"repo exists");
    let hex64 = "a".repeat(64);
    let bad = [
        "sha256:xyz".to_string(),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        // blake3 is off unless storage.digests.blake3 is set.
        format!("blake3:{hex64}"),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha256:{}", "A".repeat(64)),
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855".to_string(),
        format!("sha512:{hex64}"),
        "sha256:".to_string(),
        format!("sha256{hex64}"),
        format!("sha256:{}g", "a".repeat(63)),
    ];
    for d in &bad {
        // Without a ':' too: whatever follows `blobs/` (but `uploads`) is meant as a digest.
        let r = p.get(&format!("/v2/r/blobs/{d}"));
        assert_error_ctx(&r, 400, "DIGEST_INVALID", &format!("GET /v2/r/blobs/{d}"));
        let (loc, _) = start_upload(&p, "r");
        let r = put_digest(&p, &loc, d, b"data");
        assert_error_ctx(&r, 400, "DIGEST_INVALID", &format!("PUT {loc}?digest={d}"));
        let r = p.req("POST", &format!("/v2/r/blobs/uploads/?digest={d}"), &[], b"data");
        assert_error_ctx(&r, 400, "DIGEST_INVALID", &format!("POST /v2/r/blobs/uploads/?digest={d}"));
    }
    assert_eq!(p.get(&format!("/v2/r/blobs/{}", sha256_digest(b"data"))).status, 404);
}

#[test]
fn sha512_blobs() {
    let p = Pier::start();
    // Single-request push with a sha512 digest.
    let data = random_bytes(3000, 15);
    let d = sha512_digest(&data);
    let r = p.req("POST", &format!("/v2/r/blobs/uploads/?digest={d}"), &[], &data);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = p.get(&format!("/v2/r/blobs/{d}"));
    assert_status(&r, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
    let r = p.req("GET", &format!("/v2/r/blobs/{d}"), &[("Range", "bytes=10-19")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);

    // digest-algorithm=sha512 session, chunked then PUT.
    let data2 = random_bytes(9000, 16);
    let d2 = sha512_digest(&data2);
    let r = p.req("POST", "/v2/r/blobs/uploads/?digest-algorithm=sha512", &[], b"");
    assert_status(&r, 202);
    let r = patch_chunk(&p, &location(&r), 0, &data2[..5000]);
    assert_status(&r, 202);
    let r = put_digest(&p, &location(&r), &d2, &data2[5000..]);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(d2.as_str()));
    get_blob_ok(&p, "r", &d2, &data2);

    // Wrong sha512 digest.
    let r = p.req("POST", "/v2/r/blobs/uploads/?digest-algorithm=sha512", &[], b"");
    assert_status(&r, 202);
    let r = put_digest(&p, &location(&r), &d2, b"not data2");
    assert_error(&r, 400, "DIGEST_INVALID");

    // Stored on disk under sha512.
    assert!(global_blob(&p, &d).exists(), "{:?}", global_blob(&p, &d));
    assert!(repo_blob(&p, "r", &d2).exists());
}

#[test]
fn sha512_digest_without_algorithm_hint() {
    // A plain session (no digest-algorithm) finished with a sha512 digest.
    let p = Pier::start();
    let data = random_bytes(12_345, 17);
    let d = sha512_digest(&data);
    let (loc, _) = start_upload(&p, "r");
    let r = put_digest(&p, &loc, &d, &data);
    assert_status(&r, 201);
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn sha512_in_manifests() {
    let p = Pier::start();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = push_blob(&p, "r", &config);
    let layer = random_bytes(2048, 18);
    let ld = sha512_digest(&layer);
    let r = p.req("POST", &format!("/v2/r/blobs/uploads/?digest={ld}"), &[], &layer);
    assert_status(&r, 201);
    let m = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let md = push_manifest(&p, "r", "v1", OCI_MANIFEST, &m);
    let r = p.get(&format!("/v2/r/manifests/{md}"));
    assert_status(&r, 200);
    assert_eq!(r.body, m);

    // The manifest itself addressed by its sha512 digest.
    let m2 = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let m2 = [m2, b"\n".to_vec()].concat();
    let md512 = sha512_digest(&m2);
    let r = p.req("PUT", &format!("/v2/r/manifests/{md512}"), &[("Content-Type", OCI_MANIFEST)], &m2);
    assert_status(&r, 201);
    // "MUST match the digest provided by the client".
    assert_eq!(r.header("docker-content-digest"), Some(md512.as_str()), "{}", show(&r));
    let r = p.get(&format!("/v2/r/manifests/{md512}"));
    assert_status(&r, 200);
    assert_eq!(r.body, m2);
    // The spec lets the GET answer with a digest of another algorithm, but it must be right.
    let dcd = r.header("docker-content-digest").unwrap_or("");
    assert!(dcd == md512 || dcd == sha256_digest(&m2), "Docker-Content-Digest {dcd}");
    // A wrong sha512 reference is refused.
    let wrong = sha512_digest(b"nope");
    let r = p.req("PUT", &format!("/v2/r/manifests/{wrong}"), &[("Content-Type", OCI_MANIFEST)], &m2);
    assert_error(&r, 400, "DIGEST_INVALID");
}

#[test]
fn cross_repo_mount() {
    let p = Pier::start();
    let data = random_bytes(4000, 19);
    let d = push_blob(&p, "a", &data);

    let r = p.req("POST", &format!("/v2/b/blobs/uploads/?mount={d}&from=a"), &[], b"");
    assert_status(&r, 201);
    assert_eq!(location(&r), format!("/v2/b/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    get_blob_ok(&p, "b", &d, &data);
    let g = std::fs::metadata(global_blob(&p, &d)).expect("global blob");
    let m = std::fs::metadata(repo_blob(&p, "b", &d)).expect("mounted blob in b");
    assert_eq!(g.ino(), m.ino(), "mount should link the same file");

    // Source lacks the blob: a normal upload session.
    let data2 = b"not in a".to_vec();
    let d2 = sha256_digest(&data2);
    let r = p.req("POST", &format!("/v2/c/blobs/uploads/?mount={d2}&from=a"), &[], b"");
    assert_status(&r, 202);
    assert!(r.header("docker-upload-uuid").is_some(), "{}", show(&r));
    finish_upload(&p, "c", &location(&r), &data2, &data2);

    // The blob exists in the registry (repo d), but not in the named source: no mount.
    let data3 = b"only in d".to_vec();
    let d3 = push_blob(&p, "d", &data3);
    let r = p.req("POST", &format!("/v2/e/blobs/uploads/?mount={d3}&from=a"), &[], b"");
    assert_status(&r, 202);
    assert_eq!(p.get(&format!("/v2/e/blobs/{d3}")).status, 404);

    // Never-seen source repository: a normal session as well.
    let r = p.req("POST", &format!("/v2/f/blobs/uploads/?mount={d}&from=nowhere"), &[], b"");
    assert_status(&r, 202);
    assert_eq!(p.get(&format!("/v2/f/blobs/{d}")).status, 404);
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn manifest_put_get_head_exact_bytes() {
    let p = Pier::start();
    let config = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    let cd = push_blob(&p, "r", &config);
    let layer = random_bytes(777, 20);
    let ld = push_blob(&p, "r", &layer);
    // Deliberately non-canonical JSON: odd whitespace and key order must be preserved.
    let m = format!(
        "{{\n  \"schemaVersion\" : 2,\n\t\"mediaType\": \"{OCI_MANIFEST}\",\n  \"config\": {{ \"size\": {}, \"digest\": \"{cd}\", \"mediaType\": \"{OCI_CONFIG}\" }},\n  \"layers\": [ {{\"digest\": \"{ld}\", \"mediaType\": \"{OCI_LAYER_TAR}\", \"size\": {}}} ],\n  \"annotations\": {{\"z\": \"1\", \"a\": \"2\"}}\n}}\n\n",
        config.len(),
        layer.len()
    )
    .into_bytes();
    let md = sha256_digest(&m);
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    let loc = location(&r);
    let g = p.get(&loc);
    assert_status(&g, 200);
    assert_eq!(g.body, m, "Location {loc} does not serve the manifest");

    for reference in ["v1", md.as_str()] {
        let path = format!("/v2/r/manifests/{reference}");
        let r = p.req("GET", &path, &[("Accept", OCI_MANIFEST)], b"");
        assert_status(&r, 200);
        assert_eq!(r.body, m, "GET {path}");
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
        assert_eq!(r.header("content-length"), Some(m.len().to_string().as_str()));

        let (h, rest) = raw_head(&p, &path);
        assert_status(&h, 200);
        assert!(rest.is_empty(), "HEAD {path} sent a body");
        assert_eq!(h.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(h.header("docker-content-digest"), Some(md.as_str()));
        assert_eq!(h.header("content-length"), Some(m.len().to_string().as_str()));
    }
}

#[test]
fn manifest_media_types() {
    let p = Pier::start();
    // Docker schema 2 image.
    let config = br#"{"architecture":"amd64","os":"linux","docker":true}"#.to_vec();
    let cd = push_blob(&p, "r", &config);
    let layer = random_bytes(500, 21);
    let ld = push_blob(&p, "r", &layer);
    let dm = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer.len(), "digest": ld}],
    }))
    .unwrap();
    let dmd = push_manifest(&p, "r", "docker", DOCKER_MANIFEST, &dm);

    // Docker manifest list of it.
    let dl = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "size": dm.len(), "digest": dmd, "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let dld = push_manifest(&p, "r", "dockerlist", DOCKER_LIST, &dl);

    // OCI image + OCI index.
    let om = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let omd = push_manifest(&p, "r", "oci", OCI_MANIFEST, &om);
    let oi = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "size": om.len(), "digest": omd, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "size": dm.len(), "digest": dmd, "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let oid = push_manifest(&p, "r", "ociindex", OCI_INDEX, &oi);

    for (tag, digest, mt, body) in [
        ("docker", &dmd, DOCKER_MANIFEST, &dm),
        ("dockerlist", &dld, DOCKER_LIST, &dl),
        ("oci", &omd, OCI_MANIFEST, &om),
        ("ociindex", &oid, OCI_INDEX, &oi),
    ] {
        for reference in [tag, digest.as_str()] {
            let r = p.get(&format!("/v2/r/manifests/{reference}"));
            assert_status(&r, 200);
            assert_eq!(&r.body, body, "{reference}");
            assert_eq!(r.header("content-type"), Some(mt), "{reference}");
            assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()), "{reference}");
        }
    }
}

#[test]
fn manifest_referencing_unknown_blobs() {
    let p = Pier::start();
    let config = br#"{"os":"linux"}"#.to_vec();
    let cd = push_blob(&p, "r", &config);
    let layer = b"a layer".to_vec();
    let ld = push_blob(&p, "r", &layer);
    let missing = sha256_digest(b"missing layer");

    // Missing layer.
    let m = image_manifest((&cd, config.len()), &[(&ld, layer.len()), (&missing, 13)]);
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    // Missing config.
    let m = image_manifest((&missing, 13), &[(&ld, layer.len())]);
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    // Blob that exists only in another repository.
    let elsewhere = b"only in other".to_vec();
    let ed = push_blob(&p, "other", &elsewhere);
    let m = image_manifest((&cd, config.len()), &[(&ed, elsewhere.len())]);
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_error(&p.get("/v2/r/manifests/v1"), 404, "MANIFEST_UNKNOWN");

    // Index whose child manifest is missing, or only present in another repository.
    let child = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let child_d = sha256_digest(&child);
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": child.len(), "digest": child_d}],
    }))
    .unwrap();
    let r = p.req("PUT", "/v2/r/manifests/idx", &[("Content-Type", OCI_INDEX)], &idx);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    push_blob(&p, "other", &config);
    push_blob(&p, "other", &layer);
    push_manifest(&p, "other", "child", OCI_MANIFEST, &child);
    let r = p.req("PUT", "/v2/r/manifests/idx", &[("Content-Type", OCI_INDEX)], &idx);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    // Once the child is in r, the index is accepted.
    push_manifest(&p, "r", &child_d, OCI_MANIFEST, &child);
    push_manifest(&p, "r", "idx", OCI_INDEX, &idx);
}

#[test]
fn manifest_invalid() {
    let p = Pier::start();
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], b"{not json");
    assert_error(&r, 400, "MANIFEST_INVALID");
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], b"");
    assert_error(&r, 400, "MANIFEST_INVALID");
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], b"[1,2,3]");
    assert_error(&r, 400, "MANIFEST_INVALID");
    // An image manifest without a config.
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})).unwrap();
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_INVALID");
    assert_eq!(p.get("/v2/r/manifests/v1").status, 404);
}

#[test]
fn schema1_manifests_are_refused() {
    let p = Pier::start();
    let s1 = serde_json::to_vec(&json!({
        "schemaVersion": 1,
        "name": "r",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": EMPTY_SHA256}],
        "history": [{"v1Compatibility": "{}"}],
    }))
    .unwrap();
    for ct in ["application/vnd.docker.distribution.manifest.v1+json", DOCKER_SCHEMA1_SIGNED, OCI_MANIFEST] {
        let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", ct)], &s1);
        assert_error(&r, 400, "MANIFEST_INVALID");
        let msg = r.json()["errors"][0]["message"].as_str().unwrap().to_lowercase();
        let squashed: String = msg.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        assert!(
            squashed.contains("schema1") || squashed.contains("schemaversion1"),
            "message should mention schema 1: {msg:?}"
        );
    }
    assert_eq!(p.get("/v2/r/manifests/v1").status, 404);
}

#[test]
fn manifest_put_by_wrong_digest() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let wrong = sha256_digest(b"not the index");
    let r = p.req("PUT", &format!("/v2/r/manifests/{wrong}"), &[("Content-Type", OCI_INDEX)], &idx);
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_eq!(p.get(&format!("/v2/r/manifests/{wrong}")).status, 404);
    assert_eq!(p.get(&format!("/v2/r/manifests/{}", sha256_digest(&idx))).status, 404);
    // The right digest works.
    let right = sha256_digest(&idx);
    let r = p.req("PUT", &format!("/v2/r/manifests/{right}"), &[("Content-Type", OCI_INDEX)], &idx);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(right.as_str()));
}

#[test]
fn manifest_size_limit() {
    let p = Pier::start();
    let ok = padded_index(FOUR_MIB);
    let okd = push_manifest(&p, "r", "big", OCI_INDEX, &ok);
    let r = p.get("/v2/r/manifests/big");
    assert_status(&r, 200);
    assert_eq!(r.body.len(), FOUR_MIB);
    assert_eq!(r.header("docker-content-digest"), Some(okd.as_str()));

    let too_big = padded_index(FOUR_MIB + 1);
    let r = p.req("PUT", "/v2/r/manifests/toobig", &[("Content-Type", OCI_INDEX)], &too_big);
    assert_error(&r, 413, "MANIFEST_INVALID");
    assert_error(&p.get("/v2/r/manifests/toobig"), 404, "MANIFEST_UNKNOWN");
    assert_eq!(p.get(&format!("/v2/r/manifests/{}", sha256_digest(&too_big))).status, 404);
}

#[test]
fn manifest_put_with_tag_parameters() {
    let p = Pier::start();
    let idx = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"k": "tagged"}}),
    )
    .unwrap();
    let d = sha256_digest(&idx);
    let r = p.req("PUT", &format!("/v2/r/manifests/{d}?tag=a&tag=b"), &[("Content-Type", OCI_INDEX)], &idx);
    assert_status(&r, 201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(tags_of(&p, "r"), vec!["a", "b"]);
    for t in ["a", "b"] {
        let r = p.get(&format!("/v2/r/manifests/{t}"));
        assert_status(&r, 200);
        assert_eq!(r.body, idx);
    }
}

#[test]
fn manifest_delete_by_tag_and_by_digest() {
    let p = Pier::start();
    let d1 = push_image(&p, "r", "v1", &[b"layer 1"]);
    let m1 = p.get("/v2/r/manifests/v1").body;
    push_manifest(&p, "r", "alias", OCI_MANIFEST, &m1);
    let d2 = push_image(&p, "r", "other", &[b"layer 2"]);
    assert_ne!(d1, d2);
    assert_eq!(tags_of(&p, "r"), vec!["alias", "other", "v1"]);

    // Deleting a tag removes only that tag.
    let r = p.req("DELETE", "/v2/r/manifests/alias", &[], b"");
    assert_status(&r, 202);
    assert_error(&p.get("/v2/r/manifests/alias"), 404, "MANIFEST_UNKNOWN");
    assert_status(&p.get("/v2/r/manifests/v1"), 200);
    assert_status(&p.get(&format!("/v2/r/manifests/{d1}")), 200);
    assert_eq!(tags_of(&p, "r"), vec!["other", "v1"]);

    // Re-tag, then delete by digest: the manifest and every tag pointing at it go.
    push_manifest(&p, "r", "alias", OCI_MANIFEST, &m1);
    let r = p.req("DELETE", &format!("/v2/r/manifests/{d1}"), &[], b"");
    assert_status(&r, 202);
    assert_error(&p.get(&format!("/v2/r/manifests/{d1}")), 404, "MANIFEST_UNKNOWN");
    assert_error(&p.get("/v2/r/manifests/v1"), 404, "MANIFEST_UNKNOWN");
    assert_error(&p.get("/v2/r/manifests/alias"), 404, "MANIFEST_UNKNOWN");
    assert_eq!(p.req("HEAD", &format!("/v2/r/manifests/{d1}"), &[], b"").status, 404);
    assert_eq!(tags_of(&p, "r"), vec!["other"]);
    assert_status(&p.get("/v2/r/manifests/other"), 200);

    // Deleting again.
    let r = p.req("DELETE", &format!("/v2/r/manifests/{d1}"), &[], b"");
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = p.req("DELETE", "/v2/r/manifests/v1", &[], b"");
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
}

#[test]
fn invalid_tags() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let long_ok = "t".repeat(128);
    push_manifest(&p, "r", &long_ok, OCI_INDEX, &idx);
    push_manifest(&p, "r", "_under.score-Dash9", OCI_INDEX, &idx);
    for bad in ["t".repeat(129), ".hidden".into(), "-dash".into(), "a%2Fb".into(), "a%20b".into()] {
        let r = p.req("PUT", &format!("/v2/r/manifests/{bad}"), &[("Content-Type", OCI_INDEX)], &idx);
        assert_eq!(r.status, 400, "tag {bad:?}: {}", show(&r));
        assert_api_header(&r);
        assert!(!r.error_code().is_empty(), "tag {bad:?}: no error code: {}", show(&r));
    }
    let mut expected = vec![long_ok, "_under.score-Dash9".to_string()];
    expected.sort();
    assert_eq!(tags_of(&p, "r"), expected);
}

#[test]
fn manifest_unknown() {
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"l"]);
    assert_error(&p.get("/v2/r/manifests/v2"), 404, "MANIFEST_UNKNOWN");
    assert_error(&p.get(&format!("/v2/r/manifests/{}", sha256_digest(b"x"))), 404, "MANIFEST_UNKNOWN");
    let r = p.req("HEAD", "/v2/r/manifests/v2", &[], b"");
    assert_status(&r, 404);
    assert_error(&p.get("/v2/unseen/manifests/v1"), 404, "NAME_UNKNOWN");
}

/// A reference that is neither a tag nor a digest names no manifest: GET and HEAD answer 404
/// `MANIFEST_UNKNOWN` (as the conformance suite and Distribution expect), a PUT 400.
#[test]
fn manifest_by_impossible_reference_is_unknown() {
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"l"]);
    for reference in [".INVALID_MANIFEST_NAME", "sha256:short", "-dash", "a%20b"] {
        let path = format!("/v2/r/manifests/{reference}");
        assert_error(&p.get(&path), 404, "MANIFEST_UNKNOWN");
        assert_status(&p.req("HEAD", &path, &[], b""), 404);
    }
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let r = p.req("PUT", "/v2/r/manifests/.INVALID_MANIFEST_NAME", &[("Content-Type", OCI_INDEX)], &idx);
    assert_error(&r, 400, "TAG_INVALID");
}

// ---------------------------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------------------------

fn referrers(p: &Pier, repo: &str, subject: &str, query: &str) -> (Response, Vec<Value>) {
    let r = p.get(&format!("/v2/{repo}/referrers/{subject}{query}"));
    assert_status(&r, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX), "{}", show(&r));
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{}", show(&r));
    assert_eq!(v["mediaType"], OCI_INDEX, "{}", show(&r));
    let list = v["manifests"].as_array().unwrap_or_else(|| panic!("no manifests array: {}", show(&r))).clone();
    (r, list)
}

fn has_no_annotations(d: &Value) -> bool {
    match d.get("annotations") {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

#[test]
fn referrers_api() {
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"subject layer"]);
    let subject_bytes = p.get("/v2/r/manifests/v1").body;
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": subject_bytes.len()});
    let empty = push_empty_config(&p, "r");
    let payload = b"sbom payload".to_vec();
    let pd = push_blob(&p, "r", &payload);

    // Referrer 1: explicit artifactType + annotations.
    let ann = json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"});
    let a1 = artifact_manifest(
        empty.clone(),
        (&pd, payload.len()),
        Some("application/vnd.example.sbom"),
        Some(subject.clone()),
        Some(ann.clone()),
    );
    let a1d = sha256_digest(&a1);
    let r = p.req("PUT", &format!("/v2/r/manifests/{a1d}"), &[("Content-Type", OCI_MANIFEST)], &a1);
    assert_status(&r, 201);
    assert_eq!(r.header("oci-subject"), Some(sd.as_str()), "{}", show(&r));

    // Referrer 2: no artifactType: its config media type is used.
    let sig_cfg = br#"{"sig":true}"#.to_vec();
    let sig_cfg_d = push_blob(&p, "r", &sig_cfg);
    let cfg =
        json!({"mediaType": "application/vnd.example.sig.config+json", "digest": sig_cfg_d, "size": sig_cfg.len()});
    let a2 = artifact_manifest(cfg, (&pd, payload.len()), None, Some(subject.clone()), None);
    let a2d = sha256_digest(&a2);
    let r = p.req("PUT", "/v2/r/manifests/sig", &[("Content-Type", OCI_MANIFEST)], &a2);
    assert_status(&r, 201);
    assert_eq!(r.header("oci-subject"), Some(sd.as_str()), "{}", show(&r));

    // A manifest without subject has no OCI-Subject header and is no referrer.
    let plain =
        artifact_manifest(empty.clone(), (&pd, payload.len()), Some("application/vnd.example.sbom"), None, None);
    let r = p.req("PUT", "/v2/r/manifests/plain", &[("Content-Type", OCI_MANIFEST)], &plain);
    assert_status(&r, 201);
    assert!(r.header("oci-subject").is_none(), "{}", show(&r));

    let (r, list) = referrers(&p, "r", &sd, "");
    assert!(r.header("oci-filters-applied").is_none(), "unfiltered response has OCI-Filters-Applied: {}", show(&r));
    assert_eq!(list.len(), 2, "{}", show(&r));
    let d1 = list.iter().find(|d| d["digest"] == a1d).unwrap_or_else(|| panic!("a1 missing: {}", show(&r)));
    assert_eq!(d1["mediaType"], OCI_MANIFEST);
    assert_eq!(d1["size"], a1.len());
    assert_eq!(d1["artifactType"], "application/vnd.example.sbom");
    assert_eq!(d1["annotations"], ann);
    let d2 = list.iter().find(|d| d["digest"] == a2d).unwrap_or_else(|| panic!("a2 missing: {}", show(&r)));
    assert_eq!(d2["mediaType"], OCI_MANIFEST);
    assert_eq!(d2["size"], a2.len());
    assert_eq!(d2["artifactType"], "application/vnd.example.sig.config+json");
    assert!(has_no_annotations(d2), "{d2}");

    // Filtering.
    let (r, list) = referrers(&p, "r", &sd, "?artifactType=application/vnd.example.sbom");
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"), "{}", show(&r));
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], a1d);
    let (r, list) = referrers(&p, "r", &sd, "?artifactType=application%2Fvnd.example.sig.config%2Bjson");
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"), "{}", show(&r));
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], a2d);
    let (r, list) = referrers(&p, "r", &sd, "?artifactType=application/vnd.example.none");
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert!(list.is_empty(), "{}", show(&r));

    // Unknown subject: 200 with an empty list.
    let (_, list) = referrers(&p, "r", &sha256_digest(b"no such subject"), "");
    assert!(list.is_empty());

    // Deleting a referrer removes it.
    let r = p.req("DELETE", &format!("/v2/r/manifests/{a1d}"), &[], b"");
    assert_status(&r, 202);
    let (r, list) = referrers(&p, "r", &sd, "");
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], a2d);

    // Referrers are per repository.
    push_image(&p, "other", "v1", &[b"subject layer"]);
    let (_, list) = referrers(&p, "other", &sd, "");
    assert!(list.is_empty(), "referrers leaked across repositories: {list:?}");
}

/// Follows `Link: <...>; rel="next"` from `first`; returns every page.
fn referrer_pages(p: &Pier, first: &str) -> Vec<(Response, Vec<Value>)> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let r = p.get(&path);
        assert_status(&r, 200);
        next = r.header("link").map(|l| {
            assert!(l.ends_with(">; rel=\"next\""), "Link: {l}");
            l.trim_start_matches('<').split('>').next().unwrap().to_string()
        });
        let list = r.json()["manifests"].as_array().unwrap_or_else(|| panic!("{}", show(&r))).clone();
        pages.push((r, list));
        assert!(pages.len() <= 100, "pagination does not end");
    }
    pages
}

/// Many referrers with big annotations are listed in pages of bounded size with `Link` headers
/// (the whole list once, in digest order), the filter carried over to every page.
#[test]
fn referrers_are_paginated_by_size() {
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"subject layer"]);
    let subject_len = p.get("/v2/r/manifests/v1").body.len();
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": subject_len});
    let empty = push_empty_config(&p, "r");
    let pd = push_blob(&p, "r", b"payload");
    let mut expected = Vec::new();
    for i in 0..12 {
        let kind = if i % 3 == 0 { "application/vnd.example.sig" } else { "application/vnd.example.sbom" };
        let big = json!({ "org.example.blob": format!("{i}-{}", "x".repeat(300 << 10)) });
        let m = artifact_manifest(empty.clone(), (&pd, 7), Some(kind), Some(subject.clone()), Some(big));
        let d = sha256_digest(&m);
        let r = p.req("PUT", &format!("/v2/r/manifests/{d}"), &[("Content-Type", OCI_MANIFEST)], &m);
        assert_status(&r, 201);
        expected.push((d, kind));
    }
    expected.sort();
    let pages = referrer_pages(&p, &format!("/v2/r/referrers/{sd}"));
    assert!(pages.len() >= 3, "12 referrers of 300 KiB in {} page(s)", pages.len());
    for (r, list) in &pages {
        assert!(!list.is_empty(), "empty page: {}", show(r));
        assert!(r.body.len() <= (1 << 20) + (400 << 10), "a page of {} bytes", r.body.len());
    }
    let listed: Vec<String> =
        pages.iter().flat_map(|(_, l)| l.iter().map(|d| d["digest"].as_str().unwrap().to_string())).collect();
    let all: Vec<String> = expected.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(listed, all, "every referrer once, in digest order");

    let filtered = referrer_pages(&p, &format!("/v2/r/referrers/{sd}?artifactType=application/vnd.example.sig"));
    let listed: Vec<String> =
        filtered.iter().flat_map(|(_, l)| l.iter().map(|d| d["digest"].as_str().unwrap().to_string())).collect();
    let sigs: Vec<String> =
        expected.iter().filter(|(_, k)| *k == "application/vnd.example.sig").map(|(d, _)| d.clone()).collect();
    assert_eq!(listed, sigs, "the filter holds on every page");
    for (r, _) in &filtered {
        assert_eq!(r.header("oci-filters-applied"), Some("artifactType"), "{}", show(r));
    }
    assert_error(&p.get(&format!("/v2/r/referrers/{sd}?last=nonsense")), 400, "DIGEST_INVALID");
}

#[test]
fn referrer_to_subject_not_yet_pushed() {
    let p = Pier::start();
    let empty = push_empty_config(&p, "r");
    let payload = b"sig".to_vec();
    let pd = push_blob(&p, "r", &payload);
    let future = sha256_digest(b"a manifest that does not exist yet");
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": future, "size": 1234});
    let a = artifact_manifest(empty, (&pd, payload.len()), Some("application/vnd.example.sig"), Some(subject), None);
    let ad = sha256_digest(&a);
    let r = p.req("PUT", &format!("/v2/r/manifests/{ad}"), &[("Content-Type", OCI_MANIFEST)], &a);
    assert_status(&r, 201);
    assert_eq!(r.header("oci-subject"), Some(future.as_str()), "{}", show(&r));
    let (r, list) = referrers(&p, "r", &future, "");
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], ad);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(list[0]["size"], a.len());
}

#[test]
fn index_as_referrer() {
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"l"]);
    let size = p.get("/v2/r/manifests/v1").body.len();
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": size},
        "annotations": {"k": "v"},
    }))
    .unwrap();
    let id = sha256_digest(&idx);
    let r = p.req("PUT", &format!("/v2/r/manifests/{id}"), &[("Content-Type", OCI_INDEX)], &idx);
    assert_status(&r, 201);
    assert_eq!(r.header("oci-subject"), Some(sd.as_str()));
    let (r, list) = referrers(&p, "r", &sd, "");
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], id);
    assert_eq!(list[0]["mediaType"], OCI_INDEX);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.bundle");
    assert_eq!(list[0]["annotations"], json!({"k": "v"}));
}

#[test]
fn referrers_with_invalid_digest() {
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"l"]);
    let r = p.get("/v2/r/referrers/sha256:nothex");
    assert_eq!(r.status, 400, "{}", show(&r));
    assert_api_header(&r);
}

// ---------------------------------------------------------------------------------------------
// Tags and catalog
// ---------------------------------------------------------------------------------------------

#[test]
fn tags_list_sorted_and_paginated() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let tags = ["v1.0", "latest", "a2", "a10", "B", "a", "Z_9", "0"];
    for t in tags {
        push_manifest(&p, "r", t, OCI_INDEX, &idx);
    }
    let mut expected: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let r = p.get("/v2/r/tags/list");
    assert_status(&r, 200);
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"), "{}", show(&r));
    assert!(r.header("link").is_none(), "unpaginated list has Link: {}", show(&r));
    assert_eq!(tags_of(&p, "r"), expected);

    // n=3: follow Links to the end.
    let mut path = "/v2/r/tags/list?n=3".to_string();
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let r = p.get(&path);
        assert_status(&r, 200);
        let v = r.json();
        assert_eq!(v["name"], "r");
        let page: Vec<String> = v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        assert!(page.len() <= 3, "page larger than n: {page:?}");
        pages += 1;
        match next_link(&r) {
            Some(next) => {
                assert_eq!(page.len(), 3);
                let last = page.last().unwrap();
                assert_eq!(percent_decode(&next), format!("/v2/r/tags/list?n=3&last={last}"));
                got.extend(page);
                path = next;
            }
            None => {
                got.extend(page);
                break;
            }
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(got, expected);
    assert_eq!(pages, 3);

    // n=2&last=X continues after X.
    let r = p.get(&format!("/v2/r/tags/list?n=2&last={}", expected[1]));
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(expected[2..4]));
    assert_eq!(next_link(&r).map(|l| percent_decode(&l)), Some(format!("/v2/r/tags/list?n=2&last={}", expected[3])));
    // last = a value that is not a tag: continues after where it would sort.
    let r = p.get("/v2/r/tags/list?n=2&last=a0");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["a10", "a2"]));

    // A last page that is short has no Link; n larger than the count neither.
    let r = p.get(&format!("/v2/r/tags/list?n=5&last={}", expected[4]));
    assert_eq!(r.json()["tags"], json!(expected[5..]));
    assert!(r.header("link").is_none(), "{}", show(&r));
    let r = p.get("/v2/r/tags/list?n=100");
    assert_eq!(r.json()["tags"], json!(expected));
    assert!(r.header("link").is_none(), "{}", show(&r));
}

#[test]
fn tags_list_exact_page_has_no_link() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    for t in ["a", "b", "c", "d"] {
        push_manifest(&p, "r", t, OCI_INDEX, &idx);
    }
    // n equal to the number of tags: everything, and no further page.
    let r = p.get("/v2/r/tags/list?n=4");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["a", "b", "c", "d"]));
    assert!(r.header("link").is_none(), "Link on the last page: {}", show(&r));
    let r = p.get("/v2/r/tags/list?n=2&last=b");
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    assert!(r.header("link").is_none(), "Link on the last page: {}", show(&r));
}

#[test]
fn tags_list_unknown_repository() {
    let p = Pier::start();
    assert_error(&p.get("/v2/nope/tags/list"), 404, "NAME_UNKNOWN");
    assert_error(&p.get("/v2/nope/deeper/tags/list?n=2"), 404, "NAME_UNKNOWN");
}

#[test]
fn catalog_sorted_and_paginated() {
    let p = Pier::start();
    let repos = ["gamma/x", "alpha", "delta", "beta", "eps/a/b"];
    for r in repos {
        push_image(&p, r, "v1", &[r.as_bytes()]);
    }
    let mut expected: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let r = p.get("/v2/_catalog");
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!(expected), "{}", show(&r));
    assert!(r.header("link").is_none());

    let mut path = "/v2/_catalog?n=2".to_string();
    let mut got = Vec::new();
    for _ in 0..10 {
        let r = p.get(&path);
        assert_status(&r, 200);
        let page: Vec<String> =
            r.json()["repositories"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        assert!(page.len() <= 2);
        let next = next_link(&r);
        if let Some(next) = &next {
            assert_eq!(percent_decode(next), format!("/v2/_catalog?n=2&last={}", page.last().unwrap()));
        }
        got.extend(page);
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    assert_eq!(got, expected);

    let r = p.get("/v2/_catalog?n=2&last=beta");
    assert_eq!(r.json()["repositories"], json!(["delta", "eps/a/b"]));
    assert!(next_link(&r).is_some());
    let r = p.get("/v2/_catalog?n=2&last=eps%2Fa%2Fb");
    assert_eq!(r.json()["repositories"], json!(["gamma/x"]));
    assert!(r.header("link").is_none(), "{}", show(&r));
}

#[test]
fn catalog_is_byte_ordered() {
    // '-' (0x2d) sorts before '/' (0x2f): "b-d" < "b/c", whatever the directory layout.
    let p = Pier::start();
    for r in ["b/c", "b-d", "b", "a", "b0"] {
        push_image(&p, r, "v1", &[r.as_bytes()]);
    }
    let r = p.get("/v2/_catalog");
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!(["a", "b", "b-d", "b/c", "b0"]));
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

#[test]
fn storage_layout_per_repository() {
    let p = Pier::start();
    let layers: [&[u8]; 2] = [&random_bytes(3000, 30), &random_bytes(4000, 31)];
    let md = push_image(&p, "team/app", "v1", &layers);
    let m = p.get("/v2/team/app/manifests/v1").body;
    let mv: Value = serde_json::from_slice(&m).unwrap();
    let dir = repo_dir(&p, "team/app");

    let layout: Value = serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).expect("oci-layout")).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = settled_layout(&p, "team/app").index;
    assert_eq!(index["schemaVersion"], 2);
    let entries = index["manifests"].as_array().expect("index.json manifests");
    let e = entries
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap_or_else(|| panic!("no v1 in index.json: {index}"));
    assert_eq!(e["digest"], md);
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(e["size"], m.len());

    // Config, layers and the manifest are in the repository's blobs/.
    let cd = mv["config"]["digest"].as_str().unwrap();
    let mut digests = vec![cd.to_string(), md.clone()];
    for l in mv["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &digests {
        let f = repo_blob(&p, "team/app", d);
        let content = std::fs::read(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert_eq!(sha256_digest(&content), *d, "{f:?} has the wrong content");
    }
    assert_eq!(std::fs::read(repo_blob(&p, "team/app", &md)).unwrap(), m);
    // Layers are hard links of the global content-addressed file.
    for l in layers {
        let d = sha256_digest(l);
        let g = std::fs::metadata(global_blob(&p, &d)).expect("global blob");
        let r = std::fs::metadata(repo_blob(&p, "team/app", &d)).unwrap();
        assert_eq!(g.ino(), r.ino());
        assert_eq!(g.len(), l.len() as u64);
    }
}

#[test]
fn storage_index_json_tracks_tags() {
    let p = Pier::start();
    let md = push_image(&p, "r", "v1", &[b"l"]);
    let m = p.get("/v2/r/manifests/v1").body;
    push_manifest(&p, "r", "stable", OCI_MANIFEST, &m);
    let names = |p: &Pier| -> BTreeSet<String> {
        let index = settled_layout(p, "r").index;
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                assert_eq!(e["digest"], md, "{index}");
                e["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from)
            })
            .collect()
    };
    assert_eq!(names(&p), BTreeSet::from(["v1".to_string(), "stable".to_string()]));
    let r = p.req("DELETE", "/v2/r/manifests/stable", &[], b"");
    assert_status(&r, 202);
    assert_eq!(names(&p), BTreeSet::from(["v1".to_string()]));
}

/// `index.json` is written off the request path; a clean stop writes whatever is still due, and
/// a `kill -9` right after a change is caught up after the restart.
#[test]
fn storage_index_json_written_at_stop_and_after_a_kill() {
    let mut p = Pier::start();
    push_image(&p, "r", "v1", &[b"index at stop"]);
    let m = p.get("/v2/r/manifests/v1").body;
    let tagged = |p: &Pier, names: &[String]| {
        let query: Vec<String> = names[1..].iter().map(|t| format!("tag={t}")).collect();
        let r = p.req(
            "PUT",
            &format!("/v2/r/manifests/{}?{}", names[0], query.join("&")),
            &[("Content-Type", OCI_MANIFEST)],
            &m,
        );
        assert_status(&r, 201);
    };
    let on_disk = |p: &Pier| -> BTreeSet<String> { read_layout(&repo_dir(p, "r")).tags().into_iter().collect() };
    let mut want: BTreeSet<String> = BTreeSet::from(["v1".to_string()]);
    let batch: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    tagged(&p, &batch);
    want.extend(batch);
    p.stop();
    assert_eq!(on_disk(&p), want, "index.json after a clean stop");
    p.restart();
    let batch: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    tagged(&p, &batch);
    want.extend(batch);
    p.kill9();
    p.restart();
    assert_eq!(settled_layout(&p, "r").tags().into_iter().collect::<BTreeSet<_>>(), want);
}

#[test]
fn same_layer_in_ten_repositories_is_stored_once() {
    let p = Pier::start();
    let layer = random_bytes(100_000, 32);
    let d = sha256_digest(&layer);
    for i in 0..10 {
        push_blob(&p, &format!("repo{i}"), &layer);
    }
    let g = std::fs::metadata(global_blob(&p, &d)).expect("global blob");
    assert_eq!(g.nlink(), 11, "link count of the global blob");
    for i in 0..10 {
        let r = std::fs::metadata(repo_blob(&p, &format!("repo{i}"), &d)).unwrap();
        assert_eq!(r.ino(), g.ino(), "repo{i} has its own copy");
        get_blob_ok(&p, &format!("repo{i}"), &d, &layer);
    }
    let globals = files_under(&p.root.join("blobs"));
    assert_eq!(globals, vec![global_blob(&p, &d)]);
}

// ---------------------------------------------------------------------------------------------
// Concurrency and large blobs
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_pushes_of_the_same_blob() {
    let p = Arc::new(Pier::start());
    for (round, clients) in [(0u64, 2usize), (1, 8)] {
        let data = Arc::new(random_bytes(4 * 1024 * 1024 + 7, 40 + round));
        let d = sha256_digest(&data);
        let barrier = Arc::new(Barrier::new(clients));
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (p, data, barrier, d) = (p.clone(), data.clone(), barrier.clone(), d.clone());
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        let (loc, _) = start_upload(&p, "r");
                        barrier.wait();
                        put_digest(&p, &loc, &d, &data).status
                    } else {
                        barrier.wait();
                        p.req("POST", &format!("/v2/r/blobs/uploads/?digest={d}"), &[], &data).status
                    }
                })
            })
            .collect();
        let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(statuses.iter().all(|s| *s == 201), "round {round}: {statuses:?}");
        get_blob_ok(&p, "r", &d, &data);
        let g = std::fs::metadata(global_blob(&p, &d)).expect("global blob");
        assert_eq!(g.nlink(), 2, "round {round}: global + repository link");
        assert_eq!(g.len(), data.len() as u64);
        assert_eq!(std::fs::metadata(repo_blob(&p, "r", &d)).unwrap().ino(), g.ino());
    }
    assert_eq!(files_under(&p.root.join("blobs")).len(), 2, "{:?}", files_under(&p.root.join("blobs")));
}

#[test]
fn large_blobs_monolithic_and_chunked() {
    let p = Pier::start();
    let data = random_bytes(24 * 1024 * 1024 + 5, 50);
    let d = push_blob(&p, "big", &data);
    get_blob_ok(&p, "big", &d, &data);

    let data2 = random_bytes(20 * 1024 * 1024 + 3, 51);
    let d2 = sha256_digest(&data2);
    let (mut loc, r) = start_upload(&p, "big");
    let c = chunk_size(&r).max(6 * 1024 * 1024);
    let mut off = 0;
    while off < data2.len() {
        let end = (off + c).min(data2.len());
        let r = patch_chunk(&p, &loc, off, &data2[off..end]);
        assert_status(&r, 202);
        loc = location(&r);
        off = end;
    }
    assert_status(&put_digest(&p, &loc, &d2, b""), 201);
    let r = p.req("GET", &format!("/v2/big/blobs/{d2}"), &[("Range", "bytes=10000000-10000009")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data2[10_000_000..10_000_010]);
    get_blob_ok(&p, "big", &d2, &data2);
}

// ---------------------------------------------------------------------------------------------
// Edge cases
// ---------------------------------------------------------------------------------------------

#[test]
fn head_base_endpoint() {
    let p = Pier::start();
    let (h, rest) = raw_head(&p, "/v2/");
    assert_status(&h, 200);
    assert!(rest.is_empty());
}

#[test]
fn malformed_range_header_is_ignored() {
    // RFC 9110 §14.2: a server MAY ignore a Range it does not understand and answer 200.
    let p = Pier::start();
    let data = random_bytes(100, 60);
    let d = push_blob(&p, "r", &data);
    for range in ["bytes=5-1", "items=0-1", "bytes=a-b", "bytes=0-1,5-6", "bytes="] {
        let r = p.req("GET", &format!("/v2/r/blobs/{d}"), &[("Range", range)], b"");
        // pier ignores them all (RFC 9110 also allows 416 for an unsatisfiable range, but none of
        // these is one: they are unparseable or multi-range, which pier does not serve).
        assert_eq!(r.status, 200, "Range {range}: {}", show(&r));
        assert_eq!(r.body, data, "Range {range}");
        assert!(r.header("content-range").is_none(), "Range {range}: {}", show(&r));
    }
}

#[test]
fn patch_with_content_range_not_matching_body() {
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    // Claims 100 bytes, sends 50.
    let r =
        p.req("PATCH", &loc, &[("Content-Type", "application/octet-stream"), ("Content-Range", "0-99")], &[1u8; 50]);
    // The chunk is in order (416 is for out-of-order chunks); its size contradicts its range.
    assert_error(&r, 400, "SIZE_INVALID");
    // Whatever was refused, the session is consistent: status reports nothing or exactly what
    // was accepted, and a correct upload still works.
    let s = p.get(&loc);
    if s.status == 204 {
        let range = s.header("range").unwrap_or("").to_string();
        assert!(range == "0-0" || range == "0-49" || range.is_empty(), "{}", show(&s));
    }
    let (loc, _) = start_upload(&p, "r");
    let data = random_bytes(2000, 61);
    let r = patch_chunk(&p, &loc, 0, &data);
    assert_status(&r, 202);
    let d = sha256_digest(&data);
    assert_status(&put_digest(&p, &location(&r), &d, b""), 201);
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn first_chunk_must_start_at_zero() {
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let r = patch_chunk(&p, &loc, 10, &[1u8; 10]);
    assert_error(&r, 416, "BLOB_UPLOAD_INVALID");
    let r = patch_chunk(&p, &loc, 0, &[1u8; 10]);
    assert_status(&r, 202);
    assert_eq!(r.header("range"), Some("0-9"));
}

#[test]
fn concurrent_patches_of_one_session() {
    // Several clients race to write the same first chunk: exactly one wins, the others get 416,
    // and the session's content is exactly one copy.
    let p = Arc::new(Pier::start());
    let (loc, _) = start_upload(&p, "r");
    let chunk = Arc::new(random_bytes(1024 * 1024, 62));
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (p, loc, chunk, barrier) = (p.clone(), loc.clone(), chunk.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = patch_chunk(&p, &loc, 0, &chunk);
                (r.status, r.header("location").map(strip_origin))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins: Vec<_> = results.iter().filter(|(s, _)| *s == 202).collect();
    assert_eq!(wins.len(), 1, "statuses: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(results.iter().all(|(s, _)| *s == 202 || *s == 416), "{results:?}");
    let next = wins[0].1.clone().expect("Location");
    let s = p.get(&next);
    assert_eq!(s.header("range"), Some(format!("0-{}", chunk.len() - 1).as_str()));
    let d = sha256_digest(&chunk);
    assert_status(&put_digest(&p, &next, &d, b""), 201);
    get_blob_ok(&p, "r", &d, &chunk);
}

#[test]
fn concurrent_tagging_keeps_every_tag() {
    let p = Arc::new(Pier::start());
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"i": i.to_string()}})).unwrap();
                let r = p.req("PUT", &format!("/v2/r/manifests/t{i:02}"), &[("Content-Type", OCI_INDEX)], &idx);
                (r.status, sha256_digest(&idx))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let expected: Vec<String> = (0..16).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags_of(&p, "r"), expected);
    let index = settled_layout(&p, "r").index;
    let mut names: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from))
        .collect();
    names.sort();
    assert_eq!(names, expected, "index.json lost tags under concurrency");
    for (i, (_, d)) in results.iter().enumerate() {
        let r = p.get(&format!("/v2/r/manifests/t{i:02}"));
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }
}

#[test]
fn moving_a_tag() {
    let p = Pier::start();
    let d1 = push_image(&p, "r", "v1", &[b"one"]);
    let m1 = p.get("/v2/r/manifests/v1").body;
    let d2 = push_image(&p, "r", "tmp", &[b"two"]);
    let m2 = p.get("/v2/r/manifests/tmp").body;
    // Point v1 at the second manifest.
    push_manifest(&p, "r", "v1", OCI_MANIFEST, &m2);
    let r = p.get("/v2/r/manifests/v1");
    assert_eq!(r.body, m2);
    assert_eq!(r.header("docker-content-digest"), Some(d2.as_str()));
    // The old manifest is still there by digest.
    let r = p.get(&format!("/v2/r/manifests/{d1}"));
    assert_status(&r, 200);
    assert_eq!(r.body, m1);
    let index = settled_layout(&p, "r").index;
    let v1: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .collect();
    assert_eq!(v1.len(), 1, "index.json: {index}");
    assert_eq!(v1[0]["digest"], d2);
    // Re-pushing identical content is idempotent.
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m2);
    assert_status(&r, 201);
    assert_eq!(tags_of(&p, "r"), vec!["tmp", "v1"]);
}

#[test]
fn pushing_a_blob_twice_and_after_delete() {
    let p = Pier::start();
    let data = random_bytes(3333, 63);
    let d = push_blob(&p, "r", &data);
    push_blob(&p, "r", &data);
    assert_eq!(std::fs::metadata(global_blob(&p, &d)).unwrap().nlink(), 2);
    assert_status(&p.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], b""), 202);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).status, 404);
    assert!(!repo_blob(&p, "r", &d).exists(), "deleted blob still linked in the repository layout");
    push_blob(&p, "r", &data);
    get_blob_ok(&p, "r", &d, &data);
}

#[test]
fn oversized_manifest_streamed_without_content_length() {
    let p = Pier::start();
    let big = padded_index(FOUR_MIB + 100);
    let parts: Vec<&[u8]> = big.chunks(64 * 1024).collect();
    let body = chunked_framing(&parts);
    let r =
        p.req("PUT", "/v2/r/manifests/big", &[("Content-Type", OCI_INDEX), ("Transfer-Encoding", "chunked")], &body);
    assert_error(&r, 413, "MANIFEST_INVALID");
    assert_eq!(p.get("/v2/r/manifests/big").status, 404);
    // A small chunked manifest is fine.
    let small = padded_index(1000);
    let r = p.req(
        "PUT",
        "/v2/r/manifests/small",
        &[("Content-Type", OCI_INDEX), ("Transfer-Encoding", "chunked")],
        &chunked_framing(&[&small[..10], &small[10..]]),
    );
    assert_status(&r, 201);
    assert_eq!(p.get("/v2/r/manifests/small").body, small);
}

#[test]
fn deleting_a_tag_keeps_the_referrer() {
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"s"]);
    let size = p.get("/v2/r/manifests/v1").body.len();
    let empty = push_empty_config(&p, "r");
    let pd = push_blob(&p, "r", b"sig");
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": size});
    let a = artifact_manifest(empty, (&pd, 3), Some("application/vnd.example.sig"), Some(subject), None);
    let ad = push_manifest(&p, "r", "sigtag", OCI_MANIFEST, &a);
    assert_status(&p.req("DELETE", "/v2/r/manifests/sigtag", &[], b""), 202);
    let (r, list) = referrers(&p, "r", &sd, "");
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], ad);
}

#[test]
fn put_without_digest_is_refused() {
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let r = p.req("PUT", &loc, &[("Content-Type", "application/octet-stream")], b"abc");
    assert_eq!(r.status, 400, "{}", show(&r));
    assert_api_header(&r);
    let code = r.error_code();
    assert!(code == "DIGEST_INVALID" || code == "BLOB_UPLOAD_INVALID", "{}", show(&r));
    assert!(files_under(&p.root.join("blobs")).is_empty());
}

#[test]
fn percent_encoded_query_parameters() {
    // Go's url.Values.Encode (docker, containerd, oras) escapes ':' and '/' in query values.
    let p = Pier::start();
    let data = random_bytes(1500, 70);
    let d = sha256_digest(&data);
    let enc = d.replace(':', "%3A");
    let (loc, _) = start_upload(&p, "a/b");
    let r = p.req("PUT", &with_query(&loc, &format!("digest={enc}")), &[], &data);
    assert_status(&r, 201);
    get_blob_ok(&p, "a/b", &d, &data);

    let data2 = random_bytes(1501, 71);
    let d2 = sha256_digest(&data2);
    let r = p.req("POST", &format!("/v2/a/b/blobs/uploads/?digest={}", d2.replace(':', "%3a")), &[], &data2);
    assert_status(&r, 201);
    get_blob_ok(&p, "a/b", &d2, &data2);

    let r = p.req("POST", &format!("/v2/c/blobs/uploads/?mount={enc}&from=a%2Fb"), &[], b"");
    assert_status(&r, 201);
    get_blob_ok(&p, "c", &d, &data);

    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let md = sha256_digest(&idx);
    let r = p.req("PUT", &format!("/v2/c/manifests/{md}?tag=x&tag=y"), &[("Content-Type", OCI_INDEX)], &idx);
    assert_status(&r, 201);
    let r = p.get("/v2/_catalog?n=1&last=a%2Fb");
    assert_eq!(r.json()["repositories"], json!(["c"]));
}

#[test]
fn manifest_content_type_parameters_are_ignored() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    let r = p.req(
        "PUT",
        "/v2/r/manifests/v1",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json; charset=utf-8")],
        &idx,
    );
    assert_status(&r, 201);
    let r = p.get("/v2/r/manifests/v1");
    assert_status(&r, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX), "{}", show(&r));
}

#[test]
fn tags_list_n_zero_and_last_alone() {
    let p = Pier::start();
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})).unwrap();
    for t in ["a", "b", "c"] {
        push_manifest(&p, "r", t, OCI_INDEX, &idx);
    }
    // "If n=0, the registry must return an empty list and must not include a Link header."
    let r = p.get("/v2/r/tags/list?n=0");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!([]), "{}", show(&r));
    assert!(r.header("link").is_none(), "{}", show(&r));
    // "When using last, the n parameter is optional."
    let r = p.get("/v2/r/tags/list?last=a");
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["b", "c"]), "{}", show(&r));
    let r = p.get("/v2/r/tags/list?last=c");
    assert_eq!(r.json()["tags"], json!([]), "{}", show(&r));
    // The catalog behaves the same.
    let r = p.get("/v2/_catalog?n=0");
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!([]), "{}", show(&r));
    assert!(r.header("link").is_none(), "{}", show(&r));
}

#[test]
fn index_referrer_without_artifact_type() {
    // "If the referenced index has no artifactType, the descriptor's artifactType MUST be omitted."
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"l"]);
    let size = p.get("/v2/r/manifests/v1").body.len();
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": size},
    }))
    .unwrap();
    let id = push_manifest(&p, "r", "bundle", OCI_INDEX, &idx);
    let (r, list) = referrers(&p, "r", &sd, "");
    assert_eq!(list.len(), 1, "{}", show(&r));
    assert_eq!(list[0]["digest"], id);
    assert!(list[0].get("artifactType").is_none(), "artifactType should be omitted: {}", list[0]);
}

#[test]
fn referrer_pushed_twice_is_listed_once() {
    let p = Pier::start();
    let sd = push_image(&p, "r", "v1", &[b"l"]);
    let size = p.get("/v2/r/manifests/v1").body.len();
    let empty = push_empty_config(&p, "r");
    let pd = push_blob(&p, "r", b"sig");
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": size});
    let a = artifact_manifest(empty, (&pd, 3), Some("application/vnd.example.sig"), Some(subject), None);
    let ad = sha256_digest(&a);
    push_manifest(&p, "r", &ad, OCI_MANIFEST, &a);
    push_manifest(&p, "r", "sig1", OCI_MANIFEST, &a);
    push_manifest(&p, "r", "sig2", OCI_MANIFEST, &a);
    let (r, list) = referrers(&p, "r", &sd, "");
    assert_eq!(list.len(), 1, "duplicate referrer entries: {}", show(&r));
    assert_eq!(list[0]["digest"], ad);
}

#[test]
fn four_xx_json_errors_use_spec_codes() {
    // distribution-spec: "The code field MUST be one of the following" (the 14 codes), plus the
    // legacy Docker codes it names (TAG_INVALID, MANIFEST_UNVERIFIED).
    const CODES: &[&str] = &[
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "TAG_INVALID",
        "MANIFEST_UNVERIFIED",
    ];
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"l"]);
    let hex = "a".repeat(64);
    let requests: Vec<(&str, String)> = vec![
        ("GET", "/".into()),
        ("GET", "/v3/".into()),
        ("GET", "/v2/r/tags/lists".into()),
        ("GET", "/v2/r/foo/bar".into()),
        ("GET", format!("/v2/r/blobs/sha256{hex}")),
        ("GET", "/v2/r/blobs/".into()),
        ("GET", "/v2/r/tags/list?n=abc".into()),
        ("GET", "/v2/r/manifests/".into()),
        ("POST", "/v2/r/tags/list".into()),
        ("PATCH", "/v2/r/manifests/v1".into()),
        ("PUT", "/v2/r/blobs/uploads/".into()),
    ];
    let mut violations = Vec::new();
    for (method, path) in requests {
        let r = p.req(method, &path, &[], b"");
        if !(400..500).contains(&r.status) || r.body.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else { continue };
        for e in v["errors"].as_array().cloned().unwrap_or_default() {
            let code = e["code"].as_str().unwrap_or("");
            if !CODES.contains(&code) {
                violations.push(format!("{method} {path} -> {} {code}", r.status));
            }
        }
    }
    assert!(violations.is_empty(), "non-spec error codes:\n{}", violations.join("\n"));
}

#[test]
fn truncated_uploads_are_not_committed() {
    let p = Pier::start();
    let data = random_bytes(1024 * 1024, 72);
    let d = sha256_digest(&data);
    let send_partial = |method: &str, path: &str, extra: &str, declared: usize, sent: &[u8]| {
        let mut s = TcpStream::connect(p.addr).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n{extra}\r\n",
            p.addr
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(sent).unwrap();
        s.flush().unwrap();
        drop(s); // connection lost mid-body
                 // pier logs the request (a 400: the body ended early) once it has dealt with it.
        let target = path.split('?').next().unwrap();
        p.wait_log(&format!("{method} {target} 400"), Duration::from_secs(30));
    };

    // Monolithic PUT cut short.
    let (loc, _) = start_upload(&p, "r");
    send_partial("PUT", &with_query(&loc, &format!("digest={d}")), "", data.len(), &data[..300_000]);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).status, 404);
    // Single-request POST cut short.
    send_partial("POST", &format!("/v2/r/blobs/uploads/?digest={d}"), "", data.len(), &data[..200_000]);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).status, 404);
    assert!(files_under(&p.root.join("blobs")).is_empty(), "{:?}", files_under(&p.root.join("blobs")));

    // A chunk cut short: the session must stay consistent and resumable from what it reports.
    let (loc, _) = start_upload(&p, "r");
    let cr = format!("Content-Range: 0-{}\r\n", data.len() - 1);
    send_partial("PATCH", &loc, &cr, data.len(), &data[..400_000]);
    // A failed PATCH does not end the session: it still answers 204 with what it holds.
    let s = p.get(&loc);
    assert_status(&s, 204);
    let range = s.header("range").expect("Range").to_string();
    let end: usize = range.strip_prefix("0-").and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("Range {range}"));
    let loc = location(&s);
    // "0-0" is ambiguous (nothing or one byte): try both.
    let mut finished = false;
    for off in if end == 0 { vec![0, 1] } else { vec![end + 1] } {
        let r = patch_chunk(&p, &loc, off, &data[off..]);
        if r.status == 416 {
            continue;
        }
        assert_status(&r, 202);
        let r = put_digest(&p, &location(&r), &d, b"");
        assert_status(&r, 201);
        finished = true;
        break;
    }
    assert!(finished, "could not resume after {range}");
    get_blob_ok(&p, "r", &d, &data);
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

#[test]
fn large_upload_uses_bounded_memory() {
    // pier streams blobs: pushing and pulling a 64 MiB blob must not buffer it in memory.
    let p = Pier::start();
    let pid = p.child.as_ref().unwrap().id();
    push_blob(&p, "warmup", &random_bytes(1024 * 1024, 74));
    let _ = p.get(&format!("/v2/warmup/blobs/{}", sha256_digest(&random_bytes(1024 * 1024, 74))));
    let base = vm_hwm_kib(pid);
    let data = random_bytes(64 * 1024 * 1024, 73);
    let d = sha256_digest(&data);
    let (loc, _) = start_upload(&p, "big");
    assert_status(&put_digest(&p, &loc, &d, &data), 201);
    let r = p.get(&format!("/v2/big/blobs/{d}"));
    assert_status(&r, 200);
    assert!(r.body == data);
    let r = p.req("POST", &format!("/v2/big2/blobs/uploads/?digest={d}"), &[], &data);
    assert_status(&r, 201);
    let grown = vm_hwm_kib(pid).saturating_sub(base);
    eprintln!("peak RSS grew by {} KiB", grown);
    assert!(grown < 32 * 1024, "pier's peak RSS grew by {} MiB while moving a 64 MiB blob", grown / 1024);
}

#[test]
fn method_not_allowed_has_allow_header() {
    // RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field in a 405 response".
    let p = Pier::start();
    push_image(&p, "r", "v1", &[b"l"]);
    let mut missing = Vec::new();
    for (method, path) in [
        ("POST", "/v2/r/tags/list"),
        ("DELETE", "/v2/"),
        ("PATCH", "/v2/r/manifests/v1"),
        ("PUT", "/v2/r/blobs/uploads/"),
    ] {
        let r = p.req(method, path, &[], b"");
        assert_eq!(r.status, 405, "{method} {path}: {}", show(&r));
        assert_api_header(&r);
        match r.header("allow") {
            Some(a) => assert!(!a.contains(method), "{method} {path}: Allow {a:?} lists the refused method"),
            None => missing.push(format!("{method} {path}")),
        }
    }
    assert!(missing.is_empty(), "405 without Allow: {missing:?}");
}

#[test]
fn keep_alive_connection_reuse() {
    // Real clients reuse connections: several requests, including errors with bodies, on one socket.
    let p = Pier::start();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let send = |s: &mut TcpStream, method: &str, path: &str, headers: &str, body: &[u8]| {
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{headers}\r\n", p.addr, body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(s, method == "HEAD")
    };
    let r = send(&mut s, "GET", "/v2/", "", b"");
    assert_status(&r, 200);
    let r = send(&mut s, "PUT", "/v2/r/manifests/v1", &format!("Content-Type: {OCI_MANIFEST}\r\n"), b"{broken");
    assert_error(&r, 400, "MANIFEST_INVALID");
    let data = random_bytes(100_000, 80);
    let d = sha256_digest(&data);
    let r = send(&mut s, "POST", &format!("/v2/r/blobs/uploads/?digest={}", sha256_digest(b"x")), "", &data);
    assert_error(&r, 400, "DIGEST_INVALID");
    let r = send(&mut s, "POST", "/v2/r/blobs/uploads/", "", b"");
    assert_status(&r, 202);
    let loc = location(&r);
    let r = send(&mut s, "PUT", &with_query(&loc, &format!("digest={d}")), "", &data);
    assert_status(&r, 201);
    let r = send(&mut s, "HEAD", &format!("/v2/r/blobs/{d}"), "", b"");
    assert_status(&r, 200);
    let r = send(&mut s, "GET", &format!("/v2/r/blobs/{d}"), "", b"");
    assert_status(&r, 200);
    assert!(r.body == data);
}

#[test]
fn blob_delete_of_a_manifest_digest_keeps_the_manifest() {
    // Manifests live in the repository's blobs/ too; the blob endpoint must not break them.
    let p = Pier::start();
    let md = push_image(&p, "r", "v1", &[b"layer"]);
    let m = p.get("/v2/r/manifests/v1").body;
    let r = p.req("DELETE", &format!("/v2/r/blobs/{md}"), &[], b"");
    // Refused (the spec's 405 UNSUPPORTED): the digest names a manifest, deleted through
    // /manifests/ only.
    assert_error(&r, 405, "UNSUPPORTED");
    for reference in ["v1", md.as_str()] {
        let r = p.get(&format!("/v2/r/manifests/{reference}"));
        assert_status(&r, 200);
        assert_eq!(r.body, m, "{reference}");
    }
    let after_restart = |p: &Pier| {
        for reference in ["v1", md.as_str()] {
            let r = p.get(&format!("/v2/r/manifests/{reference}"));
            assert_eq!(r.status, 200, "GET /v2/r/manifests/{reference} after restart: {}", show(&r));
            assert_eq!(r.body, m, "{reference} after restart");
        }
    };
    let layout_file = std::fs::read(repo_blob(&p, "r", &md));
    let mut p = p;
    p.kill9();
    p.restart();
    after_restart(&p);
    // The repository's OCI layout still lists v1 in index.json, so its blob must still be there.
    assert_eq!(
        layout_file.map_err(|e| e.to_string()),
        Ok(m.clone()),
        "DELETE /v2/r/blobs/<manifest digest> removed the manifest from the repository's OCI layout"
    );
}

#[test]
fn index_json_forgets_deleted_manifests() {
    let p = Pier::start();
    let d1 = push_image(&p, "r", "v1", &[b"one"]);
    let m1 = p.get("/v2/r/manifests/v1").body;
    push_manifest(&p, "r", "alias", OCI_MANIFEST, &m1);
    let d2 = push_image(&p, "r", "v2", &[b"two"]);
    assert_status(&p.req("DELETE", &format!("/v2/r/manifests/{d1}"), &[], b""), 202);
    let index = settled_layout(&p, "r").index;
    let entries = index["manifests"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["digest"] != d1), "index.json still lists the deleted manifest: {index}");
    assert!(entries.iter().any(|e| e["digest"] == d2 && e["annotations"]["org.opencontainers.image.ref.name"] == "v2"));
}

#[test]
fn concurrent_pushes_of_one_layer_to_many_repositories() {
    let p = Arc::new(Pier::start());
    let layer = Arc::new(random_bytes(2 * 1024 * 1024, 81));
    let d = sha256_digest(&layer);
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let (p, layer, barrier, d) = (p.clone(), layer.clone(), barrier.clone(), d.clone());
            std::thread::spawn(move || {
                let (loc, _) = start_upload(&p, &format!("repo{i}"));
                barrier.wait();
                put_digest(&p, &loc, &d, &layer).status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let g = std::fs::metadata(global_blob(&p, &d)).expect("global blob");
    assert_eq!(g.nlink(), 11);
    for i in 0..10 {
        assert_eq!(std::fs::metadata(repo_blob(&p, &format!("repo{i}"), &d)).unwrap().ino(), g.ino(), "repo{i}");
        get_blob_ok(&p, &format!("repo{i}"), &d, &layer);
    }
    assert_eq!(files_under(&p.root.join("blobs")), vec![global_blob(&p, &d)]);
}

#[test]
fn malformed_manifests_are_manifest_invalid() {
    let p = Pier::start();
    let cfg = push_blob(&p, "r", b"{}");
    let layer = push_blob(&p, "r", b"layer");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("trailing garbage", [image_manifest((&cfg, 2), &[(&layer, 5)]), b"garbage".to_vec()].concat()),
        ("deeply nested", deep.into_bytes()),
        (
            "schemaVersion 3",
            serde_json::to_vec(&json!({"schemaVersion": 3, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}, "layers": []}))
            .unwrap(),
        ),
        (
            "layers not an array",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}, "layers": {"a": 1}}))
            .unwrap(),
        ),
        (
            "negative size",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": -2}, "layers": []}))
            .unwrap(),
        ),
        (
            "malformed descriptor digest",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:zz", "size": 2}, "layers": []}))
            .unwrap(),
        ),
        ("not UTF-8", vec![0xff, 0xfe, b'{', b'}']),
    ];
    for (what, body) in cases {
        let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &body);
        assert_eq!(r.status, 400, "{what}: {}", show(&r));
        assert_api_header(&r);
        let code = r.error_code();
        assert!(code == "MANIFEST_INVALID" || code == "DIGEST_INVALID", "{what}: {}", show(&r));
    }
    // A malformed subject is refused too.
    let m = artifact_manifest(
        json!({"mediaType": OCI_CONFIG, "digest": cfg, "size": 2}),
        (&layer, 5),
        Some("application/vnd.example"),
        Some(json!({"mediaType": OCI_MANIFEST, "digest": "sha256:nothex", "size": 10})),
        None,
    );
    let r = p.req("PUT", "/v2/r/manifests/v1", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_eq!(r.status, 400, "malformed subject: {}", show(&r));
    // The server is still up and nothing was stored.
    assert_error(&p.get("/v2/r/manifests/v1"), 404, "MANIFEST_UNKNOWN");
    assert_status(&p.get("/v2/"), 200);
}

#[test]
fn final_put_with_wrong_content_range() {
    let p = Pier::start();
    let data = random_bytes(5000, 82);
    let d = sha256_digest(&data);
    let loc = start_upload_with(&p, "r", &data[..3000]);
    // The final chunk claims to start at 0 instead of 3000.
    let r = p.req(
        "PUT",
        &with_query(&loc, &format!("digest={d}")),
        &[("Content-Type", "application/octet-stream"), ("Content-Range", "0-1999")],
        &data[3000..],
    );
    // An out-of-order chunk: 416 (spec: "Requested Range Not Satisfiable").
    assert_error(&r, 416, "BLOB_UPLOAD_INVALID");
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).status, 404);
    assert!(files_under(&p.root.join("blobs")).is_empty(), "{:?}", files_under(&p.root.join("blobs")));
}

#[test]
fn concurrent_finish_of_one_session() {
    let p = Arc::new(Pier::start());
    let data = Arc::new(random_bytes(3 * 1024 * 1024, 83));
    let d = sha256_digest(&data);
    let (loc, _) = start_upload(&p, "r");
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (p, data, barrier, d, loc) = (p.clone(), data.clone(), barrier.clone(), d.clone(), loc.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = put_digest(&p, &loc, &d, &data);
                let code = if r.status == 201 { String::new() } else { r.error_code() };
                (r.status, code)
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // First the data: exactly one finish, with the right content.
    assert_eq!(answers.iter().filter(|a| a.0 == 201).count(), 1, "{answers:?}");
    get_blob_ok(&p, "r", &d, &data);
    assert_eq!(std::fs::metadata(global_blob(&p, &d)).unwrap().nlink(), 2);
    // Then the losers. The session's lock serialises the four PUTs: which one commits is the
    // race, but every later one finds the session closed: 404 BLOB_UPLOAD_UNKNOWN.
    assert!(
        answers.iter().all(|(s, code)| *s == 201 || (*s == 404 && code == "BLOB_UPLOAD_UNKNOWN")),
        "{answers:?}; server log:\n{}",
        p.log().lines().filter(|l| !l.contains("INFO")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn concurrent_delete_and_push_of_a_blob_stay_consistent() {
    let p = Arc::new(Pier::start());
    for round in 0..8u64 {
        let data = Arc::new(random_bytes(512 * 1024, 90 + round));
        let d = push_blob(&p, "r", &data);
        let barrier = Arc::new(Barrier::new(2));
        let (p1, b1, d1) = (p.clone(), barrier.clone(), d.clone());
        let del = std::thread::spawn(move || {
            b1.wait();
            p1.req("DELETE", &format!("/v2/r/blobs/{d1}"), &[], b"").status
        });
        let (p2, b2, data2) = (p.clone(), barrier.clone(), data.clone());
        let push = std::thread::spawn(move || {
            let d = sha256_digest(&data2);
            b2.wait();
            p2.req("POST", &format!("/v2/r/blobs/uploads/?digest={d}"), &[], &data2).status
        });
        assert_eq!(del.join().unwrap(), 202);
        assert_eq!(push.join().unwrap(), 201);
        // Either order is fine, but the API and the disk must agree.
        let r = p.get(&format!("/v2/r/blobs/{d}"));
        let linked = repo_blob(&p, "r", &d).exists();
        match r.status {
            200 => {
                assert!(r.body == *data, "round {round}: wrong content");
                assert!(linked, "round {round}: served but not in the repository layout");
                assert!(global_blob(&p, &d).exists(), "round {round}: served but no global file");
            }
            404 => assert!(!linked, "round {round}: 404 but still linked in the layout"),
            s => panic!("round {round}: {s}: {}", show(&r)),
        }
    }
}

#[test]
fn concurrent_referrers_to_one_subject() {
    let p = Arc::new(Pier::start());
    let sd = push_image(&p, "r", "v1", &[b"subject"]);
    let size = p.get("/v2/r/manifests/v1").body.len();
    let empty = push_empty_config(&p, "r");
    let pd = push_blob(&p, "r", b"payload");
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let (p, empty, pd, sd) = (p.clone(), empty.clone(), pd.clone(), sd.clone());
            std::thread::spawn(move || {
                let subject = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": size});
                let a = artifact_manifest(
                    empty,
                    (&pd, 7),
                    Some("application/vnd.example"),
                    Some(subject),
                    Some(json!({"i": i.to_string()})),
                );
                let r = p.req(
                    "PUT",
                    &format!("/v2/r/manifests/{}", sha256_digest(&a)),
                    &[("Content-Type", OCI_MANIFEST)],
                    &a,
                );
                assert_eq!(r.status, 201, "{}", show(&r));
                sha256_digest(&a)
            })
        })
        .collect();
    let expected: BTreeSet<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (r, list) = referrers(&p, "r", &sd, "");
    let got: BTreeSet<String> = list.iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, expected, "{}", show(&r));
}

#[test]
fn concurrent_moves_of_one_tag() {
    let p = Arc::new(Pier::start());
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"i": i.to_string()}})).unwrap();
                let r = p.req("PUT", "/v2/r/manifests/latest", &[("Content-Type", OCI_INDEX)], &idx);
                assert_eq!(r.status, 201, "{}", show(&r));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = p.get("/v2/r/manifests/latest");
    assert_status(&r, 200);
    let d = sha256_digest(&r.body);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(tags_of(&p, "r"), vec!["latest"]);
    let index = settled_layout(&p, "r").index;
    let latest: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .collect();
    assert_eq!(latest.len(), 1, "{index}");
    assert_eq!(latest[0]["digest"], d, "index.json disagrees with the API: {index}");
}

#[test]
fn concurrent_streamed_patches_of_one_session_do_not_interleave() {
    let p = Arc::new(Pier::start());
    let (loc, _) = start_upload(&p, "r");
    let a = Arc::new(random_bytes(4 * 1024 * 1024, 84));
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (p, a, barrier, loc) = (p.clone(), a.clone(), barrier.clone(), loc.clone());
            std::thread::spawn(move || {
                let parts: Vec<&[u8]> = a.chunks(16 * 1024).collect();
                let body = chunked_framing(&parts);
                barrier.wait();
                let r = p.req(
                    "PATCH",
                    &loc,
                    &[("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")],
                    &body,
                );
                (r.status, r.header("location").map(strip_origin))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    // Neither PATCH names a range, and the session's lock serialises them: both are appended,
    // one after the other (which one first is the race).
    assert_eq!(statuses, [202, 202], "{results:?}");
    let s = p.get(&loc);
    assert_status(&s, 204);
    let range = s.header("range").unwrap().to_string();
    let n: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    let copies = statuses.iter().filter(|s| **s == 202).count();
    assert_eq!(n, copies * a.len(), "Range {range} after {statuses:?}");
    let content = a.repeat(copies);
    let d = sha256_digest(&content);
    let r = put_digest(&p, &location(&s), &d, b"");
    assert_eq!(r.status, 201, "the two streams were interleaved: {}", show(&r));
}

#[test]
fn racing_operations_on_one_session_never_500() {
    let p = Arc::new(Pier::start());
    let mut failures = Vec::new();
    for round in 0..16u64 {
        let data = Arc::new(random_bytes(1024 * 1024, 100 + round));
        let d = sha256_digest(&data);
        let half = data.len() / 2;
        let loc = start_upload_with(&p, "r", &data[..half]);
        let barrier = Arc::new(Barrier::new(4));
        let ops = ["PUT", "DELETE", "PATCH", "GET"];
        let handles: Vec<_> = ops
            .iter()
            .map(|op| {
                let (p, data, barrier, loc, d, op) =
                    (p.clone(), data.clone(), barrier.clone(), loc.clone(), d.clone(), op.to_string());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = match op.as_str() {
                        "PUT" => {
                            let cr = format!("{}-{}", half, data.len() - 1);
                            p.req(
                                "PUT",
                                &with_query(&loc, &format!("digest={d}")),
                                &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
                                &data[half..],
                            )
                        }
                        "DELETE" => p.req("DELETE", &loc, &[], b""),
                        "PATCH" => patch_chunk(&p, &loc, half, &data[half..]),
                        _ => p.get(&loc),
                    };
                    (op, r.status, r.text())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (op, status, body) in &results {
            if *status >= 500 {
                failures.push(format!("round {round}: {op} {loc} -> {status} {body}"));
            }
        }
        if results.iter().any(|(op, s, _)| op == "PUT" && *s == 201) {
            get_blob_ok(&p, "r", &d, &data);
        }
    }
    assert!(
        failures.is_empty(),
        "5xx answers:\n{}\nserver errors:\n{}",
        failures.join("\n"),
        p.log().lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn racing_patch_and_final_put_accept_one_chunk() {
    // A PATCH and a closing PUT both carrying the chunk at the current offset: only one of them may
    // be applied, never both written into the session. The session's lock serialises them; the
    // race decides the order:
    // - PUT first: it commits (201); the PATCH finds the session closed (404 BLOB_UPLOAD_UNKNOWN);
    // - PATCH first: it appends (202); the PUT's range no longer starts at the session's end
    //   (416 BLOB_UPLOAD_INVALID), and the session, holding the whole blob, closes with an
    //   empty PUT.
    let p = Arc::new(Pier::start());
    let mut problems = Vec::new();
    for round in 0..6u64 {
        let data = Arc::new(random_bytes(2 * 1024 * 1024, 200 + round));
        let d = sha256_digest(&data);
        let half = data.len() / 2;
        let loc = start_upload_with(&p, "r", &data[..half]);
        let barrier = Arc::new(Barrier::new(2));
        let (p1, data1, b1, loc1, d1) = (p.clone(), data.clone(), barrier.clone(), loc.clone(), d.clone());
        let put = std::thread::spawn(move || {
            let cr = format!("{}-{}", half, data1.len() - 1);
            b1.wait();
            let r = p1.req(
                "PUT",
                &with_query(&loc1, &format!("digest={d1}")),
                &[("Content-Type", "application/octet-stream"), ("Content-Range", &cr)],
                &data1[half..],
            );
            let code = if r.status == 201 { String::new() } else { r.error_code() };
            (r.status, code)
        });
        let (p2, data2, b2, loc2) = (p.clone(), data.clone(), barrier.clone(), loc.clone());
        let patch = std::thread::spawn(move || {
            b2.wait();
            let r = patch_chunk(&p2, &loc2, half, &data2[half..]);
            let code = if r.status == 202 { String::new() } else { r.error_code() };
            (r.status, code)
        });
        let (put, patch) = (put.join().unwrap(), patch.join().unwrap());
        let put_first = put.0 == 201 && patch == (404, "BLOB_UPLOAD_UNKNOWN".to_string());
        let patch_first = put == (416, "BLOB_UPLOAD_INVALID".to_string()) && patch.0 == 202;
        if !(put_first || patch_first) {
            problems.push(format!("round {round}: PUT -> {put:?}, PATCH -> {patch:?}"));
        }
        if patch_first {
            let r = put_digest(&p, &loc, &d, b"");
            assert_eq!(r.status, 201, "round {round}: closing the session the PATCH completed: {}", show(&r));
        }
        if put_first || patch_first {
            get_blob_ok(&p, "r", &d, &data);
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nserver errors:\n{}",
        problems.join("\n"),
        p.log().lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn malformed_content_range_is_blob_upload_invalid() {
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    // A length that does not fit in 64 bits (it wrapped to 0 once), and totals that do not cover
    // the range or are not numbers.
    for cr in ["abc", "5-1", "-5", "0-", "bytes=0-4", "0-18446744073709551615", "0-4/4", "0-4/x", "bytes 0-4/"] {
        let r = p.req("PATCH", &loc, &[("Content-Type", "application/octet-stream"), ("Content-Range", cr)], b"hello");
        // None of these parses as `<start>-<end>`: 400, not the 416 of a chunk out of order.
        assert_error_ctx(&r, 400, "BLOB_UPLOAD_INVALID", &format!("Content-Range {cr:?}"));
    }
    // The session is untouched.
    let r = patch_chunk(&p, &loc, 0, b"hello");
    assert_status(&r, 202);
    assert_eq!(r.header("range"), Some("0-4"));
}

/// The chunk contract (README): a chunk with a `Content-Range` is whole or not at all. Cut off
/// mid-body, its bytes are dropped; while it streams and after, the session reports the offset
/// before it; a retry of the same chunk then fits and the blob commits exactly.
#[test]
fn interrupted_declared_chunk_is_not_kept_and_its_retry_fits() {
    let p = Pier::start();
    let data = random_bytes(6 << 20, 82);
    let d = sha256_digest(&data);
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
    assert_status(&r, 202);
    let r = patch_chunk(&p, &location(&r), 0, &data[..1 << 20]);
    assert_status(&r, 202);
    let loc = location(&r);
    let (start, end) = (1usize << 20, data.len());
    let mut s = TcpStream::connect(p.addr).unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {start}-{}\r\nContent-Length: {}\r\n\r\n",
        p.addr,
        end - 1,
        end - start
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data[start..start + (3 << 20)]).unwrap();
    // While the chunk streams (its bytes are being written), the session says where it stood.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.get(&loc).header("range"), Some("0-1048575"), "status during a declared chunk");
    drop(s); // cut off mid-body
    p.wait_log(&format!("PATCH {loc} 4"), Duration::from_secs(10));
    assert_eq!(p.get(&loc).header("range"), Some("0-1048575"), "status after the cut: the chunk is not in");
    let r = patch_chunk(&p, &loc, start, &data[start..]);
    assert_status(&r, 202);
    assert_eq!(r.header("range"), Some(format!("0-{}", end - 1).as_str()));
    let r = p.req("PUT", &with_query(&location(&r), &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    assert!(p.get(&format!("/v2/r/blobs/{d}")).body == data, "blob content differs");
}

#[test]
fn interrupted_patch_with_content_length_resumes_and_commits_exactly() {
    // A PATCH announcing 8 MiB is cut after 3 MiB (pier allocates announced space up front). The
    // session keeps exactly what arrived, the client resumes from there with a different split,
    // and the committed blob holds the exact bytes and no allocated space past its end.
    let p = Pier::start();
    let data = random_bytes(5 << 20, 81);
    let d = sha256_digest(&data);
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
    assert_status(&r, 202);
    let loc = location(&r);
    {
        let mut s = TcpStream::connect(p.addr).unwrap();
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            p.addr,
            8 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&data[..3 << 20]).unwrap();
    } // dropped: the connection closes mid-body
    let mut received = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let r = p.req("GET", &loc, &[], b"");
            received = r
                .header("range")
                .and_then(|v| v.strip_prefix("0-"))
                .and_then(|v| v.parse::<usize>().ok())
                .map_or(0, |e| e + 1);
            r.status == 204 && received == 3 << 20
        }),
        "upload status after the cut: {received} bytes"
    );
    let rest = &data[received..];
    let range = format!("{received}-{}", data.len() - 1);
    let r = p.req("PATCH", &loc, &[("Content-Range", &range), ("Content-Type", "application/octet-stream")], rest);
    assert_status(&r, 202);
    let r = p.req("PUT", &with_query(&location(&r), &format!("digest={d}")), &[], b"");
    assert_status(&r, 201);
    let r = p.get(&format!("/v2/r/blobs/{d}"));
    assert_status(&r, 200);
    assert!(r.body == data, "blob content differs");
    let file = p.root.join("repositories/r/blobs/sha256").join(d.trim_start_matches("sha256:"));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), data.len() as u64);
    assert!(
        meta.blocks() * 512 <= data.len() as u64 + (1 << 20),
        "{} blocks allocated for {} bytes",
        meta.blocks(),
        data.len()
    );
}

#[test]
fn deleting_the_last_link_frees_the_disk_at_once() {
    // Blob and manifest files leave the global store as soon as no repository links them (no
    // restart, no separate garbage collection), and come back when pushed again.
    let p = Pier::start();
    let data = random_bytes(300_000, 82);
    let d = push_blob(&p, "a", &data);
    push_blob(&p, "b", &data);
    assert_status(&p.req("DELETE", &format!("/v2/a/blobs/{d}"), &[], b""), 202);
    assert!(global_blob(&p, &d).exists(), "b still links the blob");
    get_blob_ok(&p, "b", &d, &data);
    assert_status(&p.req("DELETE", &format!("/v2/b/blobs/{d}"), &[], b""), 202);
    assert!(!global_blob(&p, &d).exists(), "last link deleted: the file must be gone");
    assert!(!repo_blob(&p, "b", &d).exists());
    assert_error(&p.get(&format!("/v2/b/blobs/{d}")), 404, "BLOB_UNKNOWN");
    // A mount from a repository that lost it is a normal upload, not a dangling link.
    let r = p.req("POST", &format!("/v2/c/blobs/uploads/?mount={d}&from=b"), &[], b"");
    assert_status(&r, 202);
    assert_eq!(push_blob(&p, "c", &data), d);
    get_blob_ok(&p, "c", &d, &data);
    assert!(global_blob(&p, &d).exists());

    let md = push_image(&p, "m", "v1", &[b"only layer"]);
    assert!(global_blob(&p, &md).exists());
    assert_status(&p.req("DELETE", &format!("/v2/m/manifests/{md}"), &[], b""), 202);
    assert!(!global_blob(&p, &md).exists(), "manifest file left behind");
    assert_error(&p.get(&format!("/v2/m/manifests/{md}")), 404, "MANIFEST_UNKNOWN");
    // Nothing is left for the start-up sweep to find.
    let mut p = p;
    p.restart();
    assert!(p.log().contains("0 unreferenced file(s) removed"), "{}", p.log());
}

#[test]
fn concurrent_deletes_mounts_pushes_and_pulls_never_dangle() {
    // Deletes of the last link race with pushes, mounts and pulls of the same blob. Every
    // answer is a success or a clean "unknown" (never a 500), and afterwards every link in a
    // repository layout has its global file.
    let p = Arc::new(Pier::start());
    const REPOS: [&str; 3] = ["x", "y", "z"];
    for round in 0..6u64 {
        let data = Arc::new(random_bytes(256 * 1024, 200 + round));
        let d = push_blob(&p, "x", &data);
        let barrier = Arc::new(Barrier::new(6));
        let mut workers = Vec::new();
        for (i, repo) in REPOS.iter().enumerate() {
            let (p1, b1, d1) = (p.clone(), barrier.clone(), d.clone());
            workers.push(std::thread::spawn(move || {
                b1.wait();
                let r = p1.req("DELETE", &format!("/v2/{repo}/blobs/{d1}"), &[], b"");
                // 202 if `repo` holds the blob when the delete runs; 404 BLOB_UNKNOWN if it does
                // not (yet, or any more: the mount and the push into `repo` race with it), or
                // NAME_UNKNOWN while `repo` has never held anything (first round). The invariant
                // (API and disk agree, no link without its global file) is checked after the round.
                match r.status {
                    202 => {}
                    404 => {
                        let code = r.error_code();
                        assert!(matches!(code.as_str(), "BLOB_UNKNOWN" | "NAME_UNKNOWN"), "delete {repo}: {}", show(&r))
                    }
                    _ => panic!("delete {repo}: {}", show(&r)),
                }
            }));
            let (p2, b2, d2, data2) = (p.clone(), barrier.clone(), d.clone(), data.clone());
            let from = REPOS[(i + 1) % REPOS.len()];
            workers.push(std::thread::spawn(move || {
                b2.wait();
                let r = p2.req("POST", &format!("/v2/{repo}/blobs/uploads/?mount={d2}&from={from}"), &[], b"");
                // 201 if `from` holds the blob when the mount runs; if a delete got there first,
                // the spec's fallback: an upload session (202).
                assert!(matches!(r.status, 201 | 202), "mount {from} -> {repo}: {}", show(&r));
                let r = p2.get(&format!("/v2/{from}/blobs/{d2}"));
                match r.status {
                    200 => assert!(r.body == *data2, "pull {from}: wrong content"),
                    // NAME_UNKNOWN while `from` has never had anything (first round).
                    404 => assert!(matches!(r.error_code().as_str(), "BLOB_UNKNOWN" | "NAME_UNKNOWN"), "{}", show(&r)),
                    _ => panic!("pull {from}: {}", show(&r)),
                }
                let r = p2.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d2}"), &[], &data2);
                assert_eq!(r.status, 201, "push {repo}: {}", show(&r));
            }));
        }
        for w in workers {
            w.join().unwrap();
        }
        for repo in REPOS {
            let linked = repo_blob(&p, repo, &d).exists();
            let r = p.get(&format!("/v2/{repo}/blobs/{d}"));
            match r.status {
                200 => {
                    assert!(r.body == *data, "round {round}, {repo}: wrong content");
                    assert!(linked, "round {round}, {repo}: served but not in the layout");
                }
                404 => assert!(!linked, "round {round}, {repo}: 404 but still in the layout"),
                _ => panic!("round {round}, {repo}: {}", show(&r)),
            }
            if linked {
                assert!(global_blob(&p, &d).exists(), "round {round}, {repo}: link without a global file");
            }
        }
    }
}

/// A storage failure answers 500 naming the operation that failed (never the server's paths),
/// logs the operation, the path and the cause, and heals when the disk does (no restart).
#[test]
fn storage_failures_name_the_operation_and_heal_without_restart() {
    let p = Pier::start();
    let uploads = p.root.join("uploads");
    std::fs::remove_dir(&uploads).unwrap();
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[], b"");
    // UNKNOWN: the spec's code for a failure it has no code for.
    assert_error(&r, 500, "UNKNOWN");
    let message = r.json()["errors"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("storage failed: create"), "{message}");
    assert!(!message.contains(p.root.to_str().unwrap()), "a server path reached the client: {message}");
    p.wait_log("internal error: create", Duration::from_secs(10));
    let line = p.log().lines().find(|l| l.contains("internal error: create")).unwrap().to_string();
    assert!(line.contains(uploads.to_str().unwrap()), "the log names no path: {line}");
    std::fs::create_dir(&uploads).unwrap();
    let data = b"after the disk came back";
    let d = push_blob(&p, "r", data);
    assert_eq!(p.get(&format!("/v2/r/blobs/{d}")).body, data);
}

/// Space follows the bytes received: a PATCH that announces 10 GiB and sends 10 bytes reserves
/// at most a bounded window on disk (64 MiB ahead), not 10 GiB, however long the session lives.
#[test]
fn an_announced_length_reserves_only_a_window_ahead_of_the_bytes() {
    use std::os::unix::fs::MetadataExt;
    let p = Pier::start();
    let (loc, _) = start_upload(&p, "r");
    let id = loc.rsplit('/').next().unwrap().to_string();
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10737418240\r\n\r\n0123456789")
        .unwrap();
    s.flush().unwrap();
    // Space is reserved when the request starts writing (before its first bytes land).
    let file = p.root.join("uploads").join(&id);
    let allocated = || std::fs::metadata(&file).map_or(0, |m| m.blocks() * 512);
    assert!(wait_until(Duration::from_secs(10), || allocated() > 0), "nothing allocated for {file:?}");
    assert!(allocated() <= 65 << 20, "{} bytes allocated while 10 bytes arrived", allocated());
    drop(s);
    p.wait_log(&format!("PATCH {loc} 400"), Duration::from_secs(10));
    assert!(allocated() <= 65 << 20, "{} bytes allocated after the client left", allocated());
    // The session goes on from the 10 bytes.
    let r = p.get(&loc);
    assert_status(&r, 204);
    assert_eq!(r.header("range"), Some("0-9"));
}

// ---------------------------------------------------------------------------------------------
// Non-distributable (foreign) layers
// ---------------------------------------------------------------------------------------------

/// A Windows-style image: a foreign base layer that names URLs (not pushed: clients fetch it
/// from there) and one ordinary layer.
fn windows_like_manifest(p: &Pier, repo: &str, media_type: &str, layer_type: &str, urls: &[&str]) -> Vec<u8> {
    let config = format!("{{\"os\":\"windows\",\"n\":\"{}\"}}", nonce()).into_bytes();
    let config_digest = push_blob(p, repo, &config);
    let layer = random_bytes(1000, 77);
    let layer_digest = push_blob(p, repo, &layer);
    let foreign = random_bytes(64, 78); // never pushed
    let config_type = if media_type == OCI_MANIFEST {
        "application/vnd.oci.image.config.v1+json"
    } else {
        "application/vnd.docker.container.image.v1+json"
    };
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
        "layers": [
            {"mediaType": layer_type, "digest": sha256_digest(&foreign), "size": foreign.len(), "urls": urls},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": layer.len()},
        ],
    }))
    .unwrap()
}

/// Manifests whose layers are non-distributable are accepted without those blobs, then pulled,
/// HEADed and listed like any other; their URLs follow `validation.manifests.urls`.
#[test]
fn foreign_layers_are_accepted_without_their_blobs() {
    let p = Pier::start();
    let mcr = "https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:1234";
    for (media_type, layer_type, tag) in [
        (DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "docker"),
        (OCI_MANIFEST, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "oci"),
    ] {
        let m = windows_like_manifest(&p, "win", media_type, layer_type, &[mcr]);
        let d = push_manifest(&p, "win", tag, media_type, &m);
        let r = p.get(&format!("/v2/win/manifests/{tag}"));
        assert_status(&r, 200);
        assert!(r.body == m, "{tag}: manifest bytes");
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        assert_status(&p.req("HEAD", &format!("/v2/win/manifests/{d}"), &[], b""), 200);
    }
    assert_eq!(tags_of(&p, "win"), ["docker", "oci"]);
    let index = settled_layout(&p, "win").index;
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2), "{index}");

    // Without URLs a non-distributable layer is an ordinary blob: it must be in the repository.
    let m =
        windows_like_manifest(&p, "win", OCI_MANIFEST, "application/vnd.oci.image.layer.nondistributable.v1.tar", &[]);
    let r = p.req("PUT", "/v2/win/manifests/nourls", &[("Content-Type", OCI_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    // A URL that is not http(s) is refused.
    let m = windows_like_manifest(
        &p,
        "win",
        DOCKER_MANIFEST,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        &["file:///etc/passwd"],
    );
    let r = p.req("PUT", "/v2/win/manifests/file", &[("Content-Type", DOCKER_MANIFEST)], &m);
    assert_error(&r, 400, "MANIFEST_INVALID");
}

/// `validation.manifests.urls.allow`/`deny` restrict the URLs layers may name, as in Distribution.
#[test]
fn foreign_layer_urls_follow_allow_and_deny() {
    let p = Pier::start_with(Options {
        extra_yaml: String::from(
            "validation:\n  manifests:\n    urls:\n      allow: ['^https://mcr\\.microsoft\\.com/']\n      deny: ['/private/']\n",
        ),
        ..Default::default()
    });
    let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    for (url, ok) in [
        ("https://mcr.microsoft.com/v2/windows/blobs/x", true),
        ("https://example.com/v2/windows/blobs/x", false),
        ("https://mcr.microsoft.com/private/x", false),
    ] {
        let m = windows_like_manifest(&p, "win", DOCKER_MANIFEST, foreign, &[url]);
        let r = p.req("PUT", "/v2/win/manifests/t", &[("Content-Type", DOCKER_MANIFEST)], &m);
        if ok {
            assert_status(&r, 201);
        } else {
            assert_error(&r, 400, "MANIFEST_INVALID");
            assert!(r.text().contains("validation.manifests.urls"), "{url}: the message names the rule: {}", r.text());
        }
    }
}
