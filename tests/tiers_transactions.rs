//! Cache tiers inside transactions and pipelines: the client's MULTI/EXEC, WATCH (conflicts,
//! reads on a sliding tier, writes without a wrapping MULTI), nested MULTI and WATCH, PERSIST
//! refused mid-transaction, long mixed pipelines and RESP3 — every reply byte-equal to a
//! plain redis-server, and tiered keys still get their TTLs.

mod support;

#[path = "support/tier_rig.rs"]
mod tier_rig;

use bytes::Bytes;
use support::{RawClient, cmd};
use tier_rig::{
    DEFAULT, Rig, SESS_DEFAULT, TIERS, assert_ttl, connect, field, fields, info, pttl, same, same_batch,
    setup, show,
};

// ---------------------------------------------------------------------------------------
// Transactions, pipelines, RESP3

/// Sends `commands` as one transaction pipelined in one write (to strata and the
/// reference) and checks every reply, EXEC's included, is byte-equal.
async fn same_transaction(via: &mut RawClient, plain: &mut RawClient, commands: &[&[&str]]) -> Bytes {
    let mut batch = cmd(&["MULTI"]);
    commands.iter().for_each(|c| batch.extend(cmd(c)));
    batch.extend(cmd(&["EXEC"]));
    same_batch(via, plain, &batch, commands.len() + 2).await.pop().expect("EXEC reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_multi_exec_matches_redis_and_tiered_keys_get_ttls() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    setup(&mut direct, &mut plain, &[&["HSET", "sess:tx", "f", "v"]]).await;
    direct.command(&["PEXPIRE", "sess:tx", "5000"]).await;
    let exec = same_transaction(
        &mut via,
        &mut plain,
        &[
            &["HSET", "op:tx:h", "f", "v"],
            &["SET", "plain:tx", "v"],
            &["LPUSH", "op:tx:l", "a", "b"],
            &["INCR", "op:tx:n"],
            &["GET", "op:tx:n"],
            &["HGETALL", "sess:tx"],
            &["SET", "op:tx:s", "v"],
            &["MSET", "op:tx:m", "1", "plain:tx2", "2"],
            &["LPUSH", "op:tx:h", "wrongtype"],
        ],
    )
    .await;
    assert!(exec.starts_with(b"*9\r\n"), "{}", show(&exec));
    for key in ["op:tx:h", "op:tx:l", "op:tx:n", "op:tx:s", "op:tx:m"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:tx", SESS_DEFAULT).await;
    assert_eq!(pttl(&mut direct, "plain:tx").await, -1);
    assert_eq!(pttl(&mut direct, "plain:tx2").await, -1);
    // The same transaction one command at a time.
    for args in [&["MULTI"][..], &["HSET", "op:tx:h2", "f", "v"], &["INCR", "op:tx:n"], &["EXEC"]] {
        same(&mut via, &mut plain, args).await;
    }
    assert_ttl(&mut direct, "op:tx:h2", DEFAULT).await;
    // A queueing error aborts the whole transaction, as in Redis.
    let exec =
        same_transaction(&mut via, &mut plain, &[&["HSET", "op:tx:a", "f", "v"], &["HSET", "op:tx:a"]]).await;
    assert!(exec.starts_with(b"-EXECABORT"), "{}", show(&exec));
    assert_eq!(pttl(&mut direct, "op:tx:a").await, -2);
    // DISCARD, then a transaction without tiered keys.
    for args in [&["MULTI"][..], &["SET", "op:tx:d", "v"], &["DISCARD"], &["GET", "op:tx:d"]] {
        same(&mut via, &mut plain, args).await;
    }
    same_transaction(&mut via, &mut plain, &[&["SET", "plain:only", "1"], &["INCR", "plain:only"]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_conflict_still_aborts_and_an_undisturbed_watch_commits() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let mut other = RawClient::connect(rig.strata.addr).await;
    via.command(&["SET", "op:w", "1"]).await;
    assert_eq!(&via.command(&["WATCH", "op:w"]).await[..], b"+OK\r\n");
    assert_eq!(&other.command(&["SET", "op:w", "2"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["HSET", "op:w:h", "f", "v"]).await[..], b"+QUEUED\r\n");
    assert_eq!(&via.command(&["EXEC"]).await[..], b"*-1\r\n");
    assert_eq!(pttl(&mut direct, "op:w:h").await, -2);
    // Without a conflicting write the transaction commits exactly as in Redis.
    setup(&mut direct, &mut plain, &[&["SET", "op:w2", "1"]]).await;
    for args in
        [&["WATCH", "op:w2"][..], &["MULTI"], &["HSET", "op:w2:h", "f", "v"], &["INCR", "op:w2"], &["EXEC"]]
    {
        same(&mut via, &mut plain, args).await;
    }
    assert_ttl(&mut direct, "op:w2:h", DEFAULT).await;
    assert_ttl(&mut direct, "op:w2", DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_then_read_on_a_sliding_tier_does_not_abort_the_transaction() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    setup(&mut direct, &mut plain, &[&["SET", "sess:cas", "1"], &["HSET", "sess:cas:h", "n", "1"]]).await;
    direct.command(&["PEXPIRE", "sess:cas", "50000"]).await;
    direct.command(&["PEXPIRE", "sess:cas:h", "50000"]).await;
    // Check-and-set, the documented WATCH pattern: WATCH, read, MULTI, write, EXEC.
    let mut execs = Vec::new();
    for (key, read) in [("sess:cas", &["GET", "sess:cas"][..]), ("sess:cas:h", &["HGETALL", "sess:cas:h"])] {
        for args in [&["WATCH", key][..], read, &["MULTI"], &["HSET", "sess:cas:other", "n", "2"], &["EXEC"]]
        {
            via.send(&cmd(args)).await;
            plain.send(&cmd(args)).await;
            let (got, want) = (via.read_frame().await, plain.read_frame().await);
            if args[0] == "EXEC" {
                execs.push((read[0], show(&got), show(&want)));
            }
        }
        via.command(&["DEL", "sess:cas:other"]).await;
        plain.command(&["DEL", "sess:cas:other"]).await;
    }
    for (read, got, want) in &execs {
        assert_eq!(got, want, "EXEC after WATCH + {read}: {execs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_multi_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    // Redis answers the nested MULTI with an error, does not queue it, and still runs EXEC.
    let commands: &[&[&str]] = &[&["HSET", "op:n:h", "f", "v"], &["MULTI"], &["INCR", "op:n:c"]];
    let exec = same_transaction(&mut via, &mut plain, commands).await;
    assert_eq!(&exec[..], b"*2\r\n:1\r\n:1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    let commands: &[&[&str]] = &[&["HSET", "op:n:h", "f", "v"], &["WATCH", "op:n:h"]];
    let exec = same_transaction(&mut via, &mut plain, commands).await;
    assert_eq!(&exec[..], b"*1\r\n:1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_refused_inside_a_transaction_keeps_exec_exact() {
    let rig = Rig::start(TIERS).await;
    let (mut via, _plain, mut direct) = rig.clients().await;
    assert_eq!(&via.command(&["MULTI"]).await[..], b"+OK\r\n");
    assert_eq!(&via.command(&["HSET", "op:n:p", "f", "v"]).await[..], b"+QUEUED\r\n");
    let refused = via.command(&["PERSIST", "op:n:p"]).await;
    assert!(refused.starts_with(b"-ERR strata: PERSIST refused"), "{}", show(&refused));
    // Redis never saw the PERSIST: EXEC holds the HSET's reply only (or aborts, as a
    // queueing error would in Redis) and never strata's own PEXPIRE replies.
    let exec = via.command(&["EXEC"]).await;
    assert!(&exec[..] == b"*1\r\n:1\r\n" || exec.starts_with(b"-EXECABORT"), "EXEC: {}", show(&exec));
    assert!(pttl(&mut direct, "op:n:p").await != -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_inside_a_transaction_are_counted_by_their_result() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, _direct) = rig.clients().await;
    let exec =
        same_transaction(&mut via, &mut plain, &[&["GET", "op:q:missing"], &["HGET", "op:q:h", "f"]]).await;
    assert_eq!(&exec[..], b"*2\r\n$-1\r\n$-1\r\n");
    let mut con = connect(&rig.strata.url()).await;
    let stats = fields(&info(&mut con, &["strata"]).await);
    assert_eq!((field(&stats, "tier_op_hits"), field(&stats, "tier_op_misses")), ("0".into(), "2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_and_blocking_writes_get_ttls_without_a_wrapping_multi() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    // Under WATCH strata cannot wrap in MULTI (it would end the WATCH): PEXPIREs follow.
    same(&mut via, &mut plain, &["WATCH", "plain:watched"]).await;
    same(&mut via, &mut plain, &["HSET", "op:nw:h", "f", "v"]).await;
    same(&mut via, &mut plain, &["HSET", "op:nw:str", "f", "v"]).await;
    same(&mut via, &mut plain, &["LPUSH", "op:nw:str", "x"]).await;
    same(&mut via, &mut plain, &["UNWATCH"]).await;
    assert_ttl(&mut direct, "op:nw:h", DEFAULT).await;
    // A blocking write's destination gets its TTL too.
    setup(&mut direct, &mut plain, &[&["RPUSH", "plain:bl", "a", "b"]]).await;
    let reply = same(&mut via, &mut plain, &["BLMOVE", "plain:bl", "op:nw:dst", "LEFT", "RIGHT", "1"]).await;
    assert_eq!(&reply[..], b"$1\r\na\r\n");
    assert_ttl(&mut direct, "op:nw:dst", DEFAULT).await;
    same(&mut via, &mut plain, &["BLPOP", "op:nw:empty", "0.1"]).await;
    assert_eq!(&via.command(&["PING"]).await[..], b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_mixing_tiered_and_untiered_keys_reply_in_order() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let commands: &[&[&str]] = &[
        &["SET", "op:p:a", "1"],
        &["SET", "plain:p:a", "1"],
        &["HSET", "op:p:h", "f", "v"],
        &["HSET", "plain:p:h", "f", "v"],
        &["GET", "op:p:a"],
        &["INCR", "op:p:a"],
        &["LPUSH", "plain:p:l", "x"],
        &["MGET", "op:p:a", "plain:p:a", "op:p:missing"],
        &["HGET", "op:p:a", "f"],
        &["RPUSH", "sess:p:l", "a", "b"],
        &["LRANGE", "sess:p:l", "0", "-1"],
        &["SADD", "jit:p:s", "m"],
        &["MSET", "op:p:m", "1", "plain:p:m", "2", "sess:p:m", "3"],
        &["DEL", "plain:p:a"],
        &["EXISTS", "op:p:a", "plain:p:a"],
        &["PING"],
    ];
    // More requests than max_pipeline_depth (1024), so back-pressure is part of the path.
    let mut batch = Vec::new();
    for _ in 0..100 {
        commands.iter().for_each(|c| batch.extend(cmd(c)));
    }
    same_batch(&mut via, &mut plain, &batch, commands.len() * 100).await;
    for key in ["op:p:a", "op:p:h", "op:p:m"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:p:l", SESS_DEFAULT).await;
    for key in ["plain:p:h", "plain:p:l", "plain:p:m"] {
        assert_eq!(pttl(&mut direct, key).await, -1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_replies_are_byte_equal_to_redis() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    for c in [&mut via, &mut plain] {
        assert!(c.command(&["HELLO", "3"]).await.starts_with(b"%"));
    }
    let commands: &[&[&str]] = &[
        &["HSET", "op:r3:h", "a", "1", "b", "2"],
        &["HGETALL", "op:r3:h"],
        &["ZINCRBY", "op:r3:z", "1.5", "m"],
        &["ZSCORE", "op:r3:z", "m"],
        &["ZRANGE", "op:r3:z", "0", "-1", "WITHSCORES"],
        &["INCRBYFLOAT", "op:r3:f", "2.5"],
        &["SADD", "sess:r3:s", "1", "2"],
        &["SMEMBERS", "sess:r3:s"],
        &["HSET", "sess:r3:h", "f", "v"],
        &["HGETALL", "sess:r3:h"],
        &["GET", "sess:r3:missing"],
        &["HGETALL", "op:r3:missing"],
        &["LPUSH", "op:r3:h", "wrongtype"],
        &["SET", "op:r3:s", "v"],
    ];
    let batch: Vec<u8> = commands.iter().flat_map(|c| cmd(c)).collect();
    same_batch(&mut via, &mut plain, &batch, commands.len()).await;
    let exec = same_transaction(
        &mut via,
        &mut plain,
        &[&["HSET", "op:r3:tx", "f", "v"], &["HGETALL", "op:r3:tx"], &["ZINCRBY", "op:r3:tz", "0.25", "m"]],
    )
    .await;
    assert!(exec.starts_with(b"*3\r\n"), "{}", show(&exec));
    for key in ["op:r3:h", "op:r3:z", "op:r3:f", "op:r3:s", "op:r3:tx", "op:r3:tz"] {
        assert_ttl(&mut direct, key, DEFAULT).await;
    }
    assert_ttl(&mut direct, "sess:r3:s", SESS_DEFAULT).await;
}
