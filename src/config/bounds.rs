//! Durations as the config file writes them (`250ms` … `7d`), and their upper bounds,
//! checked at validation so a value that passes
//! `check-config` also works at run time.
//!
//! TTLs become `PX`/`PEXPIRE` milliseconds. Redis refuses an expire time whose
//! milliseconds, added to the current time, overflow a signed 64-bit number ("invalid
//! expire time"); a `SET` would then be refused and a collection write left without a
//! TTL. Waits and timeouts are added to `Instant::now()`, which panics on overflow.

use std::time::Duration;

use super::ConfigError;
use super::reader::Section;

/// Longest TTL strata sends to Redis: 100 years, far below what Redis accepts (about
/// 292 million years minus the current time) and longer than any cache entry needs.
pub const MAX_TTL: Duration = Duration::from_secs(36_500 * 86_400);

/// Longest wait or timeout in milliseconds (`*_ms` fields): 7 days.
pub const MAX_WAIT_MS: u64 = 7 * 86_400_000;

/// Parses a TTL-like duration (`"30s"`, `"7d"`), refusing one longer than `MAX_TTL`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_TTL {
        return Err(format!(
            "'{text}' is longer than {} (100 years), the longest TTL strata uses",
            show(MAX_TTL)
        ));
    }
    Ok(d)
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("'{text}' is not a duration like 250ms, 30s, 5m, 2h or 7d");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis).ok_or_else(bad)
}

/// Formats a duration the way the config file writes it.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(86_400_000) && ms > 0 => format!("{}d", ms / 86_400_000),
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

/// Reads a `*_ms` field, refusing more than `MAX_WAIT_MS` (the default is kept then).
pub fn millis(s: &mut Section, name: &str, default: u64, errors: &mut Vec<ConfigError>) -> u64 {
    let value: u64 = s.get(name, default, errors);
    if value > MAX_WAIT_MS {
        errors.push(ConfigError::new(
            &s.field_path(name),
            format!("{value} is more than {MAX_WAIT_MS} (7 days)"),
        ));
        return default;
    }
    value
}

/// `millis` for a field that must also be at least 1.
pub fn positive_millis(s: &mut Section, name: &str, default: u64, errors: &mut Vec<ConfigError>) -> u64 {
    let value = millis(s, name, default, errors);
    at_least_one(s, name, value, default, errors)
}

/// Reads a whole number that must be at least 1.
pub fn positive(s: &mut Section, name: &str, default: u64, errors: &mut Vec<ConfigError>) -> u64 {
    let value: u64 = s.get(name, default, errors);
    at_least_one(s, name, value, default, errors)
}

/// `value`, or `default` with an error naming the field when it is 0.
fn at_least_one(s: &Section, name: &str, value: u64, default: u64, errors: &mut Vec<ConfigError>) -> u64 {
    if value == 0 {
        errors.push(ConfigError::new(&s.field_path(name), "must be at least 1".into()));
        return default;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn errors_of(text: &str) -> Vec<String> {
        Config::parse(text, &Overrides::default()).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    const TIER: &str = "[[tiers]]\nname = \"a\"\nprefixes = [\"a:\"]\n";

    #[test]
    fn ttls_fit_what_redis_accepts() {
        assert_eq!(parse_ttl("36500d"), Ok(MAX_TTL));
        assert!(parse_ttl("36501d").is_err());
        // The value: fits a u64 of milliseconds, not Redis' signed 64 bits.
        let e = errors_of(&format!("{TIER}default_ttl = \"200000000000d\"\n"));
        assert_eq!(
            e,
            vec![
                "tiers[0].default_ttl: '200000000000d' is longer than 36500d (100 years), the longest TTL strata uses"
            ]
        );
    }

    #[test]
    fn every_ttl_field_is_bounded() {
        let e = errors_of(&format!(
            "{TIER}default_ttl = \"1h\"\nmin_ttl = \"40000d\"\nmax_ttl = \"40000d\"\njitter = \"40000d\"\n"
        ));
        for field in ["tiers[0].min_ttl: '40000d'", "tiers[0].max_ttl: '40000d'", "tiers[0].jitter: '40000d'"]
        {
            assert!(e.iter().any(|x| x.starts_with(field)), "missing {field} in {e:?}");
        }
        let e = errors_of(&format!(
            "{TIER}default_ttl = \"1h\"\n[postgres]\nurl = \"postgres://u@h/d\"\n[[read_through]]\n\
             key = \"a:{{id}}\"\nquery = \"SELECT $1\"\nnegative_ttl = \"40000d\"\n"
        ));
        assert!(e.iter().any(|x| x.starts_with("read_through[0].negative_ttl: '40000d'")), "{e:?}");
    }

    #[test]
    fn every_wait_is_bounded() {
        let huge = MAX_WAIT_MS + 1;
        let fields = [
            ("server", "idle_timeout_ms"),
            ("server", "shutdown_grace_ms"),
            ("upstream", "connect_timeout_ms"),
            ("upstream", "command_timeout_ms"),
            ("upstream", "reconnect_min_ms"),
            ("upstream", "reconnect_max_ms"),
            ("postgres", "connect_timeout_ms"),
            ("postgres", "statement_timeout_ms"),
            ("breaker", "cooldown_ms"),
            ("breaker", "window_ms"),
        ];
        for (section, field) in fields {
            let e = errors_of(&format!("[{section}]\n{field} = {huge}\n"));
            let expected = format!("{section}.{field}: {huge} is more than {MAX_WAIT_MS} (7 days)");
            assert!(e.contains(&expected), "{expected} missing in {e:?}");
        }
        let config =
            Config::parse(&format!("[server]\nidle_timeout_ms = {MAX_WAIT_MS}\n"), &Overrides::default());
        assert!(config.is_ok());
    }
}
