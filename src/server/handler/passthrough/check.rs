//! Knowing when a pass-through connection's state has ended. strata follows the requests
//! sent on it (`Follow`); after one that may have ended the state it asks Redis (`Probe`):
//! first `PING <token>`, whose `["pong", token]` form already says "subscribed RESP2",
//! then `CLIENT INFO` and `PING <token>`. The connection goes back to normal service only
//! if Redis describes it as strata would have left it (`Expect::judge`). A check is sent
//! only when Redis is sure to answer it in order (see `Follow::can_probe`): never on a
//! MONITOR connection, with replies off or a skip pending, inside MULTI, or once
//! `Follow::unprobeable` (see there) is set.

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::Kind;
use crate::resp::reply::Protocol;

/// What strata follows of a pass-through connection's state, from the requests on it.
#[derive(Debug, Default)]
pub struct Follow {
    /// MONITOR (or SYNC): Redis feeds the client's own commands, markers included, into
    /// its stream, so this connection is never probed.
    pub monitor: bool,
    /// CLIENT REPLY OFF: the markers would get no reply.
    pub replies_off: bool,
    /// CLIENT REPLY SKIP: the next request's reply may not be sent. Set on every SKIP
    /// (one Redis refused only costs a marker), since a skip missed would swallow one.
    pub skip_next: bool,
    /// A SKIP queued inside MULTI: Redis 7.0 applies it after EXEC.
    pub skip_after_exec: bool,
    /// Inside MULTI: the markers would only be queued.
    pub in_multi: bool,
    /// Never probe again: AUTH or HELLO may have changed the user (who may not be allowed
    /// PING), RESET went to Redis (which logs the connection in as `default`), CLIENT
    /// SETNAME/SETINFO/NO-EVICT/NO-TOUCH changed what strata shows of the client, or the
    /// upstream user may not run the probe's commands.
    pub unprobeable: bool,
    /// SELECT, READONLY/READWRITE or WATCH changed the connection for good: normal
    /// service does not resume on it.
    pub sticky: bool,
}

/// What one request may do to the state that needs pass-through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing that ends it.
    Nothing,
    /// It may have ended it: probe after it.
    MayEnd,
    /// RESET: it ends everything. Strata answers it itself once a flush shows every
    /// earlier reply out (sent to Redis, it would log the connection in as `default`),
    /// or, where no probe can go, it goes to Redis, whose `+RESET` ends pass-through.
    Reset(ProbeKind),
}

impl Follow {
    /// Notes what the request `argv` (of `kind`) does to the connection.
    pub fn see(&mut self, kind: Kind, argv: &[&[u8]]) -> Seen {
        let sub = |name: &[u8]| argv.get(1).is_some_and(|a| a.eq_ignore_ascii_case(name));
        let value = |v: &[u8]| argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(v));
        let may_end = |yes: bool| if yes { Seen::MayEnd } else { Seen::Nothing };
        // A skip applies to this request, whatever it is.
        let skipped = std::mem::take(&mut self.skip_next);
        match kind {
            Kind::Streaming => {
                let name = argv[0].to_ascii_lowercase();
                self.monitor |= matches!(name.as_slice(), b"monitor" | b"sync" | b"psync");
                may_end(matches!(name.as_slice(), b"unsubscribe" | b"punsubscribe" | b"sunsubscribe"))
            }
            Kind::Client if sub(b"tracking") => may_end(value(b"off")),
            Kind::Client if sub(b"reply") => {
                // SKIP only silences the request after it, and Redis ignores it while
                // replies are off; anything else is refused and changes nothing.
                if value(b"off") {
                    self.replies_off = true;
                } else if value(b"on") {
                    self.replies_off = false;
                } else if value(b"skip") && self.in_multi {
                    self.skip_after_exec = true;
                } else if value(b"skip") {
                    self.skip_next = true;
                }
                may_end(value(b"on"))
            }
            Kind::Client if sub(b"setname") || sub(b"setinfo") || sub(b"no-evict") || sub(b"no-touch") => {
                self.unprobeable = true;
                Seen::Nothing
            }
            Kind::Auth | Kind::Hello => {
                self.unprobeable = true;
                Seen::Nothing
            }
            Kind::Multi => {
                self.in_multi = true;
                Seen::Nothing
            }
            Kind::Exec => {
                self.in_multi = false;
                self.skip_next = std::mem::take(&mut self.skip_after_exec);
                Seen::Nothing
            }
            Kind::Discard => {
                self.in_multi = false;
                self.skip_after_exec = false;
                Seen::Nothing
            }
            Kind::Select | Kind::ReadMode | Kind::Watch => {
                self.sticky = true;
                Seen::Nothing
            }
            Kind::Reset if self.can_probe() => Seen::Reset(ProbeKind::Flush { reply: !skipped }),
            // Redis would not send the `+RESET` that would end pass-through: it goes on.
            Kind::Reset if skipped => {
                self.unprobeable = true;
                Seen::Nothing
            }
            Kind::Reset => Seen::Reset(ProbeKind::RedisReset),
            _ => Seen::Nothing,
        }
    }

    /// Markers can be sent now: Redis will answer them, in order.
    pub fn can_probe(&self) -> bool {
        !self.monitor && !self.replies_off && !self.skip_next && !self.in_multi && !self.unprobeable
    }
}

/// What a probe waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// The markers around `CLIENT INFO`: has the state ended?
    Check,
    /// One marker: every reply before it is out (RESET, which strata answers). With
    /// `reply` false a CLIENT REPLY SKIP came before the RESET: a first marker takes the
    /// skip, and only if Redis answers it anyway (the SKIP was refused) does strata
    /// answer the RESET.
    Flush { reply: bool },
    /// No marker: the client's RESET went to Redis, and its `+RESET` is the end.
    RedisReset,
}

/// The markers of one probe: their requests, and how to recognise their replies.
#[derive(Debug)]
pub struct Probe {
    before: Bytes,
    after: Bytes,
    pub kind: ProbeKind,
}

impl Probe {
    /// A probe with fresh random tokens.
    pub fn new(kind: ProbeKind) -> Probe {
        let token = |end: &str| {
            Bytes::from(format!("strata-probe-{:016x}{:016x}-{end}", fastrand::u64(..), fastrand::u64(..)))
        };
        Probe { before: token("a"), after: token("b"), kind }
    }

    /// What is sent first: for a check `PING before` alone, whose reply shows a subscribed
    /// RESP2 connection (there `CLIENT INFO` would only be refused, counted in Redis'
    /// error statistics); for a flush `PING after`, behind `PING before` to take a skip.
    pub fn requests(&self) -> BytesMut {
        let mut out = BytesMut::new();
        if matches!(self.kind, ProbeKind::Check | ProbeKind::Flush { reply: false }) {
            out.put_slice(&crate::resp::reply::encode_command(&[b"PING", &self.before[..]]));
        }
        if matches!(self.kind, ProbeKind::Flush { .. }) {
            out.put_slice(&crate::resp::reply::encode_command(&[b"PING", &self.after[..]]));
        }
        out
    }

    /// The rest of a check, once `PING before` showed a connection that may be plain:
    /// `CLIENT INFO`, `PING after`.
    pub fn rest(&self) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_slice(&crate::resp::reply::encode_command(&[b"CLIENT", b"INFO"]));
        out.put_slice(&crate::resp::reply::encode_command(&[b"PING", &self.after[..]]));
        out
    }

    /// The reply to the first marker: from here on, only the probe's replies and pushes come.
    pub fn is_before(&self, frame: &[u8]) -> bool {
        matches!(self.kind, ProbeKind::Check | ProbeKind::Flush { reply: false })
            && is_ping_reply(frame, &self.before)
    }

    /// The reply to the last marker, or Redis' `+RESET`: the probe is over. (A client
    /// could fake `+RESET` with a script before its RESET, only to end its own
    /// pass-through early.)
    pub fn is_after(&self, frame: &[u8]) -> bool {
        match self.kind {
            ProbeKind::RedisReset => frame == b"+RESET\r\n",
            _ => is_ping_reply(frame, &self.after),
        }
    }

    /// What `replies` to a check's `requests()`, sent on an idle connection, say.
    pub fn entry(&self, replies: &[Bytes]) -> Entry {
        match replies {
            [first, info, last] if self.is_before(first) && self.is_after(last) => {
                if info.starts_with(b"-") {
                    Entry::Unprobeable
                } else {
                    Entry::Probeable
                }
            }
            // PING refused (an ACL): in step, but no probe can ever work.
            [first, _, last] if first.starts_with(b"-") && last.starts_with(b"-") => Entry::Unprobeable,
            _ => Entry::Lost,
        }
    }
}

/// What the check of a connection entering pass-through found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Redis answers probes for this connection's user.
    Probeable,
    /// Never probe this connection: Redis refuses PING or CLIENT INFO for its user, or it
    /// was not checked at all (inside MULTI, MONITOR, replies already waiting on it).
    Unprobeable,
    /// The replies were not the probe's (a push came first), or did not come within the
    /// connect timeout: the connection is not in step and must not be used.
    Lost,
}

/// `PING`'s reply on a subscribed RESP2 connection: `["pong", …]`.
pub fn is_subscribed_pong(frame: &[u8]) -> bool {
    frame.starts_with(b"*2\r\n$4\r\npong\r\n")
}

/// `PING token`'s reply: a bulk string, or `["pong", token]` on a subscribed RESP2
/// connection.
fn is_ping_reply(frame: &[u8], token: &[u8]) -> bool {
    let bulk = format!("${}\r\n", token.len());
    let with_token = |head: &[u8]| {
        frame.len() == head.len() + bulk.len() + token.len() + 2
            && frame.starts_with(head)
            && frame[head.len()..].starts_with(bulk.as_bytes())
            && &frame[head.len() + bulk.len()..frame.len() - 2] == token
            && frame.ends_with(b"\r\n")
    };
    with_token(b"") || with_token(b"*2\r\n$4\r\npong\r\n")
}

/// A frame Redis sends on its own, not in answer to a request: a RESP3 push, or a
/// published message on a subscribed RESP2 connection.
pub fn is_push(frame: &[u8]) -> bool {
    frame.starts_with(b">")
        || frame.starts_with(b"*3\r\n$7\r\nmessage\r\n")
        || frame.starts_with(b"*4\r\n$8\r\npmessage\r\n")
        || frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n")
}

/// The connection strata would give the client: what `CLIENT INFO` must show for normal
/// service to resume.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub protocol: Protocol,
    /// The client's database.
    pub db: i64,
    /// The upstream URL's user.
    pub user: &'a str,
}

impl Expect<'_> {
    /// Whether `reply` (to `CLIENT INFO`) shows a connection in no special state (no
    /// subscription, tracking, MONITOR, MULTI, name or redirect) in the protocol,
    /// database and user strata expects. Errors and anything unreadable say no.
    pub fn judge(&self, reply: &[u8]) -> bool {
        self.plain(reply).unwrap_or(false)
    }

    fn plain(&self, reply: &[u8]) -> Option<bool> {
        let text = client_info_text(reply)?;
        let field = |name: &str| {
            text.split_ascii_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let resp = match self.protocol {
            Protocol::Resp2 => "2",
            Protocol::Resp3 => "3",
        };
        let idle = field("flags")? == "N"
            && field("multi")? == "-1"
            && field("sub")? == "0"
            && field("psub")? == "0"
            && field("ssub").is_none_or(|n| n == "0")
            && field("name")?.is_empty()
            && field("redir")? == "-1"
            && field("resp")? == resp;
        let db: i64 = field("db")?.parse().ok()?;
        Some(idle && db == self.db && field("user") == Some(self.user))
    }
}

/// The text of a bulk (RESP2) or verbatim (RESP3) `CLIENT INFO` reply.
fn client_info_text(reply: &[u8]) -> Option<&str> {
    if !matches!(reply.first(), Some(b'$' | b'=')) {
        return None;
    }
    let start = memchr::memchr(b'\n', reply)? + 1;
    let body = reply.get(start..reply.len().checked_sub(2)?)?;
    let body = if reply[0] == b'=' { body.get(4..)? } else { body };
    std::str::from_utf8(body).ok()
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
