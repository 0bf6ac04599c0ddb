//! The pipeline's planning, checked against a tier table built from TOML.

use super::*;
use crate::config::{Config, Overrides};

const CONFIG: &str = r#"
[[tiers]]
name = "t"
prefixes = ["t:"]
default_ttl = "1h"
"#;

/// What an `Env` borrows, for one tier `t:` with a default TTL.
struct Fixture {
    tiers: TierTable,
    stats: Stats,
    commands: CommandTable,
    fallback: std::sync::Arc<Fallback>,
}

impl Fixture {
    fn new() -> Fixture {
        let config = Config::parse(CONFIG, &Overrides::default()).expect("config");
        let tiers = TierTable::new(&config.tiers);
        let stats = Stats::new(&tiers);
        let fallback = crate::start_fallback(&config, None, tokio_util::sync::CancellationToken::new());
        Fixture { tiers, stats, commands: CommandTable::builtin(), fallback }
    }

    fn env(&self) -> Env<'_> {
        Env {
            commands: &self.commands,
            tiers: &self.tiers,
            stats: &self.stats,
            info: &no_info,
            fallback: &self.fallback,
            upstream_down: false,
            now: Instant::now(),
        }
    }
}

fn no_info() -> InfoExtra {
    panic!("no INFO here")
}

/// Requests counted alike share one note; their replies are still counted one by one,
/// with or without the frame ends from the connection, and pass through unchanged.
#[tokio::test]
async fn repeated_notes_count_every_reply() {
    let fixture = Fixture::new();
    let (env, commands, stats) = (fixture.env(), &fixture.commands, &fixture.stats);
    let mut session = Session::new(1);
    let replies = Bytes::from_static(b"$1\r\nv\r\n$-1\r\n$1\r\nv\r\n+PONG\r\n$-1\r\n");
    for ends in [&[7u32, 12, 19, 26, 31][..], &[]] {
        let mut notes = Vec::new();
        for argv in [&[&b"GET"[..], b"t:1"][..], &[b"GET", b"t:2"], &[b"GET", b"t:3"]] {
            let raw = crate::resp::reply::encode_command(argv);
            let Prepared::Forward { note, .. } =
                prepare(&env, &mut session, argv, &raw, commands.lookup(argv).map(|i| &**i))
            else {
                panic!("GET on a tier is counted")
            };
            Note::push(&mut notes, note);
        }
        assert_eq!((notes.len(), notes[0].repeat), (1, 3), "three GETs, one note");
        notes.push(Note::plain(1));
        let raw = crate::resp::reply::encode_command(&[b"GET", b"t:4"]);
        let argv: &[&[u8]] = &[b"GET", b"t:4"];
        let Prepared::Forward { note, .. } =
            prepare(&env, &mut session, argv, &raw, commands.lookup(argv).map(|i| &**i))
        else {
            panic!("GET on a tier is counted")
        };
        Note::push(&mut notes, note);
        assert_eq!(notes.len(), 3, "a plain note in between is not merged across");
        let before = stats.tier(0);
        match reply::finish(&env, replies.clone(), ends, &mut notes, &Bytes::new(), env.now, false) {
            reply::Settled::Ready(bytes) => assert_eq!(bytes, replies),
            other => panic!("nothing to load: {other:?}"),
        }
        let after = stats.tier(0);
        assert_eq!((after.hits - before.hits, after.misses - before.misses), (2, 2), "ends {ends:?}");
    }
}
