//! Sending a client's requests upstream: on its shared connection (retrying only a job
//! that never reached a connection) or its pinned one (opened from the spares), and HELLO,
//! whose protocol switch waits for Redis' answer.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::super::action::Route;
use super::super::pending::{Keys, Pending, settle};
use super::Handler;
use crate::error::{Error, Kind, Side};
use crate::pipeline::Note;
use crate::resp::reply::Protocol;
use crate::upstream::fence::Held;
use crate::upstream::{Dedicated, Job, Msg, Replies};

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
        // The stripes taken for these requests travel with them (shared route only).
        let fences = if route == Route::Shared { self.held.take() } else { Held::default() };
        let job = Job { payload, frames, frame_ends: !notes.is_empty(), reply, fences };
        let sent = match route {
            Route::Shared => self.send_shared(job).await,
            Route::Pinned => self.send_pinned(job).await,
        };
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
                if route == Route::Pinned {
                    // The client's connection state lives on that connection; it is gone.
                    self.closing = true;
                }
            }
        }
    }

    async fn send_shared(&mut self, job: Job) -> Result<(), Error> {
        let mut msg = Msg::Job(job);
        // The usual case: the client's connection has room, and nothing waits.
        if let Some(tx) = &self.shared {
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back) | mpsc::error::TrySendError::Closed(back)) => {
                    msg = back
                }
            }
        }
        for _ in 0..2 {
            let tx = match self.shared.clone().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx,
                None => match self.ctx.pool.sender(self.slot) {
                    Some(tx) => tx,
                    None => break,
                },
            };
            match tx.send(msg).await {
                Ok(()) => {
                    self.shared = Some(tx);
                    return Ok(());
                }
                // The connection ended before taking the job, so it never reached Redis
                // and one more attempt on the replacement is safe.
                Err(mpsc::error::SendError(back)) => {
                    self.shared = None;
                    msg = back;
                }
            }
        }
        // Never sent, so safe to retry: the same answer as an open breaker.
        Err(Error::redis_unavailable(format!("not connected to {}", self.ctx.config.upstream.url)))
    }

    async fn send_pinned(&mut self, job: Job) -> Result<(), Error> {
        let protocol = self.session.protocol;
        if self.pinned.as_ref().is_none_or(|(d, p)| *p != protocol || d.tx.is_closed()) {
            self.first_batch_sent();
            let dedicated = match self.ctx.spares.take(protocol) {
                Some(spare) => spare,
                None => Dedicated::open(&self.ctx.config.upstream, protocol)
                    .await
                    .map_err(|e| Error::new(Kind::CannotConnect, Side::Redis, e.to_string()))?,
            };
            self.set_pinned(Some((dedicated, protocol)));
        }
        let Some((dedicated, _)) = &self.pinned else { unreachable!("set above") };
        dedicated.tx.send(Msg::Job(job)).await.map_err(|_| Error::redis_lost())
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
            if let Some((_, p)) = &mut self.pinned {
                *p = self.session.protocol;
            }
            self.slot = self.ctx.pool.assign(self.session.protocol);
            self.shared = None;
        }
        self.queue.push_back(Pending::Ready(reply));
        Ok(())
    }
}
