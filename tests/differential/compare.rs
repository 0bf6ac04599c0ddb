//! Comparing what strata's clients saw with what direct clients saw, through the masks,
//! and what the two Redis servers hold afterwards.

use bytes::Bytes;
use strata::resp::{FrameScanner, Limits};

use crate::client::Transcript;
use crate::script::{Check, Cmd, Script};
use crate::support::{RawClient, cmd};

/// The reply as compared: masked where the reply may differ between two servers.
pub fn masked(check: Check, reply: &[u8]) -> Vec<u8> {
    match check {
        Check::Unordered if reply.starts_with(b"*") || reply.starts_with(b"~") => sorted(reply),
        Check::Ttl if reply.starts_with(b":") && !reply.starts_with(b":-") => b":<positive>\r\n".to_vec(),
        Check::Hello if !reply.starts_with(b"-") => hello(reply),
        Check::Any => b"<any>".to_vec(),
        _ => reply.to_vec(),
    }
}

/// The elements of a top-level aggregate, sorted as byte strings, after its header.
fn sorted(reply: &[u8]) -> Vec<u8> {
    let header = reply.iter().position(|&b| b == b'\n').map_or(reply.len(), |nl| nl + 1);
    let mut elements = Vec::new();
    let mut at = header;
    while at < reply.len() {
        let Ok(Some(len)) = FrameScanner::reply().scan(&reply[at..], &Limits::UNBOUNDED) else { break };
        elements.push(&reply[at..at + len]);
        at += len;
    }
    elements.sort();
    let mut out = reply[..header].to_vec();
    elements.iter().for_each(|e| out.extend_from_slice(e));
    out
}

/// HELLO's reply keeps its aggregate header and the `proto` entry; server, version, id,
/// mode, role and modules describe the server (strata answers HELLO itself).
fn hello(reply: &[u8]) -> Vec<u8> {
    let header = reply.iter().position(|&b| b == b'\n').map_or(reply.len(), |nl| nl + 1);
    let mut out = reply[..header].to_vec();
    let text = String::from_utf8_lossy(reply);
    if let Some(at) = text.find("proto\r\n") {
        out.extend(text[at..].split("\r\n").take(2).collect::<Vec<_>>().join("=").bytes());
    }
    out
}

/// Up to 300 bytes of a reply or request, printable.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(300)];
    let more = if bytes.len() > 300 { format!("... ({} bytes)", bytes.len()) } else { String::new() };
    format!("{:?}{more}", String::from_utf8_lossy(cut))
}

/// The first difference between the two transcripts of one script, if any.
pub fn transcripts(script: &Script, strata: &Transcript, direct: &Transcript) -> Option<String> {
    if let Some(why) = &direct.stopped {
        return Some(format!("{}: direct Redis stopped (harness fault?): {why}", script.name));
    }
    let cmds: Vec<&Cmd> = script.steps.iter().flat_map(|s| &s.cmds).collect();
    let mut i = 0;
    for (at, cmd) in cmds.iter().enumerate() {
        if cmd.check == Check::Silent {
            continue;
        }
        let (Some(got), Some(want)) = (strata.replies.get(i), direct.replies.get(i)) else { break };
        if masked(cmd.check, got) != masked(cmd.check, want) {
            let (strata, direct) = (&strata.replies, &direct.replies);
            let whole = context(&cmds, at, (0, cmds.len()), strata, direct);
            let file =
                format!("{}/differential-{}.txt", env!("CARGO_TARGET_TMPDIR"), file_name(&script.name));
            let saved = std::fs::write(&file, whole).map_or_else(|e| format!("not saved: {e}"), |()| file);
            let around = (at.saturating_sub(16), (at + 5).min(cmds.len()));
            return Some(format!(
                "{}: reply {i} (command {at}) differs\n  request {}\n  strata  {}\n  redis   {}\n  around it:\n{}\n  the whole script: {saved}",
                script.name,
                show(&cmd.bytes),
                show(got),
                show(want),
                context(&cmds, at, around, strata, direct)
            ));
        }
        i += 1;
    }
    if let Some(why) = &strata.stopped {
        return Some(format!("{}: through strata: {why}", script.name));
    }
    None
}

/// The commands `from..to` with the replies each side got, `at` marked, for a report.
fn context(
    cmds: &[&Cmd],
    at: usize,
    (from, to): (usize, usize),
    strata: &[Bytes],
    direct: &[Bytes],
) -> String {
    let mut reply = cmds[..from].iter().filter(|c| c.check != Check::Silent).count();
    let mut lines = Vec::new();
    for (i, cmd) in cmds.iter().enumerate().take(to).skip(from) {
        let answer = if cmd.check == Check::Silent {
            "(no reply)".to_string()
        } else {
            reply += 1;
            let (want, got) = (direct.get(reply - 1), strata.get(reply - 1));
            match (want, got) {
                (Some(w), Some(g)) if w == g => show(w),
                (w, g) => format!(
                    "redis {} | strata {}",
                    w.map_or("-".into(), |r| show(r)),
                    g.map_or("-".into(), |r| show(r))
                ),
            }
        };
        let mark = if i == at { ">>" } else { "  " };
        lines.push(format!("  {mark} {} -> {answer}", show(&cmd.bytes)));
    }
    lines.join("\n")
}

fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

/// What one client's keys hold on the server at `port`, one reply per key and database
/// (sets sorted, remaining TTLs masked as in replies).
pub async fn state(port: u16, script: &Script) -> Vec<(String, Vec<u8>)> {
    let mut c = RawClient::port(port).await;
    let mut out = Vec::new();
    for db in &script.dbs {
        c.command(&["SELECT", &db.to_string()]).await;
        for key in &script.keys {
            let kind = c.command(&["TYPE", key]).await;
            let read: Vec<&str> = match &kind[..] {
                b"+string\r\n" => vec!["GET", key],
                b"+list\r\n" => vec!["LRANGE", key, "0", "-1"],
                b"+hash\r\n" => vec!["HGETALL", key],
                b"+set\r\n" => vec!["SMEMBERS", key],
                b"+zset\r\n" => vec!["ZRANGE", key, "0", "-1", "WITHSCORES"],
                b"+stream\r\n" => vec!["XRANGE", key, "-", "+"],
                _ => continue,
            };
            let value = sorted_if_set(&kind, c.command(&read).await);
            let ttl = masked(Check::Ttl, &c.command(&["TTL", key]).await);
            out.push((format!("db {db} {key}"), [&kind[..], &value, &ttl].concat()));
        }
    }
    out
}

fn sorted_if_set(kind: &[u8], value: Bytes) -> Vec<u8> {
    if kind == b"+set\r\n" { sorted(&value) } else { value.to_vec() }
}

/// The first key whose content differs between the two servers.
pub fn states(script: &Script, a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) -> Option<String> {
    let names = |s: &[(String, Vec<u8>)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return Some(format!(
            "{}: keys differ after the run\n  behind strata {:?}\n  direct        {:?}",
            script.name,
            names(a),
            names(b)
        ));
    }
    a.iter().zip(b).find(|(x, y)| x.1 != y.1).map(|(x, y)| {
        format!(
            "{}: {} differs after the run\n  behind strata {}\n  direct        {}",
            script.name,
            x.0,
            show(&x.1),
            show(&y.1)
        )
    })
}

/// Sends `words` on a fresh direct connection to `port` and returns the reply.
pub async fn direct(port: u16, words: &[&str]) -> Bytes {
    let mut c = RawClient::port(port).await;
    c.send(&cmd(words)).await;
    c.read_frame().await
}
