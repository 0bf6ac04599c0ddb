//! Every connected client by strata id, so `CLIENT KILL` and `CLIENT UNBLOCK` can use
//! the ids strata hands out (`CLIENT ID`, `HELLO`) rather than upstream connection ids,
//! and `CLIENT LIST` can describe strata's clients rather than its upstream connections.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::resp::reply::Protocol;
use crate::session::Session;

/// What other connections may do to, and see of, one client.
#[derive(Debug)]
pub struct ClientHandle {
    /// The Redis client id of its pinned or pass-through connection, or -1 when it has none.
    upstream_id: AtomicI64,
    /// `SHARED`, `PASS_THROUGH` or `TARGET` (see there): one atomic, so a client leaving
    /// pass-through and another naming it in REDIRECT cannot both win.
    pass_through: AtomicU8,
    /// Cancelled by `CLIENT KILL`: the client's connection closes.
    pub kill: CancellationToken,
    /// The client's address, `ip:port`.
    pub addr: String,
    /// strata's address the client connected to.
    pub laddr: String,
    /// The client socket's file descriptor.
    pub fd: i64,
    connected: Instant,
    /// Milliseconds from `connected` to the client's latest batch of requests.
    active_ms: AtomicU64,
    /// What `CLIENT LIST` shows of the client's session, as its handler last published it.
    view: Mutex<View>,
    /// Bytes its buffers hold (`server::memory`).
    memory: AtomicUsize,
}

/// Where a client connects from, for `CLIENT LIST`.
#[derive(Debug, Default)]
pub struct Peer {
    pub addr: String,
    pub laddr: String,
    pub fd: i64,
}

/// The parts of a client's session that `CLIENT LIST` shows. Its handler publishes them
/// after every request that may change them (all of those leave the shared fast path),
/// and the last command's name once per batch when it changed.
#[derive(Debug, Clone)]
pub struct View {
    pub name: Option<Bytes>,
    pub lib: (Option<Bytes>, Option<Bytes>),
    pub db: i64,
    pub resp: u8,
    /// Commands queued in MULTI, or -1 outside one.
    pub multi: i64,
    /// In pass-through after SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE.
    pub subscribed: bool,
    /// In pass-through after MONITOR.
    pub monitor: bool,
    pub no_evict: bool,
    pub no_touch: bool,
    /// The last command run, `NULL` before any.
    pub cmd: String,
}

impl View {
    /// `session` as it is now, `cmd` its last command.
    pub fn of(session: &Session, cmd: &str) -> View {
        View {
            name: session.name.clone(),
            lib: session.lib.clone(),
            db: session.db,
            resp: match session.protocol {
                Protocol::Resp2 => 2,
                Protocol::Resp3 => 3,
            },
            multi: if session.in_multi { session.tx_mask.len() as i64 } else { -1 },
            subscribed: false,
            monitor: false,
            no_evict: session.no_evict,
            no_touch: session.no_touch,
            cmd: cmd.to_string(),
        }
    }

    /// Redis' `flags` letters for what strata knows of the client, in Redis' order.
    pub fn flags(&self) -> String {
        let letters = [
            (self.monitor, 'O'),
            (self.subscribed, 'P'),
            (self.multi >= 0, 'x'),
            (self.no_evict, 'e'),
            (self.no_touch, 'T'),
        ];
        let flags: String = letters.iter().filter(|(on, _)| *on).map(|(_, letter)| *letter).collect();
        if flags.is_empty() { "N".into() } else { flags }
    }
}

impl ClientHandle {
    /// Bytes its buffers hold.
    pub fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// Records the bytes its buffers hold.
    pub fn set_memory(&self, bytes: usize) {
        self.memory.store(bytes, Ordering::Relaxed);
    }

    /// Records the Redis id of the client's current pinned connection (-1: none).
    pub fn set_upstream_id(&self, id: i64) {
        self.upstream_id.store(id, Ordering::Relaxed);
    }

    /// The Redis id of the client's pinned connection, if it has one.
    pub fn upstream_id(&self) -> Option<i64> {
        Some(self.upstream_id.load(Ordering::Relaxed)).filter(|id| *id >= 0)
    }

    /// The client is in pass-through now: its connection carries whatever Redis pushes,
    /// so it can be the target of another client's `CLIENT TRACKING … REDIRECT`.
    pub fn enter_pass_through(&self) {
        self.pass_through.store(PASS_THROUGH, Ordering::Release);
    }

    /// The client leaves pass-through unless it became a redirect target: `false` then,
    /// and it stays (closing its connection would break the other client's tracking).
    pub fn leave_pass_through(&self) -> bool {
        let left =
            self.pass_through.compare_exchange(PASS_THROUGH, SHARED, Ordering::AcqRel, Ordering::Acquire);
        left.is_ok()
    }

    /// The client's pass-through connection is gone (RESET, or normal service resumed),
    /// target or not.
    pub fn drop_pass_through(&self) {
        self.pass_through.store(SHARED, Ordering::Release);
    }

    /// The Redis id of the client's connection if it is in pass-through, the one kind
    /// of connection that can receive another client's invalidations; from then on it
    /// is a redirect target and stays in pass-through.
    pub fn redirect_target(&self) -> Option<i64> {
        let marked = self
            .pass_through
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| (state != SHARED).then_some(TARGET));
        marked.ok().and(self.upstream_id())
    }

    /// The client sent a batch of requests at `at`: one relaxed store per batch.
    pub fn touch(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.connected).as_millis() as u64;
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the client connected.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connected)
    }

    /// Time since the client's latest batch of requests.
    pub fn idle(&self, now: Instant) -> Duration {
        let active = Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        self.age(now).saturating_sub(active)
    }

    /// A copy of what the client last published.
    pub fn view(&self) -> View {
        self.lock().clone()
    }

    /// Replaces the published view.
    pub fn publish(&self, view: View) {
        *self.lock() = view;
    }

    /// Replaces the last command's name only.
    pub fn publish_cmd(&self, cmd: &str) {
        let mut view = self.lock();
        view.cmd.clear();
        view.cmd.push_str(cmd);
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        // A panic while holding this lock cannot leave a View half-written in a way that
        // matters: it is only ever replaced or copied.
        self.view.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Not in pass-through.
const SHARED: u8 = 0;
/// In pass-through.
const PASS_THROUGH: u8 = 1;
/// In pass-through, and named by another client's REDIRECT.
const TARGET: u8 = 2;

/// Connected clients by strata id.
#[derive(Debug, Default)]
pub struct Registry {
    clients: DashMap<u64, Arc<ClientHandle>>,
}

impl Registry {
    /// Adds a client with its session as it starts; the returned guard removes it when
    /// dropped.
    pub fn register(self: &Arc<Self>, session: &Session, peer: Peer) -> Registration {
        let now = Instant::now();
        let handle = Arc::new(ClientHandle {
            upstream_id: AtomicI64::new(-1),
            pass_through: AtomicU8::new(SHARED),
            kill: CancellationToken::new(),
            addr: peer.addr,
            laddr: peer.laddr,
            fd: peer.fd,
            connected: now,
            active_ms: AtomicU64::new(0),
            view: Mutex::new(View::of(session, "NULL")),
            memory: AtomicUsize::new(0),
        });
        self.clients.insert(session.id, handle.clone());
        Registration { registry: self.clone(), id: session.id, handle }
    }

    /// Every connected client, by id (the order they connected in).
    pub fn clients(&self) -> Vec<(u64, Arc<ClientHandle>)> {
        let mut all: Vec<_> = self.clients.iter().map(|e| (*e.key(), e.value().clone())).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// The strata id of the client whose own upstream connection has Redis id `upstream`.
    /// A scan of every client: for the rare reply that names one (`CLIENT GETREDIR`).
    pub fn by_upstream_id(&self, upstream: i64) -> Option<u64> {
        self.clients.iter().find(|e| e.value().upstream_id() == Some(upstream)).map(|e| *e.key())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_target_stays_in_pass_through_until_its_connection_goes() {
        let registry = Arc::new(Registry::default());
        let registration = registry.register(&Session::new(7), Peer::default());
        let handle = &registration.handle;
        handle.set_upstream_id(42);
        assert_eq!(handle.redirect_target(), None, "not in pass-through");
        handle.enter_pass_through();
        assert!(handle.leave_pass_through());
        handle.enter_pass_through();
        assert_eq!(handle.redirect_target(), Some(42));
        assert!(!handle.leave_pass_through(), "a target keeps its connection");
        handle.drop_pass_through();
        assert_eq!(handle.redirect_target(), None);
        handle.enter_pass_through();
        assert!(handle.leave_pass_through(), "the mark went with the connection");
    }
}
