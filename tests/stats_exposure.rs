//! What strata says about itself and what it never exposes: the identity lines of
//! `INFO strata` (version, uptime, clients, upstream state) and the label values of
//! `/metrics`, which come from the configuration, never from keys.

mod support;

#[path = "support/tier_rig.rs"]
mod tier_rig;

use std::collections::BTreeSet;

use support::{RawClient, RedisServer, Strata, http_get, wait_until};
use tier_rig::{TIERS, connect, fields, info};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_strata_shows_version_uptime_clients_and_upstream_state() {
    let mut redis = RedisServer::start();
    let strata = Strata::start(&redis.url(), TIERS).await;
    let mut con = connect(&strata.url()).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(RawClient::connect(strata.addr).await);
    }
    for c in &mut others {
        assert_eq!(c.command(&["PING"]).await.as_ref(), b"+PONG\r\n");
    }
    let stats = fields(&info(&mut con, &["strata"]).await);
    let get = |name: &str| {
        stats.get(name).unwrap_or_else(|| panic!("INFO strata has no {name}")).trim().to_string()
    };
    assert_eq!(get("strata_version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(get("strata_connected_clients"), "4", "the INFO client and three others");
    assert_eq!(get("strata_upstream"), format!("{}/0", redis.url()));
    assert_eq!(get("strata_upstream_state"), "up");
    let first: u64 = get("strata_uptime_in_seconds").parse().expect("uptime is a number of seconds");
    assert!(first < 60, "strata just started, uptime {first}");

    drop(others);
    wait_until("uptime counts up and the closed clients are gone", || {
        let con = con.clone();
        async move {
            let mut con = con;
            let now = fields(&info(&mut con, &["strata"]).await);
            let uptime: u64 = now["strata_uptime_in_seconds"].trim().parse().unwrap_or(0);
            uptime > first && now["strata_connected_clients"].trim() == "1"
        }
    })
    .await;

    redis.kill();
    let addr = strata.addr;
    wait_until("INFO strata shows the upstream down", || async move {
        let mut c = RawClient::connect(addr).await;
        let reply = c.command(&["INFO", "strata"]).await;
        // With Redis gone strata answers INFO strata alone, or an error while it cannot.
        String::from_utf8_lossy(&reply).contains("strata_upstream_state:down")
    })
    .await;
    strata.stop().await;
}

/// Every `name{labels}` series of a Prometheus text.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

/// The values of label `name` across a Prometheus text.
fn label_values(text: &str, name: &str) -> BTreeSet<String> {
    let needle = format!("{name}=\"");
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find(&needle) {
            let value = &rest[at + needle.len()..];
            let end = value.find('"').expect("closed label value");
            out.insert(value[..end].to_string());
            rest = &value[end..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_never_label_by_key() {
    let redis = RedisServer::start();
    let (strata, admin) = Strata::start_with_admin(&redis.url(), TIERS).await;
    let mut via = RawClient::connect(strata.addr).await;
    let traffic = |from: usize, to: usize| {
        (from..to).flat_map(|i| {
            let n = format!("{i}zq");
            [
                vec!["SET".to_string(), format!("op:{n}"), "v".into()],
                vec!["GET".to_string(), format!("op:{n}")],
                vec!["HSET".to_string(), format!("sess:{n}"), "f".into(), "v".into()],
                vec!["HGET".to_string(), format!("u{n}:cart"), "f".into()],
                vec!["GET".to_string(), format!("plain:{n}")],
            ]
        })
    };
    for command in traffic(0, 5) {
        let words: Vec<&str> = command.iter().map(String::as_str).collect();
        assert!(!via.command(&words).await.starts_with(b"-"), "{words:?}");
    }
    let (status, before) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for command in traffic(5, 205) {
        let words: Vec<&str> = command.iter().map(String::as_str).collect();
        assert!(!via.command(&words).await.starts_with(b"-"), "{words:?}");
    }
    let (_, after) = http_get(admin, "/metrics").await;
    assert!(!after.contains("zq"), "a key made it into /metrics:\n{after}");
    assert_eq!(series(&before), series(&after), "200 more distinct keys added no series");
    let tiers: BTreeSet<String> = ["op", "jit", "sess", "nomax", "count"].map(String::from).into();
    let prefixes: BTreeSet<String> =
        ["op:", "jit:", "sess:", "*:cart", "nomax:", "cnt:"].map(String::from).into();
    let seen_tiers = label_values(&after, "tier");
    let seen_prefixes = label_values(&after, "prefix");
    assert!(seen_tiers.is_subset(&tiers), "tier labels {seen_tiers:?} are configured tier names");
    assert!(
        seen_prefixes.is_subset(&prefixes),
        "prefix labels {seen_prefixes:?} are configured prefixes and patterns"
    );
    assert!(seen_prefixes.contains("op:") && seen_prefixes.contains("*:cart"), "{seen_prefixes:?}");
    strata.stop().await;
}
