//! Read-through loading from PostgreSQL end to end, against a real redis-server and a
//! throwaway PostgreSQL cluster: miss → query → write-back with the tier TTL, negative
//! caching, hash rules, MGET batches, json and unreadable column types, and injection safety.

mod support;

#[path = "support/pg.rs"]
mod pg;

#[path = "support/pg_rig.rs"]
mod pg_rig;

use std::time::Duration;

use pg_rig::{
    DISCOUNT_RULE, PRODUCT_RULE, Rig, array, bulk, counter, discount_fields, eventually, flat, info,
    info_field, raw, show, within,
};
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;
use support::{RawClient, int_reply};

// Miss → PostgreSQL → write-back with the tier TTL; then a Redis hit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_get_loads_from_postgres_writes_back_with_tier_ttl_then_hits_redis() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let want = rig.product_json(1);
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["EXISTS", "product:details:1"]).await), ":0\r\n", "cold cache");

        let reply = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&reply), show(&bulk(&want)), "the row's JSON from PostgreSQL");
        assert_eq!(rig.calls(), 1, "one query for the miss");
        assert_eq!(show(&direct.command(&["GET", "product:details:1"]).await), show(&bulk(&want)));
        let ttl = int_reply(&direct.command(&["PTTL", "product:details:1"]).await);
        assert!(3_590_000 < ttl && ttl <= 3_600_000, "written back with the tier default TTL, got {ttl}");

        let again = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&again), show(&bulk(&want)));
        assert_eq!(rig.calls(), 1, "the second GET is a Redis hit");

        // GETEX is a read-through read too.
        let reply = c.command(&["GETEX", "product:details:2"]).await;
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(2))));
        assert_eq!(rig.calls(), 2);

        let text = info(rig.strata.addr).await;
        for (field, value) in [
            ("strata_readthrough_queries", "2"),
            ("strata_readthrough_rows", "2"),
            ("strata_readthrough_no_rows", "0"),
            ("strata_readthrough_write_backs", "2"),
        ] {
            assert_eq!(info_field(&text, field).as_deref(), Some(value), "{field} in\n{text}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_already_in_redis_is_served_without_a_query() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["SET", "product:details:2", "newer"]).await), "+OK\r\n");
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:2"]).await), show(&bulk("newer")));
        assert_eq!(rig.calls(), 0, "a hit never queries");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_another_database_is_not_read_through() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["SELECT", "3"]).await), "+OK\r\n");
        assert_eq!(show(&c.command(&["GET", "product:details:3"]).await), "$-1\r\n");
        assert_eq!(rig.calls(), 0, "the rules describe the URL's database, not database 3");
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["EXISTS", "product:details:3"]).await), ":0\r\n");
        // The same key on the rules' own database is read through.
        let mut home = rig.client().await;
        assert_eq!(
            show(&home.command(&["GET", "product:details:3"]).await),
            show(&bulk(&rig.product_json(3)))
        );
        assert_eq!(rig.calls(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_never_clobbers_a_write_made_while_the_query_ran() {
    within(20, async {
        let slow = PRODUCT_RULE.replace("fetch_product(", "fetch_product_slow(");
        let rig = Rig::start("", &slow).await;
        let addr = rig.strata.addr;
        let reader = tokio::spawn(async move {
            let mut c = RawClient::connect(addr).await;
            c.command(&["GET", "product:details:3"]).await
        });
        // Write only once the query is running, so the GET surely missed in Redis.
        eventually!(
            Duration::from_secs(8),
            "the slow query runs",
            rig.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%fetch_product_slow%' \
                 AND pid <> pg_backend_pid()"
            ) != "0"
        );
        let mut writer = rig.client().await;
        assert_eq!(show(&writer.command(&["SET", "product:details:3", "newer"]).await), "+OK\r\n");
        let loaded = reader.await.expect("reader task");
        assert_eq!(show(&loaded), show(&bulk(&rig.product_json(3))), "the miss is answered from PostgreSQL");
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&direct.command(&["GET", "product:details:3"]).await),
            show(&bulk("newer")),
            "SET … NX write-back left the newer value alone"
        );
        assert_eq!(counter(addr, "strata_readthrough_write_backs").await, 0);
    })
    .await;
}

// Negative caching.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_row_is_remembered_for_negative_ttl_then_queried_again() {
    within(20, async {
        let rule = format!("{PRODUCT_RULE}negative_ttl = \"200ms\"\n");
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(rig.calls(), 1, "the second miss is answered by the negative cache");
        assert_eq!(counter(addr, "strata_readthrough_negative_hits").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 1);
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&direct.command(&["EXISTS", "product:details:999"]).await),
            ":0\r\n",
            "nothing cached"
        );

        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(show(&c.command(&["GET", "product:details:999"]).await), "$-1\r\n");
        assert_eq!(rig.calls(), 2, "after negative_ttl the query runs again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_strata_forgets_the_negative_entry() {
    within(20, async {
        let rule = format!("{PRODUCT_RULE}negative_ttl = \"30s\"\n");
        let rig = Rig::start("", &rule).await;
        let mut c = rig.client().await;
        assert_eq!(show(&c.command(&["GET", "product:details:7"]).await), "$-1\r\n");
        rig.pg.psql("INSERT INTO products VALUES (7, 'Shelf', 2500)");
        assert_eq!(show(&c.command(&["GET", "product:details:7"]).await), "$-1\r\n", "still negative");
        assert_eq!(rig.calls(), 1);

        assert_eq!(show(&c.command(&["SET", "product:details:7", "manual"]).await), "+OK\r\n");
        // Remove it behind strata's back: the next GET misses in Redis again.
        let mut direct = rig.direct().await;
        assert_eq!(int_reply(&direct.command(&["DEL", "product:details:7"]).await), 1);
        let reply = c.command(&["GET", "product:details:7"]).await;
        assert_eq!(show(&reply), show(&bulk(&rig.product_json(7))), "the SET forgot 'no row'");
        assert_eq!(rig.calls(), 2);
    })
    .await;
}

// Hash rules.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_rule_answers_hgetall_hget_hmget_hexists_and_writes_back_a_hash_with_ttl() {
    within(20, async {
        let rig = Rig::start("", DISCOUNT_RULE).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        let mut direct = rig.direct().await;

        let summer = discount_fields("summer", "3", "15", Some("garden"), "1");
        let reply = c.command(&["HGETALL", "discount:summer:v3"]).await;
        assert_eq!(show(&reply), show(&flat(&summer)), "columns → fields, int as text, bool as 1");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(show(&direct.command(&["TYPE", "discount:summer:v3"]).await), "+hash\r\n");
        assert_eq!(show(&direct.command(&["HGETALL", "discount:summer:v3"]).await), show(&flat(&summer)));
        let ttl = int_reply(&direct.command(&["PTTL", "discount:summer:v3"]).await);
        assert!(3_590_000 < ttl && ttl <= 3_600_000, "hash written back with the tier TTL, got {ttl}");
        assert_eq!(counter(addr, "strata_readthrough_write_backs").await, 1);

        // Hits, and missing fields of a hash that exists: no query.
        assert_eq!(show(&c.command(&["HGET", "discount:summer:v3", "percent_off"]).await), show(&bulk("15")));
        assert_eq!(show(&c.command(&["HGET", "discount:summer:v3", "nope"]).await), "$-1\r\n");
        let hmget = c.command(&["HMGET", "discount:summer:v3", "category", "nope", "active"]).await;
        assert_eq!(show(&hmget), show(&array(&[Some("garden"), None, Some("1")])));
        assert_eq!(show(&c.command(&["HEXISTS", "discount:summer:v3", "active"]).await), ":1\r\n");
        assert_eq!(show(&c.command(&["HEXISTS", "discount:summer:v3", "nope"]).await), ":0\r\n");
        assert_eq!(
            counter(addr, "strata_readthrough_queries").await,
            1,
            "no query for fields of a cached hash"
        );

        // Cold field reads load the whole row. NULL columns are left out.
        assert_eq!(show(&c.command(&["HGET", "discount:winter:v1", "percent_off"]).await), show(&bulk("20")));
        assert_eq!(show(&c.command(&["HGET", "discount:winter:v1", "category"]).await), "$-1\r\n");
        let winter = discount_fields("winter", "1", "20", None, "0");
        assert_eq!(show(&direct.command(&["HGETALL", "discount:winter:v1"]).await), show(&flat(&winter)));
        let hmget = c.command(&["HMGET", "discount:spring:v2", "category", "percent_off", "nope"]).await;
        assert_eq!(show(&hmget), show(&array(&[Some("tools"), Some("5"), None])));
        assert_eq!(show(&c.command(&["HEXISTS", "discount:autumn:v1", "active"]).await), ":1\r\n");
        assert_eq!(show(&c.command(&["HGETALL", "discount:none:v1"]).await), "*0\r\n", "no row: empty");
        assert_eq!(show(&c.command(&["HGET", "discount:none:v2", "active"]).await), "$-1\r\n");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 6);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_client_gets_a_map_for_hgetall_loaded_from_postgres() {
    within(20, async {
        let rig = Rig::start("", &format!("{DISCOUNT_RULE}{PRODUCT_RULE}")).await;
        let mut c = rig.client().await;
        let hello = c.command(&["HELLO", "3"]).await;
        assert!(hello.starts_with(b"%"), "HELLO 3 answers a map: {}", show(&hello));
        let reply = c.command(&["HGETALL", "discount:fall:v9"]).await;
        let mut want = b"%5\r\n".to_vec();
        for f in discount_fields("fall", "9", "30", Some("hats"), "1") {
            want.extend(bulk(&f));
        }
        assert_eq!(show(&reply), show(&want));
        // The same key is now a Redis hit; Redis' RESP3 reply is a map too.
        let hit = c.command(&["HGETALL", "discount:fall:v9"]).await;
        assert_eq!(show(&hit), show(&want));
        assert_eq!(show(&c.command(&["HGET", "discount:fall:v8", "x"]).await), "_\r\n", "RESP3 null");
        assert_eq!(show(&c.command(&["HGETALL", "discount:fall:v7"]).await), "%0\r\n");
        // String reads built by strata use RESP3 nulls too.
        assert_eq!(show(&c.command(&["GET", "product:details:404"]).await), "_\r\n");
        let mget = c.command(&["MGET", "product:details:1", "product:details:405"]).await;
        assert_eq!(show(&mget), format!("*2\r\n{}_\r\n", show(&bulk(&rig.product_json(1)))));
    })
    .await;
}

// 4. MGET with partial misses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_fills_misses_from_one_batch_query_in_key_order() {
    within(20, async {
        let rule = format!(
            "{PRODUCT_RULE}batch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n"
        );
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut direct = rig.direct().await;
        assert_eq!(show(&direct.command(&["SET", "product:details:1", "cached-1"]).await), "+OK\r\n");
        let mut c = rig.client().await;
        let keys =
            ["MGET", "product:details:1", "product:details:2", "product:details:404", "product:details:3"];
        let (two, three) = (rig.product_json(2), rig.product_json(3));
        let want = array(&[Some("cached-1"), Some(&two), None, Some(&three)]);
        assert_eq!(show(&c.command(&keys).await), show(&want));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "three misses, one batch query");
        assert_eq!(rig.calls(), 0, "the per-key query never ran");
        for (key, value) in [("product:details:2", &two), ("product:details:3", &three)] {
            assert_eq!(show(&direct.command(&["GET", key]).await), show(&bulk(value)), "{key} written back");
            let ttl = int_reply(&direct.command(&["PTTL", key]).await);
            assert!(3_590_000 < ttl && ttl <= 3_600_000, "{key} PTTL {ttl}");
        }
        assert_eq!(show(&direct.command(&["EXISTS", "product:details:404"]).await), ":0\r\n");

        // Again: all hits but 404, which the negative cache answers.
        assert_eq!(show(&c.command(&keys).await), show(&want));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_negative_hits").await, 1);

        // A key with no rule and an untiered key stay as Redis answered.
        let mixed = c.command(&["MGET", "plain", "product:details:42", "product:other:1"]).await;
        assert_eq!(show(&mixed), show(&array(&[None, Some(&rig.product_json(42)), None])));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_batch_consults_the_negative_cache() {
    within(20, async {
        let rule = format!(
            "{PRODUCT_RULE}negative_ttl = \"30s\"\nbatch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n"
        );
        let rig = Rig::start("", &rule).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        let keys = ["MGET", "product:details:404", "product:details:405"];
        assert_eq!(show(&c.command(&keys).await), show(&array(&[None, None])));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_no_rows").await, 2);
        // Each key alone is answered by the negative cache...
        assert_eq!(show(&c.command(&["GET", "product:details:404"]).await), "$-1\r\n");
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "GET uses the negative cache");
        // ...but not both together.
        assert_eq!(show(&c.command(&keys).await), show(&array(&[None, None])));
        assert_eq!(counter(addr, "strata_readthrough_queries").await, 1, "MGET of two known-missing keys");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_are_read_and_unreadable_types_are_named_not_missing() {
    within(20, async {
        let rules = "[[read_through]]\nkey = \"product:details:{id}\"\n\
                     query = \"SELECT row_to_json(p) FROM products p WHERE p.id = $1\"\n\
                     [[read_through]]\nkey = \"product:price:{id}\"\n\
                     query = \"SELECT (p.price_cents / 100.0)::numeric(10,2) FROM products p WHERE p.id = $1\"\n";
        let rig = Rig::start("", rules).await;
        let mut c = rig.client().await;
        let json = c.command(&["GET", "product:details:1"]).await;
        assert_eq!(show(&json), show(&bulk(&rig.product_json(1))), "a json column is read as its text");
        // numeric is not a type strata reads: the client is told to cast, and the row is
        // not mistaken for a missing one.
        let price = c.command(&["GET", "product:price:1"]).await;
        assert!(show(&price).starts_with("-ERR strata: read-through query failed: column"), "{}", show(&price));
        assert!(show(&price).contains("::text"), "{}", show(&price));
        assert_eq!(counter(rig.strata.addr, "strata_readthrough_no_rows").await, 0);
    })
    .await;
}

// 5. Injection safety.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_are_bound_as_parameters_never_spliced_into_sql() {
    within(20, async {
        let rules = format!(
            "{PRODUCT_RULE}batch_query = \"SELECT p.id::text, row_to_json(p)::text FROM products p WHERE p.id::text = ANY($1)\"\n\
             {DISCOUNT_RULE}\n[[read_through]]\nkey = \"user:{{name}}\"\n\
             query = \"SELECT row_to_json(u)::text FROM users u WHERE u.name = $1\"\n"
        );
        let rig = Rig::start("", &rules).await;
        let evil_name = "o'brien\"; DROP TABLE users; --";
        rig.pg.psql(&format!(
            "INSERT INTO users (name, email) VALUES ('{}', 'ob@example.com')",
            evil_name.replace('\'', "''")
        ));
        let mut c = rig.client().await;

        let hostile: [&[u8]; 9] = [
            b"product:details:1; DROP TABLE products;--",
            b"product:details:1' OR '1'='1",
            b"product:details:1)); DELETE FROM products; --",
            b"product:details:1\0",
            b"product:details:\xff\xfe",
            b"user:' OR ''='",
            b"user:alice'; DROP TABLE users; --",
            b"user:ali\0ce",
            b"user:\xc3\x28",
        ];
        for key in hostile {
            let reply = raw(&mut c, &[b"GET", key]).await;
            assert_eq!(show(&reply), "$-1\r\n", "GET {:?}", String::from_utf8_lossy(key));
        }
        for key in [&b"discount:x' OR '1'='1:v1"[..], b"discount:summer:v3 OR 1=1", b"discount:su\0mmer:v3"] {
            let reply = raw(&mut c, &[b"HGETALL", key]).await;
            assert_eq!(show(&reply), "*0\r\n", "HGETALL {:?}", String::from_utf8_lossy(key));
        }
        let mget = raw(
            &mut c,
            &[b"MGET", b"product:details:1'); DROP TABLE products;--", b"product:details:2", b"product:details:3\0"],
        )
        .await;
        assert_eq!(show(&mget), show(&array(&[None, Some(&rig.product_json(2)), None])), "batch path");

        // A capture with quotes and a semicolon matches its row literally.
        let user_key = format!("user:{evil_name}");
        let reply = c.command(&["GET", &user_key]).await;
        let want = rig.pg.psql("SELECT row_to_json(u)::text FROM users u WHERE u.email = 'ob@example.com'");
        assert!(want.contains("DROP TABLE users"), "{want}");
        assert_eq!(show(&reply), show(&bulk(&want)));

        assert_eq!(rig.pg.psql("SELECT count(*) FROM products"), "4", "products untouched");
        assert_eq!(rig.pg.psql("SELECT count(*) FROM users"), "2", "users untouched");
        assert_eq!(rig.pg.psql("SELECT count(*) FROM discount_rules"), "5");
    })
    .await;
}

// A pipeline of read-through GETs: hits cost nothing extra and keep one note; a miss
// anywhere in it is filled from PostgreSQL in its place.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_gets_fills_each_miss_in_place_and_keeps_reply_order() {
    within(20, async {
        let rig = Rig::start("", PRODUCT_RULE).await;
        let mut direct = rig.direct().await;
        direct.command(&["SET", "product:details:42", "cached-42"]).await;
        direct.command(&["SET", "plain", "p"]).await;
        let mut c = rig.client().await;
        // Hits (42), misses with a row (1, 3), a miss without one (999), and reads no rule
        // covers, in one write. Keys of several lengths, so the batch's key entries are
        // found by position.
        let gets = [
            "product:details:42",
            "product:details:1",
            "product:details:42",
            "plain",
            "product:details:3",
            "product:details:999",
            "product:details:42",
            "product:other:1",
        ];
        let mut batch = Vec::new();
        for key in gets {
            batch.extend(support::encode(&[b"GET", key.as_bytes()]));
        }
        // An inline GET is sent on its own; its key comes from its own bytes.
        batch.extend(b"GET product:details:2\r\n");
        c.send(&batch).await;
        let want: Vec<Vec<u8>> = vec![
            bulk("cached-42"),
            bulk(&rig.product_json(1)),
            bulk("cached-42"),
            bulk("p"),
            bulk(&rig.product_json(3)),
            b"$-1\r\n".to_vec(),
            bulk("cached-42"),
            b"$-1\r\n".to_vec(),
            bulk(&rig.product_json(2)),
        ];
        for (i, expected) in want.iter().enumerate() {
            assert_eq!(
                show(&c.read_frame().await),
                show(expected),
                "reply {i} ({})",
                gets.get(i).unwrap_or(&"inline")
            );
        }
        // Each missing key was queried once, the inline GET's too.
        assert_eq!(rig.calls(), 4, "queries for 1, 3, 999 and 2");
        assert_eq!(
            show(&direct.command(&["GET", "product:details:3"]).await),
            show(&bulk(&rig.product_json(3)))
        );
    })
    .await;
}

// Merged GETs share a note, not a rule: each miss is loaded by its own key's rule.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_under_different_rules_each_use_their_own_rule() {
    within(20, async {
        let name_rule = r#"
[[read_through]]
name = "product_name"
key = "product:name:{id}"
query = "SELECT name FROM products WHERE id = $1"
"#;
        let rig = Rig::start("", &format!("{PRODUCT_RULE}\n{name_rule}")).await;
        let mut c = rig.client().await;
        // One tier, so one note: details (rule 1), name (rule 2), details again.
        let mut batch = Vec::new();
        for key in ["product:details:1", "product:name:2", "product:name:3", "product:details:3"] {
            batch.extend(support::encode(&[b"GET", key.as_bytes()]));
        }
        c.send(&batch).await;
        let want = [bulk(&rig.product_json(1)), bulk("Desk"), bulk("Chair"), bulk(&rig.product_json(3))];
        for (i, expected) in want.iter().enumerate() {
            assert_eq!(show(&c.read_frame().await), show(expected), "reply {i}");
        }
        let mut direct = rig.direct().await;
        assert_eq!(
            show(&direct.command(&["GET", "product:name:2"]).await),
            show(&bulk("Desk")),
            "written back"
        );
    })
    .await;
}
