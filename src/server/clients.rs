//! `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL` over strata's own clients. Redis would
//! describe (and kill) strata's upstream connections, shared by many clients; an app
//! that named its connection with `CLIENT SETNAME` looks for itself among the clients
//! it connected, so strata answers these from its registry, in Redis' format.

use std::fmt::Write;

use tokio::time::Instant;

use super::action::{Action, Route, RouteContext};
use super::registry::{ClientHandle, View};
use crate::resp::Reply;
use crate::session::Session;

/// The caller's own request, which Redis shows in its line as it runs.
pub struct Caller<'a> {
    pub session: &'a Session,
    /// `client|list` or `client|info`.
    pub cmd: &'static str,
    /// Size of the request in the query buffer (Redis' `qbuf`).
    pub qbuf: usize,
}

/// `CLIENT LIST [TYPE type] [ID id …]`.
pub fn list(ctx: &RouteContext, caller: &Caller, argv: &[&[u8]]) -> Reply {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind: Option<ClientType> = None;
    let mut i = 2;
    while i < argv.len() {
        let option = argv[i].to_ascii_lowercase();
        match option.as_slice() {
            b"type" if i + 1 < argv.len() => match ClientType::parse(argv[i + 1]) {
                Some(t) => {
                    kind = Some(t);
                    i += 2;
                }
                None => return unknown_type(argv[i + 1]),
            },
            b"id" if i + 1 < argv.len() => {
                let mut wanted = Vec::new();
                for arg in &argv[i + 1..] {
                    // As Redis: any integer is accepted; ids below 1 match no client.
                    match std::str::from_utf8(arg).ok().and_then(|a| a.parse::<i64>().ok()) {
                        Some(id) => wanted.extend(u64::try_from(id).ok().filter(|id| *id > 0)),
                        None => return Reply::err("Invalid client ID"),
                    }
                }
                ids = Some(wanted);
                i = argv.len();
            }
            _ => return Reply::err("syntax error"),
        }
    }
    let now = Instant::now();
    // Listed in the order the ids were given (as Redis does), else in connection order.
    let clients = match ids {
        Some(ids) => ids.into_iter().filter_map(|id| Some((id, ctx.registry.get(id)?))).collect(),
        None => ctx.registry.clients(),
    };
    let mut out = String::new();
    for (id, handle) in clients {
        let view = own_or_published(caller, id, &handle);
        if handle.kill.is_cancelled() || kind.is_some_and(|k| !k.matches(&view)) {
            continue;
        }
        line(&mut out, ctx, id, &handle, &view, now, caller);
    }
    Reply::Text(out.into())
}

/// `CLIENT INFO`: the caller's own line.
pub fn info(ctx: &RouteContext, caller: &Caller) -> Reply {
    let id = caller.session.id;
    let Some(handle) = ctx.registry.get(id) else { return Reply::err("client is not registered") };
    let mut out = String::new();
    line(&mut out, ctx, id, &handle, &View::of(caller.session, caller.cmd), Instant::now(), caller);
    Reply::Text(out.into())
}

/// `CLIENT KILL addr` (old form: `+OK` or an error) or `CLIENT KILL filter value …`
/// (the number killed). The caller is killed only by the new form with `SKIPME no`;
/// it then gets its reply before its connection closes, as in Redis.
/// A `USER` filter naming another ACL user goes to Redis as it is: only Redis knows
/// whether that user exists (`-ERR No such user`), and a strata client authenticated as
/// it runs on a pinned connection of that user, which Redis then closes.
pub fn kill(session: &Session, ctx: &RouteContext, argv: &[&[u8]], current: Route) -> Action {
    let other_user = argv
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(2)
        .any(|pair| pair[0].eq_ignore_ascii_case(b"user") && pair[1] != user(ctx).as_bytes());
    if argv.len().is_multiple_of(2) && other_user {
        return Action::Forward(current);
    }
    match argv.len() {
        0..=2 => Action::Local(Reply::err("wrong number of arguments for 'client|kill' command")),
        3 => {
            let filter = Filter { addr: Some(argv[2]), skip_me: false, ..Filter::default() };
            match kill_matching(session, ctx, &filter) {
                (0, _) => Action::Local(Reply::err("No such client")),
                (_, true) => Action::Close(Reply::Status("OK")),
                (_, false) => Action::Local(Reply::Status("OK")),
            }
        }
        n if !n.is_multiple_of(2) => Action::Local(Reply::err("syntax error")),
        _ => match Filter::parse(&argv[2..]) {
            Err(reply) => Action::Local(reply),
            Ok(filter) => match kill_matching(session, ctx, &filter) {
                (killed, true) => Action::Close(Reply::Int(killed as i64)),
                (killed, false) => Action::Local(Reply::Int(killed as i64)),
            },
        },
    }
}

/// Kills every client `filter` matches; returns how many, and whether the caller is one.
fn kill_matching(session: &Session, ctx: &RouteContext, filter: &Filter) -> (usize, bool) {
    let (mut killed, mut me) = (0, false);
    let caller = Caller { session, cmd: "client|kill", qbuf: 0 };
    for (id, handle) in ctx.registry.clients() {
        let own = id == session.id;
        let view = own_or_published(&caller, id, &handle);
        // A client killed already is on its way out: not killed (or counted) twice.
        let gone = handle.kill.is_cancelled();
        if gone || (own && filter.skip_me) || !filter.matches(ctx, id, &handle, &view) {
            continue;
        }
        killed += 1;
        if own {
            me = true;
        } else {
            handle.kill.cancel();
        }
    }
    (killed, me)
}

/// `CLIENT KILL` filters; every one given must match.
#[derive(Default)]
struct Filter<'a> {
    id: Option<u64>,
    kind: Option<ClientType>,
    user: Option<&'a [u8]>,
    addr: Option<&'a [u8]>,
    laddr: Option<&'a [u8]>,
    skip_me: bool,
}

impl<'a> Filter<'a> {
    fn parse(pairs: &[&'a [u8]]) -> Result<Filter<'a>, Reply> {
        let mut filter = Filter { skip_me: true, ..Filter::default() };
        for pair in pairs.chunks_exact(2) {
            let (name, value) = (pair[0].to_ascii_lowercase(), pair[1]);
            match name.as_slice() {
                b"id" => match parse_id(value) {
                    Some(id) if id > 0 => filter.id = Some(id),
                    _ => return Err(Reply::err("client-id should be greater than 0")),
                },
                b"type" => match ClientType::parse(value) {
                    Some(t) => filter.kind = Some(t),
                    None => return Err(unknown_type(value)),
                },
                b"user" => filter.user = Some(value),
                b"addr" => filter.addr = Some(value),
                b"laddr" => filter.laddr = Some(value),
                b"skipme" if value.eq_ignore_ascii_case(b"yes") => filter.skip_me = true,
                b"skipme" if value.eq_ignore_ascii_case(b"no") => filter.skip_me = false,
                _ => return Err(Reply::err("syntax error")),
            }
        }
        Ok(filter)
    }

    fn matches(&self, ctx: &RouteContext, id: u64, handle: &ClientHandle, view: &View) -> bool {
        self.id.is_none_or(|wanted| wanted == id)
            && self.kind.is_none_or(|k| k.matches(view))
            && self.user.is_none_or(|u| u == user(ctx).as_bytes())
            && self.addr.is_none_or(|a| a == handle.addr.as_bytes())
            && self.laddr.is_none_or(|a| a == handle.laddr.as_bytes())
    }
}

/// `TYPE` of `CLIENT LIST` and `CLIENT KILL`. strata's clients are never replicas.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientType {
    Normal,
    Replica,
    Master,
    PubSub,
}

impl ClientType {
    fn parse(arg: &[u8]) -> Option<ClientType> {
        match arg.to_ascii_lowercase().as_slice() {
            b"normal" => Some(ClientType::Normal),
            b"replica" | b"slave" => Some(ClientType::Replica),
            b"master" => Some(ClientType::Master),
            b"pubsub" => Some(ClientType::PubSub),
            _ => None,
        }
    }

    fn matches(self, view: &View) -> bool {
        match self {
            ClientType::Normal => !view.subscribed,
            ClientType::PubSub => view.subscribed,
            ClientType::Replica | ClientType::Master => false,
        }
    }
}

fn unknown_type(arg: &[u8]) -> Reply {
    Reply::err(format!("Unknown client type '{}'", String::from_utf8_lossy(arg)))
}

/// A client id argument (`CLIENT KILL ID`, `CLIENT UNBLOCK`, `CLIENT TRACKING REDIRECT`).
pub(super) fn parse_id(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The ACL user every client's commands run as: the upstream URL's (strata does not
/// share a connection authenticated as anyone else).
fn user<'a>(ctx: &RouteContext<'a>) -> &'a str {
    ctx.upstream.username.as_deref().unwrap_or("default")
}

/// The caller's view is its live session; other clients' are what they last published.
fn own_or_published(caller: &Caller, id: u64, handle: &ClientHandle) -> View {
    if id == caller.session.id { View::of(caller.session, caller.cmd) } else { handle.view() }
}

/// One client's line, in Redis 7's field order. Memory and buffer fields describe
/// Redis' own buffers, which strata does not have per client: they read 0.
fn line(
    out: &mut String,
    ctx: &RouteContext,
    id: u64,
    handle: &ClientHandle,
    view: &View,
    now: Instant,
    caller: &Caller,
) {
    let own = id == caller.session.id;
    let idle = if own { 0 } else { handle.idle(now).as_secs() };
    let _ = writeln!(
        out,
        "id={id} addr={} laddr={} fd={} name={} age={} idle={idle} flags={} db={} sub=0 psub=0 ssub=0 \
         multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 \
         events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
        handle.addr,
        handle.laddr,
        handle.fd,
        text(&view.name),
        handle.age(now).as_secs(),
        view.flags(),
        view.db,
        view.multi,
        if own { caller.qbuf } else { 0 },
        view.cmd,
        user(ctx),
        view.resp,
        text(&view.lib.0),
        text(&view.lib.1),
    );
}

fn text(value: &Option<bytes::Bytes>) -> std::borrow::Cow<'_, str> {
    value.as_deref().map(String::from_utf8_lossy).unwrap_or_default()
}
