//! Sliding tiers against a longer explicit TTL: the refresh after a read is
//! `PEXPIRE k <ttl> GT`, which pushes a TTL out and never shortens one.

mod support;

#[path = "support/tier_rig.rs"]
mod tier_rig;

use support::cmd;
use tier_rig::{Rig, SESS_DEFAULT, SESS_MAX, TIERS, assert_ttl, pttl, same_batch, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_read_never_shortens_a_longer_explicit_ttl() {
    let rig = Rig::start(TIERS).await;
    let (mut via, mut plain, mut direct) = rig.clients().await;
    let long = SESS_MAX - 100_000; // inside the clamp, far past the sliding default
    let long_text = long.to_string();
    setup(
        &mut direct,
        &mut plain,
        &[
            &["SET", "sess:long", "v", "PX", &long_text],
            &["HSET", "sess:longh", "f", "v"],
            &["PEXPIRE", "sess:longh", &long_text],
            &["HSET", "u9:cart", "sku", "1"],
            &["PEXPIRE", "u9:cart", &long_text],
            &["SET", "sess:short", "v", "PX", "5000"],
        ],
    )
    .await;
    let reads: &[&[&str]] = &[
        &["GET", "sess:long"],
        &["HGETALL", "sess:longh"],
        &["HGET", "u9:cart", "sku"],
        &["GET", "sess:short"],
    ];
    let batch: Vec<u8> = reads.iter().flat_map(|r| cmd(r)).collect();
    same_batch(&mut via, &mut plain, &batch, reads.len()).await;
    // The refresh ran (the short TTL was pushed out to the default) ...
    assert_ttl(&mut direct, "sess:short", SESS_DEFAULT).await;
    // ... and left the longer TTLs where they were.
    for key in ["sess:long", "sess:longh", "u9:cart"] {
        assert_ttl(&mut direct, key, long).await;
    }
    // A write on the sliding tier does not shorten it either.
    assert_eq!(via.command(&["HSET", "sess:longh", "g", "w"]).await.as_ref(), b":1\r\n");
    assert_ttl(&mut direct, "sess:longh", long).await;
    assert!(pttl(&mut direct, "sess:long").await > SESS_DEFAULT);
    rig.strata.stop().await;
}
