//! What a client is owed, in order: the queue entries (`Pending`), the run of
//! consecutive shared-route requests being gathered into one upstream job (`Run`), and
//! settling a batch's reply bytes through `pipeline` (cutting, counting, and handing
//! reads that PostgreSQL must fill to a task of their own).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Context;
use crate::pipeline::reply::Settled;
use crate::pipeline::{self, Env, Note, Through};
use crate::upstream::Replies;

/// Notes reserved when a run gets its first one (clients commonly pipeline 16).
const NOTES_PER_RUN: usize = 16;
/// Request buffer reserved for a run's first deferred read: 16 GETs of 56-byte keys.
const KEYS_PER_RUN: usize = 1024;
/// Largest key buffer a client keeps between runs (a pipeline of 16 keys of 4 KiB).
const SPARE_KEYS_LIMIT: usize = 64 * 1024;

/// A reply owed to the client, in request order.
pub(super) enum Pending {
    /// Bytes ready to write.
    Ready(Bytes),
    /// Waiting for Redis: `frames` replies, on the pinned connection or not; `notes` say
    /// how to cut and count them when strata changed or must account for the requests.
    /// `started` is when the requests were read, for their latency.
    Waiting {
        rx: oneshot::Receiver<Replies>,
        frames: usize,
        pinned: bool,
        notes: Vec<Note>,
        keys: Keys,
        started: Instant,
    },
}

impl Pending {
    /// Whether the reply can be written without waiting: ready, or arrived from Redis.
    pub(super) fn is_ready(&self) -> bool {
        match self {
            Pending::Ready(_) => true,
            Pending::Waiting { rx, .. } => !rx.is_empty(),
        }
    }
}

/// Consecutive shared-route requests not yet sent: `len` bytes still at the front of the
/// read buffer, after `parts` already cut from it (requests before a rewritten one, and
/// the rewritten bytes).
#[derive(Default)]
pub(super) struct Run {
    pub(super) len: usize,
    pub(super) frames: usize,
    pub(super) parts: Vec<Bytes>,
    /// Notes for the prepared requests (plain runs and requests counted alike merged,
    /// see `Note::push`); empty while no request in the run needs its reply cut or counted.
    pub(super) notes: Vec<Note>,
    /// The requests of the run's deferred reads (`pipeline::Through::Read`), copied out
    /// of the read buffer so their replies can find them. Grows with the run, which the
    /// pipeline depth bounds.
    pub(super) keys: BytesMut,
}

/// A batch's requests of deferred reads, kept with its notes until the replies
/// arrive.
pub(super) type Keys = Bytes;

impl Run {
    /// Adds the request of `len` bytes at `rbuf[self.len..]`, sent as `replacement` if given.
    pub(super) fn add(
        &mut self,
        rbuf: &mut BytesMut,
        len: usize,
        replacement: Option<Bytes>,
        note: Option<Note>,
    ) {
        let frames = note.as_ref().map_or(1, |n| n.frames);
        match note {
            Some(mut note) => {
                if let Through::Read(read) = &mut note.through {
                    // The request as the client sent it, even when `replacement` goes.
                    if self.keys.capacity() == 0 {
                        self.keys.reserve(KEYS_PER_RUN);
                    }
                    if !read.keep(&rbuf[self.len..self.len + len], &mut self.keys) {
                        note.through = Through::No;
                    }
                }
                self.start_notes();
                Note::push(&mut self.notes, note);
            }
            None if self.notes.is_empty() => {}
            None => match self.notes.last_mut() {
                Some(last) if last.account.is_none() && last.fix == crate::tier::ReplyFix::None => {
                    last.frames += 1
                }
                _ => self.notes.push(Note::plain(1)),
            },
        }
        self.append(rbuf, len, replacement, frames);
    }

    /// Before the first note: the frames of the requests before it get a plain one.
    fn start_notes(&mut self) {
        if self.notes.is_empty() {
            // Sized for a typical pipeline up front: notes are large, and growing the
            // vector one doubling at a time copies them again and again.
            self.notes.reserve(NOTES_PER_RUN);
            if self.frames > 0 {
                self.notes.push(Note::plain(self.frames));
            }
        }
    }

    /// The request's bytes (or its replacement) join the payload.
    fn append(&mut self, rbuf: &mut BytesMut, len: usize, replacement: Option<Bytes>, frames: usize) {
        match replacement {
            Some(bytes) => {
                if self.len > 0 {
                    self.parts.push(rbuf.split_to(self.len).freeze());
                    self.len = 0;
                }
                rbuf.advance(len);
                self.parts.push(bytes);
            }
            None => self.len += len,
        }
        self.frames += frames;
    }

    /// The run's payload, frame count and notes; leaves the run empty (an unused notes
    /// vector stays, for the next requests).
    pub(super) fn take(&mut self, rbuf: &mut BytesMut) -> (Vec<Bytes>, usize, Vec<Note>, Keys) {
        let mut payload = std::mem::take(&mut self.parts);
        if self.len > 0 {
            payload.push(rbuf.split_to(std::mem::take(&mut self.len)).freeze());
        }
        let notes = if self.notes.is_empty() { Vec::new() } else { std::mem::take(&mut self.notes) };
        let keys = if self.keys.is_empty() { Keys::new() } else { self.keys.split().freeze() };
        (payload, std::mem::take(&mut self.frames), notes, keys)
    }
}

/// The data-path view of the context, for `pipeline`.
pub(super) fn env<'a>(
    ctx: &'a Context,
    commands: &'a crate::command::CommandTable,
    info: &'a dyn Fn() -> crate::stats::InfoExtra,
    now: Instant,
) -> Env<'a> {
    Env {
        commands,
        tiers: &ctx.tiers,
        stats: &ctx.stats,
        info,
        fallback: &ctx.fallback,
        upstream_down: false,
        now,
    }
}

/// Cuts and counts replies that have notes; reads that PostgreSQL must fill become a
/// new wait in the same queue position. `notes` is left empty, for reuse.
pub(super) fn settle(
    ctx: &Arc<Context>,
    replies: Replies,
    notes: &mut Vec<Note>,
    keys: &Keys,
    pinned: bool,
    started: Instant,
) -> Pending {
    if notes.is_empty() {
        return Pending::Ready(replies.bytes);
    }
    let server = ctx.server.load();
    let info = || ctx.info_extra();
    let Replies { bytes, ends, arrived, failed } = replies;
    let redis_down = failed.is_some_and(|e| e.is_redis_down());
    let env = env(ctx, &server.commands, &info, arrived.unwrap_or_else(Instant::now));
    let settled = match pipeline::reply::finish(&env, bytes, &ends, notes, keys, started, redis_down) {
        Settled::Ready(bytes) => Pending::Ready(bytes),
        Settled::Deferred(pieces) => {
            let frames = notes.iter().map(Note::client_frames).sum();
            defer(ctx, pieces, frames, pinned)
        }
    };
    notes.clear();
    settled
}

/// Keeps an emptied notes vector for the next run: a run of tiered requests would
/// otherwise allocate ~1.3 KB of notes per batch. One is enough, and a vector grown by
/// an unusually deep pipeline is not kept.
pub(super) fn keep_spare(spare: &mut Vec<Note>, notes: Vec<Note>) {
    if spare.capacity() == 0 && notes.is_empty() && notes.capacity() <= 4 * NOTES_PER_RUN {
        *spare = notes;
    }
}

/// Keeps a run's emptied key buffer for the next run. What is left of its allocation
/// takes the next batch's keys, and once the replies that held the earlier keys are
/// settled the buffer is reused from its start: no allocation per batch. A buffer grown
/// past `SPARE_KEYS_LIMIT` by an unusually large key is not kept.
pub(super) fn keep_spare_keys(spare: &mut BytesMut, keys: BytesMut) {
    if keys.capacity() <= SPARE_KEYS_LIMIT {
        *spare = keys;
    }
}

/// Resolves pieces that wait for PostgreSQL in a task of their own, so the client's
/// other replies keep flowing; the reply keeps its place in the queue.
pub(super) fn defer(
    ctx: &Arc<Context>,
    pieces: Vec<pipeline::reply::Piece>,
    frames: usize,
    pinned: bool,
) -> Pending {
    let (tx, rx) = oneshot::channel();
    let fallback = ctx.fallback.clone();
    tokio::spawn(async move {
        let _ = tx.send(Replies::bytes(pipeline::reply::resolve(fallback, pieces).await));
    });
    Pending::Waiting { rx, frames, pinned, notes: Vec::new(), keys: Keys::new(), started: Instant::now() }
}

/// Waits until the front entry's reply has arrived (or its connection is gone).
pub(super) async fn resolve_front(queue: &mut VecDeque<Pending>, ctx: &Arc<Context>, spare: &mut Vec<Note>) {
    let Some(front) = queue.front_mut() else { return };
    if let Pending::Waiting { rx, frames, pinned, notes, keys, started } = front {
        let replies = match rx.await {
            Ok(replies) => replies,
            Err(_) if *pinned => return,
            Err(_) => Replies::failed(crate::error::Error::redis_lost(), *frames),
        };
        let pinned = *pinned;
        let mut notes = std::mem::take(notes);
        *front = settle(ctx, replies, &mut notes, keys, pinned, *started);
        keep_spare(spare, notes);
    }
}
