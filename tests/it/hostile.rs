//! Hostile clients against the real binary (issue 9, part 1): stalled downloads, stalled
//! uploads and HTTP/2 streams with a zero window cost little memory and no thread, metadata
//! requests go on meanwhile, memory falls back once the attackers leave, and the bounds
//! (`limits`) answer over-limit work at once.
//!
//! Memory and thread counts are read from `/proc/PID/status` of the daemon. The latency of the
//! metadata requests made during an attack is printed (the bench's "hostile" phase measures it
//! properly); the tests only require that each one is answered within `ANSWER_WITHIN`, where
//! the old design timed out.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The issue's bound on server memory with 600 stalled readers.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// Each metadata request made during an attack must be answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Another client: pier counts connections per address.
const VICTIM: [u8; 4] = [127, 0, 0, 2];
const BLOB_SIZE: usize = 32 << 20;

/// `(VmRSS in KiB, Threads)` of a process.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in status"));
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Lets this test process hold many sockets (shells often start it with a soft limit of 1024).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let wanted = hard.min(65_536);
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).expect("setrlimit");
    }
}

/// A pier whose limits admit `n` connections and transfers from one address, holding a 32 MiB
/// blob and an image `victim:v1` to read during attacks. Returns the blob's digest.
fn registry_under_attack(n: usize) -> (Pier, String) {
    raise_open_files_limit();
    let p = Pier::start_with(Options {
        extra_yaml: format!(
            "limits:\n  connectionsperclient: {}\n  connections: {}\n  transfers: {n}\n",
            n + 16,
            n + 64
        ),
        ..Options::default()
    });
    let blob = pattern(BLOB_SIZE, 7);
    let digest = push_blob(&p, "attacked", &blob);
    push_image(&p, "victim", "v1", &[b"a small layer"]);
    (p, digest)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed).collect()
}

/// `count` manifest GETs from another client address; asserts each is answered (200) within
/// `ANSWER_WITHIN`; returns (p50, p99).
fn victim_reads_manifests(p: &Pier, count: usize) -> (Duration, Duration) {
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let r = request_from(IpAddr::from(VICTIM), p.addr, "GET", "/v2/victim/manifests/v1", &accept, b"");
        let took = t.elapsed();
        assert_eq!(r.status, 200, "manifest GET {i} during the attack: {}", r.text());
        assert!(took < ANSWER_WITHIN, "manifest GET {i} during the attack took {took:?}");
        times.push(took);
    }
    times.sort();
    (times[count / 2], times[count * 99 / 100])
}

/// Waits until the daemon's thread count is at most `threads` (blocking threads idle out after
/// 10 s); returns the last count seen.
fn threads_settle(pid: u32, threads: u64) -> u64 {
    let mut last = u64::MAX;
    wait_until(Duration::from_secs(20), || {
        last = rss_and_threads(pid).1;
        last <= threads
    });
    last
}

/// While `attack` holds its connections: another client's manifest GETs are answered (see
/// `victim_reads_manifests`), RSS stays within `RSS_BOUND_KIB`, and once the burst of requests
/// is over the thread count comes back to what it was when idle (no transfer holds a thread).
fn assert_attack_is_cheap(p: &Pier, attack: &str, (idle_rss, idle_threads): (u64, u64)) {
    let (p50, p99) = victim_reads_manifests(p, 200);
    let (rss, threads) = rss_and_threads(p.pid());
    println!(
        "{attack}: RSS {idle_rss} KiB idle -> {rss} KiB, threads {idle_threads} -> {threads}; \
         manifest GET p50 {p50:?} p99 {p99:?}"
    );
    assert!(rss <= RSS_BOUND_KIB, "RSS {rss} KiB with {attack} (bound {RSS_BOUND_KIB} KiB)");
    let settled = threads_settle(p.pid(), idle_threads + 2);
    assert!(settled <= idle_threads + 2, "{attack} hold threads: {settled} (idle {idle_threads})");
}

/// 600 connections GET the 32 MiB blob with a 4 KiB receive buffer and never read. Before:
/// RSS 19 MiB → 1.6 GiB, 515 threads, manifest GETs timing out. Now each costs a 32 KiB buffer
/// and no thread, and memory comes back when they leave.
#[test]
fn stalled_readers_cost_little_memory_and_no_thread() {
    const READERS: usize = 600;
    let (p, digest) = registry_under_attack(READERS);
    let pid = p.pid();
    let (idle_rss, idle_threads) = rss_and_threads(pid);
    let request = format!("GET /v2/attacked/blobs/{digest} HTTP/1.1\r\nHost: {}\r\n\r\n", p.addr);
    let readers: Vec<TcpStream> = (0..READERS)
        .map(|i| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&p.addr.into()).unwrap_or_else(|e| panic!("reader {i}: {e}"));
            let mut s: TcpStream = socket.into();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // Every reader has its response started (the kernel buffers hold its first bytes).
    let mut first = [0u8; 12];
    for (i, mut s) in readers.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.read_exact(&mut first).unwrap_or_else(|e| panic!("reader {i}: no response: {e}"));
        assert_eq!(&first, b"HTTP/1.1 200", "reader {i}");
    }
    assert_attack_is_cheap(&p, &format!("{READERS} stalled readers"), (idle_rss, idle_threads));
    drop(readers);
    let mut after = 0;
    let back = wait_until(Duration::from_secs(20), || {
        after = rss_and_threads(pid).0;
        after <= idle_rss + 16 * 1024
    });
    assert!(back, "RSS stays at {after} KiB after the readers left (idle {idle_rss} KiB)");
    assert_eq!(get_manifest(&p, "victim", "v1").status, 200);
}

/// 530 PATCHes announce 10 MB and send 100 bytes. Before: a thread and MiBs each, then a hung
/// store. Now: no thread, little memory; the status of such a session answers at once with the
/// bytes written, and DELETE stops the PATCH and cancels the session at once.
#[test]
fn stalled_writers_cost_little_memory_and_no_thread_and_their_sessions_answer_at_once() {
    const WRITERS: usize = 530;
    let (p, _) = registry_under_attack(WRITERS);
    let pid = p.pid();
    let (idle_rss, idle_threads) = rss_and_threads(pid);
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let loc = start_upload(&p, "attacked");
        let s = send_partial(
            p.addr,
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            &[b'x'; 100],
            10_000_000,
        );
        writers.push((loc, s));
    }
    // A stalled body's bytes are written once they have waited a moment (not kept in memory).
    let (loc, _) = &writers[0];
    let mut status = None;
    wait_until(Duration::from_secs(10), || {
        let t = Instant::now();
        let r = p.req("GET", loc, &[], b"");
        assert!(t.elapsed() < ANSWER_WITHIN, "upload status during a PATCH took {:?}", t.elapsed());
        assert_eq!(r.status, 204, "upload status during a PATCH: {}", r.text());
        status = r.header("range").map(str::to_string);
        status.as_deref() == Some("0-99")
    });
    assert_eq!(status.as_deref(), Some("0-99"), "status reports the bytes written so far");
    assert_attack_is_cheap(&p, &format!("{WRITERS} stalled writers"), (idle_rss, idle_threads));

    // DELETE while the PATCH is still streaming: answered at once, and the PATCH ends with
    // BLOB_UPLOAD_UNKNOWN.
    let (loc, mut stalled) = writers.swap_remove(1);
    let t = Instant::now();
    let r = p.req("DELETE", &loc, &[], b"");
    assert!(t.elapsed() < ANSWER_WITHIN, "cancel during a PATCH took {:?}", t.elapsed());
    assert_eq!(r.status, 204, "cancel during a PATCH: {}", r.text());
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let patched = try_read_response(&mut stalled, false).expect("the cancelled PATCH is answered");
    assert_eq!((patched.status, patched.error_code()), (404, "BLOB_UPLOAD_UNKNOWN".to_string()), "{}", patched.text());
    assert_eq!(p.req("GET", &loc, &[], b"").status, 404, "the session is gone");
}

/// HTTP/2 connections that set `SETTINGS_INITIAL_WINDOW_SIZE = 0` and open as many streams on
/// the blob as pier allows. Before: 200 streams → 626 MiB. Now streams per connection are
/// bounded (`limits.streamsperconnection`) and a stream the client does not let pier send on
/// holds no buffer.
#[test]
fn http2_streams_with_a_zero_window_are_bounded() {
    let (p, digest) = registry_under_attack(1000);
    let pid = p.pid();
    let (idle_rss, _) = rss_and_threads(pid);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = p.addr;
    let (streams, max_streams, _clients, _responses) = runtime.block_on(async move {
        let (mut clients, mut responses) = (Vec::new(), Vec::new());
        let (mut streams, mut max_streams) = (0, 0);
        for _ in 0..3 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (client, connection) =
                h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.unwrap();
            // Ask for 200 streams, as the attack did; pier lets the configured number open and
            // the client's next one waits. (Each first waits for its response's head: headers
            // are not flow-controlled, and meanwhile the server's SETTINGS are processed.)
            for _ in 0..200 {
                let Ok(ready) = tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await else {
                    break;
                };
                client = ready.unwrap();
                let request =
                    ::http::Request::get(format!("http://{addr}/v2/attacked/blobs/{digest}")).body(()).unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                match tokio::time::timeout(Duration::from_secs(2), response).await {
                    Ok(response) => {
                        let response = response.unwrap();
                        assert_eq!(response.status(), 200);
                        responses.push(response);
                        streams += 1;
                    }
                    Err(_) => break, // over the server's stream limit: the stream waits
                }
            }
            max_streams = client.current_max_send_streams();
            clients.push(client);
        }
        (streams, max_streams, clients, responses)
    });
    assert_eq!(max_streams, 64, "SETTINGS_MAX_CONCURRENT_STREAMS is limits.streamsperconnection's default");
    let (p50, p99) = victim_reads_manifests(&p, 100);
    let (rss, threads) = rss_and_threads(pid);
    println!(
        "3 h2 connections, window 0, {streams} streams: RSS {idle_rss} KiB idle -> {rss} KiB, threads {threads}; \
         manifest GET p50 {p50:?} p99 {p99:?}"
    );
    assert!(streams <= 3 * 64 + 3, "{streams} streams opened on 3 connections");
    assert!(rss <= RSS_BOUND_KIB, "RSS {rss} KiB with {streams} zero-window streams");
}

/// Over `limits.connectionsperclient` a client gets `429` with `Retry-After` and its
/// connection closed, while another client is served; over `limits.transfers` a blob GET gets
/// `503` with `Retry-After` while manifests are served.
#[test]
fn over_the_limits_work_is_answered_at_once() {
    let p = Pier::start_with(Options {
        extra_yaml: String::from("limits:\n  connectionsperclient: 3\n  transfers: 2\n"),
        ..Options::default()
    });
    let blob = pattern(4 << 20, 1);
    let digest = push_blob(&p, "r", &blob);
    push_image(&p, "victim", "v1", &[b"layer"]);
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    // Held connections are counted once the accept loop took them.
    let mut refused = None;
    wait_until(Duration::from_secs(5), || {
        let r = try_request(p.addr, "GET", "/v2/", &[], b"");
        match r {
            Ok(r) if r.status == 429 => {
                refused = Some(r);
                true
            }
            _ => false,
        }
    });
    let refused = refused.expect("a fourth connection from the same address is refused with 429");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.error_code(), "TOOMANYREQUESTS");
    let other = request_from(IpAddr::from(VICTIM), p.addr, "GET", "/v2/victim/manifests/v1", &[], b"");
    assert_eq!(other.status, 200, "another client is served: {}", other.text());
    assert!(p.log().contains("limits.connectionsperclient reached"), "{}", p.log_tail());
    drop(held);

    // Two stalled downloads take both transfer places.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|i| {
            let source = IpAddr::from([127, 0, 0, 10 + i]);
            let mut s = connect_from(source, p.addr).unwrap();
            s.write_all(format!("GET /v2/r/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            s
        })
        .collect();
    let third = request_from(IpAddr::from([127, 0, 0, 20]), p.addr, "GET", &format!("/v2/r/blobs/{digest}"), &[], b"");
    assert_eq!(third.status, 503, "{}", third.text());
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(third.error_code(), "TOOMANYREQUESTS");
    let head = request_from(IpAddr::from([127, 0, 0, 20]), p.addr, "HEAD", &format!("/v2/r/blobs/{digest}"), &[], b"");
    assert_eq!(head.status, 200, "a HEAD is not a transfer");
    let manifest = request_from(IpAddr::from(VICTIM), p.addr, "GET", "/v2/victim/manifests/v1", &[], b"");
    assert_eq!(manifest.status, 200, "metadata goes on: {}", manifest.text());
    drop(stalled);
    let mut whole = None;
    wait_until(Duration::from_secs(10), || {
        let r = p.get(&format!("/v2/r/blobs/{digest}"));
        let done = r.status == 200;
        whole = Some(r);
        done
    });
    let whole = whole.unwrap();
    assert_eq!((whole.status, whole.body.len()), (200, blob.len()), "places come back when the readers leave");
    assert_eq!(whole.body, blob);
}

/// A flood of connections over `limits.connectionsperclient`. Each refused connection gets its
/// `429` and lingers up to 2 s so that the client reads it; before, every one of them lingered,
/// so a flood held a socket and a task per connection for 2 s whatever its size (about 1,000
/// descriptors for this flood). Now at most 256 linger at once and the rest are closed at once,
/// while other clients are served.
#[test]
fn a_flood_of_refused_connections_holds_a_bounded_number_of_sockets() {
    const FLOOD: usize = 1200;
    const MAX_LINGERING: usize = 256;
    /// Accepted connections waiting for the accept loop (its channel, one per acceptor task).
    const QUEUED: usize = 64 + 1;
    /// Descriptors in passing (a log file, a timer, a refusal between accept and close) on a
    /// loaded machine: generous, and still far below the ~1,000 of the unbounded version.
    const SLACK: usize = 150;
    raise_open_files_limit();
    let p = Pier::start_with(Options {
        extra_yaml: String::from("limits:\n  connectionsperclient: 2\n"),
        ..Options::default()
    });
    push_image(&p, "victim", "v1", &[b"layer"]);
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd list").count();
    let idle = fds(p.pid());
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(p.addr).unwrap()).collect();
    wait_until(Duration::from_secs(5), || try_request(p.addr, "GET", "/v2/", &[], b"").is_ok_and(|r| r.status == 429));
    // The flood: connections that send a request and never read nor close.
    let flood: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|_| {
            let mut s = TcpStream::connect(p.addr).ok()?;
            let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
            Some(s)
        })
        .collect();
    assert_eq!(flood.len(), FLOOD, "every connection of the flood was accepted by the kernel");
    // Let the accept loop take them all (the refusals linger 2 s; take the count well inside).
    let mut peak = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(fds(p.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = request_from(IpAddr::from(VICTIM), p.addr, "GET", "/v2/victim/manifests/v1", &[], b"");
    assert_eq!(other.status, 200, "another client is served during the flood: {}", other.text());
    assert!(
        peak <= idle + 2 + MAX_LINGERING + QUEUED + SLACK,
        "{FLOOD} refused connections: the daemon held {peak} descriptors (idle {idle})"
    );
    assert!(
        peak >= idle + MAX_LINGERING / 2,
        "the refused connections should linger to deliver their answer (peak {peak}, idle {idle})"
    );
    drop(flood);
    drop(held);
}

/// 40 referrers with 1 MiB of annotations each, listed by three clients at once. Before: the
/// whole list was built in memory for every request (1.28 GiB for one GET of such a list). Now
/// a response holds at most one page (about 1 MiB of descriptors), so the peak stays small.
#[test]
fn referrers_listing_is_bounded_in_memory() {
    const REFERRERS: usize = 40;
    let p = Pier::start();
    let subject_digest = push_image(&p, "r", "v1", &[b"subject"]);
    let subject_len = p.get("/v2/r/manifests/v1").body.len();
    let config = push_blob(&p, "r", b"{}");
    let layer = push_blob(&p, "r", b"payload");
    for i in 0..REFERRERS {
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.big",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 7}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject_digest, "size": subject_len},
            "annotations": {"org.example.big": format!("{i}{}", "a".repeat(1 << 20))},
        }))
        .unwrap();
        push_manifest(&p, "r", &format!("big{i}"), "application/vnd.oci.image.manifest.v1+json", &manifest);
    }
    let pid = p.pid();
    let rss_before = rss_and_threads(pid).0;
    // Reset the peak (VmHWM) to the current RSS, then list from three clients at once.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    let addr = p.addr;
    let walkers: Vec<_> = (0..3)
        .map(|_| {
            let first = format!("/v2/r/referrers/{subject_digest}");
            std::thread::spawn(move || {
                let (mut listed, mut pages, mut next) = (0, 0, Some(first));
                while let Some(path) = next.take() {
                    let r = request(addr, "GET", &path, &[], b"");
                    assert_eq!(r.status, 200, "{}", r.text());
                    listed += r.json()["manifests"].as_array().map_or(0, Vec::len);
                    pages += 1;
                    next = r.header("link").map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_string());
                }
                (listed, pages)
            })
        })
        .collect();
    for w in walkers {
        let (listed, pages) = w.join().unwrap();
        assert_eq!(listed, REFERRERS, "every referrer listed, in {pages} pages");
        assert!(pages >= REFERRERS / 2, "{REFERRERS} referrers of 1 MiB in {pages} pages");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    println!("referrers: {REFERRERS} x 1 MiB, 3 clients: RSS before {rss_before} KiB, peak {peak} KiB");
    assert!(peak <= RSS_BOUND_KIB, "peak RSS {peak} KiB listing {REFERRERS} big referrers from 3 clients");
}
