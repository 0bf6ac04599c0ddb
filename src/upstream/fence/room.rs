//! The waiting room: clients whose request found a key's stripe taken wait here in the
//! order they came, each with the stripes of every request it has read but not yet sent.
//! A client that read later (a new connection, or one that was simply scheduled later)
//! gives way on those stripes, so requests touching one key reach Redis in the order
//! strata read them even while the first of them waits. The first client in the room
//! waits only for requests already in flight, which Redis answers, so the room always
//! moves; nobody waits behind a later ticket.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::Fences;

/// Tickets in the order given, with the stripes each wants (sorted). Touched only by
/// clients that wait, never on the path of a request that finds its stripes free.
#[derive(Debug, Default)]
pub(super) struct WaitingRoom {
    queue: Mutex<VecDeque<(u64, Vec<u16>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A client's place in the room; it leaves when this is dropped.
#[derive(Debug)]
pub struct Ticket {
    fences: Arc<Fences>,
    number: u64,
    /// The stripes whose reservation count this ticket raised.
    reserved: Vec<u16>,
}

impl Fences {
    /// Takes a ticket behind everyone waiting, reserving `wanted` (any order, repeats fine).
    pub fn enter(self: &Arc<Self>, mut wanted: Vec<u16>) -> Ticket {
        wanted.sort_unstable();
        wanted.dedup();
        let mut queue = self.room.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Numbered under the lock, so the queue is in ticket order.
        let number = self.room.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reserved = wanted.iter().copied().filter(|&s| self.reserve(s)).collect();
        queue.push_back((number, wanted));
        Ticket { fences: self.clone(), number, reserved }
    }
}

impl Ticket {
    /// True when no client ahead in the room wants `stripe`.
    pub fn is_first_for(&self, stripe: u16) -> bool {
        let queue = self.fences.room.queue.lock().unwrap_or_else(|e| e.into_inner());
        !queue
            .iter()
            .take_while(|(number, _)| *number < self.number)
            .any(|(_, wanted)| wanted.binary_search(&stripe).is_ok())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queue = self.fences.room.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = queue.iter().position(|(number, _)| *number == self.number) {
            queue.remove(at);
        }
        drop(queue);
        for &stripe in &self.reserved {
            self.fences.unreserve(stripe);
        }
        self.fences.wake_watchers();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Access, Conflict, stripe_of};
    use super::*;

    #[test]
    fn a_later_client_gives_way_to_one_waiting_for_the_same_key() {
        let fences = Arc::new(Fences::default());
        let (k, other) = (stripe_of(b"k"), stripe_of(b"other"));
        assert_ne!(k, other);
        // Connection 1 has a request on k in flight; a client on connection 2 must wait.
        fences.try_take(k, 1, Access::Write, false).unwrap();
        let first = fences.enter(vec![k, other]);
        assert_eq!(
            fences.try_take(other, 0, Access::Read, false),
            Err(Conflict::Reserved),
            "read later: gives way"
        );
        let second = fences.enter(vec![other]);
        assert!(first.is_first_for(k) && first.is_first_for(other));
        assert!(!second.is_first_for(other), "the earlier ticket goes first");
        assert_eq!(fences.try_take(k, 2, Access::Write, true), Err(Conflict::Owner(1)));
        fences.release(k);
        assert_eq!(fences.try_take(k, 2, Access::Write, true), Ok(()));
        assert_eq!(fences.try_take(other, 2, Access::Write, true), Ok(()));
        drop(first);
        assert!(second.is_first_for(other));
        drop(second);
        // Everyone left: the reservations are gone, the requests still count.
        assert_eq!(fences.try_take(k, 2, Access::Write, false), Ok(()));
        assert_eq!(fences.in_flight(k), 2);
    }
}
