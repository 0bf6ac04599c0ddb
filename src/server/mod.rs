//! The client-facing side: the listener with its connection limit, one handler per client,
//! and graceful shutdown.

mod action;
mod bind;
mod clients;
mod handler;
mod introspect;
mod local;
mod memory;
mod pending;
mod registry;
mod route;
mod routes;
mod woken;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use action::Route;
pub use bind::bind;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::fallback::Fallback;
use crate::stats::{Exporter, InfoExtra, Stats};
use crate::tier::TierTable;
use crate::upstream::{ServerInfo, SharedPool, Spares};

/// State shared by every client handler.
pub struct Context {
    /// The validated configuration.
    pub config: Config,
    /// Shared upstream connections.
    pub pool: Arc<SharedPool>,
    /// Upstream version and command table, replaced once the probe succeeds.
    pub server: Arc<ArcSwap<ServerInfo>>,
    /// Cancelled on SIGTERM: stop reading, finish in-flight replies.
    pub shutdown: CancellationToken,
    /// Connected clients by strata id.
    pub registry: Arc<registry::Registry>,
    /// Key classification and TTL policies.
    pub tiers: Arc<TierTable>,
    /// Counters and latency histograms.
    pub stats: Arc<Stats>,
    /// The Prometheus exposition of `stats`.
    pub exporter: Exporter,
    /// Read-through from PostgreSQL.
    pub fallback: Arc<Fallback>,
    /// The upstream Redis breaker (fed by the shared connections' supervisors).
    pub breaker: Arc<Breaker>,
    /// Ready dedicated connections for clients that become stateful.
    pub spares: Arc<Spares>,
    /// What all clients' buffers hold, against `limits.max_clients_memory`.
    pub client_memory: Arc<memory::ClientMemory>,
    next_client_id: AtomicU64,
    clients: AtomicUsize,
}

impl Context {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        pool: Arc<SharedPool>,
        server: Arc<ArcSwap<ServerInfo>>,
        shutdown: CancellationToken,
        fallback: Arc<Fallback>,
    ) -> Self {
        let tiers = config.tier_table.clone();
        let stats = Arc::new(Stats::new(&tiers));
        let breaker = pool.breaker();
        let spares = Spares::start(&config.upstream, config.upstream.spare_connections, breaker.clone());
        Context {
            client_memory: Arc::new(memory::ClientMemory::new(config.limits.max_clients_memory)),
            spares,
            tiers,
            stats,
            fallback,
            breaker,
            exporter: Exporter::new(),
            config,
            pool,
            server,
            shutdown,
            registry: Arc::default(),
            next_client_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Facts for the `# Strata` INFO section and `/metrics`.
    pub fn info_extra(&self) -> InfoExtra {
        InfoExtra {
            clients: self.clients(),
            max_clients: self.config.server.max_clients,
            upstream_connected: self.pool.connected(),
            upstream_capacity: self.pool.capacity(),
            upstream: self.config.upstream.url.to_string(),
            breakers: vec![
                ("redis", self.breaker.state().name(), self.breaker.opens()),
                ("postgres", self.fallback.breaker.state().name(), self.fallback.breaker.opens()),
            ],
            fallback: self.fallback.snapshot(),
            fallback_latency: self.fallback.latency.percentiles(0),
        }
    }

    /// True when at least one shared upstream connection is up.
    pub fn upstream_ready(&self) -> bool {
        self.pool.connected() > 0
    }

    /// `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.exporter.render(&self.stats, &self.tiers, &self.info_extra())
    }
}

/// Longest the listener waits for a new client's first batch before accepting the next.
const FIRST_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts clients until shutdown, then waits up to the grace period for handlers to finish.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    let permits = Arc::new(Semaphore::new(ctx.config.server.max_clients));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracker.spawn(async move {
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A client that sent nothing yet is read after every client woken before its
        // connect (the run queue is first in, first out), so it needs no wait: a burst of
        // connects is accepted as fast as Redis would.
        let sent_already = has_sent(&stream);
        if sent_already {
            // Clients already connected whose requests arrived with this connect were
            // woken with it, possibly after it: let them read first, so what a client
            // sent before it closed goes before a later client's.
            tokio::task::yield_now().await;
        }
        let id = ctx.next_client_id.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let (started, first_batch) = tokio::sync::oneshot::channel();
        tracker.spawn(async move {
            ctx.clients.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = id, %peer, "client connected");
            if let Err(e) = handler::Handler::new(ctx.clone(), stream, id).run(started).await {
                tracing::debug!(client = id, error = %e, "client connection ended with an error");
            }
            ctx.clients.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        // The next connection is accepted once this one has taken the requests it sent
        // before it (a client that writes and closes, then another that writes the same
        // key): they reach Redis first. Bounded, so a handler held up by a full upstream
        // queue cannot stop strata from accepting.
        if sent_already {
            let _ = tokio::time::timeout(FIRST_BATCH_WAIT, first_batch).await;
        }
    }
    drop(listener);
    tracker.close();
    let grace = ctx.config.server.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "shutdown grace period over; closing remaining clients");
    }
}

/// True when the client's first bytes are already waiting (a peek, not a read).
fn has_sent(stream: &tokio::net::TcpStream) -> bool {
    handler::peek(stream).is_ok_and(|n| n > 0)
}
