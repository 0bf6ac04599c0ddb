//! Same-key order across the shared connections. Each key hashes to one of `STRIPES`
//! stripes; a stripe with a write in flight belongs to the one shared connection that
//! carries it. A request whose key's stripe belongs to another connection may not be
//! sent on its own connection, because Redis could run it first: its client moves to the
//! owner (after its own replies are in) or, across protocols, waits for the stripe to
//! empty. Reads commute with reads, so reads alone may be in flight on several
//! connections at once (a hot key read by many clients is not funnelled into one socket);
//! a write then waits for them. So requests that touch the same key reach Redis in the
//! order strata read them whenever the order can matter, whichever clients send them.
//!
//! A client's own connection (MULTI, WATCH, SELECT…) takes its keys' stripes too, for
//! itself alone (`pinned`): Redis reads its sockets in turn, so a request written on one
//! connection can run after one written later on another; the fence makes the later one
//! wait for the reply instead. Only commands that may block (BLPOP, WAIT) and what
//! follows them on the same connection go unfenced: holding a key while blocked could
//! wait forever for the very request that would unblock it.
//!
//! A client that has to wait takes a turn in the waiting room (`room`): it reserves the
//! stripes of every request it has read and not yet sent, so a client that read later
//! cannot slip past it on those keys while it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use crate::command::{CommandInfo, keys_of};

mod pinned;
mod room;
mod watch;
pub use pinned::Pinned;
pub use room::Ticket;
pub use watch::Watch;

/// Stripes in the table: collisions only cost a needless move of a client, and 4,096
/// words (32 KiB) stay in cache.
const STRIPES: usize = 4096;
/// A stripe word, from the low bits: reads in flight (20 bits), writes in flight (20),
/// clients waiting their turn that reserved it (12), and the owner (12: connection + 1,
/// or `MIXED` for reads on several connections). A full count makes the next request
/// wait, as a conflict would: a million requests in flight on one stripe.
const READ_ONE: u64 = 1;
const READS: u64 = (1 << 20) - 1;
const WRITE_ONE: u64 = 1 << 20;
const WRITES: u64 = ((1 << 20) - 1) << 20;
const RESERVED_ONE: u64 = 1 << 40;
const RESERVED_MASK: u64 = 0xFFF << 40;
const OWNER_SHIFT: u32 = 52;
const MIXED: u64 = 0xFFF;
/// The owner of a stripe held for a read-through write-back (strata's own connection):
/// every request on the key waits until the write-back has been answered.
const WRITE_BACK: u64 = 0xFFE;
/// The owner of a stripe held by requests on a client's own connection (`pinned`): only
/// that client may add to it; everyone else waits until it is answered.
const PINNED: u64 = 0xFFD;
/// In a `Held` entry, marks a stripe taken for a read (stripe numbers need 12 bits).
const READ_MARK: u16 = 1 << 15;
/// In a `Held` entry, marks a stripe taken on a client's own connection.
const PIN_MARK: u16 = 1 << 14;

/// What a request does to its keys: reads may share a stripe across connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    Read,
    /// Until known otherwise, a request writes.
    #[default]
    Write,
}

/// Which shared connection: protocol slots are numbered RESP2 first, then RESP3.
pub type ConnNumber = u16;

/// The stripe table, one per shared pool.
#[derive(Debug)]
pub struct Fences {
    stripes: Box<[AtomicU64]>,
    room: room::WaitingRoom,
    /// Clients waiting for a stripe, told when one is released or a waiting client
    /// leaves the room (`watch`).
    released: tokio::sync::Notify,
    watchers: std::sync::atomic::AtomicUsize,
}

impl Default for Fences {
    fn default() -> Self {
        Fences {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            room: room::WaitingRoom::default(),
            released: tokio::sync::Notify::new(),
            watchers: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Why a stripe cannot be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Requests on another connection hold it.
    Owner(ConnNumber),
    /// A client that read its requests earlier is waiting for it.
    Reserved,
    /// Reads on several connections (or a full count): wait for them to drain.
    Busy,
}

/// The stripe of a key.
pub fn stripe_of(key: &[u8]) -> u16 {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x5772_a7a5).hash_one(key);
    (hash as usize % STRIPES) as u16
}

/// A request's stripes; inline for the usual few keys.
pub type Stripes = SmallVec<[u16; 4]>;

/// Appends the stripes of the request's keys (each once) to `out`.
pub fn stripes_of(info: Option<&CommandInfo>, argv: &[&[u8]], out: &mut Stripes) {
    let Some(info) = info else { return };
    // GET, SET, INCR …: the one key is the first argument.
    if info.single_key().is_some() {
        if let Some(key) = argv.get(1) {
            out.push(stripe_of(key));
        }
        return;
    }
    // A request whose keys cannot be found is not fenced; Redis refuses most of them.
    let Ok(keys) = keys_of(info, argv) else { return };
    for key in keys {
        if let Some(arg) = argv.get(key.index) {
            let stripe = stripe_of(arg);
            if !out.contains(&stripe) {
                out.push(stripe);
            }
        }
    }
}

impl Fences {
    /// Counts one request on `stripe` for connection `conn`, or says why not. A client
    /// `waiting` in the room has checked its turn (`Ticket::is_first_for`); anyone else
    /// gives way to a reservation.
    pub fn try_take(
        &self,
        stripe: u16,
        conn: ConnNumber,
        access: Access,
        waiting: bool,
    ) -> Result<(), Conflict> {
        let word = &self.stripes[stripe as usize];
        let mine = u64::from(conn) + 1;
        let one = if access == Access::Read { READ_ONE } else { WRITE_ONE };
        let mut current = word.load(Ordering::Acquire);
        loop {
            if !waiting && current & RESERVED_MASK != 0 {
                return Err(Conflict::Reserved);
            }
            let owner = current >> OWNER_SHIFT;
            let (reads, writes) = (current & READS, current & WRITES);
            let full = if access == Access::Read { reads == READS } else { writes == WRITES };
            let next = if full {
                return Err(Conflict::Busy);
            } else if reads | writes == 0 {
                (current & RESERVED_MASK) | mine << OWNER_SHIFT | one
            } else if owner == mine {
                current + one
            } else if owner == WRITE_BACK || owner == PINNED {
                return Err(Conflict::Busy);
            } else if access == Access::Read && writes == 0 {
                (current | MIXED << OWNER_SHIFT) + READ_ONE
            } else if owner == MIXED {
                return Err(Conflict::Busy);
            } else {
                return Err(Conflict::Owner((owner - 1) as ConnNumber));
            };
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// Holds `key`'s stripe for a write-back on strata's own connection, if nothing is in
    /// flight on it and no waiting client reserved it: until the returned hold is dropped
    /// (the write-back was answered), every request on the key waits, so one that follows
    /// the client's answer reaches Redis after the write-back. `None`: the stripe is busy.
    pub fn hold_for_write_back(self: &Arc<Self>, key: &[u8]) -> Option<WriteBackHold> {
        let stripe = stripe_of(key);
        let word = &self.stripes[stripe as usize];
        let held = WRITE_BACK << OWNER_SHIFT | WRITE_ONE;
        let current = word.load(Ordering::Acquire);
        if current & (READS | WRITES | RESERVED_MASK) != 0 {
            return None;
        }
        word.compare_exchange(current, held, Ordering::AcqRel, Ordering::Acquire).ok()?;
        Some(WriteBackHold { fences: self.clone(), stripe })
    }

    /// True when a write-back holds `stripe` (see `hold_for_write_back`).
    #[cfg(test)]
    fn held_for_write_back(&self, stripe: u16) -> bool {
        let word = self.stripes[stripe as usize].load(Ordering::Acquire);
        word >> OWNER_SHIFT == WRITE_BACK && word & WRITES != 0
    }

    /// Requests on `stripe` left in flight; 0 frees it for any connection.
    pub fn in_flight(&self, stripe: u16) -> u64 {
        let word = self.stripes[stripe as usize].load(Ordering::Acquire);
        (word & READS) + ((word & WRITES) >> 20)
    }

    /// Releases one request taken as `entry` (a stripe, marked if it was a read), and
    /// wakes the clients waiting for a stripe.
    fn release(&self, entry: u16) {
        self.release_quietly(entry);
        self.wake_watchers();
    }

    /// `release` without waking anyone: for a stripe the caller took a moment ago and
    /// gives back without having sent anything on it (nobody's wait could end by it, and
    /// waking itself would make a waiting client try again at once, forever).
    fn release_quietly(&self, entry: u16) {
        let (stripe, one) = if entry & READ_MARK != 0 {
            (entry & !READ_MARK, READ_ONE)
        } else {
            (entry & !PIN_MARK, WRITE_ONE)
        };
        self.stripes[stripe as usize].fetch_sub(one, Ordering::SeqCst);
    }

    /// Marks `stripe` as wanted by a waiting client; `false` if 4,095 already want it
    /// (the ticket order in the room still holds for them).
    fn reserve(&self, stripe: u16) -> bool {
        let word = &self.stripes[stripe as usize];
        word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (w & RESERVED_MASK != RESERVED_MASK).then_some(w + RESERVED_ONE)
        })
        .is_ok()
    }

    fn unreserve(&self, stripe: u16) {
        self.stripes[stripe as usize].fetch_sub(RESERVED_ONE, Ordering::AcqRel);
    }
}

/// A key's stripe held for a write-back; released when dropped.
#[derive(Debug)]
pub struct WriteBackHold {
    fences: Arc<Fences>,
    stripe: u16,
}

impl Drop for WriteBackHold {
    fn drop(&mut self) {
        self.fences.release(self.stripe);
    }
}

/// Stripes counted for requests not yet answered; released when dropped (their replies
/// arrived, or their connection is gone). Travels with the job that carries them.
#[derive(Debug, Default)]
pub struct Held {
    fences: Option<Arc<Fences>>,
    /// Inline for a typical pipeline; grows with a deep one, which the pipeline depth
    /// bounds. Reads carry `READ_MARK`, stripes of a client's own connection `PIN_MARK`.
    stripes: SmallVec<[u16; 16]>,
    /// The client whose own connection carries the `PIN_MARK` stripes, and whether the
    /// requests include one that may block (see `Pinned`).
    pinned: Option<(Arc<Pinned>, bool)>,
}

impl Held {
    /// Counts `stripe` (already taken in `fences` for `access`) among these.
    pub fn push(&mut self, fences: &Arc<Fences>, stripe: u16, access: Access) {
        if self.fences.is_none() {
            self.fences = Some(fences.clone());
        }
        self.stripes.push(if access == Access::Read { stripe | READ_MARK } else { stripe });
    }

    /// Moves every stripe out, leaving this empty (for the job that carries them).
    pub fn take(&mut self) -> Held {
        Held {
            fences: self.fences.clone(),
            stripes: std::mem::take(&mut self.stripes),
            pinned: self.pinned.take(),
        }
    }

    /// Gives back the stripes counted since the length was `len`: a request that took
    /// some of its keys' stripes but not all, and sent nothing (`Fences::release_quietly`).
    pub fn give_back_from(&mut self, len: usize) {
        self.release_entries(len, false);
    }

    fn release_entries(&mut self, len: usize, wake: bool) {
        let Some(fences) = &self.fences else { return };
        if len >= self.stripes.len() {
            return;
        }
        for entry in self.stripes.drain(len..) {
            // The client forgets the stripe first: while it still counts it, the
            // stripe's word counts it too, so nobody else can have taken it.
            if entry & PIN_MARK != 0
                && let Some((pinned, _)) = &self.pinned
            {
                pinned.forget(entry & !PIN_MARK);
            }
            fences.release_quietly(entry);
        }
        if wake {
            fences.wake_watchers();
        }
    }

    /// How many stripes are held.
    pub fn len(&self) -> usize {
        self.stripes.len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.stripes.is_empty()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release_entries(0, true);
        if let Some((pinned, true)) = &self.pinned {
            pinned.unblocked();
        }
    }
}

#[cfg(test)]
mod tests;
