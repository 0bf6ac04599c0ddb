//! Pass-through (pub/sub, client-side caching, CLIENT REPLY modes, MONITOR): the client's
//! requests go on a connection of its own while that state lasts, in lockstep
//! (`session::lockstep`): strata counts the replies each request owes, forwards Redis's
//! pushes as they come, and learns from Redis's replies when the state ended. Then, once
//! every reply is out, normal service resumes with the requests still unread. Requests go
//! on as sent, except those naming clients by strata id; replies go back as Redis sent
//! them, except the Redis ids of redirect targets in `CLIENT GETREDIR`/`TRACKINGINFO`.
//! RESET ends it too: strata answers it once every earlier reply is out (sent on, Redis
//! would log the connection in as `default`). Where replies are not counted for sure
//! (MONITOR's stream, after a CLIENT REPLY OFF or SKIP) the RESET goes to Redis, and its
//! `+RESET` ends pass-through if nothing was sent after it. This module enters and leaves
//! pass-through; `requests` and `replies` are its two halves.

mod replies;
mod requests;

use crate::error::{Error, Kind, Side};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use self::replies::forward_replies;
use self::requests::Requests;
use super::Handler;
use crate::resp::{Frame, Limits, Reply, RequestParser};
use crate::server::action::Route;
use crate::server::registry::{ClientHandle, Registry};
use crate::session::lockstep::Lockstep;

/// How a pass-through stretch ended.
enum Ended {
    /// The connection is over (either side closed, kill, shutdown).
    Closed,
    /// Redis's replies showed the connection back in a plain state.
    Resumed,
    /// The client's RESET ended it; every reply before it is out, and with `answer`
    /// strata answers the RESET (Redis never saw it).
    Reset { answer: bool },
}

/// Why the requests half stopped sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// After a request that may end the state: judge once its replies are in.
    Judge,
    /// The client's RESET, held: strata answers it once every earlier reply is out.
    Reset { answer: bool },
    /// As many replies owed as the pipeline depth allows: wait for some.
    Full,
}

/// What the replies half tells the paused requests half.
enum Order {
    Go,
    /// Counting stopped while a RESET was held: send it to Redis after all.
    SendReset,
}

/// What the two halves of one pass-through connection share. They run in one task, so
/// the locks are never contended; nothing is held across an await.
struct Shared<'a> {
    lockstep: Mutex<Lockstep>,
    paused: Mutex<Option<Pause>>,
    /// The requests half paused.
    pause: Notify,
    /// The replies half gave an order.
    order: Mutex<Option<Order>>,
    ordered: Notify,
    /// `limits.max_pipeline_depth`: the most replies owed at once.
    depth: usize,
    /// A RESET went to Redis: how many requests were sent after it. Its `+RESET` ends
    /// pass-through only while none was (their replies would follow it).
    after_reset: Mutex<Option<usize>>,
    registry: &'a Registry,
}

impl Shared<'_> {
    fn lockstep(&self) -> MutexGuard<'_, Lockstep> {
        self.lockstep.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn paused(&self) -> MutexGuard<'_, Option<Pause>> {
        self.paused.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the requests half until the replies half gives an order.
    async fn pause(&self, why: Pause) -> Order {
        *self.paused() = Some(why);
        self.pause.notify_one();
        loop {
            self.ordered.notified().await;
            if let Some(order) = self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                return order;
            }
        }
    }

    /// A RESET goes to Redis now.
    fn reset_sent(&self) {
        *self.after_reset.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(0);
    }

    /// A request goes to Redis now (counted after a RESET that went before it).
    fn sent_after_reset(&self) {
        if let Some(n) = self.after_reset.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut() {
            *n += 1;
        }
    }

    /// Whether a `+RESET` from Redis now is the reply to a RESET with nothing after it.
    fn ends_at_reset(&self) -> bool {
        *self.after_reset.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) == Some(0)
    }

    fn give(&self, order: Order) {
        *self.paused() = None;
        *self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(order);
        self.ordered.notify_one();
    }
}

/// What strata knew of the client when pass-through began.
struct Before {
    /// The client had a connection of its own (SELECT, WATCH, AUTH, READONLY): its state
    /// lives there, so normal service never resumes without it.
    own_connection: bool,
    /// The client's registry entry: a redirect target keeps its connection (closing it
    /// would break the other client's tracking, which Redis keeps through UNSUBSCRIBE).
    handle: Arc<ClientHandle>,
}

impl Handler {
    /// Serves the client in pass-through until the state that needed it ends (`true`:
    /// normal service resumes) or the connection does (`false`). `first` replaces the
    /// request that started it when strata rewrote or re-encoded that request.
    pub(super) async fn pass_through(&mut self, first: Option<Bytes>) -> std::io::Result<bool> {
        let mut view = super::View::of(&self.session, &self.last_cmd.name);
        view.subscribed = matches!(self.last_cmd.name.as_str(), "subscribe" | "psubscribe" | "ssubscribe");
        view.monitor = self.last_cmd.name == "monitor";
        self.registration.handle.publish(view);
        let kill = self.registration.handle.kill.clone();
        // A kill must not wait for the replies the drain waits for (a blocking command).
        let entered = tokio::select! {
            biased;
            () = kill.cancelled() => return Ok(false),
            entered = self.enter() => entered?,
        };
        let Some((mut upstream, leftover)) = entered else { return Ok(false) };
        let mut lockstep = Lockstep::new(self.session.protocol, self.session.in_multi);
        if !leftover.is_empty() {
            // Bytes nothing owed: strata cannot count from here.
            lockstep.stop_counting();
            self.stream.write_all(&leftover).await?;
        }
        // Sent as `first` (rewritten or inline) the request is not cut again below, so
        // what it does is noted here.
        let first_sent = first.is_some();
        if let Some(first) = first {
            self.see_first(&first, &mut lockstep);
            upstream.write_all(&first).await?;
        }
        let before =
            Before { own_connection: self.session.needs_pinned(), handle: self.registration.handle.clone() };
        // Only now can other clients name it in REDIRECT: its connection is Redis' alone.
        self.registration.handle.enter_pass_through();
        match self.join(&mut upstream, lockstep, &before, first_sent).await? {
            Ended::Closed => Ok(false),
            Ended::Resumed => {
                // The connection goes: it holds nothing the client still needs.
                drop(upstream);
                self.back_to_shared();
                Ok(true)
            }
            Ended::Reset { answer } => {
                // The connection goes, and with it whatever RESET would have cleared there.
                drop(upstream);
                self.session.reset();
                self.back_to_shared();
                if answer {
                    self.local(Reply::Status("RESET"));
                }
                Ok(true)
            }
        }
    }

    /// Waits for the client's earlier replies and takes a connection for it. `None`: the
    /// client was told why it cannot go on, and its connection closed.
    async fn enter(&mut self) -> std::io::Result<Option<(TcpStream, BytesMut)>> {
        self.drain().await?;
        let Some(taken) = self.take_raw_upstream().await else {
            let error = Error::new(Kind::CannotConnect, Side::Redis, "cannot open a connection");
            self.stream.write_all(&error.reply().to_bytes(self.session.protocol)).await?;
            self.stream.shutdown().await?;
            return Ok(None);
        };
        Ok(Some(taken))
    }

    /// Notes what the request that started pass-through, sent as `first`, owes and does.
    fn see_first(&self, first: &[u8], lockstep: &mut Lockstep) {
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        let mut ranges = Vec::new();
        let Ok(Some(Frame::Multibulk { .. })) = parser.next(first, &mut ranges) else {
            lockstep.stop_counting();
            return;
        };
        let argv: smallvec::SmallVec<[&[u8]; 8]> = ranges.iter().map(|r| &first[r.clone()]).collect();
        let server = self.ctx.server.load();
        let kind = server.commands.lookup(&argv).map(|info| info.kind).unwrap_or_default();
        requests::note_redirect(&self.ctx.registry, &argv, lockstep, true);
        lockstep.send(kind, &argv);
    }

    /// Runs both halves until one of them closes, Redis's replies show the state over, or
    /// RESET ends it.
    async fn join(
        &mut self,
        upstream: &mut TcpStream,
        lockstep: Lockstep,
        before: &Before,
        first_sent: bool,
    ) -> std::io::Result<Ended> {
        let shutdown = self.ctx.shutdown.clone();
        let kill = self.registration.handle.kill.clone();
        let server = self.ctx.server.load_full();
        let Handler { stream, rbuf, parser, ranges, ctx, .. } = self;
        let shared = Shared {
            lockstep: Mutex::new(lockstep),
            paused: Mutex::new(None),
            pause: Notify::new(),
            order: Mutex::new(None),
            ordered: Notify::new(),
            depth: ctx.config.limits.max_pipeline_depth,
            after_reset: Mutex::new(None),
            registry: &ctx.registry,
        };
        let (mut from_client, mut to_client) = stream.split();
        let (mut from_redis, mut to_redis) = upstream.split();
        // Redis decides when this ends: a client that stops sending still gets every
        // reply (Redis closes once it has read our shutdown), and once Redis closes the
        // client is closed too, whether or not it would ever have noticed.
        let requests = async {
            let limit = ctx.config.limits.max_client_buffer;
            Requests {
                rbuf,
                parser,
                ranges,
                server: &server,
                limit,
                shared: &shared,
                after_first: !first_sent,
            }
            .forward(&mut from_client, &mut to_redis, first_sent)
            .await?;
            to_redis.shutdown().await?;
            std::future::pending().await
        };
        let replies = forward_replies(&mut from_redis, &mut to_client, &shared, before);
        tokio::select! {
            ended = replies => ended,
            ended = requests => ended,
            () = shutdown.cancelled() => Ok(Ended::Closed),
            () = kill.cancelled() => Ok(Ended::Closed),
        }
    }

    /// Back to normal service on the shared connections, the pass-through connection gone.
    fn back_to_shared(&mut self) {
        self.registration.handle.set_upstream_id(-1);
        self.registration.handle.drop_pass_through();
        self.last_route = Route::Shared;
        if self.routes.shared.slot.protocol != self.session.protocol {
            self.reassign();
        }
        self.publish();
    }

    /// The client's pinned socket, or a fresh one; its Redis id goes to the registry so
    /// CLIENT TRACKING REDIRECT and CLIENT UNBLOCK can name this client.
    async fn take_raw_upstream(&mut self) -> Option<(TcpStream, BytesMut)> {
        if let Some(dedicated) = self.routes.own.take() {
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
