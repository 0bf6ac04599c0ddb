//! Read-through operations: LISTEN/NOTIFY invalidation (also after PostgreSQL restarts),
//! `strata check-config --db` preparing every rule's statements, and the read-through
//! counters and breaker states in `INFO strata`.

mod support;

#[path = "support/pg.rs"]
mod pg;

#[path = "support/pg_rig.rs"]
mod pg_rig;

use std::process::Command;
use std::time::Duration;

use pg::PgServer;
use pg_rig::{
    DISCOUNT_RULE, PRODUCT_RULE, Rig, SCHEMA, TIERS, bulk, counter, eventually, info, info_field, show,
    within,
};
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;
use support::int_reply;

// LISTEN/NOTIFY invalidation.

/// Waits until strata's LISTEN connection is up.
async fn wait_for_listener(pg: &PgServer) {
    eventually!(
        Duration::from_secs(5),
        "strata LISTENs",
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'") != "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_deletes_the_cached_key_and_the_next_get_loads_the_new_row() {
    within(20, async {
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", PRODUCT_RULE).await;
        let addr = rig.strata.addr;
        rig.pg.psql(
            "CREATE FUNCTION products_changed() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_notify('strata_invalidate', 'product:details:' || NEW.id); RETURN NEW; END $$; \
             CREATE TRIGGER products_notify AFTER UPDATE ON products FOR EACH ROW EXECUTE FUNCTION products_changed();",
        );
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        for id in [1, 2, 42] {
            let key = format!("product:details:{id}");
            assert_eq!(show(&c.command(&["GET", &key]).await), show(&bulk(&rig.product_json(id))));
        }
        assert_eq!(int_reply(&direct.command(&["EXISTS", "product:details:42"]).await), 1);
        wait_for_listener(&rig.pg).await;

        rig.pg.psql("UPDATE products SET name = 'Updated' WHERE id = 42");
        let took = eventually!(
            Duration::from_secs(1),
            "the trigger's NOTIFY deletes the key",
            direct.command(&["EXISTS", "product:details:42"]).await.as_ref() == b":0\r\n"
        );
        eprintln!("UPDATE → key gone from Redis in {took:?}");
        let updated = rig.product_json(42);
        assert!(updated.contains("Updated"));
        assert_eq!(show(&c.command(&["GET", "product:details:42"]).await), show(&bulk(&updated)));

        // A payload may name several keys, one a line.
        rig.pg.psql("SELECT pg_notify('strata_invalidate', E'product:details:1\\nproduct:details:2')");
        eventually!(
            Duration::from_secs(1),
            "both keys deleted",
            direct.command(&["EXISTS", "product:details:1", "product:details:2"]).await.as_ref() == b":0\r\n"
        );
        assert_eq!(counter(addr, "strata_readthrough_invalidations").await, 3);

        // A notification also forgets "no row": an INSERT trigger makes a new row visible
        // before the negative TTL (30 s by default) runs out.
        assert_eq!(show(&c.command(&["GET", "product:details:8"]).await), "$-1\r\n");
        rig.pg.psql(
            "INSERT INTO products VALUES (8, 'Stool', 999); SELECT pg_notify('strata_invalidate', 'product:details:8')",
        );
        let want = show(&bulk(&rig.product_json(8)));
        eventually!(
            Duration::from_secs(1),
            "the new row is read through",
            show(&c.command(&["GET", "product:details:8"]).await) == want
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_resume_after_postgres_restarts() {
    within(30, async {
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        wait_for_listener(&rig.pg).await;
        rig.pg.kill();
        rig.pg.resume();
        wait_for_listener(&rig.pg).await;
        assert_eq!(show(&c.command(&["GET", "product:details:3"]).await), show(&bulk(&rig.product_json(3))));
        rig.pg.psql("SELECT pg_notify('strata_invalidate', 'product:details:3')");
        let took = eventually!(
            Duration::from_secs(1),
            "NOTIFY after a database restart deletes the key",
            direct.command(&["EXISTS", "product:details:3"]).await.as_ref() == b":0\r\n"
        );
        eprintln!("NOTIFY after a PostgreSQL restart → key gone in {took:?}");
    })
    .await;
}

// `check-config --db`.

fn check_config_db(pg: &PgServer, rule: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("strata.toml");
    let text = format!("{TIERS}\n[postgres]\nurl = \"{}\"\n{rule}", pg.url());
    std::fs::write(&file, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["check-config", "--db"])
        .arg(&file)
        .output()
        .expect("run strata check-config");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_db_prepares_every_rule_statement() {
    within(30, async {
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let rule = |query: &str| {
            format!("[[read_through]]\nkey = \"product:details:{{id}}\"\nquery = \"{query}\"\n")
        };

        let (code, text) =
            check_config_db(&pg, &rule("SELEC row_to_json(p)::text FROM products p WHERE p.id = $1"));
        assert_eq!(code, Some(64), "broken SQL: {text}");
        assert!(text.contains("read_through[0].query"), "{text}");

        let (code, text) =
            check_config_db(&pg, &rule("SELECT row_to_json(x)::text FROM nope x WHERE x.id = $1"));
        assert_eq!(code, Some(64), "missing table: {text}");
        assert!(text.contains("read_through[0].query"), "{text}");
        assert!(text.contains("nope"), "the message names the missing relation: {text}");

        let (code, text) =
            check_config_db(&pg, &rule("SELECT row_to_json(p)::text FROM products p WHERE p.id = $1"));
        assert_eq!(code, Some(0), "valid: {text}");

        let with_bad_batch = format!(
            "{}batch_query = \"SELECT p.id, row_to_json(p)::text FROM products p WHERE p.id = ANY($1)\"\n",
            rule("SELECT fetch_product($1)")
        );
        let (code, text) = check_config_db(&pg, &with_bad_batch);
        assert_eq!(code, Some(64), "batch taking int[]: {text}");
        assert!(
            text.contains("read_through[0].batch_query") && !text.contains("read_through[0].query"),
            "{text}"
        );

        let (code, text) =
            check_config_db(&pg, &format!("{}{}", rule("SELECT fetch_product($1)"), DISCOUNT_RULE));
        assert_eq!(code, Some(0), "two valid rules: {text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_db_flags_a_value_column_strata_cannot_read() {
    within(20, async {
        let pg = PgServer::start();
        pg.psql(SCHEMA);
        let rule = "[[read_through]]\nkey = \"product:details:{id}\"\n\
                    query = \"SELECT (p.price_cents / 100.0)::numeric(10,2) FROM products p WHERE p.id = $1\"\n";
        let (code, text) = check_config_db(&pg, rule);
        assert_eq!(code, Some(64), "a numeric column (strata asks for a cast): {text}");
        assert!(text.contains("read_through[0].query"), "{text}");
    })
    .await;
}

// INFO strata.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_strata_reports_read_through_counters_and_both_breakers() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        c.command(&["GET", "product:details:1"]).await;
        c.command(&["GET", "product:details:1"]).await;
        c.command(&["GET", "product:details:5"]).await;
        c.command(&["GET", "product:details:5"]).await;
        let text = info(rig.strata.addr).await;
        for (field, value) in [
            ("strata_readthrough_queries", "2"),
            ("strata_readthrough_rows", "1"),
            ("strata_readthrough_no_rows", "1"),
            ("strata_readthrough_negative_hits", "1"),
            ("strata_readthrough_errors", "0"),
            ("strata_readthrough_write_backs", "1"),
            ("strata_readthrough_invalidations", "0"),
            ("strata_breaker_redis_state", "closed"),
            ("strata_breaker_postgres_state", "closed"),
        ] {
            assert_eq!(info_field(&text, field).as_deref(), Some(value), "{field} in\n{text}");
        }
        let p50: u64 = info_field(&text, "strata_readthrough_latency_p50_us")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("latency in\n{text}"));
        assert!(p50 > 0, "query latency recorded");
        // CONFIG RESETSTAT clears them.
        assert_eq!(c.command(&["CONFIG", "RESETSTAT"]).await.as_ref(), b"+OK\r\n");
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_queries").await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_may_name_a_rule_and_its_captures() {
    within(20, async {
        // PRODUCT_RULE is named product_details.
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&c.command(&["GET", "product:details:42"]).await),
            show(&bulk(&rig.product_json(42)))
        );
        wait_for_listener(&rig.pg).await;
        rig.pg.psql("SELECT pg_notify('strata_invalidate', '@product_details 42')");
        eventually!(
            Duration::from_secs(1),
            "the rule's key for capture 42 is deleted",
            direct.command(&["EXISTS", "product:details:42"]).await.as_ref() == b":0\r\n"
        );
    })
    .await;
}
