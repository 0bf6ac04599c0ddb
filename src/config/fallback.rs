//! `[postgres]`, `[[read_through]]` and `[breaker]`: where misses are loaded from, which
//! keys have a loading rule, and when strata stops trying the upstream. Reading and
//! validation only; `crate::fallback` and `crate::breaker` do the work.

use std::time::Duration;

use super::bounds::{millis, parse_ttl};
use super::reader::Section;
use super::{Config, ConfigError};
use crate::fallback::settings::Setup;

pub use crate::breaker::BreakerConfig;
pub use crate::fallback::settings::{OnDbError, PostgresConfig, ReadThroughConfig, Shape};

impl Config {
    /// The sections read-through is built from, with the compiled tiers.
    pub fn fallback_setup(&self) -> Setup<'_> {
        Setup {
            rules: &self.read_through,
            postgres: &self.postgres,
            breaker: &self.breaker,
            tiers: &self.tier_table,
        }
    }
}

pub(super) fn read_postgres(
    root: &mut Section,
    url_override: Option<String>,
    errors: &mut Vec<ConfigError>,
) -> PostgresConfig {
    let mut s = root.section("postgres", errors);
    let url: Option<String> = s.opt("url", errors);
    // An error in the override is blamed on it, not on the file's field it replaced.
    let source = if url_override.is_some() { "--postgres / STRATA_POSTGRES" } else { "postgres.url" };
    let url = url_override.or(url).filter(|u| !u.is_empty());
    if let Some(u) = &url
        && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
    {
        errors.push(ConfigError::new(source, format!("'{u}' must start with postgres:// or postgresql://")));
    }
    let pool_size: u32 = s.get("pool_size", 8, errors);
    let connect_ms = millis(&mut s, "connect_timeout_ms", 1_000, errors);
    let statement_ms = millis(&mut s, "statement_timeout_ms", 1_000, errors);
    let max_inflight: u64 = s.get("max_inflight", 64, errors);
    let negative: u64 = s.get("negative_cache_size", 100_000, errors);
    let listen_channel: Option<String> = s.opt("listen_channel", errors);
    for (field, value) in [
        ("pool_size", u64::from(pool_size)),
        ("connect_timeout_ms", connect_ms),
        ("statement_timeout_ms", statement_ms),
        ("max_inflight", max_inflight),
        ("negative_cache_size", negative),
    ] {
        if value == 0 {
            errors.push(ConfigError::new(&s.field_path(field), "must be at least 1".into()));
        }
    }
    s.finish(errors);
    PostgresConfig {
        url,
        pool_size: pool_size.max(1),
        connect_timeout: Duration::from_millis(connect_ms.max(1)),
        statement_timeout: Duration::from_millis(statement_ms.max(1)),
        max_inflight: max_inflight.max(1) as usize,
        listen_channel: listen_channel.filter(|c| !c.is_empty()),
        negative_cache_size: negative.max(1) as usize,
    }
}

pub(super) fn read_breaker(root: &mut Section, errors: &mut Vec<ConfigError>) -> BreakerConfig {
    let mut s = root.section("breaker", errors);
    let failure_threshold: u32 = s.get("failure_threshold", 3, errors);
    let cooldown_ms = millis(&mut s, "cooldown_ms", 1_000, errors);
    let error_rate: f64 = s.get("error_rate", 0.5, errors);
    let window_ms = millis(&mut s, "window_ms", 10_000, errors);
    let min_calls: u32 = s.get("min_calls", 20, errors);
    if failure_threshold == 0 {
        errors.push(ConfigError::new("breaker.failure_threshold", "must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&error_rate) {
        errors.push(ConfigError::new("breaker.error_rate", format!("{error_rate} is not between 0 and 1")));
    }
    if window_ms == 0 {
        errors.push(ConfigError::new("breaker.window_ms", "must be at least 1".into()));
    }
    s.finish(errors);
    BreakerConfig {
        failure_threshold: failure_threshold.max(1),
        cooldown: Duration::from_millis(cooldown_ms),
        error_rate: (error_rate > 0.0).then_some(error_rate),
        window: Duration::from_millis(window_ms.max(1)),
        min_calls: min_calls.max(1),
    }
}

pub(super) fn read_rules(root: &mut Section, errors: &mut Vec<ConfigError>) -> Vec<ReadThroughConfig> {
    let sections = root.tables("read_through", errors);
    sections.into_iter().map(|s| read_rule(s, errors)).collect()
}

fn read_rule(mut s: Section, errors: &mut Vec<ConfigError>) -> ReadThroughConfig {
    let key: String = s.get("key", String::new(), errors);
    let name: String = s.get("name", key.clone(), errors);
    let query: String = s.get("query", String::new(), errors);
    let batch_query: Option<String> = s.opt("batch_query", errors);
    let shape = match s.get("shape", "string".to_string(), errors).as_str() {
        "string" => Shape::String,
        "hash" => Shape::Hash,
        other => {
            errors.push(ConfigError::new(
                &s.field_path("shape"),
                format!("'{other}' is not one of string, hash"),
            ));
            Shape::String
        }
    };
    let negative_text: String = s.get("negative_ttl", "30s".to_string(), errors);
    let negative_ttl = parse_ttl(&negative_text).unwrap_or_else(|why| {
        errors.push(ConfigError::new(&s.field_path("negative_ttl"), why));
        Duration::from_secs(30)
    });
    let on_db_error = match s.get("on_db_error", "error".to_string(), errors).as_str() {
        "error" => OnDbError::Error,
        "nil" => OnDbError::Nil,
        other => {
            errors.push(ConfigError::new(
                &s.field_path("on_db_error"),
                format!("'{other}' is not one of error, nil"),
            ));
            OnDbError::Error
        }
    };
    let tier: Option<String> = s.opt("tier", errors);
    if query.trim().is_empty() {
        errors.push(ConfigError::new(&s.field_path("query"), "is required".into()));
    }
    let rule = ReadThroughConfig { name, key, query, batch_query, shape, negative_ttl, on_db_error, tier };
    check_rule_sql(&s, &rule, errors);
    s.finish(errors);
    rule
}

/// Captures are bound as `$1…$n`; SQL naming more parameters than the key has captures
/// could never run.
fn check_rule_sql(s: &Section, rule: &ReadThroughConfig, errors: &mut Vec<ConfigError>) {
    let captures = match crate::fallback::pattern::KeyPattern::parse(&rule.key) {
        Ok(p) => p.captures().len(),
        Err(why) => {
            errors.push(ConfigError::new(&s.field_path("key"), why));
            return;
        }
    };
    let highest = highest_parameter(&rule.query);
    if highest > captures {
        let why = format!("uses ${highest} but key '{}' has only {captures} capture(s)", rule.key);
        errors.push(ConfigError::new(&s.field_path("query"), why));
    }
    if let Some(batch) = &rule.batch_query {
        if captures != 1 {
            errors.push(ConfigError::new(
                &s.field_path("batch_query"),
                "needs a key with exactly one capture".into(),
            ));
        }
        if highest_parameter(batch) != 1 {
            errors.push(ConfigError::new(
                &s.field_path("batch_query"),
                "must use exactly $1 (the array of captures)".into(),
            ));
        }
        if rule.shape == Shape::Hash {
            errors.push(ConfigError::new(
                &s.field_path("batch_query"),
                "is only for string rules (MGET)".into(),
            ));
        }
    }
}

/// The largest `$n` in SQL text (0 when none).
fn highest_parameter(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut highest = 0;
    for (i, _) in sql.match_indices('$') {
        let digits: String =
            bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
        highest = highest.max(digits.parse().unwrap_or(0));
    }
    highest
}

/// Rules need a database and a tier whose TTL their write-back uses.
pub(super) fn check_rules_against(
    rules: &[ReadThroughConfig],
    config: &Config,
    errors: &mut Vec<ConfigError>,
) {
    let (tiers, postgres, table) = (&config.tiers, &config.postgres, &config.tier_table);
    if !rules.is_empty() && postgres.url.is_none() {
        errors.push(ConfigError::new("postgres.url", "is required by the [[read_through]] rules".into()));
    }
    for (i, rule) in rules.iter().enumerate() {
        let tier = match &rule.tier {
            Some(name) => tiers.iter().find(|t| &t.name == name),
            None => {
                let prefix = rule.key.split('{').next().unwrap_or("");
                table.classify(prefix.as_bytes()).map(|c| &tiers[c.tier as usize])
            }
        };
        let field = format!("read_through[{i}].tier");
        match tier {
            None if rule.tier.is_some() => errors.push(ConfigError::new(
                &field,
                format!("unknown tier '{}'", rule.tier.as_deref().unwrap_or("")),
            )),
            None => errors.push(ConfigError::new(
                &format!("read_through[{i}].key"),
                format!("'{}' belongs to no tier; add its prefix to a tier or set tier = \"…\"", rule.key),
            )),
            Some(t) if t.default_ttl.is_none() => errors.push(ConfigError::new(
                &field,
                format!("tier '{}' has no default_ttl for written-back values", t.name),
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};

    fn errors_of(text: &str) -> Vec<String> {
        Config::parse(text, &Overrides::default()).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    const TIER: &str = "[[tiers]]\nname = \"app\"\nprefixes = [\"product:\"]\ndefault_ttl = \"1h\"\n";

    #[test]
    fn a_rule_reads() {
        let text = format!(
            "{TIER}[postgres]\nurl = \"postgres://u@h/db\"\n[[read_through]]\nkey = \"product:details:{{id}}\"\n\
             query = \"SELECT v FROM t WHERE id = $1\"\nshape = \"hash\"\nnegative_ttl = \"5s\"\non_db_error = \"nil\"\n"
        );
        let config = Config::parse(&text, &Overrides::default()).unwrap();
        assert_eq!(config.read_through[0].name, "product:details:{id}");
        assert_eq!(config.read_through[0].shape, super::Shape::Hash);
    }

    #[test]
    fn rule_problems_are_named() {
        let e = errors_of(
            "[[read_through]]\nkey = \"nothing:{id}\"\nquery = \"SELECT $2\"\nshape = \"list\"\n\
             [[read_through]]\nkey = \"product:{id\"\nquery = \"\"\ntier = \"nope\"\n",
        );
        for field in [
            "postgres.url: is required",
            "read_through[0].query: uses $2",
            "read_through[0].shape:",
            "read_through[0].key: 'nothing:{id}' belongs to no tier",
            "read_through[1].key:",
            "read_through[1].query: is required",
            "read_through[1].tier: unknown tier 'nope'",
        ] {
            assert!(e.iter().any(|x| x.starts_with(field)), "missing {field} in {e:?}");
        }
    }

    #[test]
    fn breaker_and_postgres_bounds() {
        let e = errors_of(
            "[breaker]\nfailure_threshold = 0\nerror_rate = 1.5\nwindow_ms = 0\n[postgres]\nurl = \"mysql://x\"\npool_size = 0\n",
        );
        for field in [
            "breaker.failure_threshold",
            "breaker.error_rate",
            "breaker.window_ms",
            "postgres.url: 'mysql://x'",
            "postgres.pool_size",
        ] {
            assert!(e.iter().any(|x| x.starts_with(field)), "missing {field} in {e:?}");
        }
    }
}
