//! TLS clients and certificates for the TLS and reverse-proxy tests: a throwaway PKI made with
//! the `openssl` CLI, and wrappers around `curl` and `openssl s_client` (the raw HTTP client in
//! `http.rs` speaks plain HTTP only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::command::{output, run};
use super::http::add_header;

fn openssl(args: &[&str]) -> String {
    run(Command::new("openssl").args(args))
}

// ---------------------------------------------------------------------------------------------
// PKI

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    EcP256,
    Rsa2048,
}

/// How a private key is written to disk: `BEGIN PRIVATE KEY` (PKCS#8), `BEGIN RSA PRIVATE KEY`
/// (PKCS#1) or `BEGIN EC PRIVATE KEY` (SEC1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    Pkcs8,
    Pkcs1,
    Sec1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A certificate and its private key on disk.
#[derive(Clone, Debug)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
}

/// A certificate authority (root or intermediate) on disk.
#[derive(Clone, Debug)]
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
}

static SERIAL: AtomicU64 = AtomicU64::new(0x1000);

fn newkey(kt: KeyType) -> [&'static str; 4] {
    match kt {
        KeyType::EcP256 => ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyType::Rsa2048 => ["-newkey", "rsa:2048", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
}

/// A path as `&str`, for command-line arguments.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Ca {
    /// A self-signed root CA named `name` (files `DIR/NAME.crt`, `DIR/NAME.key`).
    pub fn root(dir: &Path, name: &str, kt: KeyType) -> Ca {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "3", "-subj"];
        let subj = format!("/CN=pier test {name}");
        args.push(&subj);
        args.extend_from_slice(&newkey(kt));
        args.extend_from_slice(&["-keyout", s(&key), "-out", s(&cert)]);
        args.extend_from_slice(&[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args);
        Ca { cert, key, dir: dir.to_path_buf() }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str, kt: KeyType) -> Ca {
        let ext = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
                   subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
        let c = self.sign(name, kt, KeyFormat::Pkcs8, ext, None);
        Ca { cert: c.cert, key: c.key, dir: self.dir.clone() }
    }

    /// A leaf certificate for `127.0.0.1` / `localhost` (server) or a client certificate, with a
    /// fresh serial number; the key is written in `fmt`.
    pub fn issue(&self, name: &str, kt: KeyType, fmt: KeyFormat, usage: Usage) -> Cert {
        let ext = match usage {
            Usage::Server => {
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
                 subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            }
            Usage::Client => {
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            }
        };
        self.sign(name, kt, fmt, ext, None)
    }

    fn sign(&self, name: &str, kt: KeyType, fmt: KeyFormat, ext: &str, serial: Option<u64>) -> Cert {
        let cert = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let extfile = self.dir.join(format!("{name}.ext"));
        std::fs::write(&extfile, ext).unwrap();
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-new", "-nodes", "-subj", &subj];
        args.extend_from_slice(&newkey(kt));
        args.extend_from_slice(&["-keyout", s(&key), "-out", s(&csr)]);
        openssl(&args);
        let serial = serial.unwrap_or_else(|| SERIAL.fetch_add(0x101, Ordering::SeqCst) + 0x101);
        let serial_s = serial.to_string();
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.cert),
            "-CAkey",
            s(&self.key),
            "-set_serial",
            &serial_s,
            "-days",
            "3",
            "-extfile",
            s(&extfile),
            "-out",
            s(&cert),
        ]);
        convert_key(&key, kt, fmt);
        Cert { cert, key, serial }
    }
}

/// Rewrites a PKCS#8 key file (what `openssl req` writes) in the requested format and checks the
/// PEM label, so the test really covers that format.
fn convert_key(key: &Path, kt: KeyType, fmt: KeyFormat) {
    let label = match (fmt, kt) {
        (KeyFormat::Pkcs8, _) => "-----BEGIN PRIVATE KEY-----",
        (KeyFormat::Pkcs1, KeyType::Rsa2048) => {
            openssl(&["rsa", "-in", s(key), "-traditional", "-out", s(key)]);
            "-----BEGIN RSA PRIVATE KEY-----"
        }
        (KeyFormat::Sec1, KeyType::EcP256) => {
            openssl(&["ec", "-in", s(key), "-out", s(key)]);
            "-----BEGIN EC PRIVATE KEY-----"
        }
        (f, k) => panic!("no {f:?} encoding for {k:?} keys"),
    };
    let text = std::fs::read_to_string(key).unwrap();
    assert!(text.starts_with(label), "{} is not {fmt:?}: {}", key.display(), text.lines().next().unwrap_or(""));
}

/// The `http.tls` section for pier's config (goes right after `http.addr` via `extra_yaml`).
pub fn tls_yaml(cert: &Path, key: &Path, clientcas: &[&Path]) -> String {
    let mut y = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    if !clientcas.is_empty() {
        let list: Vec<String> = clientcas.iter().map(|p| p.display().to_string()).collect();
        y.push_str(&format!("    clientcas: [{}]\n", list.join(", ")));
    }
    y
}

/// Concatenates PEM files (e.g. a leaf and its intermediate into a chain file).
pub fn concat(out: &Path, parts: &[&Path]) {
    let mut all = Vec::new();
    for p in parts {
        all.extend(std::fs::read(p).unwrap());
    }
    std::fs::write(out, all).unwrap();
}

/// A directory in the layout skopeo's `--cert-dir`/`--dest-cert-dir` expects: `ca.crt` and,
/// optionally, a `client.cert` + `client.key` pair.
pub fn cert_dir(dir: &Path, ca: &Path, client: Option<&Cert>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(ca, dir.join("ca.crt")).unwrap();
    if let Some(c) = client {
        std::fs::copy(&c.cert, dir.join("client.cert")).unwrap();
        std::fs::copy(&c.key, dir.join("client.key")).unwrap();
    }
    dir.to_path_buf()
}

/// Replaces `dst` atomically with the content of `src` (write a new file, rename over).
pub fn replace_file(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("new");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

// ---------------------------------------------------------------------------------------------
// openssl s_client

/// The output of `openssl s_client -connect ADDR` with `extra` arguments (stdin closed, so it
/// disconnects right after the handshake). Returns (success, stdout + stderr).
pub fn s_client(addr: &str, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "30", "openssl", "s_client", "-connect", addr, "-servername", "localhost"]).args(extra);
    let out = output(&mut cmd);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The serial number and subject of the certificate the server at `addr` presents now.
pub fn served_cert(addr: &str) -> Result<(u64, String), String> {
    let (_, text) = s_client(addr, &[]);
    let begin = text.find("-----BEGIN CERTIFICATE-----").ok_or_else(|| format!("no certificate in:\n{text}"))?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[begin..].find(end_marker).ok_or_else(|| format!("truncated certificate in:\n{text}"))?;
    let pem = &text[begin..begin + end + end_marker.len()];
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e} (is it installed?)"));
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    let serial = info
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .ok_or_else(|| format!("no serial in {info:?}"))?;
    let subject = info.lines().find_map(|l| l.strip_prefix("subject=")).unwrap_or("").trim().to_string();
    Ok((serial, subject))
}

// ---------------------------------------------------------------------------------------------
// curl

/// One finished `curl` invocation.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 = transfer done; 35/56/58/60 … = TLS trouble).
    pub code: i32,
    /// The HTTP status of the last response (0 when there was none).
    pub status: u16,
    /// `%{http_version}`: `1.1`, `2`, …
    pub http_version: String,
    /// Headers of the final response (names lower-cased).
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(|s| s.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Panics unless curl succeeded with `status`.
    pub fn expect(self, status: u16, what: &str) -> Curl {
        assert!(
            self.code == 0 && self.status == status,
            "{what}: curl exit {} status {} (want {status})\nstderr: {}\nheaders: {:?}\nbody: {}",
            self.code,
            self.status,
            self.stderr,
            self.headers,
            self.text()
        );
        self
    }
}

/// Runs `curl -sS ARGS` (ARGS include TLS options, method, data and the URL) and collects the
/// final response's status, headers and body.
pub fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = output(
        Command::new("curl")
            .args(["-sS", "--max-time", "120", "-H", "Expect:", "-w", "%{http_code} %{http_version}", "-D"])
            .arg(&hdr)
            .arg("-o")
            .arg(&body)
            .args(args),
    );
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = w.split_whitespace();
    let status = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let http_version = it.next().unwrap_or("").to_string();
    let raw = std::fs::read_to_string(&hdr).unwrap_or_default();
    // Keep only the last header block (after a possible `100 Continue`).
    let mut headers = BTreeMap::new();
    for line in raw.lines() {
        let line = line.trim_end();
        if line.starts_with("HTTP/") {
            headers.clear();
            continue;
        }
        add_header(&mut headers, line);
    }
    Curl {
        code: out.status.code().unwrap_or(-1),
        status,
        http_version,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `http(s)://host:port/x/y` + a Location (absolute or origin-relative) → an absolute URL.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    assert!(location.starts_with('/'), "unexpected Location {location:?}");
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let origin_end = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

/// Pushes a blob with curl: POST, one PATCH per chunk (with `Content-Range`), then the closing
/// PUT, following each `Location`. `base` is e.g. `https://127.0.0.1:PORT/registry` (everything
/// before `/v2/`). `check_location` sees every Location returned. Returns the digest.
pub fn curl_push_blob(
    tls: &[&str],
    base: &str,
    repo: &str,
    data: &[u8],
    digest: &str,
    chunks: usize,
    check_location: &dyn Fn(&str, &str),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let post_url = format!("{base}/v2/{repo}/blobs/uploads/");
    let mut a: Vec<&str> = tls.to_vec();
    a.extend_from_slice(&["-X", "POST", "--data-binary", "", &post_url]);
    let r = curl(&a).expect(202, "POST blob upload");
    let mut loc = r.header("location").expect("Location on POST").to_string();
    check_location("POST upload", &loc);
    let chunk = data.len().div_ceil(chunks.max(1)).max(1);
    let mut off = 0;
    for (i, part) in data.chunks(chunk).enumerate() {
        let f = dir.path().join(format!("chunk{i}"));
        std::fs::write(&f, part).unwrap();
        let url = resolve(base, &loc);
        let range = format!("Content-Range: {}-{}", off, off + part.len() - 1);
        let at_file = format!("@{}", f.display());
        let mut a: Vec<&str> = tls.to_vec();
        a.extend_from_slice(&[
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            &range,
            "--data-binary",
            &at_file,
            &url,
        ]);
        let r = curl(&a).expect(202, &format!("PATCH chunk {i}"));
        loc = r.header("location").expect("Location on PATCH").to_string();
        check_location(&format!("PATCH chunk {i}"), &loc);
        off += part.len();
    }
    let url = resolve(base, &loc);
    let sep = if url.contains('?') { '&' } else { '?' };
    let put_url = format!("{url}{sep}digest={digest}");
    let mut a: Vec<&str> = tls.to_vec();
    a.extend_from_slice(&["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "", &put_url]);
    let r = curl(&a).expect(201, "closing PUT");
    check_location("closing PUT", r.header("location").expect("Location on PUT"));
    assert_eq!(r.header("docker-content-digest"), Some(digest), "Docker-Content-Digest of the closing PUT");
    digest.to_string()
}

/// PUTs a manifest with curl; returns the response (checked for 201).
pub fn curl_put_manifest(tls: &[&str], base: &str, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("manifest.json");
    std::fs::write(&f, body).unwrap();
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let ct = format!("Content-Type: {media_type}");
    let at_file = format!("@{}", f.display());
    let mut a: Vec<&str> = tls.to_vec();
    a.extend_from_slice(&["-X", "PUT", "-H", &ct, "--data-binary", &at_file, &url]);
    curl(&a).expect(201, "PUT manifest")
}

/// `a` followed by `b`, as one argument list.
pub fn cat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}
