//! strata's configuration: the TOML file, command-line/env overrides, and validation.
//!
//! `Config::parse` reports every problem at once, each naming its field, so
//! `strata check-config` can print them all. Defaults live here and in
//! `strata.example.toml`, which documents every field; keep the two in step.

mod bounds;
mod fallback;
mod reader;
mod server;
mod tiers;
mod url;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use bounds::{MAX_TTL, MAX_WAIT_MS, parse_duration, show as show_duration};
use bounds::{millis, positive, positive_millis};
pub use fallback::{BreakerConfig, OnDbError, PostgresConfig, ReadThroughConfig, Shape};
use reader::Section;

use crate::tier::TierTable;
pub use server::{ServerConfig, check_address};
pub use tiers::{Jitter, PersistPolicy, TierConfig, UpstreamDown, jitter_bound};
pub use url::UpstreamUrl;

/// One problem in the configuration, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted field path, such as `upstream.connections`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: &str, message: String) -> Self {
        ConfigError { field: field.to_string(), message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `STRATA_LISTEN`.
    pub listen: Option<String>,
    /// `--upstream` / `STRATA_UPSTREAM`.
    pub upstream: Option<String>,
    /// `--admin` / `STRATA_ADMIN`.
    pub admin: Option<String>,
    /// `--postgres` / `STRATA_POSTGRES`.
    pub postgres: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client-facing listener.
    pub server: ServerConfig,
    /// The Redis behind strata.
    pub upstream: UpstreamConfig,
    /// Per-client protocol limits.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Cache tiers, in file order.
    pub tiers: Vec<TierConfig>,
    /// The database read-through loads from.
    pub postgres: PostgresConfig,
    /// Read-through rules, in file order.
    pub read_through: Vec<ReadThroughConfig>,
    /// The upstream circuit breaker.
    pub breaker: BreakerConfig,
    /// `tiers` compiled once, at validation, for everything that classifies keys.
    pub tier_table: Arc<TierTable>,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Where Redis is.
    pub url: UpstreamUrl,
    /// Shared multiplexed connections per protocol version.
    pub connections: usize,
    /// Time allowed for one connect plus handshake.
    pub connect_timeout: Duration,
    /// Longest wait for a reply on a shared connection before it is declared dead;
    /// `None` waits forever. Blocking commands run on pinned connections and are exempt.
    pub command_timeout: Option<Duration>,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Requests queued for one shared connection before senders wait.
    pub queue_depth: usize,
    /// Ready dedicated connections kept per protocol for clients that become stateful.
    pub spare_connections: usize,
}

/// `[limits]`
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest bulk string a client may send.
    pub max_bulk_len: u64,
    /// Most arguments in one request.
    pub max_multibulk_len: u64,
    /// Requests of one client in flight before strata stops reading from it.
    pub max_pipeline_depth: usize,
    /// Most unparsed bytes buffered for one client (Redis' client-query-buffer-limit).
    pub max_client_buffer: usize,
    /// Most bytes all clients' buffers may hold together; past it the largest client is
    /// closed (Redis' maxmemory-clients). 0: no cap.
    pub max_clients_memory: usize,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads and validates a config file; `None` means defaults plus overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, Vec<ConfigError>> {
        let text = match path {
            None => String::new(),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| vec![ConfigError::new("config", format!("cannot read {}: {e}", p.display()))])?,
        };
        Self::parse(&text, overrides)
    }

    /// Parses and validates TOML text, collecting every problem.
    pub fn parse(text: &str, overrides: &Overrides) -> Result<Config, Vec<ConfigError>> {
        let table: toml::Table = text.parse().map_err(|e| vec![toml_error(text, &e)])?;
        let mut errors = Vec::new();
        let mut root = Section::root(&table);
        let mut config = Config {
            server: server::read_server(&mut root, overrides, &mut errors),
            upstream: read_upstream(&mut root, overrides, &mut errors),
            limits: read_limits(&mut root, &mut errors),
            log: read_log(&mut root, &mut errors),
            tiers: tiers::read_tiers(&mut root, &mut errors),
            postgres: fallback::read_postgres(&mut root, overrides.postgres.clone(), &mut errors),
            read_through: fallback::read_rules(&mut root, &mut errors),
            breaker: fallback::read_breaker(&mut root, &mut errors),
            tier_table: Arc::default(),
        };
        config.tier_table = Arc::new(TierTable::new(&config.tiers));
        fallback::check_rules_against(&config.read_through, &config, &mut errors);
        root.finish(&mut errors);
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// A one-paragraph summary for `strata check-config`.
    pub fn summary(&self) -> String {
        format!(
            "listen {} -> upstream {} ({} shared connections per protocol), max {} clients, admin {}, tiers: {}, read-through rules: {}, postgres: {}",
            self.server.listen,
            self.upstream.url,
            self.upstream.connections,
            self.server.max_clients,
            self.server.admin.as_deref().unwrap_or("off"),
            if self.tiers.is_empty() {
                "none".to_string()
            } else {
                self.tiers
                    .iter()
                    .map(|t| format!("{} ({} prefixes)", t.name, t.prefixes.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            self.read_through.len(),
            if self.postgres.url.is_some() { "configured" } else { "off" },
        )
    }
}

fn read_upstream(root: &mut Section, o: &Overrides, errors: &mut Vec<ConfigError>) -> UpstreamConfig {
    let mut s = root.section("upstream", errors);
    let url_text = s.get("url", "redis://127.0.0.1:6379".to_string(), errors);
    // An error in the override is blamed on it, not on the file's field it replaced.
    let (url_text, source) = match o.upstream.clone() {
        Some(given) => (given, "--upstream / STRATA_UPSTREAM"),
        None => (url_text, "upstream.url"),
    };
    let url = UpstreamUrl::parse(&url_text).unwrap_or_else(|e| {
        errors.push(ConfigError::new(source, e));
        UpstreamUrl::parse("redis://127.0.0.1:6379").expect("default URL parses")
    });
    let connections = positive(&mut s, "connections", 2, errors);
    if connections > 64 {
        errors.push(ConfigError::new("upstream.connections", format!("{connections} is more than 64")));
    }
    let connect_timeout = Duration::from_millis(positive_millis(&mut s, "connect_timeout_ms", 1_000, errors));
    let command_ms = millis(&mut s, "command_timeout_ms", 5_000, errors);
    let reconnect_min = Duration::from_millis(positive_millis(&mut s, "reconnect_min_ms", 50, errors));
    let reconnect_max = Duration::from_millis(positive_millis(&mut s, "reconnect_max_ms", 2_000, errors));
    if reconnect_min > reconnect_max {
        errors.push(ConfigError::new("upstream.reconnect_min_ms", "is larger than reconnect_max_ms".into()));
    }
    let queue_depth = positive(&mut s, "queue_depth", 4_096, errors) as usize;
    let spare_connections: u64 = s.get("spare_connections", 2, errors);
    if spare_connections > 64 {
        errors.push(ConfigError::new(
            "upstream.spare_connections",
            format!("{spare_connections} is more than 64"),
        ));
    }
    s.finish(errors);
    UpstreamConfig {
        url,
        connections: connections as usize,
        connect_timeout,
        command_timeout: (command_ms > 0).then(|| Duration::from_millis(command_ms)),
        reconnect_min,
        reconnect_max,
        queue_depth,
        spare_connections: spare_connections as usize,
    }
}

fn read_limits(root: &mut Section, errors: &mut Vec<ConfigError>) -> LimitsConfig {
    let mut s = root.section("limits", errors);
    let max_bulk_len = positive(&mut s, "max_bulk_len", 512 * 1024 * 1024, errors);
    let mut max_multibulk_len = positive(&mut s, "max_multibulk_len", 1024 * 1024, errors);
    // Redis refuses more (INT_MAX), and key indexes are kept as u32 on the hot path.
    if max_multibulk_len > i32::MAX as u64 {
        errors.push(ConfigError::new(
            &s.field_path("max_multibulk_len"),
            format!("must be at most {} (Redis' own limit)", i32::MAX),
        ));
        max_multibulk_len = 1024 * 1024;
    }
    let max_pipeline_depth = positive(&mut s, "max_pipeline_depth", 1_024, errors) as usize;
    let max_client_buffer = positive(&mut s, "max_client_buffer", 1024 * 1024 * 1024, errors) as usize;
    if (max_client_buffer as u64) < max_bulk_len {
        errors.push(ConfigError::new(
            "limits.max_client_buffer",
            format!("{max_client_buffer} is smaller than limits.max_bulk_len ({max_bulk_len}), so the largest allowed value could never be received"),
        ));
    }
    let max_clients_memory = s.get("max_clients_memory", 0u64, errors) as usize;
    s.finish(errors);
    LimitsConfig {
        max_bulk_len,
        max_multibulk_len,
        max_pipeline_depth,
        max_client_buffer,
        max_clients_memory,
    }
}

fn read_log(root: &mut Section, errors: &mut Vec<ConfigError>) -> LogConfig {
    let mut s = root.section("log", errors);
    let format = match s.get("format", "text".to_string(), errors).as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errors.push(ConfigError::new("log.format", format!("'{other}' is not one of text, json")));
            LogFormat::Text
        }
    };
    s.finish(errors);
    LogConfig { format }
}

/// A syntax error with the line and column it was found at (1-based, columns in
/// characters), which `toml`'s message alone does not give.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let place = e.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!(" at line {line}, column {column}")
    });
    let message = e.message().trim_end();
    ConfigError::new("config", format!("not valid TOML{}: {message}", place.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        Config::parse(text, &Overrides::default()).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn argument_count_limit_stays_within_redis_own() {
        let errors = errors_of("[limits]\nmax_multibulk_len = 3000000000\n");
        assert_eq!(errors, vec!["limits.max_multibulk_len: must be at most 2147483647 (Redis' own limit)"]);
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let config = Config::parse("", &Overrides::default()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:6380");
        assert_eq!(config.upstream.url.port, 6379);
        assert_eq!(config.limits.max_bulk_len, 512 * 1024 * 1024);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            listen: Some("0.0.0.0:7000".into()),
            upstream: Some("redis://h:1/2".into()),
            admin: None,
            postgres: None,
        };
        let config = Config::parse("[server]\nlisten = \"127.0.0.1:1\"", &o).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:7000");
        assert_eq!((config.upstream.url.port, config.upstream.url.db), (1, 2));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = errors_of(
            "typo = 1\n[server]\nmax_clients = 0\nadmin = \"nope\"\n[upstream]\nurl = \"http://x\"\nconnections = \"two\"\n\
             reconnect_min_ms = 10\nreconnect_max_ms = 5\n[limits]\nmax_client_buffer = 10\n[log]\nformat = \"xml\"\ncolour = true\n",
        );
        let expected = [
            "typo: unknown field",
            "server.max_clients: must be at least 1",
            "server.admin:",
            "upstream.url:",
            "upstream.connections:",
            "upstream.reconnect_min_ms:",
            "limits.max_client_buffer:",
            "log.format:",
            "log.colour: unknown field",
        ];
        for field in expected {
            assert!(errors.iter().any(|e| e.starts_with(field)), "missing {field} in {errors:#?}");
        }
    }

    #[test]
    fn section_of_wrong_type_and_bad_toml() {
        assert!(errors_of("server = 3").iter().any(|e| e.starts_with("server: expected a table")));
        assert!(errors_of("[server").iter().any(|e| e.starts_with("config: not valid TOML")));
    }

    #[test]
    fn toml_syntax_errors_say_where() {
        let errors = errors_of("[server]\nmax_clients = 10\n# é\nlisten = \"a\" \"b\"\n");
        assert!(errors[0].starts_with("config: not valid TOML at line 4, column 14: "), "{errors:?}");
        let errors = errors_of("[server");
        assert!(errors[0].starts_with("config: not valid TOML at line 1, column "), "{errors:?}");
    }

    #[test]
    fn a_bad_upstream_override_is_blamed_on_the_flag_and_variable() {
        let o = Overrides { upstream: Some("http://app:pw@h".into()), ..Overrides::default() };
        let errors = Config::parse("[upstream]\nurl = \"redis://h:1\"\n", &o).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "--upstream / STRATA_UPSTREAM");
        let o = Overrides { postgres: Some("mysql://x".into()), ..Overrides::default() };
        let errors = Config::parse("[postgres]\nurl = \"postgres://h/db\"\n", &o).unwrap_err();
        assert_eq!(errors[0].field, "--postgres / STRATA_POSTGRES");
    }
}
