//! Faults, limits and lifecycle: Redis killed mid-pipeline, down at start-up, hung
//! (SIGSTOP); SIGTERM and SIGINT on the real binary; `strata check-config`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{RawClient, RedisServer, Strata, cmd, free_port, wait_for_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_pipeline_gives_errors_then_recovers() {
    let mut redis = RedisServer::start();
    let strata =
        Strata::start(&redis.url(), "[upstream]\nreconnect_min_ms = 10\nreconnect_max_ms = 100\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    // Keep Redis busy so requests are in flight when it dies.
    let mut batch = Vec::new();
    for _ in 0..2_000 {
        batch.extend(cmd(&["EVAL", "local i = 0 while i < 20000 do i = i + 1 end return i", "0"]));
    }
    c.send(&batch).await;
    support::wait_until("Redis runs the scripts", || async {
        support::redis_info_field(redis.port, "commandstats", "cmdstat_eval").await.is_some()
    })
    .await;
    redis.kill();
    let mut answered = 0;
    let mut errors = 0;
    for _ in 0..2_000 {
        let reply = c.read_frame().await;
        if reply.starts_with(b":20000") {
            answered += 1;
            assert_eq!(errors, 0, "a success after an error would mean a reply out of order");
        } else {
            assert!(reply.starts_with(b"-ERR upstream"), "{reply:?}");
            errors += 1;
        }
    }
    assert!(errors > 0, "killing Redis must fail the requests in flight");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = c.command(&["PING"]).await;
        if &reply[..] == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "strata did not reconnect: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("answered {answered} before the kill, {errors} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_and_serves_once_it_comes() {
    let port = free_port();
    let upstream = format!("redis://127.0.0.1:{port}");
    let strata = Strata::start(&upstream, "[upstream]\nreconnect_min_ms = 10\nreconnect_max_ms = 50\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    let started = Instant::now();
    let reply = c.command(&["GET", "k"]).await;
    // Before the breaker opens: no connection; after: the circuit is open. Both fail fast.
    let fast_failure = reply.starts_with(b"-ERR upstream unavailable")
        || reply.starts_with(b"-TRYAGAIN strata: upstream unavailable");
    assert!(fast_failure, "{reply:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "fails fast, no hang");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child);
    wait_for_port(port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while &c.command(&["PING"]).await[..] != b"+PONG\r\n" {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(&c.command(&["SET", "k", "v"]).await[..], b"+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_times_out_instead_of_hanging_clients() {
    let redis = RedisServer::start();
    let strata =
        Strata::start(&redis.url(), "[upstream]\ncommand_timeout_ms = 300\nconnect_timeout_ms = 200\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.command(&["PING"]).await[..], b"+PONG\r\n");
    redis.signal("STOP");
    let started = Instant::now();
    let reply = c.command(&["GET", "k"]).await;
    assert!(reply.starts_with(b"-ERR upstream"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    redis.signal("CONT");
}

/// Waits until strata serves `c` again after an outage (the breaker may be open for a while).
async fn served_again(c: &mut RawClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while &c.command(&["PING"]).await[..] != b"+PONG\r\n" {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_redis_dies_are_never_sent_again() {
    // Every write reaches the AOF before its reply: what Redis ran survives the kill.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let strata =
        Strata::start(&redis.url(), "[upstream]\nreconnect_min_ms = 10\nreconnect_max_ms = 100\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    let script =
        "local n = redis.call('INCR', KEYS[1]) local i = 0 while i < 20000 do i = i + 1 end return n";
    let mut batch = Vec::new();
    for i in 0..1_000 {
        batch.extend(cmd(&["EVAL", script, "1", &format!("k:{i}")]));
    }
    c.send(&batch).await;
    support::wait_until("Redis runs the scripts", || async {
        support::redis_info_field(redis.port, "commandstats", "cmdstat_eval").await.is_some()
    })
    .await;
    redis.kill();
    let mut answered = Vec::new();
    for i in 0..1_000 {
        let reply = c.read_frame().await;
        match &reply[..] {
            b":1\r\n" => answered.push(i),
            other => assert!(other.starts_with(b"-ERR upstream"), "{}", String::from_utf8_lossy(other)),
        }
    }
    assert!(answered.len() < 1_000, "killing Redis must fail the requests in flight");
    redis.restart();
    served_again(&mut c).await;
    // Traffic on every shared connection, then each counter: run once or never.
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut o = RawClient::connect(strata.addr).await;
        served_again(&mut o).await;
        others.push(o);
    }
    let mut direct = RawClient::port(redis.port).await;
    let mut ran = 0;
    for i in 0..1_000 {
        let value = direct.command(&["GET", &format!("k:{i}")]).await;
        match &value[..] {
            b"$1\r\n1\r\n" => ran += 1,
            b"$-1\r\n" => assert!(!answered.contains(&i), "k:{i} was answered but is gone"),
            other => panic!("k:{i} ran more than once: {}", String::from_utf8_lossy(other)),
        }
    }
    assert!(ran >= answered.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_timed_out_still_runs_once_a_stalled_redis_resumes() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[upstream]\ncommand_timeout_ms = 300\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.command(&["PING"]).await[..], b"+PONG\r\n");
    redis.signal("STOP");
    assert_eq!(&c.command(&["INCR", "k"]).await[..], b"-ERR upstream connection lost\r\n");
    redis.signal("CONT");
    // The caveat: Redis had the INCR in its socket buffer, and runs it once resumed.
    let mut direct = RawClient::port(redis.port).await;
    support::wait_until("Redis ran the INCR that timed out", || async {
        RawClient::port(redis.port).await.command(&["GET", "k"]).await[..] == b"$1\r\n1\r\n"[..]
    })
    .await;
    served_again(&mut c).await;
    // Once, not again after strata reconnected.
    assert_eq!(&c.command(&["GET", "k"]).await[..], b"$1\r\n1\r\n");
    let incr = support::redis_info_field(redis.port, "commandstats", "cmdstat_incr").await;
    assert!(incr.as_deref().is_some_and(|s| s.starts_with("calls=1,")), "{incr:?}");
    assert_eq!(&direct.command(&["GET", "k"]).await[..], b"$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_with_requests_in_flight_does_not_disturb_others() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[upstream]\nconnections = 1\n").await;
    let mut other = RawClient::connect(strata.addr).await;
    for _ in 0..20 {
        let mut c = RawClient::connect(strata.addr).await;
        let mut batch = Vec::new();
        for _ in 0..500 {
            batch.extend(cmd(&["INCR", "n"]));
        }
        c.send(&batch).await;
        drop(c);
        let reply = other.command(&["ECHO", "still-mine"]).await;
        assert_eq!(&reply[..], b"$10\r\nstill-mine\r\n");
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strata_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn spawn_binary(redis: &RedisServer, extra: &[&str]) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = strata_bin()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--upstream", &redis.url()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    (KillOnDrop(child), port)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_replies_and_exits_zero() {
    let redis = RedisServer::start();
    let (mut strata, port) = spawn_binary(&redis, &[]);
    let mut c = RawClient::port(port).await;
    c.send(&cmd(&["BLPOP", "never", "0.5"])).await;
    support::wait_blocked(redis.port, 1).await;
    Command::new("kill").args(["-TERM", &strata.0.id().to_string()]).status().unwrap();
    assert_eq!(&c.read_frame().await[..], b"*-1\r\n", "the in-flight reply still arrives");
    let status = wait_exit(&mut strata.0, Duration::from_secs(5)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "no longer accepting");
}

/// SIGTERM: what strata has not read yet of a client's pipeline is never run, and the
/// client's connection is closed after the replies to what it had read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_a_pipelines_unread_rest_unexecuted() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    // Depth 1: while BLPOP waits, strata reads nothing more from this client.
    std::fs::write(&file, "[limits]\nmax_pipeline_depth = 1\n").unwrap();
    let (mut strata, port) = spawn_binary(&redis, &["--config", file.to_str().unwrap()]);
    let mut c = RawClient::port(port).await;
    c.send(&cmd(&["BLPOP", "never", "0.5"])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(&cmd(&["SET", "unread", "1"])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Command::new("kill").args(["-TERM", &strata.0.id().to_string()]).status().unwrap();
    assert_eq!(&c.read_frame().await[..], b"*-1\r\n", "the reply to what was read");
    assert!(c.is_closed().await, "then the connection is closed");
    let status = wait_exit(&mut strata.0, Duration::from_secs(5)).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let mut direct = RawClient::port(redis.port).await;
    assert_eq!(&direct.command(&["EXISTS", "unread"]).await[..], b":0\r\n", "the unread SET never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_at_once() {
    let redis = RedisServer::start();
    let (mut strata, port) = spawn_binary(&redis, &[]);
    let mut c = RawClient::port(port).await;
    c.send(&cmd(&["BLPOP", "never", "5"])).await;
    support::wait_blocked(redis.port, 1).await;
    Command::new("kill").args(["-INT", &strata.0.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut strata.0, Duration::from_secs(1)).is_some(), "exits without waiting for BLPOP");
}

#[test]
fn check_config_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nmax_clients = 0\nlisten = \"nope\"\n[upstream]\nurl = \"http://x\"\nbogus = 1\n",
    )
    .unwrap();
    let out = strata_bin().args(["check-config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = String::from_utf8_lossy(&out.stdout);
    for field in ["server.max_clients", "server.listen", "upstream.url", "upstream.bogus"] {
        assert!(text.contains(field), "{field} missing from:\n{text}");
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/strata.example.toml");
    let out = strata_bin().args(["check-config", example]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // Running with a bad config refuses to start, also with exit 64.
    let out = strata_bin().args(["--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn flags_override_env_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1111\"\n").unwrap();
    let summary = |env: Option<&str>, flag: Option<&str>| {
        let mut command = strata_bin();
        command.arg("check-config").arg(&file).env_remove("STRATA_LISTEN");
        if let Some(env) = env {
            command.env("STRATA_LISTEN", env);
        }
        if let Some(flag) = flag {
            command.args(["--listen", flag]);
        }
        String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned()
    };
    assert!(summary(None, None).contains("listen 127.0.0.1:1111"));
    assert!(summary(Some("127.0.0.1:2222"), None).contains("listen 127.0.0.1:2222"));
    assert!(summary(Some("127.0.0.1:2222"), Some("127.0.0.1:3333")).contains("listen 127.0.0.1:3333"));
    let help = strata_bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in ["--config", "--listen", "--upstream", "--admin", "check-config"] {
        assert!(help.contains(option), "--help explains {option}");
    }
}

/// A request behind a slow one on a shared connection (held there, or written right
/// behind it) gets its whole command timeout from when Redis could start on it: counted
/// from its arrival the second sleep would time out at ~550 ms, before Redis (busy until
/// ~600 ms) could answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_gets_the_full_command_timeout() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let strata = Strata::start(&redis.url(), "[upstream]\nconnections = 1\ncommand_timeout_ms = 500\n").await;
    let mut first = RawClient::connect(strata.addr).await;
    let mut second = RawClient::connect(strata.addr).await;
    assert_eq!(&second.command(&["PING"]).await[..], b"+PONG\r\n");
    first.send(&cmd(&["DEBUG", "SLEEP", "0.3"])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    second.send(&cmd(&["DEBUG", "SLEEP", "0.3"])).await;
    assert_eq!(&first.read_frame().await[..], b"+OK\r\n");
    assert_eq!(&second.read_frame().await[..], b"+OK\r\n");
    assert_eq!(&second.command(&["PING"]).await[..], b"+PONG\r\n");
}
