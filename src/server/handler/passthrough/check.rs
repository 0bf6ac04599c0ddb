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
mod tests {
    use super::*;

    fn see(follow: &mut Follow, kind: Kind, words: &str) -> Seen {
        let argv: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        follow.see(kind, &argv)
    }

    #[test]
    fn follows_what_may_end_the_state() {
        let mut f = Follow::default();
        assert_eq!(see(&mut f, Kind::Streaming, "SUBSCRIBE a"), Seen::Nothing);
        assert_eq!(see(&mut f, Kind::Streaming, "UNSUBSCRIBE"), Seen::MayEnd);
        assert_eq!(see(&mut f, Kind::Streaming, "sunsubscribe x"), Seen::MayEnd);
        assert_eq!(see(&mut f, Kind::Client, "CLIENT TRACKING off"), Seen::MayEnd);
        assert_eq!(see(&mut f, Kind::Client, "CLIENT TRACKING on REDIRECT 4"), Seen::Nothing);
        assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY OFF"), Seen::Nothing);
        // Redis ignores SKIP while replies are off: the markers would still get no reply.
        assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY SKIP"), Seen::Nothing);
        assert!(!f.can_probe());
        assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY ON"), Seen::MayEnd);
        assert!(f.can_probe());
        see(&mut f, Kind::Multi, "MULTI");
        assert!(!f.can_probe());
        see(&mut f, Kind::Exec, "EXEC");
        assert!(f.can_probe());
        see(&mut f, Kind::Multi, "MULTI");
        see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
        assert!(!f.skip_next, "queued");
        see(&mut f, Kind::Exec, "EXEC");
        assert!(f.skip_next, "Redis 7.0 applies a queued SKIP after EXEC");
        see(&mut f, Kind::Plain, "GET k");
        assert!(f.can_probe());
        // A SKIP Redis may have refused (replies off, RESP2 subscribed) still counts.
        see(&mut f, Kind::Client, "CLIENT REPLY OFF");
        see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
        assert!(f.skip_next);
        see(&mut f, Kind::Client, "CLIENT REPLY ON");
        see(&mut f, Kind::Watch, "WATCH k");
        assert!(f.sticky);
        assert_eq!(see(&mut f, Kind::Reset, "RESET"), Seen::Reset(ProbeKind::Flush { reply: true }));
        // SKIP silences the next request: a marker in its place would never be answered,
        // and RESET's own reply is not sent.
        see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
        assert!(!f.can_probe());
        assert_eq!(see(&mut f, Kind::Reset, "RESET"), Seen::Reset(ProbeKind::Flush { reply: false }));
        see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
        assert_eq!(see(&mut f, Kind::Streaming, "UNSUBSCRIBE"), Seen::MayEnd);
        assert!(f.can_probe(), "the skip went to the UNSUBSCRIBE");

        let mut monitor = Follow::default();
        see(&mut monitor, Kind::Streaming, "MONITOR");
        assert!(!monitor.can_probe());
        assert_eq!(
            see(&mut monitor, Kind::Reset, "RESET"),
            Seen::Reset(ProbeKind::RedisReset),
            "RESET goes to Redis"
        );

        for (kind, words) in [
            (Kind::Auth, "AUTH other secret"),
            (Kind::Hello, "HELLO 3 AUTH other secret"),
            (Kind::Client, "CLIENT SETNAME x"),
        ] {
            let mut f = Follow::default();
            see(&mut f, kind, words);
            assert!(!f.can_probe(), "{words}");
        }
    }

    #[test]
    fn recognises_only_its_own_markers() {
        let probe = Probe::new(ProbeKind::Check);
        let token = String::from_utf8(probe.before.to_vec()).unwrap();
        assert!(probe.is_before(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(probe.is_before(format!("*2\r\n$4\r\npong\r\n${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(!probe.is_after(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(!probe.is_before(b"$5\r\nhello\r\n"));
        let message = format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n{token}\r\n", token.len());
        assert!(!probe.is_before(message.as_bytes()));
        assert_ne!(Probe::new(ProbeKind::Check).before, probe.before, "every probe draws new tokens");
        let requests = String::from_utf8(probe.requests().to_vec()).unwrap();
        assert!(requests.starts_with("*2\r\n$4\r\nPING\r\n") && !requests.contains("INFO"), "{requests}");
        let rest = String::from_utf8(probe.rest().to_vec()).unwrap();
        assert!(
            rest.starts_with("*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n") && rest.ends_with("-b\r\n"),
            "{rest}"
        );
        assert!(is_subscribed_pong(
            format!("*2\r\n$4\r\npong\r\n${}\r\n{token}\r\n", token.len()).as_bytes()
        ));
        assert!(!is_subscribed_pong(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
        let flush = Probe::new(ProbeKind::Flush { reply: true });
        assert_eq!(flush.requests().iter().filter(|&&b| b == b'*').count(), 1, "a flush sends one PING");
        let after_skip = Probe::new(ProbeKind::Flush { reply: false });
        assert_eq!(
            after_skip.requests().iter().filter(|&&b| b == b'*').count(),
            2,
            "a first PING takes the skip"
        );
        let reset = Probe::new(ProbeKind::RedisReset);
        assert!(reset.requests().is_empty() && reset.is_after(b"+RESET\r\n") && !reset.is_after(b"+OK\r\n"));
        let ok = |token: &Bytes| {
            Bytes::from(format!("${}\r\n{}\r\n", token.len(), String::from_utf8_lossy(token)))
        };
        let info = Bytes::from_static(b"$4\r\nid=1\r\n");
        let refused = Bytes::from_static(b"-NOPERM no\r\n");
        assert_eq!(probe.entry(&[ok(&probe.before), info.clone(), ok(&probe.after)]), Entry::Probeable);
        assert_eq!(probe.entry(&[ok(&probe.before), refused.clone(), ok(&probe.after)]), Entry::Unprobeable);
        assert_eq!(probe.entry(&[refused.clone(), refused.clone(), refused.clone()]), Entry::Unprobeable);
        assert_eq!(probe.entry(&[refused.clone(), info.clone(), refused]), Entry::Unprobeable);
        let push = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*0\r\n");
        assert_eq!(probe.entry(&[push, ok(&probe.before), info]), Entry::Lost);
        assert!(is_push(b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"));
        assert!(is_push(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nv\r\n"));
        assert!(!is_push(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n"));
    }

    #[test]
    fn judges_client_info() {
        let info = |flags: &str, db: u8, resp: u8| {
            let text = format!(
                "id=5 addr=127.0.0.1:1 laddr=127.0.0.1:2 fd=8 name= age=0 idle=0 flags={flags} db={db} sub=0 \
                 psub=0 ssub=0 multi=-1 qbuf=0 obl=0 cmd=client|info user=default redir=-1 resp={resp}\n"
            );
            match resp {
                3 => format!("={}\r\ntxt:{text}\r\n", text.len() + 4),
                _ => format!("${}\r\n{text}\r\n", text.len()),
            }
        };
        let shared = Expect { protocol: Protocol::Resp2, db: 0, user: "default" };
        assert!(shared.judge(info("N", 0, 2).as_bytes()));
        assert!(!shared.judge(info("P", 0, 2).as_bytes()), "still subscribed");
        assert!(!shared.judge(info("t", 0, 2).as_bytes()), "still tracking");
        assert!(!shared.judge(info("N", 3, 2).as_bytes()), "another database");
        assert!(!shared.judge(info("N", 0, 3).as_bytes()), "another protocol");
        let resp3 = Expect { protocol: Protocol::Resp3, ..shared.clone() };
        assert!(resp3.judge(info("N", 0, 3).as_bytes()));
        let other_user = Expect { user: "app", ..shared.clone() };
        assert!(!other_user.judge(info("N", 0, 2).as_bytes()), "another user");
        let refused = b"-ERR Can't execute 'client|info': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
        assert!(!shared.judge(refused));
    }
}
