//! Cache tiers: which tier a key belongs to (longest configured prefix, then glob
//! patterns) and the TTL policy that tier enforces. `plan` turns a request touching
//! tiered keys into what is sent to Redis; `stats` counts the outcome.

mod glob;
pub mod plan;
pub mod policy;
pub mod settings;

pub use plan::{Plan, ReplyFix};
pub use policy::TtlPolicy;
pub use settings::{Jitter, PersistPolicy, TierConfig, UpstreamDown, jitter_bound};

/// Index of a tier in the table.
pub type TierId = u16;
/// Index of a classification rule (a prefix or a pattern) across all tiers.
pub type RuleId = u16;

/// One tier as the data path sees it.
#[derive(Debug, Clone)]
pub struct Tier {
    /// Configured name.
    pub name: String,
    /// The TTL rules.
    pub policy: TtlPolicy,
    /// What its commands do while Redis is unavailable.
    pub on_upstream_down: UpstreamDown,
}

/// A prefix or pattern, for per-prefix statistics.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The prefix or pattern text as configured.
    pub text: String,
    /// True for a glob pattern.
    pub is_pattern: bool,
    /// The tier it selects.
    pub tier: TierId,
}

/// Where a key landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Its tier.
    pub tier: TierId,
    /// The prefix or pattern that chose it.
    pub rule: RuleId,
}

/// Every tier and the structure that classifies keys into them.
#[derive(Debug, Default)]
pub struct TierTable {
    tiers: Vec<Tier>,
    rules: Vec<Rule>,
    /// Prefixes grouped by first byte, longest first within a group, so a lookup compares
    /// only prefixes that can match and stops at the first hit. Flat, with each prefix's
    /// bytes inline: this runs for every key, and a pointer per level was a cache miss each.
    prefixes: Vec<Prefix>,
    /// `prefixes[group[b] as usize..group[b + 1] as usize]` start with byte `b`.
    group: Vec<u32>,
    /// Pattern rule ids in configuration order.
    patterns: Vec<RuleId>,
}

impl TierTable {
    /// Compiles validated tier configuration.
    pub fn new(configs: &[TierConfig]) -> TierTable {
        let mut table = TierTable::default();
        let mut by_first_byte: Vec<Vec<RuleId>> = vec![Vec::new(); 256];
        for (id, config) in configs.iter().enumerate() {
            let tier = id as TierId;
            table.tiers.push(Tier {
                name: config.name.clone(),
                policy: TtlPolicy::from_config(config),
                on_upstream_down: config.on_upstream_down,
            });
            for prefix in &config.prefixes {
                // Validation rejects empty prefixes; a table is also built while reporting
                // problems, so skip them rather than index an empty string.
                let Some(&first) = prefix.as_bytes().first() else { continue };
                let rule = table.push_rule(prefix, false, tier);
                by_first_byte[first as usize].push(rule);
            }
            for pattern in &config.patterns {
                let rule = table.push_rule(pattern, true, tier);
                table.patterns.push(rule);
            }
        }
        let rules = &table.rules;
        table.group.push(0);
        for mut bucket in by_first_byte {
            bucket.sort_by_key(|r| std::cmp::Reverse(rules[*r as usize].text.len()));
            for rule in bucket {
                let r = &rules[rule as usize];
                table.prefixes.push(Prefix::new(r.text.as_bytes(), Class { tier: r.tier, rule }));
            }
            // Configuration allows at most `MAX_RULES` rules, far below u32::MAX.
            table.group.push(table.prefixes.len() as u32);
        }
        table
    }

    fn push_rule(&mut self, text: &str, is_pattern: bool, tier: TierId) -> RuleId {
        self.rules.push(Rule { text: text.to_string(), is_pattern, tier });
        (self.rules.len() - 1) as RuleId
    }

    /// True when no tier is configured (every key passes through untiered).
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tier and rule for a key, or `None` for an untiered key.
    pub fn classify(&self, key: &[u8]) -> Option<Class> {
        if let (Some(&first), [.., _]) = (key.first(), &self.group[..]) {
            let (from, to) = (self.group[first as usize], self.group[first as usize + 1]);
            for prefix in &self.prefixes[from as usize..to as usize] {
                if prefix.matches(key) {
                    return Some(prefix.class);
                }
            }
        }
        self.patterns.iter().find_map(|&rule| {
            let r = &self.rules[rule as usize];
            glob::matches(r.text.as_bytes(), key).then_some(Class { tier: r.tier, rule })
        })
    }

    /// All tiers in configuration order.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// One tier.
    pub fn tier(&self, id: TierId) -> &Tier {
        &self.tiers[id as usize]
    }

    /// All prefixes and patterns.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// One configured prefix, its first bytes held inline.
#[derive(Debug, Clone)]
struct Prefix {
    /// The first `INLINE` bytes (zero-padded).
    head: [u8; INLINE],
    /// The rest, for prefixes longer than `INLINE`.
    tail: Box<[u8]>,
    len: usize,
    class: Class,
}

/// Prefix bytes held inline: typical prefixes (`product:`, `user:preferences:`) fit.
const INLINE: usize = 24;

impl Prefix {
    fn new(text: &[u8], class: Class) -> Prefix {
        let mut head = [0u8; INLINE];
        let inline = text.len().min(INLINE);
        head[..inline].copy_from_slice(&text[..inline]);
        Prefix { head, tail: text[inline..].into(), len: text.len(), class }
    }

    /// `key.starts_with(prefix)`, compared in line: prefixes are a few bytes, and a call
    /// to the C library's `bcmp` cost more than the compare.
    #[inline]
    fn matches(&self, key: &[u8]) -> bool {
        let inline = self.len.min(INLINE);
        key.len() >= self.len
            && key[..inline].iter().zip(&self.head[..inline]).all(|(k, p)| k == p)
            && (self.tail.is_empty() || key[inline..self.len] == *self.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn table(text: &str) -> TierTable {
        TierTable::new(&Config::parse(text, &Overrides::default()).unwrap().tiers)
    }

    /// The name of the tier `key` is classified into.
    fn tier_of(t: &TierTable, key: &[u8]) -> Option<String> {
        t.classify(key).map(|c| t.tier(c.tier).name.clone())
    }

    #[test]
    fn longest_prefix_wins_then_patterns() {
        let t = table(
            "[[tiers]]\nname = \"app\"\nprefixes = [\"user:\"]\n\
             [[tiers]]\nname = \"session\"\nprefixes = [\"user:preferences:\"]\npatterns = [\"sess-*\", \"*:cart\"]\n",
        );
        let tier_of = |k: &[u8]| tier_of(&t, k);
        assert_eq!(tier_of(b"user:1").as_deref(), Some("app"));
        assert_eq!(tier_of(b"user:preferences:1").as_deref(), Some("session"));
        assert_eq!(tier_of(b"sess-9").as_deref(), Some("session"));
        assert_eq!(tier_of(b"u:7:cart").as_deref(), Some("session"));
        assert_eq!(tier_of(b"other"), None);
        assert_eq!(tier_of(b""), None);
        let rule = t.classify(b"user:preferences:1").unwrap().rule;
        assert_eq!(t.rules()[rule as usize].text, "user:preferences:");
    }

    #[test]
    fn prefixes_longer_than_the_inline_bytes_compare_their_tail() {
        let t = table(
            "[[tiers]]\nname = \"short\"\nprefixes = [\"tenant:\"]\n\
             [[tiers]]\nname = \"long\"\nprefixes = [\"tenant:eu-west:inventory:reservations:\"]\n",
        );
        let tier_of = |k: &[u8]| tier_of(&t, k);
        assert_eq!(tier_of(b"tenant:eu-west:inventory:reservations:9").as_deref(), Some("long"));
        assert_eq!(tier_of(b"tenant:eu-west:inventory:reservations:").as_deref(), Some("long"));
        assert_eq!(tier_of(b"tenant:eu-west:inventory:reservationX:9").as_deref(), Some("short"));
        assert_eq!(tier_of(b"tenant:eu-west:inventory:reservations").as_deref(), Some("short"));
        assert_eq!(tier_of(b"tenant").as_deref(), None);
    }
}
