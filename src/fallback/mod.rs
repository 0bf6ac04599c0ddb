//! Read-through: when Redis misses (or is unavailable) for a key with a rule, load the
//! row from PostgreSQL, write it back with the tier TTL without clobbering a newer write,
//! and answer. One query per key however many clients miss at once (single flight),
//! a bounded number of queries in flight, "no row" remembered for a while (negative
//! cache), and a breaker so a dead database fails fast.

mod conns;
mod counters;
mod flight;
mod freshness;
mod listen;
pub mod pattern;
mod postgres;
pub mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

pub use counters::FallbackCounters;
pub use flight::{Expiring, Flights, NegativeCache};
pub use pattern::KeyPattern;
pub use postgres::{Database, ParamType, RuleSql};

use crate::breaker::Breaker;
use crate::stats::Latency;
use crate::tier::TtlPolicy;
use crate::upstream::fence::Fences;
use crate::upstream::own::OwnClient;
pub use settings::{OnDbError, PostgresConfig, ReadThroughConfig, Setup, Shape};

/// How long a loaded row is shared with misses that arrive after its query finished:
/// long enough to cover misses Redis answered before the write-back landed (and reads
/// while Redis is down), short enough that a row change is seen within a second even
/// without a NOTIFY.
const RECENT_TTL: Duration = Duration::from_secs(1);

/// Slots of the change-count array (8 bytes each).
const EPOCH_SLOTS: usize = 4096;

/// A value loaded from PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A string value.
    String(Bytes),
    /// Hash fields and values, in column order.
    Hash(Vec<(Bytes, Bytes)>),
}

/// Why a load failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FallbackError {
    /// The database cannot be reached (or its breaker is open, or it timed out).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The query failed (bad SQL, wrong types): a rule problem, not an outage.
    #[error("read-through query failed: {0}")]
    Query(String),
    /// A rule or the URL is unusable.
    #[error("read-through misconfigured: {0}")]
    Config(String),
}

/// One compiled rule.
pub struct Rule {
    /// Name from the config.
    pub name: String,
    /// The key pattern.
    pub pattern: KeyPattern,
    /// The per-key statement.
    pub sql: RuleSql,
    /// The many-keys statement, if any.
    pub batch: Option<RuleSql>,
    /// String or hash.
    pub shape: Shape,
    /// How long "no row" is remembered.
    pub negative_ttl: Duration,
    /// Answer on database failure.
    pub on_db_error: OnDbError,
    /// TTL policy of the tier written-back values get.
    pub policy: TtlPolicy,
}

/// The read-through service.
pub struct Fallback {
    rules: Vec<Rule>,
    db: Option<Database>,
    flights: Flights,
    negative: NegativeCache,
    /// Rows loaded in the last `RECENT_TTL`: see `Expiring`.
    recent: Expiring<Loaded>,
    /// The database breaker.
    pub breaker: Breaker,
    redis: Option<Arc<OwnClient>>,
    statement_timeout: Duration,
    /// Change counts by key hash (see `epoch`); a fixed array, so memory stays bounded
    /// and two keys sharing a slot only cost a skipped write-back.
    epochs: Vec<AtomicU64>,
    epoch_hasher: foldhash::fast::RandomState,
    /// Counters.
    pub counters: Arc<FallbackCounters>,
    /// Query latency.
    pub latency: Latency,
    /// The shared connections' key stripes: a write-back holds its key's stripe, so the
    /// client is answered before it (see `freshness`). Without them, after it.
    fences: Option<Arc<Fences>>,
}

impl Fallback {
    /// Compiles the rules; the database pool connects lazily.
    pub fn new(setup: &Setup, redis: Option<Arc<OwnClient>>) -> Result<Fallback, FallbackError> {
        let rules = compile_rules(setup)?;
        let db = match (&setup.postgres.url, rules.is_empty()) {
            (Some(url), false) => Some(Database::connect_lazy(setup.postgres, url)?),
            _ => None,
        };
        Ok(Self::assemble(setup, rules, db, redis))
    }

    /// A service with no rules (read-through off), for when the rules cannot be built.
    fn disabled(setup: &Setup) -> Fallback {
        Self::assemble(setup, Vec::new(), None, None)
    }

    fn assemble(
        config: &Setup,
        rules: Vec<Rule>,
        db: Option<Database>,
        redis: Option<Arc<OwnClient>>,
    ) -> Fallback {
        Fallback {
            rules,
            db,
            flights: Flights::new(config.postgres.max_inflight, config.postgres.statement_timeout),
            negative: NegativeCache::new(config.postgres.negative_cache_size),
            recent: Expiring::new(config.postgres.negative_cache_size),
            breaker: Breaker::with_rate(
                "postgres",
                config.breaker.failure_threshold,
                config.breaker.cooldown,
                config.breaker.rate(),
            ),
            redis,
            statement_timeout: config.postgres.statement_timeout,
            epochs: (0..EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch_hasher: foldhash::fast::RandomState::default(),
            counters: Arc::default(),
            fences: None,
            latency: Latency::new(1),
        }
    }

    /// True when there is nothing to read through.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The database pool, when read-through is on.
    pub fn database(&self) -> Option<&Database> {
        self.db.as_ref()
    }

    /// The rule matching `key` and its shape.
    pub fn rule_for(&self, key: &[u8]) -> Option<(usize, Shape)> {
        self.rules
            .iter()
            .position(|r| key.starts_with(r.pattern.prefix()) && r.pattern.is_match(key))
            .map(|i| (i, self.rules[i].shape))
    }

    /// The rule by index.
    pub fn rule(&self, id: usize) -> &Rule {
        &self.rules[id]
    }

    /// All rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Loads `key` by rule `id`; writes it back to Redis when `write_back`.
    pub async fn load(
        &self,
        id: usize,
        key: Bytes,
        write_back: bool,
    ) -> Result<Option<Loaded>, FallbackError> {
        if self.negative.contains(&key) {
            self.counters.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if let Some(value) = self.recent.get(&key) {
            return Ok(Some(value));
        }
        // Until the query is done, later misses for the key join this flight instead of
        // starting another query; after it, `recent` answers them while the write-back
        // is on its way.
        let flight = async {
            let epoch = self.epoch(&key);
            let loaded = self.query(id, &key).await;
            self.after_load(id, &key, &loaded, write_back, epoch).await;
            loaded
        };
        self.flights.run(&key, flight).await
    }

    /// Loads several keys of one rule, with its batch query when it has one.
    pub async fn load_many(
        &self,
        id: usize,
        keys: &[Bytes],
        write_back: bool,
    ) -> Vec<Result<Option<Loaded>, FallbackError>> {
        let rule = &self.rules[id];
        let Some(batch) = rule.batch.as_ref().filter(|_| keys.len() > 1) else {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.load(id, key.clone(), write_back).await);
            }
            return out;
        };
        let mut out: Vec<Option<Result<Option<Loaded>, FallbackError>>> = keys
            .iter()
            .map(|k| match self.recent.get(k) {
                Some(value) => Some(Ok(Some(value))),
                None => self.negative.contains(k).then_some(Ok(None)),
            })
            .collect();
        let pending: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        let negative_hits = (keys.len() - pending.len()) as u64;
        self.counters.negative_hits.fetch_add(negative_hits, Ordering::Relaxed);
        let captures: Vec<&[u8]> = pending
            .iter()
            .map(|&i| rule.pattern.matches(&keys[i]).and_then(|c| c.first().copied()).unwrap_or(b""))
            .collect();
        let epochs: Vec<u64> = pending.iter().map(|&i| self.epoch(&keys[i])).collect();
        let rows =
            if captures.is_empty() { Ok(Vec::new()) } else { self.batch_query(batch, &captures).await };
        for ((&i, capture), epoch) in pending.iter().zip(&captures).zip(epochs) {
            let one = match &rows {
                Ok(rows) => Ok(rows
                    .iter()
                    .find(|(id, _)| id.as_ref() == *capture)
                    .map(|(_, v)| Loaded::String(v.clone()))),
                Err(e) => Err(e.clone()),
            };
            self.after_load(id, &keys[i], &one, write_back, epoch).await;
            out[i] = Some(one);
        }
        out.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    async fn batch_query(
        &self,
        batch: &RuleSql,
        captures: &[&[u8]],
    ) -> Result<Vec<(Bytes, Bytes)>, FallbackError> {
        let db = self.db.as_ref().ok_or_else(|| FallbackError::Config("no postgres.url".into()))?;
        if !self.breaker.try_probe() {
            return Err(FallbackError::Unavailable("circuit open".into()));
        }
        let _slot = self.flights.slot().await?;
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.statement_timeout, db.load_batch(&batch.sql, captures))
            .await
            .unwrap_or_else(|_| Err(FallbackError::Unavailable("statement timeout".into())));
        self.latency.record(0, started.elapsed().as_micros() as u64);
        self.judge(&result.as_ref().map(|_| ()));
        result
    }

    /// One query for one key, through the breaker and the statement timeout.
    async fn query(&self, id: usize, key: &[u8]) -> Result<Option<Loaded>, FallbackError> {
        let rule = &self.rules[id];
        let db = self.db.as_ref().ok_or_else(|| FallbackError::Config("no postgres.url".into()))?;
        if !self.breaker.try_probe() {
            return Err(FallbackError::Unavailable("circuit open".into()));
        }
        let captures = rule.pattern.matches(key).unwrap_or_default();
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.statement_timeout, db.load(&rule.sql, rule.shape, &captures))
            .await
            .unwrap_or_else(|_| Err(FallbackError::Unavailable("statement timeout".into())));
        self.latency.record(0, started.elapsed().as_micros() as u64);
        self.judge(&result.as_ref().map(|_| ()));
        result
    }

    /// Feeds the breaker: only outages count against it.
    fn judge(&self, result: &Result<(), &FallbackError>) {
        match result {
            Err(FallbackError::Unavailable(_)) => self.breaker.failure(),
            _ => self.breaker.success(),
        }
    }
}

/// Builds the read-through service for a running strata, with strata's own Redis client
/// (`redis`, for write-backs) and the LISTEN task for invalidations when a channel is
/// configured.
pub fn start(
    setup: &Setup,
    redis: Option<Arc<OwnClient>>,
    fences: Option<Arc<Fences>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Arc<Fallback> {
    let mut fallback = match Fallback::new(setup, redis) {
        Ok(fallback) => fallback,
        Err(e) => {
            tracing::error!(error = %e, "read-through disabled");
            Fallback::disabled(setup)
        }
    };
    fallback.fences = fences;
    let fallback = Arc::new(fallback);
    if let (Some(channel), Some(_)) = (&setup.postgres.listen_channel, fallback.database()) {
        tokio::spawn(listen::run(fallback.clone(), channel.clone(), shutdown));
    }
    fallback
}

fn compile_rules(setup: &Setup) -> Result<Vec<Rule>, FallbackError> {
    let tiers = setup.tiers;
    setup
        .rules
        .iter()
        .map(|r| {
            let pattern = KeyPattern::parse(&r.key).map_err(FallbackError::Config)?;
            let tier = match &r.tier {
                Some(name) => tiers.tiers().iter().position(|t| &t.name == name),
                None => tiers.classify(pattern.prefix()).map(|c| c.tier as usize),
            };
            let policy = tier
                .map(|t| tiers.tiers()[t].policy.clone())
                .ok_or_else(|| FallbackError::Config(format!("rule '{}' has no tier", r.name)))?;
            Ok(Rule {
                name: r.name.clone(),
                pattern,
                sql: RuleSql::new(r.query.clone()),
                batch: r.batch_query.clone().map(RuleSql::new),
                shape: r.shape,
                negative_ttl: r.negative_ttl,
                on_db_error: r.on_db_error,
                policy,
            })
        })
        .collect()
}

/// `strata check-config --db`: prepares every rule's statements on the live database.
pub async fn check_rules(setup: &Setup<'_>) -> Vec<String> {
    let fallback = match Fallback::new(setup, None) {
        Ok(f) => f,
        Err(e) => return vec![e.to_string()],
    };
    let Some(db) = fallback.database() else {
        return vec!["postgres.url: not set (nothing to check against)".to_string()];
    };
    let mut problems = Vec::new();
    for (i, rule) in fallback.rules().iter().enumerate() {
        if let Err(e) = db.param_types(&rule.sql).await {
            problems.push(format!("read_through[{i}].query: {e}"));
        } else if let Err(e) = db.check_columns(&rule.sql).await {
            problems.push(format!("read_through[{i}].query: {e}"));
        }
        if let Some(batch) = &rule.batch
            && let Err(e) = db.check_batch(&batch.sql).await
        {
            problems.push(format!("read_through[{i}].batch_query: {e}"));
        }
    }
    problems
}
