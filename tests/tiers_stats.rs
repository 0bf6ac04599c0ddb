//! Cache-tier accounting and introspection: per-tier and per-rule counters in `INFO strata`,
//! where INFO places strata's section, `STRATA TIER`/`TIERS`, `/metrics` against INFO and
//! the health endpoints, CONFIG RESETSTAT, and atomicity of write+TTL when the strata binary
//! is SIGKILLed mid-load.

mod support;

#[path = "support/tier_rig.rs"]
mod tier_rig;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::{READ_TIMEOUT, RawClient, RedisServer, Strata, cmd, free_port, http_get, wait_for_port};
use tier_rig::{DEFAULT, MAX, MIN, Rig, TIERS, connect, field, fields, info, pttl, query};

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
// Atomicity under a crash

/// The strata binary as a child process, SIGKILLed on drop.
struct StrataProcess(std::process::Child);

impl Drop for StrataProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the strata binary on a free port and waits until it answers PING through Redis.
/// Another test may take the port between choosing and binding it (strata then exits, or
/// the port answers as something else): start again on a fresh port.
async fn spawn_strata(config: &std::path::Path, upstream: &str) -> (StrataProcess, std::net::SocketAddr) {
    for _ in 0..5 {
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["--config", config.to_str().expect("utf8 path")])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", upstream])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn strata");
        let mut strata = StrataProcess(child);
        wait_for_port(port);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut probe = RawClient::connect(addr).await;
        // Only strata answers STRATA TIERS with an array; whatever else holds the port does not.
        probe.send(&support::cmd(&["STRATA", "TIERS"])).await;
        if !probe.try_read_frame().await.is_some_and(|reply| reply.starts_with(b"*")) {
            continue;
        }
        for _ in 0..200 {
            if strata.0.try_wait().expect("strata status").is_some() {
                break;
            }
            probe.send(&support::cmd(&["PING"])).await;
            match probe.try_read_frame().await {
                Some(reply) if reply.starts_with(b"+PONG") => return (strata, addr),
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                None => break,
            }
        }
    }
    panic!("strata did not start on any of five ports");
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
    let (mut strata, addr) = spawn_strata(file.path(), &redis.url()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_rewrites_of_a_multi_tier_write_are_booked_on_each_keys_tier() {
    let rig = Rig::start(TIERS).await;
    let mut via = RawClient::connect(rig.strata.addr).await;
    assert_eq!(
        &via.command(&["MSET", "op:mt:a", "1", "jit:mt:b", "2", "jit:mt:c", "3"]).await[..],
        b"+OK\r\n"
    );
    let mut con = connect(&rig.strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!(field(&stats, "tier_op_ttl_rewrites"), "1");
    assert_eq!(field(&stats, "tier_jit_ttl_rewrites"), "2");
}
