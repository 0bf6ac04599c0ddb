//! What a forwarded request's reply needs on its way back: how many frames it is, how
//! to cut them (`ReplyFix`), what to count (`Account`), and whether PostgreSQL may answer
//! it. Built by `prepare`, kept by the handler until the replies arrive, read by `reply`.

use bytes::Bytes;

use super::ReadThrough;
use super::through::Miss;
use crate::fallback::Fallback;
use crate::resp::reply::Protocol;
use crate::resp::{Frame, Limits, RequestParser};
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
    /// replies the same way, or both are deferred reads with the same settings: a
    /// pipeline of GETs on one prefix keeps one note per batch instead of one per
    /// request. Notes are read again only when the replies arrive, by then out of the CPU
    /// cache, so their number is paid in cache misses.
    pub fn push(notes: &mut Vec<Note>, note: Note) {
        match notes.last_mut() {
            Some(last) if last.joins(&note) => last.repeat += 1,
            _ => notes.push(note),
        }
    }

    /// Whether `next` can join this note: the same frames, cut and count, and the same
    /// read-through settings (each deferred read's request is found by position).
    fn joins(&self, next: &Note) -> bool {
        let through_alike = match (&self.through, &next.through) {
            (Through::No, Through::No) => true,
            (Through::Read(mine), Through::Read(theirs)) => mine.alike(theirs),
            _ => false,
        };
        self.repeat < u32::MAX
            && self.account.is_some()
            && self.frames == next.frames
            && self.fix == ReplyFix::None
            && next.fix == ReplyFix::None
            && self.queued.is_empty()
            && next.queued.is_empty()
            && self.account == next.account
            && through_alike
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

/// Whether PostgreSQL may answer a request's reply.
#[derive(Debug, Default)]
pub enum Through {
    /// It may not.
    #[default]
    No,
    /// A read a rule covers. Nothing is built for it unless its reply calls for
    /// PostgreSQL (a miss, or strata's upstream error): a hit, by far the usual reply,
    /// costs no allocation. The request is kept as an entry of its batch's request buffer
    /// (`DeferredRead::keep`), so a pipeline of such reads keeps one note.
    Read(DeferredRead),
}

impl Through {
    /// No read-through.
    pub fn is_no(&self) -> bool {
        matches!(self, Through::No)
    }
}

/// A read PostgreSQL answers when its reply calls for it; see `Through::Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredRead {
    /// Once kept: where the request's entry starts in its batch's request buffer
    /// (the entries of the note's repeats follow it).
    pub at: u32,
    /// What a reply that calls for PostgreSQL looks like.
    pub miss: Miss,
    /// The client's protocol, for the reply built from the database.
    pub protocol: Protocol,
    /// Every key's tier answers from PostgreSQL while Redis is down.
    pub when_down: bool,
    /// A loaded value is written back (not while the client WATCHes).
    pub write_back: bool,
}

impl DeferredRead {
    /// Size of an entry's header in a request buffer: the request's length.
    const HEADER: usize = 4;

    /// Appends an entry for `request` (as the client sent it) to `buffer`, and points
    /// `self.at` at it. `false` (nothing kept) when the buffer would pass 4 GiB, which
    /// only a client buffer limit above that allows.
    pub fn keep(&mut self, request: &[u8], buffer: &mut bytes::BytesMut) -> bool {
        let end = buffer.len() + Self::HEADER + request.len();
        let (Ok(at), Ok(len), Ok(_)) =
            (u32::try_from(buffer.len()), u32::try_from(request.len()), u32::try_from(end))
        else {
            return false;
        };
        self.at = at;
        buffer.extend_from_slice(&len.to_le_bytes());
        buffer.extend_from_slice(request);
        true
    }

    /// The request of the entry at `at` of `buffer`, and where the next entry starts.
    pub fn entry(buffer: &Bytes, at: usize) -> Option<(Bytes, usize)> {
        let header = buffer.get(at..at + Self::HEADER)?;
        let len = u32::from_le_bytes(header.try_into().ok()?) as usize;
        let start = at + Self::HEADER;
        let request = buffer.slice(start..start.checked_add(len).filter(|end| *end <= buffer.len())?);
        Some((request, start + len))
    }

    /// The same settings as `other`, wherever each is kept.
    fn alike(&self, other: &DeferredRead) -> bool {
        DeferredRead { at: 0, ..*self } == DeferredRead { at: 0, ..*other }
    }

    /// Whether `reply` calls for PostgreSQL: a miss, or (`redis_down`) strata's own
    /// error while Redis is down, for a read whose tiers answer then.
    pub fn calls_for(&self, reply: &[u8], redis_down: bool) -> bool {
        self.miss.is(reply) || (self.when_down && redis_down)
    }

    /// The read to answer from PostgreSQL for `request` (the bytes the client sent).
    pub fn build(&self, fallback: &Fallback, request: &[u8]) -> Option<ReadThrough> {
        let mut ranges = Vec::new();
        let mut parser = RequestParser::new(Limits::UNBOUNDED);
        match parser.next(request, &mut ranges) {
            Ok(Some(Frame::Multibulk { .. })) => {}
            // An inline command joins a batch with its tier's rewrite; the read is its own.
            Ok(Some(Frame::Inline { encoded, .. })) => return self.build(fallback, &encoded),
            _ => return None,
        }
        let argv: smallvec::SmallVec<[&[u8]; 4]> = ranges.iter().map(|r| &request[r.clone()]).collect();
        let name = String::from_utf8_lossy(argv.first()?).to_ascii_lowercase();
        let mut read = super::through::detect(fallback, &name, &argv, self.protocol)?;
        read.when_down = self.when_down;
        read.write_back = self.write_back;
        Some(read)
    }
}
