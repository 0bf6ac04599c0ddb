//! A client that drops mid-pipeline, then another writing the same keys.
//!
//! The dropped client's unread tail may or may not have run (Redis, like strata, may read
//! it before seeing the close, or get a reset first), so it is judged by what Redis holds
//! afterwards: every key the follower set holds the follower's value, and the shared log
//! list is some prefix of the dropped client's pushes, in order, then the follower's.
//! A write of the dropped client applied after the follower's acknowledged write (two
//! clients' writes to one key overtaking each other) breaks that.

use fastrand::Rng;

use crate::compare::show;
use crate::script::{Check, Cmd, Script, Step, Write};
use crate::support::{RawClient, cmd};

/// Keys the pair shares.
const KEYS: usize = 4;

/// The dropped client's script and the follower's, on keys starting with `prefix`.
pub fn scripts(seed: u64, prefix: &str) -> (Script, Script) {
    let mut rng = Rng::with_seed(seed);
    let mut first = Vec::new();
    match rng.u8(..5) {
        0 => first.push(command(&["HELLO", "3"], Check::Hello)),
        1 => first.push(command(&["SELECT", "0"], Check::Exact)),
        2 => first.push(command(&["WATCH", &format!("{prefix}k:0")], Check::Exact)),
        _ => {}
    }
    let mut batch = Vec::new();
    // Small enough for Redis to read in one go (16 KiB): a bigger pipeline it reads in parts,
    // between which a later client's commands may run, straight at Redis too.
    let pushes = rng.usize(1..=100);
    for i in 0..pushes {
        batch.push(command(&["SET", &format!("{prefix}k:{}", i % KEYS), &format!("d{i}")], Check::Exact));
        batch.push(command(&["RPUSH", &format!("{prefix}log"), &format!("d{i}")], Check::Exact));
    }
    let after = if rng.u8(..4) == 0 { rng.usize(..=batch.len()) } else { 0 };
    let mut steps = vec![Step { cmds: batch, write: Write::Drop { after } }];
    if !first.is_empty() {
        steps.insert(0, Step { cmds: first, write: Write::Before });
    }
    let dropped =
        Script { name: format!("{prefix} (dropped)"), steps, dbs: [0].into(), keys: vec![], dropped: true };
    let mut follow = Vec::new();
    for i in 0..KEYS {
        follow.push(command(&["SET", &format!("{prefix}k:{i}"), "f"], Check::Exact));
    }
    follow.push(command(&["RPUSH", &format!("{prefix}log"), "f"], Check::Any));
    for i in 0..KEYS {
        follow.push(command(&["GET", &format!("{prefix}k:{i}")], Check::Exact));
    }
    let follower = Script {
        name: format!("{prefix} (follower)"),
        steps: vec![Step { cmds: follow, write: Write::Before }],
        dbs: [0].into(),
        keys: vec![],
        dropped: false,
    };
    (dropped, follower)
}

fn command(words: &[&str], check: Check) -> Cmd {
    Cmd { bytes: cmd(words), check }
}

/// Checks the log list on the server at `port`: a prefix of `d0, d1, …`, then `f`.
pub async fn check_log(port: u16, prefix: &str, side: &str) -> Option<String> {
    let mut c = RawClient::port(port).await;
    let key = format!("{prefix}log");
    let reply = c.command(&["LRANGE", &key, "0", "-1"]).await;
    let text = String::from_utf8_lossy(&reply);
    let items: Vec<&str> = text.split("\r\n").skip(2).step_by(2).filter(|s| !s.is_empty()).collect();
    let ordered = items.split_last().is_some_and(|(last, rest)| {
        *last == "f" && rest.iter().enumerate().all(|(i, item)| *item == format!("d{i}"))
    });
    (!ordered).then(|| {
        let at = items.iter().position(|i| *i == "f");
        format!(
            "{prefix}: {side}: a dropped client's write overtook a later client's: the log should be d0, d1, … \
             (the dropped client's pushes Redis ran), then f (the follower's), but f is at {at:?} of {}: {}",
            items.len(),
            show(&reply)
        )
    })
}
