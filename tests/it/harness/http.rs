//! The one HTTP test client: a deliberately small HTTP/1.1 client over a real TCP socket (so
//! tests can send odd bytes, paths and headers that a high-level client would normalise away),
//! plus the helpers that read and describe its responses.
//!
//! Every request goes out on a fresh connection with `Connection: close`. [`try_request`]
//! reports I/O failures (a daemon that was killed, a connection reset) as `Err`; [`request`]
//! panics on them. Requests that must stay open or send only part of a body use
//! [`send_partial`] and [`slow_patch`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One HTTP response, read whole.
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

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response;
/// panics when the connection fails (use [`try_request`] where that is an expected outcome).
#[track_caller]
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response.
/// `Content-Length` is added for non-empty bodies and for PUT/POST/PATCH unless the caller sets
/// it or `Transfer-Encoding`. A failure to write the body is ignored (a server may answer, e.g.
/// 413, and close before reading it): what counts is whether a response can be read. HEAD
/// responses are read without a body.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    exchange(TcpStream::connect(addr)?, addr, method, path, headers, body)
}

/// Connects to `addr` from `source`, a loopback address such as 127.0.0.7: to pier, each one is
/// another client address (per-address limits).
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

/// [`request`] from the client address `source` (see [`connect_from`]).
pub fn request_from(
    source: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    connect_from(source, addr)
        .and_then(|s| exchange(s, addr, method, path, headers, body))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} from {source}: {e}"))
}

fn exchange(
    mut s: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
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
    s.write_all(head.as_bytes())?;
    let _ = s.write_all(body);
    try_read_response(&mut s, method == "HEAD")
}

/// Reads one response from `s`; panics if there is none or it is malformed.
#[track_caller]
pub fn read_response(s: &mut impl Read, head_only: bool) -> Response {
    try_read_response(s, head_only).unwrap_or_else(|e| panic!("reading a response: {e}"))
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one response from `s` (status line, headers, then a body framed by
/// `Transfer-Encoding: chunked`, `Content-Length` or the end of the stream).
pub fn try_read_response(s: &mut impl Read, head_only: bool) -> std::io::Result<Response> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed without a response"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut headers = BTreeMap::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(invalid(format!("headers cut short after {headers:?}")));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        add_header(&mut headers, l);
    }
    let mut body = Vec::new();
    if !head_only && status != 204 && status != 304 {
        if headers.get("transfer-encoding").is_some_and(|v: &String| v.contains("chunked")) {
            loop {
                let mut l = String::new();
                r.read_line(&mut l)?;
                let size = l.trim().split(';').next().unwrap_or("");
                let n = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {l:?}")))?;
                if n == 0 {
                    let mut end = String::new();
                    let _ = r.read_line(&mut end);
                    break;
                }
                let mut chunk = vec![0; n];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                let mut crlf = [0; 2];
                r.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Response { status, headers, body })
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

/// `path` plus a query parameter, whether or not `path` already has a query.
pub fn with_query(path: &str, q: &str) -> String {
    if path.contains('?') {
        format!("{path}&{q}")
    } else {
        format!("{path}?{q}")
    }
}

/// Appends `?digest=` (or `&digest=`) to an upload location.
pub fn with_digest(loc: &str, digest: &str) -> String {
    with_query(loc, &format!("digest={digest}"))
}

/// Parses a `Range: 0-N` header into N+1 (the number of bytes the server holds).
#[track_caller]
pub fn range_len(r: &Response) -> u64 {
    let v = r.header("range").unwrap_or_else(|| panic!("no Range header in {} {:?}", r.status, r.headers));
    let end = v.trim().trim_start_matches("bytes=").split('-').nth(1).unwrap_or_else(|| panic!("bad Range {v:?}"));
    end.trim().parse::<u64>().unwrap_or_else(|_| panic!("bad Range {v:?}")) + 1
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

/// Sends a request whose body is cut short: the head announces `Content-Length: total` but only
/// `body` is written. The connection is returned open (the caller drops it, or kills the daemon).
pub fn send_partial(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    total: usize,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {total}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    s
}

/// A PATCH streamed from a thread: the first `fast` bytes at once, then `piece` bytes per
/// `pause`. The thread reports how much of the body it has written.
pub struct SlowPatch {
    pub sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<std::io::Result<Response>>>,
}

/// PATCHes `data[range]` (Content-Range `start-end`) to `loc` on a fresh connection. The pauses
/// between pieces are the test: they make a client that is slow on the wire.
pub fn slow_patch(
    addr: SocketAddr,
    loc: &str,
    data: Arc<Vec<u8>>,
    range: Range<usize>,
    fast: usize,
    piece: usize,
    pause: Duration,
) -> SlowPatch {
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2, loc) = (sent.clone(), stop.clone(), loc.to_string());
    let handle = std::thread::spawn(move || -> std::io::Result<Response> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Range: {}-{}\r\nContent-Length: {}\r\n\r\n",
            range.start,
            range.end - 1,
            range.len()
        );
        s.write_all(head.as_bytes())?;
        let mut pos = range.start;
        let fast_end = (range.start + fast).min(range.end);
        while pos < fast_end {
            let n = (1 << 20).min(fast_end - pos);
            s.write_all(&data[pos..pos + n])?;
            pos += n;
            s2.fetch_add(n, Ordering::SeqCst);
        }
        while pos < range.end {
            if st2.load(Ordering::SeqCst) {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "stopped by the test"));
            }
            let n = piece.min(range.end - pos);
            s.write_all(&data[pos..pos + n])?;
            pos += n;
            s2.fetch_add(n, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
        try_read_response(&mut s, false)
    });
    SlowPatch { sent, stop, handle: Some(handle) }
}

impl SlowPatch {
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` body bytes were written.
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.sent() < n {
            if Instant::now() >= end || self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                return self.sent() >= n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Makes the writer give up before its next piece.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn join(mut self) -> std::io::Result<Response> {
        self.handle.take().unwrap().join().expect("uploader thread panicked")
    }
}

impl Drop for SlowPatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Standard base64 (with padding), for the tests' own `Basic` headers: written here rather than
/// taken from the crate pier uses, so a bug there cannot hide in a test.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], c.get(1).copied().unwrap_or(0), c.get(2).copied().unwrap_or(0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
