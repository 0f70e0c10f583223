//! Native TLS (`http.tls`) against the real daemon with real clients: skopeo, curl and the
//! `openssl` CLI. Certificates come from a throwaway PKI made with `openssl` for every test:
//! ECDSA P-256 and RSA 2048 keys, in PKCS#8, PKCS#1 and SEC1 encodings, a server chain through an
//! intermediate CA, client certificates for mTLS (`clientcas`).
//!
//! Covered: push/pull round trips with skopeo (`--dest-cert-dir`/`--src-cert-dir`, verification
//! on), mTLS accept/refuse, ALPN (`h2`, `http/1.1`), TLS 1.2 and 1.3, certificate reload on file
//! change and on SIGHUP while a keep-alive connection keeps working, the answer to plain HTTP on
//! the TLS port, and refusing to start with an unusable certificate or key.

use crate::harness::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `skopeo copy --preserve-digests oci:DIR:v1 REFERENCE`, verifying the server with the
/// certificates in `certs` (`--dest-cert-dir`).
fn skopeo_push_tls(p: &Pier, dir: &Path, certs: &Path, reference: &str) {
    let src = format!("oci:{}:v1", dir.display());
    skopeo_p(
        p,
        &["copy", "--preserve-digests", "--dest-tls-verify=true", "--dest-cert-dir", s(certs), &src, reference],
    );
}

/// `skopeo copy --preserve-digests REFERENCE oci:DIR:v1` into a fresh directory, verifying the
/// server with the certificates in `certs` (`--src-cert-dir`); returns the layout read back.
fn skopeo_pull_tls(p: &Pier, reference: &str, certs: &Path) -> Layout {
    let dst = tmpdir();
    let out = format!("oci:{}:v1", dst.path().display());
    skopeo_p(p, &["copy", "--preserve-digests", "--src-tls-verify=true", "--src-cert-dir", s(certs), reference, &out]);
    read_layout(dst.path())
}

fn tls_pier(tls: String) -> Pier {
    Pier::start_with(Options { delete_enabled: true, extra_yaml: tls, ..Default::default() })
}

/// `https://127.0.0.1:PORT` (no trailing slash).
fn base(p: &Pier) -> String {
    format!("https://127.0.0.1:{}", p.addr.port())
}

/// Polls the certificate the server presents until its serial is `serial`; returns how long that
/// took, or panics after `timeout` with what was seen.
fn wait_for_serial(p: &Pier, serial: u64, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut last = Err(String::from("never asked"));
    while start.elapsed() < timeout {
        last = served_cert(&p.host());
        if matches!(&last, Ok((s, _)) if *s == serial) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: serial {serial:X} not presented within {timeout:?}; last seen {last:?}\n{}", p.log_tail());
}

/// Checks an upload/blob `Location` a TLS client got straight from pier: with a `Host` header
/// (HTTP/1.1) it must be `https://127.0.0.1:PORT/v2/REPO/…`; over HTTP/2 (no `Host` header) an
/// origin-relative `/v2/REPO/…` is acceptable too. Never `http://`.
fn check_tls_location(p: &Pier, repo: &str, h2: bool, what: &str, loc: &str) {
    let abs = format!("{}/v2/{repo}/", base(p));
    let ok = loc.starts_with(&abs) || (h2 && loc.starts_with(&format!("/v2/{repo}/")));
    assert!(ok, "{what}: Location {loc:?} over TLS (HTTP/{}) should start with {abs:?}", if h2 { "2" } else { "1.1" });
}

// ---------------------------------------------------------------------------------------------

#[test]
fn skopeo_round_trip_over_tls_with_an_ecdsa_certificate() {
    let dir = tmpdir();
    let ca = Ca::root(dir.path(), "ca", KeyType::EcP256);
    let server = ca.issue("server", KeyType::EcP256, KeyFormat::Sec1, Usage::Server);
    let p = tls_pier(tls_yaml(&server.cert, &server.key, &[]));
    let certs = cert_dir(&dir.path().join("certs"), &ca.cert, None);

    // The handshake presents our ECDSA certificate, and it verifies against the CA.
    let (ok, text) = s_client(&p.host(), &["-CAfile", s(&ca.cert), "-verify_return_error"]);
    assert!(ok && text.contains("Verify return code: 0 (ok)"), "s_client:\n{text}");
    assert!(text.contains("Server public key is 256 bit"), "not the P-256 key?\n{text}");
    assert_eq!(served_cert(&p.host()).unwrap().0, server.serial);

    let img = Image::new("tls-ec", "amd64", &[300_000, 70_000], 31);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let reference = format!("docker://{}/tls/ec:v1", p.host());
    skopeo_push_tls(&p, src.path(), &certs, &reference);
    let out = skopeo_p(&p, &["inspect", "--tls-verify=true", "--cert-dir", s(&certs), &reference]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect: {e}: {out}"));
    assert_eq!(v["Digest"], img.digest(), "skopeo inspect over TLS: {v}");
    assert_eq!(v["Layers"], serde_json::json!(img.layer_digests()), "{v}");

    skopeo_pull_tls(&p, &reference, &certs).assert_has_image("v1", &img);

    // curl sees the same bytes, and upload Locations point back at https://.
    let tls = ["--cacert", s(&ca.cert)];
    let r =
        curl(&cat(&tls, &["-H", &format!("Accept: {ACCEPT_ALL}"), &format!("{}/v2/tls/ec/manifests/v1", base(&p))]))
            .expect(200, "GET manifest over TLS");
    assert!(r.body == img.manifest, "manifest bytes over TLS");
    assert_eq!(r.header("docker-content-digest"), Some(img.digest().as_str()));
    for (flag, h2) in [("--http1.1", false), ("--http2", true)] {
        let r = curl(&cat(
            &tls,
            &[flag, "-X", "POST", "--data-binary", "", &format!("{}/v2/tls/ec/blobs/uploads/", base(&p))],
        ))
        .expect(202, "POST upload over TLS");
        assert_eq!(r.http_version, if h2 { "2" } else { "1.1" });
        check_tls_location(&p, "tls/ec", h2, "POST upload", r.header("location").unwrap_or(""));
    }

    // Clients that do not trust the CA are refused: verification really happens.
    let other = Ca::root(dir.path(), "other", KeyType::EcP256);
    let out = skopeo_output(&["inspect", "--tls-verify=true", &reference]);
    assert!(!out.status.success(), "skopeo trusted an unknown CA: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") || err.contains("x509"), "skopeo failed for another reason: {err}");
    let r = curl(&["--cacert", s(&other.cert), &format!("{}/v2/", base(&p))]);
    assert_eq!(r.code, 60, "curl with another CA should fail verification (exit 60): {r:?}");
}

#[test]
fn mtls_requires_a_client_certificate_from_one_of_the_client_cas() {
    let dir = tmpdir();
    let d = dir.path();
    // RSA everywhere on the server side: a chain root -> intermediate -> server (PKCS#1 key).
    let root = Ca::root(d, "root", KeyType::Rsa2048);
    let inter = root.intermediate("intermediate", KeyType::Rsa2048);
    let server = inter.issue("server", KeyType::Rsa2048, KeyFormat::Pkcs1, Usage::Server);
    let chain = d.join("server-chain.crt");
    concat(&chain, &[&server.cert, &inter.cert]);
    // Two client CAs (both trusted) and a rogue one.
    let clients_ec = Ca::root(d, "clients-ec", KeyType::EcP256);
    let clients_rsa = Ca::root(d, "clients-rsa", KeyType::Rsa2048);
    let rogue = Ca::root(d, "rogue", KeyType::EcP256);
    let alice = clients_ec.issue("alice", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Client);
    let bob = clients_rsa.issue("bob", KeyType::Rsa2048, KeyFormat::Pkcs1, Usage::Client);
    let mallory = rogue.issue("mallory", KeyType::EcP256, KeyFormat::Sec1, Usage::Client);

    let p = tls_pier(tls_yaml(&chain, &server.key, &[&clients_ec.cert, &clients_rsa.cert]));
    let url = format!("{}/v2/", base(&p));
    let ca = s(&root.cert);

    // The server sends its intermediate: a client trusting only the root verifies the chain.
    let (_, text) =
        s_client(&p.host(), &["-CAfile", ca, "-verify_return_error", "-cert", s(&alice.cert), "-key", s(&alice.key)]);
    assert!(text.contains("Verify return code: 0 (ok)"), "chain does not verify against the root:\n{text}");

    // With a certificate from either trusted client CA: served.
    for (who, c) in [("alice (ECDSA, clients-ec)", &alice), ("bob (RSA, clients-rsa)", &bob)] {
        for versions in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
            let mut a = vec!["--cacert", ca, "--cert", s(&c.cert), "--key", s(&c.key)];
            a.extend_from_slice(versions);
            a.push(&url);
            let r = curl(&a).expect(200, &format!("mTLS with {who} {versions:?}"));
            assert_eq!(r.body, b"{}");
        }
    }

    // Without a certificate, or with one from another CA: the handshake fails, nothing is served.
    for versions in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
        let mut a = vec!["--cacert", ca];
        a.extend_from_slice(versions);
        a.push(&url);
        let r = curl(&a);
        assert!(r.code != 0 && r.status == 0, "no client certificate {versions:?} was served: {r:?}");
        let mut a = vec!["--cacert", ca, "--cert", s(&mallory.cert), "--key", s(&mallory.key)];
        a.extend_from_slice(versions);
        a.push(&url);
        let r = curl(&a);
        assert!(r.code != 0 && r.status == 0, "client certificate from an unknown CA {versions:?} was served: {r:?}");
    }
    // A client CA's own key is no client certificate either (self-signed CA cert, no clientAuth).
    let r = curl(&["--cacert", ca, "--cert", s(&rogue.cert), "--key", s(&rogue.key), &url]);
    assert!(r.code != 0 && r.status == 0, "rogue CA certificate was served: {r:?}");

    // skopeo: push with alice's pair, pull back with bob's, both verifying the server.
    let img = Image::new("tls-mtls", "amd64", &[120_000, 9_000], 32);
    let src = tmpdir();
    write_image_layout(src.path(), "v1", &img);
    let reference = format!("docker://{}/tls/mtls:v1", p.host());
    let push_certs = cert_dir(&d.join("push-certs"), &root.cert, Some(&alice));
    let pull_certs = cert_dir(&d.join("pull-certs"), &root.cert, Some(&bob));
    let ca_only = cert_dir(&d.join("ca-only"), &root.cert, None);
    skopeo_push_tls(&p, src.path(), &push_certs, &reference);
    skopeo_pull_tls(&p, &reference, &pull_certs).assert_has_image("v1", &img);
    let out = skopeo_output(&["inspect", "--tls-verify=true", "--cert-dir", s(&ca_only), &reference]);
    assert!(
        !out.status.success(),
        "skopeo without a client certificate was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The refused handshakes did not hurt the daemon.
    let r = curl(&["--cacert", ca, "--cert", s(&alice.cert), "--key", s(&alice.key), &url]);
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
}

#[test]
fn alpn_h2_and_http11_tls12_and_tls13() {
    let dir = tmpdir();
    let ca = Ca::root(dir.path(), "ca", KeyType::Rsa2048);
    let server = ca.issue("server", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
    let p = tls_pier(tls_yaml(&server.cert, &server.key, &[]));
    let ca = s(&ca.cert);
    let url = format!("{}/v2/", base(&p));

    // ALPN: curl negotiates what it asks for; without ALPN the server speaks HTTP/1.1.
    for (flags, want) in [
        (&["--http2"][..], "2"),
        (&["--http1.1"][..], "1.1"),
        (&["--http1.1", "--no-alpn"][..], "1.1"),
        (&["--http2", "--tlsv1.2", "--tls-max", "1.2"][..], "2"),
    ] {
        let mut a = vec!["--cacert", ca];
        a.extend_from_slice(flags);
        a.push(&url);
        let r = curl(&a).expect(200, &format!("curl {flags:?}"));
        assert_eq!(r.http_version, want, "curl {flags:?} negotiated HTTP/{}", r.http_version);
        assert_eq!(r.body, b"{}");
    }
    for proto in ["h2", "http/1.1"] {
        let (_, text) = s_client(&p.host(), &["-alpn", proto]);
        assert!(text.contains(&format!("ALPN protocol: {proto}")), "ALPN {proto} not selected:\n{text}");
    }
    let (_, text) = s_client(&p.host(), &["-alpn", "h2,http/1.1"]);
    assert!(text.contains("ALPN protocol: h2"), "h2 should win when offered first:\n{text}");

    // TLS 1.2 and 1.3 are both accepted.
    for (curl_flags, s_flag, name) in
        [(&["--tlsv1.2", "--tls-max", "1.2"][..], "-tls1_2", "TLSv1.2"), (&["--tlsv1.3"][..], "-tls1_3", "TLSv1.3")]
    {
        let mut a = vec!["--cacert", ca];
        a.extend_from_slice(curl_flags);
        a.push(&url);
        curl(&a).expect(200, &format!("curl {curl_flags:?}"));
        let (ok, text) = s_client(&p.host(), &[s_flag, "-CAfile", ca, "-verify_return_error"]);
        assert!(ok && text.contains(&format!("New, {name}, Cipher is")), "{name} handshake:\n{text}");
    }
    // Nothing older.
    let (ok, text) = s_client(&p.host(), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok && text.contains("alert") && !text.contains("New, TLSv1.1"), "TLS 1.1 was not refused:\n{text}");

    // The DNS name in the certificate works too.
    let port = p.addr.port();
    let r = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/v2/"),
    ]);
    assert_eq!((r.code, r.status), (0, 200), "https://localhost: {r:?}");

    // A chunked push and a pull over each protocol.
    for (flag, h2, seed) in [("--http2", true, 1u64), ("--http1.1", false, 2)] {
        let repo = format!("alpn/h{}", if h2 { "2" } else { "1" });
        let data = random_bytes(3 * 1024 * 1024 + 17, 900 + seed);
        let digest = sha256_digest(&data);
        let tls = ["--cacert", ca, flag];
        curl_push_blob(&tls, &base(&p), &repo, &data, &digest, 3, &|what, loc| {
            check_tls_location(&p, &repo, h2, what, loc)
        });
        let r = curl(&["--cacert", ca, flag, &format!("{}/v2/{repo}/blobs/{digest}", base(&p))])
            .expect(200, &format!("GET blob {flag}"));
        assert_eq!(r.http_version, if h2 { "2" } else { "1.1" });
        assert_eq!(r.body.len(), data.len(), "blob length {flag}");
        assert!(r.body == data, "blob content {flag}");
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = sha256_digest(cfg);
        curl_push_blob(&tls, &base(&p), &repo, cfg, &cd, 1, &|_, _| {});
        let m = image_manifest((&cd, cfg.len()), &[(&digest, data.len())]);
        let r = curl_put_manifest(&tls, &base(&p), &repo, "v1", OCI_MANIFEST, &m);
        check_tls_location(&p, &repo, h2, "PUT manifest", r.header("location").unwrap_or(""));
        let r = curl(&[
            "--cacert",
            ca,
            flag,
            "-H",
            &format!("Accept: {OCI_MANIFEST}"),
            &format!("{}/v2/{repo}/manifests/v1", base(&p)),
        ])
        .expect(200, "GET manifest");
        assert!(r.body == m, "manifest bytes {flag}");
    }
}

/// A `curl` that downloads `blob_url` at 1 MiB/s into `out`, then fetches `/v2/` on the same
/// connection; prints `code num_connects size_download http_version` per URL.
fn slow_download(ca: &str, flag: &str, blob_url: &str, v2_url: &str, out: &Path) -> Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "120", "--cacert", ca, flag, "--limit-rate", "1M"])
        .args(["-w", "%{http_code} %{num_connects} %{size_download} %{http_version}\\n"])
        .arg("-o")
        .arg(out)
        .arg(blob_url)
        .args(["-o", "/dev/null", v2_url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run curl: {e} (is it installed?)"))
}

/// Sends SIGHUP and waits until the reload it triggers has logged `reloaded` (the certificate
/// line): from then on pier serves, and its poller compares against, the files as they are now.
/// (The reload loop is sequential: no poll runs between the SIGHUP reload and its log line.)
fn sighup_and_wait_reload(p: &Pier, reloaded: &str) {
    let hups = p.log_count("SIGHUP: reloading");
    p.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let log = p.run_log();
            log.matches("SIGHUP: reloading").count() > hups
                && log.rsplit("SIGHUP: reloading").next().is_some_and(|after| after.contains(reloaded))
        }),
        "no {reloaded:?} after SIGHUP within 20 s; log:\n{}",
        p.log_tail()
    );
}

#[test]
fn certificates_reload_on_file_change_and_on_sighup_without_dropping_connections() {
    let dir = tmpdir();
    let d = dir.path();
    let ca = Ca::root(d, "ca", KeyType::EcP256);
    let first = ca.issue("first", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
    let second = ca.issue("second", KeyType::Rsa2048, KeyFormat::Pkcs8, Usage::Server);
    let third = ca.issue("third", KeyType::EcP256, KeyFormat::Sec1, Usage::Server);
    let fourth = ca.issue("fourth", KeyType::Rsa2048, KeyFormat::Pkcs1, Usage::Server);
    let live = d.join("live");
    std::fs::create_dir(&live).unwrap();
    let (crt, key) = (live.join("server.crt"), live.join("server.key"));
    std::fs::copy(&first.cert, &crt).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let mut p = tls_pier(tls_yaml(&crt, &key, &[]));
    let cafile = s(&ca.cert).to_string();
    assert_eq!(served_cert(&p.host()).unwrap().0, first.serial, "initial certificate");

    // A 16 MiB blob to download slowly across the swap.
    let big = random_bytes(16 * 1024 * 1024, 777);
    let digest = sha256_digest(&big);
    curl_push_blob(&["--cacert", &cafile], &base(&p), "reload/big", &big, &digest, 2, &|_, _| {});
    let blob_url = format!("{}/v2/reload/big/blobs/{digest}", base(&p));
    let v2_url = format!("{}/v2/", base(&p));
    let out_h1 = d.join("big.h1");
    let out_h2 = d.join("big.h2");
    let mut dl_h1 = slow_download(&cafile, "--http1.1", &blob_url, &v2_url, &out_h1);
    let mut dl_h2 = slow_download(&cafile, "--http2", &blob_url, &v2_url, &out_h2);
    // Both downloads are under way (their handshakes were made with the first certificate) once
    // their output files hold bytes.
    let started = |f: &Path| std::fs::metadata(f).is_ok_and(|m| m.len() > 0);
    assert!(
        wait_until(Duration::from_secs(30), || started(&out_h1) && started(&out_h2)),
        "the slow downloads did not start within 30 s\n{}",
        p.log_tail()
    );
    let reloaded = format!("TLS certificate {} reloaded", crt.display());
    let refused = "TLS certificate not reloaded, keeping the previous one";

    // 1. Replace both files (write new files, rename over): new handshakes get the new one.
    replace_file(&second.cert, &crt);
    replace_file(&second.key, &key);
    let took = wait_for_serial(&p, second.serial, Duration::from_secs(10), "after renaming new files over");
    assert!(
        dl_h1.try_wait().unwrap().is_none() && dl_h2.try_wait().unwrap().is_none(),
        "the slow downloads ended before the reload was seen ({took:?}); they no longer span it"
    );
    // 2. A half-done replacement (new certificate, old key) is not taken: the old pair stays
    // in service and the daemon stays up; once the key follows, the new pair is used.
    let refusals = p.log_count(refused);
    replace_file(&third.cert, &crt);
    p.wait_log_count(refused, refusals + 1, Duration::from_secs(20));
    assert!(p.is_running(), "pier died on a certificate without its key:\n{}", p.log_tail());
    assert_eq!(
        served_cert(&p.host()).map(|c| c.0),
        Ok(second.serial),
        "with a certificate not matching the key, the previous pair should stay in service"
    );
    curl(&["--cacert", &cafile, &v2_url]).expect(200, "during a half-done replacement");
    replace_file(&third.key, &key);
    wait_for_serial(&p, third.serial, Duration::from_secs(10), "after the key followed");

    // 3. SIGHUP: with nothing changed, the daemon survives it and keeps its certificate.
    sighup_and_wait_reload(&p, &reloaded);
    assert!(p.is_running(), "pier died on SIGHUP:\n{}", p.log_tail());
    assert_eq!(served_cert(&p.host()).map(|c| c.0), Ok(third.serial));
    // Now a change only the signal can reveal: the new pair is written into the same files (same
    // inodes), padded to the same lengths, with the modification times put back, so the files
    // look untouched to a poller that stats them.
    pad_pem(&crt, 8192);
    pad_pem(&key, 8192);
    // (pier must take in the padded files, the same pair: the stamp it keeps is this one. The
    // poller may have seen one file padded and not yet the other; a SIGHUP reload settles it.)
    sighup_and_wait_reload(&p, &reloaded);
    assert_eq!(served_cert(&p.host()).map(|c| c.0), Ok(third.serial), "padding changed nothing");
    let before = (stat(&crt), stat(&key));
    write_in_place(&crt, &fourth.cert, 8192);
    write_in_place(&key, &fourth.key, 8192);
    std::fs::File::options().write(true).open(&crt).unwrap().set_modified(before.0 .2).unwrap();
    std::fs::File::options().write(true).open(&key).unwrap().set_modified(before.1 .2).unwrap();
    assert_eq!((stat(&crt), stat(&key)), before, "the rewrite should leave inode, length and mtime as they were");
    p.signal("HUP");
    wait_for_serial(&p, fourth.serial, Duration::from_secs(10), "after SIGHUP");
    assert!(p.is_running(), "pier died on SIGHUP:\n{}", p.log_tail());
    let r = curl(&["--cacert", &cafile, &blob_url]).expect(200, "GET after SIGHUP reload");
    assert_eq!(r.body.len(), big.len());

    // 5. ... while the connections opened before the first reload kept working through all of
    // them (steps 2 to 4 run while they download): each download completes, and its follow-up
    // request reuses the connection (num_connects 0).
    for (child, out, ver) in [(dl_h1, &out_h1, "1.1"), (dl_h2, &out_h2, "2")] {
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "HTTP/{ver} download across the reloads failed: {text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [format!("200 1 {} {ver}", big.len()), format!("200 0 2 {ver}")],
            "HTTP/{ver} keep-alive connection across the reloads"
        );
        assert_eq!(file_sha256(out), digest, "HTTP/{ver} download content");
    }
}

/// (inode, length, mtime) of a file.
fn stat(f: &Path) -> (u64, u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(f).unwrap();
    (m.ino(), m.len(), m.modified().unwrap())
}

/// Pads a PEM file with trailing newlines to `len` bytes, in place (PEM parsers skip them).
fn pad_pem(f: &Path, len: usize) {
    let mut data = std::fs::read(f).unwrap();
    assert!(data.len() <= len, "{} is longer than {len}", f.display());
    data.resize(len, b'\n');
    std::fs::write(f, data).unwrap();
}

/// Overwrites `dst` in place (same inode) with `src` padded to `len` bytes.
fn write_in_place(dst: &Path, src: &Path, len: usize) {
    let mut data = std::fs::read(src).unwrap();
    assert!(data.len() <= len, "{} is longer than {len}", src.display());
    data.resize(len, b'\n');
    let mut f = std::fs::File::options().write(true).open(dst).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn plain_http_on_the_tls_port_gets_a_clear_400() {
    let dir = tmpdir();
    let ca = Ca::root(dir.path(), "ca", KeyType::EcP256);
    let server = ca.issue("server", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
    let p = tls_pier(tls_yaml(&server.cert, &server.key, &[]));

    let r = p.get("/v2/");
    assert_eq!(r.status, 400, "plain HTTP GET on the TLS port: {r:?}");
    let t = r.text().to_ascii_lowercase();
    assert!(t.contains("https") || t.contains("tls"), "the 400 body should say to use https: {:?}", r.text());
    let r = p.req("POST", "/v2/r/blobs/uploads/", &[("Content-Type", "application/octet-stream")], b"0123456789");
    assert_eq!(r.status, 400, "plain HTTP POST on the TLS port: {r:?}");

    // A keep-alive request (no `Connection: close`): answered with HTTP/1.x 400, then closed.
    let mut sock = TcpStream::connect(p.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: plain\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let end = sock.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    match &end {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was not closed after the 400 ({e}); got so far: {text:?}"),
    }
    assert!(text.starts_with("HTTP/1.") && text.split_whitespace().nth(1) == Some("400"), "response: {text:?}");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_ascii_lowercase()).unwrap_or_default();
    assert!(body.contains("https") || body.contains("tls"), "body: {text:?}");

    // TLS on the same port is unaffected.
    let r = curl(&["--cacert", s(&ca.cert), &format!("{}/v2/", base(&p))]);
    assert_eq!((r.code, r.status), (0, 200), "{r:?}");
}

/// Runs `pier serve` with `http.tls` set to `tls`; asserts it exits non-zero without listening
/// and returns its stderr.
fn refused(tls: &str, what: &str) -> String {
    Pier::new(Options { extra_yaml: tls.to_string(), ..Default::default() }).expect_refusal(what)
}

#[test]
fn refuses_to_start_with_an_unusable_certificate_or_key() {
    let dir = tmpdir();
    let d = dir.path();
    let ca = Ca::root(d, "ca", KeyType::EcP256);
    let good = ca.issue("good", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
    let other = ca.issue("other", KeyType::EcP256, KeyFormat::Pkcs8, Usage::Server);
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing_crt = d.join("nowhere/server.crt");
    let missing_key = d.join("nowhere/server.key");
    let missing_ca = d.join("nowhere/clients.crt");

    // The baseline starts (so the failures below are about the files, not the config shape).
    let p = tls_pier(tls_yaml(&good.cert, &good.key, &[]));
    drop(p);

    let cases: Vec<(String, &str, Vec<&Path>)> = vec![
        (tls_yaml(&missing_crt, &good.key, &[]), "a missing certificate file", vec![&missing_crt]),
        (tls_yaml(&good.cert, &missing_key, &[]), "a missing key file", vec![&missing_key]),
        (tls_yaml(&good.cert, &other.key, &[]), "a key not matching the certificate", vec![&other.key, &good.cert]),
        (tls_yaml(&garbage, &good.key, &[]), "a certificate file that is not PEM", vec![&garbage]),
        (tls_yaml(&empty, &good.key, &[]), "an empty certificate file", vec![&empty]),
        (tls_yaml(&good.cert, &good.cert, &[]), "a key file holding a certificate", vec![&good.cert]),
        (tls_yaml(&good.cert, &garbage, &[]), "a key file that is not PEM", vec![&garbage]),
        (tls_yaml(&good.cert, &good.key, &[&missing_ca]), "a missing clientcas file", vec![&missing_ca]),
        (tls_yaml(&good.cert, &good.key, &[&garbage]), "a clientcas file that is not PEM", vec![&garbage]),
    ];
    for (yaml, what, named) in cases {
        let err = refused(&yaml, what);
        assert!(
            named.iter().any(|f| err.contains(&f.display().to_string())),
            "pier refused {what} but its message names none of {named:?}:\n{err}"
        );
    }
    // Half a tls section is an error too, not a silent plain-HTTP server.
    let half = format!("  tls:\n    certificate: {}\n", good.cert.display());
    refused(&half, "a certificate without a key");
}

/// `curl -I` (HEAD) over TLS gets headers only for every answer, errors included, over HTTP/2
/// as over HTTP/1.1. A HEAD error answer used to carry its JSON body over HTTP/2, which curl
/// reports as `HTTP/2 stream 1 was not closed cleanly: PROTOCOL_ERROR`.
#[test]
fn head_answers_carry_no_body_over_http2_and_http11() {
    let dir = tmpdir();
    let ca = Ca::root(dir.path(), "ca", KeyType::EcP256);
    let server = ca.issue("server", KeyType::EcP256, KeyFormat::Sec1, Usage::Server);
    let p = tls_pier(tls_yaml(&server.cert, &server.key, &[]));
    let b = base(&p);
    let digest =
        curl_push_blob(&["--cacert", s(&ca.cert)], &b, "r", b"a blob", &sha256_digest(b"a blob"), 1, &|_, _| {});
    let cases = [
        (format!("{b}/v2/"), 200),
        (format!("{b}/v2/r/blobs/{digest}"), 200),
        (format!("{b}/v2/r/blobs/{}", sha256_digest(b"absent")), 404),
        (format!("{b}/v2/r/blobs/sha256:not-a-digest"), 400),
        (format!("{b}/v2/r/manifests/v1"), 404),
        (format!("{b}/v2/NOT/valid/manifests/v1"), 400),
        (format!("{b}/v2/r/blobs/uploads/"), 405),
        (format!("{b}/nowhere"), 404),
    ];
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        for (url, status) in &cases {
            let r = curl(&["--cacert", s(&ca.cert), flag, "-I", url]);
            assert_eq!((r.code, r.status), (0, *status), "curl -I {flag} {url}: {}", r.stderr);
            assert_eq!(r.http_version, version, "{url}");
            // With -I curl writes the header block where the body would go: nothing may follow it.
            let text = r.text();
            assert!(text.ends_with("\r\n\r\n") && !text.contains('{'), "HEAD {url} over {flag}: {text:?}");
        }
    }
}
