//! One client connection: read requests, route them, write replies strictly in order.
//!
//! Requests are answered through a queue of pending replies, one entry per request or per
//! run of consecutive shared-route requests (sent to Redis as one slice of the read
//! buffer). A route change waits for every earlier reply first, so Redis executes the
//! client's commands in the order sent even when they use two connections.

mod fence;
mod passthrough;
mod read;
mod send;
mod state;
mod write;

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::Context;
use super::action::{Action, Route, RouteContext};
use super::memory::Share;
use super::pending::{Keys, Pending, Run, defer, env, keep_spare, keep_spare_keys, resolve_front};
use super::registry::{Peer, Registration, View};
use super::route::decide;
use super::woken::Woken;
use crate::command::cmd_flag;
use crate::pipeline::{self, Note, Prepared, Through};
use crate::resp::reply::Protocol;
use crate::resp::{Frame, Limits, ProtocolError, RequestParser};
use crate::session::Session;
use crate::upstream::fence::{Access, Held, Stripes, Ticket, stripes_of};
use crate::upstream::{Dedicated, Job, Msg, ServerInfo, SlotId};

pub(crate) use read::peek;
use read::{READ_CHUNK, next_read_chunk};
use state::LastCommand;

/// Replies larger than this are written straight from their buffer instead of being
/// copied into the batch buffer.
const COPY_LIMIT: usize = 64 * 1024;

/// How processing the read buffer ended.
enum Flow {
    Continue,
    PassThrough(Option<Bytes>),
}

/// The state of one client connection.
pub struct Handler {
    ctx: Arc<Context>,
    stream: TcpStream,
    session: Session,
    rbuf: BytesMut,
    wbuf: BytesMut,
    parser: RequestParser,
    ranges: Vec<Range<usize>>,
    queue: VecDeque<Pending>,
    slot: SlotId,
    shared: Option<mpsc::Sender<Msg>>,
    pinned: Option<(Dedicated, Protocol)>,
    last_route: Route,
    /// No more requests are read; the connection closes once the queue is written.
    closing: bool,
    /// `process` stopped at the pipeline depth with requests possibly left in the read
    /// buffer: they must be processed as soon as replies drain, not when the client next
    /// sends (it may be waiting for these very replies).
    parked: bool,
    /// The read buffer was sized for a large value; given back once that is consumed.
    large: bool,
    /// Current read buffer growth step, between READ_CHUNK and MAX_READ_CHUNK.
    read_chunk: usize,
    /// When the requests being processed were read (one clock read per batch).
    batch_start: Instant,
    /// An emptied notes vector for the next run (see `pending::keep_spare`).
    spare_notes: Vec<Note>,
    /// The key buffer of the last run (see `pending::keep_spare_keys`).
    spare_keys: BytesMut,
    /// The last command's name, for `CLIENT LIST`.
    last_cmd: LastCommand,
    /// Key stripes of the request being routed, if it goes on a shared connection.
    stripes: Stripes,
    /// Whether that request only reads its keys as sent (reads may share a key's stripe).
    access: Access,
    /// The client's place in the fences' waiting room while it waits for a stripe; kept
    /// until the requests read with the waiting one are sent (see `fence`).
    waiting: Option<Ticket>,
    /// Stripes taken for shared-route requests not yet sent; they go with the next job.
    held: Held,
    registration: Registration,
    /// This client's part of `limits.max_clients_memory`.
    memory: Share,
    /// Told once the requests sent before the client was accepted are on their way (or
    /// before anything waits), so the listener accepts the next client after them.
    started: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Handler {
    /// A handler for a freshly accepted client.
    pub fn new(ctx: Arc<Context>, stream: TcpStream, id: u64) -> Handler {
        let limits = Limits {
            max_bulk: ctx.config.limits.max_bulk_len,
            max_multibulk: ctx.config.limits.max_multibulk_len,
        };
        let slot = ctx.pool.assign(Protocol::Resp2);
        let session = Session::on_db(id, ctx.config.upstream.url.db);
        let peer = Peer {
            addr: stream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            laddr: stream.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            fd: stream.as_raw_fd() as i64,
        };
        let registration = ctx.registry.register(&session, peer);
        let memory = Share::new(ctx.client_memory.clone(), registration.handle.clone());
        Handler {
            ctx,
            stream,
            session,
            // Empty until the client sends: a connect costs no buffer (connection storms,
            // idle pools), as in Redis. The first read takes 64 bytes, then it grows.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            parser: RequestParser::new(limits),
            ranges: Vec::new(),
            queue: VecDeque::new(),
            slot,
            shared: None,
            pinned: None,
            last_route: Route::Shared,
            closing: false,
            parked: false,
            large: false,
            read_chunk: READ_CHUNK,
            batch_start: Instant::now(),
            spare_notes: Vec::new(),
            spare_keys: BytesMut::new(),
            last_cmd: LastCommand::default(),
            stripes: Stripes::new(),
            access: Access::Write,
            waiting: None,
            held: Held::default(),
            registration,
            memory,
            started: None,
        }
    }

    /// Serves the client until it disconnects, misbehaves or strata shuts down. `started`
    /// is told once the requests the client sent before it was accepted are on their way.
    pub async fn run(mut self, started: tokio::sync::oneshot::Sender<()>) -> std::io::Result<()> {
        self.started = Some(started);
        if !self.read_what_came_first()? {
            return Ok(());
        }
        if self.rbuf.is_empty() {
            self.first_batch_sent();
        }
        let idle = self.ctx.config.server.idle_timeout;
        let mut idle_deadline = idle.map(|d| Instant::now() + d);
        let mut owed = false;
        // Built once: a fresh `cancelled()` per loop would register and drop a waiter on
        // every batch of requests. `Woken` spares the tokens' locks on turns when neither fired.
        let mut kill = Woken::new(self.registration.handle.kill.clone().cancelled_owned());
        let mut shutdown = Woken::new(self.ctx.shutdown.clone().cancelled_owned());
        loop {
            let flow = self.process().await?;
            self.first_batch_sent();
            if let Flow::PassThrough(rewritten) = flow {
                if self.pass_through(rewritten).await? {
                    // Idle time counts from normal service again, not from before.
                    idle_deadline = idle.map(|d| Instant::now() + d);
                    continue;
                }
                return Ok(());
            }
            self.write_ready().await?;
            if self.closing && self.queue.is_empty() {
                return self.stream.shutdown().await;
            }
            let depth = self.ctx.config.limits.max_pipeline_depth;
            let can_read = !self.closing && self.queue.len() < depth;
            if self.parked && can_read {
                // Back-pressure paused these requests; replies have drained, so go on
                // with them now: no read event will come for bytes already read.
                continue;
            }
            // Time spent waiting for a reply (BLPOP, WAIT, a slow script) is not idle
            // time, as in Redis: the idle clock starts again once every reply is out.
            if !self.queue.is_empty() {
                owed = true;
            } else if std::mem::take(&mut owed) {
                idle_deadline = idle.map(|d| Instant::now() + d);
            }
            self.size_read_buffer();
            self.memory.set(self.rbuf.capacity(), &self.ctx.registry);
            let Handler { stream, rbuf, queue, ctx, closing, read_chunk, spare_notes, .. } = &mut self;
            let room = rbuf.capacity() - rbuf.len();
            // select! builds every branch's future each turn, so the idle timer is an async
            // block: nothing (no clock read, no timer) unless it is actually polled.
            let idle_timer = async {
                match idle_deadline {
                    Some(deadline) => sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut kill => return Ok(()),
                // Once fired, `closing` keeps this branch off: a finished future is not polled again.
                () = &mut shutdown, if can_read => *closing = true,
                () = resolve_front(queue, ctx, spare_notes), if !queue.is_empty() => {}
                read = stream.read_buf(rbuf), if can_read => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    *read_chunk = next_read_chunk(*read_chunk, read, room);
                    if let Some(idle) = idle {
                        idle_deadline = Some(Instant::now() + idle);
                    }
                }
                () = idle_timer, if idle_deadline.is_some() && queue.is_empty() => {
                    return Ok(());
                }
            }
        }
    }

    /// Lets the listener accept the next client (see `started`).
    pub(super) fn first_batch_sent(&mut self) {
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
    }

    /// Routes every complete request in the read buffer, batching shared-route runs.
    async fn process(&mut self) -> std::io::Result<Flow> {
        let depth = self.ctx.config.limits.max_pipeline_depth;
        let server = self.ctx.server.load_full();
        let mut run = Run {
            notes: std::mem::take(&mut self.spare_notes),
            keys: std::mem::take(&mut self.spare_keys),
            ..Run::default()
        };
        // One clock read per batch of requests: latency is accounted per batch anyway.
        let batch_start = Instant::now();
        self.batch_start = batch_start;
        self.parked = false;
        while !self.closing {
            if self.queue.len() + run.frames >= depth {
                self.parked = true;
                break;
            }
            let parsed = self.parser.next(&self.rbuf[run.len..], &mut self.ranges);
            let frame = match parsed {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.flush_run(&mut run).await;
                    self.protocol_error(e);
                    break;
                }
            };
            let (len, encoded) = match frame {
                Frame::Empty { len } => {
                    run.len += len;
                    continue;
                }
                Frame::Multibulk { len } => (len, None),
                Frame::Inline { consumed, encoded } => (consumed, Some(encoded)),
            };
            let Some(routed) = self.step(&server, &mut run, len, encoded.as_ref(), batch_start) else {
                continue;
            };
            let (action, prepared) = *routed;
            let flow = self.dispatch(&mut run, len, encoded, action, prepared).await?;
            // Every request that may change what CLIENT LIST shows takes this path.
            self.publish();
            if let Some(flow) = flow {
                return Ok(flow);
            }
        }
        self.registration.handle.touch(batch_start);
        if self.last_cmd.changed {
            self.last_cmd.changed = false;
            self.registration.handle.publish_cmd(&self.last_cmd.name);
        }
        if !self.try_flush_run(&mut run) {
            self.flush_run(&mut run).await;
        }
        // Every request read with the one that waited is sent (or parked): later readers
        // may go now.
        self.waiting = None;
        keep_spare(&mut self.spare_notes, std::mem::take(&mut run.notes));
        keep_spare_keys(&mut self.spare_keys, std::mem::take(&mut run.keys));
        if self.rbuf.len() >= self.ctx.config.limits.max_client_buffer && !self.closing {
            self.protocol_error(ProtocolError::TooLong {
                what: "query buffer",
                len: self.rbuf.len() as u64,
                limit: self.ctx.config.limits.max_client_buffer as u64,
            });
        }
        Ok(Flow::Continue)
    }

    /// Decides one request's route and prepares it (tiers, read-through, accounting). The
    /// request is `rbuf[offset..offset + len]`, or `encoded` for an inline command.
    #[inline(always)]
    fn route_one(
        &mut self,
        server: &ServerInfo,
        offset: usize,
        len: usize,
        encoded: Option<&Bytes>,
        batch_start: Instant,
    ) -> (Action, Prepared) {
        let Handler { ctx, session, rbuf, ranges, last_cmd, stripes, .. } = self;
        let source: &[u8] = encoded.map_or(&rbuf[offset..offset + len], |e| &e[..]);
        // On the stack for the usual few arguments: this runs for every request.
        // Built in place: `collect` would build it elsewhere and copy all 136 bytes.
        let mut argv: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
        argv.extend(ranges.iter().map(|r| &source[r.clone()]));
        let command = server.commands.lookup(&argv).map(|i| &**i);
        last_cmd.saw(command);
        let route_ctx = RouteContext {
            info: command,
            commands: &server.commands,
            version: &server.version,
            upstream: &ctx.config.upstream.url,
            registry: &ctx.registry,
            tiers: &ctx.tiers,
        };
        let action = decide(session, &route_ctx, &argv);
        stripes.clear();
        if matches!(action, Action::Forward(Route::Shared) | Action::ForwardBytes(Route::Shared, _)) {
            stripes_of(command, &argv, stripes);
        }
        let prepared = match action {
            Action::Forward(route) => {
                let info = || ctx.info_extra();
                let mut env = env(ctx, &server.commands, &info, batch_start);
                env.upstream_down = route == Route::Shared && !ctx.breaker.is_closed();
                pipeline::prepare(&env, session, &argv, source, command)
            }
            _ => Prepared::Untouched,
        };
        // A read rewritten by its tier (a sliding TTL's GETEX) writes.
        let rewritten = matches!(
            &prepared,
            Prepared::Forward { rewrite: Some(_), .. } | Prepared::Counted { rewrite: Some(_), .. }
        );
        self.access = match command {
            Some(info) if info.has(cmd_flag::READONLY) && !rewritten => Access::Read,
            _ => Access::Write,
        };
        (action, prepared)
    }

    /// Routes and prepares the request of `len` bytes after the run, and adds it to the run
    /// when it can join. That is the usual case: it has no await (no future is built per
    /// request) and moves nothing large. Anything else comes back, boxed, for `dispatch`.
    fn step(
        &mut self,
        server: &ServerInfo,
        run: &mut Run,
        len: usize,
        encoded: Option<&Bytes>,
        batch_start: Instant,
    ) -> Option<Box<(Action, Prepared)>> {
        let (action, prepared) = self.route_one(server, run.len, len, encoded, batch_start);
        let inline = encoded.is_some();
        let joins = matches!(action, Action::Forward(Route::Shared))
            && self.last_route == Route::Shared
            && match &prepared {
                Prepared::Untouched => !inline,
                // An inline command joins once re-encoded as RESP (its rewrite).
                Prepared::Forward { rewrite, .. } | Prepared::Counted { rewrite, .. } => {
                    !inline || rewrite.is_some()
                }
                _ => false,
            };
        // A request whose key is in flight on another connection goes through `dispatch`,
        // which may wait.
        if !joins || self.take_stripes().is_err() {
            return Some(Box::new((action, prepared)));
        }
        match prepared {
            Prepared::Untouched => run.add(&mut self.rbuf, len, None, None),
            Prepared::Forward { rewrite, note } => run.add(&mut self.rbuf, len, rewrite, Some(note)),
            Prepared::Counted { rewrite, account } => run.add_counted(&mut self.rbuf, len, rewrite, account),
            _ => unreachable!("only joining requests get here"),
        }
        None
    }

    /// Answers one request that cannot join the shared run, or sends it on its own.
    /// `Some(flow)` ends processing (the connection goes into pass-through).
    async fn dispatch(
        &mut self,
        run: &mut Run,
        len: usize,
        encoded: Option<Bytes>,
        action: Action,
        prepared: Prepared,
    ) -> std::io::Result<Option<Flow>> {
        let (rewrite, note) = match prepared {
            Prepared::Untouched => (None, None),
            Prepared::Counted { rewrite, account } => (rewrite, Some(Note::counting(account))),
            Prepared::Forward { rewrite, note } => (rewrite, Some(note)),
            Prepared::Answer(reply) => {
                self.flush_run(run).await;
                self.rbuf.advance(len);
                self.local(reply);
                return Ok(None);
            }
            Prepared::FromDatabase(through) => {
                self.flush_run(run).await;
                self.rbuf.advance(len);
                let piece = pipeline::reply::Piece::Load { through, original: None };
                self.queue.push_back(defer(&self.ctx, vec![piece], 1, false));
                return Ok(None);
            }
        };
        self.flush_run(run).await;
        if !self.fence(len).await {
            self.rbuf.advance(len);
            return Ok(None);
        }
        if let Action::PassThrough(rewritten) = action {
            let first = rewritten.or(encoded);
            if first.is_some() {
                self.rbuf.advance(len);
            }
            return Ok(Some(Flow::PassThrough(first)));
        }
        let raw = self.rbuf.split_to(len).freeze();
        match (&action, note) {
            (Action::Forward(route), Some(mut note)) => {
                let frames = note.frames;
                let request = rewrite.or(encoded).unwrap_or(raw);
                if let Through::Get(get) = note.through {
                    // Sent on its own: the key is read from the request's bytes.
                    let key = request.slice(get.at as usize..(get.at + get.len) as usize);
                    note.through = Through::Ready(Box::new(get.read(key)));
                }
                self.forward(*route, vec![request], frames, vec![note], Keys::new()).await;
            }
            _ => self.act(action, encoded.unwrap_or(raw)).await?,
        }
        Ok(None)
    }

    /// Sends the shared run as one job if that needs no wait: the route is unchanged and
    /// the connection's queue has room (the usual case). `false` leaves the run for
    /// `flush_run`.
    fn try_flush_run(&mut self, run: &mut Run) -> bool {
        if run.frames == 0 {
            // Nothing but empty lines (or nothing at all): consumed, never sent.
            drop(run.take(&mut self.rbuf));
            return true;
        }
        if self.last_route != Route::Shared {
            return false;
        }
        let Some(permit) = self.shared.as_ref().and_then(|tx| tx.try_reserve().ok()) else { return false };
        let (payload, frames, notes, keys) = run.take(&mut self.rbuf);
        let (reply, rx) = oneshot::channel();
        let fences = self.held.take();
        permit.send(Msg::Job(Job { payload, frames, frame_ends: !notes.is_empty(), reply, fences }));
        self.queue.push_back(Pending::Waiting {
            rx,
            frames,
            pinned: false,
            notes,
            keys,
            started: self.batch_start,
        });
        true
    }

    /// Sends the batched shared-route run, if any, as one job.
    async fn flush_run(&mut self, run: &mut Run) {
        if run.len == 0 && run.parts.is_empty() {
            return;
        }
        let (payload, frames, notes, keys) = run.take(&mut self.rbuf);
        if frames > 0 {
            self.forward(Route::Shared, payload, frames, notes, keys).await;
        }
    }
}
