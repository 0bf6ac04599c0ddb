//! Pass-through mode (pub/sub, MONITOR, CLIENT TRACKING/REPLY): the client's socket is
//! joined to an upstream socket of its own while that state lasts. Replies and pushes go
//! back as Redis sent them; requests go on as sent, except those naming clients by strata
//! id. After the request that started it, and after one that may end the state
//! (UNSUBSCRIBE…, CLIENT TRACKING off, CLIENT REPLY ON), strata holds the client's next
//! requests and asks Redis what state the connection is in (`check`); if it is back to
//! what strata would give the client, normal service resumes, and the held requests are
//! served as usual. RESET ends it too: strata answers it once a marker shows every
//! earlier reply out, or, where no marker can go, lets Redis answer it and ends at
//! Redis' `+RESET` (unless a CLIENT REPLY SKIP would swallow that; then pass-through goes
//! on). This module enters and leaves pass-through; `requests` and `replies` are its two
//! halves.

mod check;
mod replies;
mod requests;

use crate::error::{Error, Kind, Side};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use self::check::{Entry, Expect, Follow, Probe, ProbeKind, Seen};
use self::replies::forward_replies;
use self::requests::Requests;
use super::Handler;
use crate::resp::reply::Protocol;
use crate::resp::{Frame, Limits, Reply, RequestParser};
use crate::server::action::Route;
use crate::server::registry::ClientHandle;
use crate::upstream::ServerInfo;

/// How a pass-through stretch ended.
enum Ended {
    /// The connection is over (either side closed, kill, shutdown).
    Closed,
    /// Redis showed the connection back in a plain state.
    Resumed,
    /// The client's RESET ended it; every reply before it is out, and with `answer`
    /// strata answers the RESET (Redis never saw it).
    Reset { answer: bool },
}

/// What the two directions of one pass-through connection share. They run in one task,
/// so the locks are never contended; nothing is held across an await.
#[derive(Default)]
struct Probing {
    /// What the requests sent so far did to the connection.
    follow: Mutex<Follow>,
    /// The probe sent after the last request that may have ended the state, until the
    /// replies reach it.
    armed: Mutex<Option<Probe>>,
    /// What the requests half is to do next in a probe (see `Order`).
    order: Mutex<Option<Order>>,
    /// An order was given.
    wake: Notify,
}

/// What the replies half tells the requests half during a probe.
enum Order {
    /// Send the rest of the check.
    Send(BytesMut),
    /// The state goes on: requests resume.
    Stay,
}

impl Probing {
    fn follow(&self) -> MutexGuard<'_, Follow> {
        self.follow.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes what the request `argv` does to the connection's state.
    fn see(&self, server: &ServerInfo, argv: &[&[u8]]) -> Seen {
        let kind = server.commands.lookup(argv).map(|info| info.kind).unwrap_or_default();
        self.follow().see(kind, argv)
    }

    fn armed(&self) -> MutexGuard<'_, Option<Probe>> {
        self.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives the requests half its next order. Orders never pile up: the second of a
    /// probe can only follow Redis' answer to what the first made the requests half send.
    fn order(&self, order: Order) {
        *self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(order);
        self.wake.notify_one();
    }

    /// Waits for the requests half's next order.
    async fn next_order(&self) -> Order {
        loop {
            self.wake.notified().await;
            if let Some(order) = self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                return order;
            }
        }
    }
}

/// What strata knew of the client when pass-through began: what a plain connection must
/// match for normal service to resume.
struct Before {
    protocol: Protocol,
    db: i64,
    user: String,
    /// The client had a connection of its own (SELECT, WATCH, AUTH, READONLY): its state
    /// lives there, so normal service never resumes without it.
    own_connection: bool,
    /// The client's registry entry: a redirect target keeps its connection (closing it
    /// would break the other client's tracking, which Redis keeps through UNSUBSCRIBE).
    handle: Arc<ClientHandle>,
}

impl Before {
    /// What the connection must show for normal service to resume; `None` when it never
    /// can: its state (SELECT, WATCH, READONLY, before or during pass-through) would go
    /// with it, and a connection kept as the client's own could be another client's
    /// redirect target, whose pushes a pinned connection cannot carry.
    fn expect(&self, follow: &Follow) -> Option<Expect<'_>> {
        let stays = self.own_connection || follow.sticky;
        (!stays).then_some(Expect { protocol: self.protocol, db: self.db, user: &self.user })
    }
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
        let Some((mut upstream, leftover, entry)) = entered else { return Ok(false) };
        let probing = Probing::default();
        {
            let mut follow = probing.follow();
            follow.in_multi = self.session.in_multi;
            follow.unprobeable = entry == Entry::Unprobeable;
        }
        self.stream.write_all(&leftover).await?;
        // The request that started pass-through is followed by a check too: Redis may
        // have refused it (a bare SUBSCRIBE, a bad REDIRECT), leaving nothing to stay for.
        // Sent as `first` (rewritten or inline) it is not cut again below, so what it does
        // is noted here.
        let probe_first = first.is_some();
        if let Some(first) = first {
            self.see_first(&first, &probing);
            upstream.write_all(&first).await?;
        }
        let before = Before {
            protocol: self.session.protocol,
            db: self.session.db,
            user: self.ctx.config.upstream.url.username.clone().unwrap_or_else(|| "default".into()),
            own_connection: self.session.needs_pinned(),
            handle: self.registration.handle.clone(),
        };
        // Only now can other clients name it in REDIRECT: its connection is Redis' alone.
        self.registration.handle.enter_pass_through();
        match self.join(&mut upstream, &probing, &before, probe_first).await? {
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

    /// Waits for the client's earlier replies, takes a connection for it and checks it.
    /// `None`: the client was told why it cannot go on, and its connection closed.
    async fn enter(&mut self) -> std::io::Result<Option<(TcpStream, BytesMut, Entry)>> {
        self.drain().await?;
        let Some((mut upstream, leftover)) = self.take_raw_upstream().await else {
            let error = Error::new(Kind::CannotConnect, Side::Redis, "cannot open a connection");
            self.refuse_and_close(error).await?;
            return Ok(None);
        };
        // Inside MULTI Redis would queue the check, and MONITOR is never probed: neither
        // connection is checked; nor one with replies already waiting (the check would
        // read them as its own).
        let checked = !self.session.in_multi
            && !matches!(self.last_cmd.name.as_str(), "monitor" | "sync" | "psync")
            && leftover.is_empty();
        let entry = if checked { self.check_entry(&mut upstream).await } else { Entry::Unprobeable };
        if entry == Entry::Lost {
            let why = "connection out of step: strata's check of it got no reply in time, or another's";
            self.refuse_and_close(Error::new(Kind::Failed, Side::Redis, why)).await?;
            return Ok(None);
        }
        Ok(Some((upstream, leftover, entry)))
    }

    async fn refuse_and_close(&mut self, why: Error) -> std::io::Result<()> {
        self.stream.write_all(&why.reply().to_bytes(self.session.protocol)).await?;
        self.stream.shutdown().await
    }

    /// Whether Redis answers a probe on this idle connection, for its user: with PING or
    /// CLIENT INFO refused (an ACL), a probe's replies could not be told from the client's.
    /// `Lost` when the replies were not the probe's or did not come within the connect
    /// timeout: they could still come, so the connection cannot be used.
    async fn check_entry(&self, upstream: &mut TcpStream) -> Entry {
        let probe = Probe::new(ProbeKind::Check);
        // Three short replies; the connect timeout bounds how long it can grow.
        let mut rbuf = BytesMut::new();
        let mut requests = probe.requests();
        requests.extend_from_slice(&probe.rest());
        let roundtrip = crate::upstream::roundtrip(upstream, &mut rbuf, &requests, 3);
        let limit = self.ctx.config.upstream.connect_timeout;
        match tokio::time::timeout(limit, roundtrip).await {
            Ok(Ok(replies)) if rbuf.is_empty() => probe.entry(&replies),
            _ => Entry::Lost,
        }
    }

    /// What the request that started pass-through, sent as `first`, does to its state.
    fn see_first(&self, first: &[u8], probing: &Probing) {
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        let mut ranges = Vec::new();
        let Ok(Some(Frame::Multibulk { .. })) = parser.next(first, &mut ranges) else { return };
        let argv: smallvec::SmallVec<[&[u8]; 8]> = ranges.iter().map(|r| &first[r.clone()]).collect();
        probing.see(&self.ctx.server.load(), &argv);
    }

    /// Joins the client's socket to `upstream` until one of them closes, a probe finds the
    /// state over, RESET ends it, or Redis refuses every command while a probe is out.
    async fn join(
        &mut self,
        upstream: &mut TcpStream,
        probing: &Probing,
        before: &Before,
        probe_first: bool,
    ) -> std::io::Result<Ended> {
        let shutdown = self.ctx.shutdown.clone();
        let kill = self.registration.handle.kill.clone();
        let server = self.ctx.server.load_full();
        let Handler { stream, rbuf, parser, ranges, ctx, .. } = self;
        let (mut from_client, mut to_client) = stream.split();
        let (mut from_redis, mut to_redis) = upstream.split();
        // Redis decides when this ends: a client that stops sending still gets every
        // reply (Redis closes once it has read our shutdown), and once Redis closes the
        // client is closed too, whether or not it would ever have noticed.
        let requests = async {
            let limit = ctx.config.limits.max_client_buffer;
            let after_trigger = !probe_first;
            Requests {
                rbuf,
                parser,
                ranges,
                registry: &ctx.registry,
                server: &server,
                limit,
                probing,
                after_trigger,
            }
            .forward(&mut from_client, &mut to_redis, probe_first)
            .await?;
            to_redis.shutdown().await?;
            std::future::pending().await
        };
        let replies = forward_replies(&mut from_redis, &mut to_client, probing, before);
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
        if self.slot.protocol != self.session.protocol {
            self.reassign();
        }
        self.publish();
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
