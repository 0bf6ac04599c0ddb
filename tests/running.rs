//! The strata binary as an operator runs it: logs on stderr through `tracing` (text or
//! JSON, level from `RUST_LOG`), breaker transitions each logged once, SIGTERM's bound
//! `server.shutdown_grace_ms`, and the shipped configuration (`strata.example.toml`,
//! `docker/`).

mod support;

use std::time::{Duration, Instant};

use support::binary::Binary;
use support::{RawClient, RedisServer, wait_blocked, wait_until};

/// `text` without ANSI colour sequences (strata colours its text log even into a file).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of `text` that contain `needle`.
fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_stderr_as_text_or_json_at_the_rust_log_level() {
    let redis = RedisServer::start();

    // Text by default, level info when RUST_LOG is unset.
    let text = Binary::start_logged(&redis.url(), "", None).await;
    wait_until("the text log shows the upstream connection", || async {
        count(&text.stderr(), "upstream connected") > 0
    })
    .await;
    let log = plain(&text.stderr());
    let line = log.lines().find(|l| l.contains("upstream connected")).expect("a line");
    assert!(line.contains(" INFO ") && !line.starts_with('{'), "a text line at INFO: {line}");
    assert!(text.stdout().is_empty(), "nothing on stdout: {}", text.stdout());
    drop(text);

    // JSON with [log] format = "json": every line one object.
    let json = Binary::start_logged(&redis.url(), "[log]\nformat = \"json\"\n", None).await;
    wait_until("the JSON log shows the upstream connection", || async {
        count(&json.stderr(), "upstream connected") > 0
    })
    .await;
    let log = json.stderr();
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
    }
    let line = log.lines().find(|l| l.contains("upstream connected")).expect("a line");
    assert!(
        line.contains(r#""level":"INFO""#) && line.contains(r#""message":"upstream connected""#),
        "{line}"
    );
    assert!(json.stdout().is_empty(), "nothing on stdout: {}", json.stdout());
    drop(json);

    // RUST_LOG=warn: the INFO lines are gone.
    let quiet = Binary::start_logged(&redis.url(), "", Some("warn")).await;
    let mut c = RawClient::connect(quiet.addr).await;
    assert_eq!(c.command(&["PING"]).await.as_ref(), b"+PONG\r\n");
    let log = plain(&quiet.stderr());
    assert_eq!(count(&log, " INFO "), 0, "RUST_LOG=warn hides INFO:\n{log}");
    assert_eq!(count(&log, "upstream connected"), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_at_most_shutdown_grace_ms_for_in_flight_replies() {
    let redis = RedisServer::start();
    let mut strata = Binary::start(&redis.url(), "[server]\nshutdown_grace_ms = 700\n").await;
    // A reply that never comes: BLPOP with no timeout on a list nobody pushes to.
    let mut blocked = RawClient::connect(strata.addr).await;
    blocked.send(&support::cmd(&["BLPOP", "never", "0"])).await;
    wait_blocked(redis.port, 1).await;
    let started = Instant::now();
    strata.signal("TERM");
    let status = strata.wait_exit(Duration::from_secs(10)).expect("strata exits after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    eprintln!("exited {status:?} {took:?} after SIGTERM with a client blocked");
    assert!(took >= Duration::from_millis(600), "it waited for the in-flight reply, exited after {took:?}");
    assert!(took < Duration::from_millis(700 + 2_000), "no longer than the grace (and exit): {took:?}");
    assert!(blocked.is_closed().await, "the blocked client's connection is closed");
}

/// Runs the Redis breaker through closed → open → (half-open → open)… → half-open → closed
/// with many clients failing meanwhile; returns its `circuit` log lines.
async fn breaker_log_through_an_outage() -> Vec<String> {
    let mut redis = RedisServer::start();
    let toml = "[upstream]\nreconnect_min_ms = 20\nreconnect_max_ms = 100\nconnect_timeout_ms = 300\n\
                [breaker]\nfailure_threshold = 2\ncooldown_ms = 200\n";
    let strata = Binary::start_logged(&redis.url(), toml, None).await;
    let addr = strata.addr;
    redis.kill();
    // Many clients fail at once while the breaker opens and stays open.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                for j in 0..20 {
                    let reply = c.command(&["SET", &format!("k{i}:{j}"), "v"]).await;
                    assert!(reply.starts_with(b"-"), "Redis is gone: {:?}", String::from_utf8_lossy(&reply));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    wait_until("the open breaker probed twice", || async {
        count(&plain(&strata.stderr()), "circuit half-open") >= 2
    })
    .await;
    redis.restart();
    wait_until("writes succeed again", || async {
        RawClient::connect(addr).await.command(&["SET", "after", "v"]).await.as_ref() == b"+OK\r\n"
    })
    .await;
    // Successes after the close (each a success for the breaker).
    let mut c = RawClient::connect(addr).await;
    for _ in 0..50 {
        c.command(&["GET", "after"]).await;
    }
    let log = plain(&strata.stderr());
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("circuit") && l.contains(r#"breaker="redis""#))
        .map(String::from)
        .collect();
    eprintln!("{}", lines.join("\n"));
    lines
}

/// No transition is logged more than once, however many requests fail or succeed around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_transitions_are_logged_once_not_per_request() {
    let lines = breaker_log_through_an_outage().await;
    let of = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let (opens, probes, closes) = (of("circuit open"), of("circuit half-open"), of("circuit closed"));
    assert!(lines.first().is_some_and(|l| l.contains("circuit open")), "closed → open first: {lines:#?}");
    assert!(
        lines.last().is_some_and(|l| l.contains("circuit closed")),
        "half-open → closed last: {lines:#?}"
    );
    assert!(probes >= 2, "one line per probe: {lines:#?}");
    // 160 failed requests, two failures to trip: still one line per transition into open.
    assert!((1..=probes).contains(&opens), "{opens} open lines for {probes} probes: {lines:#?}");
    assert_eq!(closes, 1, "one close, however many requests succeed after it: {lines:#?}");
}

/// README: "Each transition is logged once" -- also a failed probe's half-open → open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_logs_the_return_to_open() {
    let lines = breaker_log_through_an_outage().await;
    let states: Vec<&str> = lines
        .iter()
        .map(|l| match () {
            _ if l.contains("circuit open") => "open",
            _ if l.contains("circuit half-open") => "half-open",
            _ => "closed",
        })
        .collect();
    for pair in states.windows(2) {
        assert_ne!(pair[0], pair[1], "a transition between two {} lines was not logged: {states:?}", pair[0]);
    }
}
