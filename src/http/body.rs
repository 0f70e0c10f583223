//! The response body type: empty, a small in-memory buffer, or a blob streamed from its file.
//!
//! A blob is pulled by the connection, not pushed at it: the next bytes are read from the file
//! only when hyper asks for them, which it does when the socket (or the HTTP/2 stream's window)
//! can take more. Each body owns `BUFFERS` buffers of `CHUNK` bytes, lent to the connection as
//! `Bytes` and given back when hyper has written them to the socket (the `Bytes`' owner returns
//! its buffer on drop and wakes the body). So whatever the client does, one response holds at
//! most `BUFFERS × CHUNK` bytes and no thread: a reader that stops reading stops the reads.
//!
//! Bytes in the page cache are read on the connection's own task (`preadv2(RWF_NOWAIT)`, a
//! memory copy); only bytes that need the disk are read on a blocking thread, for the time of
//! that one read.
//!
//! Invariants:
//! - At most `BUFFERS` buffers exist per body; a buffer is either at home (`Slot::free`), lent
//!   to the connection (inside a `Bytes`), or inside the one blocking read in flight.
//! - `next` only moves forward by bytes actually read, and the body ends exactly at `end`: a file
//!   shorter than its record is an error, never a short body that looks complete.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use super::limits::TransferPermit;
use crate::store::BlobReader;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Blob(Box<BlobBody>),
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
            ResponseBody::Blob(blob) => blob.poll_chunk(cx).map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Blob(blob) => blob.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Blob(blob) => SizeHint::with_exact(blob.remaining()),
        }
    }
}

/// Bytes read from the file at a time.
pub const CHUNK: usize = 32 * 1024;
/// Buffers per body: one being written to the socket while the next is read.
pub const BUFFERS: usize = 1;

/// Where a body's buffers live when they are not lent out.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    free: Vec<Vec<u8>>,
    /// Buffers created so far (at most `BUFFERS`).
    created: usize,
    /// The body's task, waiting for a buffer to come back.
    waiting: Option<Waker>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer to read into, or `None` (and the waker registered) when all are lent out.
    fn take(&self, cx: &mut Context<'_>) -> Option<Vec<u8>> {
        let mut state = self.lock();
        if let Some(buf) = state.free.pop() {
            return Some(buf);
        }
        if state.created < BUFFERS {
            state.created += 1;
            return Some(vec![0u8; CHUNK]);
        }
        state.waiting = Some(cx.waker().clone());
        None
    }

    fn give_back(&self, buf: Vec<u8>) {
        let waker = {
            let mut state = self.lock();
            state.free.push(buf);
            state.waiting.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The owner of a lent buffer inside a `Bytes`: returns it to the body's slot when hyper drops it.
struct Lent {
    buf: Vec<u8>,
    len: usize,
    slot: Arc<Slot>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.slot.give_back(std::mem::take(&mut self.buf));
    }
}

/// A blocking read of bytes that were not in the page cache.
type DiskRead = JoinHandle<(Vec<u8>, io::Result<usize>)>;

/// `len` bytes of a blob from `start`, read as the connection asks for them.
pub struct BlobBody {
    blob: BlobReader,
    next: u64,
    end: u64,
    slot: Arc<Slot>,
    disk_read: Option<DiskRead>,
    /// Counts this response against `limits.transfers` until it is dropped.
    _permit: TransferPermit,
}

impl BlobBody {
    pub fn new(blob: BlobReader, start: u64, len: u64, permit: TransferPermit) -> Self {
        BlobBody {
            blob,
            next: start,
            end: start.saturating_add(len),
            slot: Arc::default(),
            disk_read: None,
            _permit: permit,
        }
    }

    fn remaining(&self) -> u64 {
        self.end - self.next
    }

    fn lend(&mut self, buf: Vec<u8>, len: usize) -> Bytes {
        self.next += len as u64;
        Bytes::from_owner(Lent { buf, len, slot: self.slot.clone() })
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(read) = &mut self.disk_read {
            let (buf, result) = match Pin::new(read).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(done)) => done,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(io::Error::other(e)))),
            };
            self.disk_read = None;
            return Poll::Ready(Some(match result {
                Ok(0) => {
                    self.slot.give_back(buf);
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shorter than recorded"))
                }
                Ok(n) => Ok(self.lend(buf, n)),
                Err(e) => Err(e),
            }));
        }
        if self.remaining() == 0 {
            return Poll::Ready(None);
        }
        let Some(mut buf) = self.slot.take(cx) else { return Poll::Pending };
        let want = (CHUNK as u64).min(self.remaining()) as usize;
        match self.blob.read_cached(&mut buf[..want], self.next) {
            Ok(Some(n)) => Poll::Ready(Some(Ok(self.lend(buf, n)))),
            Ok(None) => {
                let (blob, offset) = (self.blob.clone(), self.next);
                self.disk_read = Some(tokio::task::spawn_blocking(move || {
                    let result = blob.read_at(&mut buf[..want], offset);
                    (buf, result)
                }));
                self.poll_chunk(cx)
            }
            Err(e) => {
                self.slot.give_back(buf);
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
