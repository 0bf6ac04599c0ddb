//! Pass-through (`SUBSCRIBE`, `CLIENT TRACKING`, …) at its edges: what Redis answers
//! meanwhile, a `RESET` of a redirect target, a check that goes unanswered, a `REDIRECT`
//! queued in `MULTI`, and bytes strata would refuse, copied for Redis to judge.
//! The basics (entering, leaving, ids translated) are in `connections.rs`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{RawClient, RedisServer, Strata, cmd, encode, int_reply};

/// The text of a bulk (RESP2) or verbatim (RESP3) reply.
fn text_of(reply: &[u8]) -> String {
    let reply = String::from_utf8_lossy(reply).into_owned();
    let body = reply.split_once("\r\n").map(|(_, b)| b).unwrap_or_default();
    body.strip_suffix("\r\n").unwrap_or(body).trim_start_matches("txt:").to_string()
}

/// The `field=value` pairs of each CLIENT LIST line.
fn lines(list: &str) -> Vec<HashMap<String, String>> {
    list.lines()
        .map(|l| {
            l.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
        })
        .collect()
}

/// Redis' own id of the one connection whose CLIENT LIST line matches `pick`.
async fn redis_id(redis_port: u16, pick: impl Fn(&HashMap<String, String>) -> bool) -> String {
    let list = text_of(&RawClient::port(redis_port).await.command(&["CLIENT", "LIST"]).await);
    let found: Vec<String> = lines(&list).into_iter().filter(|l| pick(l)).map(|l| l["id"].clone()).collect();
    assert_eq!(found.len(), 1, "one matching connection in Redis' list: {list}");
    found[0].clone()
}

/// `STRATA GETKEYS` is strata's own command: a reply to it shows that strata serves the client.
async fn served_by_strata(client: &mut RawClient) -> bool {
    client.command(&["STRATA", "GETKEYS", "GET", "k"]).await.starts_with(b"*1\r\n")
}

/// Redis started after `n` connections, so its client ids are far from strata's.
fn redis_with_ids_past(n: usize, extra: &[&str]) -> RedisServer {
    let redis = RedisServer::start_with(extra);
    for _ in 0..n {
        drop(std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect"));
    }
    redis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_list_and_info_are_redis_own_in_pass_through_getredir_names_the_strata_id() {
    let redis = redis_with_ids_past(50, &[]);
    let strata = Strata::start(&redis.url(), "").await;
    let mut target = RawClient::connect(strata.addr).await;
    let target_strata_id = int_reply(&target.command(&["CLIENT", "ID"]).await).to_string();
    target.command(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["HELLO", "3"]).await;
    let strata_id = int_reply(&c.command(&["CLIENT", "ID"]).await).to_string();
    assert_eq!(
        &c.command(&["CLIENT", "TRACKING", "on", "REDIRECT", &target_strata_id]).await[..],
        b"+OK\r\n"
    );
    let target_id = redis_id(redis.port, |l| l["sub"] == "1").await;
    let c_id = redis_id(redis.port, |l| l["redir"] == target_id).await;
    assert_ne!(c_id, strata_id, "Redis' ids are not strata's here");

    // Each answer about c itself is the one Redis gives for c's own connection there.
    assert_eq!(int_reply(&c.command(&["CLIENT", "ID"]).await).to_string(), c_id);
    // The redirect target is named as the client named it: by strata id.
    assert_eq!(int_reply(&c.command(&["CLIENT", "GETREDIR"]).await).to_string(), target_strata_id);
    let tracking = String::from_utf8_lossy(&c.command(&["CLIENT", "TRACKINGINFO"]).await).into_owned();
    assert!(tracking.contains(&format!("$8\r\nredirect\r\n:{target_strata_id}\r\n")), "{tracking}");
    let info = c.command(&["CLIENT", "INFO"]).await;
    let info = &lines(&text_of(&info))[0];
    assert_eq!((info["id"].as_str(), info["redir"].as_str()), (c_id.as_str(), target_id.as_str()));
    let list = lines(&text_of(&c.command(&["CLIENT", "LIST"]).await));
    assert!(list.iter().any(|l| l["id"] == target_id && l["sub"] == "1"), "Redis' list: {list:?}");
    assert!(!list.iter().any(|l| l["id"] == target_strata_id && l["sub"] == "0"), "{list:?}");
    // INFO counts Redis' connections (strata's shared and spare ones among them), not
    // strata's three clients; a direct connection is open during both questions.
    let mut direct = RawClient::port(redis.port).await;
    let count = |reply: &[u8]| {
        text_of(reply).lines().find_map(|l| l.strip_prefix("connected_clients:").map(str::to_string))
    };
    let through = count(&c.command(&["INFO", "clients"]).await).expect("connected_clients");
    let redis_own = count(&direct.command(&["INFO", "clients"]).await).expect("connected_clients");
    assert_eq!(through, redis_own);
    assert_ne!(through, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_closes_a_redirect_target_and_the_tracker_hears_it() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut target = RawClient::connect(strata.addr).await;
    let target_strata_id = int_reply(&target.command(&["CLIENT", "ID"]).await).to_string();
    target.command(&["SUBSCRIBE", "__redis__:invalidate"]).await;
    let mut tracker = RawClient::connect(strata.addr).await;
    tracker.command(&["HELLO", "3"]).await;
    let tracking = ["CLIENT", "TRACKING", "on", "REDIRECT", &target_strata_id];
    assert_eq!(&tracker.command(&tracking).await[..], b"+OK\r\n");
    assert_eq!(&tracker.command(&["GET", "k"]).await[..], b"_\r\n");
    let target_id = redis_id(redis.port, |l| l["sub"] == "1").await;
    // Unsubscribed, the target stays with Redis: the tracker's redirect names it.
    target.command(&["UNSUBSCRIBE"]).await;
    assert!(!served_by_strata(&mut target).await);
    assert_eq!(&target.command(&["RESET"]).await[..], b"+RESET\r\n");
    assert!(served_by_strata(&mut target).await);
    support::wait_until("the target's connection is closed in Redis", || async {
        let list = text_of(&RawClient::port(redis.port).await.command(&["CLIENT", "LIST"]).await);
        !lines(&list).iter().any(|l| l["id"] == target_id)
    })
    .await;
    let mut writer = RawClient::connect(strata.addr).await;
    writer.command(&["SET", "k", "v"]).await;
    let push = tracker.read_frame().await;
    let want = format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{target_id}\r\n");
    assert_eq!(String::from_utf8_lossy(&push), want);
}

/// Waits until Redis has strata's shared connections and its ready spares (by default
/// two of each per protocol), besides the one asking.
async fn spares_ready(redis_port: u16) {
    support::wait_until("strata's spare connections are open", || async {
        support::redis_info_field(redis_port, "clients", "connected_clients").await.as_deref() == Some("9")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_holds_a_subscribe_as_it_would_directly_and_nothing_else_is_sent() {
    let redis = RedisServer::start();
    let toml = "[upstream]\nconnect_timeout_ms = 300\ncommand_timeout_ms = 60000\n";
    let strata = Strata::start(&redis.url(), toml).await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.command(&["PING"]).await[..], b"+PONG\r\n");
    spares_ready(redis.port).await;
    // Entering pass-through sends Redis nothing of strata's own: while Redis is stopped
    // the client simply waits, as it would directly, well past connect_timeout_ms.
    redis.signal("STOP");
    c.send(&cmd(&["SUBSCRIBE", "a"])).await;
    let early = tokio::time::timeout(Duration::from_millis(800), c.try_read_frame()).await;
    redis.signal("CONT");
    assert!(early.is_err(), "a reply while Redis was stopped: {early:?}");
    assert_eq!(&c.read_frame().await[..], b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    let mut publisher = RawClient::connect(strata.addr).await;
    assert_eq!(&publisher.command(&["PUBLISH", "a", "x"]).await[..], b":1\r\n");
    assert_eq!(&c.read_frame().await[..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n");
    // strata asked Redis nothing about the connection (its old check was CLIENT INFO).
    let stats = RawClient::port(redis.port).await.command(&["INFO", "commandstats"]).await;
    assert!(
        !String::from_utf8_lossy(&stats).contains("cmdstat_client|info"),
        "{}",
        String::from_utf8_lossy(&stats)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_plain_client_queued_in_multi_is_refused_at_exec_like_redis() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut plain = RawClient::connect(strata.addr).await;
    let plain_id = int_reply(&plain.command(&["CLIENT", "ID"]).await).to_string();
    let mut through = RawClient::connect(strata.addr).await;
    let mut direct = RawClient::port(redis.port).await;
    // Directly, the same transaction names an id no connection has.
    for (c, id) in [(&mut through, plain_id.as_str()), (&mut direct, "999999")] {
        let mut tx = cmd(&["MULTI"]);
        tx.extend(cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", id]));
        tx.extend(cmd(&["PING"]));
        tx.extend(cmd(&["EXEC"]));
        c.send(&tx).await;
    }
    for _ in 0..4 {
        assert_eq!(through.read_frame().await, direct.read_frame().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_resp_bytes_in_pass_through_are_for_redis_to_judge() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    // Redis takes any two bytes after a bulk for its CRLF; strata refuses the request.
    let odd = b"*1\r\n$4\r\nPINGxx\r\n*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nPING\r\n$4\r\nlast\r\n";
    let mut plain = RawClient::connect(strata.addr).await;
    plain.send(odd).await;
    let refused = plain.read_frame().await;
    assert!(refused.starts_with(b"-ERR Protocol error"), "{}", String::from_utf8_lossy(&refused));
    let mut through = RawClient::connect(strata.addr).await;
    let mut direct = RawClient::port(redis.port).await;
    for c in [&mut through, &mut direct] {
        c.send(&cmd(&["SUBSCRIBE", "a"])).await;
        c.read_frame().await;
        c.send(odd).await;
    }
    for _ in 0..3 {
        assert_eq!(through.read_frame().await, direct.read_frame().await);
    }
    // A check after UNSUBSCRIBE would need requests cut: from here on Redis judges alone.
    for c in [&mut through, &mut direct] {
        c.send(&cmd(&["UNSUBSCRIBE"])).await;
        c.read_frame().await;
    }
    assert!(!served_by_strata(&mut through).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_max_client_buffer_in_pass_through_is_for_redis_to_judge() {
    let redis = RedisServer::start();
    let toml = "[limits]\nmax_bulk_len = 1024\nmax_client_buffer = 2048\n";
    let strata = Strata::start(&redis.url(), toml).await;
    // Four channel names of 1000 bytes: one request past max_client_buffer, no bulk past
    // max_bulk_len. The first 3000 bytes go alone: an incomplete request past the limit.
    let names: Vec<String> = (0..4).map(|i| format!("{i}").repeat(1000)).collect();
    let mut words = vec!["SUBSCRIBE"];
    words.extend(names.iter().map(String::as_str));
    let bytes: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    let subscribe = encode(&bytes);
    let (head, tail) = subscribe.split_at(3000);
    // In normal service strata refuses it.
    let mut plain = RawClient::connect(strata.addr).await;
    plain.send(head).await;
    let refused = plain.read_frame().await;
    assert!(refused.starts_with(b"-ERR Protocol error"), "{}", String::from_utf8_lossy(&refused));
    assert!(plain.is_closed().await);

    let mut through = RawClient::connect(strata.addr).await;
    let mut direct = RawClient::port(redis.port).await;
    for c in [&mut through, &mut direct] {
        c.send(&cmd(&["SUBSCRIBE", "first"])).await;
        c.read_frame().await;
    }
    through.send(head).await;
    direct.send(head).await;
    // strata copies what it has on to Redis instead of holding it.
    support::wait_until("Redis holds the first part of the request", || async {
        let list = text_of(&RawClient::port(redis.port).await.command(&["CLIENT", "LIST"]).await);
        lines(&list).iter().filter(|l| l["sub"] == "1" && l["argv-mem"] != "0").count() == 2
    })
    .await;
    through.send(tail).await;
    direct.send(tail).await;
    for _ in 0..4 {
        assert_eq!(through.read_frame().await, direct.read_frame().await);
    }
    assert_eq!(&through.command(&["PING"]).await[..], &direct.command(&["PING"]).await[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deeper_than_the_depth_limit_in_pass_through_is_answered_in_full() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[limits]\nmax_pipeline_depth = 16\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    c.command(&["HELLO", "3"]).await;
    assert_eq!(&c.command(&["CLIENT", "TRACKING", "on"]).await[..], b"+OK\r\n");
    // 3,000 requests in one write, far more than may be unanswered at once: every reply, in order.
    let mut pipeline = Vec::new();
    for i in 0..3000 {
        pipeline.extend(cmd(&["ECHO", &i.to_string()]));
    }
    pipeline.extend(cmd(&["CLIENT", "TRACKING", "off"]));
    c.send(&pipeline).await;
    for i in 0..3000 {
        let want = format!("${}\r\n{i}\r\n", i.to_string().len());
        assert_eq!(String::from_utf8_lossy(&c.read_frame().await), want);
    }
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    assert!(served_by_strata(&mut c).await);
}
