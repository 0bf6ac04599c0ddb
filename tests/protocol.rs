//! Protocol behaviour through strata, checked byte for byte against the Redis behind it.

mod support;

use bytes::Bytes;
use support::{RawClient, RedisServer, Strata, cmd, encode};

/// Runs the same raw requests against Redis and strata; replies must be identical bytes.
async fn assert_same_bytes(redis: &RedisServer, strata: &Strata, setup: &[Vec<u8>], probes: &[Vec<u8>]) {
    let mut direct = RawClient::port(redis.port).await;
    let mut proxied = RawClient::connect(strata.addr).await;
    for request in setup {
        direct.send(request).await;
        direct.read_frame().await;
    }
    for request in probes {
        direct.send(request).await;
        proxied.send(request).await;
        let (want, got) = (direct.read_frame().await, proxied.read_frame().await);
        assert_eq!(got, want, "request {:?}", String::from_utf8_lossy(request));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_replies_are_forwarded_byte_for_byte() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let setup =
        [cmd(&["HSET", "h", "z", "1", "a", "2", "m", "3"]), cmd(&["ZADD", "z", "1.5", "x", "-0", "y"])];
    let probes = [
        cmd(&["HGETALL", "h"]),
        cmd(&["GET", "missing"]),
        cmd(&["BLPOP", "nolist", "0.01"]),
        cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        cmd(&["INCR", "h"]),
        cmd(&["NOSUCHCOMMAND", "x"]),
        cmd(&["EXISTS", "h", "z", "q"]),
        cmd(&["CONFIG", "GET", "maxmemory*"]),
        // Unknown commands that look like a special one before a `|` are Redis' to refuse:
        // none of these may close, switch or take over the connection.
        cmd(&["QUIT|x"]),
        cmd(&["HELLO|x", "3"]),
        cmd(&["CLIENT|x", "SETNAME", "foo"]),
        cmd(&["SUBSCRIBE|x", "c"]),
        cmd(&["GEORADIUSBYMEMBER_RO_AND_MORE", "k"]),
        cmd(&["PING"]),
    ];
    assert_same_bytes(&redis, &strata, &setup, &probes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_after_hello_is_byte_equal_to_direct_redis() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut direct = RawClient::port(redis.port).await;
    let mut proxied = RawClient::connect(strata.addr).await;
    let hello = proxied.command(&["HELLO", "3"]).await;
    assert!(hello.starts_with(b"%7\r\n"), "HELLO 3 answers a RESP3 map: {hello:?}");
    assert!(String::from_utf8_lossy(&hello).contains("proto\r\n:3"));
    direct.command(&["HELLO", "3"]).await;
    direct.command(&["HSET", "h", "z", "1", "a", "2", "m", "3", "b", "4"]).await;
    direct.command(&["ZADD", "z", "1.5e10", "x", "inf", "y"]).await;
    direct.command(&["SADD", "s", "one"]).await;
    for probe in [
        vec!["HGETALL", "h"],
        vec!["ZSCORE", "z", "x"],
        vec!["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        vec!["SMEMBERS", "s"],
        vec!["GET", "missing"],
        vec!["CONFIG", "GET", "maxmemory*"],
        vec!["BLPOP", "nolist", "0.01"],
    ] {
        let (want, got) = (direct.command(&probe).await, proxied.command(&probe).await);
        assert_eq!(got, want, "{probe:?}");
    }
    // Back to RESP2: nulls are $-1 again.
    assert!(proxied.command(&["HELLO", "2"]).await.starts_with(b"*14\r\n"));
    assert_eq!(&proxied.command(&["GET", "missing"]).await[..], b"$-1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_validates_like_redis() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    assert!(c.command(&["HELLO", "4"]).await.starts_with(b"-NOPROTO"));
    assert!(c.command(&["HELLO", "3", "BOGUS"]).await.starts_with(b"-ERR Syntax error"));
    let hello = c.command(&["HELLO", "2", "SETNAME", "app1"]).await;
    assert!(hello.starts_with(b"*14\r\n"));
    assert_eq!(&c.command(&["CLIENT", "GETNAME"]).await[..], b"$4\r\napp1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_upstream_credentials_and_as_another_user() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let mut admin = RawClient::port(redis.port).await;
    admin.command(&["AUTH", "s3cret"]).await;
    let acl = admin.command(&["ACL", "SETUSER", "alice", "on", ">alicepw", "~alice:*", "+@all"]).await;
    assert_eq!(&acl[..], b"+OK\r\n");
    let strata = Strata::start(&format!("redis://:s3cret@127.0.0.1:{}", redis.port), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    assert_eq!(&c.command(&["AUTH", "s3cret"]).await[..], b"+OK\r\n");
    assert!(c.command(&["AUTH", "wrong"]).await.starts_with(b"-WRONGPASS"));
    assert!(c.command(&["HELLO", "3", "AUTH", "default", "wrong"]).await.starts_with(b"-WRONGPASS"));
    // As alice, the ACL of alice applies: on her own connection, not the shared one.
    assert_eq!(&c.command(&["AUTH", "alice", "alicepw"]).await[..], b"+OK\r\n");
    assert_eq!(&c.command(&["SET", "alice:1", "x"]).await[..], b"+OK\r\n");
    assert!(c.command(&["SET", "bob:1", "x"]).await.starts_with(b"-NOPERM"));
    let mut other = RawClient::connect(strata.addr).await;
    assert_eq!(&other.command(&["SET", "bob:1", "x"]).await[..], b"+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_and_binary_safe_keys() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    c.send(b"PING\r\nSET greeting \"hello world\"\r\nGET greeting\r\n").await;
    assert_eq!(&c.read_frame().await[..], b"+PONG\r\n");
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    assert_eq!(&c.read_frame().await[..], b"$11\r\nhello world\r\n");
    let key: &[u8] = b"k\0\r\n\xff";
    let value: &[u8] = b"\r\n\0v\r\n";
    c.send(&encode(&[b"SET", key, value])).await;
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    c.send(&encode(&[b"GET", key])).await;
    assert_eq!(&c.read_frame().await[..], b"$6\r\n\r\n\0v\r\n\r\n");
    let mut direct = RawClient::port(redis.port).await;
    direct.send(&encode(&[b"STRLEN", key])).await;
    assert_eq!(&direct.read_frame().await[..], b":6\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_command_pipeline_answers_in_order() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    let mut batch = Vec::new();
    for i in 0..10_000 {
        // Mix shared-route commands with a locally answered one to test ordering across both.
        if i % 1000 == 500 {
            batch.extend(cmd(&["CLIENT", "ID"]));
        } else {
            batch.extend(cmd(&["INCR", "counter"]));
        }
    }
    c.send(&batch).await;
    let mut expected = 0;
    for i in 0..10_000 {
        let reply = c.read_frame().await;
        if i % 1000 == 500 {
            assert!(reply.starts_with(b":"), "CLIENT ID reply at {i}");
        } else {
            expected += 1;
            assert_eq!(reply, format!(":{expected}\r\n").into_bytes(), "reply {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_values_round_trip() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    let value: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.send(&encode(&[b"SET", b"big", &value])).await;
    assert_eq!(&c.read_frame().await[..], b"+OK\r\n");
    c.send(&encode(&[b"GET", b"big"])).await;
    let reply = c.read_frame().await;
    let header = format!("${}\r\n", value.len());
    assert!(reply.starts_with(header.as_bytes()));
    assert_eq!(&reply[header.len()..reply.len() - 2], &value[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_get_an_error_and_close() {
    let redis = RedisServer::start();
    let strata = Strata::start(
        &redis.url(),
        "[limits]\nmax_bulk_len = 1024\nmax_multibulk_len = 8\nmax_client_buffer = 4096\n",
    )
    .await;
    for garbage in [
        &b"*abc\r\n"[..],
        b"*1\r\n$-5\r\n",
        b"*1\r\n+x\r\n",
        b"*9\r\n",
        b"*1\r\n$999999999999\r\n",
        b"*1\r\n$2\r\nabcd\r\n",
        // Leading zeros: Redis refuses them, and on a shared connection its protocol
        // error would close that connection under every client.
        b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n",
        b"*02\r\n$4\r\nPING\r\n",
    ] {
        let mut c = RawClient::connect(strata.addr).await;
        c.send(garbage).await;
        let reply = c.read_frame().await;
        assert!(reply.starts_with(b"-ERR Protocol error"), "{garbage:?} -> {reply:?}");
        assert!(c.is_closed().await, "{garbage:?} closes the connection");
    }
    // Earlier good requests in the same batch are still answered, in order.
    let mut c = RawClient::connect(strata.addr).await;
    c.send(b"*1\r\n$4\r\nPING\r\n*x\r\n").await;
    assert_eq!(&c.read_frame().await[..], b"+PONG\r\n");
    assert!(c.read_frame().await.starts_with(b"-ERR Protocol error"));
    // An inline line longer than the buffer limit without a newline is refused, not buffered forever.
    let mut c = RawClient::connect(strata.addr).await;
    c.send(&vec![b'A'; 70 * 1024]).await;
    assert!(c.read_frame().await.starts_with(b"-ERR Protocol error"));
}

/// Redis never runs an inline line with a NUL byte and never answers it (the connection
/// goes silent); strata answers a protocol error and closes: a documented divergence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_command_with_a_nul_byte_is_refused_not_run() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    c.send(b"PING\r\nSET nul:k v\0x\r\nSET nul:after v\r\n").await;
    assert_eq!(&c.read_frame().await[..], b"+PONG\r\n");
    let reply = c.read_frame().await;
    assert_eq!(&reply[..], b"-ERR Protocol error: NUL byte in inline request\r\n");
    assert!(c.is_closed().await, "the connection is closed");
    let mut direct = RawClient::port(redis.port).await;
    assert_eq!(&direct.command(&["EXISTS", "nul:k", "nul:after"]).await[..], b":0\r\n", "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_getkeys_exposes_the_command_table() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "").await;
    let mut c = RawClient::connect(strata.addr).await;
    let mut direct = RawClient::port(redis.port).await;
    for words in [
        vec!["EVAL", "return 1", "2", "k1", "k2", "arg"],
        vec!["XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0"],
        vec!["MSET", "a", "1", "b", "2"],
        vec!["ZUNIONSTORE", "dst", "2", "a", "b"],
        vec!["SORT", "src", "LIMIT", "0", "5", "STORE", "dst"],
    ] {
        let mut ours = vec!["STRATA", "GETKEYS"];
        ours.extend(&words);
        let mut theirs = vec!["COMMAND", "GETKEYS"];
        theirs.extend(&words);
        assert_eq!(c.command(&ours).await, direct.command(&theirs).await, "{words:?}");
    }
    // The probe that loads the upstream's table runs in the background after start-up.
    let mut info = Bytes::new();
    for _ in 0..200 {
        info = c.command(&["STRATA", "COMMANDS"]).await;
        if String::from_utf8_lossy(&info).contains("upstream") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(String::from_utf8_lossy(&info).contains("upstream"), "{info:?}");
}
