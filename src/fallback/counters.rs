//! Read-through's counters for `INFO strata` and `/metrics`: what was loaded, remembered,
//! written back and invalidated.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Fallback;

/// Counters for INFO and /metrics.
#[derive(Debug, Default)]
pub struct FallbackCounters {
    /// Queries run.
    pub queries: AtomicU64,
    /// Loads that found a row.
    pub rows: AtomicU64,
    /// Loads that found no row.
    pub no_rows: AtomicU64,
    /// Misses answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// Loads that failed.
    pub errors: AtomicU64,
    /// Values written back to Redis.
    pub write_backs: AtomicU64,
    /// Keys deleted by database notifications.
    pub invalidations: AtomicU64,
    /// LISTEN sessions re-established after notifications may have been lost.
    pub listen_reconnects: AtomicU64,
}

impl Fallback {
    /// The counters as (field, value) pairs for INFO and /metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("queries", load(&c.queries)),
            ("rows", load(&c.rows)),
            ("no_rows", load(&c.no_rows)),
            ("negative_hits", load(&c.negative_hits)),
            ("errors", load(&c.errors)),
            ("write_backs", load(&c.write_backs)),
            ("invalidations", load(&c.invalidations)),
            ("listen_reconnects", load(&c.listen_reconnects)),
        ]
    }

    /// Resets counters (CONFIG RESETSTAT).
    pub fn reset(&self) {
        let c = &self.counters;
        let all = [&c.queries, &c.rows, &c.no_rows, &c.negative_hits, &c.errors, &c.write_backs];
        for counter in all.into_iter().chain([&c.invalidations, &c.listen_reconnects]) {
            counter.store(0, Ordering::Relaxed);
        }
        self.latency.reset();
    }
}
