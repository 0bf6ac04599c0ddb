//! Connections of a client's own besides `MULTI`, `SELECT` and blocking commands (in
//! `connections.rs`): `WAIT`, `READONLY`, and the ready spares they are taken from.
//! Each is seen from Redis' side, in its own `CLIENT LIST`.

mod support;

use std::collections::HashMap;

use support::{RawClient, RedisServer, Strata, cmd, int_reply};

/// The text of a bulk reply.
fn text_of(reply: &[u8]) -> String {
    let reply = String::from_utf8_lossy(reply).into_owned();
    let body = reply.split_once("\r\n").map(|(_, b)| b).unwrap_or_default();
    body.strip_suffix("\r\n").unwrap_or(body).to_string()
}

/// Redis' own CLIENT LIST, one `field=value` map per connection.
async fn redis_list(port: u16) -> Vec<HashMap<String, String>> {
    let list = text_of(&RawClient::port(port).await.command(&["CLIENT", "LIST"]).await);
    list.lines()
        .map(|l| {
            l.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_runs_on_its_own_connection_without_stalling_others() {
    let redis = RedisServer::start();
    // One shared connection: a WAIT on it would hold every other client's requests.
    let strata = Strata::start(&redis.url(), "[upstream]\nconnections = 1\n").await;
    let mut waiter = RawClient::connect(strata.addr).await;
    let waiter_id = int_reply(&waiter.command(&["CLIENT", "ID"]).await).to_string();
    assert_eq!(&waiter.command(&["SET", "k", "v"]).await[..], b"+OK\r\n");
    // No replica will ever acknowledge: Redis blocks the WAIT until it is unblocked.
    waiter.send(&cmd(&["WAIT", "1", "0"])).await;
    support::wait_blocked(redis.port, 1).await;
    let mut other = RawClient::connect(strata.addr).await;
    for i in 0..20 {
        let value = i.to_string();
        assert_eq!(&other.command(&["SET", "k", &value]).await[..], b"+OK\r\n");
        assert_eq!(other.command(&["GET", "k"]).await, format!("${}\r\n{value}\r\n", value.len()).as_bytes());
    }
    assert_eq!(&other.command(&["CLIENT", "UNBLOCK", &waiter_id]).await[..], b":1\r\n");
    assert_eq!(&waiter.read_frame().await[..], b":0\r\n");
    assert_eq!(&waiter.command(&["GET", "k"]).await[..], b"$2\r\n19\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_runs_on_its_own_connection() {
    // READONLY is a cluster node's: a one-node cluster holding every slot.
    let redis = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let mut admin = RawClient::port(redis.port).await;
    assert_eq!(&admin.command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await[..], b"+OK\r\n");
    support::wait_until("the cluster is ok", || async {
        support::redis_info_field(redis.port, "cluster", "cluster_enabled").await.as_deref() == Some("1")
            && text_of(&RawClient::port(redis.port).await.command(&["CLUSTER", "INFO"]).await)
                .contains("cluster_state:ok")
    })
    .await;
    let strata = Strata::start(&redis.url(), "[upstream]\nconnections = 1\n").await;
    let mut reader = RawClient::connect(strata.addr).await;
    assert_eq!(&reader.command(&["READONLY"]).await[..], &admin.command(&["READONLY"]).await[..]);
    assert_eq!(&reader.command(&["GET", "k"]).await[..], b"$-1\r\n");
    let mut other = RawClient::connect(strata.addr).await;
    for _ in 0..10 {
        assert_eq!(&other.command(&["SET", "k", "v"]).await[..], b"+OK\r\n");
    }
    // One connection of strata's is in read mode (the direct one too); it ran the
    // reader's GET and none of the other client's SETs.
    let list = redis_list(redis.port).await;
    let admin_id = int_reply(&admin.command(&["CLIENT", "ID"]).await).to_string();
    let read_mode: Vec<_> = list.iter().filter(|l| l["flags"].contains('r') && l["id"] != admin_id).collect();
    assert_eq!(read_mode.len(), 1, "{list:?}");
    assert_eq!(read_mode[0]["cmd"], "get");
    assert!(list.iter().any(|l| l["cmd"] == "set" && !l["flags"].contains('r')), "{list:?}");
    assert_eq!(&reader.command(&["GET", "k"]).await[..], b"$1\r\nv\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_of_its_own_is_a_spare_opened_before_the_client_asked() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.command(&["PING"]).await[..], b"+PONG\r\n");
    // strata's shared connections and two spares per protocol (the default), besides the
    // one asking.
    support::wait_until("strata's spare connections are open", || async {
        support::redis_info_field(redis.port, "clients", "connected_clients").await.as_deref() == Some("9")
    })
    .await;
    let before: Vec<String> = redis_list(redis.port).await.into_iter().map(|l| l["id"].clone()).collect();
    for (args, want) in [(&["MULTI"][..], &b"+OK\r\n"[..]), (&["SET", "k", "v"], b"+QUEUED\r\n")] {
        assert_eq!(&c.command(args).await[..], want);
    }
    // Redis saw the transaction's first command on a connection that was open already.
    let list = redis_list(redis.port).await;
    let in_multi: Vec<_> = list.iter().filter(|l| l["flags"] == "x").collect();
    assert_eq!(in_multi.len(), 1, "{list:?}");
    let id = &in_multi[0]["id"];
    assert!(before.contains(id), "connection {id} was opened for the client; open before: {before:?}");
    assert_eq!(&c.command(&["EXEC"]).await[..], b"*1\r\n+OK\r\n");
}
