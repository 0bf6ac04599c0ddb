//! The memory clients' buffers hold, and the process-wide cap on it
//! (`limits.max_clients_memory`, like Redis 7's `maxmemory-clients`): past the cap the
//! client holding the most is closed, then the next, until the rest fit. So one sidecar
//! cannot be pushed past its pod's memory limit by a few clients sending or reading
//! large values.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::registry::{ClientHandle, Registry};

/// All clients' buffer bytes, against the cap.
#[derive(Debug, Default)]
pub struct ClientMemory {
    total: AtomicUsize,
    /// 0: no cap.
    cap: usize,
}

impl ClientMemory {
    /// Counting, with `cap` bytes allowed in all (0 for no cap).
    pub fn new(cap: usize) -> ClientMemory {
        ClientMemory { total: AtomicUsize::new(0), cap }
    }

    /// Bytes all clients' buffers hold now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Closes the largest clients until the others fit under the cap. Clients already
    /// told to close still count until they are gone, but are not chosen again.
    fn enforce(&self, registry: &Registry) {
        let clients = registry.clients();
        let closing: usize =
            clients.iter().filter(|(_, c)| c.kill.is_cancelled()).map(|(_, c)| c.memory()).sum();
        let mut excess = self.total().saturating_sub(closing).saturating_sub(self.cap);
        while excess > 0 {
            let Some((id, biggest)) =
                clients.iter().filter(|(_, c)| !c.kill.is_cancelled()).max_by_key(|(_, c)| c.memory())
            else {
                return;
            };
            let held = biggest.memory();
            tracing::warn!(
                client = id,
                bytes = held,
                cap = self.cap,
                "client buffers over limits.max_clients_memory; closing the largest client"
            );
            biggest.kill.cancel();
            excess = excess.saturating_sub(held.max(1));
        }
    }
}

/// One client's part of the total, kept current by its handler; given back on drop.
pub struct Share {
    memory: Arc<ClientMemory>,
    client: Arc<ClientHandle>,
    counted: usize,
}

impl Share {
    /// A client's share, starting at nothing.
    pub fn new(memory: Arc<ClientMemory>, client: Arc<ClientHandle>) -> Share {
        Share { memory, client, counted: 0 }
    }

    /// The client's buffers now hold `bytes`; closes the largest clients when that takes
    /// the total over the cap.
    #[inline]
    pub fn set(&mut self, bytes: usize, registry: &Registry) {
        if bytes == self.counted {
            return;
        }
        let total = if bytes > self.counted {
            let grown = bytes - self.counted;
            self.memory.total.fetch_add(grown, Ordering::Relaxed) + grown
        } else {
            self.memory.total.fetch_sub(self.counted - bytes, Ordering::Relaxed) - (self.counted - bytes)
        };
        self.counted = bytes;
        self.client.set_memory(bytes);
        if self.memory.cap > 0 && total > self.memory.cap && bytes > 0 {
            self.memory.enforce(registry);
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.memory.total.fetch_sub(self.counted, Ordering::Relaxed);
    }
}
