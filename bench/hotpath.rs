//! strata's own CPU per request on the data path, without sockets: parse, command lookup,
//! `pipeline::prepare` and `pipeline::reply::finish` for batches of 16 pipelined GETs
//! (and SETs) on untiered and on tiered keys. It isolates what the tier lookup and its
//! accounting add per request, which end-to-end runs (`bench/tiers.sh`) show only
//! through the noise of three processes sharing two cores.
//!
//! `cargo bench --bench hotpath` prints ns per request and the difference.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use strata::command::CommandTable;
use strata::config::{Config, Overrides};
use strata::pipeline::{self, Env, Note, Prepared};
use strata::resp::{Frame, Limits, RequestParser};
use strata::session::Session;
use strata::stats::{InfoExtra, Stats};
use strata::tier::TierTable;

// The allocator the `strata` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"
[[tiers]]
name = "bench"
prefixes = ["t:", "product:"]
default_ttl = "1h"
jitter = "10%"
"#;
/// Requests per pipelined batch, as `redis-benchmark -P 16`.
const BATCH: usize = 16;
/// Batches and rounds under `cargo bench`; `cargo test --all-targets` runs this binary
/// without `--bench`, unoptimised, as a smoke test of a few batches.
const BATCHES: usize = 100_000;
const ROUNDS: usize = 7;
const SMOKE_BATCHES: usize = 100;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async { run() });
}

fn run() {
    let config = Config::parse(CONFIG, &Overrides::default()).expect("bench config");
    let tiers = TierTable::new(&config.tiers);
    let stats = Stats::new(&tiers);
    let commands = CommandTable::builtin();
    let fallback = strata::start_fallback(&config, None, tokio_util::sync::CancellationToken::new());
    let info = || -> InfoExtra { unreachable_info() };
    let env = |now| Env {
        commands: &commands,
        tiers: &tiers,
        stats: &stats,
        info: &info,
        fallback: &fallback,
        upstream_down: false,
        now,
    };
    // `cargo bench --bench hotpath -- SET` runs only the cases named.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let timed = std::env::args().any(|a| a == "--bench");
    let (batches, rounds) = if timed { (BATCHES, ROUNDS) } else { (SMOKE_BATCHES, 1) };
    println!("{:<10}{:>12}{:>12}{:>14}", "command", "untiered", "tiered", "tier cost");
    for (name, untiered, tiered, reply) in [
        ("GET", request(&["GET", "u:1234"]), request(&["GET", "t:1234"]), &b"$2\r\nxx\r\n"[..]),
        ("SET", request(&["SET", "u:1234", "xx"]), request(&["SET", "t:1234", "xx"]), &b"+OK\r\n"[..]),
    ] {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let plain = best_of(rounds, || per_request(&env, &untiered, reply, batches));
        let before = stats.tier(0);
        let tier = best_of(rounds, || per_request(&env, &tiered, reply, batches));
        let after = stats.tier(0);
        // Also a check (this binary runs in `cargo test --all-targets`): every tiered
        // request was prepared, answered and counted exactly once.
        let counted = after.hits + after.writes - before.hits - before.writes;
        assert_eq!(counted as usize, rounds * batches * BATCH, "{name}: tiered requests counted");
        println!(
            "{name:<10}{:>9.1} ns{:>9.1} ns{:>11.1} ns",
            plain.as_secs_f64() * 1e9,
            tier.as_secs_f64() * 1e9,
            (tier.as_secs_f64() - plain.as_secs_f64()) * 1e9
        );
    }
}

fn unreachable_info() -> InfoExtra {
    panic!("the hot-path bench sends no INFO")
}

fn request(args: &[&str]) -> Bytes {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    Bytes::from(out.repeat(BATCH))
}

fn best_of(rounds: usize, mut run: impl FnMut() -> Duration) -> Duration {
    (0..rounds).map(|_| run()).min().unwrap_or_default()
}

/// Time per request over many batches: every request of a batch is parsed, looked up and
/// prepared, its note kept as the handler keeps it, and the batch's reply accounted.
fn per_request<'a>(
    env: &impl Fn(tokio::time::Instant) -> Env<'a>,
    batch: &Bytes,
    reply: &[u8],
    batches: usize,
) -> Duration {
    let replies = Bytes::from(reply.repeat(BATCH));
    let mut parser = RequestParser::new(Limits::UNBOUNDED);
    let mut ranges = Vec::new();
    let mut session = Session::new(1);
    let started = Instant::now();
    for _ in 0..batches {
        let now = tokio::time::Instant::now();
        let env = env(now);
        let mut notes: Vec<Note> = Vec::new();
        let mut offset = 0;
        while let Ok(Some(Frame::Multibulk { len })) = parser.next(&batch[offset..], &mut ranges) {
            let source = &batch[offset..offset + len];
            let mut argv: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
            argv.extend(ranges.iter().map(|r| &source[r.clone()]));
            let info = env.commands.lookup(&argv).map(|i| &**i);
            match pipeline::prepare(&env, &mut session, &argv, source, info) {
                Prepared::Forward { rewrite, note } => {
                    black_box(rewrite);
                    Note::push(&mut notes, note);
                }
                other => {
                    black_box(other);
                }
            }
            offset += len;
        }
        if !notes.is_empty() {
            // The frame ends the upstream connection finds while it reads the replies.
            let ends: smallvec::SmallVec<[u32; 16]> =
                (1..=BATCH as u32).map(|i| black_box(i * reply.len() as u32)).collect();
            let done =
                pipeline::reply::finish(&env, replies.clone(), &ends, &mut notes, &Bytes::new(), now, false);
            black_box(done);
        }
        black_box(BytesMut::new());
    }
    started.elapsed() / (batches * BATCH) as u32
}
