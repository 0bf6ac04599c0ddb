//! The stripe table's rules, one connection or several.

use super::*;
use crate::upstream::fence::Pinned;

#[test]
fn a_stripe_belongs_to_one_connection_while_requests_are_in_flight() {
    let fences = Arc::new(Fences::default());
    let s = stripe_of(b"k");
    let mut held = Held::default();
    let w = Access::Write;
    assert_eq!(fences.try_take(s, 0, w, false), Ok(()));
    held.push(&fences, s, w);
    assert_eq!(fences.try_take(s, 0, w, false), Ok(()));
    held.push(&fences, s, w);
    assert_eq!(fences.try_take(s, 3, w, false), Err(Conflict::Owner(0)));
    assert_eq!(fences.try_take(s, 3, Access::Read, false), Err(Conflict::Owner(0)), "a read follows a write");
    let job = held.take();
    assert!(held.is_empty());
    assert_eq!(fences.in_flight(s), 2);
    drop(job);
    assert_eq!(fences.in_flight(s), 0);
    assert_eq!(fences.try_take(s, 3, w, false), Ok(()));
    assert_eq!(fences.try_take(s, 0, w, false), Err(Conflict::Owner(3)));
}

#[test]
fn reads_share_a_stripe_across_connections_and_a_write_waits_for_them() {
    let fences = Arc::new(Fences::default());
    let s = stripe_of(b"hot");
    let (r, w) = (Access::Read, Access::Write);
    let mut on_0 = Held::default();
    fences.try_take(s, 0, r, false).unwrap();
    on_0.push(&fences, s, r);
    assert_eq!(fences.try_take(s, 0, w, false), Ok(()), "a write joins its own connection's reads");
    on_0.push(&fences, s, w);
    assert_eq!(fences.try_take(s, 1, r, false), Err(Conflict::Owner(0)), "not past a write");
    drop(on_0.take());
    let mut on_1 = Held::default();
    fences.try_take(s, 1, r, false).unwrap();
    on_1.push(&fences, s, r);
    assert_eq!(fences.try_take(s, 2, w, false), Err(Conflict::Owner(1)), "the write moves to the reads");
    fences.try_take(s, 2, r, false).unwrap();
    on_1.push(&fences, s, r);
    assert_eq!(fences.try_take(s, 1, w, false), Err(Conflict::Busy), "reads on two connections");
    assert_eq!(fences.in_flight(s), 2);
    drop(on_1);
    assert_eq!(fences.in_flight(s), 0);
    assert_eq!(fences.try_take(s, 2, w, false), Ok(()));
}

#[test]
fn a_write_back_holds_its_key_against_every_connection_until_it_is_answered() {
    let fences = Arc::new(Fences::default());
    let s = stripe_of(b"product:1");
    let hold = fences.hold_for_write_back(b"product:1").expect("an idle stripe");
    assert!(fences.held_for_write_back(s));
    assert!(fences.hold_for_write_back(b"product:1").is_none(), "one hold at a time");
    for conn in [0, 5] {
        assert_eq!(fences.try_take(s, conn, Access::Write, false), Err(Conflict::Busy));
        assert_eq!(fences.try_take(s, conn, Access::Read, false), Err(Conflict::Busy));
    }
    drop(hold);
    assert!(!fences.held_for_write_back(s));
    assert_eq!(fences.try_take(s, 0, Access::Write, false), Ok(()));
    assert!(fences.hold_for_write_back(b"product:1").is_none(), "not while a request is in flight");
}

#[test]
fn a_request_has_the_stripes_of_its_keys_each_once() {
    let table = crate::command::CommandTable::builtin();
    let stripes = |argv: &[&[u8]]| {
        let mut out = Stripes::new();
        stripes_of(table.lookup(argv).map(|i| &**i), argv, &mut out);
        out
    };
    let (a, b) = (stripe_of(b"a"), stripe_of(b"b"));
    assert_ne!(a, b, "the test needs two stripes");
    assert_eq!(&stripes(&[b"SET", b"a", b"1"])[..], &[a]);
    assert_eq!(&stripes(&[b"RPUSH", b"b", b"x", b"y"])[..], &[b]);
    assert_eq!(&stripes(&[b"MSET", b"a", b"1", b"b", b"2", b"a", b"3"])[..], &[a, b]);
    assert_eq!(&stripes(&[b"EVAL", b"return 1", b"2", b"b", b"a"])[..], &[b, a]);
    assert!(stripes(&[b"PING"]).is_empty());
}

#[test]
fn a_clients_own_connection_holds_its_keys_against_everyone_else() {
    let fences = Arc::new(Fences::default());
    let s = stripe_of(b"k");
    let (mine, other) = (Arc::new(Pinned::default()), Arc::new(Pinned::default()));
    assert_eq!(fences.try_take_pinned(s, &mine, false), Ok(()));
    let mut first = Held::default();
    first.push_pinned(&fences, &mine, s);
    assert_eq!(fences.try_take_pinned(s, &mine, false), Ok(()), "the holder adds to its own hold");
    let mut second = Held::default();
    second.push_pinned(&fences, &mine, s);
    for access in [Access::Read, Access::Write] {
        assert_eq!(fences.try_take(s, 0, access, false), Err(Conflict::Busy), "shared waits");
    }
    assert_eq!(fences.try_take_pinned(s, &other, false), Err(Conflict::Busy), "another client waits");
    drop(first);
    assert_eq!(fences.try_take_pinned(s, &other, false), Err(Conflict::Busy), "until every reply is in");
    drop(second);
    assert_eq!(fences.in_flight(s), 0);
    assert_eq!(fences.try_take_pinned(s, &other, false), Ok(()));
    let mut theirs = Held::default();
    theirs.push_pinned(&fences, &other, s);
    assert_eq!(fences.try_take_pinned(s, &mine, false), Err(Conflict::Busy), "no stale claim on it");
    drop(theirs);
    assert_eq!(fences.try_take(s, 0, Access::Write, false), Ok(()));
    assert_eq!(fences.try_take_pinned(s, &mine, false), Err(Conflict::Busy), "and it waits for shared");
}

#[test]
fn a_request_that_may_block_counts_until_it_is_answered() {
    let pinned = Arc::new(Pinned::default());
    let mut held = Held::default();
    held.mark_blocking(&pinned);
    let job = held.take();
    assert!(pinned.may_block() && job.is_empty());
    drop(held);
    assert!(pinned.may_block());
    drop(job);
    assert!(!pinned.may_block());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_client_is_woken_by_the_release_not_by_a_timer() {
    let fences = Arc::new(Fences::default());
    let s = stripe_of(b"k");
    let bound = std::time::Duration::from_secs(3600);
    for release_first in [false, true] {
        fences.try_take(s, 0, Access::Write, false).unwrap();
        let mut held = Held::default();
        held.push(&fences, s, Access::Write);
        let watch = fences.watch();
        assert_eq!(fences.try_take(s, 1, Access::Write, false), Err(Conflict::Owner(0)));
        let started = tokio::time::Instant::now();
        if release_first {
            // Released between the failed try and the wait: the watch still saw it.
            drop(held);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                drop(held);
            });
        }
        watch.released(bound).await;
        let waited = started.elapsed();
        assert!(waited <= std::time::Duration::from_millis(5), "woken after {waited:?}");
        assert_eq!(fences.try_take(s, 1, Access::Write, false), Ok(()));
        fences.release(s);
    }
}
