//! `CLIENT LIST`, `CLIENT KILL` and `INFO` as strata answers them, beyond
//! `connections.rs`: `KILL LADDR`, the fields that read 0, and `INFO` inside `MULTI`.
//! Each is compared with what Redis answers directly.

mod support;

use std::collections::HashMap;

use support::{RawClient, RedisServer, Strata, cmd, int_reply};

/// The text of a bulk reply.
fn text_of(reply: &[u8]) -> String {
    let reply = String::from_utf8_lossy(reply).into_owned();
    let body = reply.split_once("\r\n").map(|(_, b)| b).unwrap_or_default();
    body.strip_suffix("\r\n").unwrap_or(body).to_string()
}

/// One CLIENT LIST line's fields, in their order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_laddr_kills_the_clients_of_that_address_like_redis() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    // Directly, a Redis of its own: strata's connections to it would be killed as well.
    let bare = RedisServer::start();
    let direct_addr = format!("127.0.0.1:{}", bare.port);
    let strata_addr = strata.addr.to_string();
    let mut replies = Vec::new();
    let mut closed = Vec::new();
    for (port, laddr) in [(strata.addr.port(), &strata_addr), (bare.port, &direct_addr)] {
        let mut admin = RawClient::port(port).await;
        let mut others = [RawClient::port(port).await, RawClient::port(port).await];
        for o in &mut others {
            assert_eq!(&o.command(&["PING"]).await[..], b"+PONG\r\n");
        }
        let mut got = vec![admin.command(&["CLIENT", "KILL", "LADDR", "127.0.0.1:1"]).await];
        got.push(admin.command(&["CLIENT", "KILL", "LADDR", laddr, "SKIPME", "yes"]).await);
        got.push(admin.command(&["PING"]).await);
        for o in &mut others {
            closed.push(o.is_closed().await);
        }
        replies.push(got);
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(&replies[0][1][..], b":2\r\n");
    assert_eq!(closed, [true; 4]);
    // strata's shared connections were never Redis' to kill: service goes on.
    let mut after = RawClient::connect(strata.addr).await;
    assert_eq!(&after.command(&["SET", "k", "v"]).await[..], b"+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_buffer_and_memory_fields_read_zero() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut caller = RawClient::connect(strata.addr).await;
    let caller_id = int_reply(&caller.command(&["CLIENT", "ID"]).await).to_string();
    // Clients that hold memory in Redis: subscribed, a transaction with a large queued
    // value, blocked, a request half sent, replies not read.
    let mut sub = RawClient::connect(strata.addr).await;
    sub.command(&["SUBSCRIBE", "a", "b"]).await;
    sub.read_frame().await;
    let mut psub = RawClient::connect(strata.addr).await;
    psub.command(&["PSUBSCRIBE", "p*"]).await;
    let mut tx = RawClient::connect(strata.addr).await;
    tx.command(&["MULTI"]).await;
    let big = "x".repeat(100_000);
    assert_eq!(&tx.command(&["SET", "big", &big]).await[..], b"+QUEUED\r\n");
    let mut blocked = RawClient::connect(strata.addr).await;
    blocked.send(&cmd(&["BLPOP", "nothing", "0"])).await;
    support::wait_blocked(redis.port, 1).await;
    let mut half = RawClient::connect(strata.addr).await;
    half.send(b"*3\r\n$3\r\nSET\r\n$1\r\nh\r\n$100000\r\nxxxx").await;
    let mut deaf = RawClient::connect(strata.addr).await;
    let mut many = Vec::new();
    for _ in 0..50 {
        many.extend(cmd(&["GET", "nothing"]));
    }
    deaf.send(&many).await;
    // Directly, the same states do show: the fields are Redis' own.
    let mut direct_tx = RawClient::port(redis.port).await;
    direct_tx.command(&["MULTI"]).await;
    direct_tx.command(&["SET", "big", &big]).await;
    let direct = text_of(&RawClient::port(redis.port).await.command(&["CLIENT", "LIST"]).await);
    let redis_fields: Vec<String> =
        fields(direct.lines().next().unwrap()).into_iter().map(|(k, _)| k).collect();
    assert!(direct.contains(" sub=2 ") && direct.contains(" psub=1 "), "{direct}");
    assert!(direct.lines().any(|l| !l.contains(" multi-mem=0 ")), "{direct}");

    // Every client is listed once strata has accepted it, which may come just after its
    // connect returned.
    let mut list = String::new();
    for _ in 0..100 {
        list = text_of(&caller.command(&["CLIENT", "LIST"]).await);
        if list.lines().count() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(list.lines().count(), 7, "{list}");
    let zero = ["sub", "psub", "qbuf-free", "argv-mem", "multi-mem", "obl", "oll", "omem", "tot-mem"];
    for line in list.lines() {
        let f = fields(line);
        let names: Vec<String> = f.iter().map(|(k, _)| k.clone()).collect();
        let names: Vec<&String> = names.iter().filter(|k| redis_fields.contains(k)).collect();
        assert_eq!(names.len(), redis_fields.len(), "every field Redis lists: {line}");
        let f: HashMap<String, String> = f.into_iter().collect();
        for name in zero {
            assert_eq!(f[name], "0", "{name} in {line}");
        }
        if f["id"] != caller_id {
            assert_eq!(f["qbuf"], "0", "{line}");
        }
    }
}

/// The bulk strings of an array of bulk strings (EXEC's reply here).
fn bulks(mut reply: &[u8]) -> Vec<Vec<u8>> {
    let line = |r: &[u8]| {
        let end = r.windows(2).position(|w| w == b"\r\n").expect("CRLF");
        (String::from_utf8_lossy(&r[1..end]).parse::<usize>().expect("a length"), end + 2)
    };
    let (count, skip) = line(reply);
    reply = &reply[skip..];
    let mut out = Vec::new();
    for _ in 0..count {
        let (len, skip) = line(reply);
        out.push(reply[skip..skip + len].to_vec());
        reply = &reply[skip + len + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_inside_multi_is_redis_own() {
    let redis = RedisServer::start();
    // Not Redis' maxclients, so whose INFO the transaction holds shows.
    let strata = Strata::start(&redis.url(), "[server]\nmax_clients = 123\n").await;
    let mut c = RawClient::connect(strata.addr).await;
    let mut direct = RawClient::port(redis.port).await;
    assert!(text_of(&c.command(&["INFO", "clients"]).await).contains("maxclients:123\r\n"));
    assert!(text_of(&c.command(&["INFO"]).await).contains("# Strata\r\n"));
    let asked: [&[&str]; 3] = [&["INFO", "clients"], &["INFO", "strata"], &["INFO"]];
    assert_eq!(&c.command(&["MULTI"]).await[..], b"+OK\r\n");
    for args in asked {
        assert_eq!(&c.command(args).await[..], b"+QUEUED\r\n", "{args:?}");
    }
    let exec = bulks(&c.command(&["EXEC"]).await);
    // Redis' own answers, asked directly while the same connections were open.
    assert_eq!(exec[0], bulks(&[b"*1\r\n", &direct.command(asked[0]).await[..]].concat())[0]);
    assert_eq!(exec[1], bulks(&[b"*1\r\n", &direct.command(asked[1]).await[..]].concat())[0]);
    let all = String::from_utf8_lossy(&exec[2]);
    assert!(all.contains("maxclients:10000\r\n") && !all.contains("# Strata"), "{all}");
}
