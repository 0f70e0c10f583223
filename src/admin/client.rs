//! The command side of the admin channel: sends one request to the daemon of a data directory
//! (with file descriptors when the request takes some) and reads the answer.
//!
//! [`request`] is the whole exchange for commands whose answer is a result; commands that move
//! bytes through a passed pipe ([`Connection`]) send first, work on their end of the pipe, and
//! read the answer on another thread ([`Connection::answer`]).

use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::protocol::{Event, Request, MAX_FDS};

/// How long the daemon may stay silent (between two events) before the command gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: no daemon runs for this data directory.
    #[error("no pier daemon answers on {}", path.display())]
    NoDaemon { path: std::path::PathBuf },
    #[error("admin socket {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon answered something that is not the protocol.
    #[error("admin socket {}: unexpected answer: {why}", path.display())]
    Protocol { path: std::path::PathBuf, why: String },
    /// The daemon refused the request or the command failed there.
    #[error("{0}")]
    Failed(String),
}

/// A progress event as the daemon sent it: a message, and byte counts where the command
/// counts bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub message: String,
    pub done: Option<u64>,
    pub total: Option<u64>,
}

/// One connection to the daemon, one request.
pub struct Connection {
    stream: UnixStream,
    path: PathBuf,
    /// A failure to send, reported only if the daemon's answer does not explain it (a refused
    /// peer is answered before the daemon reads anything).
    send_error: Option<io::Error>,
}

impl Connection {
    /// Connects to the daemon listening on `socket`; [`ClientError::NoDaemon`] when none does.
    pub fn open(socket: &Path) -> Result<Connection, ClientError> {
        let stream = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                return Err(ClientError::NoDaemon { path: socket.to_path_buf() })
            }
            Err(e) => return Err(ClientError::Io { path: socket.to_path_buf(), source: e }),
        };
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|source| ClientError::Io { path: socket.to_path_buf(), source })?;
        Ok(Connection { stream, path: socket.to_path_buf(), send_error: None })
    }

    /// Sends `request` with `fds` (`SCM_RIGHTS` on the line's first bytes; as many as the
    /// request expects, at most [`MAX_FDS`]). The daemon has its own copies once this returns:
    /// the caller may close its copies.
    pub fn send(&mut self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        if fds.len() > MAX_FDS {
            return Err(ClientError::Protocol {
                path: self.path.clone(),
                why: format!("{} file descriptors; a request carries at most {MAX_FDS}", fds.len()),
            });
        }
        let mut line = serde_json::to_vec(request)
            .map_err(|e| ClientError::Protocol { path: self.path.clone(), why: e.to_string() })?;
        line.push(b'\n');
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(ClientError::Protocol {
                path: self.path.clone(),
                why: "the descriptors do not fit the control buffer".into(),
            });
        }
        // The descriptors travel with the first bytes sent; the rest of the line follows.
        let sent = match rustix::net::sendmsg(&self.stream, &[IoSlice::new(&line)], &mut control, SendFlags::NOSIGNAL) {
            Ok(n) => n,
            Err(e) => {
                self.send_error = Some(e.into());
                return Ok(());
            }
        };
        if let Err(e) = (&self.stream).write_all(&line[sent..]) {
            self.send_error = Some(e);
        }
        Ok(())
    }

    /// Reads the answer: `progress` sees each progress event; the result of the `done` event.
    pub fn answer(self, mut progress: impl FnMut(Progress)) -> Result<serde_json::Value, ClientError> {
        let path = self.path;
        for answer in BufReader::new(&self.stream).lines() {
            let answer = answer.map_err(|source| ClientError::Io { path: path.clone(), source })?;
            let event: Event = serde_json::from_str(&answer)
                .map_err(|e| ClientError::Protocol { path: path.clone(), why: format!("{e}: {answer:?}") })?;
            match event {
                Event::Progress { message, done, total } => progress(Progress { message, done, total }),
                Event::Done { result } => return Ok(result),
                Event::Error { message } => return Err(ClientError::Failed(message)),
            }
        }
        if let Some(source) = self.send_error {
            return Err(ClientError::Io { path, source });
        }
        Err(ClientError::Protocol { path, why: "the answer ended without a result".into() })
    }
}

/// Sends `request` (which takes no descriptors) to the daemon listening on `socket`;
/// `progress` sees each progress message; returns the result of the `done` event.
pub fn request(
    socket: &Path,
    request: &Request,
    mut progress: impl FnMut(&str),
) -> Result<serde_json::Value, ClientError> {
    let mut connection = Connection::open(socket)?;
    connection.send(request, &[])?;
    connection.answer(|p| progress(&p.message))
}
