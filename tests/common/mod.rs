//! Shared test harness: starts the real `pier` binary on an ephemeral loopback port and talks to
//! it over a real TCP socket with a deliberately small HTTP/1.1 client (so tests can send odd
//! bytes, paths and headers that a high-level client would normalise away).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `pier serve` with its own data directory.
pub struct Pier {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub config: PathBuf,
    /// Everything the daemon wrote to stderr so far (for diagnostics in failing tests).
    pub log: Arc<Mutex<String>>,
    _dir: Option<tempfile::TempDir>,
}

/// Extra YAML appended to the generated config (top-level keys other than `storage`/`http`),
/// plus optional additional keys placed under `storage:`.
#[derive(Default, Clone)]
pub struct Options {
    pub delete_enabled: bool,
    pub extra_yaml: String,
    pub env: Vec<(String, String)>,
}

impl Pier {
    pub fn start() -> Pier {
        Self::start_with(Options { delete_enabled: true, ..Default::default() })
    }

    pub fn start_with(opts: Options) -> Pier {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_yaml(&root, &opts)).expect("write config");
        let mut p = Pier {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            root,
            config,
            log: Arc::new(Mutex::new(String::new())),
            _dir: Some(dir),
        };
        p.spawn(&opts);
        p
    }

    /// Starts pier again on the same data directory and config (after `kill9` or `stop`).
    pub fn restart(&mut self) {
        self.restart_with(&Options::default());
    }

    pub fn restart_with(&mut self, opts: &Options) {
        self.stop();
        self.spawn(opts);
    }

    fn spawn(&mut self, opts: &Options) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.arg("serve").arg("--config").arg(&self.config);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pier");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(pos) = line.find("listening on ") {
                    let addr = line[pos + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("http://")
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("pier did not report its address; log:\n{}", self.log.lock().unwrap());
            }
        };
        self.addr = addr.parse().unwrap_or_else(|_| panic!("bad address {addr:?}"));
        self.child = Some(child);
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        self.kill9();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `localhost:PORT`, the form skopeo/podman want in `docker://` references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> Response {
        self.req("GET", path, &[], b"")
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.addr, method, path, headers, body)
    }
}

impl Drop for Pier {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn config_yaml(root: &Path, opts: &Options) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {}\nhttp:\n  addr: 127.0.0.1:0\n{}",
        root.display(),
        opts.delete_enabled,
        opts.extra_yaml
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(|s| s.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    /// The first OCI error code in the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response.
/// `Content-Length` is added for non-empty bodies unless the caller sets it or
/// `Transfer-Encoding`. HEAD responses are read without a body.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has("content-length")
        && !has("transfer-encoding")
        && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (e.g. 413) and close before reading the body: ignore write errors.
    let _ = s.write_all(body);
    read_response(&mut s, method == "HEAD")
}

pub fn read_response(s: &mut impl Read, head_only: bool) -> Response {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = BTreeMap::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        add_header(&mut headers, l);
    }
    let mut body = Vec::new();
    if !head_only && status != 204 && status != 304 {
        if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                let mut chunk = vec![0; n];
                r.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk);
                let mut crlf = [0; 2];
                r.read_exact(&mut crlf).unwrap();
            }
        } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        } else {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Response { status, headers, body }
}

/// Adds one `Name: value` header line to `headers` (name lower-cased, repeats joined with ", ");
/// lines without a colon are ignored.
pub fn add_header(headers: &mut BTreeMap<String, String>, line: &str) {
    if let Some((k, v)) = line.split_once(':') {
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_string();
        headers
            .entry(k)
            .and_modify(|e: &mut String| {
                e.push_str(", ");
                e.push_str(&v)
            })
            .or_insert(v);
    }
}

/// A readable summary of a response (status, headers, body cut at 2000 bytes) for assertion
/// messages.
pub fn show(r: &Response) -> String {
    let mut body = r.text();
    if body.len() > 2000 {
        let mut cut = 2000;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push_str("...");
    }
    format!("{} {:?} body={body:?}", r.status, r.headers)
}

/// The `Location` of a response with its origin stripped; panics if there is none.
#[track_caller]
pub fn location(r: &Response) -> String {
    strip_origin(r.header("location").unwrap_or_else(|| panic!("no Location: {}", show(r))))
}

/// `path` plus a query parameter, whether or not `path` already has a query.
pub fn with_query(path: &str, q: &str) -> String {
    if path.contains('?') {
        format!("{path}&{q}")
    } else {
        format!("{path}?{q}")
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as they are; non-UTF-8 becomes U+FFFD).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// All regular files (and symlinks) below `dir`, recursively, sorted; empty if `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    format!("sha256:{}", hex(&h))
}

pub fn sha512_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha512::digest(data);
    format!("sha512:{}", hex(&h))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Pushes a blob with the monolithic POST-then-PUT flow; asserts 201.
pub fn push_blob(p: &Pier, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let r = p.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "POST upload: {}", r.text());
    let loc = r.header("location").expect("Location").to_string();
    let path = with_query(&strip_origin(&loc), &format!("digest={digest}"));
    let r = p.req("PUT", &path, &[("Content-Type", "application/octet-stream")], data);
    assert_eq!(r.status, 201, "PUT blob: {}", r.text());
    digest
}

/// Pushes a manifest; asserts 201 and returns its digest.
pub fn push_manifest(p: &Pier, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r = p.req("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", media_type)], body);
    assert_eq!(r.status, 201, "PUT manifest: {}", r.text());
    sha256_digest(body)
}

/// A minimal OCI image manifest for the given config and layers (each `(digest, size)`).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(
            |(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}),
        )
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

/// Pushes a config + the given layers + a manifest tagged `tag`; returns the manifest digest.
pub fn push_image(p: &Pier, repo: &str, tag: &str, layers: &[&[u8]]) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = push_blob(p, repo, &config);
    let mut ls = Vec::new();
    for l in layers {
        ls.push((push_blob(p, repo, l), l.len()));
    }
    let refs: Vec<(&str, usize)> = ls.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let m = image_manifest((&cd, config.len()), &refs);
    push_manifest(p, repo, tag, "application/vnd.oci.image.manifest.v1+json", &m)
}

/// `http://host:port/v2/...` or `/v2/...` → `/v2/...`.
pub fn strip_origin(loc: &str) -> String {
    if let Some(rest) = loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://")) {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        loc.to_string()
    }
}

/// Deterministic incompressible-looking bytes (xorshift), for layers.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Waits until `f` is true or the deadline passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    run_or_explain(cmd, String::new)
}

/// Like [`run`], with `more()` appended to the panic message when the command fails.
pub fn run_or_explain(cmd: &mut Command, more: impl FnOnce() -> String) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            more()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
