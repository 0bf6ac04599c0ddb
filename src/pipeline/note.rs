//! What a forwarded request's reply needs on its way back: how many frames it is, how
//! to cut them (`ReplyFix`), what to count (`Account`), and whether PostgreSQL may answer
//! it. Built by `prepare`, kept by the handler until the replies arrive, read by `reply`.

use super::ReadThrough;
use crate::resp::reply::Protocol;
pub use crate::stats::{Account, AccountKeys, Elements};
use crate::tier::ReplyFix;

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
    pub through: Through,
    /// For the client's EXEC: the accounting of each queued command, in order.
    pub queued: Box<[Option<Account>]>,
}

impl Note {
    /// Frames passed through untouched and uncounted.
    pub fn plain(frames: usize) -> Note {
        Note {
            frames,
            repeat: 1,
            fix: ReplyFix::None,
            account: None,
            through: Through::No,
            queued: Box::default(),
        }
    }

    /// Frames cut by `fix` and counted by `account`, read through where `through` says.
    pub(super) fn counted(frames: usize, fix: ReplyFix, account: Account, through: Through) -> Note {
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
            (Some(last), Some(_)) if last.reads_through_like(&note) => last.repeat += 1,
            _ => notes.push(note),
        }
    }

    /// Whether `next`, a deferred GET whose key entry follows this note's, joins it: the
    /// same accounting and the same read-through settings. Its key is found again by
    /// position (see `Through::Get`).
    fn reads_through_like(&self, next: &Note) -> bool {
        match (&self.through, &next.through) {
            (Through::Get(mine), Through::Get(theirs)) => {
                self.repeat < u32::MAX
                    && mine.protocol == theirs.protocol
                    && mine.when_down == theirs.when_down
                    && self.frames == next.frames
                    && self.fix == ReplyFix::None
                    && next.fix == ReplyFix::None
                    && self.queued.is_empty()
                    && next.queued.is_empty()
                    && self.account == next.account
            }
            _ => false,
        }
    }

    /// A note that only counts one reply frame (`Prepared::Counted`'s).
    pub fn counting(account: Account) -> Note {
        Note::counted(1, ReplyFix::None, account, Through::No)
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
        self.account.is_some() && self.fix == ReplyFix::None && self.through.is_no() && self.queued.is_empty()
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

/// Whether, and how, PostgreSQL may answer a request's reply.
#[derive(Debug, Default)]
pub enum Through {
    /// It may not.
    #[default]
    No,
    /// A read a rule covers, worked out when the request was prepared.
    Ready(Box<ReadThrough>),
    /// `GET key` where a rule covers the key, the usual read-through read. Nothing is
    /// built for it unless its reply is a miss (or strata's upstream error): a hit, by far
    /// the usual reply, costs no allocation. The key is kept as an entry of its batch's
    /// key buffer (`DeferredGet::entry`), so a pipeline of such GETs keeps one note.
    Get(DeferredGet),
}

impl Through {
    /// No read-through.
    pub fn is_no(&self) -> bool {
        matches!(self, Through::No)
    }
}

/// A `GET key` that PostgreSQL answers on a miss; see `Through::Get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredGet {
    /// The read-through rule of the key.
    pub rule: u32,
    /// Before the request joins a batch: where the key is in the request's bytes. After:
    /// where the key's entry starts in the batch's key buffer (repeats follow it).
    pub at: u32,
    /// Key length.
    pub len: u32,
    /// The client's protocol, for the reply built from the database.
    pub protocol: Protocol,
    /// The key's tier answers from PostgreSQL while Redis is down.
    pub when_down: bool,
}

impl DeferredGet {
    /// Size of one key's entry in a batch's key buffer: rule, length, then the key.
    pub const HEADER: usize = 8;

    /// Appends the entry for the key at `self.at` of `request` to `keys`, and points
    /// `self.at` at it. `false` (nothing kept) when the buffer would pass 4 GiB, which
    /// only a client buffer limit above that allows: the caller builds the read instead.
    pub fn keep_key(&mut self, request: &[u8], keys: &mut bytes::BytesMut) -> bool {
        let Ok(at) = u32::try_from(keys.len()) else { return false };
        let key = &request[self.at as usize..(self.at + self.len) as usize];
        self.at = at;
        keys.extend_from_slice(&self.rule.to_le_bytes());
        keys.extend_from_slice(&self.len.to_le_bytes());
        keys.extend_from_slice(key);
        true
    }

    /// The key at `self.at` of `request`, copied (for a request that keeps no entry).
    pub fn key_in(&self, request: &[u8]) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&request[self.at as usize..(self.at + self.len) as usize])
    }

    /// The entry at `at` of `keys`: (rule, key), and where the next entry starts.
    pub fn entry(keys: &bytes::Bytes, at: usize) -> Option<(u32, bytes::Bytes, usize)> {
        let header = keys.get(at..at + Self::HEADER)?;
        let rule = u32::from_le_bytes(header[..4].try_into().ok()?);
        let len = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
        let start = at + Self::HEADER;
        let key = keys.slice(start..start.checked_add(len).filter(|end| *end <= keys.len())?);
        Some((rule, key, start + len))
    }

    /// The read to answer from the database for `key` (read from the request or the
    /// key buffer).
    pub fn read(&self, key: bytes::Bytes) -> ReadThrough {
        ReadThrough {
            kind: super::through::ReadKind::Get,
            keys: smallvec::smallvec![(key, Some(self.rule as usize))],
            protocol: self.protocol,
            when_down: self.when_down,
            write_back: true,
        }
    }
}
