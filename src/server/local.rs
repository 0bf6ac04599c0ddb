//! Commands strata answers itself because their state is per client: HELLO, AUTH with the
//! upstream's own credentials, CLIENT ID/SETNAME/GETNAME/SETINFO/NO-EVICT/NO-TOUCH (and
//! CLIENT LIST/INFO/KILL, in `clients`), and the STRATA introspection command.

use bytes::Bytes;

use super::action::{Action, Route, RouteContext};
use super::clients;
use super::registry::Registry;
use crate::resp::Reply;
use crate::resp::reply::Protocol;
use crate::session::Session;

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

pub(super) fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
pub fn hello(session: &mut Session, ctx: &RouteContext, argv: &[&[u8]]) -> Action {
    let protover = match argv.get(1).map(|v| std::str::from_utf8(v).ok().and_then(|v| v.parse::<i64>().ok()))
    {
        None => None,
        Some(Some(v @ (2 | 3))) => Some(v as u8),
        Some(Some(_)) => return Action::Local(Reply::Error("NOPROTO unsupported protocol version".into())),
        Some(None) => return Action::Local(Reply::err("Protocol version is not an integer or out of range")),
    };
    let mut auth = None;
    let mut setname = None;
    let mut i = 2;
    while i < argv.len() {
        let option = argv[i].to_ascii_lowercase();
        match option.as_slice() {
            b"auth" if i + 2 < argv.len() => {
                auth = Some((argv[i + 1], argv[i + 2]));
                i += 3;
            }
            b"setname" if i + 1 < argv.len() => {
                setname = Some(argv[i + 1]);
                i += 2;
            }
            _ => {
                return Action::Local(Reply::err(format!(
                    "Syntax error in HELLO option '{}'",
                    text(argv[i])
                )));
            }
        }
    }
    if let Some(Err(e)) = setname.map(valid_name) {
        return Action::Local(e);
    }
    let foreign_auth = auth.is_some_and(|(user, pass)| !matches_upstream(ctx, Some(user), pass));
    if foreign_auth
        || (session.needs_pinned() && protover.is_some_and(|p| p != proto_number(session.protocol)))
    {
        // Another user, or a protocol switch on a connection with state: Redis must see it.
        session.pin();
        return Action::ForwardHello(protover.unwrap_or(proto_number(session.protocol)));
    }
    if let Some(p) = protover {
        session.protocol = if p == 3 { Protocol::Resp3 } else { Protocol::Resp2 };
    }
    if let Some(name) = setname {
        session.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
    }
    Action::Local(hello_reply(session, ctx))
}

/// The map HELLO answers with, describing strata's view of the connection.
pub fn hello_reply(session: &Session, ctx: &RouteContext) -> Reply {
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (Reply::text("version"), Reply::text(ctx.version)),
        (Reply::text("proto"), Reply::Int(proto_number(session.protocol).into())),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])
}

fn proto_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    }
}

/// `AUTH [user] pass`: strata's own credentials are accepted locally (every upstream
/// connection already uses them); anything else goes to Redis on a pinned connection.
pub fn auth(session: &mut Session, ctx: &RouteContext, argv: &[&[u8]]) -> Action {
    let (user, pass) = match argv {
        [_, pass] => (None, *pass),
        [_, user, pass] => (Some(*user), *pass),
        _ => return Action::Local(wrong_arity("auth")),
    };
    if ctx.upstream.password.is_some() && matches_upstream(ctx, user, pass) {
        return Action::Local(Reply::Status("OK"));
    }
    session.pin();
    Action::Forward(Route::Pinned)
}

fn matches_upstream(ctx: &RouteContext, user: Option<&[u8]>, pass: &[u8]) -> bool {
    let configured_user = ctx.upstream.username.as_deref().unwrap_or("default");
    let user_ok = user.is_none_or(|u| u == configured_user.as_bytes());
    user_ok && ctx.upstream.password.as_deref().is_some_and(|p| p.as_bytes() == pass)
}

/// `CLIENT …`: connection-scoped subcommands are kept per client; the rest go to Redis.
pub fn client(session: &mut Session, ctx: &RouteContext, argv: &[&[u8]], current: Route) -> Action {
    let Some(sub) = argv.get(1).map(|s| s.to_ascii_lowercase()) else {
        return Action::Local(wrong_arity("client"));
    };
    let arity = |n: usize, name: &str| (argv.len() != n).then(|| Action::Local(wrong_arity(name)));
    match sub.as_slice() {
        b"id" => arity(2, "client|id").unwrap_or(Action::Local(Reply::Int(session.id as i64))),
        b"getname" => arity(2, "client|getname")
            .unwrap_or_else(|| Action::Local(session.name.clone().map_or(Reply::Null, Reply::Bulk))),
        b"setname" => arity(3, "client|setname").unwrap_or_else(|| {
            Action::Local(match valid_name(argv[2]) {
                Err(e) => e,
                Ok(()) => {
                    session.name = (!argv[2].is_empty()).then(|| Bytes::copy_from_slice(argv[2]));
                    Reply::Status("OK")
                }
            })
        }),
        b"setinfo" => arity(4, "client|setinfo").unwrap_or_else(|| Action::Local(setinfo(session, argv))),
        b"no-evict" | b"no-touch" => {
            let name = format!("client|{}", text(&sub));
            arity(3, &name).unwrap_or_else(|| {
                // Redis' connections are strata's; the setting is kept for CLIENT LIST.
                let Some(on) = on_off(argv[2]) else { return Action::Local(Reply::err("syntax error")) };
                match sub.as_slice() {
                    b"no-evict" => session.no_evict = on,
                    _ => session.no_touch = on,
                }
                Action::Local(Reply::Status("OK"))
            })
        }
        b"tracking" if argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"off")) => {
            // Tracking never started on this client's connections, so off is already true.
            Action::Local(Reply::Status("OK"))
        }
        // Inside MULTI the refusal would be strata's alone and EXEC's array one short;
        // there the id becomes 0 and Redis refuses it at EXEC.
        b"tracking" => match redirect_target_cannot_receive(ctx.registry, argv, session.id) {
            Some(id) if !session.in_multi => Action::Local(Reply::err(format!(
                "strata: client {id} has no connection of its own to receive invalidations; \
                 it gets one when it subscribes to __redis__:invalidate or enables tracking itself"
            ))),
            _ => Action::PassThrough(redirect_to_upstream_id(ctx.registry, argv)),
        },
        b"reply" if argv.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"on")) => {
            Action::Local(Reply::Status("OK"))
        }
        b"reply" => Action::PassThrough(None),
        b"unblock" if argv.len() == 3 || argv.len() == 4 => {
            unblock(ctx, argv).unwrap_or(Action::Forward(current))
        }
        // Inside MULTI Redis queues these; its view of strata's connections is what EXEC
        // can give (answering here would leave EXEC's array one reply short).
        b"kill" | b"list" | b"info" if session.in_multi => Action::Forward(current),
        b"kill" => clients::kill(session, ctx, argv, current),
        b"list" => Action::Local(clients::list(ctx, &caller(session, "client|list", argv), argv)),
        b"info" => arity(2, "client|info")
            .unwrap_or_else(|| Action::Local(clients::info(ctx, &caller(session, "client|info", argv)))),
        _ => Action::Forward(current),
    }
}

/// `CLIENT TRACKING on REDIRECT id …` names a strata client; Redis needs the id of that
/// client's connection in pass-through, or 0, which no Redis connection has, when it is
/// not in pass-through: Redis then refuses the redirect, where the strata number left as
/// it was could name one of strata's shared connections, and a pinned connection would
/// get pushes among its replies. `None`: no REDIRECT, or an id that is not a number, for
/// Redis to refuse in its own words.
fn redirect_to_upstream_id(registry: &Registry, argv: &[&[u8]]) -> Option<Bytes> {
    let at = redirect_position(argv)?;
    let id = clients::parse_id(argv[at])?;
    let upstream = registry.get(id).and_then(|c| c.redirect_target()).unwrap_or(0).to_string();
    let mut args = argv.to_vec();
    args[at] = upstream.as_bytes();
    Some(crate::resp::reply::encode_command(&args))
}

/// The strata id named by `REDIRECT` when it is another connected client that is not in
/// pass-through: Redis would push invalidations to it, and through strata it has nowhere
/// to receive them. (A client naming itself gets Redis' own refusal.) A client that is in
/// pass-through is marked a redirect target here already, as the REDIRECT will go on.
fn redirect_target_cannot_receive(registry: &Registry, argv: &[&[u8]], caller: u64) -> Option<u64> {
    let id = clients::parse_id(argv[redirect_position(argv)?])?;
    let receives = registry.get(id)?.redirect_target().is_some();
    (id != caller && !receives).then_some(id)
}

/// Where the id of `CLIENT TRACKING on|off … REDIRECT id …` is: options are read in
/// order, so a prefix spelled `redirect` is not taken for the option.
pub(super) fn redirect_position(argv: &[&[u8]]) -> Option<usize> {
    let mut at = 3;
    while at < argv.len() {
        if argv[at].eq_ignore_ascii_case(b"redirect") {
            return (at + 1 < argv.len()).then_some(at + 1);
        }
        at += if argv[at].eq_ignore_ascii_case(b"prefix") { 2 } else { 1 };
    }
    None
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` with a strata id: unblocks that client's pinned
/// connection. `None` (not a number) lets Redis produce its own error.
fn unblock(ctx: &RouteContext, argv: &[&[u8]]) -> Option<Action> {
    let id = clients::parse_id(argv[2])?;
    if ctx.registry.get(id).and_then(|c| c.upstream_id()).is_none() {
        // Not a connected client, or one with no connection of its own: it cannot be blocked.
        return Some(Action::Local(Reply::Int(0)));
    }
    unblock_request(ctx.registry, argv).map(|request| Action::ForwardBytes(Route::Shared, request))
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` as Redis must get it: the strata id replaced by
/// the id of that client's own upstream connection, or by 0, which no Redis connection
/// has, when there is none (such a client cannot be blocked). `None` when `id` is not a
/// number, for Redis to refuse in its own words.
fn unblock_request(registry: &Registry, argv: &[&[u8]]) -> Option<Bytes> {
    let id = clients::parse_id(argv[2])?;
    let upstream_id = registry.get(id).and_then(|c| c.upstream_id()).unwrap_or(0).to_string();
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", upstream_id.as_bytes()];
    args.extend(argv.get(3));
    Some(crate::resp::reply::encode_command(&args))
}

/// A pass-through client's request with the strata ids it names (`CLIENT TRACKING …
/// REDIRECT id`, `CLIENT UNBLOCK id`, `CLIENT KILL ID id`) replaced by Redis' ids, as
/// `client` does for every other client: its connection is Redis', but the ids it was
/// given are strata's. `None`: send the request as it is.
pub(super) fn upstream_ids(registry: &Registry, argv: &[&[u8]]) -> Option<Bytes> {
    if argv.len() < 3 || !argv[0].eq_ignore_ascii_case(b"client") {
        return None;
    }
    match argv[1].to_ascii_lowercase().as_slice() {
        b"tracking" => redirect_to_upstream_id(registry, argv),
        b"unblock" if argv.len() <= 4 => unblock_request(registry, argv),
        b"kill" => kill_request(registry, argv),
        _ => None,
    }
}

/// `CLIENT KILL` from a pass-through client, as Redis must get it. Redis only knows
/// connections: an `ID id` filter names a strata client's connection of its own (or none,
/// the largest id, which no connection ever gets; Redis refuses `ID 0`), and filters
/// together must all match. Without `ID`, filters such as `TYPE normal` would close
/// strata's shared connections under every client, so they become `ID` none; the old
/// `ip:port` form matches no connection either. An odd filter list goes as it is, for
/// Redis to refuse.
fn kill_request(registry: &Registry, argv: &[&[u8]]) -> Option<Bytes> {
    let encode = crate::resp::reply::encode_command;
    const NONE: &[u8] = b"9223372036854775807";
    if argv.len() == 3 {
        return Some(encode(&[b"CLIENT", b"KILL", b"0.0.0.0:0"]));
    }
    if !argv.len().is_multiple_of(2) {
        return None;
    }
    let ids: Vec<Option<String>> = argv[2..]
        .chunks(2)
        .map(|pair| {
            // Not a number: as sent, for Redis' own error.
            pair[0].eq_ignore_ascii_case(b"id").then(|| match clients::parse_id(pair[1]) {
                None => String::from_utf8_lossy(pair[1]).into_owned(),
                Some(id) => registry
                    .get(id)
                    .and_then(|c| c.upstream_id())
                    .map_or_else(|| String::from_utf8_lossy(NONE).into_owned(), |u| u.to_string()),
            })
        })
        .collect();
    if ids.iter().all(Option::is_none) {
        return Some(encode(&[b"CLIENT", b"KILL", b"ID", NONE]));
    }
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"KILL"];
    for (pair, id) in argv[2..].chunks(2).zip(&ids) {
        args.push(pair[0]);
        args.push(id.as_deref().map_or(pair[1], str::as_bytes));
    }
    Some(encode(&args))
}

/// The caller of CLIENT LIST / INFO; its request's size is what Redis shows as `qbuf`.
fn caller<'a>(session: &'a Session, cmd: &'static str, argv: &[&[u8]]) -> clients::Caller<'a> {
    let digits = |n: usize| n.checked_ilog10().unwrap_or(0) as usize + 1;
    let qbuf = 3 + digits(argv.len()) + argv.iter().map(|a| 5 + digits(a.len()) + a.len()).sum::<usize>();
    clients::Caller { session, cmd, qbuf }
}

fn setinfo(session: &mut Session, argv: &[&[u8]]) -> Reply {
    let value = Bytes::copy_from_slice(argv[3]);
    if argv[3].iter().any(|c| *c == b' ' || *c == b'\n') {
        return Reply::err("CLIENT SETINFO cannot contain spaces, newlines or special characters.");
    }
    match argv[2].to_ascii_lowercase().as_slice() {
        b"lib-name" => session.lib.0 = Some(value),
        b"lib-ver" => session.lib.1 = Some(value),
        _ => return Reply::err(format!("Unrecognized option '{}'", text(argv[2]))),
    }
    Reply::Status("OK")
}

fn on_off(arg: &[u8]) -> Option<bool> {
    if arg.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if arg.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

fn valid_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|c| *c < b'!' || *c > b'~') {
        return Err(Reply::err("Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}
