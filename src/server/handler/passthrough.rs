//! Pass-through mode (pub/sub, MONITOR, CLIENT TRACKING/REPLY): the client's socket is
//! joined to an upstream socket of its own, verbatim, for the rest of its life.

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Handler;
use crate::resp::Reply;

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
        upstream.write_all(&self.rbuf).await?;
        self.stream.write_all(&leftover).await?;
        let shutdown = self.ctx.shutdown.clone();
        let kill = self.registration.handle.kill.clone();
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut self.stream, &mut upstream) => copied.map(|_| ()),
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
