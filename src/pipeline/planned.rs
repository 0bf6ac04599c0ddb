//! A tiered request's plan: the TTL policy applied (`tier::plan`), the key's rows forgotten
//! on writes, and the note its reply needs: what to count, and whether PostgreSQL may
//! answer a miss (read-through).

use super::{
    Account, AccountKeys, DeferredRead, Elements, Env, Note, Prepared, Through, arity_ok, refuse, through,
};
use crate::command::{CommandInfo, Kind, cmd_flag};
use crate::session::Session;
use crate::tier::UpstreamDown;
use crate::tier::plan::{self, KeyRoles, Mode, Planned, Role};
use crate::tier::{Class, ReplyFix};

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
    let request = plan::Request { table: env.tiers, info, argv, raw, mode: mode(session, info) };
    let plan = match plan::plan(&request) {
        Planned::Untiered => return Prepared::Untouched,
        Planned::Unclassified => {
            env.stats.record_unclassified();
            return Prepared::Untouched;
        }
        Planned::Read(keys) => return read_note(env, session, info, argv, &keys),
        Planned::Plan(plan) => plan,
    };
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
    let through = read_through(env, session, info, argv, &plan.keys);
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

/// The note of a plain read on `keys`: count it, and read through from PostgreSQL where
/// a rule covers it.
#[inline(always)]
fn read_note(env: &Env, session: &Session, info: &CommandInfo, argv: &[&[u8]], keys: &KeyRoles) -> Prepared {
    let account = account(info, AccountKeys::from_roles(keys));
    let through = read_through(env, session, info, argv, keys);
    Prepared::Forward { rewrite: None, note: Note::counted(1, ReplyFix::None, account, through) }
}

/// A read PostgreSQL can answer, outside transactions (EXEC's reply cannot be patched)
/// and only on the database the rules describe. Nothing is built for it unless its reply
/// calls for PostgreSQL (see `DeferredRead`).
fn read_through(
    env: &Env,
    session: &Session,
    info: &CommandInfo,
    argv: &[&[u8]],
    keys: &[(Class, Role, u32)],
) -> Through {
    if env.fallback.is_empty() || session.in_multi || session.other_db {
        return Through::No;
    }
    let Some(miss) = through::covered(env.fallback, &info.name, argv) else { return Through::No };
    let when_down = keys
        .iter()
        .all(|(class, _, _)| env.tiers.tier(class.tier).on_upstream_down == UpstreamDown::Fallback);
    Through::Read(DeferredRead {
        at: 0,
        miss,
        protocol: session.protocol,
        when_down,
        // A WATCHing client's read is answered but never written back: the write would
        // touch the watched key and abort its transaction.
        write_back: !session.watching,
    })
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
