//! Keeping loaded rows fresh: what happens after a load (count it, remember "no row",
//! write the row back to Redis unless the key changed meanwhile), and what forgets them
//! (writes through strata, database notifications). A change epoch per key slot tells a
//! load that finishes after a change not to write back what it read.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use std::sync::Arc;

use super::{Fallback, FallbackCounters, FallbackError, Loaded, RECENT_TTL, Rule};
use crate::upstream::fence::WriteBackHold;
use crate::upstream::own::OwnClient;

/// `SET … NX PX` (or the hash equivalent) of a loaded row, counted.
async fn store(
    redis: Arc<OwnClient>,
    key: Bytes,
    value: Loaded,
    ttl: u64,
    counters: Arc<FallbackCounters>,
    rule: String,
) {
    let written = match &value {
        Loaded::String(v) => redis.set_absent(key, v.clone(), ttl).await,
        Loaded::Hash(fields) if fields.is_empty() => return,
        Loaded::Hash(fields) => redis.hash_absent(key, fields, ttl).await,
    };
    match written {
        Ok(true) => {
            counters.write_backs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(rule = %rule, error = %e, "write-back failed"),
    }
}

impl Fallback {
    pub(super) async fn after_load(
        &self,
        id: usize,
        key: &Bytes,
        loaded: &Result<Option<Loaded>, FallbackError>,
        write_back: bool,
        epoch: u64,
    ) {
        let rule = &self.rules[id];
        match loaded {
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(rule = %rule.name, error = %e, "read-through failed");
            }
            // Invalidated or written while the query ran: what it read may already be
            // stale, so it is answered once but neither cached nor remembered.
            Ok(None) => {
                self.counters.no_rows.fetch_add(1, Ordering::Relaxed);
                if self.epoch(key) == epoch {
                    self.negative.insert(key, (), rule.negative_ttl);
                }
            }
            Ok(Some(value)) => {
                self.counters.rows.fetch_add(1, Ordering::Relaxed);
                if self.epoch(key) != epoch {
                    return;
                }
                self.recent.insert(key, value.clone(), RECENT_TTL);
                if !write_back {
                    return;
                }
                // With the key's stripe held, no request on the key reaches Redis before the
                // write-back, so the client need not wait for it. A write that was read
                // before the hold changed the epoch (its plan forgets the key's rows).
                match self.fences.as_ref().and_then(|f| f.hold_for_write_back(key)) {
                    Some(hold) if self.epoch(key) == epoch => self.write_back_behind(rule, key, value, hold),
                    Some(_) => {}
                    None => self.write_back(rule, key.clone(), value).await,
                }
            }
        }
    }

    /// Stores a loaded value with the tier TTL unless a newer value is there already.
    async fn write_back(&self, rule: &Rule, key: Bytes, value: &Loaded) {
        let Some(redis) = self.redis.clone() else { return };
        let ttl = rule.policy.fresh_ms().unwrap_or(60_000);
        store(redis, key, value.clone(), ttl, self.counters.clone(), rule.name.clone()).await;
    }

    /// `write_back` in a task of its own, holding the key's stripe until Redis answered.
    fn write_back_behind(&self, rule: &Rule, key: &Bytes, value: &Loaded, hold: WriteBackHold) {
        let Some(redis) = self.redis.clone() else { return };
        let ttl = rule.policy.fresh_ms().unwrap_or(60_000);
        let stored = store(redis, key.clone(), value.clone(), ttl, self.counters.clone(), rule.name.clone());
        tokio::spawn(async move {
            // The client's answer first: this task was spawned while the load that
            // answers it was still running, so it would otherwise run (and write to
            // Redis) before the answer is handed back. The hold keeps the key safe.
            tokio::task::yield_now().await;
            stored.await;
            drop(hold);
        });
    }

    /// True when `key` exists in Redis (false when that cannot be told).
    pub async fn key_exists(&self, key: Bytes) -> bool {
        match &self.redis {
            Some(redis) => redis.exists(key).await.unwrap_or(false),
            None => false,
        }
    }

    /// A write through strata or a database notification: forget "no row" for `key`.
    pub fn forget(&self, key: &[u8]) {
        self.bump_epoch(key);
        self.negative.remove(key);
        self.recent.remove(key);
    }

    /// The key a rule renders for captures, for notifications naming a rule
    /// (`@rule capture …`).
    pub fn key_for(&self, rule_name: &str, captures: &[&[u8]]) -> Option<Bytes> {
        let rule = self.rules.iter().find(|r| r.name == rule_name)?;
        rule.pattern.render(captures).map(Bytes::from)
    }

    /// A database notification named `key`: delete it in Redis and forget "no row".
    pub async fn invalidate(&self, key: Bytes) {
        self.bump_epoch(&key);
        self.negative.remove(&key);
        self.recent.remove(&key);
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        if let Some(redis) = &self.redis
            && let Err(e) = redis.del(key).await
        {
            tracing::warn!(error = %e, "invalidation DEL failed");
        }
    }

    /// The LISTEN connection is back after notifications may have been lost: every
    /// rule-backed key may have changed. Forgets every "no row" and recently loaded row,
    /// and bumps every change count so loads in flight neither write back nor remember
    /// what they read.
    pub fn assume_stale(&self) {
        self.negative.clear();
        self.recent.clear();
        for epoch in &self.epochs {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.counters.listen_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// The change count of `key`'s slot: bumped by every invalidation and write, so a
    /// load can tell whether its row may be stale by the time it arrives.
    pub(super) fn epoch(&self, key: &[u8]) -> u64 {
        self.epochs[self.epoch_slot(key)].load(Ordering::Acquire)
    }

    fn bump_epoch(&self, key: &[u8]) {
        self.epochs[self.epoch_slot(key)].fetch_add(1, Ordering::AcqRel);
    }

    fn epoch_slot(&self, key: &[u8]) -> usize {
        use std::hash::BuildHasher;
        (self.epoch_hasher.hash_one(key) as usize) % self.epochs.len()
    }
}
