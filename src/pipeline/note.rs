//! What a forwarded request's reply needs on its way back: how many frames it is, how
//! to cut them (`ReplyFix`), what to count (`Account`), and whether PostgreSQL may answer
//! it. Built by `prepare`, kept by the handler until the replies arrive, read by `reply`.

use super::ReadThrough;
use crate::tier::plan::Role;
use crate::tier::{Class, ReplyFix};

/// How to treat the reply frames of one request, of `repeat` requests that are counted
/// alike, or of a run of plain requests.
#[derive(Debug)]
pub struct Note {
    /// Reply frames Redis sends for what was sent (per request, when repeated).
    pub frames: usize,
    /// How many requests in a row this note stands for (see `Note::push`).
    pub repeat: u32,
    /// How to cut them.
    pub fix: ReplyFix,
    /// What to count once the reply is known.
    pub account: Option<Account>,
    /// A read PostgreSQL can answer on a miss or while Redis is down.
    pub through: Option<Box<ReadThrough>>,
    /// For the client's EXEC: the accounting of each queued command, in order.
    pub queued: Box<[Option<Account>]>,
}

impl Note {
    /// Frames passed through untouched and uncounted.
    pub fn plain(frames: usize) -> Note {
        Note { frames, repeat: 1, fix: ReplyFix::None, account: None, through: None, queued: Box::default() }
    }

    /// Frames cut by `fix` and counted by `account`, read through where `through` says.
    pub(super) fn counted(
        frames: usize,
        fix: ReplyFix,
        account: Account,
        through: Option<Box<ReadThrough>>,
    ) -> Note {
        Note { frames, repeat: 1, fix, account: Some(account), through, queued: Box::default() }
    }

    /// Adds `note` after `notes`, merged into the last one when both only count their
    /// replies, the same way: a pipeline of GETs on one prefix keeps one note per batch
    /// instead of one per request. Notes are read again only when the replies arrive,
    /// by then out of the CPU cache, so their number is paid in cache misses.
    pub fn push(notes: &mut Vec<Note>, note: Note) {
        match (notes.last_mut(), &note.account) {
            (Some(last), Some(account)) if note.only_counts() && last.repeats(note.frames, account) => {
                last.repeat += 1
            }
            _ => notes.push(note),
        }
    }

    /// A note that only counts one reply frame (`Prepared::Counted`'s).
    pub fn counting(account: Account) -> Note {
        Note::counted(1, ReplyFix::None, account, None)
    }

    /// `Note::push` of a request that only counts its one reply frame (`Prepared::Counted`),
    /// without building its note when it joins the previous one.
    pub fn push_counted(notes: &mut Vec<Note>, account: Account) {
        match notes.last_mut() {
            Some(last) if last.repeats(1, &account) => last.repeat += 1,
            _ => notes.push(Note::counting(account)),
        }
    }

    /// Whether a request of `frames` frames, counted by `account`, can join this note.
    fn repeats(&self, frames: usize, account: &Account) -> bool {
        self.repeat < u32::MAX
            && self.frames == frames
            && self.only_counts()
            && self.account.as_ref() == Some(account)
    }

    /// Counted, and nothing else: no cut, no read-through, no transaction.
    fn only_counts(&self) -> bool {
        self.account.is_some()
            && self.fix == ReplyFix::None
            && self.through.is_none()
            && self.queued.is_empty()
    }

    /// Frames Redis sends for all the requests of this note.
    pub fn upstream_frames(&self) -> usize {
        self.frames * self.repeat as usize
    }

    /// Replies the client gets for this note.
    pub fn client_frames(&self) -> usize {
        if self.fix == ReplyFix::None { self.upstream_frames() } else { self.repeat as usize }
    }
}

/// Accounting for one request's reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Account {
    /// Tiered keys, what the request does with them, and their argument index.
    pub keys: AccountKeys,
    /// How a reply array maps to keys.
    pub elements: Elements,
    /// An integer 0 reply means "missing" (EXISTS, HEXISTS, SISMEMBER).
    pub zero_is_miss: bool,
}

/// The tiered keys of one request. One key at argument 1 (nearly every request) is held
/// inline in 8 bytes; several are boxed. Notes are moved several times per request, so
/// their size is paid on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKeys {
    /// The key at argument 1.
    First(Class, Role),
    /// Any other set: (class, role, argument index).
    Many(Box<Vec<(Class, Role, u32)>>),
}

impl AccountKeys {
    /// From a plan's keys.
    pub fn from_roles(keys: &[(Class, Role, u32)]) -> AccountKeys {
        match keys {
            &[(class, role, 1)] => AccountKeys::First(class, role),
            _ => AccountKeys::Many(Box::new(keys.to_vec())),
        }
    }

    /// Every key as (class, role, argument index).
    pub fn iter(&self) -> impl Iterator<Item = (Class, Role, u32)> + '_ {
        let (first, many) = match self {
            AccountKeys::First(class, role) => (Some((*class, *role, 1)), &[][..]),
            AccountKeys::Many(keys) => (None, &keys[..]),
        };
        first.into_iter().chain(many.iter().copied())
    }
}

/// How the elements of an array reply relate to the request's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elements {
    /// The reply as a whole answers for every key.
    Whole,
    /// Element i is the key at argument i + 1 (MGET).
    PerKey,
    /// Each element is one field of the single key (HMGET, SMISMEMBER).
    PerField,
}
