//! Pass-through in lockstep, differentially: seeded random scripts of pub/sub, tracking
//! and reply-mode commands, pipelined by a subscriber while another client publishes and
//! writes, run straight at one Redis and through strata at another. Every frame the
//! subscriber gets (replies, messages, invalidation pushes) must be the same, in the same
//! order; and once a script has ended every subscription and tracking, strata must serve
//! the client again (after a RESET where it used CLIENT REPLY OFF or SKIP).

mod support;

use support::{RawClient, RedisServer, Strata, encode};

const CHANNELS: [&str; 3] = ["a", "b", "c"];
const PATTERNS: [&str; 2] = ["a*", "z*"];

/// One side: a subscriber and a publisher on the same server (directly or through strata).
struct Side {
    subscriber: RawClient,
    publisher: RawClient,
}

impl Side {
    /// Sends `batch` pipelined, lets the publisher run `publish`, then collects every
    /// frame the subscriber got up to a final PING's reply.
    async fn run(&mut self, batch: &[Vec<String>], publish: &[Vec<String>], token: &str) -> Vec<String> {
        let mut bytes = Vec::new();
        for command in batch {
            let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
            bytes.extend(encode(&args));
        }
        self.subscriber.send(&bytes).await;
        let mut frames = self.until(&format!("{token}-a")).await;
        for command in publish {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            self.publisher.command(&args).await;
        }
        frames.extend(self.until(&format!("{token}-b")).await);
        frames
    }

    /// Sends `PING token` and reads every frame up to its reply.
    async fn until(&mut self, token: &str) -> Vec<String> {
        self.subscriber.send(&encode(&[b"PING", token.as_bytes()])).await;
        let mut frames = Vec::new();
        loop {
            let frame = String::from_utf8_lossy(&self.subscriber.read_frame().await).into_owned();
            let done = frame.contains(token);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}

fn pick(rng: &mut fastrand::Rng, from: &[&str]) -> Vec<String> {
    from.iter().filter(|_| rng.bool()).map(|s| s.to_string()).collect()
}

/// One random command of the subscriber's script (`resp3`: the client speaks RESP3).
fn subscriber_command(rng: &mut fastrand::Rng, resp3: bool) -> Vec<Vec<String>> {
    let with = |name: &str, args: Vec<String>| {
        let mut command = vec![name.to_string()];
        command.extend(args);
        command
    };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match rng.u8(0..12) {
        0 | 1 => vec![with("SUBSCRIBE", pick(rng, &CHANNELS[..]).into_iter().chain(["a".into()]).collect())],
        2 => vec![with("PSUBSCRIBE", pick(rng, &PATTERNS[..]).into_iter().chain(["z*".into()]).collect())],
        3 | 4 => vec![with("UNSUBSCRIBE", pick(rng, &CHANNELS[..]))],
        5 => vec![with("PUNSUBSCRIBE", pick(rng, &PATTERNS[..]))],
        6 => vec![words(&["PING"])],
        // The skip silences the request after it, or is refused while subscribed in RESP2.
        7 => vec![words(&["CLIENT", "REPLY", "SKIP"]), words(&["PING", "skipped"])],
        8 if resp3 => vec![words(&["CLIENT", "TRACKING", if rng.bool() { "on" } else { "off" }])],
        9 => vec![words(&["GET", "k"])],
        10 => vec![
            words(&["CLIENT", "REPLY", "OFF"]),
            words(&["SET", "quiet", "1"]),
            words(&["CLIENT", "REPLY", "ON"]),
        ],
        _ => vec![words(&["SUBSCRIBE"])],
    }
}

/// An UNSUBSCRIBE without arguments confirms each channel in the order of Redis's hash
/// table, which differs between two servers: within a run of such confirmations the
/// channels are put in sorted order (the counts, which Redis gives in order, stay).
fn unordered_unsubscribes(mut frames: Vec<String>) -> Vec<String> {
    let kind = |f: &str| f.split("\r\n").nth(2).filter(|k| k.ends_with("unsubscribe")).map(str::to_string);
    let mut start = 0;
    while start < frames.len() {
        let Some(run_kind) = kind(&frames[start]) else {
            start += 1;
            continue;
        };
        let end = (start..frames.len())
            .find(|&i| kind(&frames[i]).as_ref() != Some(&run_kind))
            .unwrap_or(frames.len());
        let mut parts: Vec<Vec<String>> =
            frames[start..end].iter().map(|f| f.split("\r\n").map(str::to_string).collect()).collect();
        let mut channels: Vec<(String, String)> =
            parts.iter().map(|p| (p[3].clone(), p[4].clone())).collect();
        channels.sort();
        for (part, (len, channel)) in parts.iter_mut().zip(channels) {
            (part[3], part[4]) = (len, channel);
        }
        for (frame, part) in frames[start..end].iter_mut().zip(parts) {
            *frame = part.join("\r\n");
        }
        start = end;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_and_tracking_through_strata_match_redis_frame_for_frame() {
    let direct = RedisServer::start();
    let behind = RedisServer::start();
    let strata = Strata::start(&behind.url(), "").await;
    let seed =
        std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (STRATA_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..12 {
        let resp3 = round % 2 == 1;
        let mut sides = [
            Side {
                subscriber: RawClient::port(direct.port).await,
                publisher: RawClient::port(direct.port).await,
            },
            Side {
                subscriber: RawClient::connect(strata.addr).await,
                publisher: RawClient::connect(strata.addr).await,
            },
        ];
        for side in sides.iter_mut().filter(|_| resp3) {
            side.subscriber.command(&["HELLO", "3"]).await;
        }
        let mut quieted = false;
        for step in 0..8 {
            let mut batch: Vec<Vec<String>> =
                (0..rng.usize(1..5)).flat_map(|_| subscriber_command(&mut rng, resp3)).collect();
            if step == 7 {
                // The end of the script: every state that needs Redis's connection ends.
                batch.extend([vec!["UNSUBSCRIBE".into()], vec!["PUNSUBSCRIBE".into()]]);
                if resp3 {
                    batch.push(vec!["CLIENT".into(), "TRACKING".into(), "off".into()]);
                }
            }
            quieted |= batch.iter().any(|c| c.len() == 3 && c[1] == "REPLY" && c[2] != "ON");
            let channel = CHANNELS[rng.usize(..3)];
            let publish = vec![
                vec!["PUBLISH".to_string(), channel.to_string(), format!("m{step}")],
                vec!["SET".to_string(), "k".to_string(), format!("v{step}")],
            ];
            let token = format!("sync-{round}-{step}");
            let want = unordered_unsubscribes(sides[0].run(&batch, &publish, &token).await);
            let got = unordered_unsubscribes(sides[1].run(&batch, &publish, &token).await);
            assert_eq!(got, want, "seed {seed}, round {round}, step {step}, batch {batch:?}");
        }
        // After a CLIENT REPLY OFF or SKIP no reply shows whether Redis took it, so strata
        // keeps the connection until RESET, which then goes to Redis.
        if quieted {
            assert_eq!(&sides[1].subscriber.command(&["RESET"]).await[..], b"+RESET\r\n", "seed {seed}");
        }
        let getkeys = sides[1].subscriber.command(&["STRATA", "GETKEYS", "GET", "k"]).await;
        assert!(getkeys.starts_with(b"*1\r\n"), "seed {seed}, round {round}: not served by strata again");
    }
}
