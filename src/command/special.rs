//! Key finding for commands whose key specs say "unknown", mirroring Redis' own
//! `getkeys_proc` functions. Only SORT needs one in Redis 7.0: its STORE destination
//! may appear anywhere after the options.

use super::keyspec::{KeyRef, KeySpec, flag};

/// Keys of a command whose specs cannot describe them, or `None` when strata has no
/// procedure for the command (the caller passes it through untiered).
pub(super) fn keys(name: &str, args: &[&[u8]], specs: &[KeySpec]) -> Option<Vec<KeyRef>> {
    match name {
        "sort" | "sort_ro" => Some(sort_keys(args, specs)),
        _ => None,
    }
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern …] [ASC|DESC] [ALPHA] [STORE dst]`.
fn sort_keys(args: &[&[u8]], specs: &[KeySpec]) -> Vec<KeyRef> {
    let source_flags = specs.first().map_or(flag::RO | flag::ACCESS, |s| s.flags);
    let mut keys = vec![KeyRef { index: 1, flags: source_flags }];
    let mut i = 2;
    let mut store = None;
    while i < args.len() {
        let skip = match args[i].to_ascii_lowercase().as_slice() {
            b"limit" => 2,
            b"by" | b"get" => 1,
            b"store" if i + 1 < args.len() => {
                // As in Redis, the last STORE wins.
                store = Some(i + 1);
                1
            }
            _ => 0,
        };
        i += 1 + skip;
    }
    if let Some(index) = store {
        keys.push(KeyRef { index, flags: flag::OW | flag::UPDATE });
    }
    keys
}
