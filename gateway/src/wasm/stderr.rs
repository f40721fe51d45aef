//! The guest's standard error, kept as a bounded tail.
//!
//! A transform's stderr is only read when a call traps, to attach the panic
//! message to the error. The panic message is written last, so what matters
//! is the end of the stream: this pipe keeps the most recent bytes and drops
//! the oldest, and never refuses a write. (wasmtime's `MemoryOutputPipe`
//! keeps the first bytes and then refuses, so a guest that had logged 16 KiB
//! would lose its panic message.)

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A clonable handle on the last `capacity` bytes the guest wrote.
#[derive(Debug, Clone)]
pub(super) struct StderrTail {
    capacity: usize,
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    pub(super) fn new(capacity: usize) -> Self {
        StderrTail {
            capacity,
            buffer: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
        }
    }

    /// The bytes kept, oldest first.
    pub(super) fn contents(&self) -> Vec<u8> {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.iter().copied().collect()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (buffer.len() + bytes.len()).saturating_sub(self.capacity);
        buffer.drain(..overflow);
        buffer.extend(bytes);
    }
}

/// How much a guest may write per `write` call; any value works since
/// writes never block, this only bounds one copy.
const WRITE_PERMIT: usize = 4096;

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::StderrTail;

    #[test]
    fn keeps_the_last_bytes_whatever_the_write_sizes() {
        let tail = StderrTail::new(8);
        tail.push(b"abc");
        tail.push(b"defgh");
        assert_eq!(tail.contents(), b"abcdefgh");
        tail.push(b"ij");
        assert_eq!(tail.contents(), b"cdefghij");
        tail.push(b"0123456789");
        assert_eq!(tail.contents(), b"23456789");
    }
}
