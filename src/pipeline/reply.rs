//! The way back: cut the reply frames of prepared requests into what each client asked
//! for (dropping strata's extra replies, unwrapping its MULTI/EXEC, appending INFO), have
//! each outcome counted (`count`), and hand misses PostgreSQL fills to `through`. Frames
//! are sliced, never decoded and re-encoded.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::count::{Tally, account_in_place, record, record_exec};
use super::{DeferredRead, Env, Note, ReadThrough, Through, through};
use crate::error::{Error, Kind, Side};
use crate::resp::frames::{Shares, array_elements, frames_len, is_error};
use crate::tier::ReplyFix;

/// Part of a batch's answer.
#[derive(Debug)]
pub enum Piece {
    /// Final bytes.
    Ready(Bytes),
    /// To be answered from PostgreSQL: `original` is Redis' miss, or `None` when Redis
    /// could not answer.
    Load { through: Box<ReadThrough>, original: Option<Bytes> },
}

/// A batch's answer: ready now, or after some reads were filled from PostgreSQL.
#[derive(Debug)]
pub enum Settled {
    /// Every reply is final.
    Ready(Bytes),
    /// Some pieces wait for PostgreSQL.
    Deferred(Vec<Piece>),
}

/// Turns the replies of a batch (in note order) into the client's replies; the batch was
/// read at `started` and `env.now` is when its replies arrived. `ends` are where the
/// frames end in `bytes`, if the connection passed them on (else empty). `redis_down`:
/// strata wrote the replies because Redis did not answer (`upstream::Replies::failed`).
pub fn finish(
    env: &Env,
    bytes: Bytes,
    ends: &[u32],
    notes: &mut [Note],
    requests: &Bytes,
    started: Instant,
    redis_down: bool,
) -> Settled {
    let mut tally = Tally::default();
    let micros = env.now.saturating_duration_since(started).as_micros() as u64;
    // One pass over the notes (they are no longer in the CPU cache when replies arrive).
    let (mut plain, mut loads, mut frames) = (true, false, 0);
    for note in notes.iter() {
        plain &= matches!(note.fix, ReplyFix::None);
        loads |= !note.through.is_no();
        frames += note.upstream_frames();
    }
    // Ends that do not match the notes (none were asked for, or one did not fit) are
    // not used: the frames are measured again.
    let ends = if ends.len() == frames { ends } else { &[] };
    // Replies that only need counting stay in their buffer: the common case, including
    // hits of read-through keys.
    let settled = if plain && !(loads && (redis_down || needs_load(&bytes, ends, notes))) {
        account_in_place(&bytes, ends, notes, micros, &mut tally);
        Settled::Ready(bytes)
    } else {
        finish_cutting(env, bytes, notes, requests, micros, &mut tally, redis_down)
    };
    tally.flush(env.stats);
    settled
}

fn finish_cutting(
    env: &Env,
    mut bytes: Bytes,
    notes: &mut [Note],
    requests: &Bytes,
    micros: u64,
    tally: &mut Tally,
    redis_down: bool,
) -> Settled {
    let mut pieces = Vec::new();
    let mut out = BytesMut::with_capacity(bytes.len());
    // Deferred reads' requests, one entry per request, in the order of their notes.
    let mut next_entry = 0;
    'notes: for note in notes.iter_mut() {
        if let Through::Read(read) = &note.through {
            next_entry = read.at as usize;
        }
        for _ in 0..note.repeat {
            let Some(frames) = take_frames(&mut bytes, note.frames) else {
                // Fewer frames than expected cannot come from a connection task; pass on
                // whatever is left rather than invent replies.
                out.extend_from_slice(&bytes);
                break 'notes;
            };
            let request = match &note.through {
                Through::Read(_) => DeferredRead::entry(requests, next_entry).map(|(request, next)| {
                    next_entry = next;
                    request
                }),
                Through::No => None,
            };
            let cut = Cut { env, micros, tally, out: &mut out, pieces: &mut pieces, redis_down };
            cut_one(cut, frames, note, request);
        }
    }
    if pieces.is_empty() {
        return Settled::Ready(out.freeze());
    }
    pieces.push(Piece::Ready(out.freeze()));
    Settled::Deferred(pieces)
}

/// Where `cut_one` puts what it cuts and counts.
struct Cut<'a, 'e> {
    env: &'a Env<'e>,
    micros: u64,
    tally: &'a mut Tally,
    out: &'a mut BytesMut,
    pieces: &'a mut Vec<Piece>,
    /// The replies are strata's, written because Redis did not answer.
    redis_down: bool,
}

/// One request's reply frames, cut, counted, and either added to `out` or handed to
/// PostgreSQL as a piece of its own. `request` is what the client sent when the note is
/// a deferred read.
fn cut_one(cut: Cut, frames: Vec<Bytes>, note: &mut Note, request: Option<Bytes>) {
    let reply = fix(cut.env, frames, &note.fix);
    if let Some(account) = &note.account {
        record(cut.tally, &reply, account, cut.micros);
    }
    if !note.queued.is_empty() {
        record_exec(cut.tally, &reply, &note.queued, cut.micros);
    }
    let load = match (&note.through, request) {
        (Through::Read(read), Some(request)) if read.calls_for(&reply, cut.redis_down) => {
            read.build(cut.env.fallback, &request).map(|through| (Box::new(through), read.miss.is(&reply)))
        }
        _ => None,
    };
    match load {
        Some((through, miss)) => {
            cut.pieces.push(Piece::Ready(cut.out.split().freeze()));
            cut.pieces.push(Piece::Load { through, original: miss.then_some(reply) });
        }
        None => cut.out.extend_from_slice(&reply),
    }
}

/// Resolves deferred pieces. Loads run concurrently (misses for one key in one batch
/// then share one query); replies keep their order.
pub async fn resolve(fallback: std::sync::Arc<crate::fallback::Fallback>, pieces: Vec<Piece>) -> Bytes {
    // One load (an unpipelined miss, the usual case) runs in this task: a task of its own
    // would only add a hand-off before the query and another after it.
    if pieces.iter().filter(|p| matches!(p, Piece::Load { .. })).count() == 1 {
        let mut out = BytesMut::new();
        for piece in pieces {
            match piece {
                Piece::Ready(bytes) => out.extend_from_slice(&bytes),
                Piece::Load { through, original } => {
                    out.extend_from_slice(&through::answer(&fallback, &through, original.as_deref()).await)
                }
            }
        }
        return out.freeze();
    }
    let mut parts = Vec::with_capacity(pieces.len());
    for piece in pieces {
        parts.push(match piece {
            Piece::Ready(bytes) => Part::Ready(bytes),
            Piece::Load { through, original } => {
                let fallback = fallback.clone();
                Part::Loading(tokio::spawn(async move {
                    through::answer(&fallback, &through, original.as_deref()).await
                }))
            }
        });
    }
    let mut out = BytesMut::new();
    for part in parts {
        match part {
            Part::Ready(bytes) => out.extend_from_slice(&bytes),
            Part::Loading(task) => match task.await {
                Ok(bytes) => out.extend_from_slice(&bytes),
                // A load task cannot panic short of a bug; the client still gets one reply.
                Err(_) => out.extend_from_slice(
                    &Error::new(Kind::Failed, Side::Strata, "read-through failed").repeated(1),
                ),
            },
        }
    }
    out.freeze()
}

enum Part {
    Ready(Bytes),
    Loading(tokio::task::JoinHandle<Bytes>),
}

/// True when a deferred read's reply calls for PostgreSQL (the same test `cut_one`
/// makes; Redis being down is known from the batch, see `finish`).
fn needs_load(bytes: &[u8], ends: &[u32], notes: &[Note]) -> bool {
    let mut shares = Shares::new(bytes, ends);
    for note in notes {
        let Through::Read(read) = &note.through else {
            // Malformed or short input: let the cutting path deal with it.
            if shares.next(note.upstream_frames()).is_none() {
                return true;
            }
            continue;
        };
        for _ in 0..note.repeat {
            let Some(reply) = shares.next(note.frames) else { return true };
            if read.calls_for(reply, false) {
                return true;
            }
        }
    }
    false
}

fn take_frames(bytes: &mut Bytes, n: usize) -> Option<Vec<Bytes>> {
    let mut frames = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = frames_len(bytes, 1)?;
        frames.push(bytes.split_to(len));
    }
    Some(frames)
}

fn fix(env: &Env, mut frames: Vec<Bytes>, fix: &ReplyFix) -> Bytes {
    match fix {
        ReplyFix::None => concat(frames),
        ReplyFix::DropTrailing { .. } => frames.swap_remove(0),
        ReplyFix::Exec { .. } => unwrap_exec(frames),
        ReplyFix::FilterExec { mask } => filter_exec(frames.swap_remove(0), mask),
        ReplyFix::Info { strata } => info_reply(env, frames.swap_remove(0), *strata),
        ReplyFix::Replace(bytes) => Bytes::clone(bytes),
    }
}

fn concat(frames: Vec<Bytes>) -> Bytes {
    if frames.len() == 1 {
        return frames.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::new();
    frames.iter().for_each(|f| out.extend_from_slice(f));
    out.freeze()
}

/// `[MULTI reply, request's QUEUED or error, extra QUEUEDs…, EXEC reply]` → the
/// request's own reply: the first EXEC element, or the error that aborted it.
fn unwrap_exec(mut frames: Vec<Bytes>) -> Bytes {
    let Some(exec) = frames.pop() else { return Bytes::new() };
    let queued = frames.get(1).cloned().unwrap_or_default();
    if is_error(&queued) {
        return queued;
    }
    match array_elements(&exec) {
        Some(mut elements) if !elements.is_empty() => elements.swap_remove(0),
        _ => exec,
    }
}

/// Removes the elements of strata's own queued commands from the client's EXEC reply.
fn filter_exec(exec: Bytes, mask: &[u16]) -> Bytes {
    let Some(elements) = array_elements(&exec) else { return exec };
    let expected: usize = mask.iter().map(|&n| 1 + n as usize).sum();
    if elements.len() != expected {
        // Not the transaction strata tracked (cannot happen unless Redis dropped a
        // queued command); forwarding Redis' reply is the honest fallback.
        return exec;
    }
    let mut kept = Vec::with_capacity(mask.len());
    let mut i = 0;
    for &extra in mask {
        kept.push(elements[i].clone());
        i += 1 + extra as usize;
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("{}{}\r\n", exec[0] as char, kept.len()).as_bytes());
    kept.iter().for_each(|e| out.extend_from_slice(e));
    out.freeze()
}

/// An INFO bulk (RESP2) or verbatim (RESP3) string with strata's client counts in its
/// `# Clients` section, and the `# Strata` section appended when `strata`.
fn info_reply(env: &Env, reply: Bytes, strata: bool) -> Bytes {
    let (marker, body) = match split_bulk(&reply) {
        Some(parts) => parts,
        None => return reply,
    };
    let extra = (env.info)();
    let mut text = crate::stats::with_strata_clients(body, &extra);
    if strata {
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(crate::stats::info_section(env.stats, env.tiers, &extra).as_bytes());
    }
    let mut out = BytesMut::with_capacity(text.len() + 16);
    out.extend_from_slice(format!("{}{}\r\n", marker as char, text.len()).as_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// `$n\r\nbody\r\n` or `=n\r\ntxt:body\r\n` → (marker, body including any `txt:`).
fn split_bulk(reply: &[u8]) -> Option<(u8, &[u8])> {
    let marker = *reply.first()?;
    if marker != b'$' && marker != b'=' {
        return None;
    }
    let header_end = memchr::memchr(b'\n', reply)? + 1;
    let body_end = reply.len().checked_sub(2)?;
    reply.get(header_end..body_end).map(|body| (marker, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_is_unwrapped_to_the_commands_own_reply() {
        let frames = |v: &[&'static [u8]]| v.iter().map(|f| Bytes::from_static(f)).collect::<Vec<_>>();
        let ok = frames(&[b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n:3\r\n:1\r\n"]);
        assert_eq!(&unwrap_exec(ok)[..], b":3\r\n");
        let wrongtype =
            frames(&[b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n-WRONGTYPE x\r\n:0\r\n"]);
        assert_eq!(&unwrap_exec(wrongtype)[..], b"-WRONGTYPE x\r\n");
        let arity = frames(&[b"+OK\r\n", b"-ERR wrong number\r\n", b"+QUEUED\r\n", b"-EXECABORT t\r\n"]);
        assert_eq!(&unwrap_exec(arity)[..], b"-ERR wrong number\r\n");
        let lost = frames(&[b"-ERR lost\r\n", b"-ERR lost\r\n", b"-ERR lost\r\n", b"-ERR lost\r\n"]);
        assert_eq!(&unwrap_exec(lost)[..], b"-ERR lost\r\n");
    }

    #[test]
    fn filter_exec_drops_stratas_elements() {
        let exec = Bytes::from_static(b"*4\r\n+OK\r\n:1\r\n$1\r\nv\r\n:1\r\n");
        assert_eq!(&filter_exec(exec.clone(), &[1, 0, 0])[..], b"*3\r\n+OK\r\n$1\r\nv\r\n:1\r\n");
        assert_eq!(&filter_exec(exec.clone(), &[0, 0])[..], &exec[..], "mismatched mask passes through");
        let null = Bytes::from_static(b"*-1\r\n");
        assert_eq!(&filter_exec(null.clone(), &[1])[..], &null[..]);
    }

    #[test]
    fn bulk_and_verbatim_split() {
        assert_eq!(split_bulk(b"$3\r\nabc\r\n"), Some((b'$', &b"abc"[..])));
        assert_eq!(split_bulk(b"=7\r\ntxt:abc\r\n"), Some((b'=', &b"txt:abc"[..])));
        assert_eq!(split_bulk(b"-ERR x\r\n"), None);
    }
}
