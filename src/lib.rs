//! strata: a Redis-protocol sidecar proxy that knows what a cache tier is.
//!
//! # The path of one request
//!
//! 1. `server::serve` accepts a client (bounded by `server.max_clients`) and spawns a
//!    `server::handler::Handler`.
//! 2. The handler reads into its buffer; `resp::RequestParser` finds each complete request
//!    (multibulk or inline) without copying, and `server::route::decide` looks at the command
//!    (with `command::CommandTable`, built from the upstream's `COMMAND`) to choose:
//!    answer locally (HELLO, CLIENT ID/SETNAME…, AUTH with strata's own credentials),
//!    forward on the client's shared connection, forward on its pinned connection (MULTI,
//!    WATCH, blocking commands, SELECT, AUTH as another user), or hand the socket to Redis
//!    verbatim (pub/sub, MONITOR, CLIENT TRACKING/REPLY).
//! 3. Consecutive shared-route requests go to `upstream::SharedPool` as one `Job`: a slice
//!    of the read buffer plus the number of replies expected. The connection task writes it,
//!    cuts the replies from its read buffer with `resp::FrameScanner`, and returns them as
//!    the exact bytes Redis sent.
//! 4. The handler writes replies strictly in request order, batching what is ready into
//!    one write. A route change waits for earlier replies, so Redis sees the client's
//!    order. A lost upstream connection turns each in-flight request into an error reply.
//!
//! 3a. Between routing and sending, `pipeline::prepare` finds the request's keys,
//!    classifies them (`tier`), applies the tier's TTL policy (a rewrite such as
//!    `SET … PX`, or the write wrapped in `MULTI … PEXPIRE … NX … EXEC`), and leaves a
//!    `pipeline::Note` saying how to cut the reply back and what to count (`stats`).
//! 5. On the way back `pipeline::reply::finish` applies the notes before the handler
//!    writes the replies. `INFO` gets strata's section appended; `/metrics` and the
//!    health endpoints live in `admin`.
//!
//! Read-through and the breaker (a later issue) hook into steps 3a and 5.

pub mod admin;
pub mod breaker;
pub mod command;
pub mod config;
pub mod fallback;
pub mod pipeline;
pub mod resp;
pub mod server;
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
    let breaker =
        Arc::new(breaker::Breaker::new("redis", config.breaker.failure_threshold, config.breaker.cooldown));
    let pool = SharedPool::start(&config.upstream, breaker);
    let fallback = fallback::start(&config, shutdown.clone());
    let ctx = Arc::new(Context::new(config, pool, server_info, shutdown.clone(), fallback));
    if let Some(admin) = admin {
        tokio::spawn(admin::http::serve(admin, Arc::new(AdminView(ctx.clone())), shutdown));
    }
    server::serve(listener, ctx).await;
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
