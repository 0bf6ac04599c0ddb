//! One raw upstream connection driven by its own task: requests in, reply frames out.
//!
//! Requests arrive as `Job`s carrying the exact bytes to write and how many reply frames
//! they produce; the task writes them in order and hands each job its reply bytes, cut from
//! the read buffer without copying. If the connection fails, every job in flight is dropped,
//! which its waiting client sees as "upstream connection lost". Nothing is ever re-sent.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::fence::Held;
use super::job::{Detached, FrameEnds, Job, Msg, Replies};
use super::outbox::Outbox;
use crate::resp::{FrameScanner, Limits};

/// Stop taking new jobs while this much is waiting to be written; the job queue then
/// holds further senders back, so memory per connection stays bounded.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Most scheduler yields spent gathering one batch of requests.
const MAX_YIELDS: u32 = 4;
/// Read buffer growth step.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// How often a connection without senders looks whether anyone still waits for its replies.
const ORPHAN_CHECK: Duration = Duration::from_millis(100);
/// Largest reply value a buffer is sized for up front; a larger one grows as it arrives.
const MAX_SIZED_REPLY: u64 = 4 * 1024 * 1024 * 1024;
/// A reply value larger than this is received into a buffer sized for it once.
const LARGE_VALUE: usize = 1024 * 1024;
/// A shared connection holds new requests while earlier ones await their replies, up to
/// this many bytes. Redis reads about 16 KiB per event but keeps reading while bytes are
/// waiting, so a larger write costs it nothing and saves wake-ups of both processes.
const HOLD_LIMIT: usize = 256 * 1024;
/// Writes awaiting replies before a shared connection holds new requests: with two, Redis
/// has the next batch as soon as it finishes one instead of idling while strata turns the
/// replies around (a hot key's requests, all on one connection, lost an eighth to that).
const WRITES_IN_FLIGHT: usize = 2;

/// Why a connection task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Redis closed the connection or an I/O error occurred.
    Closed(String),
    /// The oldest request waited longer than the command timeout.
    TimedOut,
    /// Every sender is gone; nobody will use this connection again.
    Unused,
    /// Redis sent bytes that are not a reply to anything, or not RESP.
    Protocol(String),
    /// The socket was handed back with `Msg::Detach`.
    Detached,
}

struct InFlight {
    frames: usize,
    frame_ends: bool,
    reply: oneshot::Sender<Replies>,
    sent_at: Instant,
    /// The last job of a write: its replies complete that write.
    ends_write: bool,
    /// Released when this leaves `inflight`: replied, or the connection is gone.
    fences: Held,
}

/// The state of one running connection.
struct Driver {
    rbuf: BytesMut,
    out: Outbox,
    inflight: VecDeque<InFlight>,
    scanner: FrameScanner,
    /// Bytes of complete frames already scanned for the front job.
    scanned_len: usize,
    scanned_frames: usize,
    /// Where the front job's scanned frames end, if it asked.
    ends: FrameEnds,
    timeout: Option<Duration>,
    /// Hold requests while others await replies (shared connections only).
    hold: bool,
    /// Jobs at the back of `inflight` whose bytes are in `out`, not yet being written.
    held: usize,
    /// Writes whose last job awaits its replies (`WRITES_IN_FLIGHT`).
    writes: usize,
    /// `out` is partly written; the rest follows at once.
    writing: bool,
}

/// Runs a connection until it fails, times out, is detached or is no longer used.
/// `gather` (shared connections) yields to collect other clients' requests into one
/// write; a dedicated connection serves one client and writes at once, so its request
/// is not overtaken by another client's on a connection that did not wait.
pub async fn drive(
    mut stream: TcpStream,
    leftover: BytesMut,
    mut rx: mpsc::Receiver<Msg>,
    timeout: Option<Duration>,
    gather: bool,
) -> Exit {
    let max_yields = if gather { MAX_YIELDS } else { 0 };
    let mut d = Driver {
        rbuf: leftover,
        out: Outbox::default(),
        inflight: VecDeque::new(),
        scanner: FrameScanner::reply(),
        scanned_len: 0,
        scanned_frames: 0,
        ends: FrameEnds::new(),
        timeout,
        hold: gather,
        held: 0,
        writes: 0,
        writing: false,
    };
    // One timer, re-armed only when it fires or the connection goes from idle to busy:
    // arming it per request would touch the timer wheel once per job.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = false;
    // Senders remain: once every one is gone (a client dropped its pinned connection,
    // say after switching protocol) the requests in flight still get their replies.
    let mut open = true;
    let detach_to = {
        let (mut rd, mut wr) = stream.split();
        'run: loop {
            if !armed && let Some(deadline) = d.deadline() {
                timer.as_mut().reset(deadline);
                armed = true;
            }
            d.size_read_buffer();
            tokio::select! {
                biased;
                read = rd.read_buf(&mut d.rbuf) => match read {
                    Ok(0) => return Exit::Closed("connection closed by Redis".into()),
                    Ok(_) => {
                        if let Err(exit) = d.deliver() {
                            return exit;
                        }
                        if !open && d.inflight.is_empty() && d.out.is_empty() {
                            return Exit::Unused;
                        }
                    }
                    Err(e) => return Exit::Closed(e.to_string()),
                },
                written = d.out.write_to(&mut wr), if d.may_write() => match written {
                    Ok(_) => {
                        if !d.writing {
                            d.start_clock_of_held();
                        }
                        d.end_write();
                        d.writing = !d.out.is_empty();
                    }
                    Err(e) => return Exit::Closed(e.to_string()),
                },
                msg = rx.recv(), if open && d.out.len() < WRITE_HIGH_WATER => {
                    let Some(mut msg) = msg else {
                        if d.inflight.is_empty() && d.out.is_empty() {
                            return Exit::Unused;
                        }
                        open = false;
                        continue;
                    };
                    // Take every job queued so they leave in one write (fewer syscalls here
                    // and in Redis). Tokio runs a woken task next (LIFO slot): without the
                    // yield below this task would wake, and write, once per client request.
                    let mut yields = 0;
                    // One clock read for the whole gathered batch.
                    let now = Instant::now();
                    loop {
                        match msg {
                            Msg::Job(job) => d.accept(job, now),
                            Msg::Detach(to) if d.inflight.is_empty() && d.out.is_empty() => break 'run to,
                            // Callers detach only after every reply arrived; anything else is
                            // a bug upstream of here, and refusing keeps the stream consistent.
                            Msg::Detach(_) => return Exit::Protocol("detach with requests in flight".into()),
                        }
                        if d.out.len() >= WRITE_HIGH_WATER {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(next) => msg = next,
                            // Keep yielding while each yield brought more requests: the
                                // event loop still has clients with requests to hand over.
                            Err(_) if yields < max_yields => {
                                yields += 1;
                                tokio::task::yield_now().await;
                                match rx.try_recv() {
                                    Ok(next) => msg = next,
                                    Err(_) => break,
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                // Nobody left to read the replies (the client is gone): stop waiting for them,
                // but not while requests hold their keys' stripes: Redis may still run them,
                // and a later request on those keys must wait for that (a blocked command
                // holds none). An async block, so no timer is built on turns this is off.
                () = async { tokio::time::sleep(ORPHAN_CHECK).await }, if !open => {
                    if d.inflight.iter().all(|job| job.reply.is_closed() && job.fences.is_empty()) {
                        return Exit::Unused;
                    }
                }
                () = &mut timer, if armed => {
                    armed = false;
                    // The front may have moved on since arming: then re-arm for the new one.
                    if d.deadline().is_some_and(|deadline| deadline <= Instant::now()) {
                        return Exit::TimedOut;
                    }
                }
            }
        }
    };
    let _ = detach_to.send(Detached { stream, leftover: d.rbuf });
    Exit::Detached
}

impl Driver {
    /// Makes room to read into: a large reply value gets room for all of it at once (its
    /// pages are touched only as it arrives; growing by copies would hold it twice).
    fn size_read_buffer(&mut self) {
        // Redis' own proto-max-bulk-len caps what it sends; this bounds a broken upstream.
        let limits = Limits { max_bulk: MAX_SIZED_REPLY, max_multibulk: 0 };
        let wanted =
            self.scanner.wanted(&self.rbuf[self.scanned_len..], &limits).map(|w| w + self.scanned_len);
        match wanted {
            Some(wanted) if wanted > self.rbuf.capacity() && wanted - self.rbuf.len() > LARGE_VALUE => {
                self.rbuf.reserve(wanted - self.rbuf.len());
            }
            // The end of a large reply is still to come and has its room: growing the
            // buffer now would copy the reply (a doubling, since it is nearly full).
            Some(wanted) if wanted <= self.rbuf.capacity() && self.rbuf.len() >= LARGE_VALUE => {}
            _ if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 => {
                self.rbuf.reserve(READ_CHUNK.max(self.rbuf.len() / 2));
            }
            _ => {}
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.inflight.front()?.sent_at + self.timeout?)
    }

    /// Whether to write now. A shared connection with requests awaiting replies holds new
    /// ones (up to `HOLD_LIMIT`): Redis is busy with the earlier ones and would not start
    /// on these sooner, and one write of everything gathered meanwhile costs Redis and
    /// strata one syscall instead of one per client. Under load this is what keeps batches
    /// large; when idle nothing is in flight and requests go at once.
    fn may_write(&self) -> bool {
        !self.out.is_empty()
            && (self.writing || !self.hold || self.writes < WRITES_IN_FLIGHT || self.out.len() >= HOLD_LIMIT)
    }

    /// Held jobs are written now: their command timeout starts here, so a hold never eats
    /// into the time Redis gets for a request.
    fn start_clock_of_held(&mut self) {
        if self.held == 0 {
            return;
        }
        let now = Instant::now();
        let first_held = self.inflight.len().saturating_sub(self.held);
        for job in self.inflight.range_mut(first_held..) {
            job.sent_at = now;
        }
    }

    /// The held jobs are on their way: the last of them closes a write.
    fn end_write(&mut self) {
        if std::mem::take(&mut self.held) > 0
            && let Some(last) = self.inflight.back_mut()
        {
            last.ends_write = true;
            self.writes += 1;
        }
    }

    fn accept(&mut self, job: Job, now: Instant) {
        // A job without replies would never leave `inflight` and would hold later ones.
        debug_assert!(job.frames > 0, "a job must expect at least one reply");
        for chunk in &job.payload {
            self.out.push(chunk);
        }
        self.held += 1;
        self.inflight.push_back(InFlight {
            frames: job.frames,
            frame_ends: job.frame_ends,
            reply: job.reply,
            sent_at: now,
            ends_write: false,
            fences: job.fences,
        });
    }

    /// Hands every complete reply in the read buffer to its job. The next job's timeout
    /// counts from now: Redis could not start on it before answering the ones ahead.
    fn deliver(&mut self) -> Result<(), Exit> {
        let waiting = self.inflight.len();
        let delivered = self.deliver_complete();
        if self.inflight.len() < waiting
            && let Some(front) = self.inflight.front_mut()
        {
            front.sent_at = front.sent_at.max(Instant::now());
        }
        delivered
    }

    fn deliver_complete(&mut self) -> Result<(), Exit> {
        let mut arrived = None;
        loop {
            let Some(front) = self.inflight.front() else {
                return if self.rbuf.is_empty() {
                    Ok(())
                } else {
                    Err(Exit::Protocol("reply bytes with no request in flight".into()))
                };
            };
            let (frames, frame_ends) = (front.frames, front.frame_ends);
            while self.scanned_frames < frames {
                match self.scanner.scan(&self.rbuf[self.scanned_len..], &Limits::UNBOUNDED) {
                    Ok(Some(len)) => {
                        self.scanned_len += len;
                        self.scanned_frames += 1;
                        if let (true, Ok(end)) = (frame_ends, u32::try_from(self.scanned_len)) {
                            self.ends.push(end);
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Exit::Protocol(e.to_string())),
                }
            }
            let bytes = self.rbuf.split_to(self.scanned_len).freeze();
            let ends = std::mem::take(&mut self.ends);
            let arrived = frame_ends.then(|| *arrived.get_or_insert_with(Instant::now));
            self.scanned_len = 0;
            self.scanned_frames = 0;
            if let Some(done) = self.inflight.pop_front() {
                self.writes -= usize::from(done.ends_write);
                // The client may have gone; its reply is then simply discarded.
                let _ = done.reply.send(Replies { bytes, ends, arrived, failed: None });
            }
        }
    }
}
