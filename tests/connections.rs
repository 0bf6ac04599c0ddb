//! Connection state through strata: transactions, pub/sub, blocking commands, SELECT,
//! per-client CLIENT state, RESET and QUIT, limits. Uses the redis crate as a real client.

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use support::{RawClient, RedisServer, Strata, cmd};

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_client_works_in_resp2_and_resp3() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    for url in [strata.url(), format!("{}?protocol=resp3", strata.url())] {
        let mut con = connect(&url).await;
        let _: () = con.set("k", "v").await.unwrap();
        let got: String = con.get("k").await.unwrap();
        assert_eq!(got, "v");
        let _: () = con.hset_multiple("h", &[("a", "1"), ("b", "2")]).await.unwrap();
        let all: std::collections::HashMap<String, String> = con.hgetall("h").await.unwrap();
        assert_eq!(all.len(), 2);
        let _: () = con.del(&["k", "h"]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_and_watch_conflict() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut a = RawClient::connect(strata.addr).await;
    let mut b = RawClient::connect(strata.addr).await;
    // A transaction pipelined in one write, as redis-py sends it.
    let mut tx = cmd(&["MULTI"]);
    tx.extend(cmd(&["SET", "t", "1"]));
    tx.extend(cmd(&["INCR", "t"]));
    tx.extend(cmd(&["EXEC"]));
    tx.extend(cmd(&["GET", "t"]));
    a.send(&tx).await;
    for want in [&b"+OK\r\n"[..], b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n+OK\r\n:2\r\n", b"$1\r\n2\r\n"] {
        assert_eq!(&a.read_frame().await[..], want);
    }
    // WATCH, a concurrent write from another client, then EXEC aborts with a null array.
    assert_eq!(&a.command(&["WATCH", "t"]).await[..], b"+OK\r\n");
    assert_eq!(&b.command(&["SET", "t", "changed"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["SET", "t", "mine"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&a.command(&["EXEC"]).await[..], b"*-1\r\n");
    assert_eq!(&b.command(&["GET", "t"]).await[..], b"$7\r\nchanged\r\n");
    // DISCARD ends the transaction; commands after it run at once.
    a.command(&["MULTI"]).await;
    a.command(&["SET", "t", "never"]).await;
    assert_eq!(&a.command(&["DISCARD"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["GET", "t"]).await[..], b"$7\r\nchanged\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_across_two_clients_in_resp2_and_resp3() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut sub = RawClient::connect(strata.addr).await;
    let mut pattern = RawClient::connect(strata.addr).await;
    let mut publisher = RawClient::connect(strata.addr).await;
    assert_eq!(
        &sub.command(&["SUBSCRIBE", "news"]).await[..],
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    pattern.command(&["HELLO", "3"]).await;
    let subscribed = pattern.command(&["PSUBSCRIBE", "ne*"]).await;
    assert!(subscribed.starts_with(b">3\r\n"), "RESP3 push: {subscribed:?}");
    assert_eq!(&publisher.command(&["PUBLISH", "news", "hi"]).await[..], b":2\r\n");
    assert_eq!(&sub.read_frame().await[..], b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
    let pushed = pattern.read_frame().await;
    assert!(pushed.starts_with(b">4\r\n$8\r\npmessage\r\n"), "{pushed:?}");
    // A RESP3 subscriber may still run commands; its reply arrives in order with pushes.
    assert_eq!(&pattern.command(&["PING"]).await[..], b"+PONG\r\n");
    assert!(sub.command(&["UNSUBSCRIBE"]).await.starts_with(b"*3\r\n$11\r\nunsubscribe"));
    assert_eq!(&sub.command(&["PING"]).await[..], b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blpop_wakes_up_and_times_out_without_stalling_others() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[upstream]\nconnections = 1\n").await;
    let mut waiter = RawClient::connect(strata.addr).await;
    let mut other = RawClient::connect(strata.addr).await;
    waiter.send(&cmd(&["BLPOP", "jobs", "5"])).await;
    support::wait_blocked(redis.port, 1).await;
    // The shared connection is not blocked by the waiting BLPOP.
    let started = Instant::now();
    assert_eq!(&other.command(&["SET", "x", "1"]).await[..], b"+OK\r\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(&other.command(&["RPUSH", "jobs", "j1"]).await[..], b":1\r\n");
    assert_eq!(&waiter.read_frame().await[..], b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n");
    let started = Instant::now();
    assert_eq!(&waiter.command(&["BLPOP", "jobs", "0.2"]).await[..], b"*-1\r\n");
    assert!(started.elapsed() >= Duration::from_millis(190));
    // After the blocking command the client is back on shared connections, in order.
    assert_eq!(&waiter.command(&["GET", "x"]).await[..], b"$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_keeps_the_client_on_its_own_database() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut a = RawClient::connect(strata.addr).await;
    let mut b = RawClient::connect(strata.addr).await;
    assert_eq!(&a.command(&["SELECT", "3"]).await[..], b"+OK\r\n");
    a.command(&["SET", "only-in-3", "x"]).await;
    assert_eq!(&b.command(&["EXISTS", "only-in-3"]).await[..], b":0\r\n");
    let mut direct = RawClient::port(redis.port).await;
    direct.command(&["SELECT", "3"]).await;
    assert_eq!(&direct.command(&["EXISTS", "only-in-3"]).await[..], b":1\r\n");
    // RESET returns to database 0 on shared connections.
    assert_eq!(&a.command(&["RESET"]).await[..], b"+RESET\r\n");
    assert_eq!(&a.command(&["EXISTS", "only-in-3"]).await[..], b":0\r\n");
    assert!(a.command(&["SELECT", "99999"]).await.starts_with(b"-ERR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_state_is_per_client() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut a = RawClient::connect(strata.addr).await;
    let mut b = RawClient::connect(strata.addr).await;
    assert_eq!(&a.command(&["CLIENT", "SETNAME", "alpha"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["CLIENT", "GETNAME"]).await[..], b"$5\r\nalpha\r\n");
    assert_eq!(&b.command(&["CLIENT", "GETNAME"]).await[..], b"$-1\r\n");
    assert!(a.command(&["CLIENT", "SETNAME", "has space"]).await.starts_with(b"-ERR"));
    assert!(a.command(&["CLIENT", "SETNAME"]).await.starts_with(b"-ERR wrong number of arguments"));
    let (ida, idb) = (a.command(&["CLIENT", "ID"]).await, b.command(&["CLIENT", "ID"]).await);
    assert_ne!(ida, idb);
    assert_eq!(&a.command(&["CLIENT", "NO-EVICT", "on"]).await[..], b"+OK\r\n");
    // The shared upstream connection's own name never changed.
    let mut direct = RawClient::port(redis.port).await;
    let list = direct.command(&["CLIENT", "LIST"]).await;
    assert!(!String::from_utf8_lossy(&list).contains("name=alpha"));
    // QUIT answers +OK and closes.
    assert_eq!(&a.command(&["QUIT"]).await[..], b"+OK\r\n");
    assert!(a.is_closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_streams_commands() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut monitor = RawClient::connect(strata.addr).await;
    assert_eq!(&monitor.command(&["MONITOR"]).await[..], b"+OK\r\n");
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["SET", "watched", "1"]).await;
    // MONITOR shows every connection's commands, strata's own included (the handshake of
    // the spare connection that replaces the one MONITOR took); find the client's SET.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let line = monitor.read_frame().await;
        if String::from_utf8_lossy(&line).contains("\"watched\"") {
            return;
        }
        seen.push(line);
    }
    panic!("the SET never showed up in MONITOR: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limit_and_idle_timeout() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[server]\nmax_clients = 2\nidle_timeout_ms = 300\n").await;
    tokio::time::sleep(Duration::from_millis(400)).await; // let readiness-probe clients go idle and close
    let mut a = RawClient::connect(strata.addr).await;
    let mut b = RawClient::connect(strata.addr).await;
    a.command(&["PING"]).await;
    b.command(&["PING"]).await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.read_frame().await[..], b"-ERR max number of clients reached\r\n");
    // Idle clients are closed after the timeout, freeing their slots.
    assert!(a.is_closed().await);
    let mut d = RawClient::connect(strata.addr).await;
    assert_eq!(&d.command(&["PING"]).await[..], b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_and_kill_use_strata_ids() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut blocked = RawClient::connect(strata.addr).await;
    let mut admin = RawClient::connect(strata.addr).await;
    let id = String::from_utf8_lossy(&blocked.command(&["CLIENT", "ID"]).await[1..]).trim().to_string();
    blocked.send(&cmd(&["BLPOP", "nothing", "0"])).await;
    support::wait_blocked(redis.port, 1).await;
    assert_eq!(&admin.command(&["CLIENT", "UNBLOCK", &id]).await[..], b":1\r\n");
    assert_eq!(&blocked.read_frame().await[..], b"*-1\r\n");
    blocked.send(&cmd(&["BLPOP", "nothing", "0"])).await;
    support::wait_blocked(redis.port, 1).await;
    assert_eq!(&admin.command(&["CLIENT", "UNBLOCK", &id, "ERROR"]).await[..], b":1\r\n");
    assert!(blocked.read_frame().await.starts_with(b"-UNBLOCKED"));
    assert_eq!(&admin.command(&["CLIENT", "UNBLOCK", "999999"]).await[..], b":0\r\n");
    assert_eq!(&admin.command(&["CLIENT", "KILL", "ID", &id]).await[..], b":1\r\n");
    assert!(blocked.is_closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_clients_name_clients_by_strata_id() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    // The redirect target learns its id, then subscribes: its connection is Redis' from then on.
    let mut target = RawClient::connect(strata.addr).await;
    let target_id = support::int_reply(&target.command(&["CLIENT", "ID"]).await).to_string();
    target.command(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    let mut tracker = RawClient::connect(strata.addr).await;
    // A client on strata's shared connections, or on a pinned one (WATCH) that carries
    // replies, has nowhere to receive invalidations.
    let mut plain = RawClient::connect(strata.addr).await;
    let plain_id = support::int_reply(&plain.command(&["CLIENT", "ID"]).await).to_string();
    let refused = tracker.command(&["CLIENT", "TRACKING", "on", "REDIRECT", &plain_id]).await;
    assert!(refused.starts_with(b"-ERR strata: client"), "{}", String::from_utf8_lossy(&refused));
    plain.command(&["WATCH", "x"]).await;
    let refused = tracker.command(&["CLIENT", "TRACKING", "on", "REDIRECT", &plain_id]).await;
    assert!(refused.starts_with(b"-ERR strata: client"), "{}", String::from_utf8_lossy(&refused));
    let tracking = ["CLIENT", "TRACKING", "on", "REDIRECT", &target_id];
    assert_eq!(&tracker.command(&tracking).await[..], b"+OK\r\n");
    // The tracker is in pass-through now; the ids it names are still strata's.
    assert_eq!(&tracker.command(&["CLIENT", "TRACKING", "off"]).await[..], b"+OK\r\n");
    let broadcast = ["CLIENT", "TRACKING", "on", "BCAST", "REDIRECT", &target_id, "PREFIX", "p:"];
    assert_eq!(&tracker.command(&broadcast).await[..], b"+OK\r\n");
    let mut writer = RawClient::connect(strata.addr).await;
    writer.command(&["SET", "p:1", "v"]).await;
    let invalidation = String::from_utf8_lossy(&target.read_frame().await).into_owned();
    assert!(invalidation.contains("__redis__:invalidate") && invalidation.contains("p:1"), "{invalidation}");

    let mut blocked = RawClient::connect(strata.addr).await;
    let blocked_id = support::int_reply(&blocked.command(&["CLIENT", "ID"]).await).to_string();
    blocked.send(&cmd(&["BLPOP", "nothing", "0"])).await;
    support::wait_blocked(redis.port, 1).await;
    assert_eq!(&tracker.command(&["CLIENT", "UNBLOCK", &blocked_id]).await[..], b":1\r\n");
    assert_eq!(&blocked.read_frame().await[..], b"*-1\r\n");
    // No strata client has this id: nothing is unblocked, whichever Redis connection has it.
    assert_eq!(&tracker.command(&["CLIENT", "UNBLOCK", "999999"]).await[..], b":0\r\n");
    // A prefix spelled like the option is not the option.
    let odd_prefix = ["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "redirect", "REDIRECT", &target_id];
    assert_eq!(&tracker.command(&odd_prefix).await[..], b"+OK\r\n");
    // No strata client has this id: Redis refuses the redirect, whichever of its own
    // connections has that number.
    let unknown = tracker.command(&["CLIENT", "TRACKING", "on", "BCAST", "REDIRECT", "999999"]).await;
    assert!(unknown.starts_with(b"-ERR The client ID you want redirect to does not exist"), "{unknown:?}");
    // CLIENT KILL by filter would close strata's shared connections under every client:
    // from pass-through it matches nothing.
    assert_eq!(&tracker.command(&["CLIENT", "KILL", "TYPE", "normal"]).await[..], b":0\r\n");
    assert_eq!(&writer.command(&["GET", "p:1"]).await[..], b"$1\r\nv\r\n");
    // Inline commands are cut and translated too.
    tracker.send(format!("CLIENT TRACKING on BCAST REDIRECT {target_id} PREFIX q:\r\n").as_bytes()).await;
    assert_eq!(&tracker.read_frame().await[..], b"+OK\r\n");
    // CLIENT KILL ID with other filters reaches the named client's own connection.
    let kill = ["CLIENT", "KILL", "ID", &target_id, "SKIPME", "no"];
    assert_eq!(&tracker.command(&kill).await[..], b":1\r\n");
    assert!(target.is_closed().await);
}

/// `STRATA GETKEYS` is strata's own command: a reply to it shows that strata, not Redis,
/// is serving the client.
async fn served_by_strata(client: &mut RawClient) -> bool {
    client.command(&["STRATA", "GETKEYS", "GET", "k"]).await.starts_with(b"*1\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_ends_when_the_state_does() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut publisher = RawClient::connect(strata.addr).await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["CLIENT", "SETNAME", "me"]).await;
    c.command(&["SUBSCRIBE", "a", "b"]).await;
    c.read_frame().await;
    assert_eq!(&publisher.command(&["PUBLISH", "a", "hi"]).await[..], b":1\r\n");
    assert_eq!(&c.read_frame().await[..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    // Still subscribed to b: Redis answers, as it would directly.
    assert_eq!(&c.command(&["UNSUBSCRIBE", "a"]).await[..], b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n");
    assert_eq!(&c.command(&["PING"]).await[..], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // The last UNSUBSCRIBE, pipelined with requests only strata can answer so: they wait
    // for the check, whose replies never reach the client.
    let mut pipeline = cmd(&["UNSUBSCRIBE"]);
    pipeline.extend(cmd(&["CLIENT", "GETNAME"]));
    pipeline.extend(cmd(&["SET", "k", "v"]));
    c.send(&pipeline).await;
    assert_eq!(&c.read_frame().await[..], b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n");
    assert_eq!(&c.read_frame().await[..], b"$2\r\nme\r\n");
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    assert!(served_by_strata(&mut c).await);
    let info = fields(text_of(&c.command(&["CLIENT", "INFO"]).await).trim_end());
    assert_eq!((info["flags"].as_str(), info["name"].as_str()), ("N", "me"));
    // On a subscribed RESP2 connection strata never asks what Redis would refuse: no
    // error of its checks shows in Redis' statistics.
    let errors = RawClient::port(redis.port).await.command(&["INFO", "errorstats"]).await;
    assert!(!String::from_utf8_lossy(&errors).contains("errorstat_"), "{}", String::from_utf8_lossy(&errors));

    // RESP3 client-side caching: invalidation pushes while tracking, strata again after off.
    c.command(&["HELLO", "3"]).await;
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "on"]).await[..], b"+OK\r\n");
    assert_eq!(&c.command(&["GET", "k"]).await[..], b"$1\r\nv\r\n");
    publisher.command(&["SET", "k", "w"]).await;
    assert!(c.read_frame().await.starts_with(b">2\r\n$10\r\ninvalidate\r\n"));
    assert!(!served_by_strata(&mut c).await, "Redis refuses STRATA while the client is tracking");
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "off"]).await[..], b"+OK\r\n");
    assert!(served_by_strata(&mut c).await);

    // A client on a connection of its own (SELECT) stays with Redis: its state lives there.
    c.command(&["SELECT", "2"]).await;
    c.command(&["SET", "in2", "yes"]).await;
    c.command(&["SUBSCRIBE", "a"]).await;
    c.command(&["UNSUBSCRIBE"]).await;
    assert!(!served_by_strata(&mut c).await);
    assert_eq!(&c.command(&["GET", "in2"]).await[..], b"$3\r\nyes\r\n");

    // RESET ends pass-through too, and the client starts over on database 0.
    c.command(&["SUBSCRIBE", "a"]).await;
    assert_eq!(&c.command(&["RESET"]).await[..], b"+RESET\r\n");
    assert!(served_by_strata(&mut c).await);
    assert_eq!(&c.command(&["GET", "in2"]).await[..], b"$-1\r\n");

    // MONITOR stays with Redis: its stream would show strata's check.
    let mut monitor = RawClient::connect(strata.addr).await;
    monitor.command(&["MONITOR"]).await;
    monitor.send(&cmd(&["UNSUBSCRIBE"])).await;
    monitor.send(&cmd(&["PING", "after"])).await;
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|line: &String| line.contains("\"after\"")) {
        seen.push(String::from_utf8_lossy(&monitor.read_frame().await).into_owned());
    }
    assert!(!seen.iter().any(|line| line.contains("strata-probe")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_ends_on_reset_and_after_multi() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let strata = Strata::start(&format!("redis://:pw@127.0.0.1:{}", redis.port), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["SUBSCRIBE", "a"]).await;
    // Sent on, RESET would log Redis' connection in as `default`, without the password.
    let mut pipeline = cmd(&["RESET"]);
    pipeline.extend(cmd(&["SET", "k", "v"]));
    c.send(&pipeline).await;
    assert_eq!(&c.read_frame().await[..], b"+RESET\r\n");
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    assert!(served_by_strata(&mut c).await);

    // After CLIENT REPLY SKIP no reply shows whether Redis took it, so the RESET goes to
    // Redis: silenced by the SKIP and logging the connection out, exactly as directly.
    // A RESET after that gets Redis' `+RESET`, which ends pass-through.
    let mut quiet = RawClient::connect(strata.addr).await;
    let mut pipeline = cmd(&["CLIENT", "REPLY", "SKIP"]);
    pipeline.extend(cmd(&["RESET"]));
    pipeline.extend(cmd(&["PING", "next"]));
    quiet.send(&pipeline).await;
    assert!(quiet.read_frame().await.starts_with(b"-NOAUTH "));
    assert_eq!(&quiet.command(&["RESET"]).await[..], b"+RESET\r\n");
    assert!(served_by_strata(&mut quiet).await);

    // MONITOR is never probed; its RESET goes to Redis, whose +RESET ends pass-through.
    let mut monitor = RawClient::connect(strata.addr).await;
    assert_eq!(&monitor.command(&["MONITOR"]).await[..], b"+OK\r\n");
    monitor.send(&cmd(&["RESET"])).await;
    while monitor.read_frame().await[..] != b"+RESET\r\n"[..] {}
    assert!(served_by_strata(&mut monitor).await);
    // A RESET that a SKIP silences ends MONITOR in Redis but sends nothing: nothing is
    // waited for, and the client's next request is answered by Redis, as directly (where
    // RESET logged the connection out: this Redis has a password).
    assert_eq!(&monitor.command(&["MONITOR"]).await[..], b"+OK\r\n");
    let mut pipeline = cmd(&["CLIENT", "REPLY", "SKIP"]);
    pipeline.extend(cmd(&["RESET"]));
    pipeline.extend(cmd(&["PING", "after-reset"]));
    monitor.send(&pipeline).await;
    while !monitor.read_frame().await.starts_with(b"-NOAUTH ") {}

    // Tracking switched off inside MULTI: queued, it changes nothing until EXEC, whose
    // array says it did.
    c.command(&["HELLO", "3"]).await;
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "on"]).await[..], b"+OK\r\n");
    c.command(&["MULTI"]).await;
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "off"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&c.command(&["EXEC"]).await[..], b"*1\r\n+OK\r\n");
    assert!(served_by_strata(&mut c).await);
    assert!(c.command(&["UNSUBSCRIBE"]).await.starts_with(b">3\r\n$11\r\nunsubscribe\r\n"));
    assert!(served_by_strata(&mut c).await);
    assert_eq!(&c.command(&["GET", "k"]).await[..], b"$1\r\nv\r\n");

    // Pass-through begun inside MULTI is never checked: the transaction holds only the
    // client's commands, and the client stays with Redis.
    c.command(&["MULTI"]).await;
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "on"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "off"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&c.command(&["EXEC"]).await[..], b"*2\r\n+OK\r\n+OK\r\n");
    assert!(c.command(&["UNSUBSCRIBE"]).await.starts_with(b">3\r\n$11\r\nunsubscribe\r\n"));
    assert!(!served_by_strata(&mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_redis_refusal_in_pass_through_is_a_reply_like_any_other() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut admin = RawClient::port(redis.port).await;
    admin.command(&["CONFIG", "SET", "busy-reply-threshold", "50"]).await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["SUBSCRIBE", "a"]).await;
    let mut script = RawClient::port(redis.port).await;
    script.send(&cmd(&["EVAL", "while true do end", "0"])).await;
    support::wait_until("Redis is busy with the script", || async {
        RawClient::port(redis.port).await.command(&["PING"]).await.starts_with(b"-BUSY")
    })
    .await;
    // Redis refuses the UNSUBSCRIBE while the script runs: the client stays subscribed,
    // as it would directly, and its connection open.
    assert!(c.command(&["UNSUBSCRIBE"]).await.starts_with(b"-BUSY "));
    assert_eq!(&admin.command(&["SCRIPT", "KILL"]).await[..], b"+OK\r\n");
    support::wait_until("the script is gone", || async {
        RawClient::port(redis.port).await.command(&["PING"]).await[..] == b"+PONG\r\n"[..]
    })
    .await;
    assert_eq!(&admin.command(&["PUBLISH", "a", "still"]).await[..], b":1\r\n");
    assert_eq!(&c.read_frame().await[..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nstill\r\n");
    assert_eq!(&c.command(&["UNSUBSCRIBE"]).await[..], b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    assert!(served_by_strata(&mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_reply_off_loses_no_reply() {
    let redis = RedisServer::start();
    let mut admin = RawClient::port(redis.port).await;
    let acl = ["ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-client|reply"];
    assert_eq!(&admin.command(&acl).await[..], b"+OK\r\n");
    let url = format!("redis://app:pw@127.0.0.1:{}", redis.port);
    let strata = Strata::start(&url, "").await;
    // Redis refuses the OFF with an error that strata cannot tell from a later request's
    // reply; every reply must still reach the client, as directly.
    let mut pipeline = cmd(&["CLIENT", "REPLY", "OFF"]);
    pipeline.extend(cmd(&["SET", "a", "1"]));
    pipeline.extend(cmd(&["CLIENT", "REPLY", "ON"]));
    pipeline.extend(cmd(&["GET", "a"]));
    for _ in 0..20 {
        let mut c = RawClient::connect(strata.addr).await;
        c.send(&pipeline).await;
        assert!(c.read_frame().await.starts_with(b"-NOPERM "));
        assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
        assert!(c.read_frame().await.starts_with(b"-NOPERM "));
        assert_eq!(&c.read_frame().await[..], b"$1\r\n1\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_is_not_idle_time() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[server]\nidle_timeout_ms = 300\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["SUBSCRIBE", "a"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.command(&["UNSUBSCRIBE"]).await;
    // Back in normal service, the idle timeout starts over.
    assert_eq!(&c.command(&["PING"]).await[..], b"+PONG\r\n");
    assert!(served_by_strata(&mut c).await);
}

/// The text of a bulk (RESP2) or verbatim (RESP3) reply.
fn text_of(reply: &[u8]) -> String {
    let reply = String::from_utf8_lossy(reply).into_owned();
    let body = reply.split_once("\r\n").map(|(_, b)| b).unwrap_or_default();
    body.strip_suffix("\r\n").unwrap_or(body).trim_start_matches("txt:").to_string()
}

/// The `field=value` pairs of one CLIENT LIST line.
fn fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

fn line_of(list: &str, id: &str) -> Option<std::collections::HashMap<String, String>> {
    list.lines().map(fields).find(|f| f.get("id").map(String::as_str) == Some(id))
}

fn id_of(reply: &[u8]) -> String {
    String::from_utf8_lossy(&reply[1..]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_and_info_describe_strata_clients() {
    let redis = RedisServer::start();
    // Not Redis' default maxclients (10000), so INFO shows whose limit it reports.
    let strata = Strata::start(&redis.url(), "[server]\nmax_clients = 123\n").await;
    let mut a = RawClient::connect(strata.addr).await;
    let mut b = RawClient::connect(strata.addr).await;
    let (ida, idb) = (id_of(&a.command(&["CLIENT", "ID"]).await), id_of(&b.command(&["CLIENT", "ID"]).await));
    a.command(&["CLIENT", "SETNAME", "alpha"]).await;
    a.command(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await;
    a.command(&["SELECT", "3"]).await;
    b.command(&["GET", "k"]).await;

    let list = text_of(&a.command(&["CLIENT", "LIST"]).await);
    let mine = line_of(&list, &ida).expect("the caller is listed");
    assert_eq!(mine["name"], "alpha");
    assert_eq!(mine["lib-name"], "redis-py");
    assert_eq!(mine["db"], "3");
    assert_eq!(mine["cmd"], "client|list");
    assert_eq!(mine["flags"], "N");
    assert_eq!(mine["multi"], "-1");
    assert_eq!(mine["laddr"], strata.addr.to_string());
    assert_eq!(mine["addr"], a.stream.local_addr().unwrap().to_string());
    // As Redis counts it: the size of `*2 $6 client $4 list` in the query buffer.
    assert_eq!(mine["qbuf"], "26");
    let other = line_of(&list, &idb).expect("the other client is listed");
    assert_eq!(other["name"], "");
    assert_eq!(other["cmd"], "get");
    assert_eq!(other["db"], "0");
    // Redis' own list holds strata's upstream connections, never the client names.
    let mut direct = RawClient::port(redis.port).await;
    assert!(!text_of(&direct.command(&["CLIENT", "LIST"]).await).contains("name=alpha"));
    // INFO's client counts are strata's too, whichever way its clients section is asked for.
    for request in [&["INFO", "clients"][..], &["INFO"], &["INFO", "CLIENTS", "strata"], &["INFO", "all"]] {
        let info = text_of(&a.command(request).await);
        assert!(info.contains("\r\nconnected_clients:2\r\n"), "{request:?}: {info}");
        assert!(info.contains("\r\nmaxclients:123\r\n"), "{request:?}: {info}");
        assert!(info.contains("blocked_clients:"), "the rest of Redis' section stays: {info}");
    }

    // Filters, and their errors as Redis words them.
    let only_b = text_of(&a.command(&["CLIENT", "LIST", "ID", &idb]).await);
    assert_eq!(only_b.lines().count(), 1, "{only_b}");
    assert!(line_of(&only_b, &idb).is_some());
    assert!(a.command(&["CLIENT", "LIST", "TYPE", "bogus"]).await.starts_with(b"-ERR Unknown client type"));
    assert!(a.command(&["CLIENT", "LIST", "ID", "x"]).await.starts_with(b"-ERR Invalid client ID"));
    // As Redis 7.0: any integer is an id; below 1 none matches. Listed in the order given.
    assert_eq!(text_of(&a.command(&["CLIENT", "LIST", "ID", "0", "-5"]).await), "");
    let both = text_of(&a.command(&["CLIENT", "LIST", "ID", &idb, &ida]).await);
    let order: Vec<String> = both.lines().map(|l| fields(l)["id"].clone()).collect();
    assert_eq!(order, [idb.clone(), ida.clone()]);
    assert!(a.command(&["CLIENT", "LIST", "bogus"]).await.starts_with(b"-ERR syntax error"));
    assert_eq!(text_of(&a.command(&["CLIENT", "LIST", "TYPE", "pubsub"]).await), "");

    // CLIENT INFO is the caller's line; in RESP3 a verbatim string, as from Redis.
    b.command(&["HELLO", "3"]).await;
    let info = b.command(&["CLIENT", "INFO"]).await;
    assert!(info.starts_with(b"="), "{}", String::from_utf8_lossy(&info));
    let info = fields(text_of(&info).trim_end());
    assert_eq!(info["id"], idb);
    assert_eq!(info["resp"], "3");
    assert_eq!(info["cmd"], "client|info");
    // In RESP3, INFO is a verbatim string whose text starts with `txt:`, here right
    // before the clients section.
    let info = b.command(&["INFO", "clients"]).await;
    assert!(info.starts_with(b"="), "{}", String::from_utf8_lossy(&info));
    assert!(text_of(&info).contains("connected_clients:2\r\n"), "{}", String::from_utf8_lossy(&info));

    // NO-EVICT / NO-TOUCH are kept per client and shown as Redis shows them.
    assert_eq!(&a.command(&["CLIENT", "NO-EVICT", "on"]).await[..], b"+OK\r\n");
    assert_eq!(fields(text_of(&a.command(&["CLIENT", "INFO"]).await).trim_end())["flags"], "e");
    assert_eq!(&a.command(&["CLIENT", "NO-TOUCH", "on"]).await[..], b"+OK\r\n");
    assert_eq!(fields(text_of(&a.command(&["CLIENT", "INFO"]).await).trim_end())["flags"], "eT");
    assert!(a.command(&["CLIENT", "NO-TOUCH", "maybe"]).await.starts_with(b"-ERR syntax error"));
    a.command(&["CLIENT", "NO-EVICT", "off"]).await;
    a.command(&["CLIENT", "NO-TOUCH", "off"]).await;

    // A subscriber is listed with flags=P and found by TYPE pubsub; MULTI shows as x.
    let mut sub = RawClient::connect(strata.addr).await;
    let ids = id_of(&sub.command(&["CLIENT", "ID"]).await);
    sub.command(&["SUBSCRIBE", "news"]).await;
    let pubsub = text_of(&a.command(&["CLIENT", "LIST", "TYPE", "pubsub"]).await);
    assert_eq!(line_of(&pubsub, &ids).expect("subscriber listed")["flags"], "P");
    assert!(line_of(&pubsub, &ida).is_none());
    b.command(&["MULTI"]).await;
    b.command(&["SET", "x", "1"]).await;
    let list = text_of(&a.command(&["CLIENT", "LIST"]).await);
    let in_multi = line_of(&list, &idb).unwrap();
    assert_eq!((in_multi["flags"].as_str(), in_multi["multi"].as_str()), ("x", "1"));

    // Inside MULTI, Redis queues CLIENT LIST like any command: EXEC's array holds its reply.
    let mut tx = RawClient::connect(strata.addr).await;
    assert_eq!(&tx.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&tx.command(&["CLIENT", "LIST"]).await[..], b"+QUEUED\r\n");
    assert!(tx.command(&["EXEC"]).await.starts_with(b"*1\r\n$"));

    // A client that leaves is no longer listed.
    drop(sub);
    let deadline = Instant::now() + Duration::from_secs(5);
    while line_of(&text_of(&a.command(&["CLIENT", "LIST"]).await), &ids).is_some() {
        assert!(Instant::now() < deadline, "a closed client is still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_filters_act_on_strata_clients() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut admin = RawClient::connect(strata.addr).await;
    let ida = id_of(&admin.command(&["CLIENT", "ID"]).await);
    assert!(
        admin
            .command(&["CLIENT", "KILL"])
            .await
            .starts_with(b"-ERR wrong number of arguments for 'client|kill'")
    );
    assert!(
        admin.command(&["CLIENT", "KILL", "ID", "10", "wrong_arg"]).await.starts_with(b"-ERR syntax error")
    );
    assert!(
        admin
            .command(&["CLIENT", "KILL", "ID", "str"])
            .await
            .starts_with(b"-ERR client-id should be greater than 0")
    );
    assert!(admin.command(&["CLIENT", "KILL", "MAXAGE", "1"]).await.starts_with(b"-ERR syntax error"));
    assert_eq!(&admin.command(&["CLIENT", "KILL", "127.0.0.1:1"]).await[..], b"-ERR No such client\r\n");
    // Only Redis knows its ACL users: another user's name is Redis' to refuse.
    assert!(admin.command(&["CLIENT", "KILL", "USER", "wrong_user"]).await.starts_with(b"-ERR No such user"));
    assert!(
        admin.command(&["CLIENT", "KILL", "SKIPME", "yes_or_no"]).await.starts_with(b"-ERR syntax error")
    );

    // By address, old form and new.
    let mut b = RawClient::connect(strata.addr).await;
    b.command(&["PING"]).await;
    let addr_b = b.stream.local_addr().unwrap().to_string();
    assert_eq!(&admin.command(&["CLIENT", "KILL", &addr_b]).await[..], b"+OK\r\n");
    assert!(b.is_closed().await);
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["PING"]).await;
    let addr_c = c.stream.local_addr().unwrap().to_string();
    assert_eq!(&admin.command(&["CLIENT", "KILL", "ADDR", &addr_c, "SKIPME", "yes"]).await[..], b":1\r\n");
    // Killed once: not killed or counted again while it closes.
    assert_eq!(&admin.command(&["CLIENT", "KILL", "ADDR", &addr_c]).await[..], b":0\r\n");
    assert!(c.is_closed().await);

    // The shared upstream connection was never touched: the admin's requests still work.
    assert_eq!(&admin.command(&["SET", "still", "here"]).await[..], b"+OK\r\n");

    // TYPE normal kills every other client (SKIPME defaults to yes) and spares the caller.
    let mut d = RawClient::connect(strata.addr).await;
    let mut e = RawClient::connect(strata.addr).await;
    d.command(&["PING"]).await;
    e.command(&["PING"]).await;
    let killed = id_of(&admin.command(&["CLIENT", "KILL", "TYPE", "normal"]).await);
    assert!(killed.parse::<u32>().unwrap() >= 2, "killed {killed}");
    assert!(d.is_closed().await && e.is_closed().await);
    assert_eq!(&admin.command(&["PING"]).await[..], b"+PONG\r\n");

    // SKIPME no: the caller is killed too, after its reply, as in Redis.
    assert_eq!(&admin.command(&["CLIENT", "KILL", "ID", &ida, "SKIPME", "no"]).await[..], b":1\r\n");
    assert!(admin.is_closed().await);
}
