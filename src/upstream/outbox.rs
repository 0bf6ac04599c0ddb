//! Bytes waiting to be written to one upstream connection. Small requests from many
//! clients are copied together into one buffer, so they leave in one piece; a large chunk
//! (a client's pipelined batch of big values) is queued as it is and written with the
//! others in one vectored write, so strata does not copy values it only forwards.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

/// Chunks smaller than this are copied into the shared buffer: for them a copy costs
/// less than an entry in the kernel's iovec walk.
const COPY_BELOW: usize = 4 * 1024;
/// Most slices handed to one vectored write (Linux takes up to 1024; beyond a few dozen
/// the write is large anyway and the rest goes in the next one).
const MAX_SLICES: usize = 32;

/// Bytes queued for one connection, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Sealed pieces, oldest first; the first may be partly written.
    chunks: VecDeque<Bytes>,
    /// Small chunks gathered since the last seal.
    tail: BytesMut,
    /// Bytes not yet written, in `chunks` and `tail`.
    len: usize,
}

impl Outbox {
    /// Queues `chunk` after everything already queued.
    pub fn push(&mut self, chunk: &Bytes) {
        if chunk.len() < COPY_BELOW {
            self.tail.extend_from_slice(chunk);
        } else {
            self.seal();
            self.chunks.push_back(chunk.clone());
        }
        self.len += chunk.len();
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when everything was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes as much as one vectored write takes; returns how many bytes it wrote.
    /// Cancel-safe: bytes leave the queue only in the same poll as the write succeeds.
    pub async fn write_to<W: AsyncWriteExt + Unpin>(&mut self, out: &mut W) -> std::io::Result<usize> {
        self.seal();
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        let written = out.write_vectored(&slices[..count]).await?;
        self.advance(written);
        Ok(written)
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `limit` bytes per write, as a socket with a full buffer does.
    struct Trickle {
        written: Vec<u8>,
        limit: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.written.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut room = self.limit;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(room);
                self.written.extend_from_slice(&buf[..take]);
                room -= take;
                n += take;
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_and_large_chunks_leave_in_order_through_partial_writes() {
        let chunks: Vec<Bytes> = (0..40u8)
            .map(|i| {
                let size = if i % 3 == 0 { COPY_BELOW + i as usize } else { 7 + i as usize };
                Bytes::from(vec![i; size])
            })
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut outbox = Outbox::default();
        let mut socket = Trickle { written: Vec::new(), limit: 3001 };
        for (i, chunk) in chunks.iter().enumerate() {
            outbox.push(chunk);
            // Interleave writes with pushes, as the connection task does.
            if i % 5 == 4 {
                outbox.write_to(&mut socket).await.expect("write");
            }
        }
        while !outbox.is_empty() {
            let before = outbox.len();
            let n = outbox.write_to(&mut socket).await.expect("write");
            assert_eq!(outbox.len(), before - n);
        }
        assert_eq!(socket.written, expected);
    }
}
