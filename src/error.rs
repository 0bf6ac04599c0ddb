//! strata's own failures, typed: what went wrong (`Kind`) and on which side (`Side`).
//! `Error::reply` is the one place such a failure becomes a RESP error, so the code a
//! client sees (`TRYAGAIN` for "not sent, retry", `ERR` otherwise) follows from the kind,
//! and degradation (answer from PostgreSQL while Redis is down) matches on the kind that
//! travels with the replies (`upstream::Replies::failed`), never on the reply's bytes.
//!
//! Errors that Redis itself returns are Redis' bytes and never pass through here; errors
//! strata answers in Redis' own words for commands it handles (`wrong number of
//! arguments`, `syntax error`) are built with `Reply::err` where the command is answered.

use std::fmt;

use bytes::Bytes;

use crate::resp::Reply;
use crate::resp::reply::Protocol;

/// Which side of strata failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The upstream Redis (or strata's connection to it).
    Redis,
    /// The PostgreSQL read-through loads from.
    Postgres,
    /// strata itself (a task that ended before answering).
    Strata,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing was sent: no connection, or the breaker is open. Safe to retry.
    Unavailable,
    /// The request was sent and its connection ended before the reply: it may have run.
    Lost,
    /// A connection of the client's own could not be opened; nothing was sent.
    CannotConnect,
    /// The side answered with a failure of its own (a query error, a refused handshake).
    Failed,
}

/// A failure strata answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: Kind,
    /// Where.
    pub side: Side,
    /// For the client and the log: which address, what the database said.
    pub detail: String,
}

impl Error {
    /// A failure of `kind` on `side`, explained by `detail` (may be empty).
    pub fn new(kind: Kind, side: Side, detail: impl Into<String>) -> Error {
        Error { kind, side, detail: detail.into() }
    }

    /// Redis could not be reached, so nothing was sent.
    pub fn redis_unavailable(detail: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, Side::Redis, detail)
    }

    /// The connection to Redis ended with the request on it.
    pub fn redis_lost() -> Error {
        Error::new(Kind::Lost, Side::Redis, "")
    }

    /// True when Redis did not answer (down, unreachable, connection lost), so a tier that
    /// falls back may answer from PostgreSQL instead.
    pub fn is_redis_down(&self) -> bool {
        self.side == Side::Redis && self.kind != Kind::Failed
    }

    /// The RESP error a client gets: the one place strata's failures are worded.
    pub fn reply(&self) -> Reply {
        Reply::Error(self.to_string())
    }

    /// The reply encoded once per expected reply frame, so the client's count stays right.
    pub fn repeated(&self, frames: usize) -> Bytes {
        let line = self.reply().to_bytes(Protocol::Resp2);
        Bytes::from(line.repeat(frames))
    }
}

impl fmt::Display for Error {
    /// The error line's text, code first (`TRYAGAIN` for "not sent, retry", else `ERR`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = if self.kind == Kind::Unavailable { "TRYAGAIN" } else { "ERR" };
        let d = &self.detail;
        match (self.side, self.kind) {
            (Side::Redis, Kind::Unavailable) => write!(f, "{code} strata: upstream unavailable ({d})"),
            (Side::Redis, Kind::Lost) => write!(f, "{code} upstream connection lost"),
            (Side::Redis, Kind::CannotConnect) => write!(f, "{code} upstream unavailable: {d}"),
            (Side::Redis, Kind::Failed) => write!(f, "{code} upstream {d}"),
            (Side::Postgres | Side::Strata, _) => write!(f, "{code} strata: {d}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_follows_the_kind() {
        let down = Error::redis_unavailable("not connected to redis://h:1");
        let open = Error::redis_unavailable("circuit open").reply().to_bytes(Protocol::Resp3);
        assert_eq!(&open[..], b"-TRYAGAIN strata: upstream unavailable (circuit open)\r\n");
        let line = b"-TRYAGAIN strata: upstream unavailable (not connected to redis://h:1)\r\n";
        assert_eq!(&down.repeated(2)[..], [&line[..], &line[..]].concat());
        assert_eq!(&Error::redis_lost().repeated(1)[..], b"-ERR upstream connection lost\r\n");
        assert!(down.is_redis_down() && Error::redis_lost().is_redis_down());
        assert!(!Error::new(Kind::Failed, Side::Redis, "x").is_redis_down());
        assert!(!Error::new(Kind::Unavailable, Side::Postgres, "x").is_redis_down());
    }
}
