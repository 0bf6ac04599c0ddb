//! Latency histograms per tier. Each worker thread records into its own shard (picked
//! once per thread), so concurrent clients never contend on one lock; readers merge the
//! shards. HdrHistogram gives exact-enough percentiles at fixed memory.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use hdrhistogram::Histogram;

use crate::tier::TierId;

/// Shards per histogram set: more than the worker threads strata normally runs, so
/// threads rarely share one.
const SHARDS: usize = 8;
/// Highest latency tracked, in µs (one minute); slower requests count as the maximum.
const HIGHEST_US: u64 = 60_000_000;
/// Two significant figures: percentiles within 1%, about 20 KiB per histogram.
const SIGFIGS: u8 = 2;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Requests recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
}

/// Per-tier histograms, sharded by thread.
pub struct Latency {
    shards: Vec<Mutex<Vec<Histogram<u64>>>>,
    tiers: usize,
}

fn empty_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIGS).expect("constant histogram bounds are valid")
}

impl Latency {
    /// Empty histograms for `tiers` tiers.
    pub fn new(tiers: usize) -> Latency {
        let shard = || Mutex::new((0..tiers).map(|_| empty_histogram()).collect());
        Latency { shards: (0..SHARDS).map(|_| shard()).collect(), tiers }
    }

    /// Records one request of `tier` that took `micros`.
    pub fn record(&self, tier: TierId, micros: u64) {
        let shard = SHARD.with(|s| *s);
        let mut histograms = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = histograms.get_mut(tier as usize) {
            h.saturating_record(micros.clamp(1, HIGHEST_US));
        }
    }

    /// Records `(tier, micros, count)` samples under one lock: a batch of replies settled
    /// together shares its latency, so this is one lock per batch, not per request.
    pub fn record_many(&self, samples: &[(TierId, u64, u64)]) {
        if samples.is_empty() {
            return;
        }
        let shard = SHARD.with(|s| *s);
        let mut histograms = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        for &(tier, micros, count) in samples {
            if let Some(h) = histograms.get_mut(tier as usize) {
                let _ = h.record_n(micros.clamp(1, HIGHEST_US), count);
            }
        }
    }

    /// Merged percentiles of one tier.
    pub fn percentiles(&self, tier: TierId) -> Percentiles {
        let mut merged = empty_histogram();
        for shard in &self.shards {
            let histograms = shard.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = histograms.get(tier as usize) {
                // Same bounds on both sides, so adding cannot fail.
                let _ = merged.add(h);
            }
        }
        if merged.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: merged.len(),
            p50: merged.value_at_quantile(0.5),
            p90: merged.value_at_quantile(0.9),
            p99: merged.value_at_quantile(0.99),
            p999: merged.value_at_quantile(0.999),
            max: merged.max(),
        }
    }

    /// Clears every histogram.
    pub fn reset(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().for_each(Histogram::reset);
        }
    }

    /// Number of tiers tracked.
    pub fn tiers(&self) -> usize {
        self.tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_merge_across_threads() {
        let latency = std::sync::Arc::new(Latency::new(2));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = latency.clone();
                std::thread::spawn(move || (1..=1000).for_each(|us| l.record(1, us)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let p = latency.percentiles(1);
        assert_eq!(p.count, 4000);
        assert!((490..=510).contains(&p.p50), "{p:?}");
        assert!((980..=1000).contains(&p.p99), "{p:?}");
        assert_eq!(latency.percentiles(0), Percentiles::default());
        latency.reset();
        assert_eq!(latency.percentiles(1).count, 0);
    }
}
