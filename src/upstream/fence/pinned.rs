//! A client's own connection in the stripe table. Its requests take their keys' stripes
//! with the owner `PINNED`, which only that client may add to (it counts here what it
//! holds); everyone else, shared connections and other clients' own ones alike, waits
//! until Redis has answered them. Redis reads its sockets in turn, so without this a
//! request written on the client's own connection could run after one that another
//! client sent later on a shared connection (a client that pipelines and closes, and a
//! client that connects after it, say).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use smallvec::SmallVec;

use super::{Conflict, Fences, Held, OWNER_SHIFT, PIN_MARK, PINNED, READS, RESERVED_MASK, WRITE_ONE, WRITES};

/// What one client has in flight on its own connection.
#[derive(Debug, Default)]
pub struct Pinned {
    /// Stripes with requests in flight, and how many on each. Its length is bounded by
    /// the client's pipeline depth; touched by the client's handler and the connection
    /// task releasing replies, never contended for long.
    counts: Mutex<SmallVec<[(u16, u32); 8]>>,
    /// Requests in flight that may block (BLPOP, WAIT). While one is, later requests take
    /// no stripes: they wait behind it on the connection, and holding their keys could
    /// keep out the very request that would unblock it.
    blocking: AtomicU32,
}

impl Pinned {
    /// True while a request that may block is in flight on the connection.
    pub fn may_block(&self) -> bool {
        self.blocking.load(Ordering::Acquire) != 0
    }

    /// One request on `stripe` was answered (or its connection is gone).
    pub(super) fn forget(&self, stripe: u16) {
        let mut counts = self.lock();
        if let Some(at) = counts.iter().position(|&(s, _)| s == stripe) {
            counts[at].1 -= 1;
            if counts[at].1 == 0 {
                counts.swap_remove(at);
            }
        }
    }

    pub(super) fn unblocked(&self) {
        self.blocking.fetch_sub(1, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmallVec<[(u16, u32); 8]>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Fences {
    /// Counts one request on `stripe` for the own connection of the client `pinned`, or
    /// says why not: the stripe must be free, or held by this client's own connection
    /// alone. A client `waiting` in the room has checked its turn; anyone else gives way
    /// to a reservation.
    pub fn try_take_pinned(&self, stripe: u16, pinned: &Pinned, waiting: bool) -> Result<(), Conflict> {
        let word = &self.stripes[stripe as usize];
        // Held from the look at what the client holds through counting the new hold: a
        // release of the client's (which forgets first) cannot slip in between, so a
        // stripe freed and taken by someone else meanwhile is never joined.
        let mut counts = pinned.lock();
        let holds = counts.iter().position(|&(s, _)| s == stripe);
        let mut current = word.load(Ordering::Acquire);
        loop {
            if !waiting && current & RESERVED_MASK != 0 {
                return Err(Conflict::Reserved);
            }
            let writes = current & WRITES;
            let next = if current & (READS | WRITES) == 0 {
                (current & RESERVED_MASK) | PINNED << OWNER_SHIFT | WRITE_ONE
            } else if current >> OWNER_SHIFT == PINNED && writes != WRITES && holds.is_some() {
                current + WRITE_ONE
            } else {
                return Err(Conflict::Busy);
            };
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    match holds {
                        Some(at) => counts[at].1 += 1,
                        None => counts.push((stripe, 1)),
                    }
                    return Ok(());
                }
                Err(seen) => current = seen,
            }
        }
    }
}

impl Held {
    /// Counts `stripe`, taken with `try_take_pinned` for `pinned`'s connection.
    pub fn push_pinned(&mut self, fences: &Arc<Fences>, pinned: &Arc<Pinned>, stripe: u16) {
        if self.fences.is_none() {
            self.fences = Some(fences.clone());
        }
        self.pinned.get_or_insert_with(|| (pinned.clone(), false));
        self.stripes.push(stripe | PIN_MARK);
    }

    /// The requests held here include one that may block on `pinned`'s connection.
    pub fn mark_blocking(&mut self, pinned: &Arc<Pinned>) {
        let entry = self.pinned.get_or_insert_with(|| (pinned.clone(), false));
        if !entry.1 {
            entry.1 = true;
            pinned.blocking.fetch_add(1, Ordering::AcqRel);
        }
    }
}
