//! One tier's TTL rules in milliseconds: the default (with jitter) for keys written
//! without a TTL, the clamp for explicit TTLs, sliding refresh, and PERSIST handling.

use super::settings::{Jitter, PersistPolicy, TierConfig, jitter_bound};

/// The TTL rules of one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TtlPolicy {
    /// Default TTL in ms; `None` for a tier that only counts.
    pub default_ms: Option<u64>,
    /// Lowest explicit TTL kept, in ms.
    pub min_ms: Option<u64>,
    /// Highest explicit TTL kept, in ms.
    pub max_ms: Option<u64>,
    /// Most jitter added to the default, in ms.
    pub jitter_ms: u64,
    /// Reads push the TTL back out to the default.
    pub sliding: bool,
    /// What PERSIST does.
    pub persist: PersistPolicy,
}

impl TtlPolicy {
    /// The policy a tier's configuration describes.
    pub fn from_config(c: &TierConfig) -> TtlPolicy {
        let ms = |d: std::time::Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let jitter = match (c.jitter, c.default_ttl) {
            (Jitter::Up(d), _) => ms(d),
            (j @ Jitter::Fraction(_), Some(default)) => ms(jitter_bound(j, default)),
            (Jitter::Fraction(_), None) => 0,
        };
        TtlPolicy {
            default_ms: c.default_ttl.map(ms),
            min_ms: c.min_ttl.map(ms),
            max_ms: c.max_ttl.map(ms),
            jitter_ms: jitter,
            sliding: c.sliding,
            persist: c.persist,
        }
    }

    /// True when keys of this tier must always carry a TTL.
    pub fn enforces_ttl(&self) -> bool {
        self.default_ms.is_some()
    }

    /// A TTL for a key written without one: the default plus a random part of the jitter.
    pub fn fresh_ms(&self) -> Option<u64> {
        let default = self.default_ms?;
        let spread = if self.jitter_ms == 0 { 0 } else { fastrand::u64(0..=self.jitter_ms) };
        Some(default + spread)
    }

    /// An explicit TTL moved into [min, max]; `None` when it is already inside.
    pub fn clamp_ms(&self, ttl: u64) -> Option<u64> {
        let clamped = ttl.max(self.min_ms.unwrap_or(0)).min(self.max_ms.unwrap_or(u64::MAX));
        (clamped != ttl).then_some(clamped)
    }

    /// The TTL PERSIST is replaced with under `PersistPolicy::ApplyMax`.
    pub fn persist_replacement_ms(&self) -> Option<u64> {
        self.max_ms.or(self.default_ms)
    }

    /// A one-line description for `STRATA TIER` / `STRATA TIERS`.
    pub fn describe(&self) -> String {
        let show = |v: Option<u64>| v.map_or("none".to_string(), |ms| format!("{ms}ms"));
        format!(
            "default_ttl={} min_ttl={} max_ttl={} jitter={}ms sliding={} persist={}",
            show(self.default_ms),
            show(self.min_ms),
            show(self.max_ms),
            self.jitter_ms,
            if self.sliding { "yes" } else { "no" },
            match self.persist {
                PersistPolicy::Deny => "deny",
                PersistPolicy::ApplyMax => "max",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TtlPolicy {
        TtlPolicy {
            default_ms: Some(60_000),
            min_ms: Some(1_000),
            max_ms: Some(120_000),
            jitter_ms: 6_000,
            sliding: false,
            persist: PersistPolicy::Deny,
        }
    }

    #[test]
    fn clamp_only_moves_what_is_outside() {
        let p = policy();
        assert_eq!(p.clamp_ms(500), Some(1_000));
        assert_eq!(p.clamp_ms(5_000), None);
        assert_eq!(p.clamp_ms(500_000), Some(120_000));
    }

    #[test]
    fn fresh_ttls_spread_over_the_jitter() {
        let p = policy();
        let ttls: Vec<u64> = (0..200).map(|_| p.fresh_ms().unwrap()).collect();
        assert!(ttls.iter().all(|t| (60_000..=66_000).contains(t)));
        let distinct: std::collections::HashSet<_> = ttls.iter().collect();
        assert!(distinct.len() > 50, "jitter should spread TTLs, got {} distinct", distinct.len());
    }
}
