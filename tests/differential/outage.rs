//! An outage in the middle of seeded traffic: the Redis behind strata is stopped
//! (SIGSTOP: TCP still connects, nothing answers) while clients pipeline on the shared
//! connections. Every reply before a client's first upstream error is Redis' own (the
//! same script straight at a second Redis), every request is answered (errors, never a
//! hang or a close), the breaker opens and the clients finish fast; after SIGCONT a
//! normal round compares equal again. Scripts use cheap data commands only (INCR, GET,
//! RPUSH, PING): a connection of a client's own has no command timeout, by design, and
//! waits for Redis as a direct client would.

use std::time::{Duration, Instant};

use fastrand::Rng;

use crate::script::{Gen, Script};
use crate::support::{RawClient, RedisServer, Strata};
use crate::{Targets, client, direct_addr, env_u64, round};

const CONFIG: &str = "[upstream]\ncommand_timeout_ms = 300\nconnect_timeout_ms = 200\n\
    reconnect_min_ms = 20\nreconnect_max_ms = 200\n[breaker]\ncooldown_ms = 300\n";

/// What strata answers for a request Redis did not: an upstream error of its own.
fn is_upstream_error(reply: &[u8]) -> bool {
    reply.starts_with(b"-ERR upstream") || reply.starts_with(b"-TRYAGAIN strata: upstream")
}

fn outage_scripts(seed: u64) -> Vec<Script> {
    let mut rng = Rng::with_seed(seed);
    (0..4)
        .map(|i| {
            let mut g = Gen::new(rng.u64(..), format!("o{seed}c{i}:"));
            let steps = (0..rng.usize(10..=30)).map(|_| g.deep_step(rng.usize(20..=1500))).collect();
            Script {
                name: format!("outage client {i} of seed {seed}"),
                steps,
                dbs: [0].into(),
                keys: g.keys(),
                dropped: false,
            }
        })
        .collect()
}

async fn breaker_opens(strata: &Strata) -> u64 {
    let mut c = RawClient::connect(strata.addr).await;
    let info = c.command(&["INFO", "strata"]).await;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("strata_breaker_redis_opens:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("strata_breaker_redis_opens in INFO strata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_traffic_fails_fast_then_strata_answers_like_redis_again() {
    let seed = env_u64("STRATA_DIFF_SEED").unwrap_or_else(|| fastrand::u64(..1_000_000));
    let (behind, direct) = (RedisServer::start(), RedisServer::start());
    let strata = Strata::start(&behind.url(), CONFIG).await;
    let scripts = outage_scripts(seed);
    let stall = Duration::from_secs(5);
    let mut clients = Vec::new();
    for script in &scripts {
        let (a, b) = (script.clone(), script.clone());
        let addr = strata.addr;
        let direct_port = direct.port;
        clients.push(tokio::spawn(async move { client::run(addr, &a, stall).await }));
        clients.push(tokio::spawn(async move { client::run(direct_addr(direct_port), &b, stall).await }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    behind.signal("STOP");
    let stopped = Instant::now();
    // A request during the outage whatever the seed: short scripts can be done by now
    // (seed 714322's were), and then nothing would ever meet the stopped Redis.
    let mut probe = RawClient::connect(strata.addr).await;
    let probed = tokio::time::timeout(stall, probe.command(&["INCR", "outage-probe"])).await;
    let probed = probed.expect("a request during the outage is answered");
    assert!(is_upstream_error(&probed), "seed {seed}: {}", String::from_utf8_lossy(&probed));
    let mut problems = Vec::new();
    let mut pairs = Vec::new();
    for task in clients {
        pairs.push(task.await.expect("client task"));
    }
    let took = stopped.elapsed();
    for (script, pair) in scripts.iter().zip(pairs.chunks(2)) {
        let (through, straight) = (&pair[0], &pair[1]);
        if let Some(why) = &through.stopped {
            problems.push(format!("{}: stopped during the outage: {why}", script.name));
        }
        let first_error =
            through.replies.iter().position(|r| is_upstream_error(r)).unwrap_or(through.replies.len());
        if through.replies[..first_error] != straight.replies[..first_error.min(straight.replies.len())] {
            problems.push(format!("{}: a reply before the outage differs from Redis'", script.name));
        }
    }
    // Opens within command_timeout + 2 × connect_timeout; then everything fails fast, so
    // the clients' thousands of requests are all answered within a few seconds.
    // The clients may be done before it opens (when their scripts ended early): wait.
    let mut opens = breaker_opens(&strata).await;
    while opens == 0 && stopped.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        opens = breaker_opens(&strata).await;
    }
    behind.signal("CONT");
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
    assert!(opens >= 1, "seed {seed}: the breaker never opened while Redis was stopped");
    assert!(took < Duration::from_secs(4), "seed {seed}: the outage took {took:?} to answer");
    // Back: a normal round compares equal.
    let started = Instant::now();
    loop {
        let mut c = RawClient::connect(strata.addr).await;
        if &c.command(&["SET", "back", "1"]).await[..] == b"+OK\r\n" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "strata not back after SIGCONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let targets = Targets { strata: strata.addr, behind: behind.port, direct: direct.port, stall };
    let problems = round(seed, targets).await;
    assert!(problems.is_empty(), "seed {seed}, after the outage:\n{}", problems.join("\n"));
    strata.stop().await;
}
