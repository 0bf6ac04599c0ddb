//! A tier as the configuration describes it, validated (`config::tiers` reads and checks
//! it); `TierTable` compiles these into the lookup the data path uses.

use std::time::Duration;

/// What happens to `PERSIST` (and `GETEX … PERSIST`) on a key of a TTL tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistPolicy {
    /// Refuse with an error; the key keeps its TTL.
    Deny,
    /// Replace the TTL with the tier's maximum (or its default when it has no maximum).
    ApplyMax,
}

/// Jitter added to default TTLs so keys written together do not expire together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Up to this much longer.
    Up(Duration),
    /// Up to this fraction of the TTL longer (`"10%"` is 0.1).
    Fraction(f64),
}

/// What a tier's commands do while the upstream Redis is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamDown {
    /// Fail at once with `-TRYAGAIN`.
    Fail,
    /// Reads with a read-through rule are answered from PostgreSQL; the rest fail at once.
    Fallback,
}

/// One validated tier.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Name used in `INFO strata`, `/metrics` labels and `STRATA TIER`.
    pub name: String,
    /// Literal key prefixes; the longest matching prefix of any tier wins.
    pub prefixes: Vec<String>,
    /// Redis-style glob patterns, tried in order when no prefix matches.
    pub patterns: Vec<String>,
    /// TTL given to keys written without one; `None` means the tier only counts.
    pub default_ttl: Option<Duration>,
    /// Explicit TTLs below this are raised to it.
    pub min_ttl: Option<Duration>,
    /// Explicit TTLs above this are lowered to it.
    pub max_ttl: Option<Duration>,
    /// Spread added to default TTLs.
    pub jitter: Jitter,
    /// Reads push the TTL back out to the default (session-style expiry).
    pub sliding: bool,
    /// PERSIST handling.
    pub persist: PersistPolicy,
    /// Behaviour while Redis is unavailable.
    pub on_upstream_down: UpstreamDown,
}

/// The largest jitter `j` can add to `ttl`.
pub fn jitter_bound(j: Jitter, ttl: Duration) -> Duration {
    match j {
        Jitter::Up(d) => d,
        Jitter::Fraction(f) => ttl.mul_f64(f),
    }
}
