//! The shared, multiplexed upstream connections used by every stateless client.
//!
//! Each protocol version has `upstream.connections` slots. A supervisor per slot keeps a
//! connection up, reconnecting with capped exponential backoff. A client is assigned one
//! slot for its lifetime, so its requests reach Redis in the order it sent them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio::time::sleep;

use super::conn::{Exit, drive};
use super::connect::connect;
use super::fence::{ConnNumber, Fences};
use super::job::Msg;
use crate::breaker::Breaker;
use crate::config::UpstreamConfig;
use crate::resp::reply::Protocol;

/// One slot: the sender of its live connection, if any.
#[derive(Default)]
struct Slot {
    tx: RwLock<Option<mpsc::Sender<Msg>>>,
}

/// Shared connections for RESP2 and RESP3 clients.
pub struct SharedPool {
    resp2: Vec<Slot>,
    resp3: Vec<Slot>,
    next: AtomicUsize,
    connected: AtomicUsize,
    config: UpstreamConfig,
    breaker: Arc<Breaker>,
    /// Which connection each key's requests in flight are on (same-key order).
    pub fences: Arc<Fences>,
}

/// Which shared connection a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    /// Protocol of the slot.
    pub protocol: Protocol,
    /// Index among that protocol's slots.
    pub index: usize,
}

impl SharedPool {
    /// Creates the pool and starts one supervisor per slot.
    pub fn start(config: &UpstreamConfig, breaker: Arc<Breaker>) -> Arc<SharedPool> {
        let slots = || (0..config.connections).map(|_| Slot::default()).collect();
        let pool = Arc::new(SharedPool {
            resp2: slots(),
            resp3: slots(),
            next: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            config: config.clone(),
            breaker,
            fences: Arc::default(),
        });
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            for index in 0..config.connections {
                tokio::spawn(supervise(pool.clone(), SlotId { protocol, index }));
            }
        }
        pool
    }

    /// Picks a slot for a new client (round robin).
    pub fn assign(&self, protocol: Protocol) -> SlotId {
        let count = self.config.connections;
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        // Round robin over the connected slots: a client assigned to one still connecting
        // (just after start, or after a reconnect) would get -TRYAGAIN while others serve.
        (0..count)
            .map(|step| SlotId { protocol, index: (first + step) % count })
            .find(|&slot| self.sender(slot).is_some())
            .unwrap_or(SlotId { protocol, index: first })
    }

    /// The slot's number in the fence table.
    pub fn number(&self, slot: SlotId) -> ConnNumber {
        let base = if slot.protocol == Protocol::Resp2 { 0 } else { self.resp2.len() };
        (base + slot.index) as ConnNumber
    }

    /// The slot numbered `number` in the fence table.
    pub fn slot_of(&self, number: ConnNumber) -> SlotId {
        let number = number as usize;
        match number.checked_sub(self.resp2.len()) {
            None => SlotId { protocol: Protocol::Resp2, index: number },
            Some(index) => SlotId { protocol: Protocol::Resp3, index },
        }
    }

    /// The upstream's address, for messages.
    pub fn url(&self) -> &crate::config::UpstreamUrl {
        &self.config.url
    }

    /// The live connection of a slot, if it is connected.
    pub fn sender(&self, slot: SlotId) -> Option<mpsc::Sender<Msg>> {
        let slots = match slot.protocol {
            Protocol::Resp2 => &self.resp2,
            Protocol::Resp3 => &self.resp3,
        };
        let guard = slots[slot.index].tx.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// The upstream breaker these connections feed.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    /// Shared connections currently up, across both protocols.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Total shared slots across both protocols.
    pub fn capacity(&self) -> usize {
        self.resp2.len() + self.resp3.len()
    }

    fn publish(&self, slot: SlotId, tx: Option<mpsc::Sender<Msg>>) {
        let slots = match slot.protocol {
            Protocol::Resp2 => &self.resp2,
            Protocol::Resp3 => &self.resp3,
        };
        *slots[slot.index].tx.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tx;
    }
}

/// Keeps one slot connected for the life of the process.
async fn supervise(pool: Arc<SharedPool>, slot: SlotId) {
    let config = &pool.config;
    let mut backoff = config.reconnect_min;
    let mut last_error = String::new();
    loop {
        wait_for_turn(&pool.breaker).await;
        match connect(config, slot.protocol, false).await {
            Ok(conn) => {
                pool.breaker.success();
                backoff = config.reconnect_min;
                tracing::info!(?slot, upstream = %config.url, "upstream connected");
                // Bounded so a stalled Redis pushes back on clients instead of queueing without limit.
                let (tx, rx) = mpsc::channel(config.queue_depth);
                pool.publish(slot, Some(tx));
                pool.connected.fetch_add(1, Ordering::Relaxed);
                let exit = drive(conn.stream, conn.leftover, rx, config.command_timeout, true).await;
                pool.connected.fetch_sub(1, Ordering::Relaxed);
                pool.publish(slot, None);
                tracing::warn!(?slot, ?exit, "upstream connection ended; in-flight requests failed");
                if exit == Exit::Unused {
                    return;
                }
                pool.breaker.failure();
            }
            Err(e) => {
                pool.breaker.failure();
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(?slot, error = %text, "upstream connect failed; retrying with backoff");
                    last_error = text;
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(config.reconnect_max);
            }
        }
    }
}

/// While the breaker is open, connection attempts wait; after the cool-down one
/// supervisor probes and the others wait for its verdict.
async fn wait_for_turn(breaker: &Breaker) {
    while !breaker.try_probe() {
        sleep(PROBE_POLL).await;
    }
}

/// How often a waiting supervisor looks at the breaker again.
const PROBE_POLL: std::time::Duration = std::time::Duration::from_millis(20);
