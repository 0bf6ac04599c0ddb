//! One client connection: read requests, route them, write replies strictly in order.
//!
//! Requests are answered through a queue of pending replies, one entry per request or per
//! run of consecutive shared-route requests (sent to Redis as one slice of the read
//! buffer). A route change waits for every earlier reply first, so Redis executes the
//! client's commands in the order sent even when they use two connections.

mod fence;
mod passthrough;
mod process;
mod read;
mod send;
mod state;
mod write;

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::Context;
use super::action::Route;
use super::memory::Share;
use super::pending::{Pending, resolve_front};
use super::registry::{Peer, Registration, View};
use super::routes::{OwnRoute, Routes, SharedRoute};
use super::woken::Woken;
use crate::pipeline::Note;
use crate::resp::reply::Protocol;
use crate::resp::{Limits, RequestParser};
use crate::session::Session;

use fence::Fencing;
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
    /// The ways to Redis: shared connections, and the client's own.
    routes: Routes,
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
    /// Same-key order for the request being routed (see `fence`).
    fencing: Fencing,
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
        let session = Session::on_db(id, ctx.config.upstream.url.db);
        let peer = Peer {
            addr: stream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            laddr: stream.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            fd: stream.as_raw_fd() as i64,
        };
        let registration = ctx.registry.register(&session, peer);
        let memory = Share::new(ctx.client_memory.clone(), registration.handle.clone());
        let routes = Routes {
            shared: SharedRoute::new(ctx.pool.clone(), Protocol::Resp2),
            own: OwnRoute::new(ctx.spares.clone(), ctx.config.upstream.clone(), registration.handle.clone()),
        };
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
            routes,
            last_route: Route::Shared,
            closing: false,
            parked: false,
            large: false,
            read_chunk: READ_CHUNK,
            batch_start: Instant::now(),
            spare_notes: Vec::new(),
            spare_keys: BytesMut::new(),
            last_cmd: LastCommand::default(),
            fencing: Fencing::default(),
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
            // Outside tokio's cooperative budget: after 128 sends a task must yield, and a
            // client accepted meanwhile could be read, and sent, before the rest of what
            // this one had read (and sent before it closed). `process` is bounded anyway,
            // by the pipeline depth.
            let flow = tokio::task::coop::unconstrained(self.process()).await?;
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
}
