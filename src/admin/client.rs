//! The command side of the admin channel: sends one request to the daemon of a data directory
//! and reads the answer.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Event, Request};

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

/// Sends `request` to the daemon listening on `socket`; `progress` sees each progress message;
/// returns the result of the `done` event.
pub fn request(
    socket: &Path,
    request: &Request,
    mut progress: impl FnMut(&str),
) -> Result<serde_json::Value, ClientError> {
    let io_error = |source| ClientError::Io { path: socket.to_path_buf(), source };
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NoDaemon { path: socket.to_path_buf() })
        }
        Err(e) => return Err(io_error(e)),
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io_error)?;
    let mut line = serde_json::to_vec(request)
        .map_err(|e| ClientError::Protocol { path: socket.to_path_buf(), why: e.to_string() })?;
    line.push(b'\n');
    // The daemon may answer before reading (a refused peer): its answer is still there to read.
    let written = (&stream).write_all(&line);
    for answer in BufReader::new(&stream).lines() {
        let answer = answer.map_err(io_error)?;
        let event: Event = serde_json::from_str(&answer)
            .map_err(|e| ClientError::Protocol { path: socket.to_path_buf(), why: format!("{e}: {answer:?}") })?;
        match event {
            Event::Progress { message } => progress(&message),
            Event::Done { result } => return Ok(result),
            Event::Error { message } => return Err(ClientError::Failed(message)),
        }
    }
    written.map_err(io_error)?;
    Err(ClientError::Protocol { path: socket.to_path_buf(), why: "the answer ended without a result".into() })
}
