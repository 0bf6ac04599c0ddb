//! Data commands of every type (strings, hashes, lists, sets, zsets, streams, expiry),
//! on the client's own keys, whose replies are the same on any Redis given the same
//! history: no SPOP/SRANDMEMBER/HRANDFIELD, no `*` stream IDs, no short expiries, and
//! hashes kept small enough to stay listpacks (whose order is insertion order).

use crate::script::{Check, Gen};

type Args = Vec<Vec<u8>>;

fn args(words: &[&[u8]]) -> Args {
    words.iter().map(|w| w.to_vec()).collect()
}

/// A value: short text, a number, binary with CR LF and NUL, or (rarely) tens of KiB.
fn value(g: &mut Gen) -> Vec<u8> {
    match g.rng.u8(..20) {
        0..8 => format!("v{}", g.rng.u16(..1000)).into_bytes(),
        8..13 => g.rng.i32(-500..500).to_string().into_bytes(),
        13..17 => (0..g.rng.usize(0..40)).map(|_| g.rng.u8(..)).collect(),
        17..19 => b"a\r\nb\0c $3\r\n*1\r\n".to_vec(),
        _ => vec![b'x'; g.rng.usize(1..60_000)],
    }
}

/// A hash field value of at most 64 bytes (a bigger one would make the hash a hashtable,
/// whose HGETALL order differs between two servers).
fn small_value(g: &mut Gen) -> Vec<u8> {
    let mut v = value(g);
    v.truncate(64);
    v
}

fn member(g: &mut Gen) -> Vec<u8> {
    if g.rng.bool() {
        g.rng.u8(..12).to_string().into_bytes()
    } else {
        format!("m{}", g.rng.u8(..8)).into_bytes()
    }
}

fn score(g: &mut Gen) -> Vec<u8> {
    let scores: [&[u8]; 7] = [b"1", b"-2", b"1.5", b"3e2", b"+inf", b"0.1", b"-0"];
    scores[g.rng.usize(..scores.len())].to_vec()
}

fn int(g: &mut Gen, range: std::ops::Range<i64>) -> Vec<u8> {
    g.rng.i64(range).to_string().into_bytes()
}

/// One data command and its check; inside MULTI only exactly compared ones (EXEC's
/// array would carry the masked reply).
pub fn data_command(g: &mut Gen, in_multi: bool) -> (Args, Check) {
    loop {
        let (cmd, check) = match g.rng.u8(..7) {
            0 => string(g),
            1 => hash(g),
            2 => list(g),
            3 => set(g),
            4 => zset(g),
            5 => stream(g),
            _ => generic(g),
        };
        if !in_multi || check == Check::Exact {
            return (cmd, check);
        }
    }
}

fn string(g: &mut Gen) -> (Args, Check) {
    let k = g.key("str");
    let n = g.key("cnt");
    let v = value(g);
    let cmd = match g.rng.u8(..14) {
        0 => args(&[b"SET", &k, &v]),
        1 => args(&[b"SET", &k, &v, b"GET"]),
        2 => args(&[b"SET", &k, &v, b"NX"]),
        3 => args(&[b"SET", &k, &v, b"XX", b"KEEPTTL"]),
        4 => args(&[b"GET", &k]),
        5 => args(&[b"APPEND", &k, &v]),
        6 => args(&[b"GETRANGE", &k, b"0", b"5"]),
        7 => args(&[b"STRLEN", &k]),
        8 => args(&[b"INCR", &n]),
        9 => args(&[b"INCRBY", &n, &int(g, -100..100)]),
        10 => args(&[b"INCRBYFLOAT", &n, b"1.25"]),
        11 => {
            let k2 = g.key("str");
            args(&[b"MSET", &k, &v, &k2, b"second"])
        }
        12 => {
            let k2 = g.key("str");
            args(&[b"MGET", &k, &k2, &n])
        }
        _ => args(&[b"GETDEL", &k]),
    };
    (cmd, Check::Exact)
}

fn hash(g: &mut Gen) -> (Args, Check) {
    let k = g.key("h");
    let f = format!("f{}", g.rng.u8(..10)).into_bytes();
    let v = small_value(g);
    let cmd = match g.rng.u8(..9) {
        0 | 1 => args(&[b"HSET", &k, &f, &v, b"f9", b"nine"]),
        2 => args(&[b"HGET", &k, &f]),
        3 => args(&[b"HDEL", &k, &f]),
        4 => args(&[b"HGETALL", &k]),
        5 => args(&[b"HINCRBY", &k, b"n", &int(g, -5..5)]),
        6 => args(&[b"HMGET", &k, &f, b"f9", b"n"]),
        7 => args(&[b"HKEYS", &k]),
        _ => args(&[b"HLEN", &k]),
    };
    (cmd, Check::Exact)
}

fn list(g: &mut Gen) -> (Args, Check) {
    let k = g.key("l");
    let v = value(g);
    let cmd = match g.rng.u8(..12) {
        0 | 1 => args(&[b"RPUSH", &k, &v, b"tail"]),
        2 => args(&[b"LPUSH", &k, &v]),
        3 => args(&[b"LPOP", &k]),
        4 => args(&[b"RPOP", &k, b"2"]),
        5 => args(&[b"LRANGE", &k, b"0", b"-1"]),
        6 => args(&[b"LLEN", &k]),
        7 => args(&[b"LINDEX", &k, &int(g, -3..3)]),
        8 => args(&[b"LREM", &k, b"1", b"tail"]),
        9 => {
            let k2 = g.key("l");
            args(&[b"LMOVE", &k, &k2, b"LEFT", b"RIGHT"])
        }
        10 => args(&[b"LPOS", &k, b"tail"]),
        // Blocks only briefly on an empty list; a blocking pop moves the client to a
        // connection of its own.
        _ => args(&[b"BLPOP", &k, b"0.01"]),
    };
    (cmd, Check::Exact)
}

fn set(g: &mut Gen) -> (Args, Check) {
    let k = g.key("s");
    let m = member(g);
    let (cmd, check) = match g.rng.u8(..9) {
        0 | 1 => (args(&[b"SADD", &k, &m, b"7"]), Check::Exact),
        2 => (args(&[b"SREM", &k, &m]), Check::Exact),
        3 => (args(&[b"SISMEMBER", &k, &m]), Check::Exact),
        4 => (args(&[b"SCARD", &k]), Check::Exact),
        5 => (args(&[b"SMEMBERS", &k]), Check::Unordered),
        6 => {
            let k2 = g.key("s");
            (args(&[b"SUNION", &k, &k2]), Check::Unordered)
        }
        7 => (args(&[b"SMISMEMBER", &k, &m, b"7"]), Check::Exact),
        _ => {
            let k2 = g.key("s");
            (args(&[b"SINTERCARD", b"2", &k, &k2]), Check::Exact)
        }
    };
    (cmd, check)
}

fn zset(g: &mut Gen) -> (Args, Check) {
    let k = g.key("z");
    let m = member(g);
    let s = score(g);
    let cmd = match g.rng.u8(..9) {
        0 | 1 => args(&[b"ZADD", &k, &s, &m]),
        2 => args(&[b"ZINCRBY", &k, b"0.5", &m]),
        3 => args(&[b"ZRANGE", &k, b"0", b"-1", b"WITHSCORES"]),
        4 => args(&[b"ZSCORE", &k, &m]),
        5 => args(&[b"ZREM", &k, &m]),
        6 => args(&[b"ZRANK", &k, &m]),
        7 => args(&[b"ZRANGEBYSCORE", &k, b"-inf", b"(2", b"WITHSCORES"]),
        _ => args(&[b"ZPOPMIN", &k]),
    };
    (cmd, Check::Exact)
}

fn stream(g: &mut Gen) -> (Args, Check) {
    let k = g.key("x");
    g.stream_seq += 1;
    let id = format!("{}-1", g.stream_seq).into_bytes();
    let cmd = match g.rng.u8(..9) {
        0 | 1 => args(&[b"XADD", &k, &id, b"f", &small_value(g)]),
        2 => args(&[b"XLEN", &k]),
        3 => args(&[b"XRANGE", &k, b"-", b"+", b"COUNT", b"5"]),
        4 => args(&[b"XTRIM", &k, b"MAXLEN", b"3"]),
        5 => args(&[b"XREAD", b"COUNT", b"2", b"STREAMS", &k, b"0-0"]),
        6 => args(&[b"XGROUP", b"CREATE", &k, b"g", b"0", b"MKSTREAM"]),
        7 => args(&[b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"2", b"STREAMS", &k, b">"]),
        _ => args(&[b"XPENDING", &k, b"g"]),
    };
    (cmd, Check::Exact)
}

fn generic(g: &mut Gen) -> (Args, Check) {
    let kinds = ["str", "h", "l", "s", "z", "x"];
    let kind = kinds[g.rng.usize(..kinds.len())];
    let k = g.key(kind);
    let k2 = g.key(kind);
    let (cmd, check) = match g.rng.u8(..14) {
        0 => (args(&[b"DEL", &k, &k2]), Check::Exact),
        1 => (args(&[b"EXISTS", &k, &k2]), Check::Exact),
        2 => (args(&[b"TYPE", &k]), Check::Exact),
        3 => (args(&[b"RENAME", &k, &k2]), Check::Exact),
        4 => (args(&[b"EXPIRE", &k, b"1000"]), Check::Exact),
        5 => (args(&[b"EXPIRE", &k, b"500", b"GT"]), Check::Exact),
        6 => (args(&[b"PERSIST", &k]), Check::Exact),
        7 => (args(&[b"TTL", &k]), Check::Ttl),
        // A time in the past deletes at once: the same on both servers.
        8 => (args(&[b"PEXPIRE", &k, b"-1"]), Check::Exact),
        9 => (args(&[b"COPY", &k, &k2, b"REPLACE"]), Check::Exact),
        10 => (args(&[b"PING"]), Check::Exact),
        11 => (args(&[b"ECHO", &value(g)]), Check::Exact),
        12 => (args(&[b"GET"]), Check::Exact),
        _ => (args(&[b"NOSUCHCMD", &k]), Check::Exact),
    };
    (cmd, check)
}
