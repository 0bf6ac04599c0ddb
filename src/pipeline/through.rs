//! Read-through on the data path: which reads can be answered from PostgreSQL, when a
//! reply calls for it (a miss, or strata's own upstream-unavailable error), and the
//! reply built from the loaded value in the client's protocol.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Kind, Side};
use crate::fallback::{Fallback, FallbackError, Loaded};
use crate::fallback::{OnDbError, Shape};
use crate::resp::Reply;
use crate::resp::reply::Protocol;

/// The read, as far as read-through needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadKind {
    /// GET / GETEX k.
    Get,
    /// MGET k1 k2 …
    MGet,
    /// HGET k field.
    HGet(Bytes),
    /// HMGET k f1 f2 …
    HMGet(Vec<Bytes>),
    /// HGETALL k.
    HGetAll,
    /// HEXISTS k field.
    HExists(Bytes),
}

/// A read that has read-through rules for (some of) its keys.
#[derive(Debug, Clone)]
pub struct ReadThrough {
    /// The read.
    pub kind: ReadKind,
    /// Per key position: the key and its rule, if any (inline for the usual one key).
    pub keys: smallvec::SmallVec<[(Bytes, Option<usize>); 1]>,
    /// The client's protocol, for replies strata builds.
    pub protocol: Protocol,
    /// Every key has a rule and a tier that answers from PostgreSQL while Redis is down.
    pub when_down: bool,
    /// A value loaded on a miss may be written back (not while the client WATCHes).
    pub write_back: bool,
}

/// The reads read-through answers, by name and argument count: where their keys are,
/// the shape of value their rule must load, and what their miss looks like.
fn read_shape(name: &str, argc: usize) -> Option<(std::ops::Range<usize>, Shape, Miss)> {
    Some(match (name, argc) {
        ("get", 2) | ("getex", 2) => (1..2, Shape::String, Miss::Nil),
        ("mget", n) if n >= 2 => (1..n, Shape::String, Miss::SomeNil),
        ("hget", 3) => (1..2, Shape::Hash, Miss::Nil),
        ("hexists", 3) => (1..2, Shape::Hash, Miss::Zero),
        ("hgetall", 2) => (1..2, Shape::Hash, Miss::Empty),
        ("hmget", n) if n >= 3 => (1..2, Shape::Hash, Miss::SomeNil),
        _ => return None,
    })
}

/// Whether a rule covers a key of the read `argv` (the `name` command): what a miss of
/// it looks like. Runs for every read in a proxy with rules, so nothing is copied.
pub fn covered(fallback: &Fallback, name: &str, argv: &[&[u8]]) -> Option<Miss> {
    let (keys, shape, miss) = read_shape(name, argv.len())?;
    argv[keys].iter().any(|key| fallback.rule_for(key).is_some_and(|(_, s)| s == shape)).then_some(miss)
}

/// The read-through read of `argv`; `None` when no rule covers any of its keys.
pub fn detect(fallback: &Fallback, name: &str, argv: &[&[u8]], protocol: Protocol) -> Option<ReadThrough> {
    let (keys, shape, _) = read_shape(name, argv.len())?;
    let rule = |key: &[u8]| fallback.rule_for(key).filter(|(_, s)| *s == shape).map(|(id, _)| id);
    let rules: smallvec::SmallVec<[Option<usize>; 1]> = argv[keys.clone()].iter().map(|k| rule(k)).collect();
    rules.iter().any(Option::is_some).then_some(())?;
    let with_rules = argv[keys].iter().zip(rules).map(|(k, r)| (Bytes::copy_from_slice(k), r)).collect();
    let kind = match name {
        "mget" => ReadKind::MGet,
        "hget" => ReadKind::HGet(Bytes::copy_from_slice(argv[2])),
        "hexists" => ReadKind::HExists(Bytes::copy_from_slice(argv[2])),
        "hgetall" => ReadKind::HGetAll,
        "hmget" => ReadKind::HMGet(argv[2..].iter().map(|f| Bytes::copy_from_slice(f)).collect()),
        _ => ReadKind::Get,
    };
    Some(ReadThrough { kind, keys: with_rules, protocol, when_down: false, write_back: true })
}

/// What a reply that calls for PostgreSQL looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// A nil (GET, HGET).
    Nil,
    /// Any nil element (MGET, HMGET): the elements of keys without a rule stay nil.
    SomeNil,
    /// An empty hash (HGETALL).
    Empty,
    /// `:0` (HEXISTS).
    Zero,
}

impl Miss {
    /// Whether `reply` is such a miss.
    pub fn is(self, reply: &[u8]) -> bool {
        match self {
            Miss::Nil => is_get_miss(reply),
            Miss::Empty => matches!(reply, b"*0\r\n" | b"%0\r\n"),
            Miss::Zero => reply == b":0\r\n",
            Miss::SomeNil => {
                reply.windows(5).any(|w| w == b"$-1\r\n") || reply.windows(3).any(|w| w == b"_\r\n")
            }
        }
    }
}

/// True when a GET's reply is a miss.
pub fn is_get_miss(reply: &[u8]) -> bool {
    matches!(reply, b"$-1\r\n" | b"_\r\n")
}

/// Answers `rt` from PostgreSQL. `original` is Redis' reply (a miss) or `None` when Redis
/// is unavailable; only in the first case is the value written back.
pub async fn answer(fallback: &Fallback, rt: &ReadThrough, original: Option<&[u8]>) -> Bytes {
    let write_back = original.is_some() && rt.write_back;
    if rt.kind == ReadKind::MGet {
        return mget(fallback, rt, original, write_back).await;
    }
    let (key, Some(rule)) = rt.keys[0].clone() else {
        return original.map(Bytes::copy_from_slice).unwrap_or_default();
    };
    // A missing field of a hash that exists is a real miss, not a missing row.
    let field_read = matches!(rt.kind, ReadKind::HGet(_) | ReadKind::HMGet(_) | ReadKind::HExists(_));
    if let Some(original) = original.filter(|_| field_read)
        && fallback.key_exists(key.clone()).await
    {
        return Bytes::copy_from_slice(original);
    }
    let loaded = fallback.load(rule, key, write_back).await;
    let on_error = fallback.rule(rule).on_db_error;
    let reply = match loaded {
        Ok(value) => single(&rt.kind, value),
        Err(e) => db_error(&e, on_error).unwrap_or_else(|| single(&rt.kind, None)),
    };
    reply.to_bytes(rt.protocol)
}

/// The reply for a single-key read from the loaded value.
fn single(kind: &ReadKind, value: Option<Loaded>) -> Reply {
    let field_of =
        |fields: &[(Bytes, Bytes)], f: &Bytes| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.clone());
    match (kind, value) {
        (ReadKind::Get, Some(Loaded::String(v))) => Reply::Bulk(v),
        (ReadKind::HGetAll, Some(Loaded::Hash(fields))) => {
            Reply::Map(fields.into_iter().map(|(k, v)| (Reply::Bulk(k), Reply::Bulk(v))).collect())
        }
        (ReadKind::HGetAll, _) => Reply::Map(Vec::new()),
        (ReadKind::HGet(f), Some(Loaded::Hash(fields))) => {
            field_of(&fields, f).map_or(Reply::Null, Reply::Bulk)
        }
        (ReadKind::HExists(f), Some(Loaded::Hash(fields))) => {
            Reply::Int(field_of(&fields, f).is_some().into())
        }
        (ReadKind::HExists(_), _) => Reply::Int(0),
        (ReadKind::HMGet(fs), value) => {
            let fields = match value {
                Some(Loaded::Hash(fields)) => fields,
                _ => Vec::new(),
            };
            Reply::Array(fs.iter().map(|f| field_of(&fields, f).map_or(Reply::Null, Reply::Bulk)).collect())
        }
        _ => Reply::Null,
    }
}

/// `None` when the rule says a database failure reads as "no value".
fn db_error(e: &FallbackError, on_error: OnDbError) -> Option<Reply> {
    match (e, on_error) {
        (_, OnDbError::Nil) => None,
        (FallbackError::Unavailable(_), _) => {
            Some(Error::new(Kind::Unavailable, Side::Postgres, e.to_string()).reply())
        }
        _ => Some(Error::new(Kind::Failed, Side::Postgres, e.to_string()).reply()),
    }
}

/// MGET: keep what Redis had, fill the misses from PostgreSQL (one batch per rule).
async fn mget(fallback: &Fallback, rt: &ReadThrough, original: Option<&[u8]>, write_back: bool) -> Bytes {
    let mut elements = original.and_then(split_array).unwrap_or_else(|| vec![None; rt.keys.len()]);
    elements.resize(rt.keys.len(), None);
    let mut by_rule: Vec<(usize, Vec<usize>)> = Vec::new();
    for (pos, (_, rule)) in rt.keys.iter().enumerate() {
        let (Some(rule), None) = (rule, &elements[pos]) else { continue };
        match by_rule.iter_mut().find(|(r, _)| r == rule) {
            Some((_, positions)) => positions.push(pos),
            None => by_rule.push((*rule, vec![pos])),
        }
    }
    for (rule, positions) in by_rule {
        let keys: Vec<Bytes> = positions.iter().map(|&p| rt.keys[p].0.clone()).collect();
        let results = fallback.load_many(rule, &keys, write_back).await;
        for (pos, result) in positions.into_iter().zip(results) {
            let reply = match result {
                Ok(Some(Loaded::String(v))) => Reply::Bulk(v),
                Ok(_) => Reply::Null,
                Err(e) => match db_error(&e, fallback.rule(rule).on_db_error) {
                    Some(error) => return error.to_bytes(rt.protocol),
                    None => Reply::Null,
                },
            };
            elements[pos] = Some(reply.to_bytes(rt.protocol));
        }
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{}\r\n", elements.len()).as_bytes());
    let null = Reply::Null.to_bytes(rt.protocol);
    elements.iter().for_each(|e| out.extend_from_slice(e.as_ref().unwrap_or(&null)));
    out.freeze()
}

/// MGET's reply as elements, `None` for the nil ones.
fn split_array(reply: &[u8]) -> Option<Vec<Option<Bytes>>> {
    let bytes = Bytes::copy_from_slice(reply);
    let elements = crate::resp::frames::array_elements(&bytes)?;
    Some(elements.into_iter().map(|e| (!matches!(&e[..], b"$-1\r\n" | b"_\r\n")).then_some(e)).collect())
}
