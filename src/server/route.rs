//! Decides what happens to each request: forwarded on the shared or the client's pinned
//! connection, answered by strata, or the start of pass-through mode.
//!
//! State changes (MULTI, WATCH, SELECT …) are recorded by `Session::observe` as the request
//! is decided, so the next request in the same pipeline is routed by them.

use crate::command::{Kind, cmd_flag};
use crate::resp::Reply;

use super::action::{Action, Route, RouteContext};
use super::introspect;
use super::local;
use crate::session::Session;

/// Longest unknown command name looked up by name (`STRATA`, or a command the upstream's
/// table lacks); longer names are nothing strata treats specially.
const NAME_BUF: usize = 16;

/// Decides one request; `argv[0]` is the command name.
pub fn decide(session: &mut Session, ctx: &RouteContext, argv: &[&[u8]]) -> Action {
    let kind = match ctx.info {
        Some(info) => info.kind,
        None => kind_by_name(argv[0]),
    };
    let current = if session.needs_pinned() { Route::Pinned } else { Route::Shared };
    match kind {
        Kind::Hello => local::hello(session, ctx, argv),
        Kind::Auth => local::auth(session, ctx, argv),
        Kind::Client => local::client(session, ctx, argv, current),
        Kind::Strata => Action::Local(introspect::strata(ctx, argv)),
        Kind::Multi
        | Kind::Exec
        | Kind::Discard
        | Kind::Watch
        | Kind::Unwatch
        | Kind::ReadMode
        | Kind::Select => match session.observe(kind, argv) {
            Some(true) => Action::Forward(Route::Pinned),
            Some(false) => Action::Forward(Route::Shared),
            None => Action::Forward(current),
        },
        Kind::Streaming if !session.in_multi => Action::PassThrough(None),
        Kind::Quit => Action::Close(Reply::Status("OK")),
        Kind::Reset => Action::Reset,
        Kind::Wait => Action::Forward(Route::Pinned),
        _ if current == Route::Pinned => Action::Forward(Route::Pinned),
        _ if blocks(ctx.info, argv) => Action::Forward(Route::Pinned),
        _ => Action::Forward(Route::Shared),
    }
}

/// The kind of a command missing from the table (STRATA, or one this Redis lacks). Only
/// a whole name counts: `QUIT|x` is an unknown command for Redis, not a QUIT.
fn kind_by_name(name: &[u8]) -> Kind {
    if name.contains(&b'|') {
        return Kind::Plain;
    }
    let mut buf = [0u8; NAME_BUF];
    match buf.get_mut(..name.len()) {
        Some(out) => {
            out.copy_from_slice(name);
            out.make_ascii_lowercase();
            Kind::of(out)
        }
        None => Kind::Plain,
    }
}

/// A request that may hold its connection while Redis waits (BLPOP, XREAD BLOCK, WAIT):
/// no key of its is fenced (see `upstream::fence::Pinned`).
pub fn may_block(info: Option<&crate::command::CommandInfo>, argv: &[&[u8]]) -> bool {
    info.is_some_and(|i| i.kind == Kind::Wait) || blocks(info, argv)
}

/// Blocking commands would stall every client sharing the connection.
fn blocks(info: Option<&crate::command::CommandInfo>, argv: &[&[u8]]) -> bool {
    let Some(info) = info else { return false };
    if !info.has(cmd_flag::BLOCKING) {
        return false;
    }
    // XREAD and XREADGROUP block only with BLOCK.
    match info.kind {
        Kind::StreamRead => argv.iter().any(|a| a.eq_ignore_ascii_case(b"block")),
        _ => true,
    }
}
