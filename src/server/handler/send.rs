//! Sending a client's requests upstream on the route decided for them (`server::routes`),
//! after a barrier when the route changes, and HELLO, whose protocol switch waits for
//! Redis' answer.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::super::action::Route;
use super::super::pending::{Keys, Pending, settle};
use super::Handler;
use crate::error::Error;
use crate::pipeline::Note;
use crate::resp::reply::Protocol;
use crate::upstream::{Job, Replies};

impl Handler {
    /// Sends requests producing `frames` replies on `route`, after a barrier if the route changed.
    pub(super) async fn forward(
        &mut self,
        route: Route,
        payload: Vec<Bytes>,
        frames: usize,
        mut notes: Vec<Note>,
        keys: Keys,
    ) {
        if route != self.last_route {
            if let Err(e) = self.drain().await {
                tracing::debug!(error = %e, "client gone during route change");
                self.closing = true;
                return;
            }
            self.last_route = route;
        }
        let (reply, rx) = oneshot::channel();
        // The stripes taken for these requests travel with them, released with the replies.
        let fences = self.fencing.held.take();
        let job = Job { payload, frames, frame_ends: !notes.is_empty(), reply, fences };
        if route == Route::Pinned && !self.routes.own.ready(self.session.protocol) {
            // Taking or opening the connection may wait: let the next client in first.
            self.first_batch_sent();
        }
        let sent = self.routes.send(route, job, self.session.protocol).await;
        match sent {
            Ok(()) => self.queue.push_back(Pending::Waiting {
                rx,
                frames,
                pinned: route == Route::Pinned,
                notes,
                keys,
                started: self.batch_start,
            }),
            Err(why) => {
                self.ctx.stats.record_upstream_error();
                let started = self.batch_start;
                let replies = Replies::failed(why, frames);
                self.queue.push_back(settle(&self.ctx, replies, &mut notes, &keys, false, started));
                if self.routes.holds_client_state(route) {
                    // The client's connection state lived on that connection; it is gone.
                    self.closing = true;
                }
            }
        }
    }

    /// HELLO that Redis must see: forward it, wait, and switch protocol only if accepted.
    pub(super) async fn forward_hello(&mut self, proto: u8, raw: Bytes) -> std::io::Result<()> {
        self.forward(Route::Pinned, vec![raw], 1, Vec::new(), Keys::new()).await;
        self.last_route = Route::Pinned;
        let Some(Pending::Waiting { .. }) = self.queue.back() else { return Ok(()) };
        let Some(Pending::Waiting { rx, .. }) = self.queue.pop_back() else { return Ok(()) };
        self.first_batch_sent();
        let reply = rx.await.map_or_else(|_| Error::redis_lost().repeated(1), |r| r.bytes);
        if !reply.starts_with(b"-") {
            self.session.protocol = if proto == 3 { Protocol::Resp3 } else { Protocol::Resp2 };
            self.routes.own.switched_to(self.session.protocol);
            self.routes.shared.reassign(self.session.protocol);
        }
        self.queue.push_back(Pending::Ready(reply));
        Ok(())
    }
}
