//! One raw upstream connection driven by its own task: requests in, reply frames out.
//!
//! Requests arrive as `Job`s carrying the exact bytes to write and how many reply frames
//! they produce; the task writes them in order and hands each job its reply bytes, cut from
//! the read buffer without copying. If the connection fails, every job in flight is dropped,
//! which its waiting client sees as "upstream connection lost". Nothing is ever re-sent.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::resp::{FrameScanner, Limits};

/// Stop taking new jobs while this much is waiting to be written; the job queue then
/// holds further senders back, so memory per connection stays bounded.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Most scheduler yields spent gathering one batch of requests.
const MAX_YIELDS: u32 = 4;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// Requests to write and the sender for their replies.
#[derive(Debug)]
pub struct Job {
    /// Exact bytes to write: one or more complete requests, possibly in several chunks
    /// (a client's raw bytes around the requests strata rewrote), written in order.
    pub payload: Vec<Bytes>,
    /// Number of reply frames the payload produces.
    pub frames: usize,
    /// Receives the reply frames, concatenated as Redis sent them.
    pub reply: oneshot::Sender<Bytes>,
}

/// A message to a connection task.
#[derive(Debug)]
pub enum Msg {
    /// Write these requests.
    Job(Job),
    /// Hand the socket back once nothing is in flight (pub/sub and MONITOR take it over).
    Detach(oneshot::Sender<Detached>),
}

/// A socket taken back from its task, with any bytes already read from it.
#[derive(Debug)]
pub struct Detached {
    /// The upstream socket.
    pub stream: TcpStream,
    /// Bytes read but not yet delivered.
    pub leftover: BytesMut,
}

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
    reply: oneshot::Sender<Bytes>,
    sent_at: Instant,
}

/// The state of one running connection.
struct Driver {
    rbuf: BytesMut,
    wbuf: BytesMut,
    inflight: VecDeque<InFlight>,
    scanner: FrameScanner,
    /// Bytes of complete frames already scanned for the front job.
    scanned_len: usize,
    scanned_frames: usize,
    timeout: Option<Duration>,
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
        wbuf: BytesMut::new(),
        inflight: VecDeque::new(),
        scanner: FrameScanner::reply(),
        scanned_len: 0,
        scanned_frames: 0,
        timeout,
    };
    let detach_to = {
        let (mut rd, mut wr) = stream.split();
        'run: loop {
            let deadline = d.deadline();
            if d.rbuf.capacity() - d.rbuf.len() < READ_CHUNK / 4 {
                d.rbuf.reserve(READ_CHUNK.max(d.rbuf.len() / 2));
            }
            tokio::select! {
                biased;
                read = rd.read_buf(&mut d.rbuf) => match read {
                    Ok(0) => return Exit::Closed("connection closed by Redis".into()),
                    Ok(_) => if let Err(exit) = d.deliver() { return exit },
                    Err(e) => return Exit::Closed(e.to_string()),
                },
                written = wr.write(&d.wbuf), if !d.wbuf.is_empty() => match written {
                    Ok(n) => d.wbuf.advance(n),
                    Err(e) => return Exit::Closed(e.to_string()),
                },
                msg = rx.recv(), if d.wbuf.len() < WRITE_HIGH_WATER => {
                    let Some(mut msg) = msg else { return Exit::Unused };
                    // Take every job already queued so they leave in one write: fewer
                    // syscalls here and in Redis, which is where multiplexing pays off.
                    // Tokio runs a woken task next (LIFO slot), so without the yield below
                    // this task would wake once per client request and write one at a time.
                    let mut yields = 0;
                    loop {
                        match msg {
                            Msg::Job(job) => d.accept(job),
                            Msg::Detach(to) if d.inflight.is_empty() && d.wbuf.is_empty() => break 'run to,
                            // Callers detach only after every reply arrived; anything else is
                            // a bug upstream of here, and refusing keeps the stream consistent.
                            Msg::Detach(_) => return Exit::Protocol("detach with requests in flight".into()),
                        }
                        if d.wbuf.len() >= WRITE_HIGH_WATER {
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
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Exit::TimedOut;
                }
            }
        }
    };
    let _ = detach_to.send(Detached { stream, leftover: d.rbuf });
    Exit::Detached
}

impl Driver {
    fn deadline(&self) -> Option<Instant> {
        Some(self.inflight.front()?.sent_at + self.timeout?)
    }

    fn accept(&mut self, job: Job) {
        for chunk in &job.payload {
            self.wbuf.extend_from_slice(chunk);
        }
        self.inflight.push_back(InFlight { frames: job.frames, reply: job.reply, sent_at: Instant::now() });
    }

    /// Hands every complete reply in the read buffer to its job.
    fn deliver(&mut self) -> Result<(), Exit> {
        loop {
            let Some(front) = self.inflight.front() else {
                return if self.rbuf.is_empty() {
                    Ok(())
                } else {
                    Err(Exit::Protocol("reply bytes with no request in flight".into()))
                };
            };
            let frames = front.frames;
            while self.scanned_frames < frames {
                match self.scanner.scan(&self.rbuf[self.scanned_len..], &Limits::UNBOUNDED) {
                    Ok(Some(len)) => {
                        self.scanned_len += len;
                        self.scanned_frames += 1;
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Exit::Protocol(e.to_string())),
                }
            }
            let reply = self.rbuf.split_to(self.scanned_len).freeze();
            self.scanned_len = 0;
            self.scanned_frames = 0;
            if let Some(done) = self.inflight.pop_front() {
                // The client may have gone; its reply is then simply discarded.
                let _ = done.reply.send(reply);
            }
        }
    }
}

/// Writes `payload` and reads exactly `frames` replies, for handshakes and probes.
pub async fn roundtrip(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    payload: &[u8],
    frames: usize,
) -> std::io::Result<Vec<Bytes>> {
    stream.write_all(payload).await?;
    let mut replies = Vec::with_capacity(frames);
    let mut scanner = FrameScanner::reply();
    while replies.len() < frames {
        match scanner.scan(rbuf, &Limits::UNBOUNDED) {
            Ok(Some(len)) => replies.push(rbuf.split_to(len).freeze()),
            Ok(None) => {
                rbuf.reserve(READ_CHUNK);
                if stream.read_buf(rbuf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
    Ok(replies)
}
