//! The client-to-Redis half of pass-through: cutting the client's requests, translating
//! the strata ids they name, and sending a probe after one that may end the state.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Probe, ProbeKind, Seen};
use super::{Order, Probing};
use crate::resp::{Frame, RequestParser};
use crate::server::handler::READ_CHUNK;
use crate::server::local::upstream_ids;
use crate::server::registry::Registry;
use crate::upstream::ServerInfo;

/// The client-to-Redis half of pass-through. Requests are cut with the client's own
/// parser, starting with those already read, and sent on as they came, except that
/// strata ids become Redis' (`local::upstream_ids`). After one that may end the state,
/// a probe follows it and the next requests wait for its verdict. Bytes that are not
/// RESP, or a request still incomplete past `limit` bytes, end the cutting: from there on
/// bytes are copied as they come and Redis judges them, so a client's stream is never
/// held or lost.
pub(super) struct Requests<'a> {
    pub(super) rbuf: &'a mut BytesMut,
    pub(super) parser: &'a mut RequestParser,
    pub(super) ranges: &'a mut Vec<Range<usize>>,
    pub(super) registry: &'a Registry,
    pub(super) server: &'a ServerInfo,
    /// `limits.max_client_buffer`: the most one incomplete request may hold here.
    pub(super) limit: usize,
    pub(super) probing: &'a Probing,
    /// The request that started pass-through is still in the buffer: a check follows it.
    pub(super) after_trigger: bool,
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
    pub(super) async fn forward<R, W>(
        mut self,
        from: &mut R,
        to: &mut W,
        probe_first: bool,
    ) -> std::io::Result<()>
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
        let seen = self.probing.see(self.server, &argv);
        (upstream_ids(self.registry, &argv), seen)
    }
}
