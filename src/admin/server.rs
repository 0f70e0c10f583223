//! The daemon's side of the admin channel: binds `admin.sock`, checks each peer, answers one
//! request per connection (see the module above for the contract).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::protocol::{Event, Request, MAX_REQUEST};
use super::status::{self, Daemon};
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
    path: PathBuf,
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
    Ok(AdminSocket { listener, path: path.to_path_buf() })
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
    match allowed(&stream) {
        Err(why) => {
            log::warn!("admin socket: refused a connection: {why}");
            let _ = events.send(Event::Error { message: why });
        }
        Ok(uid) => match read_request(&mut stream).await {
            Err(message) => {
                let _ = events.send(Event::Error { message });
            }
            Ok(request) => {
                log::info!("admin: {} (uid {uid})", request.name());
                run(request, ctx, events.clone());
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
}

/// One request line, bounded in size and time.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream).take(MAX_REQUEST as u64 + 1);
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => return Err(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(line.trim_ascii()).map_err(|e| format!("malformed request: {e}"))
}

/// Runs `request` on a blocking thread (store work may read much of the store), sending its
/// events to `events`; the last one is `done` or `error`. Events are small and few (progress
/// every 100 repositories), so the channel needs no bound.
fn run(request: Request, ctx: Arc<AdminContext>, events: tokio::sync::mpsc::UnboundedSender<Event>) {
    tokio::task::spawn_blocking(move || {
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
                    let _ = events.send(Event::Progress { message: message.to_string() });
                };
                ctx.store.scrub(progress).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Fsck { repair } => {
                let progress = |message: &str| {
                    let _ = events.send(Event::Progress { message: message.to_string() });
                };
                ctx.store.fsck(repair, progress).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Du { repository } => {
                super::du::du(&ctx.store, repository.as_deref()).map_err(|e| e.to_string()).and_then(to_value)
            }
            Request::Gc { grace_secs, untagged, dry_run, full } => {
                let options = GcOptions { grace_secs, untagged, dry_run, full };
                let progress = |message: &str| {
                    let _ = events.send(Event::Progress { message: message.to_string() });
                };
                match ctx.store.collect_garbage(options, progress) {
                    Ok(report) => {
                        log::info!("admin: {}", gc_summary(&report));
                        to_value(report)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let _ = events.send(match result {
            Ok(result) => Event::Done { result },
            Err(message) => Event::Error { message },
        });
    });
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
