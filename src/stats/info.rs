//! The `# Strata` section of `INFO`: one `field:value` line each, like Redis' own
//! sections, so tools that parse INFO (redis_exporter, RedisInsight) read it unchanged.

use std::fmt::Write;

use super::Stats;
use crate::tier::TierTable;

/// Facts about the running proxy that the counters do not hold.
#[derive(Debug, Clone)]
pub struct InfoExtra {
    /// Clients connected to strata.
    pub clients: usize,
    /// `server.max_clients`.
    pub max_clients: usize,
    /// Shared upstream connections up / configured.
    pub upstream_connected: usize,
    /// Shared upstream connections configured.
    pub upstream_capacity: usize,
    /// Upstream address.
    pub upstream: String,
    /// Breakers: name, state name, times opened.
    pub breakers: Vec<(&'static str, &'static str, u64)>,
    /// Read-through counters as (field, value), and query latency.
    pub fallback: Vec<(&'static str, u64)>,
    /// PostgreSQL query latency in µs.
    pub fallback_latency: super::Percentiles,
}

/// Builds the section text (lines end with CRLF, as Redis' do).
pub fn section(stats: &Stats, table: &TierTable, extra: &InfoExtra) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("# Strata\r\n");
    let up = extra.upstream_connected > 0;
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{k}:{v}\r\n");
    };
    line("strata_version", &env!("CARGO_PKG_VERSION"));
    line("strata_uptime_in_seconds", &stats.uptime_secs());
    line("strata_connected_clients", &extra.clients);
    line("strata_upstream", &extra.upstream);
    line("strata_upstream_state", &if up { "up" } else { "down" });
    line("strata_upstream_connections", &format!("{}/{}", extra.upstream_connected, extra.upstream_capacity));
    line("strata_upstream_errors", &stats.upstream_errors());
    line("strata_unclassified_commands", &stats.unclassified());
    for (name, state, opens) in &extra.breakers {
        line(&format!("strata_breaker_{name}_state"), state);
        line(&format!("strata_breaker_{name}_opens"), opens);
    }
    for (field, value) in &extra.fallback {
        line(&format!("strata_readthrough_{field}"), value);
    }
    let p = &extra.fallback_latency;
    for (field, value) in [("p50", p.p50), ("p90", p.p90), ("p99", p.p99), ("p999", p.p999), ("max", p.max)] {
        line(&format!("strata_readthrough_latency_{field}_us"), &value);
    }
    let names: Vec<&str> = table.tiers().iter().map(|t| t.name.as_str()).collect();
    line("strata_tiers", &names.join(","));
    for (id, tier) in table.tiers().iter().enumerate() {
        tier_lines(&mut out, stats, id as u16, &tier.name);
    }
    for (id, rule) in table.rules().iter().enumerate() {
        let s = stats.rule(id);
        let tier = &table.tier(rule.tier).name;
        let kind = if rule.is_pattern { "pattern" } else { "prefix" };
        let _ = write!(
            out,
            "rule{id}:tier={tier},{kind}={},hits={},misses={},writes={},errors={},ttl_rewrites={}\r\n",
            rule.text.replace(['\r', '\n', ','], "_"),
            s.hits,
            s.misses,
            s.writes,
            s.errors,
            s.ttl_rewrites,
        );
    }
    out
}

/// Redis' INFO text with the `# Clients` fields that would otherwise describe strata's
/// upstream connections (`connected_clients`, `maxclients`) describing strata's clients,
/// as `CLIENT LIST` does. The other fields stay Redis': blocked and tracking clients have
/// connections of their own there, so Redis counts them right.
pub fn with_strata_clients(text: &[u8], extra: &InfoExtra) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut in_clients = false;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        // A RESP3 verbatim string's text starts with its format, `txt:`.
        let header = if i == 0 { line.strip_prefix(b"txt:").unwrap_or(line) } else { line };
        if header.starts_with(b"#") {
            in_clients = header.trim_ascii_end() == b"# Clients";
        }
        let field = line.iter().position(|&b| b == b':').map(|colon| &line[..colon]);
        let value = match field {
            Some(b"connected_clients") if in_clients => extra.clients,
            Some(b"maxclients") if in_clients => extra.max_clients,
            _ => {
                out.extend_from_slice(line);
                continue;
            }
        };
        let field = field.unwrap_or_default();
        out.extend_from_slice(field);
        out.extend_from_slice(format!(":{value}").as_bytes());
        if line.ends_with(b"\r") {
            out.push(b'\r');
        }
    }
    out
}

fn tier_lines(out: &mut String, stats: &Stats, id: u16, name: &str) {
    let s = stats.tier(id);
    let p = stats.latency(id);
    let fields: [(&str, String); 14] = [
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        ("hit_rate", format!("{:.4}", s.hit_rate())),
        ("writes", s.writes.to_string()),
        ("errors", s.errors.to_string()),
        ("ttl_rewrites", s.ttl_rewrites.to_string()),
        ("ttl_clamps", s.ttl_clamps.to_string()),
        ("persist_denied", s.persist_denied.to_string()),
        ("requests", p.count.to_string()),
        ("latency_p50_us", p.p50.to_string()),
        ("latency_p90_us", p.p90.to_string()),
        ("latency_p99_us", p.p99.to_string()),
        ("latency_p999_us", p.p999.to_string()),
        ("latency_max_us", p.max.to_string()),
    ];
    for (field, value) in fields {
        let _ = write!(out, "tier_{name}_{field}:{value}\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(clients: usize, max_clients: usize) -> InfoExtra {
        InfoExtra {
            clients,
            max_clients,
            upstream_connected: 0,
            upstream_capacity: 0,
            upstream: String::new(),
            breakers: Vec::new(),
            fallback: Vec::new(),
            fallback_latency: super::super::Percentiles::default(),
        }
    }

    #[test]
    fn clients_section_counts_strata_clients_only() {
        let redis = b"txt:# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:3\r\n\
cluster_connections:0\r\nmaxclients:10000\r\nblocked_clients:1\r\n\r\n# Other\r\nconnected_clients:9\r\n";
        let text = with_strata_clients(redis, &extra(42, 500));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "txt:# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\nconnected_clients:42\r\n\
cluster_connections:0\r\nmaxclients:500\r\nblocked_clients:1\r\n\r\n# Other\r\nconnected_clients:9\r\n"
        );
        // RESP3's verbatim text starts with its format, here right before the section.
        let resp3 = b"txt:# Clients\r\nconnected_clients:3\r\nmaxclients:10000\r\n";
        let text = with_strata_clients(resp3, &extra(42, 500));
        assert_eq!(text, b"txt:# Clients\r\nconnected_clients:42\r\nmaxclients:500\r\n");
        // Without a clients section, nothing changes.
        let keyspace = b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(with_strata_clients(keyspace, &extra(1, 1)), keyspace);
    }
}
