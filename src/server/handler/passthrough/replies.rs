//! The Redis-to-client half of pass-through: every frame goes back as Redis sent it (a
//! redirect target's Redis id given back as strata's), counted against what the requests
//! owe; once the requests half paused and every reply owed is out, this half judges
//! whether the state ended.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Before, Ended, Order, Pause, Shared};
use crate::resp::{FrameScanner, Limits};
use crate::server::handler::READ_CHUNK;
use crate::session::lockstep::Received;

/// The Redis-to-client half (see the module docs). Ends with `Ended::Resumed` when the
/// connection is plain again, `Ended::Reset` at a RESET, `Ended::Closed` when Redis closes.
pub(super) async fn forward_replies<R, W>(
    from: &mut R,
    to: &mut W,
    shared: &Shared<'_>,
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
    loop {
        // Judged only with nothing unwritten: a resume must leave no byte behind.
        if buf.is_empty()
            && let Some(ended) = judge(shared, before)
        {
            return Ok(ended);
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            read = from.read_buf(&mut buf) => read?,
            () = shared.pause.notified() => continue,
        };
        if read == 0 {
            to.shutdown().await?;
            return Ok(Ended::Closed);
        }
        if let Some(ended) = forward_frames(&mut buf, &mut scanner, to, shared).await? {
            return Ok(ended);
        }
        // One huge reply must not keep its buffer for the rest of the session.
        if buf.is_empty() && buf.capacity() > SHRINK_OVER {
            buf = BytesMut::new();
        }
    }
}

/// Writes the complete frames of `buf` to the client, noting each in the lockstep.
async fn forward_frames<W: AsyncWrite + Unpin>(
    buf: &mut BytesMut,
    scanner: &mut FrameScanner,
    to: &mut W,
    shared: &Shared<'_>,
) -> std::io::Result<Option<Ended>> {
    // Frames before `sent` are the client's, not yet written.
    let mut sent = 0;
    loop {
        let len = match scanner.scan(&buf[sent..], &Limits::UNBOUNDED) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(_) => {
                // Never from Redis; if it happens, stop counting and copy.
                shared.lockstep().stop_counting();
                break;
            }
        };
        let frame = &buf[sent..sent + len];
        if frame == b"+RESET\r\n" && shared.ends_at_reset() {
            to.write_all(&buf.split_to(sent + len)).await?;
            return Ok(Some(Ended::Reset { answer: false }));
        }
        let received = shared.lockstep().receive(frame);
        match received {
            Received::Forward => sent += len,
            Received::Redirect(at, redis_id) => {
                let strata_id = shared.lockstep().redirect_named(redis_id);
                let Some(strata_id) = strata_id.or_else(|| shared.registry.by_upstream_id(redis_id)) else {
                    sent += len;
                    continue;
                };
                let mut replaced = BytesMut::with_capacity(len + 8);
                replaced.extend_from_slice(&frame[..at.start]);
                replaced.extend_from_slice(strata_id.to_string().as_bytes());
                replaced.extend_from_slice(&frame[at.end..]);
                to.write_all(&buf.split_to(sent)).await?;
                to.write_all(&replaced).await?;
                buf.advance(len);
                sent = 0;
            }
        }
    }
    if sent > 0 {
        to.write_all(&buf.split_to(sent)).await?;
    }
    Ok(None)
}

/// What the paused requests half is to do, now that every reply owed may be in: `Some`
/// when pass-through ends here.
fn judge(shared: &Shared<'_>, before: &Before) -> Option<Ended> {
    let paused = (*shared.paused())?;
    let lockstep = shared.lockstep();
    let owed = lockstep.owed();
    match paused {
        Pause::Full if owed < shared.depth => shared.give(Order::Go),
        Pause::Reset { .. } if !lockstep.counting() => shared.give(Order::SendReset),
        Pause::Reset { answer } if owed == 0 => return Some(Ended::Reset { answer }),
        Pause::Judge if owed == 0 => {
            let plain = lockstep.plain() && !before.own_connection;
            if plain && before.handle.leave_pass_through() {
                return Some(Ended::Resumed);
            }
            shared.give(Order::Go);
        }
        _ => {}
    }
    None
}

/// Reply buffer capacity past which an emptied buffer is given back.
const SHRINK_OVER: usize = 1024 * 1024;
