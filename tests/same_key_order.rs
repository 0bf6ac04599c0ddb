//! Same-key order across a client's own connection and the shared ones, with one of
//! strata's upstream connections made slow for real: strata talks to Redis through a
//! relay that holds back every byte of a connection for `LAG` once that connection has
//! carried the word `slowly`. Redis reads its sockets in turn, so a request written on a
//! slow connection runs after one written later on a quick one, unless strata waits for
//! the first one's reply before sending the second. Straight to Redis, a client that
//! pipelines and closes is always served before a client that connects after it.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{RawClient, RedisServer, Strata, cmd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the relay holds back a slow connection's bytes.
const LAG: Duration = Duration::from_millis(150);

/// Starts the relay in front of Redis on `redis_port`; returns its address.
async fn slow_relay(redis_port: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let redis = TcpStream::connect(("127.0.0.1", redis_port)).await.expect("relay to redis");
            tokio::spawn(relay(client, redis));
        }
    });
    addr
}

/// Copies both ways; towards Redis, each chunk after the first that said `slowly` waits `LAG`.
async fn relay(client: TcpStream, redis: TcpStream) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_redis, mut to_redis) = redis.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_redis, &mut to_client).await;
    });
    let mut slow = false;
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n) = from_client.read(&mut chunk).await {
        if n == 0 {
            return;
        }
        slow |= chunk[..n].windows(6).any(|w| w == b"slowly");
        if slow {
            tokio::time::sleep(LAG).await;
        }
        if to_redis.write_all(&chunk[..n]).await.is_err() {
            return;
        }
    }
}

async fn setup() -> (RedisServer, Strata) {
    let redis = RedisServer::start();
    let relay = slow_relay(redis.port).await;
    let strata = Strata::start(&format!("redis://{relay}"), "").await;
    (redis, strata)
}

/// The list at `key` on Redis itself, once it has `len` items.
async fn list_when_complete(redis: &RedisServer, key: &str, len: usize) -> String {
    let mut check = RawClient::port(redis.port).await;
    for _ in 0..500 {
        if support::int_reply(&check.command(&["LLEN", key]).await) >= len as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = check.command(&["LRANGE", key, "0", "-1"]).await;
    String::from_utf8_lossy(&reply).split("\r\n").skip(2).step_by(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_clients_writes_on_its_own_connection_are_not_overtaken() {
    let (redis, strata) = setup().await;
    let mut a = RawClient::connect(strata.addr).await;
    // WATCH gives the client a connection of its own; the pushes make it slow.
    assert_eq!(&a.command(&["WATCH", "elsewhere"]).await[..], b"+OK\r\n");
    a.send(&[cmd(&["RPUSH", "k", "slowly"]), cmd(&["RPUSH", "k", "a"])].concat()).await;
    drop(a);
    let mut b = RawClient::connect(strata.addr).await;
    assert!(b.command(&["RPUSH", "k", "b"]).await.starts_with(b":"));
    assert_eq!(list_when_complete(&redis, "k", 3).await, "slowly a b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_clients_own_connection_waits_for_earlier_shared_writes() {
    let (redis, strata) = setup().await;
    // Make the shared connection slow first (the pool has one per protocol).
    let mut a = RawClient::connect(strata.addr).await;
    a.send(&[cmd(&["ECHO", "slowly"]), cmd(&["RPUSH", "k", "a"])].concat()).await;
    drop(a);
    let mut b = RawClient::connect(strata.addr).await;
    assert_eq!(&b.command(&["WATCH", "elsewhere"]).await[..], b"+OK\r\n");
    assert!(b.command(&["RPUSH", "k", "b"]).await.starts_with(b":"));
    assert_eq!(list_when_complete(&redis, "k", 2).await, "a b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_holds_the_keys_of_its_queued_commands() {
    let (redis, strata) = setup().await;
    let mut a = RawClient::connect(strata.addr).await;
    assert_eq!(&a.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["RPUSH", "k", "a"]).await[..], b"+QUEUED\r\n");
    // From here the connection is slow: EXEC reaches Redis LAG late.
    a.send(&[cmd(&["ECHO", "slowly"]), cmd(&["EXEC"])].concat()).await;
    drop(a);
    let mut b = RawClient::connect(strata.addr).await;
    assert!(b.command(&["RPUSH", "k", "b"]).await.starts_with(b":"));
    assert_eq!(list_when_complete(&redis, "k", 2).await, "a b");
}

/// A key held by a blocked command would wait for the very push that unblocks it: BLPOP
/// and what follows it on the client's connection take no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_client_holds_no_key_on_its_own_connection() {
    let (_redis, strata) = setup().await;
    let mut a = RawClient::connect(strata.addr).await;
    a.send(&[cmd(&["BLPOP", "q", "0"]), cmd(&["SET", "k", "1"])].concat()).await;
    support::wait_blocked(_redis.port, 1).await;
    let mut b = RawClient::connect(strata.addr).await;
    let pipeline = [cmd(&["SET", "k", "2"]), cmd(&["RPUSH", "q", "x"])].concat();
    b.send(&pipeline).await;
    let within = Duration::from_secs(5);
    for expected in [&b"+OK\r\n"[..], b":1\r\n"] {
        let reply = tokio::time::timeout(within, b.read_frame()).await.expect("b is not held up");
        assert_eq!(&reply[..], expected);
    }
    let popped = tokio::time::timeout(within, a.read_frame()).await.expect("a is woken");
    assert_eq!(&popped[..], b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    assert_eq!(&a.read_frame().await[..], b"+OK\r\n");
}

/// A client that waited for a key keeps its place in the waiting room, which holds later
/// clients back from the keys it has read, until its requests are sent. Once it sends a
/// command that blocks, it must give its place up: here its HELLO waits behind its own
/// BLPOP, and the push that would wake the BLPOP names a key the client had read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_blocked_after_waiting_for_a_key_holds_nobody_up() {
    let (_redis, strata) = setup().await;
    let mut p = RawClient::connect(strata.addr).await;
    assert_eq!(&p.command(&["WATCH", "elsewhere"]).await[..], b"+OK\r\n");
    // The shared connection turns slow with `k` in flight: p's SET k must wait for it.
    let mut s = RawClient::connect(strata.addr).await;
    s.send(&[cmd(&["ECHO", "slowly"]), cmd(&["SET", "k", "s"])].concat()).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    p.send(&[cmd(&["SET", "k", "p"]), cmd(&["BLPOP", "q", "0"]), cmd(&["HELLO", "3"])].concat()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut u = RawClient::connect(strata.addr).await;
    let within = Duration::from_secs(5);
    let pushed = tokio::time::timeout(within, u.command(&["RPUSH", "q", "x"])).await;
    assert_eq!(&pushed.expect("the push is not held up")[..], b":1\r\n");
    assert_eq!(&p.read_frame().await[..], b"+OK\r\n");
    let popped = tokio::time::timeout(within, p.read_frame()).await.expect("the BLPOP is woken");
    assert_eq!(&popped[..], b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    assert!(p.read_frame().await.starts_with(b"%"), "HELLO's reply");
}

/// A request with several keys takes their stripes all or none: finding the second taken,
/// it gives the first back and waits. Giving it back must not wake the client itself,
/// or it tries again at once, forever, and strata's thread never gets to the reply that
/// would free the key (every client hung, found by the differential test under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_one_of_its_keys_taken_waits_without_spinning() {
    let (_redis, strata) = setup().await;
    // b is held by a slow request on a client's own connection.
    let mut s = RawClient::connect(strata.addr).await;
    assert_eq!(&s.command(&["WATCH", "elsewhere"]).await[..], b"+OK\r\n");
    s.send(&[cmd(&["ECHO", "slowly"]), cmd(&["SET", "b", "s"])].concat()).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut c = RawClient::connect(strata.addr).await;
    c.send(&cmd(&["MSET", "a", "1", "b", "c"])).await;
    let within = Duration::from_secs(5);
    let mut u = RawClient::connect(strata.addr).await;
    let pong = tokio::time::timeout(within, u.command(&["PING"])).await.expect("strata still answers");
    assert_eq!(&pong[..], b"+PONG\r\n");
    let set = tokio::time::timeout(within, c.read_frame()).await.expect("the MSET goes once b is free");
    assert_eq!(&set[..], b"+OK\r\n");
}

/// Inside MULTI a blocking command is only queued; EXEC runs it, so EXEC holds its key:
/// here a later push must not reach the list before the transaction's BLPOP did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_queued_in_multi_holds_its_key_for_exec() {
    let (redis, strata) = setup().await;
    let mut a = RawClient::connect(strata.addr).await;
    assert_eq!(&a.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&a.command(&["BLPOP", "k", "0"]).await[..], b"+QUEUED\r\n");
    a.send(&[cmd(&["ECHO", "slowly"]), cmd(&["EXEC"])].concat()).await;
    let mut b = RawClient::connect(strata.addr).await;
    assert!(b.command(&["RPUSH", "k", "b"]).await.starts_with(b":"));
    assert_eq!(&a.read_frame().await[..], b"+QUEUED\r\n");
    let exec = a.read_frame().await;
    // The EXEC ran first (its BLPOP found nothing), then the push: "b" stays.
    assert!(exec.starts_with(b"*2\r\n*-1\r\n"), "{}", String::from_utf8_lossy(&exec));
    assert_eq!(list_when_complete(&redis, "k", 1).await, "b");
}

/// A client's own connection has no command timeout (it carries commands that wait), so
/// a key it holds while Redis stalls would hold everyone else on that key for as long:
/// the wait for it is bounded by `command_timeout_ms`, after which the request goes on
/// and fails as any request to a stalled Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_on_a_stalled_own_connection_does_not_hang_others() {
    let redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), "[upstream]\ncommand_timeout_ms = 300\n").await;
    let mut p = RawClient::connect(strata.addr).await;
    assert_eq!(&p.command(&["WATCH", "elsewhere"]).await[..], b"+OK\r\n");
    redis.signal("STOP");
    p.send(&cmd(&["SET", "k", "p"])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = RawClient::connect(strata.addr).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), s.command(&["GET", "k"])).await;
    redis.signal("CONT");
    let reply = answered.expect("a request on the key is answered while Redis stalls");
    assert!(
        reply.starts_with(b"-"),
        "an error, as from any stalled request: {}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(&p.read_frame().await[..], b"+OK\r\n", "the held request goes through once Redis is back");
}
