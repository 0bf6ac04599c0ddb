//! `[postgres]` and `[[read_through]]` as the configuration describes them, validated
//! (`config::fallback` reads and checks them); `Fallback` compiles the rules.

use std::time::Duration;

pub use crate::breaker::BreakerConfig;
use crate::tier::TierTable;

/// What the read-through service is built from: the validated sections of the config
/// and its compiled tiers (`Config::fallback_setup`).
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// `[[read_through]]`, in file order.
    pub rules: &'a [ReadThroughConfig],
    /// `[postgres]`.
    pub postgres: &'a PostgresConfig,
    /// `[breaker]`, used for PostgreSQL's breaker too.
    pub breaker: &'a BreakerConfig,
    /// The tiers, whose TTL policy written-back values get.
    pub tiers: &'a TierTable,
}

/// `[postgres]`
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connection URL; `None` turns read-through off.
    pub url: Option<String>,
    /// Most pooled connections.
    pub pool_size: u32,
    /// Time allowed to get a connection.
    pub connect_timeout: Duration,
    /// Longest a read-through query may run (server-side `statement_timeout` too).
    pub statement_timeout: Duration,
    /// Most read-through queries in flight; more misses wait for a slot.
    pub max_inflight: usize,
    /// Channel strata LISTENs on for invalidations; `None` for none.
    pub listen_channel: Option<String>,
    /// Most keys remembered as "no row" at once.
    pub negative_cache_size: usize,
}

/// The value a rule's query produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One column: a string value (GET, GETEX, MGET).
    String,
    /// Columns become hash fields (HGET, HMGET, HGETALL, HEXISTS).
    Hash,
}

/// What a miss answers when PostgreSQL fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDbError {
    /// An error reply.
    Error,
    /// A nil, as if the row did not exist (not cached).
    Nil,
}

/// One `[[read_through]]` rule.
#[derive(Debug, Clone)]
pub struct ReadThroughConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Key pattern with `{capture}`s, such as `product:details:{id}`.
    pub key: String,
    /// SQL with `$1…$n` bound to the captures in order.
    pub query: String,
    /// Optional SQL for several keys at once: `$1` is an array of the (single) capture,
    /// and each row is `(capture, value)`.
    pub batch_query: Option<String>,
    /// String or hash.
    pub shape: Shape,
    /// How long "no row" is remembered.
    pub negative_ttl: Duration,
    /// Answer on database failure.
    pub on_db_error: OnDbError,
    /// The tier whose TTL the written-back value gets (by name; default: the tier of
    /// the pattern's literal prefix).
    pub tier: Option<String>,
}
