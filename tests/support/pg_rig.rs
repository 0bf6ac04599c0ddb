//! Shared rig for the read-through tests: the PostgreSQL schema, tiers and rules, Redis +
//! PostgreSQL + strata per test, RESP encoders, `INFO strata` readers and the `eventually!`
//! polling macro. Needs `mod support;` and `mod pg;` at the test crate root. No tests here.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::pg::PgServer;
use super::support::{RawClient, RedisServer, Strata, encode};

/// Products, a call counter bumped by every per-key query, and the functions the rules call.
pub const SCHEMA: &str = r#"
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL);
INSERT INTO products VALUES (1, 'Lamp', 1999), (2, 'Desk', 15000), (3, 'Chair', 4999), (42, 'Answer', 4200);
CREATE TABLE calls (n integer NOT NULL);
INSERT INTO calls VALUES (0);
CREATE FUNCTION fetch_product(pid integer) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text;
BEGIN
  UPDATE calls SET n = n + 1;
  SELECT row_to_json(p)::text INTO out FROM products p WHERE p.id = pid;
  RETURN out;
END $$;
CREATE FUNCTION fetch_product_slow(pid integer) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(0.2);
  RETURN fetch_product(pid);
END $$;
CREATE TABLE discount_rules (
  rule_id text NOT NULL, version integer NOT NULL, percent_off integer NOT NULL,
  category text, active boolean NOT NULL, PRIMARY KEY (rule_id, version));
INSERT INTO discount_rules VALUES
  ('summer', 3, 15, 'garden', true), ('winter', 1, 20, NULL, false),
  ('spring', 2, 5, 'tools', true), ('autumn', 1, 10, 'shoes', true), ('fall', 9, 30, 'hats', true);
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL UNIQUE, email text NOT NULL);
INSERT INTO users (name, email) VALUES ('alice', 'a@example.com');
"#;

/// The application tier (L2, answered from PostgreSQL while Redis is down), the operational
/// tier (L1, fails fast) and a session tier for `user:` keys. No jitter: TTLs are exact.
pub const TIERS: &str = r#"
[[tiers]]
name = "application"
prefixes = ["product:", "discount:", "catalog:"]
default_ttl = "1h"
on_upstream_down = "fallback"

[[tiers]]
name = "operational"
prefixes = ["inventory:"]
default_ttl = "60s"
on_upstream_down = "fail"

[[tiers]]
name = "session"
prefixes = ["user:"]
default_ttl = "1h"
"#;

/// Per-key string rule counted by `calls`.
pub const PRODUCT_RULE: &str = r#"
[[read_through]]
name = "product_details"
key = "product:details:{id}"
query = "SELECT fetch_product($1)"
"#;

/// Hash rule: `$1` text, `$2` integer.
pub const DISCOUNT_RULE: &str = r#"
[[read_through]]
name = "discount_rule"
key = "discount:{rule}:v{version}"
query = "SELECT rule_id, version, percent_off, category, active FROM discount_rules WHERE rule_id = $1 AND version = $2"
shape = "hash"
"#;

/// The redis server, the database and strata in front of them, for one test.
pub struct Rig {
    pub strata: Strata,
    pub pg: PgServer,
    pub redis: RedisServer,
}

impl Rig {
    /// Redis, PostgreSQL with `SCHEMA`, and strata configured with `TIERS`, `[postgres] url`
    /// plus `postgres_extra` and then `rest` (rules, `[breaker]`, `[upstream]`).
    pub async fn start(postgres_extra: &str, rest: &str) -> Rig {
        let redis = RedisServer::start();
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let toml = format!("{TIERS}\n[postgres]\nurl = \"{}\"\n{postgres_extra}\n{rest}", pg.url());
        let strata = Strata::start(&redis.url(), &toml).await;
        Rig { strata, pg, redis }
    }

    pub async fn client(&self) -> RawClient {
        RawClient::connect(self.strata.addr).await
    }

    pub async fn direct(&self) -> RawClient {
        RawClient::port(self.redis.port).await
    }

    /// Per-key queries run so far (the `calls` counter in PostgreSQL).
    pub fn calls(&self) -> i64 {
        self.pg.psql("SELECT n FROM calls").parse().expect("calls.n is an integer")
    }

    pub fn product_json(&self, id: i64) -> String {
        self.pg.psql(&format!("SELECT row_to_json(p)::text FROM products p WHERE p.id = {id}"))
    }
}

/// Runs a test body with a hard deadline, so a hang is a failure.
pub async fn within(secs: u64, body: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(secs), body).await.expect("test finished within its deadline");
}

/// Sends one command given as byte arguments and reads its reply.
pub async fn raw(c: &mut RawClient, args: &[&[u8]]) -> Bytes {
    c.send(&encode(args)).await;
    c.read_frame().await
}

/// The RESP2 encoding of a bulk string.
pub fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

/// The RESP2 encoding of an array of bulk strings and nils.
pub fn array(items: &[Option<&str>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        match item {
            Some(v) => out.extend(bulk(v)),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
    }
    out
}

pub fn show(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

/// `INFO strata` through strata, as text.
pub async fn info(addr: SocketAddr) -> String {
    let mut c = RawClient::connect(addr).await;
    show(&c.command(&["INFO", "strata"]).await)
}

/// One `field:value` of an INFO text.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// A numeric `INFO strata` field.
pub async fn counter(addr: SocketAddr, field: &str) -> u64 {
    let text = info(addr).await;
    info_field(&text, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO strata has no numeric {field}:\n{text}"))
}

/// Re-evaluates `$check` (an expression that may `.await`) every 20 ms until it is true or
/// `$limit` passes; evaluates to the time it took. Not every test file polls, hence the allows.
#[allow(unused_macros)]
macro_rules! eventually {
    ($limit:expr, $what:expr, $check:expr) => {{
        let started = std::time::Instant::now();
        loop {
            if $check {
                break started.elapsed();
            }
            assert!(started.elapsed() < $limit, "{}: not within {:?}", $what, $limit);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use eventually;

pub fn discount_fields(
    rule: &str,
    version: &str,
    pct: &str,
    category: Option<&str>,
    active: &str,
) -> Vec<String> {
    let mut out = vec!["rule_id", rule, "version", version, "percent_off", pct];
    if let Some(category) = category {
        out.extend(["category", category]);
    }
    out.extend(["active", active]);
    out.into_iter().map(str::to_string).collect()
}

pub fn flat(fields: &[String]) -> Vec<u8> {
    let items: Vec<Option<&str>> = fields.iter().map(|f| Some(f.as_str())).collect();
    array(&items)
}
