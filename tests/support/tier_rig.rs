//! Shared rig for the cache-tier tests: the `TIERS` config and its TTL constants, strata in
//! front of one redis-server next to a plain reference redis-server, and helpers that
//! compare replies byte for byte, read TTLs and parse `INFO strata`. No tests live here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::support::{READ_TIMEOUT, RawClient, RedisServer, Strata, encode, int_reply};

/// Tiers with round numbers so TTL assertions are exact up to the test's own run time.
pub const TIERS: &str = r#"
[[tiers]]
name = "op"
prefixes = ["op:"]
default_ttl = "100s"
min_ttl = "10s"
max_ttl = "1000s"
persist = "deny"

[[tiers]]
name = "jit"
prefixes = ["jit:"]
default_ttl = "100s"
min_ttl = "10s"
max_ttl = "1000s"
jitter = "20s"

[[tiers]]
name = "sess"
prefixes = ["sess:"]
patterns = ["*:cart"]
default_ttl = "200s"
min_ttl = "10s"
max_ttl = "2000s"
sliding = true
persist = "max"

[[tiers]]
name = "nomax"
prefixes = ["nomax:"]
default_ttl = "300s"
persist = "max"

[[tiers]]
name = "count"
prefixes = ["cnt:"]
"#;

pub const DEFAULT: i64 = 100_000;
pub const MIN: i64 = 10_000;
pub const MAX: i64 = 1_000_000;
pub const SESS_DEFAULT: i64 = 200_000;
pub const SESS_MAX: i64 = 2_000_000;
pub const NOMAX_DEFAULT: i64 = 300_000;
/// How far below the configured TTL a key may be by the time the test reads it.
pub const SLACK: i64 = 5_000;

/// strata in front of one redis-server, and a second plain redis-server as the reference
/// for what a client would get without strata.
pub struct Rig {
    pub strata: Strata,
    pub redis: RedisServer,
    pub reference: RedisServer,
}

impl Rig {
    pub async fn start(toml: &str) -> Rig {
        let redis = RedisServer::start();
        let reference = RedisServer::start();
        let strata = Strata::start(&redis.url(), toml).await;
        Rig { strata, redis, reference }
    }

    /// (through strata, plain reference server, direct to strata's Redis).
    pub async fn clients(&self) -> (RawClient, RawClient, RawClient) {
        (
            RawClient::connect(self.strata.addr).await,
            RawClient::port(self.reference.port).await,
            RawClient::port(self.redis.port).await,
        )
    }
}

pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends the same command through strata and to the reference; the replies must be equal.
pub async fn same(via: &mut RawClient, plain: &mut RawClient, args: &[&str]) -> Bytes {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    same_bytes(via, plain, &words).await
}

pub async fn same_bytes(via: &mut RawClient, plain: &mut RawClient, args: &[&[u8]]) -> Bytes {
    via.send(&encode(args)).await;
    plain.send(&encode(args)).await;
    let (got, want) = (via.read_frame().await, plain.read_frame().await);
    let shown: Vec<String> = args.iter().map(|a| show(a)).collect();
    assert_eq!(show(&got), show(&want), "reply to {shown:?} differs from plain Redis");
    got
}

/// Sends raw bytes through strata and to the reference and compares `frames` replies.
pub async fn same_batch(
    via: &mut RawClient,
    plain: &mut RawClient,
    batch: &[u8],
    frames: usize,
) -> Vec<Bytes> {
    via.send(batch).await;
    plain.send(batch).await;
    let mut replies = Vec::new();
    for i in 0..frames {
        let (got, want) = (via.read_frame().await, plain.read_frame().await);
        assert_eq!(show(&got), show(&want), "reply {i} of the batch differs from plain Redis");
        replies.push(got);
    }
    replies
}

/// Runs setup commands on strata's Redis and on the reference directly (no tier policy).
pub async fn setup(direct: &mut RawClient, plain: &mut RawClient, commands: &[&[&str]]) {
    for args in commands {
        let (a, b) = (direct.command(args).await, plain.command(args).await);
        assert_eq!(show(&a), show(&b), "setup {args:?}");
        assert!(!a.starts_with(b"-"), "setup {args:?} failed: {}", show(&a));
    }
}

pub async fn pttl(direct: &mut RawClient, key: &str) -> i64 {
    int_reply(&direct.command(&["PTTL", key]).await)
}

/// The key's TTL on strata's Redis is `want` less at most the test's run time.
pub async fn assert_ttl(direct: &mut RawClient, key: &str, want: i64) {
    let ttl = pttl(direct, key).await;
    assert!(want - SLACK <= ttl && ttl <= want, "PTTL {key} = {ttl}, want about {want}");
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid url");
    tokio::time::timeout(READ_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Runs one command with the redis crate, failing the test on an error or after READ_TIMEOUT.
pub async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    c: &redis::Cmd,
) -> T {
    match tokio::time::timeout(READ_TIMEOUT, c.query_async::<T>(con)).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{c:?} failed: {e}"),
        Err(_) => panic!("no reply to {c:?} within {READ_TIMEOUT:?}"),
    }
}

/// `INFO <sections>` through the redis crate, as a String.
pub async fn info(con: &mut redis::aio::MultiplexedConnection, sections: &[&str]) -> String {
    let mut c = redis::cmd("INFO");
    sections.iter().for_each(|s| {
        c.arg(*s);
    });
    query(con, &c).await
}

/// `field:value` lines of an INFO text.
pub fn fields(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn field(map: &HashMap<String, String>, name: &str) -> String {
    map.get(name).unwrap_or_else(|| panic!("INFO has no field {name}")).clone()
}
