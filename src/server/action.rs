//! The vocabulary of routing: which upstream connection a request takes (`Route`), what
//! happens to it (`Action`), and what deciding reads besides the session
//! (`RouteContext`). Kept apart from `route::decide` so that the local answers it calls
//! (`local`, `clients`) can name an action without importing the decider.
//!
//! Where the next routes plug in (sketch, not built yet):
//! - Redis Cluster: `Route::Node(slot)` chosen in `route::decide` from the key's hash
//!   slot (the command table's key specs give the keys), sent by a `ClusterRoute`
//!   (`server::routes`: one new file, one line in `Routes::send`) to that node's
//!   `upstream::SharedPool`; `MOVED`/`ASK` are followed where the replies are settled
//!   (`server::pending::settle`), before `pipeline::reply::finish`.
//! - Near cache: a route whose `send` answers a read's job from memory (its `reply` filled
//!   at once) and forwards the rest, chosen after `pipeline::prepare` classified the key
//!   into a tier with `near_cache = true`; fills come back through the same settle step
//!   (the note says which key to fill), and writes invalidate in `pipeline::planned`
//!   where they already forget read-through rows.

use crate::command::CommandTable;
use crate::resp::Reply;

/// Which upstream connection a forwarded request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The client's shared, multiplexed connection.
    Shared,
    /// The client's own connection.
    Pinned,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Action {
    /// Forward the request bytes unchanged.
    Forward(Route),
    /// Forward these bytes instead of the request (a rewritten request).
    ForwardBytes(Route, bytes::Bytes),
    /// Forward a HELLO on the pinned connection and adopt its protocol if Redis accepts it.
    ForwardHello(u8),
    /// Answer with this reply; Redis never sees the request.
    Local(Reply),
    /// Hand the connection over to Redis while the state lasts (pub/sub, MONITOR, CLIENT
    /// TRACKING, CLIENT REPLY OFF/SKIP): replies stop being one per request and go back
    /// verbatim; requests naming strata ids are still translated. With bytes, they
    /// replace the request (an id rewritten from strata's to Redis').
    PassThrough(Option<bytes::Bytes>),
    /// Reply, then close the connection (QUIT, or CLIENT KILL of the caller itself).
    Close(Reply),
    /// Drop all connection state and reply `+RESET`.
    Reset,
}

/// Everything `decide` reads besides the session.
pub struct RouteContext<'a> {
    /// The command table.
    pub commands: &'a CommandTable,
    /// Redis version for HELLO.
    pub version: &'a str,
    /// The upstream's configured credentials and database.
    pub upstream: &'a crate::config::UpstreamUrl,
    /// Connected clients, for CLIENT KILL ID / UNBLOCK.
    pub registry: &'a super::registry::Registry,
    /// The tiers, for STRATA TIER / TIERS.
    pub tiers: &'a crate::tier::TierTable,
    /// The request's entry in the command table, looked up once per request.
    pub info: Option<&'a crate::command::CommandInfo>,
}
