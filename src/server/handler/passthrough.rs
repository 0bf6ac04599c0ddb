//! Pass-through mode (pub/sub, MONITOR, CLIENT TRACKING/REPLY): the client's socket is
//! joined to an upstream socket of its own for the rest of its life. Replies and pushes
//! go back verbatim; requests go on as sent, except those naming clients by strata id.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Handler, READ_CHUNK};
use crate::resp::{Frame, Reply, RequestParser};
use crate::server::local::upstream_ids;
use crate::server::registry::Registry;

impl Handler {
    /// Hands the connection to Redis verbatim for the rest of its life. `first` replaces
    /// the request that started it when strata rewrote or re-encoded that request.
    pub(super) async fn pass_through(mut self, first: Option<Bytes>) -> std::io::Result<()> {
        let mut view = super::View::of(&self.session, &self.last_cmd.name);
        view.subscribed = matches!(self.last_cmd.name.as_str(), "subscribe" | "psubscribe" | "ssubscribe");
        view.monitor = self.last_cmd.name == "monitor";
        self.registration.handle.publish(view);
        self.drain().await?;
        let Some((mut upstream, leftover)) = self.take_raw_upstream().await else {
            let reply =
                Reply::err("upstream unavailable: cannot open a connection").to_bytes(self.session.protocol);
            self.stream.write_all(&reply).await?;
            return self.stream.shutdown().await;
        };
        if let Some(first) = first {
            upstream.write_all(&first).await?;
        }
        self.stream.write_all(&leftover).await?;
        let shutdown = self.ctx.shutdown.clone();
        let kill = self.registration.handle.kill.clone();
        let Handler { stream, rbuf, parser, ranges, ctx, .. } = &mut self;
        let (mut from_client, mut to_client) = stream.split();
        let (mut from_redis, mut to_redis) = upstream.split();
        // Each direction ends by shutting down the other side's writes, as
        // `copy_bidirectional` does: a client that stops sending still gets its replies,
        // and one whose Redis went away sees its connection close.
        let requests = async {
            let limit = ctx.config.limits.max_client_buffer;
            Requests { rbuf, parser, ranges, registry: &ctx.registry, limit }
                .forward(&mut from_client, &mut to_redis)
                .await?;
            to_redis.shutdown().await
        };
        let replies = async {
            tokio::io::copy(&mut from_redis, &mut to_client).await?;
            to_client.shutdown().await
        };
        tokio::select! {
            done = async { tokio::try_join!(requests, replies) } => done.map(|_| ()),
            () = shutdown.cancelled() => Ok(()),
            () = kill.cancelled() => Ok(()),
        }
    }

    /// The client's pinned socket, or a fresh one; its Redis id goes to the registry so
    /// CLIENT TRACKING REDIRECT and CLIENT UNBLOCK can name this client.
    async fn take_raw_upstream(&mut self) -> Option<(TcpStream, BytesMut)> {
        if let Some((dedicated, _)) = self.pinned.take() {
            return dedicated.detach().await.map(|d| (d.stream, d.leftover));
        }
        if let Some(spare) = self.ctx.spares.take(self.session.protocol) {
            self.registration.handle.set_upstream_id(spare.upstream_id.unwrap_or(-1));
            if let Some(detached) = spare.detach().await {
                return Some((detached.stream, detached.leftover));
            }
        }
        let conn =
            crate::upstream::connect(&self.ctx.config.upstream, self.session.protocol, true).await.ok()?;
        self.registration.handle.set_upstream_id(conn.client_id.unwrap_or(-1));
        Some((conn.stream, conn.leftover))
    }
}

/// The client-to-Redis half of pass-through. Requests are cut with the client's own
/// parser, starting with those already read, and sent on as they came, except that
/// strata ids become Redis' (`local::upstream_ids`). Bytes that are not RESP, or a
/// request still incomplete past `limit` bytes, end the cutting: from there on bytes are
/// copied as they come and Redis judges them, so a client's stream is never held or lost.
struct Requests<'a> {
    rbuf: &'a mut BytesMut,
    parser: &'a mut RequestParser,
    ranges: &'a mut Vec<Range<usize>>,
    registry: &'a Registry,
    /// `limits.max_client_buffer`: the most one incomplete request may hold here.
    limit: usize,
}

impl Requests<'_> {
    async fn forward<R, W>(mut self, from: &mut R, to: &mut W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let (ready, cut) = self.take_ready();
            if !ready.is_empty() {
                to.write_all(&ready).await?;
            }
            if !cut {
                tokio::io::copy(from, to).await?;
                return Ok(());
            }
            self.rbuf.reserve(READ_CHUNK);
            if from.read_buf(self.rbuf).await? == 0 {
                // An unfinished request: Redis gets what the client sent, as it would directly.
                return to.write_all(&std::mem::take(self.rbuf)).await;
            }
        }
    }

    /// Takes every complete request off the buffer, as the bytes Redis is to get, and
    /// whether requests can still be cut (`false`: everything buffered was taken).
    fn take_ready(&mut self) -> (BytesMut, bool) {
        let mut ready = BytesMut::new();
        loop {
            let frame = match self.parser.next(self.rbuf, self.ranges) {
                Ok(Some(frame)) => frame,
                Ok(None) if self.rbuf.len() <= self.limit => return (ready, true),
                Ok(None) | Err(_) => {
                    ready.extend_from_slice(&std::mem::take(self.rbuf));
                    return (ready, false);
                }
            };
            let (len, translated) = match frame {
                Frame::Empty { len } => (len, None),
                Frame::Multibulk { len } => (len, self.translate(&self.rbuf[..len])),
                Frame::Inline { consumed, encoded } => (consumed, self.translate(&encoded)),
            };
            match translated {
                Some(request) => ready.extend_from_slice(&request),
                None => ready.extend_from_slice(&self.rbuf[..len]),
            }
            self.rbuf.advance(len);
        }
    }

    /// The request in `source` (which `ranges` index) with Redis' ids, if it names strata's.
    fn translate(&self, source: &[u8]) -> Option<Bytes> {
        let argv: smallvec::SmallVec<[&[u8]; 8]> = self.ranges.iter().map(|r| &source[r.clone()]).collect();
        upstream_ids(self.registry, &argv)
    }
}
