//! Every connected client by strata id, so `CLIENT KILL ID` and `CLIENT UNBLOCK` can use
//! the ids strata hands out (`CLIENT ID`, `HELLO`) rather than upstream connection ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// What other connections may do to one client.
#[derive(Debug, Default)]
pub struct ClientHandle {
    /// The Redis client id of its pinned connection, or -1 when it has none.
    upstream_id: AtomicI64,
    /// Cancelled by `CLIENT KILL ID`: the client's connection closes.
    pub kill: CancellationToken,
}

impl ClientHandle {
    /// Records the Redis id of the client's current pinned connection (-1: none).
    pub fn set_upstream_id(&self, id: i64) {
        self.upstream_id.store(id, Ordering::Relaxed);
    }

    /// The Redis id of the client's pinned connection, if it has one.
    pub fn upstream_id(&self) -> Option<i64> {
        Some(self.upstream_id.load(Ordering::Relaxed)).filter(|id| *id >= 0)
    }
}

/// Connected clients by strata id.
#[derive(Debug, Default)]
pub struct Registry {
    clients: DashMap<u64, Arc<ClientHandle>>,
}

impl Registry {
    /// Adds a client; the returned guard removes it when dropped.
    pub fn register(self: &Arc<Self>, id: u64) -> Registration {
        let handle =
            Arc::new(ClientHandle { upstream_id: AtomicI64::new(-1), kill: CancellationToken::new() });
        self.clients.insert(id, handle.clone());
        Registration { registry: self.clone(), id, handle }
    }

    /// The client with strata id `id`, if connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.clients.get(&id).map(|entry| entry.value().clone())
    }
}

/// Membership of one client in the registry.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    /// The client's handle.
    pub handle: Arc<ClientHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.id);
    }
}
