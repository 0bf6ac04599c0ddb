//! A tiered request's plan: the TTL policy applied (`tier::plan`), the key's rows forgotten
//! on writes, and the note its reply needs: what to count, and whether PostgreSQL may
//! answer a miss (read-through).

use bytes::Bytes;

use super::{
    Account, AccountKeys, DeferredGet, Elements, Env, Note, Prepared, Through, arity_ok, refuse, through,
};
use crate::command::{CommandInfo, Kind, cmd_flag};
use crate::session::Session;
use crate::tier::UpstreamDown;
use crate::tier::plan::{Input, Mode, Role};
use crate::tier::{Class, ReplyFix, plan};

/// Applies the tier policy; `extra` is set to how many commands strata queued after this one.
#[inline(always)]
pub(super) fn tiered(
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
