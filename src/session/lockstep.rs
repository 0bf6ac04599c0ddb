//! Lockstep with a connection of the client's own that carries state strata does not serve
//! itself (subscriptions, client-side caching, reply modes), as Redis's own clients keep it
//! (redis-py, Lettuce, rueidis): for each request sent, the replies it owes (none under
//! `CLIENT REPLY OFF`/`SKIP`); for each frame Redis sends, whether it answers a request or
//! is pushed on its own (RESP3 `>` frames, RESP2 `message`/`pmessage`/`smessage`), and what
//! it says of the connection. strata learns that the state ended from Redis's own replies
//! (the subscription counts back to 0, `+OK` to `CLIENT TRACKING off`)
//! and sends nothing of its own on the connection.
//!
//! Where counting cannot be exact (MONITOR's stream, a SUBSCRIBE whose confirmations a
//! reply mode may or may not silence, depending on the Redis version, a reply nothing
//! owed), it stops for good: frames then go to the client as they come, and the
//! connection stays the client's until it closes or RESETs.

use std::collections::VecDeque;
use std::ops::Range;

use crate::command::Kind;

use shapes::lower;

mod receive;
mod shapes;
use crate::resp::reply::Protocol;

/// The subscribe family, in the order of `FAMILY`.
const FAMILY: [&[u8]; 6] =
    [b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"ssubscribe", b"sunsubscribe"];

/// Commands Redis accepts on a subscribed RESP2 connection; any other is refused.
const SUBSCRIBED_RESP2: [&[u8]; 9] = [
    b"subscribe",
    b"unsubscribe",
    b"psubscribe",
    b"punsubscribe",
    b"ssubscribe",
    b"sunsubscribe",
    b"ping",
    b"quit",
    b"reset",
];

/// How many redirect targets' ids are remembered (a client names one at a time).
const REMEMBERED_REDIRECTS: usize = 8;

/// `CLIENT REPLY`'s mode, as Redis applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// The next request's reply is not sent.
    Skip,
}

/// What a request does to the connection once Redis accepted it (its reply no error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    Tracking(bool),
    Protocol(Protocol),
    /// The reply names a client by Redis id: `CLIENT GETREDIR`, `CLIENT TRACKINGINFO`.
    NamesRedirect,
    /// Queued in MULTI with an effect strata does not follow through EXEC.
    Unknown,
}

/// The replies one request sent owes.
#[derive(Debug, PartialEq, Eq)]
enum Owed {
    /// One reply.
    Reply(Effect),
    /// EXEC's array: one element per queued command, each with its effect.
    Exec(Vec<Effect>),
    /// Confirmations of one subscribe-family command (`FAMILY` index): so many, or
    /// (`None`, an UNSUBSCRIBE without arguments) until that family's count is 0.
    Confirm { family: usize, left: Option<usize> },
}

/// What to do after sending a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Go on with the next one.
    Go,
    /// It may end the state: send nothing more until its replies are in, then judge.
    Pause,
}

/// What a frame from Redis is for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Forward it as it is.
    Forward,
    /// Forward it with the Redis client id at this range replaced by strata's.
    Redirect(Range<usize>, i64),
}

/// The state of one lockstep connection, followed from its requests and replies.
#[derive(Debug)]
pub struct Lockstep {
    protocol: Protocol,
    /// Channels, patterns and shard channels subscribed (from Redis's confirmations).
    channels: i64,
    patterns: i64,
    shard: i64,
    tracking: bool,
    replies: ReplyMode,
    in_multi: bool,
    /// Effects of the commands queued in MULTI, applied by EXEC's array.
    queued: Vec<Effect>,
    /// Counting stopped for good (see the module docs).
    uncounted: bool,
    /// State strata would lose by leaving this connection (SELECT, WATCH, AUTH, a name…).
    sticky: bool,
    /// A CLIENT REPLY OFF or SKIP was sent: whether Redis took it shows in no reply, so
    /// the count may be off by the error of a refused one. The connection then stays the
    /// client's (`plain` is never true) and a RESET goes to Redis.
    unsure: bool,
    /// Replies owed, oldest first. As long as the client's unanswered requests, which the
    /// caller bounds.
    owed: VecDeque<Owed>,
    /// Redis ids of redirect targets the client named, with their strata ids.
    redirects: VecDeque<(i64, u64)>,
}

impl Lockstep {
    /// A connection in `protocol`, inside MULTI when `in_multi`.
    pub fn new(protocol: Protocol, in_multi: bool) -> Lockstep {
        Lockstep {
            protocol,
            channels: 0,
            patterns: 0,
            shard: 0,
            tracking: false,
            replies: ReplyMode::On,
            in_multi,
            queued: Vec::new(),
            uncounted: false,
            sticky: false,
            unsure: false,
            owed: VecDeque::new(),
            redirects: VecDeque::new(),
        }
    }

    /// Stops counting: frames go as they come from here on (MONITOR, or a caller that
    /// cannot see the requests).
    pub fn stop_counting(&mut self) {
        self.uncounted = true;
        self.owed.clear();
    }

    /// Whether replies are still counted.
    pub fn counting(&self) -> bool {
        !self.uncounted
    }

    /// Replies still owed.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Back in the state a plain connection has, every reply in: normal service can go on
    /// without this connection.
    pub fn plain(&self) -> bool {
        !self.uncounted
            && !self.unsure
            && !self.sticky
            && !self.tracking
            && !self.in_multi
            && self.replies == ReplyMode::On
            && (self.channels, self.patterns, self.shard) == (0, 0, 0)
            && self.owed.is_empty()
    }

    /// Remembers that the client named the redirect target `strata` (Redis id `redis`).
    pub fn note_redirect(&mut self, redis: i64, strata: u64) {
        self.redirects.retain(|(r, _)| *r != redis);
        if self.redirects.len() == REMEMBERED_REDIRECTS {
            self.redirects.pop_front();
        }
        self.redirects.push_back((redis, strata));
    }

    /// The strata id of a redirect target the client named by it.
    pub fn redirect_named(&self, redis: i64) -> Option<u64> {
        self.redirects.iter().find(|(r, _)| *r == redis).map(|(_, s)| *s)
    }

    /// Whether strata can hold the client's RESET and answer it itself once nothing is
    /// owed (sent on, Redis would log the connection in as `default`): only while every
    /// reply is counted for sure. `Some(answered)`: held, and answered unless a SKIP
    /// silences it; `None`: it goes to Redis.
    pub fn holds_reset(&self) -> Option<bool> {
        (!self.uncounted && !self.unsure).then_some(self.replies != ReplyMode::Skip)
    }

    /// An empty request (a blank line, `*0`): Redis sends nothing for it, but it takes
    /// a pending SKIP, as any request does.
    pub fn blank(&mut self) {
        if self.replies == ReplyMode::Skip {
            self.replies = ReplyMode::On;
        }
    }

    /// Notes a request (`kind`, `argv`) sent on the connection: what it owes and does.
    pub fn send(&mut self, kind: Kind, argv: &[&[u8]]) -> Sent {
        let sub = |n: &[u8]| argv.get(1).is_some_and(|a| a.eq_ignore_ascii_case(n));
        let reply_arg = (kind == Kind::Client && sub(b"reply") && argv.len() == 3).then(|| argv[2]);
        if self.uncounted {
            return Sent::Go;
        }
        let mut name = [0u8; 16];
        let name = lower(argv[0], &mut name);
        let refused_here =
            self.protocol == Protocol::Resp2 && self.subscribed() && !SUBSCRIBED_RESP2.contains(&name);
        let silenced = self.silences(reply_arg.filter(|_| !refused_here && !self.in_multi));
        if refused_here {
            return self.owe(silenced, Owed::Reply(Effect::None), Sent::Go);
        }
        if self.in_multi
            && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Watch | Kind::Quit)
        {
            self.queued.push(effect_in_multi(kind, argv, &mut self.sticky));
            return self.owe(silenced, Owed::Reply(Effect::None), Sent::Go);
        }
        match kind {
            Kind::Multi => {
                self.in_multi = true;
                self.owe(silenced, Owed::Reply(Effect::None), Sent::Go)
            }
            Kind::Exec | Kind::Discard if self.in_multi => {
                self.in_multi = false;
                let queued = std::mem::take(&mut self.queued);
                let owed = if kind == Kind::Exec { Owed::Exec(queued) } else { Owed::Reply(Effect::None) };
                self.owe(silenced, owed, Sent::Pause)
            }
            Kind::Streaming => self.streaming(name, argv, silenced),
            Kind::Client if sub(b"tracking") => {
                let on = argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"on"));
                self.owe(silenced, Owed::Reply(Effect::Tracking(on)), Sent::Pause)
            }
            Kind::Client if sub(b"getredir") || sub(b"trackinginfo") => {
                self.owe(silenced, Owed::Reply(Effect::NamesRedirect), Sent::Go)
            }
            // Always answered; it ends nothing strata resumes on (see `unsure`).
            Kind::Client if reply_arg.is_some_and(|a| a.eq_ignore_ascii_case(b"on")) => {
                self.owe(false, Owed::Reply(Effect::None), Sent::Go)
            }
            Kind::Client
                if reply_arg
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"off") || a.eq_ignore_ascii_case(b"skip")) =>
            {
                // Accepted, it gets no reply; refused (an ACL, a busy script), it gets an
                // error that strata would take for a later request's reply. Nothing can
                // tell the two apart, so nothing may rest on the count from here.
                self.unsure = true;
                Sent::Go
            }
            Kind::Client if sub(b"setname") || sub(b"setinfo") || sub(b"no-evict") || sub(b"no-touch") => {
                self.sticky = true;
                self.owe(silenced, Owed::Reply(Effect::None), Sent::Go)
            }
            Kind::Hello => {
                self.sticky = true;
                let effect = match argv.get(1).map(|v| &v[..]) {
                    Some(b"2") => Effect::Protocol(Protocol::Resp2),
                    Some(b"3") => Effect::Protocol(Protocol::Resp3),
                    _ => Effect::None,
                };
                self.owe(silenced, Owed::Reply(effect), Sent::Go)
            }
            Kind::Auth | Kind::Select | Kind::ReadMode | Kind::Watch => {
                self.sticky = true;
                self.owe(silenced, Owed::Reply(Effect::None), Sent::Go)
            }
            _ => self.owe(silenced, Owed::Reply(Effect::None), Sent::Go),
        }
    }

    /// SUBSCRIBE and its family, MONITOR, SYNC.
    fn streaming(&mut self, name: &[u8], argv: &[&[u8]], silenced: bool) -> Sent {
        let Some(family) = FAMILY.iter().position(|f| *f == name) else {
            // MONITOR's stream (or a replication stream) is not replies.
            self.stop_counting();
            return Sent::Go;
        };
        if silenced {
            // Whether a reply mode silences confirmations depends on the Redis version.
            self.stop_counting();
            return Sent::Go;
        }
        let args = argv.len() - 1;
        let unsubscribe = family % 2 == 1;
        let owed = match (args, unsubscribe) {
            (0, false) => Owed::Reply(Effect::None),
            (0, true) => Owed::Confirm { family, left: None },
            (n, _) => Owed::Confirm { family, left: Some(n) },
        };
        self.owe(false, owed, if unsubscribe { Sent::Pause } else { Sent::Go })
    }

    /// Whether this request's reply is silenced, moving the reply mode on as Redis does;
    /// `reply_arg` is the mode a valid `CLIENT REPLY` asks for.
    fn silences(&mut self, reply_arg: Option<&[u8]>) -> bool {
        let before = self.replies;
        if before == ReplyMode::Skip {
            self.replies = ReplyMode::On;
        }
        let is = |mode: &[u8]| reply_arg.is_some_and(|a| a.eq_ignore_ascii_case(mode));
        if is(b"on") {
            self.replies = ReplyMode::On;
            return false;
        }
        if is(b"off") {
            self.replies = ReplyMode::Off;
        } else if is(b"skip") && before != ReplyMode::Off {
            self.replies = ReplyMode::Skip;
        }
        before != ReplyMode::On
    }

    /// Records `owed` unless silenced; a silenced request whose effect strata must see
    /// stops the counting.
    fn owe(&mut self, silenced: bool, owed: Owed, sent: Sent) -> Sent {
        if !silenced {
            self.owed.push_back(owed);
        } else if !matches!(owed, Owed::Reply(Effect::None | Effect::NamesRedirect)) {
            self.stop_counting();
        }
        sent
    }

    fn subscribed(&self) -> bool {
        self.channels + self.patterns + self.shard > 0
    }
}

/// What a command queued in MULTI does once EXEC runs it.
fn effect_in_multi(kind: Kind, argv: &[&[u8]], sticky: &mut bool) -> Effect {
    let sub = |n: &[u8]| argv.get(1).is_some_and(|a| a.eq_ignore_ascii_case(n));
    match kind {
        Kind::Client if sub(b"tracking") => {
            Effect::Tracking(argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"on")))
        }
        Kind::Client if sub(b"reply") => Effect::Unknown,
        Kind::Streaming | Kind::Hello | Kind::Reset => Effect::Unknown,
        Kind::Client if sub(b"setname") || sub(b"setinfo") || sub(b"no-evict") || sub(b"no-touch") => {
            *sticky = true;
            Effect::None
        }
        Kind::Auth | Kind::Select | Kind::ReadMode => {
            *sticky = true;
            Effect::None
        }
        _ => Effect::None,
    }
}

#[cfg(test)]
#[path = "lockstep_tests.rs"]
mod tests;
