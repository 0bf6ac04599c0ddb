//! The per-request steps between routing and the upstream connection: find the keys,
//! classify them into tiers, apply the tier's TTL policy (`tier::plan`), and remember
//! what the reply needs on its way back (`reply`): cutting strata's extra replies out,
//! appending the `# Strata` INFO section, and counting hits, misses and latency.

mod count;
mod note;
mod planned;
pub mod reply;
pub mod through;

use bytes::Bytes;
use tokio::time::Instant;

use crate::command::{CommandInfo, CommandTable, Kind};
use crate::error::Error;
use crate::fallback::Fallback;
use crate::resp::Reply;
use crate::session::Session;
use crate::stats::{InfoExtra, Stats};
use crate::tier::{ReplyFix, TierTable};
pub use note::{Account, AccountKeys, DeferredRead, Elements, Note, Through};
use planned::tiered;
pub use through::ReadThrough;

/// What the data path needs from the running proxy to prepare a request.
pub struct Env<'a> {
    /// The command table.
    pub commands: &'a CommandTable,
    /// The tiers.
    pub tiers: &'a TierTable,
    /// The counters.
    pub stats: &'a Stats,
    /// Facts for the INFO section.
    pub info: &'a dyn Fn() -> InfoExtra,
    /// Read-through rules and the database.
    pub fallback: &'a Fallback,
    /// The upstream breaker is open and the request would use a shared connection:
    /// answer without sending (from PostgreSQL where the tier allows, else TRYAGAIN).
    pub upstream_down: bool,
    /// When the batch of requests being prepared was read (one clock read per batch).
    pub now: Instant,
}

/// A request after preparation.
#[derive(Debug)]
pub enum Prepared {
    /// Forward unchanged; nothing to do with the reply.
    Untouched,
    /// Forward (the rewritten bytes if any) and treat the reply as the note says.
    Forward { rewrite: Option<Bytes>, note: Note },
    /// Answer with this; Redis never sees the request.
    Answer(Reply),
    /// Redis is down: answer this read from PostgreSQL.
    FromDatabase(Box<ReadThrough>),
}

/// Prepares one forwarded request: `argv` are its arguments and `raw` the whole request
/// as RESP (as the client sent it, or an inline command encoded). Runs for every request,
/// so the untiered path is a table lookup and an early return. Inlined into its caller,
/// so the note it builds lands where the caller keeps it: returned through a frame, the
/// note was copied right after being written, and that copy stalled.
#[inline(always)]
pub fn prepare(
    env: &Env,
    session: &mut Session,
    argv: &[&[u8]],
    raw: &[u8],
    info: Option<&CommandInfo>,
) -> Prepared {
    let Some(info) = info else { return Prepared::Untouched };
    match info.kind {
        // `decide` has already entered or left the transaction. A nested MULTI is refused
        // by Redis and the transaction goes on, so it must not reset the bookkeeping.
        Kind::Multi => {
            session.open_tx();
            return Prepared::Untouched;
        }
        Kind::Discard => {
            session.close_tx();
            return Prepared::Untouched;
        }
        Kind::Exec => return exec_request(session),
        // Redis refuses WATCH inside MULTI without queueing it.
        Kind::Watch if session.in_multi => return Prepared::Untouched,
        Kind::Info if !session.in_multi => return info_request(env, argv),
        Kind::ConfigResetStat => {
            env.stats.reset();
            env.fallback.reset();
        }
        _ => {}
    }
    let mut extra = 0;
    if !env.upstream_down && !session.in_multi {
        // The usual case returns what `tiered` built as it is: a note moved through one
        // more frame is copied, and that copy stalled on the stores that had just built it.
        return tiered(env, session, info, argv, raw, &mut extra);
    }
    let mut prepared = tiered(env, session, info, argv, raw, &mut extra);
    if env.upstream_down {
        prepared = when_down(env, prepared, raw);
    }
    if session.in_multi {
        queue_in_transaction(session, &mut prepared, extra);
    }
    prepared
}

/// Inside MULTI a command's reply is `+QUEUED`; its result arrives in EXEC's array. So
/// remember how many commands strata queued after it, and count its outcome at EXEC.
/// A request strata answered itself never reached Redis and has no place in the array.
fn queue_in_transaction(session: &mut Session, prepared: &mut Prepared, extra: u16) {
    let account = match std::mem::replace(prepared, Prepared::Untouched) {
        done @ (Prepared::Answer(_) | Prepared::FromDatabase(_)) => {
            *prepared = done;
            return;
        }
        Prepared::Untouched => None,
        Prepared::Forward { rewrite, mut note } => {
            let account = note.account.take();
            *prepared = Prepared::Forward { rewrite, note };
            account
        }
    };
    session.tx_mask.push(extra);
    session.tx_accounts.push(account);
}

/// Refuses a request. Inside MULTI, Redis must learn of the failure too, so that EXEC
/// aborts as it would for a command refused while queueing: a bare `PERSIST` (wrong
/// arity, refused by Redis at once) goes in its place and its error is replaced by
/// strata's.
pub(super) fn refuse(session: &Session, reply: Reply) -> Prepared {
    if !session.in_multi {
        return Prepared::Answer(reply);
    }
    let note = Note {
        frames: 1,
        repeat: 1,
        fix: ReplyFix::Replace(Box::new(reply.to_bytes(session.protocol))),
        account: None,
        through: Through::No,
        queued: Box::default(),
    };
    Prepared::Forward { rewrite: Some(Bytes::from_static(b"*1\r\n$7\r\nPERSIST\r\n")), note }
}

/// Redis' arity: exactly `n` arguments (command name included), or at least `-n`.
pub(super) fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 { argc == arity } else { argc >= -arity }
}

/// With the breaker open nothing is sent: reads of fallback tiers with a rule go to
/// PostgreSQL (`raw`, the request as the client sent it, says what to read), everything
/// else fails at once.
fn when_down(env: &Env, prepared: Prepared, raw: &[u8]) -> Prepared {
    match prepared {
        Prepared::Forward { note: Note { through: Through::Read(read), .. }, .. } if read.when_down => {
            match read.build(env.fallback, raw) {
                Some(read) => Prepared::FromDatabase(Box::new(read)),
                None => Prepared::Answer(Error::redis_unavailable("circuit open").reply()),
            }
        }
        Prepared::Answer(reply) => Prepared::Answer(reply),
        _ => Prepared::Answer(Error::redis_unavailable("circuit open").reply()),
    }
}

/// The client's EXEC: strata's queued commands must leave the reply array.
fn exec_request(session: &mut Session) -> Prepared {
    let (mask, accounts) = session.close_tx();
    if mask.iter().all(|&n| n == 0) && accounts.iter().all(Option::is_none) {
        return Prepared::Untouched;
    }
    let note = Note {
        frames: 1,
        repeat: 1,
        fix: ReplyFix::FilterExec { mask: mask.into_boxed_slice() },
        account: None,
        through: Through::No,
        queued: accounts.into_boxed_slice(),
    };
    Prepared::Forward { rewrite: None, note }
}

/// `INFO strata` is answered here; `INFO`, `INFO all|everything|default` and lists that
/// name `strata` get Redis' sections followed by strata's. Wherever Redis' `# Clients`
/// section is asked for, its client counts are strata's.
fn info_request(env: &Env, argv: &[&[u8]]) -> Prepared {
    let sections: Vec<String> =
        argv[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
    let wants = |section: &str| {
        sections.is_empty()
            || sections.iter().any(|s| s == section || matches!(s.as_str(), "all" | "everything" | "default"))
    };
    let wants_strata = wants("strata");
    if !wants_strata && !wants("clients") {
        return Prepared::Untouched;
    }
    let kept = argv[1..].iter().zip(&sections).filter(|(_, s)| s.as_str() != "strata").map(|(a, _)| *a);
    let others: Vec<&[u8]> = std::iter::once(argv[0]).chain(kept).collect();
    if others.len() == 1 && !sections.is_empty() {
        let section = crate::stats::info_section(env.stats, env.tiers, &(env.info)());
        return Prepared::Answer(Reply::Bulk(Bytes::from(section)));
    }
    let rewrite = (others.len() != argv.len()).then(|| crate::resp::reply::encode_command(&others));
    Prepared::Forward {
        rewrite,
        note: Note {
            frames: 1,
            repeat: 1,
            fix: ReplyFix::Info { strata: wants_strata },
            account: None,
            through: Through::No,
            queued: Box::default(),
        },
    }
}

#[cfg(test)]
mod tests;
