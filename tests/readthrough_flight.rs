//! Read-through single flight: a thousand concurrent cold GETs, a pipeline of cold GETs of
//! one key, and a thousand GETs over multiplexed connections each cost one PostgreSQL query.

mod support;

#[path = "support/pg.rs"]
mod pg;

#[path = "support/pg_rig.rs"]
mod pg_rig;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pg_rig::{PRODUCT_RULE, Rig, bulk, show, within};
use support::cmd;
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;

// Single flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_cold_gets_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = Bytes::from(bulk(&rig.product_json(42)));
        let mut clients = Vec::with_capacity(1000);
        for _ in 0..1000 {
            clients.push(rig.client().await);
        }
        let gate = Arc::new(tokio::sync::Barrier::new(1000));
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    gate.wait().await;
                    c.command(&["GET", "product:details:42"]).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("client task"), want);
        }
        eprintln!("1000 concurrent cold GETs answered in {:?}", started.elapsed());
        assert_eq!(rig.calls(), 1, "single flight: one query for 1000 concurrent misses");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_cold_gets_of_one_key_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = show(&bulk(&rig.product_json(42)));
        let mut c = rig.client().await;
        let batch: Vec<u8> = (0..20).flat_map(|_| cmd(&["GET", "product:details:42"])).collect();
        let started = Instant::now();
        c.send(&batch).await;
        for _ in 0..20 {
            assert_eq!(show(&c.read_frame().await), want);
        }
        eprintln!("20 pipelined cold GETs answered in {:?}, {} queries", started.elapsed(), rig.calls());
        assert_eq!(rig.calls(), 1, "one query for 20 pipelined misses of one key");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_gets_over_multiplexed_connections_cost_one_query() {
    within(30, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let want = rig.product_json(42);
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
        let client = redis::Client::open(rig.strata.url()).expect("url");
        let mut connections = Vec::new();
        for _ in 0..4 {
            connections
                .push(client.get_multiplexed_async_connection_with_config(&config).await.expect("connect"));
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let mut con = connections[i % 4].clone();
                tokio::spawn(async move {
                    redis::cmd("GET").arg("product:details:42").query_async::<String>(&mut con).await
                })
            })
            .collect();
        let (mut right, mut failed) = (0, Vec::new());
        for task in tasks {
            match task.await.expect("task") {
                Ok(value) if value == want => right += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        eprintln!(
            "{right} of 1000 GETs right after {:?}, {} queries; first failure: {:?}",
            started.elapsed(),
            rig.calls(),
            failed.first()
        );
        assert!(failed.is_empty(), "{} GETs failed (response timeout 5 s)", failed.len());
        assert_eq!(rig.calls(), 1, "single flight across multiplexed connections");
    })
    .await;
}
