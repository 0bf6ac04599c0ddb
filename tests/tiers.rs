//! Cache tiers end to end: TTL defaults, clamps, jitter, sliding reads, PERSIST policy,
//! replies byte-equal to a plain redis-server (RESP2 and RESP3, inside and outside the
//! client's MULTI), accounting in `INFO strata` and `/metrics`, and atomicity of write+TTL
//! when the strata binary is SIGKILLed mid-load.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use support::{
    READ_TIMEOUT, RawClient, RedisServer, Strata, cmd, encode, free_port, http_get, int_reply, wait_for_port,
};

/// Tiers with round numbers so TTL assertions are exact up to the test's own run time.
const TIERS: &str = r#"
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

const DEFAULT: i64 = 100_000;
const MIN: i64 = 10_000;
const MAX: i64 = 1_000_000;
const SESS_DEFAULT: i64 = 200_000;
const SESS_MAX: i64 = 2_000_000;
const NOMAX_DEFAULT: i64 = 300_000;
/// How far below the configured TTL a key may be by the time the test reads it.
const SLACK: i64 = 5_000;

/// strata in front of one redis-server, and a second plain redis-server as the reference
/// for what a client would get without strata.
struct Rig {
    strata: Strata,
    redis: RedisServer,
    reference: RedisServer,
}

impl Rig {
    async fn start(toml: &str) -> Rig {
        let redis = RedisServer::start();
        let reference = RedisServer::start();
        let strata = Strata::start(&redis.url(), toml).await;
        Rig { strata, redis, reference }
    }

    /// (through strata, plain reference server, direct to strata's Redis).
    async fn clients(&self) -> (RawClient, RawClient, RawClient) {
        (
            RawClient::connect(self.strata.addr).await,
            RawClient::port(self.reference.port).await,
            RawClient::port(self.redis.port).await,
        )
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends the same command through strata and to the reference; the replies must be equal.
async fn same(via: &mut RawClient, plain: &mut RawClient, args: &[&str]) -> Bytes {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    same_bytes(via, plain, &words).await
}

async fn same_bytes(via: &mut RawClient, plain: &mut RawClient, args: &[&[u8]]) -> Bytes {
    via.send(&encode(args)).await;
    plain.send(&encode(args)).await;
    let (got, want) = (via.read_frame().await, plain.read_frame().await);
    let shown: Vec<String> = args.iter().map(|a| show(a)).collect();
    assert_eq!(show(&got), show(&want), "reply to {shown:?} differs from plain Redis");
    got
}

/// Sends raw bytes through strata and to the reference and compares `frames` replies.
async fn same_batch(via: &mut RawClient, plain: &mut RawClient, batch: &[u8], frames: usize) -> Vec<Bytes> {
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
async fn setup(direct: &mut RawClient, plain: &mut RawClient, commands: &[&[&str]]) {
    for args in commands {
        let (a, b) = (direct.command(args).await, plain.command(args).await);
        assert_eq!(show(&a), show(&b), "setup {args:?}");
        assert!(!a.starts_with(b"-"), "setup {args:?} failed: {}", show(&a));
    }
}

async fn pttl(direct: &mut RawClient, key: &str) -> i64 {
    int_reply(&direct.command(&["PTTL", key]).await)
}

/// The key's TTL on strata's Redis is `want` less at most the test's run time.
async fn assert_ttl(direct: &mut RawClient, key: &str, want: i64) {
    let ttl = pttl(direct, key).await;
    assert!(want - SLACK <= ttl && ttl <= want, "PTTL {key} = {ttl}, want about {want}");
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid url");
    tokio::time::timeout(READ_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Runs one command with the redis crate, failing the test on an error or after READ_TIMEOUT.
async fn query<T: redis::FromRedisValue>(con: &mut redis::aio::MultiplexedConnection, c: &redis::Cmd) -> T {
    match tokio::time::timeout(READ_TIMEOUT, c.query_async::<T>(con)).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{c:?} failed: {e}"),
        Err(_) => panic!("no reply to {c:?} within {READ_TIMEOUT:?}"),
    }
}

/// `INFO <sections>` through the redis crate, as a String.
async fn info(con: &mut redis::aio::MultiplexedConnection, sections: &[&str]) -> String {
    let mut c = redis::cmd("INFO");
    sections.iter().for_each(|s| {
        c.arg(*s);
    });
    query(con, &c).await
}

/// `field:value` lines of an INFO text.
fn fields(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn field(map: &HashMap<String, String>, name: &str) -> String {
    map.get(name).unwrap_or_else(|| panic!("INFO has no field {name}")).clone()
}

// ---------------------------------------------------------------------------------------
// TTL policy on writes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_without_ttl_gets_the_tier_default() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    assert_eq!(&same(&mut via, &mut plain, &["SET", "op:a", "v"]).await[..], b"+OK\r\n");
    assert_ttl(&mut direct, "op:a", DEFAULT).await;
    // Overwriting drops a TTL in Redis; strata gives the overwrite a fresh default.
    direct.command(&["PEXPIRE", "op:a", "20000"]).await;
    same(&mut via, &mut plain, &["SET", "op:a", "w", "GET"]).await;
    assert_ttl(&mut direct, "op:a", DEFAULT).await;
    // NX on an existing key writes nothing and leaves the TTL alone.
    direct.command(&["PEXPIRE", "op:a", "20000"]).await;
    same(&mut via, &mut plain, &["SET", "op:a", "x", "NX"]).await;
    assert_ttl(&mut direct, "op:a", 20_000).await;
    // XX on a missing key creates nothing.
    same(&mut via, &mut plain, &["SET", "op:none", "x", "XX"]).await;
    assert_eq!(pttl(&mut direct, "op:none").await, -2);
    // SET KEEPTTL on a new key still gets the default; on a key with a TTL keeps it.
    same(&mut via, &mut plain, &["SET", "op:keep", "v", "KEEPTTL"]).await;
    assert_ttl(&mut direct, "op:keep", DEFAULT).await;
    direct.command(&["PEXPIRE", "op:keep", "50000"]).await;
    same(&mut via, &mut plain, &["SET", "op:keep", "w", "KEEPTTL"]).await;
    assert_ttl(&mut direct, "op:keep", 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ttls_are_kept_inside_the_bounds_and_clamped_outside() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let (secs, ms) = (now_ms() / 1000, now_ms());
    // (command, the TTL the key must end up with).
    let cases = [
        ("SET op:c1 v EX 50".to_string(), 50_000),
        ("SET op:c2 v EX 5".to_string(), MIN),
        ("SET op:c3 v PX 5000000".to_string(), MAX),
        (format!("SET op:c4 v EXAT {}", secs + 5), MIN),
        (format!("SET op:c5 v PXAT {}", ms + 50_000), 50_000),
        (format!("SET op:c6 v EXAT {}", secs + 5000), MAX),
        ("SETEX op:c7 5 v".to_string(), MIN),
        ("SETEX op:c8 50 v".to_string(), 50_000),
        ("PSETEX op:c9 5000000 v".to_string(), MAX),
        ("GETEX op:g1 EX 5".to_string(), MIN),
        ("GETEX op:g2 PX 5000000".to_string(), MAX),
        (format!("GETEX op:g3 EXAT {}", secs + 50), 50_000),
        ("EXPIRE op:e1 5".to_string(), MIN),
        ("PEXPIRE op:e2 5000000".to_string(), MAX),
        (format!("EXPIREAT op:e3 {}", secs + 5), MIN),
        (format!("PEXPIREAT op:e4 {}", ms + 5_000_000), MAX),
        ("EXPIRE op:e5 50".to_string(), 50_000),
        ("EXPIRE op:e6 5 NX".to_string(), MIN),
    ];
    for key in ["op:g1", "op:g2", "op:g3", "op:e1", "op:e2", "op:e3", "op:e4", "op:e5", "op:e6"] {
        setup(&mut direct, &mut plain, &[&["SET", key, "v"]]).await;
    }
    for (line, want) in &cases {
        let args: Vec<&str> = line.split_whitespace().collect();
        same(&mut via, &mut plain, &args).await;
        assert_ttl(&mut direct, args[1], *want).await;
    }
    // RESTORE: ttl 0 means none, so it gets the default; others are clamped.
    setup(&mut direct, &mut plain, &[&["SET", "plain:dump", "payload"]]).await;
    let dump = direct.command(&["DUMP", "plain:dump"]).await;
    let payload = &dump[dump.iter().position(|&b| b == b'\n').expect("bulk header") + 1..dump.len() - 2];
    for (key, ttl, want) in [("op:r0", "0", DEFAULT), ("op:r1", "5", MIN), ("op:r2", "5000000", MAX)] {
        let args: [&[u8]; 4] = [b"RESTORE", key.as_bytes(), ttl.as_bytes(), payload];
        assert_eq!(&same_bytes(&mut via, &mut plain, &args).await[..], b"+OK\r\n");
        assert_ttl(&mut direct, key, want).await;
    }
    // Zero, negative and past TTLs are Redis' business: deleted or refused exactly as without strata.
    setup(&mut direct, &mut plain, &[&["SET", "op:z1", "v"], &["SET", "op:z2", "v"]]).await;
    same(&mut via, &mut plain, &["EXPIRE", "op:z1", "-1"]).await;
    same(&mut via, &mut plain, &["PEXPIREAT", "op:z2", "1000"]).await;
    assert_eq!(pttl(&mut direct, "op:z1").await, -2);
    assert_eq!(pttl(&mut direct, "op:z2").await, -2);
    same(&mut via, &mut plain, &["SET", "op:z3", "v", "EX", "0"]).await;
    same(&mut via, &mut plain, &["SETEX", "op:z3", "-5", "v"]).await;
    same(&mut via, &mut plain, &["EXPIRE", "op:missing", "5"]).await;
}

/// (setup run directly on both servers, `;`-separated; the write sent through strata).
/// Every `op:` key of the write must end up with the tier's default TTL.
const WRAPPED_WRITES: &[(&str, &str)] = &[
    ("", "SETNX op:w:setnx v"),
    ("", "GETSET op:w:getset v"),
    ("", "MSET op:w:m1 1 op:w:m2 2"),
    ("", "MSETNX op:w:mn1 1 op:w:mn2 2"),
    ("", "INCR op:w:incr"),
    ("", "INCRBY op:w:incrby 5"),
    ("", "INCRBYFLOAT op:w:float 1.5"),
    ("", "DECR op:w:decr"),
    ("", "APPEND op:w:append abc"),
    ("", "SETRANGE op:w:setrange 3 abc"),
    ("", "SETBIT op:w:setbit 7 1"),
    ("", "HSET op:w:hset a 1 b 2"),
    ("", "HSETNX op:w:hsetnx f v"),
    ("", "HINCRBY op:w:hincrby f 3"),
    ("", "LPUSH op:w:lpush a b"),
    ("", "RPUSH op:w:rpush a"),
    ("RPUSH op:w:linsert a b", "LINSERT op:w:linsert BEFORE b x"),
    ("", "SADD op:w:sadd a b"),
    ("SADD plain:smove a b", "SMOVE plain:smove op:w:smove a"),
    ("", "ZADD op:w:zadd 1 a 2 b"),
    ("", "ZINCRBY op:w:zincrby 2.5 m"),
    ("", "XADD op:w:xadd 1-1 f v"),
    ("", "PFADD op:w:pfadd a b c"),
    ("PFADD plain:hll x y", "PFMERGE op:w:pfmerge plain:hll"),
    ("SET plain:copy v", "COPY plain:copy op:w:copy"),
    ("SET plain:rename v", "RENAME plain:rename op:w:rename"),
    ("SADD plain:s1 a; SADD plain:s2 b", "SUNIONSTORE op:w:sunion plain:s1 plain:s2"),
    ("ZADD plain:z1 1 a; ZADD plain:z2 2 b", "ZUNIONSTORE op:w:zunion 2 plain:z1 plain:z2"),
    ("RPUSH plain:sort 3 1 2", "SORT plain:sort STORE op:w:sort"),
    ("RPUSH plain:sort2 c a b", "SORT plain:sort2 ALPHA LIMIT 0 2 DESC STORE op:w:sort2"),
    ("RPUSH plain:lmove a b", "LMOVE plain:lmove op:w:lmove LEFT RIGHT"),
    ("", "GEOADD op:w:geo 13.361389 38.115556 palermo"),
    ("", "SET op:w:keepttl v KEEPTTL"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_write_gets_the_default_and_replies_exactly_like_redis() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let eval = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])";
    let writes = WRAPPED_WRITES.iter().map(|(setup, write)| (*setup, write.split_whitespace().collect()));
    let writes: Vec<(&str, Vec<&str>)> =
        writes.chain([("", vec!["EVAL", eval, "1", "op:w:eval", "v"])]).collect();
    for (setup_lines, command) in &writes {
        for line in setup_lines.split(';').filter(|l| !l.trim().is_empty()) {
            setup(&mut direct, &mut plain, &[&line.split_whitespace().collect::<Vec<_>>()]).await;
        }
        let reply = same(&mut via, &mut plain, command).await;
        assert!(!reply.starts_with(b"-"), "{command:?} failed: {}", show(&reply));
        for key in command.iter().filter(|w| w.starts_with("op:")) {
            assert_ttl(&mut direct, key, DEFAULT).await;
        }
    }
    // Untiered keys touched by those writes got no TTL.
    for key in ["plain:smove", "plain:hll", "plain:copy", "plain:s1", "plain:z2", "plain:sort", "plain:lmove"]
    {
        assert_eq!(pttl(&mut direct, key).await, -1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_reply_with_redis_own_errors() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    setup(&mut direct, &mut plain, &[&["SET", "op:e:str", "x"], &["HSET", "op:e:hash", "f", "v"]]).await;
    let failing: &[&[&str]] = &[
        &["HSET", "op:e:str", "f", "v"],
        &["LPUSH", "op:e:str", "a"],
        &["SADD", "op:e:hash", "a"],
        &["INCR", "op:e:str"],
        &["HINCRBY", "op:e:hash", "f", "x"],
        &["ZADD", "op:e:z", "notanumber", "m"],
        &["XADD", "op:e:x", "0-0", "f", "v"],
        &["SETRANGE", "op:e:r", "-1", "x"],
        &["EVAL", "return redis.error_reply('boom')", "1", "op:e:eval"],
        &["HSET", "op:e:h", "f"],
        &["MSET", "op:e:m1", "1", "op:e:m2"],
        &["SET", "op:e:s", "v", "EX", "notanumber"],
        &["SET", "op:e:s", "v", "EX", "0"],
        &["SET", "op:e:s", "v", "BADOPTION"],
        &["SET", "op:e:s", "v", "EX"],
        &["GETEX", "op:e:hash", "EX", "5"],
        &["GET", "op:e:hash"],
        &["LINSERT", "op:e:str", "BEFORE", "a", "b"],
    ];
    for command in failing {
        let reply = same(&mut via, &mut plain, command).await;
        assert!(reply.starts_with(b"-"), "{command:?} should fail: {}", show(&reply));
    }
    // Failed writes created nothing, and the connection is still in step.
    for key in ["op:e:z", "op:e:x", "op:e:h", "op:e:m1", "op:e:s"] {
        assert_eq!(pttl(&mut direct, key).await, -2, "{key}");
    }
    assert_eq!(&via.command(&["PING"]).await[..], b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_an_existing_ttl_unless_it_is_outside_the_clamp() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    // (TTL set directly first, the write through strata, the TTL expected after it).
    let cases: &[(&str, &[&str], i64)] = &[
        ("50000", &["HSET", "op:t:in", "g", "v"], 50_000),
        ("5000", &["HSET", "op:t:low", "g", "v"], MIN),
        ("5000000", &["HSET", "op:t:high", "g", "v"], MAX),
        ("50000", &["HINCRBY", "op:t:incr", "n", "1"], 50_000),
        ("50000", &["HSET", "sess:t", "g", "v"], SESS_DEFAULT),
    ];
    for (ttl, command, want) in cases {
        let key = command[1];
        setup(&mut direct, &mut plain, &[&["HSET", key, "f", "v"]]).await;
        direct.command(&["PEXPIRE", key, ttl]).await;
        same(&mut via, &mut plain, command).await;
        assert_ttl(&mut direct, key, *want).await;
    }
    // A key written before the tier existed (no TTL) gets the default on its next write.
    setup(&mut direct, &mut plain, &[&["RPUSH", "op:t:old", "a"]]).await;
    same(&mut via, &mut plain, &["RPUSH", "op:t:old", "b"]).await;
    assert_ttl(&mut direct, "op:t:old", DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_default_ttls_over_the_configured_range() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(cmd(&["SET", &format!("jit:s:{i}"), "v"]));
        batch.extend(cmd(&["HSET", &format!("jit:h:{i}"), "f", "v"]));
    }
    via.send(&batch).await;
    for _ in 0..100 {
        assert!(!via.read_frame().await.starts_with(b"-"));
    }
    for kind in ["s", "h"] {
        let mut ttls = Vec::new();
        for i in 0..50 {
            let ttl = pttl(&mut direct, &format!("jit:{kind}:{i}")).await;
            assert!((DEFAULT - SLACK..=DEFAULT + 20_000).contains(&ttl), "jit:{kind}:{i} PTTL {ttl}");
            ttls.push(ttl);
        }
        let distinct: HashSet<i64> = ttls.iter().copied().collect();
        assert!(distinct.len() >= 45, "{kind}: only {} distinct TTLs: {ttls:?}", distinct.len());
        let spread = ttls.iter().max().unwrap() - ttls.iter().min().unwrap();
        assert!(spread >= 10_000, "{kind}: TTLs spread over only {spread} ms of a 20 s jitter");
    }
}

// ---------------------------------------------------------------------------------------
// Sliding tiers and PERSIST

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_reads_push_the_ttl_back_to_the_default() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let data: &[&[&str]] = &[
        &["SET", "sess:s", "v"],
        &["HSET", "sess:h", "a", "1", "b", "2"],
        &["RPUSH", "sess:l", "a", "b", "c"],
        &["SADD", "sess:set", "1", "2", "3"],
        &["ZADD", "sess:z", "1", "a", "2.5", "b"],
        &["HSET", "u7:cart", "sku", "2"],
        &["SET", "sess:gx", "v"],
        &["SET", "op:s", "v"],
    ];
    setup(&mut direct, &mut plain, data).await;
    for key in ["sess:s", "sess:h", "sess:l", "sess:set", "sess:z", "u7:cart", "sess:gx", "op:s"] {
        direct.command(&["PEXPIRE", key, "5000"]).await;
    }
    // Reads pipelined in one write: each reply exact and in order, strata's refreshes invisible.
    let reads: &[&[&str]] = &[
        &["GET", "sess:s"],
        &["HGETALL", "sess:h"],
        &["PING"],
        &["LRANGE", "sess:l", "0", "-1"],
        &["SMEMBERS", "sess:set"],
        &["ZRANGE", "sess:z", "0", "-1", "WITHSCORES"],
        &["HGET", "u7:cart", "sku"],
        &["GETEX", "sess:gx"],
        &["GET", "op:s"],
        &["GET", "sess:missing"],
        &["HGETALL", "sess:missing2"],
    ];
    let batch: Vec<u8> = reads.iter().flat_map(|r| cmd(r)).collect();
    same_batch(&mut via, &mut plain, &batch, reads.len()).await;
    for key in ["sess:s", "sess:h", "sess:l", "sess:set", "sess:z", "u7:cart", "sess:gx"] {
        assert_ttl(&mut direct, key, SESS_DEFAULT).await;
    }
    // Reads of a non-sliding tier leave the TTL alone; missing keys stay missing.
    assert!(pttl(&mut direct, "op:s").await <= 5000);
    assert_eq!(pttl(&mut direct, "sess:missing").await, -2);
    assert_eq!(pttl(&mut direct, "sess:missing2").await, -2);
    // A write on a sliding tier pushes an existing TTL out too.
    direct.command(&["PEXPIRE", "sess:h", "5000"]).await;
    same(&mut via, &mut plain, &["HSET", "sess:h", "c", "3"]).await;
    assert_ttl(&mut direct, "sess:h", SESS_DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_deny_refuses_and_the_key_keeps_its_ttl() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    assert_eq!(&via.command(&["SET", "op:p", "v"]).await[..], b"+OK\r\n");
    for command in [&["PERSIST", "op:p"][..], &["GETEX", "op:p", "PERSIST"]] {
        let reply = via.command(command).await;
        assert!(reply.starts_with(b"-ERR strata: PERSIST refused"), "{command:?}: {}", show(&reply));
        assert_ttl(&mut direct, "op:p", DEFAULT).await;
    }
    // Untiered keys and keys of a tier without default_ttl still PERSIST normally.
    for key in ["plain:p", "cnt:p"] {
        via.command(&["SET", key, "v", "EX", "100"]).await;
        assert_eq!(&via.command(&["PERSIST", key]).await[..], b":1\r\n");
        assert_eq!(pttl(&mut direct, key).await, -1);
    }
    let mut con = connect(&rig.strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!(field(&stats, "tier_op_persist_denied"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_max_replaces_the_ttl_with_max_or_default() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    for key in ["sess:p", "sess:g", "nomax:p"] {
        assert_eq!(&via.command(&["SET", key, "v"]).await[..], b"+OK\r\n");
        plain.command(&["SET", key, "v", "EX", "100"]).await;
    }
    assert_eq!(&same(&mut via, &mut plain, &["PERSIST", "sess:p"]).await[..], b":1\r\n");
    assert_ttl(&mut direct, "sess:p", SESS_MAX).await;
    assert_eq!(&same(&mut via, &mut plain, &["PERSIST", "nomax:p"]).await[..], b":1\r\n");
    assert_ttl(&mut direct, "nomax:p", NOMAX_DEFAULT).await;
    assert_eq!(&same(&mut via, &mut plain, &["GETEX", "sess:g", "PERSIST"]).await[..], b"$1\r\nv\r\n");
    assert_ttl(&mut direct, "sess:g", SESS_MAX).await;
    same(&mut via, &mut plain, &["PERSIST", "sess:missing"]).await;
    assert_eq!(pttl(&mut direct, "sess:missing").await, -2);
}

// ---------------------------------------------------------------------------------------
// Transactions, pipelines, RESP3

/// Sends `commands` as one transaction pipelined in one write (to strata and the
/// reference) and checks every reply, EXEC's included, is byte-equal.
async fn same_transaction(via: &mut RawClient, plain: &mut RawClient, commands: &[&[&str]]) -> Bytes {
    let mut batch = cmd(&["MULTI"]);
    commands.iter().for_each(|c| batch.extend(cmd(c)));
    batch.extend(cmd(&["EXEC"]));
    same_batch(via, plain, &batch, commands.len() + 2).await.pop().expect("EXEC reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_multi_exec_matches_redis_and_tiered_keys_get_ttls() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    setup(&mut direct, &mut plain, &[&["HSET", "sess:tx", "f", "v"]]).await;
    direct.command(&["PEXPIRE", "sess:tx", "5000"]).await;
    let exec = same_transaction(
        &mut via,
        &mut plain,
        &[
            &["HSET", "op:tx:h", "f", "v"],
            &["SET", "plain:tx", "v"],
            &["LPUSH", "op:tx:l", "a", "b"],
            &["INCR", "op:tx:n"],
            &["GET", "op:tx:n"],
            &["HGETALL", "sess:tx"],
            &["SET", "op:tx:s", "v"],
            &["MSET", "op:tx:m", "1", "plain:tx2", "2"],
            &["LPUSH", "op:tx:h", "wrongtype"],
        ],
    )
    .await;
    assert!(exec.starts_with(b"*9\r\n"), "{}", show(&exec));
    for key in ["op:tx:h", "op:tx:l", "op:tx:n", "op:tx:s", "op:tx:m"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:tx", SESS_DEFAULT).await;
    assert_eq!(pttl(&mut direct, "plain:tx").await, -1);
    assert_eq!(pttl(&mut direct, "plain:tx2").await, -1);
    // The same transaction one command at a time.
    for args in [&["MULTI"][..], &["HSET", "op:tx:h2", "f", "v"], &["INCR", "op:tx:n"], &["EXEC"]] {
        same(&mut via, &mut plain, args).await;
    }
    assert_ttl(&mut direct, "op:tx:h2", DEFAULT).await;
    // A queueing error aborts the whole transaction, as in Redis.
    let exec =
        same_transaction(&mut via, &mut plain, &[&["HSET", "op:tx:a", "f", "v"], &["HSET", "op:tx:a"]]).await;
    assert!(exec.starts_with(b"-EXECABORT"), "{}", show(&exec));
    assert_eq!(pttl(&mut direct, "op:tx:a").await, -2);
    // DISCARD, then a transaction without tiered keys.
    for args in [&["MULTI"][..], &["SET", "op:tx:d", "v"], &["DISCARD"], &["GET", "op:tx:d"]] {
        same(&mut via, &mut plain, args).await;
    }
    same_transaction(&mut via, &mut plain, &[&["SET", "plain:only", "1"], &["INCR", "plain:only"]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_conflict_still_aborts_and_an_undisturbed_watch_commits() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let mut other = RawClient::connect(rig.strata.addr).await;
    via.command(&["SET", "op:w", "1"]).await;
    assert_eq!(&via.command(&["WATCH", "op:w"]).await[..], b"+OK\r\n");
    assert_eq!(&other.command(&["SET", "op:w", "2"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["HSET", "op:w:h", "f", "v"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&via.command(&["EXEC"]).await[..], b"*-1\r\n");
    assert_eq!(pttl(&mut direct, "op:w:h").await, -2);
    // Without a conflicting write the transaction commits exactly as in Redis.
    setup(&mut direct, &mut plain, &[&["SET", "op:w2", "1"]]).await;
    for args in
        [&["WATCH", "op:w2"][..], &["MULTI"], &["HSET", "op:w2:h", "f", "v"], &["INCR", "op:w2"], &["EXEC"]]
    {
        same(&mut via, &mut plain, args).await;
    }
    assert_ttl(&mut direct, "op:w2:h", DEFAULT).await;
    assert_ttl(&mut direct, "op:w2", DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_then_read_on_a_sliding_tier_does_not_abort_the_transaction() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    setup(&mut direct, &mut plain, &[&["SET", "sess:cas", "1"], &["HSET", "sess:cas:h", "n", "1"]]).await;
    direct.command(&["PEXPIRE", "sess:cas", "50000"]).await;
    direct.command(&["PEXPIRE", "sess:cas:h", "50000"]).await;
    // Check-and-set, the documented WATCH pattern: WATCH, read, MULTI, write, EXEC.
    let mut execs = Vec::new();
    for (key, read) in [("sess:cas", &["GET", "sess:cas"][..]), ("sess:cas:h", &["HGETALL", "sess:cas:h"])] {
        for args in [&["WATCH", key][..], read, &["MULTI"], &["HSET", "sess:cas:other", "n", "2"], &["EXEC"]]
        {
            via.send(&cmd(args)).await;
            plain.send(&cmd(args)).await;
            let (got, want) = (via.read_frame().await, plain.read_frame().await);
            if args[0] == "EXEC" {
                execs.push((read[0], show(&got), show(&want)));
            }
        }
        via.command(&["DEL", "sess:cas:other"]).await;
        plain.command(&["DEL", "sess:cas:other"]).await;
    }
    for (read, got, want) in &execs {
        assert_eq!(got, want, "EXEC after WATCH + {read}: {execs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_multi_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    // Redis answers the nested MULTI with an error, does not queue it, and still runs EXEC.
    let commands: &[&[&str]] = &[&["HSET", "op:n:h", "f", "v"], &["MULTI"], &["INCR", "op:n:c"]];
    let exec = same_transaction(&mut via, &mut plain, commands).await;
    assert_eq!(&exec[..], b"*2\r\n:1\r\n:1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    let commands: &[&[&str]] = &[&["HSET", "op:n:h", "f", "v"], &["WATCH", "op:n:h"]];
    let exec = same_transaction(&mut via, &mut plain, commands).await;
    assert_eq!(&exec[..], b"*1\r\n:1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_refused_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    assert_eq!(&via.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["HSET", "op:n:p", "f", "v"]).await[..], b"+QUEUED\r\n");
    let refused = via.command(&["PERSIST", "op:n:p"]).await;
    assert!(refused.starts_with(b"-ERR strata: PERSIST refused"), "{}", show(&refused));
    // Redis never saw the PERSIST: EXEC holds the HSET's reply only (or aborts, as a
    // queueing error would in Redis) and never strata's own PEXPIRE replies.
    let exec = via.command(&["EXEC"]).await;
    assert!(&exec[..] == b"*1\r\n:1\r\n" || exec.starts_with(b"-EXECABORT"), "EXEC: {}", show(&exec));
    assert!(pttl(&mut direct, "op:n:p").await != -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_inside_a_transaction_are_counted_by_their_result() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    let exec =
        same_transaction(&mut via, &mut plain, &[&["GET", "op:q:missing"], &["HGET", "op:q:h", "f"]]).await;
    assert_eq!(&exec[..], b"*2\r\n$-1\r\n$-1\r\n");
    let mut con = connect(&rig.strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!((field(&stats, "tier_op_hits"), field(&stats, "tier_op_misses")), ("0".into(), "2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_numbers_redis_rejects_are_still_rejected() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let mut differ = Vec::new();
    let commands: &[&[&str]] = &[
        &["EXPIRE", "op:bad", "+5"],
        &["EXPIRE", "op:bad", "05"],
        &["SET", "op:bad", "v", "EX", "05"],
        &["SET", "op:bad", "v", "EX", "+5"],
        &["SETEX", "op:bad", "05", "v"],
        &["GETEX", "op:bad", "EX", "05"],
        &["PEXPIRE", "op:bad", "9223372036854775807"],
        &["SET", "op:bad", "v", "PX", "9223372036854775807"],
    ];
    for command in commands {
        setup(&mut direct, &mut plain, &[&["SET", "op:bad", "v"]]).await;
        via.send(&cmd(command)).await;
        plain.send(&cmd(command)).await;
        let (got, want) = (via.read_frame().await, plain.read_frame().await);
        if got != want {
            differ.push(format!("{command:?}: strata {:?}, Redis {:?}", show(&got), show(&want)));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_prefix_picks_the_tier() {
    let toml = "[[tiers]]\nname = \"short\"\nprefixes = [\"user:\"]\ndefault_ttl = \"100s\"\n\
                [[tiers]]\nname = \"long\"\nprefixes = [\"user:preferences:\"]\ndefault_ttl = \"200s\"\n\
                jitter = \"10%\"\n";
    let rig = Rig::start(toml).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    via.command(&["SET", "user:1", "v"]).await;
    via.command(&["HSET", "user:preferences:1", "f", "v"]).await;
    assert_ttl(&mut direct, "user:1", 100_000).await;
    let long = pttl(&mut direct, "user:preferences:1").await;
    assert!((200_000 - SLACK..=220_000).contains(&long), "PTTL {long}");
    let mut con = connect(&rig.strata.url()).await;
    let tier: HashMap<String, redis::Value> =
        query(&mut con, redis::cmd("STRATA").arg("TIER").arg("user:preferences:1")).await;
    assert_eq!(tier["prefix"], redis::Value::BulkString(b"user:preferences:".to_vec()));
    assert_eq!(tier["jitter_ms"], redis::Value::Int(20_000), "10% of 200 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_and_blocking_writes_get_ttls_without_a_wrapping_multi() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    // Under WATCH strata cannot wrap in MULTI (it would end the WATCH): PEXPIREs follow.
    same(&mut via, &mut plain, &["WATCH", "plain:watched"]).await;
    same(&mut via, &mut plain, &["HSET", "op:nw:h", "f", "v"]).await;
    same(&mut via, &mut plain, &["HSET", "op:nw:str", "f", "v"]).await;
    same(&mut via, &mut plain, &["LPUSH", "op:nw:str", "x"]).await;
    same(&mut via, &mut plain, &["UNWATCH"]).await;
    assert_ttl(&mut direct, "op:nw:h", DEFAULT).await;
    // A blocking write's destination gets its TTL too.
    setup(&mut direct, &mut plain, &[&["RPUSH", "plain:bl", "a", "b"]]).await;
    let reply = same(&mut via, &mut plain, &["BLMOVE", "plain:bl", "op:nw:dst", "LEFT", "RIGHT", "1"]).await;
    assert_eq!(&reply[..], b"$1\r\na\r\n");
    assert_ttl(&mut direct, "op:nw:dst", DEFAULT).await;
    same(&mut via, &mut plain, &["BLPOP", "op:nw:empty", "0.1"]).await;
    assert_eq!(&via.command(&["PING"]).await[..], b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_mixing_tiered_and_untiered_keys_reply_in_order() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let commands: &[&[&str]] = &[
        &["SET", "op:p:a", "1"],
        &["SET", "plain:p:a", "1"],
        &["HSET", "op:p:h", "f", "v"],
        &["HSET", "plain:p:h", "f", "v"],
        &["GET", "op:p:a"],
        &["INCR", "op:p:a"],
        &["LPUSH", "plain:p:l", "x"],
        &["MGET", "op:p:a", "plain:p:a", "op:p:missing"],
        &["HGET", "op:p:a", "f"],
        &["RPUSH", "sess:p:l", "a", "b"],
        &["LRANGE", "sess:p:l", "0", "-1"],
        &["SADD", "jit:p:s", "m"],
        &["MSET", "op:p:m", "1", "plain:p:m", "2", "sess:p:m", "3"],
        &["DEL", "plain:p:a"],
        &["EXISTS", "op:p:a", "plain:p:a"],
        &["PING"],
    ];
    // More requests than max_pipeline_depth (1024), so back-pressure is part of the path.
    let mut batch = Vec::new();
    for _ in 0..100 {
        commands.iter().for_each(|c| batch.extend(cmd(c)));
    }
    same_batch(&mut via, &mut plain, &batch, commands.len() * 100).await;
    for key in ["op:p:a", "op:p:h", "op:p:m"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:p:l", SESS_DEFAULT).await;
    for key in ["plain:p:h", "plain:p:l", "plain:p:m"] {
        assert_eq!(pttl(&mut direct, key).await, -1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_replies_are_byte_equal_to_redis() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    for c in [&mut via, &mut plain] {
        assert!(c.command(&["HELLO", "3"]).await.starts_with(b"%"));
    }
    let commands: &[&[&str]] = &[
        &["HSET", "op:r3:h", "a", "1", "b", "2"],
        &["HGETALL", "op:r3:h"],
        &["ZINCRBY", "op:r3:z", "1.5", "m"],
        &["ZSCORE", "op:r3:z", "m"],
        &["ZRANGE", "op:r3:z", "0", "-1", "WITHSCORES"],
        &["INCRBYFLOAT", "op:r3:f", "2.5"],
        &["SADD", "sess:r3:s", "1", "2"],
        &["SMEMBERS", "sess:r3:s"],
        &["HSET", "sess:r3:h", "f", "v"],
        &["HGETALL", "sess:r3:h"],
        &["GET", "sess:r3:missing"],
        &["HGETALL", "op:r3:missing"],
        &["LPUSH", "op:r3:h", "wrongtype"],
        &["SET", "op:r3:s", "v"],
    ];
    let batch: Vec<u8> = commands.iter().flat_map(|c| cmd(c)).collect();
    same_batch(&mut via, &mut plain, &batch, commands.len()).await;
    let exec = same_transaction(
        &mut via,
        &mut plain,
        &[&["HSET", "op:r3:tx", "f", "v"], &["HGETALL", "op:r3:tx"], &["ZINCRBY", "op:r3:tz", "0.25", "m"]],
    )
    .await;
    assert!(exec.starts_with(b"*3\r\n"), "{}", show(&exec));
    for key in ["op:r3:h", "op:r3:z", "op:r3:f", "op:r3:s", "op:r3:tx", "op:r3:tz"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:r3:s", SESS_DEFAULT).await;
}

// ---------------------------------------------------------------------------------------
// Accounting and introspection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_strata_counts_hits_misses_writes_errors_per_tier_and_prefix() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    let traffic: &[&[&str]] = &[
        &["GET", "op:a"],                     // miss
        &["SET", "op:a", "v"],                // write, ttl rewrite
        &["GET", "op:a"],                     // hit
        &["MGET", "op:a", "op:b", "plain:x"], // hit + miss, plain uncounted
        &["HSET", "op:h", "f", "v"],          // write, ttl rewrite
        &["HGET", "op:h", "f"],               // hit
        &["HGET", "op:h", "nope"],            // miss
        &["GET", "op:h"],                     // error (WRONGTYPE)
        &["SET", "op:c", "v", "EX", "1"],     // write, clamp
        &["PERSIST", "op:a"],                 // persist denied
        &["GET", "cnt:x"],                    // count-only tier: miss
        &["SET", "cnt:x", "v"],               // write, no TTL
        &["GET", "cnt:x"],                    // hit
        &["HSET", "u1:cart", "sku", "1"],     // pattern rule of sess: write
        &["GET", "plain:y"],                  // untiered
    ];
    for command in traffic {
        via.command(command).await;
    }
    assert_eq!(pttl(&mut direct, "cnt:x").await, -1, "a tier without default_ttl only counts");
    let mut con = connect(&rig.strata.url()).await;
    let text = info(&mut con, &["strata"]).await;
    assert!(text.starts_with("# Strata\r\n"), "{text}");
    let stats = fields(&text);
    let want = [
        ("tier_op_hits", "3"),
        ("tier_op_misses", "3"),
        ("tier_op_hit_rate", "0.5000"),
        ("tier_op_writes", "3"),
        ("tier_op_errors", "1"),
        ("tier_op_ttl_rewrites", "2"),
        ("tier_op_ttl_clamps", "1"),
        ("tier_op_persist_denied", "1"),
        ("tier_count_hits", "1"),
        ("tier_count_misses", "1"),
        ("tier_count_writes", "1"),
        ("tier_count_ttl_rewrites", "0"),
        ("tier_sess_writes", "1"),
        ("tier_jit_hits", "0"),
        ("strata_tiers", "op,jit,sess,nomax,count"),
    ];
    for (name, value) in want {
        assert_eq!(field(&stats, name), value, "{name}");
    }
    let latency: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|p| field(&stats, &format!("tier_op_latency_{p}_us")).parse().expect("a number of µs"))
        .collect();
    assert!(latency.windows(2).all(|w| w[0] <= w[1]) && latency[4] > 0, "{latency:?}");
    assert_eq!(field(&stats, "tier_jit_latency_max_us"), "0");
    assert_eq!(field(&stats, "rule0"), "tier=op,prefix=op:,hits=3,misses=3,writes=3,errors=1,ttl_rewrites=2");
    assert_eq!(
        field(&stats, "rule3"),
        "tier=sess,pattern=*:cart,hits=0,misses=0,writes=1,errors=0,ttl_rewrites=1"
    );
    assert_eq!(
        field(&stats, "rule5"),
        "tier=count,prefix=cnt:,hits=1,misses=1,writes=1,errors=0,ttl_rewrites=0"
    );
    // CONFIG RESETSTAT through strata zeroes strata's counters as well as Redis'.
    let _: () = query(&mut con, redis::cmd("CONFIG").arg("RESETSTAT")).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    for name in ["tier_op_hits", "tier_op_misses", "tier_op_writes", "tier_op_errors", "tier_op_ttl_clamps"] {
        assert_eq!(field(&stats, name), "0", "{name} after CONFIG RESETSTAT");
    }
    assert_eq!(field(&stats, "tier_op_latency_max_us"), "0");
    assert_eq!(field(&stats, "rule0"), "tier=op,prefix=op:,hits=0,misses=0,writes=0,errors=0,ttl_rewrites=0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_appends_the_strata_section_where_redis_would_show_everything() {
    let rig = Rig::start(TIERS).await;
    for url in [rig.strata.url(), format!("{}?protocol=resp3", rig.strata.url())] {
        let mut con = connect(&url).await;
        for sections in [&[][..], &["all"], &["everything"], &["default"], &["server", "strata"]] {
            let text = info(&mut con, sections).await;
            let server = text.find("# Server").unwrap_or_else(|| panic!("INFO {sections:?}: {text}"));
            let strata = text.find("# Strata").unwrap_or_else(|| panic!("INFO {sections:?}: {text}"));
            assert!(server < strata, "INFO {sections:?}: strata's section comes last");
            assert!(fields(&text).contains_key("tier_op_hits"), "INFO {sections:?}");
        }
        let server_only = info(&mut con, &["server"]).await;
        assert!(server_only.contains("# Server") && !server_only.contains("# Strata"), "{server_only}");
        let strata_only = info(&mut con, &["STRATA"]).await;
        assert!(strata_only.starts_with("# Strata") && !strata_only.contains("# Server"), "{strata_only}");
        let keyspace = info(&mut con, &["keyspace", "clients"]).await;
        assert!(!keyspace.contains("# Strata"), "{keyspace}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_tier_and_tiers_describe_the_policy() {
    use redis::Value;
    let rig = Rig::start(TIERS).await;
    let mut con = connect(&rig.strata.url()).await;
    let tier_of = |key: &str| redis::cmd("STRATA").arg("TIER").arg(key).clone();
    let text = |v: &Value| redis::from_redis_value_ref::<String>(v).expect("text");
    let int = |v: &Value| redis::from_redis_value_ref::<i64>(v).expect("integer");
    let op: HashMap<String, Value> = query(&mut con, &tier_of("op:1")).await;
    assert_eq!(text(&op["tier"]), "op");
    assert_eq!(text(&op["prefix"]), "op:");
    assert_eq!(int(&op["default_ttl_ms"]), DEFAULT);
    assert_eq!(int(&op["min_ttl_ms"]), MIN);
    assert_eq!(int(&op["max_ttl_ms"]), MAX);
    assert_eq!(int(&op["jitter_ms"]), 0);
    assert_eq!(int(&op["sliding"]), 0);
    assert_eq!(text(&op["persist"]), "deny");
    let cart: HashMap<String, Value> = query(&mut con, &tier_of("u9:cart")).await;
    assert_eq!(text(&cart["tier"]), "sess");
    assert_eq!(text(&cart["pattern"]), "*:cart");
    assert_eq!(int(&cart["sliding"]), 1);
    assert_eq!(text(&cart["persist"]), "max");
    let jit: HashMap<String, Value> = query(&mut con, &tier_of("jit:x")).await;
    assert_eq!(int(&jit["jitter_ms"]), 20_000);
    let count: HashMap<String, Value> = query(&mut con, &tier_of("cnt:x")).await;
    assert_eq!(count["default_ttl_ms"], Value::Nil);
    let none: HashMap<String, String> = query(&mut con, &tier_of("plain:x")).await;
    assert_eq!(none, HashMap::from([("tier".to_string(), "untiered".to_string())]));
    let all: Vec<HashMap<String, Value>> = query(&mut con, redis::cmd("STRATA").arg("TIERS")).await;
    let names: Vec<String> = all.iter().map(|t| text(&t["tier"])).collect();
    assert_eq!(names, ["op", "jit", "sess", "nomax", "count"]);
    let sess_prefixes: Vec<String> = redis::from_redis_value_ref(&all[2]["prefixes"]).expect("list");
    assert_eq!(sess_prefixes, ["sess:"]);
    let sess_patterns: Vec<String> = redis::from_redis_value_ref(&all[2]["patterns"]).expect("list");
    assert_eq!(sess_patterns, ["*:cart"]);
}

/// `name{labels} value` lines of a Prometheus text exposition whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics:\n{text}"))
}

async fn tier_traffic(via: &mut RawClient) {
    for command in [
        &["GET", "op:m"][..],
        &["SET", "op:m", "v"],
        &["GET", "op:m"],
        &["GET", "op:m"],
        &["HGET", "op:m", "f"],
        &["SET", "sess:m", "v", "EX", "1"],
    ] {
        via.command(command).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_info_and_health_endpoints_follow_redis() {
    let mut redis = RedisServer::start();
    let (strata, admin) = Strata::start_with_admin(&redis.url(), TIERS).await;
    let mut via = RawClient::connect(strata.addr).await;
    tier_traffic(&mut via).await;
    let mut con = connect(&strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for (tier, outcome, info_field) in [
        ("op", "hit", "tier_op_hits"),
        ("op", "miss", "tier_op_misses"),
        ("op", "write", "tier_op_writes"),
        ("op", "error", "tier_op_errors"),
        ("sess", "write", "tier_sess_writes"),
    ] {
        let value = metric(&text, "strata_tier_requests_total", &[("tier", tier), ("outcome", outcome)]);
        assert_eq!(value, field(&stats, info_field).parse::<f64>().unwrap(), "{tier} {outcome}");
    }
    assert_eq!(metric(&text, "strata_tier_requests_total", &[("tier", "op"), ("outcome", "hit")]), 2.0);
    assert_eq!(metric(&text, "strata_tier_ttl_rewrites_total", &[("tier", "op")]), 1.0);
    assert_eq!(metric(&text, "strata_tier_ttl_clamps_total", &[("tier", "sess")]), 1.0);
    assert_eq!(metric(&text, "strata_prefix_requests_total", &[("prefix", "op:"), ("outcome", "miss")]), 1.0);
    assert_eq!(metric(&text, "strata_upstream_up", &[]), 1.0);
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    redis.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while http_get(admin, "/readyz").await.0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "/readyz still 200 with Redis dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(admin, "/healthz").await.0, 200, "liveness does not depend on Redis");
    strata.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_monotonic_across_config_resetstat() {
    let redis = RedisServer::start();
    let (strata, admin) = Strata::start_with_admin(&redis.url(), TIERS).await;
    let mut via = RawClient::connect(strata.addr).await;
    tier_traffic(&mut via).await;
    let hits = |text: &str| metric(text, "strata_tier_requests_total", &[("tier", "op"), ("outcome", "hit")]);
    assert_eq!(hits(&http_get(admin, "/metrics").await.1), 2.0);
    assert_eq!(&via.command(&["CONFIG", "RESETSTAT"]).await[..], b"+OK\r\n");
    via.command(&["GET", "op:m"]).await;
    let mut con = connect(&strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!(field(&stats, "tier_op_hits"), "1");
    // INFO restarts from zero like Redis' own stats; Prometheus counters must never go
    // down, so /metrics keeps the lifetime total.
    assert_eq!(hits(&http_get(admin, "/metrics").await.1), 3.0, "/metrics counters are lifetime totals");
    strata.stop().await;
}

// ---------------------------------------------------------------------------------------
// Untiered keys, configs without tiers, atomicity under a crash

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tiers_everything_passes_through_untouched() {
    let rig = Rig::start("").await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let commands: &[&[&str]] = &[
        &["SET", "op:a", "v"],
        &["HSET", "sess:h", "f", "v"],
        &["LPUSH", "op:l", "a"],
        &["GET", "sess:h"],
        &["HGETALL", "sess:h"],
        &["SET", "op:p", "v", "EX", "1"],
        &["PERSIST", "op:p"],
        &["EXPIRE", "op:l", "5000000"],
        &["MULTI"],
        &["INCR", "op:n"],
        &["EXEC"],
    ];
    for command in commands {
        same(&mut via, &mut plain, command).await;
    }
    for key in ["op:a", "sess:h", "op:p", "op:n"] {
        assert_eq!(pttl(&mut direct, key).await, -1, "{key}");
    }
    assert!(pttl(&mut direct, "op:l").await > MAX, "no clamp without tiers");
    let mut con = connect(&rig.strata.url()).await;
    let none: HashMap<String, String> = query(&mut con, redis::cmd("STRATA").arg("TIER").arg("op:a")).await;
    assert_eq!(none["tier"], "untiered");
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!(field(&stats, "strata_tiers"), "");
}

/// The strata binary as a child process, SIGKILLed on drop.
struct StrataProcess(std::process::Child);

impl Drop for StrataProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends pipelined batches of tiered writes until the connection dies; returns replies read.
async fn hammer(addr: std::net::SocketAddr, task: usize, replies: Arc<AtomicU64>) -> u64 {
    use tokio::io::AsyncWriteExt;
    let mut c = RawClient::connect(addr).await;
    for round in 0.. {
        let mut batch = Vec::new();
        let mut frames = 0;
        for j in 0..20 {
            let id = format!("{task}:{round}:{j}");
            let writes: [&[&str]; 8] = [
                &["HSET", &format!("op:h:{id}"), "f", "v"],
                &["LPUSH", &format!("sess:l:{id}"), "a", "b"],
                &["SADD", &format!("jit:s:{id}"), "m"],
                &["INCR", &format!("op:n:{id}")],
                &["MSET", &format!("op:m:{id}:a"), "1", &format!("op:m:{id}:b"), "2"],
                &["SET", &format!("op:s:{id}"), "v"],
                &["ZADD", &format!("x{id}:cart"), "1", "m"],
                &["SET", &format!("plain:{id}"), "v"],
            ];
            writes.iter().for_each(|w| batch.extend(cmd(w)));
            frames += writes.len();
        }
        if c.stream.write_all(&batch).await.is_err() {
            return replies.load(Ordering::Relaxed);
        }
        for _ in 0..frames {
            match c.try_read_frame().await {
                Some(reply) if !reply.starts_with(b"-") => replies.fetch_add(1, Ordering::Relaxed),
                // EOF or strata's error for requests it could no longer forward.
                _ => return replies.load(Ordering::Relaxed),
            };
        }
    }
    unreachable!("the loop ends when strata dies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_strata_mid_load_never_leaves_a_tiered_key_without_ttl() {
    let redis = RedisServer::start();
    let file = tempfile::NamedTempFile::new().expect("temp config");
    std::fs::write(file.path(), TIERS).expect("write config");
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--config", file.path().to_str().expect("utf8 path")])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", &redis.url()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn strata");
    let mut strata = StrataProcess(child);
    wait_for_port(port);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut probe = RawClient::connect(addr).await;
    while !probe.command(&["PING"]).await.starts_with(b"+PONG") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replies = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..6).map(|t| tokio::spawn(hammer(addr, t, replies.clone()))).collect();
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while replies.load(Ordering::Relaxed) < 20_000 {
        assert!(tokio::time::Instant::now() < deadline, "load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    strata.0.kill().expect("SIGKILL strata");
    strata.0.wait().expect("reap strata");
    let at_kill = replies.load(Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(READ_TIMEOUT, task).await.expect("client sees the kill").expect("client task");
    }
    // Let Redis finish whatever strata's sockets had delivered before they closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut con = connect(&redis.url()).await;
    let (mut cursor, mut tiered, mut untiered) = (0u64, 0usize, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) =
            query(&mut con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000)).await;
        let mut pipe = redis::pipe();
        keys.iter().for_each(|k| {
            pipe.cmd("PTTL").arg(k);
        });
        let ttls: Vec<i64> = tokio::time::timeout(READ_TIMEOUT, pipe.query_async(&mut con))
            .await
            .expect("PTTLs in time")
            .expect("PTTL");
        for (key, ttl) in keys.iter().zip(ttls) {
            if key.starts_with("plain:") {
                untiered += 1;
                assert_eq!(ttl, -1, "{key} is untiered");
            } else {
                tiered += 1;
                assert!(ttl > 0, "{key} was written through strata without a TTL (PTTL {ttl})");
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    eprintln!("{at_kill} replies before SIGKILL; {tiered} tiered and {untiered} untiered keys checked");
    assert!(tiered > 10_000, "too few keys written for the kill to land mid-stream");
}
