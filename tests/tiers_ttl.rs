//! Cache-tier TTL policy end to end: defaults on SET and every other write, explicit TTLs
//! kept or clamped, Redis' own errors, jitter, sliding reads, the PERSIST policy, the longest
//! prefix picking the tier, and configs without tiers passing everything through untouched.
//! Replies are compared byte for byte with a plain redis-server.

mod support;

#[path = "support/tier_rig.rs"]
mod tier_rig;

use std::collections::{HashMap, HashSet};

use support::cmd;
use tier_rig::{
    DEFAULT, MAX, MIN, NOMAX_DEFAULT, Rig, SESS_DEFAULT, SESS_MAX, SLACK, TIERS, assert_ttl, connect, field,
    fields, info, now_ms, pttl, query, same, same_batch, same_bytes, setup, show,
};

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
// TTL arguments and tier choice

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

// ---------------------------------------------------------------------------------------
// Untiered keys, configs without tiers

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arity_on_tiered_keys_gets_redis_own_error_and_the_connection_lives() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _) = rig.clients().await;
    for words in [
        &["SETEX", "op:arity"][..],
        &["PSETEX", "op:arity"],
        &["EXPIRE", "op:arity"],
        &["PEXPIREAT", "op:arity"],
        &["RESTORE", "op:arity"],
        &["SET", "op:arity"],
        &["GETEX"],
        &["PERSIST"],
    ] {
        same(&mut via, &mut plain, words).await;
    }
    same(&mut via, &mut plain, &["SET", "op:arity", "still-here"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_refused_inside_multi_aborts_the_transaction_like_redis_would() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _, mut direct) = rig.clients().await;
    assert_eq!(show(&via.command(&["MULTI"]).await), "+OK\r\n");
    assert_eq!(show(&via.command(&["SET", "op:tx:a", "1"]).await), "+QUEUED\r\n");
    let refused = via.command(&["PERSIST", "op:tx:a"]).await;
    assert!(show(&refused).starts_with("-ERR strata: PERSIST refused"), "{}", show(&refused));
    let exec = via.command(&["EXEC"]).await;
    assert!(show(&exec).starts_with("-EXECABORT"), "{}", show(&exec));
    assert_eq!(show(&direct.command(&["EXISTS", "op:tx:a"]).await), ":0\r\n", "nothing of it ran");
}
