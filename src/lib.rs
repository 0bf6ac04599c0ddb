//! strata: a Redis-protocol sidecar proxy that knows what a cache tier is.
//!
//! # One GET, in ten steps
//!
//! 1. Accept: `server/mod.rs` (`serve`) spawns a `Handler` (`server/handler.rs`), which reads.
//! 2. Parse: `resp/request.rs` finds each complete request in the read buffer.
//! 3. Route: `handler/process.rs` asks `server/route.rs` (`decide`; state in `session/mod.rs`).
//! 4. Plan: `pipeline/mod.rs` (`prepare`, `pipeline/planned.rs`, `tier/plan.rs`) leaves a note.
//! 5. Same-key order: `upstream/fence.rs`, through `handler/fence.rs` when a key is busy.
//! 6. Batch and send: `server/pending.rs` (`Run`) makes one `upstream::Job`; `handler/send.rs`.
//! 7. Cut replies: `upstream/conn.rs` writes the jobs of many clients, cuts the reply frames.
//! 8. Settle: `server/pending.rs` (`settle`) has `pipeline/reply.rs` (`finish`) apply the note.
//! 9. Count: `pipeline/count.rs` into `stats`; a read-through miss goes to `fallback`.
//! 10. Write: `handler/write.rs` writes the replies in request order.
//!
//! # The path of one request, in more detail
//!
//! 1. `server::serve` accepts a client (bounded by `server.max_clients`, backlog
//!    `server.tcp_backlog`) and spawns a `server::handler::Handler`; when the client has
//!    already sent something (a peek), the next connection is accepted once this one's
//!    first batch is on its way, so what a client sent before it closed goes before a
//!    later client's requests.
//! 2. The handler reads into its buffer; `resp::RequestParser` finds each complete request
//!    (multibulk or inline) without copying. The command is looked up once in
//!    `command::CommandTable` (built from the upstream's `COMMAND`), and
//!    `server::route::decide` chooses: answer locally (HELLO, CLIENT ID/SETNAME…, CLIENT
//!    LIST/INFO/KILL from `server::registry`, AUTH with strata's own credentials, STRATA),
//!    forward on the client's shared connection, forward
//!    on its pinned connection (MULTI, WATCH, blocking commands, SELECT, AUTH as another
//!    user; taken from `upstream::Spares`), or hand the socket to Redis while the
//!    state lasts (pub/sub, MONITOR, CLIENT TRACKING/REPLY): replies verbatim, requests
//!    as sent but for the strata ids they name, in lockstep: strata counts the replies
//!    each request owes and learns from Redis's replies when the state ended
//!    (`session::lockstep`, `handler::passthrough`).
//! 3. `pipeline::prepare` finds the request's keys (one-key commands such as GET and SET
//!    take a short path that builds no plan), classifies them (`tier`), applies the
//!    tier's TTL policy (`tier::plan`: a rewrite such as `SET … PX`, or the write wrapped in
//!    `MULTI … PEXPIRE … NX … EXEC`), and leaves a `pipeline::Note` saying how to cut the
//!    reply back, what to count (`stats`) and whether PostgreSQL may answer a miss
//!    (`pipeline::Through::Read`: nothing is built for it unless its reply calls for
//!    PostgreSQL; the batch keeps a copy of the request until then). Requests counted
//!    alike share one note (`Note::push`), so a pipeline of GETs keeps one note per
//!    batch. While the Redis `breaker` is open nothing is
//!    sent: reads of fallback tiers with a rule are answered from PostgreSQL, the rest get
//!    `-TRYAGAIN`.
//! 4. A forwarded request first takes its keys' stripes (`upstream::fence`): a key
//!    with a write in flight belongs to one shared connection (reads alone may share it)
//!    or to one client's own connection (not while it may block there; a client in
//!    pass-through writes to Redis directly),
//!    and a client whose key is in flight on another moves there once its own replies
//!    are in, or waits its turn in the fences' waiting room, reserving what it has read
//!    so later readers cannot slip past; so requests on the same key reach Redis in the
//!    order strata read them.
//!    Consecutive shared-route requests go to `upstream::SharedPool` as one `Job`: the
//!    slices of the read buffer (and rewritten requests) plus the number of replies
//!    expected. The connection task writes the jobs of many clients together (while two
//!    earlier writes await replies it holds new ones and sends them in one write; large
//!    chunks go by `writev`, uncopied), cuts the replies from its read buffer with
//!    `resp::FrameScanner`, and returns them as the exact bytes Redis sent, with where each
//!    frame ends for jobs whose replies are counted (`upstream::Replies`). Its supervisor feeds the breaker (connect errors, resets, timeouts).
//! 5. The handler keeps one `server::pending::Pending` per request or run, in request order
//!    (with the run's requests of deferred read-through reads).
//!    When a reply arrives, `pipeline::reply::finish` applies the notes: strata's extra
//!    replies are dropped, EXEC arrays unwrapped or filtered, `INFO` gets the `# Strata`
//!    section, hits and misses are counted (`pipeline::count`). A miss (or strata's own
//!    upstream error) for a read-through key becomes a deferred entry: `fallback` loads
//!    the row (single flight, negative cache, database breaker) and the reply takes the
//!    entry's place in the queue; the write-back with the tier TTL follows, holding the
//!    key's stripe until Redis answered it, so nothing on the key overtakes it.
//! 6. Back-pressure: at `limits.max_pipeline_depth` unanswered requests the handler stops
//!    parsing and reading; as replies drain it goes on with what is already buffered
//!    (no read event will come for it). A value over 1 MiB is read into a buffer sized
//!    once from its header, counted in `limits.max_clients_memory` (`server::memory`).
//!    Replies are written strictly in request order, batched into one write. A route
//!    change waits for earlier replies, so Redis sees the client's order. A lost upstream
//!    connection turns each in-flight request into an error reply; nothing is re-sent.
//!
//! Beside the data path: `fallback::listen` deletes keys named by PostgreSQL NOTIFYs,
//! `upstream::own` (fred) carries strata's own commands (write-backs, DEL, loading
//! `lua/strata.lua`), and `admin` serves `/metrics`, `/healthz` and `/readyz`.

pub mod admin;
pub mod breaker;
pub mod command;
pub mod config;
pub mod error;
pub mod fallback;
pub mod pipeline;
pub mod resp;
pub mod server;
pub mod session;
pub mod stats;
pub mod tier;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Config;
use server::Context;
use upstream::{ServerInfo, SharedPool};

/// The tokio runtime strata runs on for `server.threads` (the binary and the tests build it here).
///
/// One thread is the current-thread scheduler, which runs woken tasks first in, first out.
/// The multi-thread one puts the most recently woken task first (its LIFO slot), so two
/// clients' requests arriving in one event-loop turn would reach Redis in reverse order.
/// 0 means one worker per CPU core.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                b.worker_threads(n);
            }
            b
        }
    };
    builder.enable_all().build()
}

/// Runs strata on an already bound listener until `shutdown` is cancelled and clients
/// have finished (or the grace period ran out).
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) {
    run_with_admin(config, listener, None, shutdown).await;
}

/// `run`, also serving `/healthz`, `/readyz` and `/metrics` on `admin` when given.
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    let server_info = Arc::new(ArcSwap::from_pointee(ServerInfo::builtin()));
    tokio::spawn(upstream::probe_loop(config.upstream.clone(), server_info.clone()));
    let breaker = Arc::new(breaker::Breaker::with_rate(
        "redis",
        config.breaker.failure_threshold,
        config.breaker.cooldown,
        config.breaker.rate(),
    ));
    let pool = SharedPool::start(&config.upstream, breaker);
    let fallback = start_fallback(&config, Some(pool.fences.clone()), shutdown.clone());
    let ctx = Arc::new(Context::new(config, pool, server_info, shutdown.clone(), fallback));
    if let Some(admin) = admin {
        tokio::spawn(admin::http::serve(admin, Arc::new(AdminView(ctx.clone())), shutdown));
    }
    server::serve(listener, ctx).await;
}

/// The read-through service for `config`, with strata's own Redis client for write-backs
/// when there are rules (without one, write-backs are off and the log says why).
pub fn start_fallback(
    config: &Config,
    fences: Option<Arc<upstream::fence::Fences>>,
    shutdown: CancellationToken,
) -> Arc<fallback::Fallback> {
    let redis =
        match (!config.read_through.is_empty()).then(|| upstream::own::OwnClient::start(&config.upstream)) {
            Some(Ok(client)) => Some(Arc::new(client)),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot build strata's own Redis client; write-backs are off");
                None
            }
            None => None,
        };
    fallback::start(&config.fallback_setup(), redis, fences, shutdown)
}

/// The running proxy as the admin endpoints see it.
struct AdminView(Arc<Context>);

impl admin::http::AdminState for AdminView {
    fn ready(&self) -> bool {
        self.0.upstream_ready()
    }

    fn render_metrics(&self) -> String {
        self.0.render_metrics()
    }
}
