//! Turns one request that touches tiered keys into what strata sends to Redis so the
//! tier's TTL policy holds, and into how the reply is cut back to what the client asked.
//!
//! Where Redis has a form that carries the TTL (`SET … PX`, `PSETEX`, `GETEX … PX`, a
//! clamped `PEXPIRE`) the request is rewritten. Every other write is wrapped as
//! `MULTI; cmd; PEXPIRE k ttl NX …; EXEC`, so the write and its TTL are one atomic step
//! (a connection that dies before EXEC discards both) and the client gets the command's
//! own reply, byte for byte, taken out of the EXEC array.

mod builder;

use bytes::{Bytes, BytesMut};

use super::{Class, TierTable};
use crate::command::{CommandInfo, KeyRef, cmd_flag, flag};
use crate::resp::Reply;
use crate::resp::reply::encode_command_parts;

/// Tiered keys of a request with their role and argument index; on the stack for the
/// usual few.
/// The argument index is a `u32` (requests have far fewer arguments) to keep the entry at
/// 12 bytes: these are moved with every tiered request.
pub type KeyRoles = smallvec::SmallVec<[(Class, Role, u32); 4]>;

/// Classified keys with their role, argument index and key-spec flags.
pub type Classified = smallvec::SmallVec<[(Class, Role, usize, u16); 4]>;

/// How a request may be sent, given its client's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wrapping in MULTI/EXEC is allowed.
    Plain,
    /// Inside the client's own MULTI: extra commands are queued after the request and
    /// removed from the EXEC reply later.
    InMulti,
    /// The command blocks: a MULTI of strata's would stop it from blocking, so extra
    /// commands follow it in the same write.
    NoWrap,
    /// WATCH is active: as `NoWrap`, and reads do not refresh sliding TTLs, because a TTL
    /// change counts as a modification of a watched key and would abort the client's EXEC.
    Watching,
}

/// What a tiered key is used for by this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read: counts a hit or a miss.
    Read,
    /// Written: counts a write.
    Write,
    /// Neither (TTL inspection, deletion, …).
    Other,
}

/// How to turn the reply bytes Redis sends for the planned request into the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFix {
    /// Forward as is.
    None,
    /// `+OK`, the request's `+QUEUED` (or error), `extra` `+QUEUED`s, then EXEC: answer
    /// with the first EXEC element, or the request's queueing error.
    Exec { extra: usize },
    /// Keep the first reply, drop the `extra` replies after it.
    DropTrailing { extra: usize },
    /// The client's EXEC: remove the elements of commands strata queued. `mask[i]` is the
    /// number of strata's elements after the client's i-th queued command.
    FilterExec { mask: Box<[u16]> },
    /// An INFO reply: Redis' `# Clients` section counts strata's clients (not strata's
    /// upstream connections), and the `# Strata` section is appended when `strata`.
    Info { strata: bool },
    /// Answer with these bytes instead of Redis' reply (strata's own refusal, sent as a
    /// request Redis refuses so that a surrounding MULTI aborts).
    /// Boxed, like `mask`: rare, and every note is moved several times on the hot path.
    Replace(Box<Bytes>),
}

/// The outcome of planning one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bytes to send instead of the request, when rewritten.
    pub rewrite: Option<Bytes>,
    /// Reply frames Redis sends for what is sent.
    pub frames: usize,
    /// How to cut the reply.
    pub fix: ReplyFix,
    /// Answer locally with this instead of sending anything (a refused PERSIST).
    pub refuse: Option<Reply>,
    /// Tiered keys with their role and argument index, for accounting.
    pub keys: KeyRoles,
    /// Commands strata added inside the client's MULTI (for `FilterExec`).
    pub queued_extra: u16,
    /// Keys given the tier's default TTL by a rewrite of the first key's command (SET,
    /// RESTORE); booked on the first key's tier.
    pub ttl_rewrites: u32,
    /// Keys given the default TTL after a write, each booked on its own tier.
    pub rewritten: smallvec::SmallVec<[Class; 4]>,
    /// Explicit TTLs moved into the tier's bounds.
    pub clamps: u32,
    /// PERSISTs refused.
    pub persist_denied: u32,
}

/// A `Request` as the general plan reads it: with its keys found, and the clock.
struct Input<'a> {
    table: &'a TierTable,
    info: &'a CommandInfo,
    argv: &'a [&'a [u8]],
    /// Its keys, found with the command table.
    keys: &'a [KeyRef],
    mode: Mode,
    /// Wall-clock now in Unix ms, for EXPIREAT-style absolute times; read only when a
    /// TTL argument needs it.
    now_ms: std::cell::OnceCell<u64>,
}

/// One request to plan: the request as the client sent it, with its command and the
/// client's connection state.
pub struct Request<'a> {
    pub table: &'a TierTable,
    pub info: &'a CommandInfo,
    /// Its arguments, `argv[0]` the command name.
    pub argv: &'a [&'a [u8]],
    /// The whole request as RESP (as sent, or an inline command encoded).
    pub raw: &'a [u8],
    pub mode: Mode,
}

/// What planning decided for one request.
#[derive(Debug)]
pub enum Planned {
    /// None of its keys is tiered.
    Untiered,
    /// Its keys could not be found (a malformed key spec's arguments).
    Unclassified,
    /// A plain read (see `reads_plainly`): sent as it is, only its keys counted.
    Read(KeyRoles),
    /// Sent as the plan says.
    Plan(Plan),
}

/// Plans a request. The usual request, one key as the first argument, is settled without
/// the general key search: an untiered key, a plain read, or `SET k v` given its tier's
/// TTL (`plain_set`), whose plan is the one the general path builds.
#[inline(always)]
pub fn plan(request: &Request) -> Planned {
    let Request { table, info, argv, raw, mode } = *request;
    if let (Some(flags), Some(key)) = (info.single_key(), argv.get(1)) {
        let Some(class) = table.classify(key) else { return Planned::Untiered };
        if reads_plainly(table, info, std::iter::once(class)) {
            return Planned::Read(smallvec::smallvec![(class, role(true, flags), 1)]);
        }
        if info.kind == crate::command::Kind::Set
            && let Some(rewrite) = plain_set(table, class, argv, raw)
        {
            return Planned::Plan(Plan::set_with_ttl(class, rewrite));
        }
    }
    let Ok(keys) = crate::command::keys_of(info, argv) else { return Planned::Unclassified };
    let input = Input { table, info, argv, keys: &keys, mode, now_ms: Default::default() };
    let classified = classify(&input);
    if classified.is_empty() {
        return Planned::Untiered;
    }
    if reads_plainly(table, info, classified.iter().map(|k| k.0)) {
        return Planned::Read(key_roles(&classified));
    }
    let mut b = builder::Builder::new(&input, classified);
    b.apply_policy();
    Planned::Plan(b.finish())
}

impl Plan {
    /// The plan of `SET k v` (key of `class`) sent as `rewrite`, `SET k v PX <ms>`.
    fn set_with_ttl(class: Class, rewrite: Bytes) -> Plan {
        Plan {
            rewrite: Some(rewrite),
            frames: 1,
            fix: ReplyFix::None,
            refuse: None,
            keys: smallvec::smallvec![(class, Role::Write, 1)],
            queued_extra: 0,
            ttl_rewrites: 0,
            rewritten: smallvec::smallvec![class],
            clamps: 0,
            persist_denied: 0,
        }
    }
}

/// `SET k v` on a tier with a TTL, the most common tiered write: the `SET k v PX <ms>`
/// that the general plan would send (see `Builder::set`), built without the builder. `raw` is the
/// request as the client sent it (RESP): its arguments are kept byte for byte, which is
/// cheaper than encoding them again. `None` for any other shape, which takes the
/// general path.
fn plain_set(table: &TierTable, class: Class, argv: &[&[u8]], raw: &[u8]) -> Option<Bytes> {
    if argv.len() != 3 {
        return None;
    }
    let ms = table.tier(class.tier).policy.fresh_ms()?;
    let mut digits = itoa::Buffer::new();
    let ms = digits.format(ms).as_bytes();
    let Some(arguments) = raw.strip_prefix(b"*3\r\n") else {
        return Some(encode_command_parts(argv, &[b"PX", ms]));
    };
    let mut len_digits = itoa::Buffer::new();
    let ms_len = len_digits.format(ms.len()).as_bytes();
    let mut out = BytesMut::with_capacity(raw.len() + 16 + ms.len());
    for part in [&b"*5\r\n"[..], arguments, b"$2\r\nPX\r\n$", ms_len, b"\r\n", ms, b"\r\n"] {
        out.extend_from_slice(part);
    }
    Some(out.freeze())
}

/// Whether a command on keys of these classes is a plain read: read-only, and no tier of
/// its keys slides (a sliding read needs a TTL refresh, so a plan).
#[inline]
fn reads_plainly(table: &TierTable, info: &CommandInfo, mut classes: impl Iterator<Item = Class>) -> bool {
    info.has(cmd_flag::READONLY) && !classes.any(|class| table.tier(class.tier).policy.sliding)
}

fn key_roles(keys: &Classified) -> KeyRoles {
    // Indexes are below the argument count, which `max_multibulk_len` keeps under i32::MAX.
    keys.iter().map(|&(class, role, index, _)| (class, role, index as u32)).collect()
}

/// Classifies every key and decides its role.
fn classify(input: &Input) -> Classified {
    let readonly = input.info.has(cmd_flag::READONLY);
    input
        .keys
        .iter()
        .filter_map(|k| {
            let class = input.table.classify(input.argv.get(k.index)?)?;
            Some((class, role(readonly, k.flags), k.index, k.flags))
        })
        .collect()
}

/// What a command does with a key, from its key-spec flags.
pub fn role(readonly: bool, flags: u16) -> Role {
    if !readonly && flags & (flag::OW | flag::INSERT | flag::UPDATE) != 0 {
        Role::Write
    } else if flags & flag::ACCESS != 0 {
        Role::Read
    } else {
        Role::Other
    }
}
