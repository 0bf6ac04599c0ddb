use super::*;

fn send(l: &mut Lockstep, argv: &[&str]) -> Sent {
    let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let name = argv[0].to_ascii_lowercase();
    let kind = Kind::of(&name);
    l.send(kind, &argv)
}

fn resp2() -> Lockstep {
    Lockstep::new(Protocol::Resp2, false)
}

const SUB_A: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n";
const SUB_B: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n";

#[test]
fn subscriptions_end_when_redis_counts_zero() {
    let mut l = resp2();
    assert_eq!(send(&mut l, &["SUBSCRIBE", "a", "b"]), Sent::Go);
    l.receive(SUB_A);
    l.receive(SUB_B);
    assert_eq!(l.owed(), 0);
    // A message that looks like anything is a push while subscribed.
    l.receive(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    assert_eq!(send(&mut l, &["PING"]), Sent::Go);
    l.receive(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(send(&mut l, &["UNSUBSCRIBE"]), Sent::Pause);
    l.receive(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n");
    assert!(!l.plain(), "one channel left, one confirmation owed");
    l.receive(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n");
    assert!(l.plain());
}

#[test]
fn patterns_and_channels_are_counted_apart() {
    let mut l = Lockstep::new(Protocol::Resp3, false);
    send(&mut l, &["SUBSCRIBE", "a"]);
    send(&mut l, &["PSUBSCRIBE", "p*"]);
    l.receive(b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
    l.receive(b">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n");
    send(&mut l, &["UNSUBSCRIBE"]);
    l.receive(b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n");
    assert_eq!(l.owed(), 0, "no channel left: the UNSUBSCRIBE is answered");
    assert!(!l.plain(), "a pattern is left");
    // RESP3: any command runs while subscribed; its reply is a reply.
    send(&mut l, &["GET", "k"]);
    l.receive(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(l.owed(), 1, "a push is not the reply");
    l.receive(b"_\r\n");
    send(&mut l, &["PUNSUBSCRIBE", "p*"]);
    l.receive(b">3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n");
    assert!(l.plain());
}

#[test]
fn a_resp2_reply_shaped_like_a_confirmation_is_a_reply_when_not_subscribed() {
    let mut l = resp2();
    send(&mut l, &["EVAL", "return {'subscribe','x',1}", "0"]);
    send(&mut l, &["UNSUBSCRIBE"]);
    l.receive(SUB_A);
    assert_eq!(l.owed(), 1, "the EVAL's reply");
    l.receive(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
    assert!(l.plain());
}

#[test]
fn reply_modes_owe_nothing_until_on() {
    let mut l = resp2();
    send(&mut l, &["CLIENT", "REPLY", "OFF"]);
    send(&mut l, &["SET", "k", "v"]);
    send(&mut l, &["CLIENT", "REPLY", "SKIP"]);
    assert_eq!(l.owed(), 0);
    assert_eq!(send(&mut l, &["CLIENT", "REPLY", "ON"]), Sent::Go);
    assert_eq!(l.owed(), 1);
    l.receive(b"+OK\r\n");
    // Had Redis refused the OFF (an ACL, a busy script), its error would have been taken
    // for ON's reply: the count is unsure, so the connection is never given up.
    assert!(!l.plain(), "an OFF Redis may have refused leaves the count unsure");
    let mut l = resp2();
    send(&mut l, &["CLIENT", "REPLY", "SKIP"]);
    send(&mut l, &["GET", "k"]);
    assert_eq!(l.owed(), 0, "skipped");
    send(&mut l, &["GET", "k"]);
    assert_eq!(l.owed(), 1);
    l.receive(b"$-1\r\n");
    assert!(!l.plain(), "a SKIP Redis may have refused leaves the count unsure: no resume");
    assert_eq!(l.holds_reset(), None, "and a RESET goes to Redis");
}

#[test]
fn a_blank_request_takes_a_pending_skip() {
    let mut l = resp2();
    send(&mut l, &["CLIENT", "REPLY", "SKIP"]);
    l.blank();
    send(&mut l, &["GET", "k"]);
    assert_eq!(l.owed(), 1, "the blank line took the skip");
}

#[test]
fn tracking_changes_only_when_redis_says_ok() {
    let mut l = Lockstep::new(Protocol::Resp3, false);
    send(&mut l, &["CLIENT", "TRACKING", "on"]);
    l.receive(b"+OK\r\n");
    send(&mut l, &["CLIENT", "TRACKING", "off", "BCAST", "PREFIX"]);
    l.receive(b"-ERR syntax error\r\n");
    assert!(!l.plain(), "still tracking");
    send(&mut l, &["MULTI"]);
    send(&mut l, &["CLIENT", "TRACKING", "off"]);
    send(&mut l, &["EXEC"]);
    l.receive(b"+OK\r\n");
    l.receive(b"+QUEUED\r\n");
    assert!(!l.plain());
    l.receive(b"*1\r\n+OK\r\n");
    assert!(l.plain(), "EXEC's array switched tracking off");
}

#[test]
fn redirect_ids_are_found_in_getredir_and_trackinginfo() {
    let mut l = Lockstep::new(Protocol::Resp3, false);
    send(&mut l, &["CLIENT", "GETREDIR"]);
    assert_eq!(l.receive(b":57\r\n"), Received::Redirect(1..3, 57));
    send(&mut l, &["CLIENT", "TRACKINGINFO"]);
    let info = b"%3\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$8\r\nredirect\r\n:123\r\n$8\r\nprefixes\r\n*0\r\n";
    let Received::Redirect(at, 123) = l.receive(info) else { panic!("no redirect found") };
    assert_eq!(&info[at], b"123");
    send(&mut l, &["CLIENT", "GETREDIR"]);
    assert_eq!(l.receive(b":-1\r\n"), Received::Forward);
}

#[test]
fn counting_stops_where_it_cannot_be_exact() {
    let mut l = resp2();
    l.receive(b"+OK\r\n");
    assert!(!l.counting(), "a reply nothing owed");
    let mut l = resp2();
    send(&mut l, &["CLIENT", "REPLY", "SKIP"]);
    send(&mut l, &["SUBSCRIBE", "a"]);
    assert!(!l.counting(), "a silenced SUBSCRIBE");
    let mut l = resp2();
    send(&mut l, &["MONITOR"]);
    assert!(!l.counting() && !l.plain());
}

#[test]
fn a_subscribed_resp2_connection_refuses_other_commands() {
    let mut l = resp2();
    send(&mut l, &["SUBSCRIBE", "a"]);
    l.receive(SUB_A);
    assert_eq!(send(&mut l, &["CLIENT", "REPLY", "OFF"]), Sent::Go);
    assert_eq!(l.owed(), 1, "Redis refuses it here, with a reply");
    l.receive(b"-ERR Can't execute 'client|reply'\r\n");
    send(&mut l, &["UNSUBSCRIBE", "a"]);
    l.receive(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    assert!(l.plain(), "replies stayed on");
}
