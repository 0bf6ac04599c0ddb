//! `/metrics` in Prometheus text format through the `metrics` crate's Prometheus
//! exporter. Values are copied from strata's own counters at scrape time, so the data
//! path pays nothing for it. Labels are tier and rule names, never keys. Counters are
//! lifetime totals: `CONFIG RESETSTAT` resets INFO, but a Prometheus counter must never
//! go down (rate() would read the drop as a restart).

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::{InfoExtra, Stats};
use crate::tier::TierTable;

/// A recorder of strata's own (not installed globally, so several strata instances can
/// live in one process, as in the tests).
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    /// A fresh exporter.
    pub fn new() -> Exporter {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Exporter { recorder, handle }
    }

    /// The exposition text with current values.
    pub fn render(&self, stats: &Stats, table: &TierTable, extra: &InfoExtra) -> String {
        metrics::with_local_recorder(&self.recorder, || {
            publish_globals(stats, extra);
            publish_tiers(stats, table);
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn publish_globals(stats: &Stats, extra: &InfoExtra) {
    gauge!("strata_connected_clients").set(extra.clients as f64);
    gauge!("strata_upstream_up").set(if extra.upstream_connected > 0 { 1.0 } else { 0.0 });
    gauge!("strata_upstream_connections").set(extra.upstream_connected as f64);
    gauge!("strata_uptime_seconds").set(stats.uptime_secs() as f64);
    counter!("strata_unclassified_commands_total").absolute(stats.unclassified());
    counter!("strata_upstream_errors_total").absolute(stats.upstream_errors());
    for (name, state, opens) in &extra.breakers {
        for candidate in ["closed", "open", "half_open"] {
            let value = if candidate == *state { 1.0 } else { 0.0 };
            gauge!("strata_breaker_state", "breaker" => *name, "state" => candidate).set(value);
        }
        counter!("strata_breaker_opens_total", "breaker" => *name).absolute(*opens);
    }
    for (field, value) in &extra.fallback {
        counter!(format!("strata_readthrough_{field}_total")).absolute(*value);
    }
    let p = &extra.fallback_latency;
    for (quantile, us) in [("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99), ("0.999", p.p999), ("1", p.max)] {
        gauge!("strata_readthrough_latency_seconds", "quantile" => quantile).set(us as f64 / 1e6);
    }
}

fn publish_tiers(stats: &Stats, table: &TierTable) {
    for (id, tier) in table.tiers().iter().enumerate() {
        let name = tier.name.clone();
        let s = stats.tier_lifetime(id as u16);
        for (outcome, value) in
            [("hit", s.hits), ("miss", s.misses), ("write", s.writes), ("error", s.errors)]
        {
            counter!("strata_tier_requests_total", "tier" => name.clone(), "outcome" => outcome)
                .absolute(value);
        }
        counter!("strata_tier_ttl_rewrites_total", "tier" => name.clone()).absolute(s.ttl_rewrites);
        counter!("strata_tier_ttl_clamps_total", "tier" => name.clone()).absolute(s.ttl_clamps);
        counter!("strata_tier_persist_denied_total", "tier" => name.clone()).absolute(s.persist_denied);
        gauge!("strata_tier_hit_rate", "tier" => name.clone()).set(s.hit_rate());
        let p = stats.latency(id as u16);
        for (quantile, us) in
            [("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99), ("0.999", p.p999), ("1", p.max)]
        {
            gauge!("strata_tier_latency_seconds", "tier" => name.clone(), "quantile" => quantile)
                .set(us as f64 / 1e6);
        }
    }
    for (id, rule) in table.rules().iter().enumerate() {
        let s = stats.rule_lifetime(id);
        let tier = table.tier(rule.tier).name.clone();
        for (outcome, value) in [("hit", s.hits), ("miss", s.misses), ("write", s.writes)] {
            counter!("strata_prefix_requests_total", "tier" => tier.clone(), "prefix" => rule.text.clone(), "outcome" => outcome)
                .absolute(value);
        }
    }
}
