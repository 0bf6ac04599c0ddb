//! When a loaded row is written back to Redis, and when it is not: a hash only into an
//! absent key (`strata_hset_absent`), never after a `DEL` or an invalidation that came
//! while the query ran, never under the client's `WATCH`; and at most `max_inflight`
//! queries at once, further misses waiting for a slot; each statement prepared once. A
//! miss is answered before its write-back, yet a write that follows the answer, from any
//! client, reaches Redis after the write-back.

mod support;

#[path = "support/pg.rs"]
mod pg;

#[path = "support/pg_rig.rs"]
mod pg_rig;

use std::time::{Duration, Instant};

use pg_rig::{DISCOUNT_RULE, PRODUCT_RULE, Rig, bulk, counter, eventually, show, within};
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;
use support::{RawClient, int_reply};

/// The product rule with a query that takes 0.2 s.
fn slow_product_rule() -> String {
    PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(")
}

/// Read-through queries PostgreSQL is running now that contain `marker`.
fn running(rig: &Rig, marker: &str) -> i64 {
    rig.pg
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker}%' \
             AND pid <> pg_backend_pid()"
        ))
        .parse()
        .expect("a count")
}

/// Starts a GET of `key` through strata on a task of its own and returns once its query runs.
async fn get_while_querying(rig: &Rig, key: &str, marker: &str) -> tokio::task::JoinHandle<bytes::Bytes> {
    let addr = rig.strata.addr;
    let key = key.to_string();
    let reader = tokio::spawn(async move { RawClient::connect(addr).await.command(&["GET", &key]).await });
    eventually!(Duration::from_secs(8), "the slow query runs", running(rig, marker) > 0);
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_del_while_the_query_ran_stops_the_write_back() {
    within(20, async {
        let rig = Rig::start("", &slow_product_rule()).await;
        let reader = get_while_querying(&rig, "product:details:3", "fetch_product_slow").await;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["DEL", "product:details:3"]).await), ":0\r\n");
        let loaded = reader.await.expect("reader task");
        assert_eq!(show(&loaded), show(&bulk(&rig.product_json(3))), "the miss is still answered");
        let mut direct = rig.direct().await;
        // The key stays absent, so SET … NX would have written: only the DEL keeps it out.
        assert_eq!(int_reply(&direct.command(&["EXISTS", "product:details:3"]).await), 0);
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_write_backs").await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_while_the_query_ran_stops_the_write_back() {
    within(20, async {
        // A 1.5 s query, so the NOTIFY surely reaches strata while it runs, not as it ends.
        let slower = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slower(");
        let rig =
            Rig::start("listen_channel = \"strata_invalidate\"\nstatement_timeout_ms = 5000\n", &slower)
                .await;
        rig.pg.psql(
            "CREATE FUNCTION fetch_product_slower(pid integer) RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(1.5); RETURN fetch_product(pid); END $$",
        );
        eventually!(
            Duration::from_secs(5),
            "strata LISTENs",
            rig.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'") != "0"
        );
        let reader = get_while_querying(&rig, "product:details:3", "fetch_product_slower").await;
        rig.pg.psql("SELECT pg_notify('strata_invalidate', 'product:details:3')");
        eventually!(
            Duration::from_secs(5),
            "strata received the NOTIFY",
            counter(rig.strata.addr, "strata_readthrough_invalidations").await == 1
        );
        assert!(!reader.is_finished(), "the NOTIFY was handled while the query still ran");
        let loaded = reader.await.expect("reader task");
        assert_eq!(show(&loaded), show(&bulk(&rig.product_json(3))), "the miss is still answered");
        let mut direct = rig.direct().await;
        assert_eq!(int_reply(&direct.command(&["EXISTS", "product:details:3"]).await), 0);
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_write_backs").await, 0);
        // Nothing changed the key since: the next miss is written back as usual.
        assert_eq!(
            show(&rig.client().await.command(&["GET", "product:details:3"]).await),
            show(&bulk(&rig.product_json(3)))
        );
        assert_eq!(int_reply(&direct.command(&["EXISTS", "product:details:3"]).await), 1);
    })
    .await;
}

/// A hash written straight into Redis (past strata, so strata cannot know of it) while the
/// query ran is kept as it is: the loaded fields are not merged into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_del_after_the_answer_is_never_undone_by_the_write_back() {
    within(60, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        rig.pg.psql("INSERT INTO products SELECT g, 'p' || g, g FROM generate_series(1000, 1199) g");
        let rows = rig.pg.psql(
            "SELECT string_agg(row_to_json(p)::text, E'\\n' ORDER BY id) FROM products p WHERE id >= 1000",
        );
        let rows: Vec<&str> = rows.lines().collect();
        assert_eq!(rows.len(), 200);
        let mut reader = rig.client().await;
        let mut shared = rig.client().await;
        // WATCH pins this client to a connection of its own.
        let mut pinned = rig.client().await;
        assert_eq!(show(&pinned.command(&["WATCH", "unrelated"]).await), "+OK\r\n");
        for id in 1000..1200 {
            let key = format!("product:details:{id}");
            let answer = reader.command(&["GET", &key]).await;
            let deleter = if id % 2 == 0 { &mut shared } else { &mut pinned };
            // At once: the write-back may still be on its way.
            let deleted = int_reply(&deleter.command(&["DEL", &key]).await);
            assert_eq!(show(&answer), show(&bulk(rows[(id - 1000) as usize])), "the miss is answered");
            assert_eq!(deleted, 1, "{key}: the write-back reached Redis before the DEL that followed");
        }
        // Nothing written back after its DEL: every key is still gone once all settled.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut direct = rig.direct().await;
        for id in 1000..1200 {
            let key = format!("product:details:{id}");
            assert_eq!(int_reply(&direct.command(&["EXISTS", &key]).await), 0, "{key} came back");
        }
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_write_backs").await, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_hash_is_written_only_into_an_absent_key() {
    within(20, async {
        let slow =
            DISCOUNT_RULE.replace("FROM discount_rules WHERE", "FROM discount_rules, pg_sleep(0.3) WHERE");
        let rig = Rig::start("", &slow).await;
        let addr = rig.strata.addr;
        let reader = tokio::spawn(async move {
            RawClient::connect(addr).await.command(&["HGETALL", "discount:summer:v3"]).await
        });
        eventually!(Duration::from_secs(8), "the slow query runs", running(&rig, "pg_sleep(0.3)") > 0);
        let mut direct = rig.direct().await;
        assert_eq!(int_reply(&direct.command(&["HSET", "discount:summer:v3", "mine", "1"]).await), 1);
        let loaded = show(&reader.await.expect("reader task"));
        assert!(loaded.contains("percent_off"), "the miss is answered from PostgreSQL: {loaded}");
        assert_eq!(
            show(&direct.command(&["HGETALL", "discount:summer:v3"]).await),
            "*2\r\n$4\r\nmine\r\n$1\r\n1\r\n"
        );
        assert_eq!(
            int_reply(&direct.command(&["PTTL", "discount:summer:v3"]).await),
            -1,
            "its TTL untouched"
        );
        // Into an absent key the hash is written, with the tier TTL (just after the answer:
        // a request through strata on the key waits for it, this direct one may not).
        let reply = show(&rig.client().await.command(&["HGETALL", "discount:spring:v2"]).await);
        assert!(reply.contains("tools"), "{reply}");
        eventually!(Duration::from_secs(5), "the write-back lands", {
            int_reply(&direct.command(&["HLEN", "discount:spring:v2"]).await) == 5
        });
        assert!(int_reply(&direct.command(&["PTTL", "discount:spring:v2"]).await) > 3_500_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_watch_a_miss_is_answered_but_not_written_back() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        assert_eq!(show(&c.command(&["WATCH", "product:details:1"]).await), "+OK\r\n");
        assert_eq!(show(&c.command(&["GET", "product:details:1"]).await), show(&bulk(&rig.product_json(1))));
        assert_eq!(
            int_reply(&direct.command(&["EXISTS", "product:details:1"]).await),
            0,
            "a write-back would abort the client's transaction"
        );
        assert_eq!(show(&c.command(&["MULTI"]).await), "+OK\r\n");
        assert_eq!(show(&c.command(&["SET", "product:details:1", "mine"]).await), "+QUEUED\r\n");
        assert_eq!(show(&c.command(&["EXEC"]).await), "*1\r\n+OK\r\n", "the transaction commits");
        assert_eq!(show(&direct.command(&["GET", "product:details:1"]).await), show(&bulk("mine")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_inflight_queries_run_and_further_misses_wait_for_a_slot() {
    within(30, async {
        let rig = Rig::start("max_inflight = 1\nstatement_timeout_ms = 5000\n", &slow_product_rule()).await;
        let addr = rig.strata.addr;
        let started = Instant::now();
        let readers: Vec<_> = [1, 2, 3, 42]
            .into_iter()
            .map(|id| {
                tokio::spawn(async move {
                    RawClient::connect(addr).await.command(&["GET", &format!("product:details:{id}")]).await
                })
            })
            .collect();
        let mut most = 0;
        while !readers.iter().all(|r| r.is_finished()) {
            most = most.max(running(&rig, "fetch_product_slow"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        for (reader, id) in readers.into_iter().zip([1, 2, 3, 42]) {
            let reply = reader.await.expect("reader task");
            assert_eq!(show(&reply), show(&bulk(&rig.product_json(id))), "every miss waited and got its row");
        }
        eprintln!("4 misses with max_inflight = 1 took {took:?}; at most {most} queries seen at once");
        assert_eq!(most, 1, "never more than max_inflight queries at once");
        assert!(took >= Duration::from_millis(800), "four 0.2 s queries one after another, took {took:?}");
        assert_eq!(rig.calls(), 4);
    })
    .await;
}

/// With one pooled connection and every statement logged, twenty misses parse the rule's
/// statement once and execute it twenty times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_is_prepared_once() {
    within(30, async {
        let rig = Rig::start("pool_size = 1\n", PRODUCT_RULE).await;
        rig.pg.psql("ALTER SYSTEM SET log_min_duration_statement = 0");
        rig.pg.psql("SELECT pg_reload_conf()");
        // Logged from now on: wait until a statement of ours shows in the log.
        eventually!(Duration::from_secs(5), "statements are logged", {
            rig.pg.psql("SELECT 'strata-log-marker'");
            rig.pg.log().contains("strata-log-marker")
        });
        let mut c = rig.client().await;
        for id in (1..=20).map(|i| if i <= 3 { i } else { 100 + i }) {
            c.command(&["GET", &format!("product:details:{id}")]).await;
        }
        assert_eq!(rig.calls(), 20, "twenty misses, twenty queries");
        let log = rig.pg.log();
        let ours = |step: &str| {
            log.lines()
                .filter(|l| l.contains(&format!(" {step} ")) && l.contains("SELECT fetch_product($1)"))
                .count()
        };
        eprintln!("parse {}, execute {}", ours("parse"), ours("execute"));
        assert_eq!(ours("execute"), 20, "the log shows every execution:\n{log}");
        assert_eq!(ours("parse"), 1, "prepared once, not per query");
    })
    .await;
}
