//! Hit/miss/write/error counts and TTL-policy counts per tier and per prefix, plus
//! latency histograms per tier. The hot path only touches atomics and a per-thread
//! histogram shard; readers (`INFO strata`, `/metrics`) merge on demand.

mod account;
mod info;
mod latency;
mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use account::{Account, AccountKeys, Elements};
pub use info::{InfoExtra, section as info_section, with_strata_clients};
pub use latency::{Latency, Percentiles};
pub use prometheus::Exporter;

use crate::tier::{Class, TierId, TierTable};

/// What one key access turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A read that found the key or field.
    Hit,
    /// A read of a missing key or field.
    Miss,
    /// A write.
    Write,
    /// Redis answered with an error.
    Error,
}

/// Counters of one tier or one prefix.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reads that found data.
    pub hits: AtomicU64,
    /// Reads of missing keys or fields.
    pub misses: AtomicU64,
    /// Writes.
    pub writes: AtomicU64,
    /// Error replies.
    pub errors: AtomicU64,
    /// Keys given the tier's default TTL.
    pub ttl_rewrites: AtomicU64,
    /// Explicit TTLs moved into the tier's bounds.
    pub ttl_clamps: AtomicU64,
    /// PERSISTs refused.
    pub persist_denied: AtomicU64,
    /// What the counters held when `CONFIG RESETSTAT` zeroed them, so `/metrics` can keep
    /// Prometheus counters monotonic (lifetime = carried + current).
    carried: [AtomicU64; 7],
}

/// A plain copy of `Counters` at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See `Counters`.
    pub hits: u64,
    /// See `Counters`.
    pub misses: u64,
    /// See `Counters`.
    pub writes: u64,
    /// See `Counters`.
    pub errors: u64,
    /// See `Counters`.
    pub ttl_rewrites: u64,
    /// See `Counters`.
    pub ttl_clamps: u64,
    /// See `Counters`.
    pub persist_denied: u64,
}

impl From<[u64; 7]> for Snapshot {
    fn from(v: [u64; 7]) -> Snapshot {
        let [hits, misses, writes, errors, ttl_rewrites, ttl_clamps, persist_denied] = v;
        Snapshot { hits, misses, writes, errors, ttl_rewrites, ttl_clamps, persist_denied }
    }
}

impl Snapshot {
    /// Hits over reads, 0 when nothing was read.
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 { 0.0 } else { self.hits as f64 / reads as f64 }
    }
}

impl Counters {
    fn bump(&self, outcome: Outcome, n: u64) {
        let counter = match outcome {
            Outcome::Hit => &self.hits,
            Outcome::Miss => &self.misses,
            Outcome::Write => &self.writes,
            Outcome::Error => &self.errors,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn all(&self) -> [&AtomicU64; 7] {
        [
            &self.hits,
            &self.misses,
            &self.writes,
            &self.errors,
            &self.ttl_rewrites,
            &self.ttl_clamps,
            &self.persist_denied,
        ]
    }

    /// The values since start or the last `CONFIG RESETSTAT` (what INFO shows).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from(self.all().map(|c| c.load(Ordering::Relaxed)))
    }

    /// The values since start, unaffected by `CONFIG RESETSTAT` (what /metrics shows).
    pub fn lifetime(&self) -> Snapshot {
        let current = self.all().map(|c| c.load(Ordering::Relaxed));
        Snapshot::from(std::array::from_fn(|i| current[i] + self.carried[i].load(Ordering::Relaxed)))
    }

    fn reset(&self) {
        for (counter, carried) in self.all().iter().zip(&self.carried) {
            carried.fetch_add(counter.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// TTL-policy actions of one request, added to a tier and a prefix together.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyCounts {
    /// Default TTLs applied.
    pub ttl_rewrites: u32,
    /// Clamps.
    pub clamps: u32,
    /// Refused PERSISTs.
    pub persist_denied: u32,
}

/// All of strata's statistics.
pub struct Stats {
    started: Instant,
    tiers: Vec<Counters>,
    rules: Vec<Counters>,
    latency: Latency,
    /// Commands with keys strata could not find (bad numkeys, unknown command), passed
    /// through untiered.
    unclassified: AtomicU64,
    /// Requests answered with an upstream-unavailable error by strata.
    upstream_errors: AtomicU64,
}

impl Stats {
    /// Counters for every tier and rule of `table`.
    pub fn new(table: &TierTable) -> Stats {
        let counters = |n: usize| (0..n).map(|_| Counters::default()).collect();
        Stats {
            started: Instant::now(),
            tiers: counters(table.tiers().len()),
            rules: counters(table.rules().len()),
            latency: Latency::new(table.tiers().len()),
            unclassified: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
        }
    }

    /// Counts one key's outcome for its tier and rule.
    pub fn record(&self, class: Class, outcome: Outcome) {
        self.record_n(class, outcome, 1);
    }

    /// Counts `n` key accesses of one class with the same outcome.
    pub fn record_n(&self, class: Class, outcome: Outcome, n: u64) {
        self.tiers[class.tier as usize].bump(outcome, n);
        self.rules[class.rule as usize].bump(outcome, n);
    }

    /// Counts the TTL-policy actions of one request against the class of its first key.
    pub fn record_policy(&self, class: Class, counts: PolicyCounts) {
        let add = |counter: &AtomicU64, n: u32| {
            if n > 0 {
                counter.fetch_add(n.into(), Ordering::Relaxed);
            }
        };
        for c in [&self.tiers[class.tier as usize], &self.rules[class.rule as usize]] {
            add(&c.ttl_rewrites, counts.ttl_rewrites);
            add(&c.ttl_clamps, counts.clamps);
            add(&c.persist_denied, counts.persist_denied);
        }
    }

    /// Records latency samples `(tier, micros, count)` gathered over a batch.
    pub fn record_latencies(&self, samples: &[(TierId, u64, u64)]) {
        self.latency.record_many(samples);
    }

    /// Counts a command passed through because its keys could not be found.
    pub fn record_unclassified(&self) {
        self.unclassified.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request strata failed because Redis was unavailable.
    pub fn record_upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One tier's counters.
    pub fn tier(&self, tier: TierId) -> Snapshot {
        self.tiers[tier as usize].snapshot()
    }

    /// One tier's counters since start (ignoring `CONFIG RESETSTAT`).
    pub fn tier_lifetime(&self, tier: TierId) -> Snapshot {
        self.tiers[tier as usize].lifetime()
    }

    /// One prefix's or pattern's counters since start.
    pub fn rule_lifetime(&self, rule: usize) -> Snapshot {
        self.rules[rule].lifetime()
    }

    /// One prefix's or pattern's counters.
    pub fn rule(&self, rule: usize) -> Snapshot {
        self.rules[rule].snapshot()
    }

    /// Latency percentiles of one tier in microseconds.
    pub fn latency(&self, tier: TierId) -> Percentiles {
        self.latency.percentiles(tier)
    }

    /// Commands passed through untiered because their keys could not be found.
    pub fn unclassified(&self) -> u64 {
        self.unclassified.load(Ordering::Relaxed)
    }

    /// Requests failed with an upstream-unavailable error.
    pub fn upstream_errors(&self) -> u64 {
        self.upstream_errors.load(Ordering::Relaxed)
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// `CONFIG RESETSTAT`: every counter and histogram back to zero.
    pub fn reset(&self) {
        self.tiers.iter().chain(&self.rules).for_each(Counters::reset);
        self.latency.reset();
        self.unclassified.store(0, Ordering::Relaxed);
        self.upstream_errors.store(0, Ordering::Relaxed);
    }
}
