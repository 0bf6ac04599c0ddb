//! The Redis-to-client half of pass-through: frames go back as Redis sent them, except
//! a probe's replies, which decide whether pass-through ends.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Probe, ProbeKind, is_push, is_subscribed_pong};
use super::{Before, Ended, Order, Probing};
use crate::resp::{FrameScanner, Limits};
use crate::server::handler::READ_CHUNK;

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
pub(super) async fn forward_replies<R, W>(
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
