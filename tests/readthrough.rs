//! Read-through from PostgreSQL end to end, against a real redis-server and a throwaway
//! PostgreSQL cluster: miss → query → write-back with the tier TTL, negative caching, hash
//! rules, MGET batches, injection safety, single flight, Redis killed or hung (breaker and
//! per-tier degradation), PostgreSQL killed, LISTEN/NOTIFY invalidation, `check-config --db`
//! and the `INFO strata` counters.

mod support;

#[path = "support/pg.rs"]
mod pg;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pg::PgServer;
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;
use support::{RawClient, RedisServer, Strata, cmd, encode, int_reply};

/// Products, a call counter bumped by every per-key query, and the functions the rules call.
const SCHEMA: &str = r#"
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
const TIERS: &str = r#"
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
const PRODUCT_RULE: &str = r#"
[[read_through]]
name = "product_details"
key = "product:details:{id}"
query = "SELECT fetch_product($1)"
"#;

/// Hash rule: `$1` text, `$2` integer.
const DISCOUNT_RULE: &str = r#"
[[read_through]]
name = "discount_rule"
key = "discount:{rule}:v{version}"
query = "SELECT rule_id, version, percent_off, category, active FROM discount_rules WHERE rule_id = $1 AND version = $2"
shape = "hash"
"#;

/// The redis server, the database and strata in front of them, for one test.
struct Rig {
    strata: Strata,
    pg: PgServer,
    redis: RedisServer,
}

impl Rig {
    /// Redis, PostgreSQL with `SCHEMA`, and strata configured with `TIERS`, `[postgres] url`
    /// plus `postgres_extra` and then `rest` (rules, `[breaker]`, `[upstream]`).
    async fn start(postgres_extra: &str, rest: &str) -> Rig {
        let redis = RedisServer::start();
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let toml = format!("{TIERS}\n[postgres]\nurl = \"{}\"\n{postgres_extra}\n{rest}", pg.url());
        let strata = Strata::start(&redis.url(), &toml).await;
        Rig { strata, pg, redis }
    }

    async fn client(&self) -> RawClient {
        RawClient::connect(self.strata.addr).await
    }

    async fn direct(&self) -> RawClient {
        RawClient::port(self.redis.port).await
    }

    /// Per-key queries run so far (the `calls` counter in PostgreSQL).
    fn calls(&self) -> i64 {
        self.pg.psql("SELECT n FROM calls").parse().expect("calls.n is an integer")
    }

    fn product_json(&self, id: i64) -> String {
        self.pg.psql(&format!("SELECT row_to_json(p)::text FROM products p WHERE p.id = {id}"))
    }
}

/// Runs a test body with a hard deadline, so a hang is a failure.
async fn within(secs: u64, body: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(secs), body).await.expect("test finished within its deadline");
}

/// Sends one command given as byte arguments and reads its reply.
async fn raw(c: &mut RawClient, args: &[&[u8]]) -> Bytes {
    c.send(&encode(args)).await;
    c.read_frame().await
}

/// The RESP2 encoding of a bulk string.
fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

/// The RESP2 encoding of an array of bulk strings and nils.
fn array(items: &[Option<&str>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        match item {
            Some(v) => out.extend(bulk(v)),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
    }
    out
}

fn show(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

/// `INFO strata` through strata, as text.
async fn info(addr: SocketAddr) -> String {
    let mut c = RawClient::connect(addr).await;
    show(&c.command(&["INFO", "strata"]).await)
}

/// One `field:value` of an INFO text.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// A numeric `INFO strata` field.
async fn counter(addr: SocketAddr, field: &str) -> u64 {
    let text = info(addr).await;
    info_field(&text, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO strata has no numeric {field}:\n{text}"))
}

/// Re-evaluates `$check` (an expression that may `.await`) every 20 ms until it is true or
/// `$limit` passes; evaluates to the time it took.
macro_rules! eventually {
    ($limit:expr, $what:expr, $check:expr) => {{
        let started = Instant::now();
        loop {
            if $check {
                break started.elapsed();
            }
            assert!(started.elapsed() < $limit, "{}: not within {:?}", $what, $limit);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

// 1. Miss → PostgreSQL → write-back with the tier TTL; then a Redis hit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_get_loads_from_postgres_writes_back_with_tier_ttl_then_hits_redis() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let want = rig.product_json(1);
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["EXISTS", "product:details:1"]).await), ":0\r\n", "cold cache");

        let reply = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&reply), show(&bulk(&want)), "the row's JSON from PostgreSQL");
        assert_eq!(rig.calls(), 1, "one query for the miss");
        assert_eq!(show(&direct.command(&["GET", "product:details:1"]).await), show(&bulk(&want)));
        let ttl = int_reply(&direct.command(&["PTTL", "product:details:1"]).await);
        assert!(3_590_000 < ttl && ttl <= 3_600_000, "written back with the tier default TTL, got {ttl}");

        let again = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&again), show(&bulk(&want)));
        assert_eq!(rig.calls(), 1, "the second GET is a Redis hit");

        // GETEX is a read-through read too.
        let reply = c.command(&["GETEX", "product:details:2"]).await;
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(2))));
        assert_eq!(rig.calls(), 2);

        let text = info(rig.strata.addr).await;
        for (field, value) in [
            ("strata_readthrough_queries", "2"),
            ("strata_readthrough_rows", "2"),
            ("strata_readthrough_no_rows", "0"),
            ("strata_readthrough_write_backs", "2"),
        ] {
            assert_eq!(info_field(&text, field).as_deref(), Some(value), "{field} in\n{text}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_already_in_redis_is_served_without_a_query() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["SET", "product:details:2", "newer"]).await), "+OK\r\n");
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:2"]).await), show(&bulk("newer")));
        assert_eq!(rig.calls(), 0, "a hit never queries");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_never_clobbers_a_write_made_while_the_query_ran() {
    within(20, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let addr = rig.strata.addr;
        let reader = tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await;
            c.command(&["GET", "product:details:3"]).await
        });
        // Write only once the query is running, so the GET surely missed in Redis.
        eventually!(
            Duration::from_secs(2),
            "the slow query runs",
            rig.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%fetch_product_slow%' \
                 AND pid <> pg_backend_pid()"
            ) != "0"
        );
        let mut writer = rig.client().await;
        assert_eq!(show(&writer.command(&["SET", "product:details:3", "newer"]).await), "+OK\r\n");
        let loaded = reader.await.expect("reader task");
        assert_eq!(show(&loaded), show(&bulk(&rig.product_json(3))), "the miss is answered from PostgreSQL");
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&direct.command(&["GET", "product:details:3"]).await),
            show(&bulk("newer")),
            "SET … NX write-back left the newer value alone"
        );
        assert_eq!(counter(addr, "strata_readthrough_write_backs").await, 0);
    })
    .await;
}

// 2. Negative caching.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_row_is_remembered_for_negative_ttl_then_queried_again() {
    within(20, async {
        let rule = format!("{PRODUCT_RULE}negative_ttl = \"200ms\"\n");
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(rig.calls(), 1, "the second miss is answered by the negative cache");
        assert_eq!(counter(addr, "strata_readthrough_negative_hits").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 1);
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&direct.command(&["EXISTS", "product:details:999"]).await),
            ":0\r\n",
            "nothing cached"
        );

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(rig.calls(), 2, "after negative_ttl the query runs again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_strata_forgets_the_negative_entry() {
    within(20, async {
        let rule = format!("{PRODUCT_RULE}negative_ttl = \"30s\"\n");
        let rig = Rig::start("", &rule).await;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:7"]).await), "$-1\r\n");
        rig.pg.psql("INSERT INTO products VALUES (7, 'Shelf', 2500)");
        assert_eq!(show(&c.command(&["GET", "product:details:7"]).await), "$-1\r\n", "still negative");
        assert_eq!(rig.calls(), 1);

        assert_eq!(show(&c.command(&["SET", "product:details:7", "manual"]).await), "+OK\r\n");
        // Remove it behind strata's back: the next GET misses in Redis again.
        let mut direct = rig.direct().await;
        assert_eq!(int_reply(&direct.command(&["DEL", "product:details:7"]).await), 1);
        let reply = c.command(&["GET", "product:details:7"]).await;
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(7))), "the SET forgot 'no row'");
        assert_eq!(rig.calls(), 2);
    })
    .await;
}

// 3. Hash rules.

fn discount_fields(
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

fn flat(fields: &[String]) -> Vec<u8> {
    let items: Vec<Option<&str>> = fields.iter().map(|f| Some(f.as_str())).collect();
    array(&items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_rule_answers_hgetall_hget_hmget_hexists_and_writes_back_a_hash_with_ttl() {
    within(20, async {
        let rig = Rig::start("", DISCOUNT_RULE).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;

        let summer = discount_fields("summer", "3", "15", Some("garden"), "1");
        let reply = c.command(&["HGETALL", "discount:summer:v3"]).await;
        assert_eq!(show(&reply), show(&flat(&summer)), "columns → fields, int as text, bool as 1");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(show(&direct.command(&["TYPE", "discount:summer:v3"]).await), "+hash\r\n");
        assert_eq!(show(&direct.command(&["HGETALL", "discount:summer:v3"]).await), show(&flat(&summer)));
        let ttl = int_reply(&direct.command(&["PTTL", "discount:summer:v3"]).await);
        assert!(3_590_000 < ttl && ttl <= 3_600_000, "hash written back with the tier TTL, got {ttl}");
        assert_eq!(counter(addr, "strata_readthrough_write_backs").await, 1);

        // Hits, and missing fields of a hash that exists: no query.
        assert_eq!(show(&c.command(&["HGET", "discount:summer:v3", "percent_off"]).await), show(&bulk("15")));
        assert_eq!(show(&c.command(&["HGET", "discount:summer:v3", "nope"]).await), "$-1\r\n");
        let hmget = c.command(&["HMGET", "discount:summer:v3", "category", "nope", "active"]).await;
        assert_eq!(show(&hmget), show(&array(&[Some("garden"), None, Some("1")])));
        assert_eq!(show(&c.command(&["HEXISTS", "discount:summer:v3", "active"]).await), ":1\r\n");
        assert_eq!(show(&c.command(&["HEXISTS", "discount:summer:v3", "nope"]).await), ":0\r\n");
        assert_eq!(
            counter(addr, "strata_readthrough_queries").await,
            1,
            "no query for fields of a cached hash"
        );

        // Cold field reads load the whole row. NULL columns are left out.
        assert_eq!(show(&c.command(&["HGET", "discount:winter:v1", "percent_off"]).await), show(&bulk("20")));
        assert_eq!(show(&c.command(&["HGET", "discount:winter:v1", "category"]).await), "$-1\r\n");
        let winter = discount_fields("winter", "1", "20", None, "0");
        assert_eq!(show(&direct.command(&["HGETALL", "discount:winter:v1"]).await), show(&flat(&winter)));
        let hmget = c.command(&["HMGET", "discount:spring:v2", "category", "percent_off", "nope"]).await;
        assert_eq!(show(&hmget), show(&array(&[Some("tools"), Some("5"), None])));
        assert_eq!(show(&c.command(&["HEXISTS", "discount:autumn:v1", "active"]).await), ":1\r\n");
        assert_eq!(show(&c.command(&["HGETALL", "discount:none:v1"]).await), "*0\r\n", "no row: empty");
        assert_eq!(show(&c.command(&["HGET", "discount:none:v2", "active"]).await), "$-1\r\n");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 6);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_client_gets_a_map_for_hgetall_loaded_from_postgres() {
    within(20, async {
        let rig = Rig::start("", &format!("{DISCOUNT_RULE}{PRODUCT_RULE}")).await;
        let mut c = rig.client().await;
        let hello = c.command(&["HELLO", "3"]).await;
        assert!(hello.starts_with(b"%"), "HELLO 3 answers a map: {}", show(&hello));
        let reply = c.command(&["HGETALL", "discount:fall:v9"]).await;
        let mut want = b"%5\r\n".to_vec();
        for f in discount_fields("fall", "9", "30", Some("hats"), "1") {
            want.extend(bulk(&f));
        }
        assert_eq!(show(&reply), show(&want));
        // The same key is now a Redis hit; Redis' RESP3 reply is a map too.
        let hit = c.command(&["HGETALL", "discount:fall:v9"]).await;
        assert_eq!(show(&hit), show(&want));
        assert_eq!(show(&c.command(&["HGET", "discount:fall:v8", "x"]).await), "_\r\n", "RESP3 null");
        assert_eq!(show(&c.command(&["HGETALL", "discount:fall:v7"]).await), "%0\r\n");
        // String reads built by strata use RESP3 nulls too.
        assert_eq!(show(&c.command(&["GET", "product:details:404"]).await), "_\r\n");
        let mget = c.command(&["MGET", "product:details:1", "product:details:405"]).await;
        assert_eq!(show(&mget), format!("*2\r\n{}_\r\n", show(&bulk(&rig.product_json(1)))));
    })
    .await;
}

// 4. MGET with partial misses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_fills_misses_from_one_batch_query_in_key_order() {
    within(20, async {
        let rule = format!(
            "{PRODUCT_RULE}batch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n"
        );
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["SET", "product:details:1", "cached-1"]).await), "+OK\r\n");
        let mut c = rig.client().await;
        let keys =
            ["MGET", "product:details:1", "product:details:2", "product:details:404", "product:details:3"];
        let (two, three) = (rig.product_json(2), rig.product_json(3));
        let want = array(&[Some("cached-1"), Some(&two), None, Some(&three)]);
        assert_eq!(show(&c.command(&keys).await), show(&want));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "three misses, one batch query");
        assert_eq!(rig.calls(), 0, "the per-key query never ran");
        for (key, value) in [("product:details:2", &two), ("product:details:3", &three)] {
            assert_eq!(show(&direct.command(&["GET", key]).await), show(&bulk(value)), "{key} written back");
            let ttl = int_reply(&direct.command(&["PTTL", key]).await);
            assert!(3_590_000 < ttl && ttl <= 3_600_000, "{key} PTTL {ttl}");
        }
        assert_eq!(show(&direct.command(&["EXISTS", "product:details:404"]).await), ":0\r\n");

        // Again: all hits but 404, which the negative cache answers.
        assert_eq!(show(&c.command(&keys).await), show(&want));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_negative_hits").await, 1);

        // A key with no rule and an untiered key stay as Redis answered.
        let mixed = c.command(&["MGET", "plain", "product:details:42", "product:other:1"]).await;
        assert_eq!(show(&mixed), show(&array(&[None, Some(&rig.product_json(42)), None])));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_batch_consults_the_negative_cache() {
    within(20, async {
        let rule = format!(
            "{PRODUCT_RULE}negative_ttl = \"30s\"\nbatch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n"
        );
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        let keys = ["MGET", "product:details:404", "product:details:405"];
        assert_eq!(show(&c.command(&keys).await), show(&array(&[None, None])));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 2);
        // Each key alone is answered by the negative cache...
        assert_eq!(show(&c.command(&["GET", "product:details:404"]).await), "$-1\r\n");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "GET uses the negative cache");
        // ...but not both together.
        assert_eq!(show(&c.command(&keys).await), show(&array(&[None, None])));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "MGET of two known-missing keys");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_are_read_and_unreadable_types_are_named_not_missing() {
    within(20, async {
        let rules = "[[read_through]]\nkey = \"product:details:{id}\"\n\
                     query = \"SELECT row_to_json(p) FROM products p WHERE p.id = $1\"\n\
                     [[read_through]]\nkey = \"product:price:{id}\"\n\
                     query = \"SELECT (p.price_cents / 100.0)::numeric(10,2) FROM products p WHERE p.id = $1\"\n";
        let rig = Rig::start("", rules).await;
        let mut c = rig.client().await;
        let json = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&json), show(&bulk(&rig.product_json(1))), "a json column is read as its text");
        // numeric is not a type strata reads: the client is told to cast, and the row is
        // not mistaken for a missing one.
        let price = c.command(&["GET", "product:price:1"]).await;
        assert!(show(&price).starts_with("-ERR strata: read-through query failed: column"), "{}", show(&price));
        assert!(show(&price).contains("::text"), "{}", show(&price));
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_no_rows").await, 0);
    })
    .await;
}

// 5. Injection safety.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_bound_as_parameters_never_spliced_into_sql() {
    within(20, async {
        let rules = format!(
            "{PRODUCT_RULE}batch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n\
             {DISCOUNT_RULE}\n[[read_through]]\nkey = \"user:{{name}}\"\n\
             query = \"SELECT row_to_json(u)::text FROM users u WHERE u.name = $1\"\n"
        );
        let rig = Rig::start("", &rules).await;
        let evil_name = "o'brien\"; DROP TABLE users; --";
        rig.pg.psql(&format!(
            "INSERT INTO users (name, email) VALUES ('{}', 'ob@example.com')",
            evil_name.replace('\'', "''")
        ));
        let mut c = rig.client().await;

        let hostile: [&[u8]; 9] = [
            b"product:details:1; DROP TABLE products;--",
            b"product:details:1' OR '1'='1",
            b"product:details:1)); DELETE FROM products; --",
            b"product:details:1\0",
            b"product:details:\xff\xfe",
            b"user:' OR ''='",
            b"user:alice'; DROP TABLE users; --",
            b"user:ali\0ce",
            b"user:\xc3\x28",
        ];
        for key in hostile {
            let reply = raw(&mut c, &[b"GET", key]).await;
            assert_eq!(show(&reply), "$-1\r\n", "GET {:?}", String::from_utf8_lossy(key));
        }
        for key in [&b"discount:x' OR '1'='1:v1"[..], b"discount:summer:v3 OR 1=1", b"discount:su\0mmer:v3"] {
            let reply = raw(&mut c, &[b"HGETALL", key]).await;
            assert_eq!(show(&reply), "*0\r\n", "HGETALL {:?}", String::from_utf8_lossy(key));
        }
        let mget = raw(
            &mut c,
            &[b"MGET", b"product:details:1'); DROP TABLE products;--", b"product:details:2", b"product:details:3\0"],
        )
        .await;
        assert_eq!(show(&mget), show(&array(&[None, Some(&rig.product_json(2)), None])), "batch path");

        // A capture with quotes and a semicolon matches its row literally.
        let user_key = format!("user:{evil_name}");
        let reply = c.command(&["GET", &user_key]).await;
        let want = rig.pg.psql("SELECT row_to_json(u)::text FROM users u WHERE u.email = 'ob@example.com'");
        assert!(want.contains("DROP TABLE users"), "{want}");
        assert_eq!(show(&reply), show(&bulk(&want)));

        assert_eq!(rig.pg.psql("SELECT count(*) FROM products"), "4", "products untouched");
        assert_eq!(rig.pg.psql("SELECT count(*) FROM users"), "2", "users untouched");
        assert_eq!(rig.pg.psql("SELECT count(*) FROM discount_rules"), "5");
    })
    .await;
}

// 6. Single flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_gets_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = Bytes::from(bulk(&rig.product_json(42)));
        let mut clients = Vec::with_capacity(1000);
        for _ in 0..1000 {
            clients.push(rig.client().await);
        }
        let gate = Arc::new(tokio::sync::Barrier::new(1000));
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    gate.wait().await;
                    c.command(&["GET", "product:details:42"]).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("client task"), want);
        }
        eprintln!("1000 concurrent cold GETs answered in {:?}", started.elapsed());
        assert_eq!(rig.calls(), 1, "single flight: one query for 1000 concurrent misses");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_cold_gets_of_one_key_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = show(&bulk(&rig.product_json(42)));
        let mut c = rig.client().await;
        let batch: Vec<u8> = (0..20).flat_map(|_| cmd(&["GET", "product:details:42"])).collect();
        let started = Instant::now();
        c.send(&batch).await;
        for _ in 0..20 {
            assert_eq!(show(&c.read_frame().await), want);
        }
        eprintln!("20 pipelined cold GETs answered in {:?}, {} queries", started.elapsed(), rig.calls());
        assert_eq!(rig.calls(), 1, "one query for 20 pipelined misses of one key");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_gets_over_multiplexed_connections_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = rig.product_json(42);
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
        let client = redis::Client::open(rig.strata.url()).expect("url");
        let mut connections = Vec::new();
        for _ in 0..4 {
            connections
                .push(client.get_multiplexed_async_connection_with_config(&config).await.expect("connect"));
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let mut con = connections[i % 4].clone();
                tokio::spawn(async move {
                    redis::cmd("GET").arg("product:details:42").query_async::<String>(&mut con).await
                })
            })
            .collect();
        let (mut right, mut failed) = (0, Vec::new());
        for task in tasks {
            match task.await.expect("task") {
                Ok(value) if value == want => right += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        eprintln!(
            "{right} of 1000 GETs right after {:?}, {} queries; first failure: {:?}",
            started.elapsed(),
            rig.calls(),
            failed.first()
        );
        assert!(failed.is_empty(), "{} GETs failed (response timeout 5 s)", failed.len());
        assert_eq!(rig.calls(), 1, "single flight across multiplexed connections");
    })
    .await;
}

// 7. Redis killed under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_l2_reads_from_postgres_l1_fails_fast_then_recovers() {
    within(30, async {
        let rest = format!(
            "{PRODUCT_RULE}\n[upstream]\nreconnect_min_ms = 20\nreconnect_max_ms = 200\nconnect_timeout_ms = 300\n\
             [breaker]\nfailure_threshold = 3\ncooldown_ms = 300\n"
        );
        let mut rig = Rig::start("", &rest).await;
        let addr = rig.strata.addr;
        let wants: Vec<Bytes> = (1..=3).map(|id| Bytes::from(bulk(&rig.product_json(id)))).collect();
        let mut c = rig.client().await;
        assert_eq!(c.command(&["GET", "product:details:1"]).await, wants[0], "warm one key");

        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..4)
            .map(|t| {
                let (stop, wants) = (stop.clone(), wants.clone());
                tokio::spawn(async move {
                    let mut c = RawClient::connect(addr).await;
                    let (mut n, mut slowest, mut bad) = (0usize, Duration::ZERO, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let id = (n + t) % 3;
                        let key = format!("product:details:{}", id + 1);
                        let started = Instant::now();
                        match tokio::time::timeout(Duration::from_secs(2), c.command(&["GET", &key])).await {
                            Ok(reply) if reply == wants[id] => {}
                            Ok(reply) => bad.push(format!("GET {key}: {}", show(&reply))),
                            Err(_) => bad.push(format!("GET {key}: no reply within 2 s")),
                        }
                        slowest = slowest.max(started.elapsed());
                        n += 1;
                    }
                    (n, slowest, bad)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let write_backs = counter(addr, "strata_readthrough_write_backs").await;
        rig.redis.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // L1 commands fail fast with a clear error.
        let mut op = rig.client().await;
        let mut slowest_fail = Duration::ZERO;
        for i in 0..20 {
            let started = Instant::now();
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                op.command(&["SET", &format!("inventory:{i}"), "1"]),
            )
            .await
            .expect("SET inventory answers within 2 s");
            let took = started.elapsed();
            assert!(
                reply.starts_with(b"-TRYAGAIN") || reply.starts_with(b"-ERR upstream"),
                "SET inventory:{i}: {}",
                show(&reply)
            );
            assert!(took < Duration::from_secs(1), "SET inventory:{i} took {took:?}");
            slowest_fail = slowest_fail.max(took);
        }
        let text = info(addr).await;
        assert_ne!(info_field(&text, "strata_breaker_redis_state").as_deref(), Some("closed"), "{text}");

        // A pipeline mixing L2 reads and an L1 write keeps its order.
        let mut p = rig.client().await;
        let mut batch = cmd(&["GET", "product:details:1"]);
        batch.extend(cmd(&["SET", "inventory:x", "1"]));
        batch.extend(cmd(&["GET", "product:details:2"]));
        p.send(&batch).await;
        assert_eq!(p.read_frame().await, wants[0], "pipeline reply 1");
        let second = p.read_frame().await;
        assert!(
            second.starts_with(b"-TRYAGAIN") || second.starts_with(b"-ERR upstream"),
            "pipeline reply 2: {}",
            show(&second)
        );
        assert_eq!(p.read_frame().await, wants[1], "pipeline reply 3");

        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut served = 0;
        for loader in loaders {
            let (n, slowest, bad) = loader.await.expect("loader task");
            assert!(bad.is_empty(), "wrong or missing replies during the outage: {bad:?}");
            assert!(slowest < Duration::from_secs(1), "slowest GET {slowest:?}");
            served += n;
        }
        eprintln!("served {served} GETs across the kill; slowest L1 failure {slowest_fail:?}");
        assert_eq!(
            counter(addr, "strata_readthrough_write_backs").await,
            write_backs,
            "no write-back while Redis is down"
        );

        // Recovery on the same port.
        rig.redis.restart();
        let mut op = rig.client().await;
        let took = eventually!(
            Duration::from_secs(5),
            "SET inventory:1 works again",
            op.command(&["SET", "inventory:1", "7"]).await.as_ref() == b"+OK\r\n"
        );
        eprintln!("L1 writes work again {took:?} after the restart");
        let mut direct = rig.direct().await;
        let mut c = rig.client().await;
        eventually!(Duration::from_secs(5), "GET writes back again", {
            assert_eq!(c.command(&["GET", "product:details:2"]).await, wants[1]);
            direct.command(&["EXISTS", "product:details:2"]).await.as_ref() == b":1\r\n"
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_write_back_works_again_after_redis_restarts_empty() {
    within(30, async {
        let rest = format!("{DISCOUNT_RULE}\n[upstream]\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n");
        let mut rig = Rig::start("", &rest).await;
        let mut c = rig.client().await;
        let summer = discount_fields("summer", "3", "15", Some("garden"), "1");
        assert_eq!(show(&c.command(&["HGETALL", "discount:summer:v3"]).await), show(&flat(&summer)));
        // A fresh Redis has neither the data nor strata's function library.
        rig.redis.restart();
        let mut direct = rig.direct().await;
        let mut c = rig.client().await;
        let took = eventually!(Duration::from_secs(5), "hash written back after the restart", {
            // Answered from Redis, or from PostgreSQL while Redis is away.
            assert_eq!(show(&c.command(&["HGETALL", "discount:summer:v3"]).await), show(&flat(&summer)));
            direct.command(&["TYPE", "discount:summer:v3"]).await.as_ref() == b"+hash\r\n"
        });
        eprintln!("hash write-back works {took:?} after the Redis restart");
    })
    .await;
}

// 8. Redis hung (SIGSTOP).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_times_out_opens_the_breaker_and_fails_fast_until_sigcont() {
    within(30, async {
        let rest = format!(
            "{PRODUCT_RULE}\n[upstream]\ncommand_timeout_ms = 300\nconnect_timeout_ms = 200\n\
             reconnect_min_ms = 20\nreconnect_max_ms = 200\n\
             [breaker]\nfailure_threshold = 1\ncooldown_ms = 500\n"
        );
        let rig = Rig::start("", &rest).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        assert_eq!(c.command(&["PING"]).await.as_ref(), b"+PONG\r\n");
        rig.redis.signal("STOP");

        let started = Instant::now();
        let reply = c.command(&["GET", "product:details:1"]).await;
        let hung = started.elapsed();
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(1))), "answered from PostgreSQL");
        assert!(hung < Duration::from_millis(800), "GET waited {hung:?} (command_timeout 300 ms)");

        eventually!(
            Duration::from_millis(200),
            "the redis breaker opens",
            info_field(&info(addr).await, "strata_breaker_redis_state").as_deref() == Some("open")
        );

        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let started = Instant::now();
            let reply = c.command(&["SET", &format!("inventory:{i}"), "1"]).await;
            slowest = slowest.max(started.elapsed());
            assert!(
                reply.starts_with(b"-TRYAGAIN") || reply.starts_with(b"-ERR upstream"),
                "{}",
                show(&reply)
            );
        }
        assert!(slowest < Duration::from_millis(50), "L1 failures took up to {slowest:?}");
        let started = Instant::now();
        let reply = c.command(&["GET", "product:details:2"]).await;
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(2))));
        let l2 = started.elapsed();
        eprintln!("hung GET {hung:?}; open-breaker L1 failures ≤ {slowest:?}; L2 from PostgreSQL {l2:?}");
        assert!(l2 < Duration::from_millis(300), "L2 read with the breaker open took {l2:?}");

        rig.redis.signal("CONT");
        let took = eventually!(
            Duration::from_secs(5),
            "SET inventory:1 after SIGCONT",
            c.command(&["SET", "inventory:1", "7"]).await.as_ref() == b"+OK\r\n"
        );
        eprintln!("recovered {took:?} after SIGCONT");
        let text = info(addr).await;
        assert_eq!(info_field(&text, "strata_breaker_redis_state").as_deref(), Some("closed"), "{text}");
    })
    .await;
}

// 9. PostgreSQL killed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_misses_follow_on_db_error_hits_unaffected_then_recovers() {
    within(30, async {
        let rules = format!(
            "{PRODUCT_RULE}\n[[read_through]]\nkey = \"catalog:item:{{id}}\"\n\
             query = \"SELECT fetch_product($1)\"\non_db_error = \"nil\"\n\
             [breaker]\nfailure_threshold = 3\ncooldown_ms = 1500\n"
        );
        let rig = Rig::start("statement_timeout_ms = 500\nconnect_timeout_ms = 500\n", &rules).await;
        let addr = rig.strata.addr;
        let (one, two) = (show(&bulk(&rig.product_json(1))), show(&bulk(&rig.product_json(2))));
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:1"]).await), one, "warm");
        rig.pg.kill();

        let started = Instant::now();
        assert_eq!(show(&c.command(&["GET", "product:details:1"]).await), one, "a hit needs no database");
        assert!(started.elapsed() < Duration::from_millis(100));

        let mut slowest = Duration::ZERO;
        for _ in 0..4 {
            let started = Instant::now();
            let reply = show(&c.command(&["GET", "product:details:2"]).await);
            slowest = slowest.max(started.elapsed());
            assert!(
                reply.starts_with("-TRYAGAIN strata: database unavailable")
                    || reply.starts_with("-ERR strata"),
                "{reply}"
            );
        }
        let started = Instant::now();
        assert_eq!(show(&c.command(&["GET", "catalog:item:2"]).await), "$-1\r\n", "on_db_error = nil");
        slowest = slowest.max(started.elapsed());
        eprintln!("misses with PostgreSQL down answered within {slowest:?}");
        assert!(slowest < Duration::from_millis(1500), "a miss took {slowest:?} (timeouts are 500 ms)");
        let text = info(addr).await;
        assert_eq!(info_field(&text, "strata_breaker_postgres_state").as_deref(), Some("open"), "{text}");
        assert!(counter(addr, "strata_readthrough_errors").await >= 4);
        let started = Instant::now();
        let reply = show(&c.command(&["GET", "product:details:3"]).await);
        assert!(reply.starts_with("-TRYAGAIN strata: database unavailable"), "{reply}");
        assert!(started.elapsed() < Duration::from_millis(50), "open breaker fails fast");

        rig.pg.resume();
        let took = eventually!(
            Duration::from_secs(5),
            "misses load again",
            show(&c.command(&["GET", "product:details:2"]).await) == two
        );
        eprintln!("read-through recovered {took:?} after PostgreSQL came back");
        assert_eq!(
            show(&c.command(&["GET", "catalog:item:2"]).await),
            show(&bulk(&rig.product_json(2))),
            "the nil answered during the outage was not cached as 'no row'"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_slower_than_statement_timeout_answers_tryagain_in_time() {
    within(20, async {
        let rules = "[[read_through]]\nkey = \"catalog:slow:{id}\"\nquery = \"SELECT $1::text FROM pg_sleep(3)\"\n\
                     [[read_through]]\nkey = \"catalog:slownil:{id}\"\nquery = \"SELECT $1::text FROM pg_sleep(3)\"\n\
                     on_db_error = \"nil\"\n";
        let rig = Rig::start("statement_timeout_ms = 400\n", rules).await;
        let mut c = rig.client().await;
        let started = Instant::now();
        let reply = show(&c.command(&["GET", "catalog:slow:1"]).await);
        let took = started.elapsed();
        assert!(reply.starts_with("-TRYAGAIN strata: database unavailable"), "{reply}");
        assert!(took < Duration::from_millis(1000), "answered after {took:?} (statement_timeout 400 ms)");
        let started = Instant::now();
        assert_eq!(show(&c.command(&["GET", "catalog:slownil:1"]).await), "$-1\r\n");
        eprintln!("slow queries cut off after {took:?} and {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_millis(1000));
    })
    .await;
}

// 10. LISTEN/NOTIFY invalidation.

/// Waits until strata's LISTEN connection is up.
async fn wait_for_listener(pg: &PgServer) {
    eventually!(
        Duration::from_secs(5),
        "strata LISTENs",
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'") != "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_deletes_the_cached_key_and_the_next_get_loads_the_new_row() {
    within(20, async {
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", PRODUCT_RULE).await;
        let addr = rig.strata.addr;
        rig.pg.psql(
            "CREATE FUNCTION products_changed() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_notify('strata_invalidate', 'product:details:' || NEW.id); RETURN NEW; END $$; \
             CREATE TRIGGER products_notify AFTER UPDATE ON products FOR EACH ROW EXECUTE FUNCTION products_changed();",
        );
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        for id in [1, 2, 42] {
            let key = format!("product:details:{id}");
            assert_eq!(show(&c.command(&["GET", &key]).await), show(&bulk(&rig.product_json(id))));
        }
        assert_eq!(int_reply(&direct.command(&["EXISTS", "product:details:42"]).await), 1);
        wait_for_listener(&rig.pg).await;

        rig.pg.psql("UPDATE products SET name = 'Updated' WHERE id = 42");
        let took = eventually!(
            Duration::from_secs(1),
            "the trigger's NOTIFY deletes the key",
            direct.command(&["EXISTS", "product:details:42"]).await.as_ref() == b":0\r\n"
        );
        eprintln!("UPDATE → key gone from Redis in {took:?}");
        let updated = rig.product_json(42);
        assert!(updated.contains("Updated"));
        assert_eq!(show(&c.command(&["GET", "product:details:42"]).await), show(&bulk(&updated)));

        // A payload may name several keys, one a line.
        rig.pg.psql("SELECT pg_notify('strata_invalidate', E'product:details:1\\nproduct:details:2')");
        eventually!(
            Duration::from_secs(1),
            "both keys deleted",
            direct.command(&["EXISTS", "product:details:1", "product:details:2"]).await.as_ref() == b":0\r\n"
        );
        assert_eq!(counter(addr, "strata_readthrough_invalidations").await, 3);

        // A notification also forgets "no row": an INSERT trigger makes a new row visible
        // before the negative TTL (30 s by default) runs out.
        assert_eq!(show(&c.command(&["GET", "product:details:8"]).await), "$-1\r\n");
        rig.pg.psql(
            "INSERT INTO products VALUES (8, 'Stool', 999); SELECT pg_notify('strata_invalidate', 'product:details:8')",
        );
        let want = show(&bulk(&rig.product_json(8)));
        eventually!(
            Duration::from_secs(1),
            "the new row is read through",
            show(&c.command(&["GET", "product:details:8"]).await) == want
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_resume_after_postgres_restarts() {
    within(30, async {
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        wait_for_listener(&rig.pg).await;
        rig.pg.kill();
        rig.pg.resume();
        wait_for_listener(&rig.pg).await;
        assert_eq!(show(&c.command(&["GET", "product:details:3"]).await), show(&bulk(&rig.product_json(3))));
        rig.pg.psql("SELECT pg_notify('strata_invalidate', 'product:details:3')");
        let took = eventually!(
            Duration::from_secs(1),
            "NOTIFY after a database restart deletes the key",
            direct.command(&["EXISTS", "product:details:3"]).await.as_ref() == b":0\r\n"
        );
        eprintln!("NOTIFY after a PostgreSQL restart → key gone in {took:?}");
    })
    .await;
}

// 11. `check-config --db`, and serving with PostgreSQL down.

fn check_config_db(pg: &PgServer, rule: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("strata.toml");
    let text = format!("{TIERS}\n[postgres]\nurl = \"{}\"\n{rule}", pg.url());
    std::fs::write(&file, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["check-config", "--db"])
        .arg(&file)
        .output()
        .expect("run strata check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_db_prepares_every_rule_statement() {
    within(30, async {
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let rule = |query: &str| {
            format!("[[read_through]]\nkey = \"product:details:{{id}}\"\nquery = \"{query}\"\n")
        };

        let (code, text) =
            check_config_db(&pg, &rule("SELEC row_to_json(p)::text FROM products p WHERE p.id = $1"));
        assert_eq!(code, Some(64), "broken SQL: {text}");
        assert!(text.contains("read_through[0].query"), "{text}");

        let (code, text) =
            check_config_db(&pg, &rule("SELECT row_to_json(x)::text FROM nope x WHERE x.id = $1"));
        assert_eq!(code, Some(64), "missing table: {text}");
        assert!(text.contains("read_through[0].query"), "{text}");
        assert!(text.contains("nope"), "the message names the missing relation: {text}");

        let (code, text) =
            check_config_db(&pg, &rule("SELECT row_to_json(p)::text FROM products p WHERE p.id = $1"));
        assert_eq!(code, Some(0), "valid: {text}");

        let with_bad_batch = format!(
            "{}batch_query = \"SELECT p.id, row_to_json(p)::text FROM products p WHERE p.id = ANY($1)\"\n",
            rule("SELECT fetch_product($1)")
        );
        let (code, text) = check_config_db(&pg, &with_bad_batch);
        assert_eq!(code, Some(64), "batch taking int[]: {text}");
        assert!(
            text.contains("read_through[0].batch_query") && !text.contains("read_through[0].query"),
            "{text}"
        );

        let (code, text) =
            check_config_db(&pg, &format!("{}{}", rule("SELECT fetch_product($1)"), DISCOUNT_RULE));
        assert_eq!(code, Some(0), "two valid rules: {text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_db_flags_a_value_column_strata_cannot_read() {
    within(20, async {
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let rule = "[[read_through]]\nkey = \"product:details:{id}\"\n\
                    query = \"SELECT (p.price_cents / 100.0)::numeric(10,2) FROM products p WHERE p.id = $1\"\n";
        let (code, text) = check_config_db(&pg, rule);
        assert_eq!(code, Some(64), "a numeric column (strata asks for a cast): {text}");
        assert!(text.contains("read_through[0].query"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_starts_and_serves_while_postgres_is_down_and_reads_through_once_it_is_back() {
    within(30, async {
        let redis = RedisServer::start();
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let want = show(&bulk(&pg.psql("SELECT row_to_json(p)::text FROM products p WHERE p.id = 1")));
        pg.kill();
        let toml = format!(
            "{TIERS}\n[postgres]\nurl = \"{}\"\nconnect_timeout_ms = 500\nstatement_timeout_ms = 500\n\
             listen_channel = \"strata_invalidate\"\n{PRODUCT_RULE}\n[breaker]\ncooldown_ms = 200\n",
            pg.url()
        );
        let strata = Strata::start(&redis.url(), &toml).await;
        let mut c = RawClient::connect(strata.addr).await;
        assert_eq!(c.command(&["PING"]).await.as_ref(), b"+PONG\r\n");
        assert_eq!(c.command(&["SET", "plain", "v"]).await.as_ref(), b"+OK\r\n");
        assert_eq!(show(&c.command(&["GET", "plain"]).await), show(&bulk("v")));
        assert_eq!(c.command(&["SET", "inventory:1", "3"]).await.as_ref(), b"+OK\r\n", "tiered writes too");
        let started = Instant::now();
        let reply = show(&c.command(&["GET", "product:details:1"]).await);
        assert!(reply.starts_with("-TRYAGAIN strata: database unavailable"), "{reply}");
        assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());

        pg.resume();
        let took = eventually!(
            Duration::from_secs(5),
            "read-through once PostgreSQL is up",
            show(&c.command(&["GET", "product:details:1"]).await) == want
        );
        eprintln!("first read-through {took:?} after PostgreSQL started");
        strata.stop().await;
    })
    .await;
}

// 12. INFO strata.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_strata_reports_read_through_counters_and_both_breakers() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        c.command(&["GET", "product:details:1"]).await;
        c.command(&["GET", "product:details:1"]).await;
        c.command(&["GET", "product:details:5"]).await;
        c.command(&["GET", "product:details:5"]).await;
        let text = info(rig.strata.addr).await;
        for (field, value) in [
            ("strata_readthrough_queries", "2"),
            ("strata_readthrough_rows", "1"),
            ("strata_readthrough_no_rows", "1"),
            ("strata_readthrough_negative_hits", "1"),
            ("strata_readthrough_errors", "0"),
            ("strata_readthrough_write_backs", "1"),
            ("strata_readthrough_invalidations", "0"),
            ("strata_breaker_redis_state", "closed"),
            ("strata_breaker_postgres_state", "closed"),
        ] {
            assert_eq!(info_field(&text, field).as_deref(), Some(value), "{field} in\n{text}");
        }
        let p50: u64 = info_field(&text, "strata_readthrough_latency_p50_us")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("latency in\n{text}"));
        assert!(p50 > 0, "query latency recorded");
        // CONFIG RESETSTAT clears them.
        assert_eq!(c.command(&["CONFIG", "RESETSTAT"]).await.as_ref(), b"+OK\r\n");
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_queries").await, 0);
    })
    .await;
}
