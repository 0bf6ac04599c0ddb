//! Writing replies: strictly in request order, batched into one write unless a reply is
//! alone or large.

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::super::pending::{Pending, keep_spare, resolve_front, settle};
use super::{COPY_LIMIT, Handler};
use crate::upstream::Replies;

impl Handler {
    /// Writes every reply at the front of the queue that has arrived.
    pub(super) async fn write_ready(&mut self) -> std::io::Result<()> {
        while let Some(front) = self.queue.front_mut() {
            let bytes = match front {
                Pending::Ready(bytes) => std::mem::take(bytes),
                Pending::Waiting { rx, frames, pinned, notes, keys, started } => {
                    let received = match rx.try_recv() {
                        Ok(replies) => replies,
                        Err(oneshot::error::TryRecvError::Empty) => break,
                        Err(oneshot::error::TryRecvError::Closed) => {
                            self.closing |= *pinned;
                            Replies::failed(crate::error::Error::redis_lost(), *frames)
                        }
                    };
                    let mut notes = std::mem::take(notes);
                    let settled = settle(&self.ctx, received, &mut notes, keys, *pinned, *started);
                    keep_spare(&mut self.spare_notes, notes);
                    match settled {
                        Pending::Ready(bytes) => bytes,
                        deferred => {
                            *front = deferred;
                            continue;
                        }
                    }
                }
            };
            self.queue.pop_front();
            // A reply written alone (the usual case: one job per batch of requests) or a
            // large one goes straight from its buffer; only several are gathered by copying.
            let alone = self.wbuf.is_empty() && !self.queue.front().is_some_and(Pending::is_ready);
            if bytes.len() > COPY_LIMIT {
                self.flush().await?;
                self.write_large(&bytes).await?;
            } else if alone {
                self.flush().await?;
                self.stream.write_all(&bytes).await?;
            } else {
                self.wbuf.extend_from_slice(&bytes);
            }
        }
        self.flush().await
    }

    /// Writes a large reply, counted in the client's memory while it waits for the client
    /// to read it; `CLIENT KILL` or the memory cap can close a client that never does.
    async fn write_large(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let read_buffer = self.rbuf.capacity();
        self.memory.set(read_buffer + bytes.len(), &self.ctx.registry);
        let kill = self.registration.handle.kill.clone();
        let written = tokio::select! {
            written = self.stream.write_all(bytes) => written,
            () = kill.cancelled() => Err(std::io::ErrorKind::ConnectionAborted.into()),
        };
        self.memory.set(read_buffer, &self.ctx.registry);
        written
    }

    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Waits for and writes every pending reply.
    pub(super) async fn drain(&mut self) -> std::io::Result<()> {
        // A client waiting for its own replies (a BLPOP on its own connection) must not
        // hold up others on its reserved keys: one of them may be what it waits for.
        self.fencing.waiting = None;
        self.drain_keeping_turn().await
    }

    /// `drain`, keeping the client's place in the fences' waiting room: only for replies
    /// of shared-route requests, which Redis answers without waiting for anyone.
    pub(super) async fn drain_keeping_turn(&mut self) -> std::io::Result<()> {
        self.first_batch_sent();
        while !self.queue.is_empty() {
            resolve_front(&mut self.queue, &self.ctx, &mut self.spare_notes).await;
            self.write_ready().await?;
        }
        Ok(())
    }
}
