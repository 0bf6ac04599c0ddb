//! `[server]`: where clients connect, the admin port, and the client-side bounds. Both
//! addresses are checked the same way (`check_address`), so a value one accepts the
//! other accepts too, and a typo fails at validation rather than at bind time.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::bounds::millis;
use super::reader::Section;
use super::{ConfigError, Overrides, positive};

/// Redis' default `tcp-backlog`. Linux caps it at `net.core.somaxconn`.
const DEFAULT_TCP_BACKLOG: u64 = 511;

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address clients connect to: `host:port`, host an IP or a host name.
    pub listen: String,
    /// HTTP side port for health and metrics, when set (same forms as `listen`).
    pub admin: Option<String>,
    /// Length of the listener's queue of connections not yet accepted (`listen(2)`'s
    /// backlog, Redis' `tcp-backlog`).
    pub tcp_backlog: u32,
    /// Most clients connected at once; more are refused with an error.
    pub max_clients: usize,
    /// Close clients idle this long; `None` keeps them forever.
    pub idle_timeout: Option<Duration>,
    /// How long SIGTERM waits for in-flight replies before exiting.
    pub shutdown_grace: Duration,
    /// Runtime worker threads; 0 means one per CPU core.
    pub threads: usize,
}

pub(super) fn read_server(root: &mut Section, o: &Overrides, errors: &mut Vec<ConfigError>) -> ServerConfig {
    let mut s = root.section("server", errors);
    let listen = s.get("listen", "127.0.0.1:6380".to_string(), errors);
    let listen = address(o.listen.clone(), "--listen / STRATA_LISTEN", Some(listen), "server.listen", errors)
        .unwrap_or_else(|| "127.0.0.1:6380".to_string());
    let admin: Option<String> = s.opt("admin", errors);
    let admin = address(o.admin.clone(), "--admin / STRATA_ADMIN", admin, "server.admin", errors);
    let tcp_backlog = positive(&mut s, "tcp_backlog", DEFAULT_TCP_BACKLOG, errors);
    // listen(2) takes an int; 65535 is the most any Linux somaxconn default has allowed.
    if tcp_backlog > 65_535 {
        errors.push(ConfigError::new("server.tcp_backlog", format!("{tcp_backlog} is more than 65535")));
    }
    let max_clients = positive(&mut s, "max_clients", 10_000, errors);
    let idle_ms = millis(&mut s, "idle_timeout_ms", 0, errors);
    let grace_ms = millis(&mut s, "shutdown_grace_ms", 5_000, errors);
    let threads: u64 = s.get("threads", 1, errors);
    if threads > 256 {
        errors.push(ConfigError::new("server.threads", format!("{threads} is more than 256")));
    }
    s.finish(errors);
    ServerConfig {
        listen,
        admin,
        tcp_backlog: tcp_backlog.min(65_535) as u32,
        max_clients: max_clients as usize,
        idle_timeout: (idle_ms > 0).then(|| Duration::from_millis(idle_ms)),
        shutdown_grace: Duration::from_millis(grace_ms),
        threads: threads as usize,
    }
}

/// The override when given, else the file's value; a bad one is blamed on where it came
/// from (the flag and its variable, or the file's field).
fn address(
    given: Option<String>,
    given_as: &str,
    file: Option<String>,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let (value, source) = match given {
        Some(v) => (v, given_as),
        None => (file?, field),
    };
    match check_address(&value) {
        Ok(()) => Some(value),
        Err(why) => {
            errors.push(ConfigError::new(source, format!("'{value}' {why}")));
            None
        }
    }
}

/// `host:port` with a port from 0 (any free port) to 65535 and a host that is an IPv4
/// address, a bracketed IPv6 address or a host name (RFC 1123 labels).
pub fn check_address(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else { return Err("must be host:port".into()) };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
        return Err(format!("has port '{port}', not a number from 0 to 65535"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').and_then(|ip| ip.parse::<Ipv6Addr>().ok());
        return ip.map(|_| ()).ok_or_else(|| format!("has '{host}', not a bracketed IPv6 address"));
    }
    if host.contains(':') {
        return Err("needs brackets around an IPv6 address ([::1]:6380)".into());
    }
    // All digits and dots can only mean an IPv4 address (no top-level domain is numeric).
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("has '{host}', not an IPv4 address"));
    }
    if is_host_name(host) { Ok(()) } else { Err(format!("has '{host}', not an IP address or host name")) }
}

/// RFC 1123: dot-separated labels of letters, digits and inner hyphens, 1 to 63 bytes
/// each, at most 253 in all (a trailing dot is allowed).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::check_address;
    use crate::config::{Config, Overrides};

    fn errors_of(text: &str, o: &Overrides) -> Vec<String> {
        Config::parse(text, o).unwrap_err().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:6380", "0.0.0.0:0", "[::1]:6380", "localhost:65535", "redis-1.svc.local.:80"]
        {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "999.1.1.1:80",
            "1.1.1.1:80000",
            "localhost",
            "localhost:",
            "localhost:-1",
            ":6380",
            "::1:6380",
            "[::1:6380",
            "[1.2.3.4]:80",
            "bad_name:80",
            "-x.example:80",
            "a..b:80",
        ] {
            assert!(check_address(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn listen_and_admin_are_checked_alike() {
        let e = errors_of(
            "[server]\nlisten = \"999.1.1.1:80000\"\nadmin = \"999.1.1.1:80000\"\n",
            &Overrides::default(),
        );
        assert!(e[0].starts_with("server.listen: '999.1.1.1:80000' has port '80000'"), "{e:?}");
        assert!(e[1].starts_with("server.admin: '999.1.1.1:80000' has port '80000'"), "{e:?}");
        let text = "[server]\nlisten = \"strata.local:6380\"\nadmin = \"strata.local:9121\"\n";
        let config = Config::parse(text, &Overrides::default()).unwrap();
        assert_eq!(config.server.admin.as_deref(), Some("strata.local:9121"));
    }

    #[test]
    fn a_bad_override_is_blamed_on_the_flag_and_variable() {
        let o =
            Overrides { listen: Some("nope".into()), admin: Some("x:99999".into()), ..Overrides::default() };
        let e = errors_of("[server]\nlisten = \"127.0.0.1:1\"\n", &o);
        assert!(e.iter().any(|e| e.starts_with("--listen / STRATA_LISTEN: 'nope'")), "{e:?}");
        assert!(e.iter().any(|e| e.starts_with("--admin / STRATA_ADMIN: 'x:99999'")), "{e:?}");
        assert!(!e.iter().any(|e| e.starts_with("server.")), "{e:?}");
    }

    #[test]
    fn tcp_backlog_defaults_to_redis_and_is_bounded() {
        let config = Config::parse("", &Overrides::default()).unwrap();
        assert_eq!(config.server.tcp_backlog, 511);
        let config = Config::parse("[server]\ntcp_backlog = 4096\n", &Overrides::default()).unwrap();
        assert_eq!(config.server.tcp_backlog, 4096);
        let e = errors_of("[server]\ntcp_backlog = 0\n", &Overrides::default());
        assert_eq!(e, vec!["server.tcp_backlog: must be at least 1"]);
        let e = errors_of("[server]\ntcp_backlog = 70000\n", &Overrides::default());
        assert_eq!(e, vec!["server.tcp_backlog: 70000 is more than 65535"]);
    }
}
