//! The per-request steps between routing and the upstream connection: find the keys,
//! classify them into tiers, apply the tier's TTL policy (`tier::plan`), and remember
//! what the reply needs on its way back (`reply`): cutting strata's extra replies out,
//! appending the `# Strata` INFO section, and counting hits, misses and latency.

mod count;
mod note;
pub mod reply;
pub mod through;

use bytes::Bytes;
use tokio::time::Instant;

use crate::command::{CommandInfo, CommandTable, Kind, cmd_flag};
use crate::error::Error;
use crate::fallback::Fallback;
use crate::resp::Reply;
use crate::session::Session;
use crate::stats::{InfoExtra, Stats};
use crate::tier::UpstreamDown;
use crate::tier::plan::{Input, Mode, Role};
use crate::tier::{Class, ReplyFix, TierTable, plan};
pub use note::{Account, AccountKeys, DeferredGet, Elements, Note, Through};
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
    /// Forward (the rewritten bytes if any) and only count its one reply frame: the
    /// usual tiered request, kept small. Its note is built only if it cannot share the
    /// previous one (`Note::push_counted`).
    Counted { rewrite: Option<Bytes>, account: Account },
    /// Answer with this; Redis never sees the request.
    Answer(Reply),
    /// Redis is down: answer this read from PostgreSQL.
    FromDatabase(Box<ReadThrough>),
}

#[cfg(test)]
impl Prepared {
    /// `Counted` as the `Forward` it stands for; anything else as it is (for tests that
    /// compare the fast paths' notes with the general plan's).
    pub fn into_forward(self) -> Prepared {
        match self {
            Prepared::Counted { rewrite, account } => {
                Prepared::Forward { rewrite, note: Note::counting(account) }
            }
            other => other,
        }
    }
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
            if !session.tx_open {
                session.tx_open = true;
                session.tx_mask.clear();
                session.tx_accounts.clear();
            }
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
        prepared = when_down(prepared);
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
        Prepared::Counted { rewrite, account } => {
            *prepared = Prepared::Forward { rewrite, note: Note::plain(1) };
            Some(account)
        }
    };
    session.tx_mask.push(extra);
    session.tx_accounts.push(account);
}

/// Refuses a request. Inside MULTI, Redis must learn of the failure too, so that EXEC
/// aborts as it would for a command refused while queueing: a bare `PERSIST` (wrong
/// arity, refused by Redis at once) goes in its place and its error is replaced by
/// strata's.
fn refuse(session: &Session, reply: Reply) -> Prepared {
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
fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 { argc == arity } else { argc >= -arity }
}

/// With the breaker open nothing is sent: reads of fallback tiers with a rule go to
/// PostgreSQL, everything else fails at once.
fn when_down(prepared: Prepared) -> Prepared {
    match prepared {
        Prepared::Forward { note: Note { through: Through::Ready(t), .. }, .. } if t.when_down => {
            Prepared::FromDatabase(t)
        }
        Prepared::Answer(reply) => Prepared::Answer(reply),
        _ => Prepared::Answer(Error::redis_unavailable("circuit open").reply()),
    }
}

/// Applies the tier policy; `extra` is set to how many commands strata queued after this one.
#[inline(always)]
fn tiered(
    env: &Env,
    session: &Session,
    info: &CommandInfo,
    argv: &[&[u8]],
    raw: &[u8],
    extra: &mut u16,
) -> Prepared {
    // A request with the wrong number of arguments gets Redis' own arity error; strata
    // neither plans nor rewrites it.
    if env.tiers.is_empty() || info.key_specs.is_empty() || !arity_ok(info.arity, argv.len()) {
        return Prepared::Untouched;
    }
    if let (Some(flags), Some(key)) = (info.single_key(), argv.get(1)) {
        // The usual request: one key, the first argument. An untiered key or a plain read
        // is settled here, without the general key search and classification.
        let Some(class) = env.tiers.classify(key) else { return Prepared::Untouched };
        if plan::reads_plainly(env.tiers, info, std::iter::once(class)) {
            let role = plan::role(true, flags);
            let keys = [(class, role, 1)];
            return read_note(env, session, info, argv, raw, &keys, AccountKeys::First(class, role));
        }
        if info.kind == Kind::Set
            && let Some(rewrite) = plan::plain_set(env.tiers, class, argv, raw)
        {
            return plain_set_note(env, info, argv, class, rewrite);
        }
    }
    let keys = match crate::command::keys_of(info, argv) {
        Ok(keys) => keys,
        Err(_) => {
            env.stats.record_unclassified();
            return Prepared::Untouched;
        }
    };
    let input = Input {
        table: env.tiers,
        info,
        argv,
        keys: &keys,
        mode: mode(session, info),
        now_ms: Default::default(),
    };
    let classified = plan::classify(&input);
    if classified.is_empty() {
        return Prepared::Untouched;
    }
    // Plain reads (the hot path) skip building a plan: only their keys are needed.
    if let Some(keys) = plan::plain_read(&input, &classified) {
        return read_note(env, session, info, argv, raw, &keys, AccountKeys::from_roles(&keys));
    }
    let plan = plan::plan_classified(&input, classified);
    let counts = crate::stats::PolicyCounts {
        ttl_rewrites: plan.ttl_rewrites,
        clamps: plan.clamps,
        persist_denied: plan.persist_denied,
    };
    if plan.ttl_rewrites + plan.clamps + plan.persist_denied > 0 {
        env.stats.record_policy(plan.keys[0].0, counts);
    }
    for &class in &plan.rewritten {
        env.stats.record_policy(class, crate::stats::PolicyCounts { ttl_rewrites: 1, ..Default::default() });
    }
    if let Some(reply) = plan.refuse {
        return refuse(session, reply);
    }
    if !info.has(cmd_flag::READONLY) {
        forget_rows(env, argv, plan.keys.iter().map(|k| k.2));
    }
    // Planned requests may be rewritten: their key would not be where `raw` has it.
    let through = read_through(env, session, info, argv, &plan.keys, None);
    let account = account(info, AccountKeys::from_roles(&plan.keys));
    let note = Note::counted(plan.frames, plan.fix, account, through);
    *extra = plan.queued_extra;
    Prepared::Forward { rewrite: plan.rewrite, note }
}

/// Any command that may change a key (writes, DEL, RENAME …) makes a row loaded for it
/// possibly stale and a remembered "no row" possibly wrong: forget both for the keys (by
/// argument index) that a read-through rule covers.
fn forget_rows(env: &Env, argv: &[&[u8]], indexes: impl Iterator<Item = u32>) {
    if env.fallback.is_empty() {
        return;
    }
    for index in indexes {
        let key = argv[index as usize];
        if env.fallback.rule_for(key).is_some() {
            env.fallback.forget(key);
        }
    }
}

/// `SET k v` rewritten with the tier's TTL: booked as a TTL rewrite, and a loaded row
/// for the key is forgotten, as for every write (see `tiered`).
#[inline(always)]
fn plain_set_note(env: &Env, info: &CommandInfo, argv: &[&[u8]], class: Class, rewrite: Bytes) -> Prepared {
    env.stats.record_policy(class, crate::stats::PolicyCounts { ttl_rewrites: 1, ..Default::default() });
    forget_rows(env, argv, std::iter::once(1));
    Prepared::Counted {
        rewrite: Some(rewrite),
        account: account(info, AccountKeys::First(class, Role::Write)),
    }
}

/// How to count the reply of a request on `keys`.
#[inline(always)]
fn account(info: &CommandInfo, keys: AccountKeys) -> Account {
    Account {
        elements: match info.kind {
            Kind::Mget => Elements::PerKey,
            Kind::PerField => Elements::PerField,
            _ => Elements::Whole,
        },
        zero_is_miss: info.kind == Kind::ZeroIsMiss,
        keys,
    }
}

/// The note of a plain read (see `plan::reads_plainly`) on `keys`: count it, and read
/// through from PostgreSQL where a rule covers it.
#[inline(always)]
fn read_note(
    env: &Env,
    session: &Session,
    info: &CommandInfo,
    argv: &[&[u8]],
    raw: &[u8],
    keys: &[(Class, Role, u32)],
    account_keys: AccountKeys,
) -> Prepared {
    let account = account(info, account_keys);
    match read_through(env, session, info, argv, keys, Some(raw)) {
        Through::No => Prepared::Counted { rewrite: None, account },
        through => {
            Prepared::Forward { rewrite: None, note: Note::counted(1, ReplyFix::None, account, through) }
        }
    }
}

/// A read PostgreSQL can answer, outside transactions (EXEC's reply cannot be patched)
/// and only on the database the rules describe. `GET key` is deferred (nothing built
/// unless it misses) while Redis is up, when `raw` has the request's bytes as they will
/// be sent.
fn read_through(
    env: &Env,
    session: &Session,
    info: &CommandInfo,
    argv: &[&[u8]],
    keys: &[(Class, Role, u32)],
    raw: Option<&[u8]>,
) -> Through {
    if env.fallback.is_empty() || session.in_multi || session.other_db {
        return Through::No;
    }
    let when_down = || {
        keys.iter().all(|(class, _, _)| env.tiers.tier(class.tier).on_upstream_down == UpstreamDown::Fallback)
    };
    // A WATCHing client's read is answered but never written back: the write would
    // touch the watched key and abort its transaction.
    if !env.upstream_down
        && !session.watching
        && let Some(raw) = raw
        && let Some((rule, key)) = through::plain_get(env.fallback, &info.name, argv)
        && let Some(at) = (key.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)
        && at + key.len() <= raw.len()
    {
        return Through::Get(DeferredGet {
            rule: rule as u32,
            at: at as u32,
            len: key.len() as u32,
            protocol: session.protocol,
            when_down: when_down(),
        });
    }
    let Some(mut through) = through::detect(env.fallback, &info.name, argv, session.protocol) else {
        return Through::No;
    };
    through.when_down = when_down();
    through.write_back = !session.watching;
    Through::Ready(Box::new(through))
}

fn mode(session: &Session, info: &CommandInfo) -> Mode {
    if session.in_multi {
        Mode::InMulti
    } else if session.watching {
        Mode::Watching
    } else if info.has(cmd_flag::BLOCKING) {
        Mode::NoWrap
    } else {
        Mode::Plain
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
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use crate::tier::plan::{Input, Mode};

    const CONFIG: &str = r#"
[[tiers]]
name = "t"
prefixes = ["t:"]
default_ttl = "1h"
"#;

    /// What an `Env` borrows, for one tier `t:` with a default TTL.
    struct Fixture {
        tiers: TierTable,
        stats: Stats,
        commands: CommandTable,
        fallback: std::sync::Arc<Fallback>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let config = Config::parse(CONFIG, &Overrides::default()).expect("config");
            let tiers = TierTable::new(&config.tiers);
            let stats = Stats::new(&tiers);
            let fallback = crate::start_fallback(&config, tokio_util::sync::CancellationToken::new());
            Fixture { tiers, stats, commands: CommandTable::builtin(), fallback }
        }

        fn env(&self) -> Env<'_> {
            Env {
                commands: &self.commands,
                tiers: &self.tiers,
                stats: &self.stats,
                info: &no_info,
                fallback: &self.fallback,
                upstream_down: false,
                now: Instant::now(),
            }
        }
    }

    fn no_info() -> InfoExtra {
        panic!("no INFO here")
    }

    /// Requests counted alike share one note; their replies are still counted one by one,
    /// with or without the frame ends from the connection, and pass through unchanged.
    #[tokio::test]
    async fn repeated_notes_count_every_reply() {
        let fixture = Fixture::new();
        let (env, commands, stats) = (fixture.env(), &fixture.commands, &fixture.stats);
        let mut session = Session::new(1);
        let replies = Bytes::from_static(b"$1\r\nv\r\n$-1\r\n$1\r\nv\r\n+PONG\r\n$-1\r\n");
        for ends in [&[7u32, 12, 19, 26, 31][..], &[]] {
            let mut notes = Vec::new();
            for argv in [&[&b"GET"[..], b"t:1"][..], &[b"GET", b"t:2"], &[b"GET", b"t:3"]] {
                let raw = crate::resp::reply::encode_command(argv);
                let Prepared::Counted { account, .. } =
                    prepare(&env, &mut session, argv, &raw, commands.lookup(argv).map(|i| &**i))
                else {
                    panic!("GET on a tier is counted")
                };
                Note::push_counted(&mut notes, account);
            }
            assert_eq!((notes.len(), notes[0].repeat), (1, 3), "three GETs, one note");
            notes.push(Note::plain(1));
            let raw = crate::resp::reply::encode_command(&[b"GET", b"t:4"]);
            let argv: &[&[u8]] = &[b"GET", b"t:4"];
            // The same request as a full note joins the same way.
            let Prepared::Forward { note, .. } =
                prepare(&env, &mut session, argv, &raw, commands.lookup(argv).map(|i| &**i)).into_forward()
            else {
                panic!("GET on a tier is counted")
            };
            Note::push(&mut notes, note);
            assert_eq!(notes.len(), 3, "a plain note in between is not merged across");
            let before = stats.tier(0);
            match reply::finish(&env, replies.clone(), ends, &mut notes, &Bytes::new(), env.now, false) {
                reply::Settled::Ready(bytes) => assert_eq!(bytes, replies),
                other => panic!("nothing to load: {other:?}"),
            }
            let after = stats.tier(0);
            assert_eq!((after.hits - before.hits, after.misses - before.misses), (2, 2), "ends {ends:?}");
        }
    }

    /// The single-key fast paths of `tiered` must decide exactly what the general plan does.
    #[tokio::test]
    async fn fast_paths_agree_with_the_general_plan() {
        let fixture = Fixture::new();
        let (env, commands) = (fixture.env(), &fixture.commands);
        let mut session = Session::new(1);
        for argv in
            [&[&b"SET"[..], b"t:1", b"v"][..], &[b"GET", b"t:1"], &[b"HGET", b"t:1", b"f"], &[b"GET", b"u:1"]]
        {
            let command = commands.lookup(argv).map(|i| &**i).expect("known command");
            let keys = crate::command::keys_of(command, argv).expect("keys");
            let input = Input {
                table: &fixture.tiers,
                info: command,
                argv,
                keys: &keys,
                mode: Mode::Plain,
                now_ms: Default::default(),
            };
            let general = plan::plan(&input);
            let raw = crate::resp::reply::encode_command(argv);
            let fast = prepare(&env, &mut session, argv, &raw, Some(command)).into_forward();
            match (general, fast) {
                (None, Prepared::Untouched) => {}
                (Some(plan), Prepared::Forward { rewrite, note }) => {
                    assert_eq!(rewrite, plan.rewrite, "{argv:?}");
                    assert_eq!(note.frames, plan.frames);
                    assert_eq!(note.fix, plan.fix);
                    let keys: Vec<_> = note.account.expect("counted").keys.iter().collect();
                    assert_eq!(keys, plan.keys.to_vec(), "{argv:?}");
                }
                (general, fast) => panic!("{argv:?}: plan {general:?} but prepared {fast:?}"),
            }
        }
    }
}
