//! The response body type: empty, a small in-memory buffer, or a stream of chunks produced by a
//! blocking reader thread (bounded channel, so memory does not grow with blob size).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

pub enum ResponseBody {
    Full(Option<Bytes>),
    /// Chunks from a reader thread; `remaining` is the exact number of bytes still to come.
    Stream {
        rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
        remaining: u64,
    },
}

impl ResponseBody {
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ResponseBody::Full(if b.is_empty() { None } else { Some(b) })
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream { rx, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(b))) => {
                        *remaining = remaining.saturating_sub(b.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob reader stopped early",
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// Size of the chunks a blob is read and sent in.
pub const READ_CHUNK: usize = 512 * 1024;
/// Chunks in flight between the reader thread and the connection.
pub const READ_AHEAD: usize = 4;

/// Streams `len` bytes of `blob` from `start`, read on a blocking thread.
pub fn stream_blob(mut file: crate::store::BlobReader, start: u64, len: u64) -> ResponseBody {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        if start > 0 {
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        let mut left = len;
        while left > 0 {
            let n = (READ_CHUNK as u64).min(left) as usize;
            let mut buf = vec![0u8; n];
            let result = file.read_exact(&mut buf).map(|()| Bytes::from(buf));
            let failed = result.is_err();
            if tx.blocking_send(result).is_err() || failed {
                return; // client gone, or read error already reported
            }
            left -= n as u64;
        }
    });
    ResponseBody::Stream { rx, remaining: len }
}
