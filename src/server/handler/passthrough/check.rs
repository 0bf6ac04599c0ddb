//! Knowing when a pass-through connection's state has ended. strata follows the requests
//! sent on it (`Follow`); after one that may have ended the state it asks Redis between
//! two markers (`Probe`: `PING <token>`, `CLIENT INFO`, `PING <token>`), and the
//! connection goes back to normal service only if Redis describes it as strata would
//! have left it (`Expect::judge`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::Kind;
use crate::resp::reply::Protocol;

/// What strata follows of a pass-through connection's state, from the requests on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Follow {
    /// MONITOR (or SYNC): Redis feeds the client's own commands, markers included, into
    /// its stream, so this connection is never probed.
    pub monitor: bool,
    /// CLIENT REPLY OFF: the markers would get no reply.
    pub replies_off: bool,
    /// Inside MULTI: the markers would only be queued.
    pub in_multi: bool,
    /// SELECT, AUTH, READONLY/READWRITE or WATCH changed the connection for good: if
    /// normal service resumes, the client keeps this connection as its own.
    pub sticky: bool,
    /// RESET was sent: Redis put the connection back to its first state.
    pub reset: bool,
}

impl Follow {
    /// Notes what the request `argv` (of `kind`) does to the connection; `true` when it
    /// may have ended what needs pass-through.
    pub fn see(&mut self, kind: Kind, argv: &[&[u8]]) -> bool {
        let sub = |name: &[u8]| argv.get(1).is_some_and(|a| a.eq_ignore_ascii_case(name));
        let value = |v: &[u8]| argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(v));
        match kind {
            Kind::Streaming => {
                let name = argv[0].to_ascii_lowercase();
                if matches!(name.as_slice(), b"monitor" | b"sync" | b"psync") {
                    self.monitor = true;
                }
                matches!(name.as_slice(), b"unsubscribe" | b"punsubscribe" | b"sunsubscribe")
            }
            Kind::Client if sub(b"tracking") => value(b"off"),
            Kind::Client if sub(b"reply") => {
                // SKIP silences only the next request, which is the one that may end the
                // state, never a marker.
                self.replies_off = value(b"off");
                value(b"on")
            }
            Kind::Multi => {
                self.in_multi = true;
                false
            }
            Kind::Exec | Kind::Discard => {
                self.in_multi = false;
                false
            }
            Kind::Select | Kind::Auth | Kind::ReadMode | Kind::Watch => {
                self.sticky = true;
                false
            }
            Kind::Reset => {
                // Redis leaves MONITOR on RESET too, but the reply to RESET may come
                // after monitor lines strata cannot tell from replies: stay as it is.
                *self = Follow { monitor: self.monitor, reset: true, ..Follow::default() };
                !self.monitor
            }
            _ => false,
        }
    }

    /// Markers can be sent now: Redis will answer them, in order.
    pub fn can_probe(&self) -> bool {
        !self.monitor && !self.replies_off && !self.in_multi
    }
}

/// The markers of one probe: their requests, and how to recognise their replies.
#[derive(Debug, Clone)]
pub struct Probe {
    before: Bytes,
    after: Bytes,
}

impl Probe {
    /// A probe whose tokens no client can guess: `seed` is random, `n` counts probes.
    pub fn new(seed: u64, n: u64) -> Probe {
        Probe {
            before: Bytes::from(format!("strata-probe-{seed:016x}-{n}-a")),
            after: Bytes::from(format!("strata-probe-{seed:016x}-{n}-b")),
        }
    }

    /// `PING before`, `CLIENT INFO`, `PING after`, as one write.
    pub fn requests(&self) -> BytesMut {
        let mut out = BytesMut::new();
        for args in [&[&b"PING"[..], &self.before][..], &[b"CLIENT", b"INFO"], &[b"PING", &self.after]] {
            out.put_slice(&crate::resp::reply::encode_command(args));
        }
        out
    }

    /// The reply to the first marker: from here on, only the probe's replies and pushes come.
    pub fn is_before(&self, frame: &[u8]) -> bool {
        is_ping_reply(frame, &self.before)
    }

    /// The reply to the last marker: the probe is over.
    pub fn is_after(&self, frame: &[u8]) -> bool {
        is_ping_reply(frame, &self.after)
    }
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
    /// The client's database, unless the connection is to stay the client's own.
    pub db: Option<i64>,
    /// The upstream URL's user, unless the connection is to stay the client's own.
    pub user: Option<&'a str>,
}

impl Expect<'_> {
    /// `Some(db)` when `reply` (to `CLIENT INFO`) shows a connection in no special state
    /// (no subscription, tracking, MONITOR, MULTI, name or redirect) that matches what
    /// strata expects; `db` is its database. `None` for anything else, errors included.
    pub fn judge(&self, reply: &[u8]) -> Option<i64> {
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
        let same_db = self.db.is_none_or(|want| want == db);
        let same_user = self.user.is_none_or(|want| field("user") == Some(want));
        (idle && same_db && same_user).then_some(db)
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

    fn see(follow: &mut Follow, kind: Kind, words: &str) -> bool {
        let argv: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        follow.see(kind, &argv)
    }

    #[test]
    fn follows_what_may_end_the_state() {
        let mut f = Follow::default();
        assert!(!see(&mut f, Kind::Streaming, "SUBSCRIBE a"));
        assert!(see(&mut f, Kind::Streaming, "UNSUBSCRIBE"));
        assert!(see(&mut f, Kind::Streaming, "sunsubscribe x"));
        assert!(see(&mut f, Kind::Client, "CLIENT TRACKING off"));
        assert!(!see(&mut f, Kind::Client, "CLIENT TRACKING on REDIRECT 4"));
        assert!(!see(&mut f, Kind::Client, "CLIENT REPLY OFF"));
        assert!(!f.can_probe());
        assert!(see(&mut f, Kind::Client, "CLIENT REPLY ON"));
        assert!(f.can_probe());
        assert!(!see(&mut f, Kind::Multi, "MULTI"));
        assert!(!f.can_probe());
        see(&mut f, Kind::Exec, "EXEC");
        assert!(f.can_probe());
        see(&mut f, Kind::Select, "SELECT 2");
        assert!(f.sticky);
        assert!(see(&mut f, Kind::Reset, "RESET"));
        assert_eq!(f, Follow { reset: true, ..Follow::default() });
        see(&mut f, Kind::Streaming, "MONITOR");
        assert!(!f.can_probe());
        assert!(!see(&mut f, Kind::Reset, "RESET"), "a MONITOR connection is never probed");
    }

    #[test]
    fn recognises_only_its_own_markers() {
        let probe = Probe::new(0xfeed, 7);
        let token = "strata-probe-000000000000feed-7-a";
        assert!(probe.is_before(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(probe.is_before(format!("*2\r\n$4\r\npong\r\n${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(!probe.is_after(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
        assert!(!probe.is_before(b"$5\r\nhello\r\n"));
        assert!(!probe.is_before(
            format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n{token}\r\n", token.len()).as_bytes()
        ));
        let requests = String::from_utf8(probe.requests().to_vec()).unwrap();
        assert!(
            requests.starts_with("*2\r\n$4\r\nPING\r\n")
                && requests.contains("$6\r\nCLIENT\r\n$4\r\nINFO\r\n")
        );
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
        let shared = Expect { protocol: Protocol::Resp2, db: Some(0), user: Some("default") };
        assert_eq!(shared.judge(info("N", 0, 2).as_bytes()), Some(0));
        assert_eq!(shared.judge(info("P", 0, 2).as_bytes()), None, "still subscribed");
        assert_eq!(shared.judge(info("t", 0, 2).as_bytes()), None, "still tracking");
        assert_eq!(shared.judge(info("N", 3, 2).as_bytes()), None, "another database");
        assert_eq!(shared.judge(info("N", 0, 3).as_bytes()), None, "another protocol");
        let resp3 = Expect { protocol: Protocol::Resp3, ..shared.clone() };
        assert_eq!(resp3.judge(info("N", 0, 3).as_bytes()), Some(0));
        let own = Expect { protocol: Protocol::Resp2, db: None, user: None };
        assert_eq!(own.judge(info("N", 3, 2).as_bytes()), Some(3));
        let refused = b"-ERR Can't execute 'client|info': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
        assert_eq!(shared.judge(refused), None);
    }
}
