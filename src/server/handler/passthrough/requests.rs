//! The client-to-Redis half of pass-through: cutting the client's requests, noting what
//! each owes (`Lockstep::send`), translating the strata ids they name, and pausing after
//! one that may end the state until the replies half has judged.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Order, Pause, Shared};
use crate::command::Kind;
use crate::resp::{Frame, RequestParser};
use crate::server::clients::parse_id;
use crate::server::handler::READ_CHUNK;
use crate::server::local::upstream_ids;
use crate::server::registry::Registry;
use crate::session::lockstep::{Lockstep, Sent};
use crate::upstream::ServerInfo;

/// The client-to-Redis half of pass-through. Requests are cut with the client's own
/// parser, starting with those already read, and sent on as they came, except that
/// strata ids become Redis' (`local::upstream_ids`). Bytes that are not RESP, or a
/// request still incomplete past `limit` bytes, end the cutting: from there on bytes are
/// copied as they come and Redis judges them (counting stops), so a client's stream is
/// never held or lost.
pub(super) struct Requests<'a> {
    pub(super) rbuf: &'a mut BytesMut,
    pub(super) parser: &'a mut RequestParser,
    pub(super) ranges: &'a mut Vec<Range<usize>>,
    pub(super) server: &'a ServerInfo,
    /// `limits.max_client_buffer`: the most one incomplete request may hold here.
    pub(super) limit: usize,
    pub(super) shared: &'a Shared<'a>,
    /// The request that started pass-through is still in the buffer: pause after it
    /// (Redis may have refused it, leaving nothing to stay for).
    pub(super) after_first: bool,
}

/// Where cutting requests stopped.
enum Cut {
    /// The buffer ends inside a request: read more.
    More,
    /// Stop sending until the replies half says so.
    Pause(Pause),
    /// Not RESP, or too large: copy the rest as it comes.
    Raw,
}

impl Requests<'_> {
    /// `first_sent`: the request that started pass-through was sent already; its verdict
    /// comes first.
    pub(super) async fn forward<R, W>(
        mut self,
        from: &mut R,
        to: &mut W,
        first_sent: bool,
    ) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut start = first_sent.then_some((BytesMut::new(), Cut::Pause(Pause::Judge)));
        loop {
            let (ready, cut) = start.take().unwrap_or_else(|| self.take_ready());
            if !ready.is_empty() {
                to.write_all(&ready).await?;
            }
            match cut {
                Cut::Raw => {
                    tokio::io::copy(from, to).await?;
                    return Ok(());
                }
                Cut::Pause(why) => {
                    if let Order::SendReset = self.shared.pause(why).await {
                        self.shared.reset_sent();
                        to.write_all(&crate::resp::reply::encode_command(&[b"RESET"])).await?;
                    }
                    continue;
                }
                Cut::More => {}
            }
            self.rbuf.reserve(READ_CHUNK);
            if from.read_buf(self.rbuf).await? == 0 {
                // An unfinished request: Redis gets what the client sent, as it would directly.
                return to.write_all(&std::mem::take(self.rbuf)).await;
            }
        }
    }

    /// Takes complete requests off the buffer, as the bytes Redis is to get, up to one
    /// after which sending must pause.
    fn take_ready(&mut self) -> (BytesMut, Cut) {
        let mut ready = BytesMut::new();
        loop {
            let frame = match self.parser.next(self.rbuf, self.ranges) {
                Ok(Some(frame)) => frame,
                Ok(None) if self.rbuf.len() <= self.limit => return (ready, Cut::More),
                Ok(None) | Err(_) => {
                    self.shared.lockstep().stop_counting();
                    ready.extend_from_slice(&std::mem::take(self.rbuf));
                    return (ready, Cut::Raw);
                }
            };
            let (len, translated, step) = match frame {
                Frame::Empty { len } => {
                    self.shared.lockstep().blank();
                    (len, None, Step::Blank)
                }
                Frame::Multibulk { len } => {
                    let (translated, step) = self.look_at(&self.rbuf[..len]);
                    (len, translated, step)
                }
                Frame::Inline { consumed, encoded } => {
                    let (translated, step) = self.look_at(&encoded);
                    (consumed, translated, step)
                }
            };
            if let Step::HoldReset { answer } = step {
                // Not sent: strata answers it once every earlier reply is out.
                self.rbuf.advance(len);
                return (ready, Cut::Pause(Pause::Reset { answer }));
            }
            match translated {
                Some(request) => ready.extend_from_slice(&request),
                None => ready.extend_from_slice(&self.rbuf[..len]),
            }
            self.rbuf.advance(len);
            let first = !matches!(step, Step::Blank) && std::mem::take(&mut self.after_first);
            match step {
                Step::Sent(Sent::Pause) => return (ready, Cut::Pause(Pause::Judge)),
                _ if first => return (ready, Cut::Pause(Pause::Judge)),
                _ if self.shared.lockstep().owed() >= self.shared.depth => {
                    return (ready, Cut::Pause(Pause::Full));
                }
                _ => {}
            }
        }
    }

    /// The request in `source` (which `ranges` index): with Redis' ids if it names
    /// strata's, and what sending it means.
    fn look_at(&self, source: &[u8]) -> (Option<Bytes>, Step) {
        let argv: smallvec::SmallVec<[&[u8]; 8]> = self.ranges.iter().map(|r| &source[r.clone()]).collect();
        let kind = self.server.commands.lookup(&argv).map(|info| info.kind).unwrap_or_default();
        let mut lockstep = self.shared.lockstep();
        if kind == Kind::Reset {
            if let Some(answer) = lockstep.holds_reset() {
                return (None, Step::HoldReset { answer });
            }
            // Sent on: its `+RESET` ends pass-through if nothing was sent after it (a SKIP
            // may silence it; then pass-through goes on).
            self.shared.reset_sent();
            return (None, Step::Sent(Sent::Go));
        }
        self.shared.sent_after_reset();
        note_redirect(self.shared.registry, &argv, &mut lockstep, false);
        let sent = lockstep.send(kind, &argv);
        (upstream_ids(self.shared.registry, &argv), Step::Sent(sent))
    }
}

/// What sending one request means.
enum Step {
    /// A blank line: nothing for Redis.
    Blank,
    Sent(Sent),
    /// RESET, held back.
    HoldReset {
        answer: bool,
    },
}

/// Remembers the redirect target a `CLIENT TRACKING … REDIRECT id` names, so Redis's id
/// for it in later replies can be given back as strata's. `redis_ids`: the request was
/// translated already (the one that started pass-through).
pub(super) fn note_redirect(registry: &Registry, argv: &[&[u8]], lockstep: &mut Lockstep, redis_ids: bool) {
    let tracking = argv.len() > 3
        && argv[0].eq_ignore_ascii_case(b"client")
        && argv[1].eq_ignore_ascii_case(b"tracking");
    let Some(at) = tracking.then(|| crate::server::local::redirect_position(argv)).flatten() else { return };
    let Some(id) = parse_id(argv[at]) else { return };
    let pair = if redis_ids {
        registry.by_upstream_id(id as i64).map(|strata| (id as i64, strata))
    } else {
        registry.get(id).and_then(|c| c.upstream_id()).map(|redis| (redis, id))
    };
    if let Some((redis, strata)) = pair {
        lockstep.note_redirect(redis, strata);
    }
}
