//! Single flight and the negative cache. Concurrent misses for one key share one query:
//! the first caller runs it, later callers wait for its outcome. A semaphore bounds the
//! queries in flight across all keys. "No row" answers are remembered for the rule's
//! negative TTL, in a map of bounded size.

use std::future::Future;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::{FallbackError, Loaded};

type Outcome = Result<Option<Loaded>, FallbackError>;

/// Queries in flight, by key.
pub struct Flights {
    /// Waiters per key. Each list is bounded by the clients that can miss the same key at
    /// once (max_clients × pipeline depth).
    waiting: DashMap<Vec<u8>, Vec<oneshot::Sender<Outcome>>>,
    permits: Semaphore,
    /// Longest wait for a query slot; past it the miss fails instead of queueing on.
    slot_wait: Duration,
}

/// Removes the key's entry if the leader is dropped mid-query, so waiters get an error
/// instead of waiting forever. Once the leader has finished (`done`), the entry may
/// already belong to a newer flight and is left alone.
struct Leader<'a> {
    flights: &'a Flights,
    key: &'a [u8],
    done: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.flights.waiting.remove(self.key);
        }
    }
}

impl Flights {
    /// Allows `max_inflight` queries at once.
    pub fn new(max_inflight: usize, slot_wait: Duration) -> Flights {
        Flights { waiting: DashMap::new(), permits: Semaphore::new(max_inflight), slot_wait }
    }

    /// A query slot, waiting at most `slot_wait` (also for batch queries).
    pub async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, FallbackError> {
        match tokio::time::timeout(self.slot_wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(FallbackError::Unavailable("read-through closed".into())),
            Err(_) => Err(FallbackError::Unavailable("all read-through query slots busy".into())),
        }
    }

    /// Runs `query` unless one for `key` is already running, in which case its outcome
    /// is shared.
    pub async fn run(&self, key: &[u8], query: impl Future<Output = Outcome>) -> Outcome {
        let rx = match self.waiting.entry(key.to_vec()) {
            dashmap::Entry::Occupied(mut waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.get_mut().push(tx);
                Some(rx)
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                None
            }
        };
        if let Some(rx) = rx {
            return rx
                .await
                .unwrap_or_else(|_| Err(FallbackError::Unavailable("shared query abandoned".into())));
        }
        let mut leader = Leader { flights: self, key, done: false };
        let outcome = match self.slot().await {
            Ok(_permit) => query.await,
            Err(e) => Err(e),
        };
        let waiters = self.waiting.remove(key).map(|(_, w)| w).unwrap_or_default();
        leader.done = true;
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
        outcome
    }
}

/// Values remembered per key until their expiry, in a map of bounded size: "no row"
/// answers (the negative cache) and just-loaded rows (so misses that Redis answered
/// before the write-back landed share the load instead of querying again).
pub struct Expiring<V> {
    entries: DashMap<Vec<u8>, (Instant, V)>,
    capacity: usize,
    /// When a full map was last swept for expired entries: at most one sweep per
    /// `SWEEP_EVERY`, so a map full of live entries costs a lookup per insert, not a scan.
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Keys known to have no row.
pub type NegativeCache = Expiring<()>;

impl<V: Clone> Expiring<V> {
    /// Holds at most `capacity` keys.
    pub fn new(capacity: usize) -> Expiring<V> {
        Expiring { entries: DashMap::new(), capacity, last_sweep: std::sync::Mutex::new(None) }
    }

    /// Forgets every key.
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The value remembered for `key`, if not expired.
    pub fn get(&self, key: &[u8]) -> Option<V> {
        let (until, value) = self.entries.get(key).map(|e| e.value().clone())?;
        if until <= Instant::now() {
            self.entries.remove(key);
            return None;
        }
        Some(value)
    }

    /// True when `key` has an unexpired entry.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Remembers `value` for `key` for `ttl`. When full, expired entries are dropped
    /// first; if it is still full the key is simply not remembered.
    pub fn insert(&self, key: &[u8], value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity {
            let now = Instant::now();
            let due = {
                let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
                let due = last.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY);
                if due {
                    *last = Some(now);
                }
                due
            };
            if due {
                self.entries.retain(|_, (until, _)| *until > now);
            }
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        self.entries.insert(key.to_vec(), (Instant::now() + ttl, value));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &[u8]) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_misses_share_one_query() {
        let flights = Arc::new(Flights::new(4, Duration::from_secs(5)));
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move {
                    flights
                        .run(b"k", async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(Some(Loaded::String("v".into())))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Some(Loaded::String("v".into())));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn negative_entries_expire_and_stay_bounded() {
        let cache = NegativeCache::new(2);
        cache.insert(b"a", (), Duration::from_secs(1));
        cache.insert(b"b", (), Duration::from_secs(5));
        cache.insert(b"c", (), Duration::from_secs(5));
        assert!(cache.contains(b"a") && !cache.contains(b"c"), "full: c not cached");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!cache.contains(b"a"));
        cache.insert(b"c", (), Duration::from_secs(5));
        assert!(cache.contains(b"c"));
        cache.remove(b"c");
        assert!(!cache.contains(b"c"));
    }
}
