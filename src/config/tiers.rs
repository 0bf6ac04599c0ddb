//! The `[[tiers]]` tables: which keys belong to which cache tier and the TTL policy each
//! tier enforces. Only reading and validating lives here; `crate::tier` compiles the result
//! into the lookup structure the data path uses.

use std::collections::HashMap;
use std::time::Duration;

use super::ConfigError;
use super::bounds::{parse_ttl, show};
use super::reader::Section;

pub use crate::tier::settings::{Jitter, PersistPolicy, TierConfig, UpstreamDown, jitter_bound};

/// Reads every `[[tiers]]` table, reporting each problem with its field path.
pub fn read_tiers(root: &mut Section, errors: &mut Vec<ConfigError>) -> Vec<TierConfig> {
    let sections = root.tables("tiers", errors);
    let tiers: Vec<TierConfig> = sections.into_iter().map(|s| read_tier(s, errors)).collect();
    check_across_tiers(&tiers, errors);
    tiers
}

fn read_tier(mut s: Section, errors: &mut Vec<ConfigError>) -> TierConfig {
    let name: String = s.get("name", String::new(), errors);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        let why =
            format!("'{name}' must be non-empty lower-case letters, digits or _ (it names INFO fields)");
        errors.push(ConfigError::new(&s.field_path("name"), why));
    }
    let prefixes: Vec<String> = s.get("prefixes", Vec::new(), errors);
    let patterns: Vec<String> = s.get("patterns", Vec::new(), errors);
    if prefixes.is_empty() && patterns.is_empty() {
        errors.push(ConfigError::new(
            &s.field_path("prefixes"),
            "a tier needs at least one prefix or pattern".into(),
        ));
    }
    if prefixes.iter().any(String::is_empty) {
        errors.push(ConfigError::new(
            &s.field_path("prefixes"),
            "an empty prefix would match every key".into(),
        ));
    }
    let default_ttl = duration_field(&mut s, "default_ttl", errors);
    let min_ttl = duration_field(&mut s, "min_ttl", errors);
    let max_ttl = duration_field(&mut s, "max_ttl", errors);
    let jitter = jitter_field(&mut s, errors);
    let sliding = s.get("sliding", false, errors);
    let persist = match s.get("persist", "deny".to_string(), errors).as_str() {
        "deny" => PersistPolicy::Deny,
        "max" => PersistPolicy::ApplyMax,
        other => {
            errors.push(ConfigError::new(
                &s.field_path("persist"),
                format!("'{other}' is not one of deny, max"),
            ));
            PersistPolicy::Deny
        }
    };
    let on_upstream_down = match s.get("on_upstream_down", "fail".to_string(), errors).as_str() {
        "fail" => UpstreamDown::Fail,
        "fallback" => UpstreamDown::Fallback,
        other => {
            let why = format!("'{other}' is not one of fail, fallback");
            errors.push(ConfigError::new(&s.field_path("on_upstream_down"), why));
            UpstreamDown::Fail
        }
    };
    let tier = TierConfig {
        name,
        prefixes,
        patterns,
        default_ttl,
        min_ttl,
        max_ttl,
        jitter,
        sliding,
        persist,
        on_upstream_down,
    };
    check_ttls(&s, &tier, errors);
    s.finish(errors);
    tier
}

/// The rules between one tier's TTL fields.
fn check_ttls(s: &Section, t: &TierConfig, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, why: String| errors.push(ConfigError::new(&s.field_path(field), why));
    for (field, value) in [("default_ttl", t.default_ttl), ("min_ttl", t.min_ttl), ("max_ttl", t.max_ttl)] {
        if value == Some(Duration::ZERO) {
            fail(field, "must be more than 0 (leave it out for no limit)".into());
        }
    }
    if let (Some(min), Some(max)) = (t.min_ttl, t.max_ttl)
        && min > max
    {
        fail("min_ttl", format!("{} is larger than max_ttl ({})", show(min), show(max)));
    }
    let bounded = t.min_ttl.is_some() || t.max_ttl.is_some() || t.sliding;
    match t.default_ttl {
        None if bounded => fail("default_ttl", "is required when min_ttl, max_ttl or sliding is set".into()),
        None => {}
        Some(default) => {
            let longest = default + jitter_bound(t.jitter, default);
            if t.min_ttl.is_some_and(|min| default < min) {
                fail("default_ttl", format!("{} is below min_ttl", show(default)));
            }
            if let Some(max) = t.max_ttl.filter(|max| longest > *max) {
                fail("default_ttl", format!("{} plus jitter exceeds max_ttl ({})", show(default), show(max)));
            }
        }
    }
}

/// Most prefixes and patterns across all tiers (`tier::RuleId` is 16 bits).
pub const MAX_RULES: usize = u16::MAX as usize + 1;

/// Prefixes and names must be unique across tiers: the same prefix in two tiers (or twice
/// in one) would make classification depend on file order. And there are at most
/// `MAX_RULES` prefixes and patterns.
fn check_across_tiers(tiers: &[TierConfig], errors: &mut Vec<ConfigError>) {
    // Rules (prefixes and patterns) are numbered with 16 bits on the data path.
    let rules: usize = tiers.iter().map(|t| t.prefixes.len() + t.patterns.len()).sum();
    if rules > MAX_RULES {
        errors.push(ConfigError::new(
            "tiers",
            format!("{rules} prefixes and patterns in all; at most {MAX_RULES} are supported"),
        ));
    }
    let mut names = HashMap::new();
    let mut prefixes: HashMap<&str, usize> = HashMap::new();
    for (i, tier) in tiers.iter().enumerate() {
        if let Some(first) = names.insert(tier.name.as_str(), i) {
            errors.push(ConfigError::new(
                &format!("tiers[{i}].name"),
                format!("'{}' is already the name of tiers[{first}]", tier.name),
            ));
        }
        for prefix in &tier.prefixes {
            if let Some(first) = prefixes.insert(prefix.as_str(), i) {
                errors.push(ConfigError::new(
                    &format!("tiers[{i}].prefixes"),
                    format!("'{prefix}' is also a prefix of tier '{}'", tiers[first].name),
                ));
            }
        }
    }
}

fn duration_field(s: &mut Section, name: &str, errors: &mut Vec<ConfigError>) -> Option<Duration> {
    let text: String = s.opt(name, errors)?;
    match parse_ttl(&text) {
        Ok(d) => Some(d),
        Err(why) => {
            errors.push(ConfigError::new(&s.field_path(name), why));
            None
        }
    }
}

fn jitter_field(s: &mut Section, errors: &mut Vec<ConfigError>) -> Jitter {
    let Some(text) = s.opt::<String>("jitter", errors) else { return Jitter::Up(Duration::ZERO) };
    let parsed = match text.strip_suffix('%') {
        Some(pct) => match pct.trim().parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(Jitter::Fraction(p / 100.0)),
            _ => Err(format!("'{text}' is not a percentage from 0% to 100%")),
        },
        None => parse_ttl(&text).map(Jitter::Up),
    };
    parsed.unwrap_or_else(|why| {
        errors.push(ConfigError::new(&s.field_path("jitter"), why));
        Jitter::Up(Duration::ZERO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_duration;
    use crate::config::{Config, Overrides};

    fn errors_of(text: &str) -> Vec<String> {
        Config::parse(text, &Overrides::default()).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    fn has(errors: &[String], start: &str) -> bool {
        errors.iter().any(|e| e.starts_with(start))
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn a_full_tier_reads() {
        let text = "[[tiers]]\nname = \"session\"\nprefixes = [\"cart:\"]\npatterns = [\"sess*\"]\n\
                    default_ttl = \"1d\"\nmin_ttl = \"1h\"\nmax_ttl = \"30d\"\njitter = \"10%\"\n\
                    sliding = true\npersist = \"max\"\n";
        let config = Config::parse(text, &Overrides::default()).unwrap();
        let tier = &config.tiers[0];
        assert_eq!(tier.default_ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(tier.jitter, Jitter::Fraction(0.1));
        assert!(tier.sliding);
        assert_eq!(tier.persist, PersistPolicy::ApplyMax);
    }

    #[test]
    fn min_above_max_and_zero_ttls_are_rejected() {
        let e = errors_of(
            "[[tiers]]\nname = \"a\"\nprefixes = [\"a:\"]\ndefault_ttl = \"0s\"\nmin_ttl = \"2h\"\nmax_ttl = \"1h\"\n",
        );
        assert!(has(&e, "tiers[0].min_ttl: 2h is larger than max_ttl"), "{e:?}");
        assert!(has(&e, "tiers[0].default_ttl: must be more than 0"), "{e:?}");
    }

    #[test]
    fn default_ttl_is_required_and_must_fit_the_clamp() {
        let e = errors_of("[[tiers]]\nname = \"a\"\nprefixes = [\"a:\"]\nsliding = true\n");
        assert!(has(&e, "tiers[0].default_ttl: is required"), "{e:?}");
        let e = errors_of(
            "[[tiers]]\nname = \"a\"\nprefixes = [\"a:\"]\ndefault_ttl = \"1h\"\nmax_ttl = \"1h\"\njitter = \"1m\"\n",
        );
        assert!(has(&e, "tiers[0].default_ttl: 1h plus jitter exceeds max_ttl"), "{e:?}");
        let e = errors_of(
            "[[tiers]]\nname = \"a\"\nprefixes = [\"a:\"]\ndefault_ttl = \"1m\"\nmin_ttl = \"1h\"\n",
        );
        assert!(has(&e, "tiers[0].default_ttl: 1m is below min_ttl"), "{e:?}");
    }

    #[test]
    fn duplicate_prefixes_and_names_are_named() {
        let e = errors_of(
            "[[tiers]]\nname = \"a\"\nprefixes = [\"x:\"]\n[[tiers]]\nname = \"a\"\nprefixes = [\"x:\"]\n",
        );
        assert!(has(&e, "tiers[1].name: 'a' is already the name of tiers[0]"), "{e:?}");
        assert!(has(&e, "tiers[1].prefixes: 'x:' is also a prefix of tier 'a'"), "{e:?}");
    }

    #[test]
    fn more_rules_than_the_data_path_numbers_are_refused() {
        let prefixes: Vec<String> = (0..=MAX_RULES).map(|i| format!("\"p{i}:\"")).collect();
        let e = errors_of(&format!("[[tiers]]\nname = \"a\"\nprefixes = [{}]\n", prefixes.join(",")));
        assert!(has(&e, "tiers: 65537 prefixes and patterns in all; at most 65536"), "{e:?}");
    }

    #[test]
    fn bad_fields_are_each_reported() {
        let e = errors_of(
            "[[tiers]]\nname = \"Bad Name\"\nprefixes = []\njitter = \"lots\"\npersist = \"never\"\nttl = 3\n",
        );
        for field in [
            "tiers[0].name:",
            "tiers[0].prefixes: a tier needs",
            "tiers[0].jitter:",
            "tiers[0].persist:",
            "tiers[0].ttl: unknown field",
        ] {
            assert!(has(&e, field), "missing {field} in {e:?}");
        }
        assert!(has(&errors_of("tiers = 3"), "tiers: expected an array"));
        // An empty prefix is reported, not a panic while the rest of the file is checked.
        let e = errors_of("[[tiers]]\nname = \"a\"\nprefixes = [\"\"]\ndefault_ttl = \"1h\"\n");
        assert!(has(&e, "tiers[0].prefixes: an empty prefix"), "{e:?}");
    }
}
