//! `redis://[user[:password]@]host[:port][/db]` upstream addresses.

use std::fmt;

/// A parsed upstream address.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port, 6379 when absent.
    pub port: u16,
    /// ACL user, when given.
    pub username: Option<String>,
    /// Password, when given.
    pub password: Option<String>,
    /// Database selected on every upstream connection.
    pub db: i64,
}

impl UpstreamUrl {
    /// Parses an upstream URL, naming what is wrong on failure.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let rest = text.strip_prefix("redis://").ok_or_else(|| {
            format!("'{text}' must start with redis:// (TLS and unix sockets are not supported yet)")
        })?;
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse::<i64>()
                    .ok()
                    .filter(|d| *d >= 0)
                    .ok_or_else(|| format!("database '{db}' is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = split_host_port(hostport)?;
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some(("", pass)) => (None, Some(decode(pass)?)),
                Some((user, pass)) => (Some(decode(user)?), Some(decode(pass)?)),
                None => (None, Some(decode(info)?)),
            },
        };
        Ok(UpstreamUrl { host, port, username, password, db })
    }

    /// `host:port`, bracketing IPv6 addresses.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Never prints the password.
impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match (&self.username, &self.password) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            _ => String::new(),
        };
        write!(f, "redis://{auth}{}/{}", self.address(), self.db)
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("host is empty".into());
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port '{p}' is not a valid port"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding for user names and passwords with reserved characters.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or("bad percent-escape in credentials")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part() {
        let url = UpstreamUrl::parse("redis://app:p%40ss@10.0.0.1:7000/3").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("10.0.0.1", 7000, 3));
        assert_eq!(url.username.as_deref(), Some("app"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert!(!format!("{url:?}").contains("p@ss"));
        let url = UpstreamUrl::parse("redis://:secret@[::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.password.as_deref()), ("::1", 6379, Some("secret")));
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in ["http://x", "redis://", "redis://h:0", "redis://h:99999", "redis://h/x"] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
