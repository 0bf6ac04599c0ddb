//! Pass-through mode (pub/sub, MONITOR, CLIENT TRACKING/REPLY): the client's socket is
//! joined to an upstream socket of its own while that state lasts. Replies and pushes go
//! back as Redis sent them; requests go on as sent, except those naming clients by strata
//! id. After the request that started it, and after one that may end the state
//! (UNSUBSCRIBE…, CLIENT TRACKING off, CLIENT REPLY ON), strata holds the client's next
//! requests and asks Redis what state the
//! connection is in (`check`); if it is back to what strata would give the client, normal
//! service resumes, and the held requests are served as usual. RESET ends it too: strata
//! answers it once a marker shows every earlier reply out, or, where no marker can go,
//! lets Redis answer it and ends at Redis' `+RESET` (unless a CLIENT REPLY SKIP would
//! swallow that; then pass-through goes on).

mod check;

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use self::check::{Entry, Expect, Follow, Probe, ProbeKind, Seen, is_push, is_subscribed_pong};
use super::{Handler, READ_CHUNK};
use crate::resp::reply::Protocol;
use crate::resp::{Frame, FrameScanner, Limits, Reply, RequestParser};
use crate::server::local::upstream_ids;
use crate::server::registry::{ClientHandle, Registry};
use crate::server::route::Route;
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
            self.refuse_and_close("upstream unavailable: cannot open a connection").await?;
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
            let why =
                "upstream connection out of step: strata's check of it got no reply in time, or another's";
            self.refuse_and_close(why).await?;
            return Ok(None);
        }
        Ok(Some((upstream, leftover, entry)))
    }

    async fn refuse_and_close(&mut self, why: &str) -> std::io::Result<()> {
        self.stream.write_all(&Reply::err(why).to_bytes(self.session.protocol)).await?;
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
        let server = self.ctx.server.load();
        let kind = server.commands.lookup(&argv).map(|info| info.kind).unwrap_or_default();
        probing.follow().see(kind, &argv);
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

/// The client-to-Redis half of pass-through. Requests are cut with the client's own
/// parser, starting with those already read, and sent on as they came, except that
/// strata ids become Redis' (`local::upstream_ids`). After one that may end the state,
/// a probe follows it and the next requests wait for its verdict. Bytes that are not
/// RESP, or a request still incomplete past `limit` bytes, end the cutting: from there on
/// bytes are copied as they come and Redis judges them, so a client's stream is never
/// held or lost.
struct Requests<'a> {
    rbuf: &'a mut BytesMut,
    parser: &'a mut RequestParser,
    ranges: &'a mut Vec<Range<usize>>,
    registry: &'a Registry,
    server: &'a ServerInfo,
    /// `limits.max_client_buffer`: the most one incomplete request may hold here.
    limit: usize,
    probing: &'a Probing,
    /// The request that started pass-through is still in the buffer: a check follows it.
    after_trigger: bool,
}

/// Where cutting requests stopped.
enum Cut {
    /// The buffer ends inside a request: read more.
    More,
    /// The last request may have ended the state: probe before going on.
    Probe,
    /// The client sent RESET: a flush before strata answers it (Redis does not get it),
    /// or it went to Redis, whose `+RESET` ends pass-through.
    Reset(ProbeKind),
    /// Not RESP, or too large: copy the rest as it comes.
    Raw,
}

impl Requests<'_> {
    /// `probe_first`: the request that started pass-through may already have ended it.
    async fn forward<R, W>(mut self, from: &mut R, to: &mut W, probe_first: bool) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let probe_first = probe_first && self.probing.follow().can_probe();
        let mut start = probe_first.then_some((BytesMut::new(), Cut::Probe));
        loop {
            let (ready, cut) = start.take().unwrap_or_else(|| self.take_ready());
            let kind = match cut {
                Cut::Probe => Some(ProbeKind::Check),
                Cut::Reset(kind) => Some(kind),
                Cut::More | Cut::Raw => None,
            };
            let markers = kind.map(|kind| {
                let probe = Probe::new(kind);
                let markers = probe.requests();
                // Armed before anything it waits for can be answered (`ready` may hold the
                // RESET): both halves run in this one task.
                *self.probing.armed() = Some(probe);
                markers
            });
            if !ready.is_empty() {
                to.write_all(&ready).await?;
            }
            match (cut, markers) {
                (Cut::Raw, _) => {
                    tokio::io::copy(from, to).await?;
                    return Ok(());
                }
                (_, Some(markers)) => {
                    to.write_all(&markers).await?;
                    while let Order::Send(rest) = self.probing.next_order().await {
                        to.write_all(&rest).await?;
                    }
                    continue;
                }
                (_, None) => {}
            }
            self.rbuf.reserve(READ_CHUNK);
            if from.read_buf(self.rbuf).await? == 0 {
                // An unfinished request: Redis gets what the client sent, as it would directly.
                return to.write_all(&std::mem::take(self.rbuf)).await;
            }
        }
    }

    /// Takes complete requests off the buffer, as the bytes Redis is to get, up to one
    /// that may end the state.
    fn take_ready(&mut self) -> (BytesMut, Cut) {
        let mut ready = BytesMut::new();
        loop {
            let frame = match self.parser.next(self.rbuf, self.ranges) {
                Ok(Some(frame)) => frame,
                Ok(None) if self.rbuf.len() <= self.limit => return (ready, Cut::More),
                Ok(None) | Err(_) => {
                    ready.extend_from_slice(&std::mem::take(self.rbuf));
                    return (ready, Cut::Raw);
                }
            };
            let trigger = !matches!(frame, Frame::Empty { .. }) && std::mem::take(&mut self.after_trigger);
            let (len, translated, seen) = match frame {
                Frame::Empty { len } => (len, None, Seen::Nothing),
                Frame::Multibulk { len } => {
                    let (translated, seen) = self.look_at(&self.rbuf[..len]);
                    (len, translated, seen)
                }
                Frame::Inline { consumed, encoded } => {
                    let (translated, seen) = self.look_at(&encoded);
                    (consumed, translated, seen)
                }
            };
            match (seen, translated) {
                (Seen::Reset(kind @ ProbeKind::Flush { .. }), _) => {
                    self.rbuf.advance(len);
                    return (ready, Cut::Reset(kind));
                }
                (_, Some(request)) => ready.extend_from_slice(&request),
                (_, None) => ready.extend_from_slice(&self.rbuf[..len]),
            }
            self.rbuf.advance(len);
            if let Seen::Reset(kind) = seen {
                return (ready, Cut::Reset(kind));
            }
            if (seen == Seen::MayEnd || trigger) && self.probing.follow().can_probe() {
                return (ready, Cut::Probe);
            }
        }
    }

    /// The request in `source` (which `ranges` index): with Redis' ids if it names
    /// strata's, and what it may do to the state.
    fn look_at(&self, source: &[u8]) -> (Option<Bytes>, Seen) {
        let argv: smallvec::SmallVec<[&[u8]; 8]> = self.ranges.iter().map(|r| &source[r.clone()]).collect();
        let kind = self.server.commands.lookup(&argv).map(|info| info.kind).unwrap_or_default();
        let seen = self.probing.follow().see(kind, &argv);
        (upstream_ids(self.registry, &argv), seen)
    }
}

/// Where the replies are in a probe.
enum Stage {
    /// No probe: everything goes to the client.
    Idle,
    /// Before the first marker's reply: the client's replies still come.
    Before(Probe),
    /// Between the markers: pushes go to the client; the one reply is `CLIENT INFO`'s.
    Between(Probe, Option<Bytes>),
}

/// What to do with one frame from Redis.
enum Step {
    /// Write it to the client.
    Forward,
    /// A probe's reply: not for the client.
    Drop,
    /// Pass-through ends here: what came before goes to the client, and this frame too
    /// `with_frame` (Redis' `+RESET`, or an error Redis gives every command).
    End { ended: Ended, with_frame: bool },
}

impl Stage {
    /// The stage after `frame`, and what to do with it. `nothing_after`: no byte follows
    /// `frame` yet, which a resume needs (Redis had no more requests to answer).
    fn step(self, frame: &[u8], nothing_after: bool, probing: &Probing, before: &Before) -> (Stage, Step) {
        if !matches!(self, Stage::Idle) && refuses_any_command(frame) {
            // Redis rejects every command now, the markers too, so their replies will
            // never come: out of step for good. The client gets this error and EOF.
            return (Stage::Idle, Step::End { ended: Ended::Closed, with_frame: true });
        }
        match self {
            Stage::Idle => (Stage::Idle, Step::Forward),
            Stage::Before(probe) if probe.kind != ProbeKind::Check && probe.is_after(frame) => {
                // A flush's marker is strata's; Redis' `+RESET` is the client's reply.
                let (answer, with_frame) = match probe.kind {
                    ProbeKind::Flush { reply } => (reply, false),
                    _ => (false, true),
                };
                (Stage::Idle, Step::End { ended: Ended::Reset { answer }, with_frame })
            }
            // The marker meant to take a skip was answered: there was no skip in effect.
            Stage::Before(mut probe) if probe.kind != ProbeKind::Check && probe.is_before(frame) => {
                probe.kind = ProbeKind::Flush { reply: true };
                (Stage::Before(probe), Step::Drop)
            }
            // A subscribed RESP2 connection: still in pub/sub, nothing more to ask.
            Stage::Before(probe)
                if probe.kind == ProbeKind::Check && is_subscribed_pong(frame) && probe.is_before(frame) =>
            {
                probing.order(Order::Stay);
                (Stage::Idle, Step::Drop)
            }
            Stage::Before(probe) if probe.is_before(frame) => {
                probing.order(Order::Send(probe.rest()));
                (Stage::Between(probe, None), Step::Drop)
            }
            Stage::Before(probe) => (Stage::Before(probe), Step::Forward),
            Stage::Between(probe, info) if probe.is_after(frame) => {
                let expect = before.expect(&probing.follow());
                let plain = info.zip(expect).is_some_and(|(info, expect)| expect.judge(&info));
                if plain && nothing_after && before.handle.leave_pass_through() {
                    return (Stage::Idle, Step::End { ended: Ended::Resumed, with_frame: false });
                }
                probing.order(Order::Stay);
                (Stage::Idle, Step::Drop)
            }
            // The one reply between the markers is CLIENT INFO's.
            Stage::Between(probe, None) if !is_push(frame) => {
                (Stage::Between(probe, Some(Bytes::copy_from_slice(frame))), Step::Drop)
            }
            Stage::Between(probe, info) => (Stage::Between(probe, info), Step::Forward),
        }
    }
}

/// The Redis-to-client half: frames go back as Redis sent them, except the replies to a
/// probe, which end pass-through (`Ended::Resumed`, `Ended::Reset`) or let the requests go
/// on (see `Stage::step`).
async fn forward_replies<R, W>(
    from: &mut R,
    to: &mut W,
    probing: &Probing,
    before: &Before,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Holds at most one incomplete reply frame plus one read: a frame goes out as soon as
    // it is whole. Its size is Redis' to bound (client-output-buffer-limit).
    let mut buf = BytesMut::new();
    let mut scanner = FrameScanner::reply();
    let mut stage = Stage::Idle;
    loop {
        buf.reserve(READ_CHUNK);
        if from.read_buf(&mut buf).await? == 0 {
            to.shutdown().await?;
            return Ok(Ended::Closed);
        }
        // Frames before `sent` are the client's, not yet written.
        let mut sent = 0;
        loop {
            let len = match scanner.scan(&buf[sent..], &Limits::UNBOUNDED) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(_) => {
                    // Never from Redis; if it happens, stop looking and copy.
                    to.write_all(&buf).await?;
                    tokio::io::copy(from, to).await?;
                    to.shutdown().await?;
                    return Ok(Ended::Closed);
                }
            };
            if matches!(stage, Stage::Idle)
                && let Some(probe) = probing.armed().take()
            {
                stage = Stage::Before(probe);
            }
            let frame = &buf[sent..sent + len];
            let nothing_after = buf.len() == sent + len;
            let (next, step) =
                std::mem::replace(&mut stage, Stage::Idle).step(frame, nothing_after, probing, before);
            stage = next;
            match step {
                Step::Forward => sent += len,
                Step::Drop => {
                    to.write_all(&buf.split_to(sent)).await?;
                    buf.advance(len);
                    sent = 0;
                }
                Step::End { ended, with_frame } => {
                    to.write_all(&buf.split_to(if with_frame { sent + len } else { sent })).await?;
                    if matches!(ended, Ended::Closed) {
                        to.shutdown().await?;
                    }
                    return Ok(ended);
                }
            }
        }
        if sent > 0 {
            to.write_all(&buf.split_to(sent)).await?;
        }
        // One huge reply must not keep its buffer for the rest of the session.
        if buf.is_empty() && buf.capacity() > SHRINK_OVER {
            buf = BytesMut::new();
        }
    }
}

/// An error Redis gives any command in its state, whatever it is: a long script
/// (`BUSY`), loading a dataset (`LOADING`), a replica cut off from its master
/// (`MASTERDOWN`).
fn refuses_any_command(frame: &[u8]) -> bool {
    [&b"-BUSY "[..], b"-LOADING ", b"-MASTERDOWN "].iter().any(|prefix| frame.starts_with(prefix))
}

/// Reply buffer capacity past which an emptied buffer is given back.
const SHRINK_OVER: usize = 1024 * 1024;
