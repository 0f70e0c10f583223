//! The daemon's side of the admin channel: binds `admin.sock`, checks each peer, answers one
//! request per connection (see the module above for the contract).
//!
//! The request line is read with `recvmsg`, so file descriptors sent with it (`SCM_RIGHTS`)
//! arrive with it as `OwnedFd`s (close-on-exec). Invariants: a request runs only with exactly
//! the number of descriptors it expects ([`Request::expected_fds`]), never more than
//! [`MAX_FDS`]; every received descriptor is owned by the command that runs and is closed when
//! it ends (or at once when the request is refused).

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::protocol::{Event, Request, MAX_FDS, MAX_REQUEST};
use super::status::{self, Daemon};
use crate::bundle::export::{export_into, ExportEvent, ExportRequest};
use crate::store::gc::{GcOptions, GcReport};
use crate::store::Store;

/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// What the admin commands work on in a running daemon.
pub struct AdminContext {
    pub store: Arc<Store>,
    pub started: Instant,
    pub listening: Vec<String>,
}

/// The bound admin socket; its file is removed when this is dropped.
pub struct AdminSocket {
    listener: UnixListener,
    /// The file this process bound (removed when this is dropped); `None` for a socket systemd
    /// passed, whose file systemd owns.
    path: Option<PathBuf>,
}

/// Binds the admin socket at `path`, mode 0600. A file left there by an earlier run is replaced:
/// the caller holds the store (redb's lock), so no other daemon of this data directory runs.
pub fn bind(path: &Path) -> io::Result<AdminSocket> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Until this chmod the mode follows the umask (usually 0755: only the owner can connect);
    // the peer check below holds either way.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(AdminSocket { listener, path: Some(path.to_path_buf()) })
}

/// Takes the admin socket systemd passed (socket activation), expected at `expected` (where the
/// commands look for it: the data directory's `admin.sock`); a socket elsewhere is served, with
/// a warning that the commands will not find it.
pub fn adopt(listener: std::os::unix::net::UnixListener, expected: &Path) -> io::Result<AdminSocket> {
    listener.set_nonblocking(true)?;
    let at = listener.local_addr()?.as_pathname().map(Path::to_path_buf);
    match at {
        Some(at) if at == expected => {}
        at => log::warn!(
            "the admin socket systemd passed is {}, not {}: pier gc, status... will not find it (point ListenStream= there)",
            at.map_or_else(|| String::from("unnamed"), |p| p.display().to_string()),
            expected.display()
        ),
    }
    Ok(AdminSocket { listener: UnixListener::from_std(listener)?, path: None })
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves the admin socket until the task is dropped.
pub async fn serve(socket: AdminSocket, ctx: Arc<AdminContext>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else { return };
        let stream = match socket.listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _place = place;
            answer(stream, ctx).await;
        });
    }
}

/// Whether the peer may use the admin channel: the daemon's own user or root.
fn allowed(stream: &UnixStream) -> Result<u32, String> {
    let cred = stream.peer_cred().map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == me || cred.uid() == 0 {
        Ok(cred.uid())
    } else {
        Err(format!("uid {} may not use the admin channel (only uid {me} and root)", cred.uid()))
    }
}

async fn answer(mut stream: UnixStream, ctx: Arc<AdminContext>) {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut refused = false;
    match allowed(&stream) {
        Err(why) => {
            log::warn!("admin socket: refused a connection: {why}");
            let _ = events.send(Event::Error { message: why });
            refused = true;
        }
        Ok(uid) => match read_request(&stream).await {
            Err(message) => {
                let _ = events.send(Event::Error { message });
                refused = true;
            }
            Ok((request, fds)) => {
                log::info!("admin: {} (uid {uid})", request.name());
                run(request, fds, ctx, events.clone());
            }
        },
    }
    drop(events);
    // Events as they come (progress of a long command), until its last one.
    while let Some(event) = rx.recv().await {
        if stream.write_all(&event.to_line()).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
    if refused {
        // What the client sent and was not read (an oversized line, a request not read at all)
        // is read past before closing: closing a socket with unread input resets it, and the
        // client could lose the error it has not read yet.
        drain(&mut stream).await;
    }
}

/// Reads and drops the client's input until it closes its end, at most `MAX_REQUEST` bytes
/// more and for at most a second.
async fn drain(stream: &mut UnixStream) {
    use tokio::io::AsyncReadExt;
    let mut rest = stream.take(MAX_REQUEST as u64);
    let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
}

/// One request line, bounded in size and time, and the file descriptors sent with it: exactly
/// as many as the request expects, or the request is refused (the descriptors are closed).
async fn read_request(stream: &UnixStream) -> Result<(Request, Vec<OwnedFd>), String> {
    let (line, fds) = match tokio::time::timeout(REQUEST_TIMEOUT, read_line_with_fds(stream)).await {
        Err(_) => return Err(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(result) => result?,
    };
    let request: Request = serde_json::from_slice(line.trim_ascii()).map_err(|e| format!("malformed request: {e}"))?;
    if fds.len() != request.expected_fds() {
        return Err(format!(
            "{} takes {} file descriptor(s), the request carried {}",
            request.name(),
            request.expected_fds(),
            fds.len()
        ));
    }
    Ok((request, fds))
}

/// Reads up to the first newline (at most `MAX_REQUEST` bytes; anything after it is ignored:
/// the client sends nothing more), collecting the descriptors that come with any of the bytes.
async fn read_line_with_fds(stream: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let (n, truncated) = stream
            .async_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
                let received = rustix::net::recvmsg(stream, &mut [IoSliceMut::new(&mut buf)], &mut control, flags)?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                        fds.extend(received_fds);
                    }
                }
                Ok((received.bytes, received.flags.contains(ReturnFlags::CTRUNC)))
            })
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if truncated || fds.len() > MAX_FDS {
            return Err(format!("a request carries at most {MAX_FDS} file descriptors"));
        }
        let chunk = &buf[..n];
        if let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..end]);
        } else {
            line.extend_from_slice(chunk);
        }
        if line.len() > MAX_REQUEST {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
        if n == 0 || chunk.contains(&b'\n') {
            return Ok((line, fds));
        }
    }
}

/// Runs `request` on a blocking thread (store work may read much of the store), sending its
/// events to `events`; the last one is `done` or `error`. Events are small and few (progress
/// every 100 repositories), so the channel needs no bound. `fds` (as many as the request
/// expects) belong to the command and are closed when it returns, before its last event.
fn run(request: Request, fds: Vec<OwnedFd>, ctx: Arc<AdminContext>, events: tokio::sync::mpsc::UnboundedSender<Event>) {
    tokio::task::spawn_blocking(move || {
        // The command takes its descriptors from here, in order; what is left is closed below.
        let mut fds = fds.into_iter();
        let result = match request {
            Request::Status {} => {
                let daemon = Daemon {
                    pid: std::process::id(),
                    uptime_secs: ctx.started.elapsed().as_secs(),
                    listening: ctx.listening.clone(),
                };
                status::status(&ctx.store, Some(daemon)).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Retention { dry_run } => ctx
                .store
                .apply_retention(&ctx.store.retention_policies(), dry_run)
                .map_err(|e| e.to_string())
                .and_then(to_value),
            Request::Scrub {} => {
                let progress = |message: &str| {
                    let _ = events.send(Event::progress(message));
                };
                ctx.store.scrub(progress).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Fsck { repair } => {
                let progress = |message: &str| {
                    let _ = events.send(Event::progress(message));
                };
                ctx.store.fsck(repair, progress).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Du { repository } => {
                super::du::du(&ctx.store, repository.as_deref()).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Gc { grace_secs, untagged, dry_run, full } => {
                let options = GcOptions { grace_secs, untagged, dry_run, full };
                let progress = |message: &str| {
                    let _ = events.send(Event::progress(message));
                };
                match ctx.store.collect_garbage(options, progress) {
                    Ok(report) => {
                        log::info!("admin: {}", gc_summary(&report));
                        to_value(report)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Request::Export { references, all, platforms, exclude_inventory } => {
                let request = ExportRequest { references, all, platforms };
                let pipe = fds.next();
                let inventory = if exclude_inventory { fds.next() } else { None };
                let mut progress = |event: ExportEvent| {
                    let _ = events.send(match event {
                        ExportEvent::Image(message) => Event::progress(message),
                        ExportEvent::Planned { stream_bytes } => {
                            Event::Progress { message: "writing".into(), done: Some(0), total: Some(stream_bytes) }
                        }
                    });
                };
                match export_into(&*ctx.store, &request, pipe, inventory, &mut progress) {
                    Ok(report) => {
                        log::info!(
                            "admin: export: {} image(s), {} blob(s), {} bytes written; {} blob(s), {} bytes excluded",
                            report.images.len(),
                            report.blobs,
                            report.bytes,
                            report.excluded_blobs,
                            report.excluded_bytes
                        );
                        to_value(report)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Request::Inventory {} => match fds.next() {
                Some(pipe) => crate::bundle::inventory::write_inventory(&ctx.store, &mut std::fs::File::from(pipe))
                    .map_err(|e| e.to_string())
                    .and_then(to_value),
                None => Err("inventory: no pipe passed".into()),
            },
            Request::Import { repository, renames } => match fds.next() {
                Some(fd) => import(&ctx.store, std::fs::File::from(fd), repository, renames, &events),
                None => Err(String::from("import: no pipe came with the request")),
            },
        };
        // The descriptors close before the last event: a client reading a pipe sees its end
        // before it hears the result.
        drop(fds);
        let _ = events.send(match result {
            Ok(result) => Event::Done { result },
            Err(message) => Event::Error { message },
        });
    });
}

/// `pier import` in the daemon: the archive is read from `pipe` on this (blocking) thread.
fn import(
    store: &Store,
    pipe: std::fs::File,
    repository: Option<String>,
    renames: Vec<[String; 2]>,
    events: &tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<serde_json::Value, String> {
    let options = crate::bundle::import::options(repository.as_deref(), &renames)?;
    let mut progress = |message: &str| {
        let _ = events.send(Event::progress(message));
    };
    match crate::bundle::import::import(store, pipe, &options, &mut progress) {
        Ok(report) => {
            log::info!("admin: import: {}", report.summary());
            to_value(report)
        }
        Err(e) => {
            log::warn!("admin: import refused: {e}");
            Err(e.to_string())
        }
    }
}

fn to_value(result: impl serde::Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(result).map_err(|e| e.to_string())
}

/// The one-line summary of a collection (log and `pier gc`).
pub fn gc_summary(r: &GcReport) -> String {
    format!(
        "garbage collection{}: {} repositories ({}) in {} ms; {} untagged manifest(s) and {} blob link(s) {}, \
         {} blob file(s) ({} bytes) {}; {} link(s) kept for the grace period",
        if r.dry_run { " (dry run)" } else { "" },
        r.repositories,
        if r.full { "all" } else { "changed since the last collection" },
        r.elapsed_ms,
        r.manifests,
        r.links,
        if r.dry_run { "would go" } else { "removed" },
        r.blobs_freed,
        r.bytes_freed,
        if r.dry_run { "would be freed" } else { "freed" },
        r.in_grace
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;
    use crate::admin::client::Connection;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (std::fs::File::from(r), std::fs::File::from(w))
    }

    /// Runs `client` against one accepted connection whose request line `server` reads.
    fn exchange<T: Send + 'static>(
        client: impl FnOnce(&Path) + Send + 'static,
        server: impl FnOnce(&UnixStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + '_>>,
    ) -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let socket = bind(&path).unwrap();
            let client_path = path.clone();
            let client = std::thread::spawn(move || client(&client_path));
            let (stream, _) = socket.listener.accept().await.unwrap();
            let out = server(&stream).await;
            client.join().unwrap();
            out
        })
    }

    #[test]
    fn descriptors_sent_with_a_request_arrive_with_its_line_and_work() {
        let (read_end, write_end) = pipe();
        let (other_read, other_write) = pipe();
        let (line, fds) = exchange(
            move |path| {
                let mut c = Connection::open(path).unwrap();
                c.send(&Request::Du { repository: Some("a".into()) }, &[write_end.as_fd(), other_write.as_fd()])
                    .unwrap();
                // The daemon has its own copies now: the command's close nothing.
                drop((write_end, other_write));
            },
            |stream| Box::pin(read_line_with_fds(stream)),
        )
        .unwrap();
        assert_eq!(serde_json::from_slice::<Request>(&line).unwrap(), Request::Du { repository: Some("a".into()) });
        assert_eq!(fds.len(), 2);
        let mut fds = fds.into_iter();
        let mut first = std::fs::File::from(fds.next().unwrap());
        first.write_all(b"through the first").unwrap();
        drop(first);
        drop(fds);
        let mut got = String::new();
        (&read_end).read_to_string(&mut got).unwrap();
        assert_eq!(got, "through the first", "the first descriptor is the first pipe's write end, in order");
        let mut nothing = Vec::new();
        (&other_read).read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty(), "closing the received descriptors ends the pipe");
    }

    #[test]
    fn a_request_with_descriptors_it_does_not_take_or_too_many_is_refused() {
        let (read_end, write_end) = pipe();
        let refused = exchange(
            move |path| {
                let mut c = Connection::open(path).unwrap();
                c.send(&Request::Status {}, &[write_end.as_fd()]).unwrap();
            },
            |stream| Box::pin(read_request(stream)),
        );
        match refused {
            Err(message) => assert!(message.contains("takes 0 file descriptor(s), the request carried 1"), "{message}"),
            Ok(_) => panic!("a status request with a descriptor ran"),
        }
        // The refused request's descriptor was closed: the pipe has no writer left.
        let mut nothing = Vec::new();
        (&read_end).read_to_end(&mut nothing).unwrap();

        let (_r, w) = pipe();
        let too_many = exchange(
            move |path| {
                let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
                let fds: Vec<_> = (0..MAX_FDS + 1).map(|_| w.as_fd()).collect();
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 1))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
                let line = b"{\"command\":\"status\"}\n";
                rustix::net::sendmsg(&stream, &[io::IoSlice::new(line)], &mut control, rustix::net::SendFlags::empty())
                    .unwrap();
                stream.flush().unwrap();
            },
            |stream| Box::pin(read_request(stream)),
        );
        match too_many {
            Err(message) => assert!(message.contains(&format!("at most {MAX_FDS} file descriptors")), "{message}"),
            Ok(_) => panic!("a request with {} descriptors ran", MAX_FDS + 1),
        }
    }
}
