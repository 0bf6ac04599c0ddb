//! Tests of `check`.

use super::*;

fn see(follow: &mut Follow, kind: Kind, words: &str) -> Seen {
    let argv: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
    follow.see(kind, &argv)
}

#[test]
fn follows_what_may_end_the_state() {
    let mut f = Follow::default();
    assert_eq!(see(&mut f, Kind::Streaming, "SUBSCRIBE a"), Seen::Nothing);
    assert_eq!(see(&mut f, Kind::Streaming, "UNSUBSCRIBE"), Seen::MayEnd);
    assert_eq!(see(&mut f, Kind::Streaming, "sunsubscribe x"), Seen::MayEnd);
    assert_eq!(see(&mut f, Kind::Client, "CLIENT TRACKING off"), Seen::MayEnd);
    assert_eq!(see(&mut f, Kind::Client, "CLIENT TRACKING on REDIRECT 4"), Seen::Nothing);
    assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY OFF"), Seen::Nothing);
    // Redis ignores SKIP while replies are off: the markers would still get no reply.
    assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY SKIP"), Seen::Nothing);
    assert!(!f.can_probe());
    assert_eq!(see(&mut f, Kind::Client, "CLIENT REPLY ON"), Seen::MayEnd);
    assert!(f.can_probe());
    see(&mut f, Kind::Multi, "MULTI");
    assert!(!f.can_probe());
    see(&mut f, Kind::Exec, "EXEC");
    assert!(f.can_probe());
    see(&mut f, Kind::Multi, "MULTI");
    see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
    assert!(!f.skip_next, "queued");
    see(&mut f, Kind::Exec, "EXEC");
    assert!(f.skip_next, "Redis 7.0 applies a queued SKIP after EXEC");
    see(&mut f, Kind::Plain, "GET k");
    assert!(f.can_probe());
    // A SKIP Redis may have refused (replies off, RESP2 subscribed) still counts.
    see(&mut f, Kind::Client, "CLIENT REPLY OFF");
    see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
    assert!(f.skip_next);
    see(&mut f, Kind::Client, "CLIENT REPLY ON");
    see(&mut f, Kind::Watch, "WATCH k");
    assert!(f.sticky);
    assert_eq!(see(&mut f, Kind::Reset, "RESET"), Seen::Reset(ProbeKind::Flush { reply: true }));
    // SKIP silences the next request: a marker in its place would never be answered,
    // and RESET's own reply is not sent.
    see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
    assert!(!f.can_probe());
    assert_eq!(see(&mut f, Kind::Reset, "RESET"), Seen::Reset(ProbeKind::Flush { reply: false }));
    see(&mut f, Kind::Client, "CLIENT REPLY SKIP");
    assert_eq!(see(&mut f, Kind::Streaming, "UNSUBSCRIBE"), Seen::MayEnd);
    assert!(f.can_probe(), "the skip went to the UNSUBSCRIBE");

    let mut monitor = Follow::default();
    see(&mut monitor, Kind::Streaming, "MONITOR");
    assert!(!monitor.can_probe());
    assert_eq!(
        see(&mut monitor, Kind::Reset, "RESET"),
        Seen::Reset(ProbeKind::RedisReset),
        "RESET goes to Redis"
    );

    for (kind, words) in [
        (Kind::Auth, "AUTH other secret"),
        (Kind::Hello, "HELLO 3 AUTH other secret"),
        (Kind::Client, "CLIENT SETNAME x"),
    ] {
        let mut f = Follow::default();
        see(&mut f, kind, words);
        assert!(!f.can_probe(), "{words}");
    }
}

#[test]
fn recognises_only_its_own_markers() {
    let probe = Probe::new(ProbeKind::Check);
    let token = String::from_utf8(probe.before.to_vec()).unwrap();
    assert!(probe.is_before(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
    assert!(probe.is_before(format!("*2\r\n$4\r\npong\r\n${}\r\n{token}\r\n", token.len()).as_bytes()));
    assert!(!probe.is_after(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
    assert!(!probe.is_before(b"$5\r\nhello\r\n"));
    let message = format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n{token}\r\n", token.len());
    assert!(!probe.is_before(message.as_bytes()));
    assert_ne!(Probe::new(ProbeKind::Check).before, probe.before, "every probe draws new tokens");
    let requests = String::from_utf8(probe.requests().to_vec()).unwrap();
    assert!(requests.starts_with("*2\r\n$4\r\nPING\r\n") && !requests.contains("INFO"), "{requests}");
    let rest = String::from_utf8(probe.rest().to_vec()).unwrap();
    assert!(rest.starts_with("*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n") && rest.ends_with("-b\r\n"), "{rest}");
    assert!(is_subscribed_pong(format!("*2\r\n$4\r\npong\r\n${}\r\n{token}\r\n", token.len()).as_bytes()));
    assert!(!is_subscribed_pong(format!("${}\r\n{token}\r\n", token.len()).as_bytes()));
    let flush = Probe::new(ProbeKind::Flush { reply: true });
    assert_eq!(flush.requests().iter().filter(|&&b| b == b'*').count(), 1, "a flush sends one PING");
    let after_skip = Probe::new(ProbeKind::Flush { reply: false });
    assert_eq!(
        after_skip.requests().iter().filter(|&&b| b == b'*').count(),
        2,
        "a first PING takes the skip"
    );
    let reset = Probe::new(ProbeKind::RedisReset);
    assert!(reset.requests().is_empty() && reset.is_after(b"+RESET\r\n") && !reset.is_after(b"+OK\r\n"));
    let ok =
        |token: &Bytes| Bytes::from(format!("${}\r\n{}\r\n", token.len(), String::from_utf8_lossy(token)));
    let info = Bytes::from_static(b"$4\r\nid=1\r\n");
    let refused = Bytes::from_static(b"-NOPERM no\r\n");
    assert_eq!(probe.entry(&[ok(&probe.before), info.clone(), ok(&probe.after)]), Entry::Probeable);
    assert_eq!(probe.entry(&[ok(&probe.before), refused.clone(), ok(&probe.after)]), Entry::Unprobeable);
    assert_eq!(probe.entry(&[refused.clone(), refused.clone(), refused.clone()]), Entry::Unprobeable);
    assert_eq!(probe.entry(&[refused.clone(), info.clone(), refused]), Entry::Unprobeable);
    let push = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*0\r\n");
    assert_eq!(probe.entry(&[push, ok(&probe.before), info]), Entry::Lost);
    assert!(is_push(b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"));
    assert!(is_push(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nv\r\n"));
    assert!(!is_push(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n"));
}

#[test]
fn judges_client_info() {
    let info = |flags: &str, db: u8, resp: u8| {
        let text = format!(
            "id=5 addr=127.0.0.1:1 laddr=127.0.0.1:2 fd=8 name= age=0 idle=0 flags={flags} db={db} sub=0 \
             psub=0 ssub=0 multi=-1 qbuf=0 obl=0 cmd=client|info user=default redir=-1 resp={resp}\n"
        );
        match resp {
            3 => format!("={}\r\ntxt:{text}\r\n", text.len() + 4),
            _ => format!("${}\r\n{text}\r\n", text.len()),
        }
    };
    let shared = Expect { protocol: Protocol::Resp2, db: 0, user: "default" };
    assert!(shared.judge(info("N", 0, 2).as_bytes()));
    assert!(!shared.judge(info("P", 0, 2).as_bytes()), "still subscribed");
    assert!(!shared.judge(info("t", 0, 2).as_bytes()), "still tracking");
    assert!(!shared.judge(info("N", 3, 2).as_bytes()), "another database");
    assert!(!shared.judge(info("N", 0, 3).as_bytes()), "another protocol");
    let resp3 = Expect { protocol: Protocol::Resp3, ..shared.clone() };
    assert!(resp3.judge(info("N", 0, 3).as_bytes()));
    let other_user = Expect { user: "app", ..shared.clone() };
    assert!(!other_user.judge(info("N", 0, 2).as_bytes()), "another user");
    let refused = b"-ERR Can't execute 'client|info': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
    assert!(!shared.judge(refused));
}
