//! Same-key order across shared connections, on the client's side: a shared-route
//! request takes its keys' stripes for the client's connection (`upstream::fence`). When
//! another connection owns one, the client takes a ticket in the waiting room (reserving
//! the stripes of everything it has read, so later readers give way), waits for its
//! earlier replies and moves to that connection, or, across protocols, waits until the
//! stripe empties.

use std::time::Duration;

use super::Handler;
use crate::resp::request::{Frame, RequestParser};
use crate::server::action::Route;
use crate::upstream::fence::{Access, Conflict, Held, Stripes, Ticket, stripes_of};

/// Pause between tries while a stripe belongs to a connection the client cannot move to.
const RETRY: Duration = Duration::from_millis(1);
/// Longest a waiting client keeps its place while its own replies drain: a client that
/// does not read its replies must not hold up others on its keys for long.
const TURN_HOLD: Duration = Duration::from_millis(100);

/// The client's part in same-key order: the request being routed and what it holds.
#[derive(Default)]
pub(super) struct Fencing {
    /// Key stripes of the request being routed, if it goes on a shared connection.
    pub(super) stripes: Stripes,
    /// Whether that request only reads its keys as sent (reads may share a key's stripe).
    pub(super) access: Access,
    /// The client's place in the fences' waiting room while it waits for a stripe; kept
    /// until the requests read with the waiting one are sent.
    pub(super) waiting: Option<Ticket>,
    /// Stripes taken for shared-route requests not yet sent; they go with the next job.
    pub(super) held: Held,
}

impl Handler {
    /// Takes the current request's stripes for the client's shared connection, all or
    /// none; on failure says why.
    pub(super) fn take_stripes(&mut self) -> Result<(), Conflict> {
        if self.fencing.stripes.is_empty() {
            return Ok(());
        }
        let pool = &self.ctx.pool;
        let mine = pool.number(self.routes.shared.slot);
        let start = self.fencing.held.len();
        let waiting = self.fencing.waiting.as_ref();
        for &stripe in &self.fencing.stripes {
            let taken = match waiting {
                Some(ticket) if !ticket.is_first_for(stripe) => Err(Conflict::Reserved),
                _ => pool.fences.try_take(stripe, mine, self.fencing.access, waiting.is_some()),
            };
            if let Err(conflict) = taken {
                self.fencing.held.release_from(start);
                return Err(conflict);
            }
            self.fencing.held.push(&pool.fences, stripe, self.fencing.access);
        }
        Ok(())
    }

    /// Takes the stripes of the current request (the first `len` bytes of the read
    /// buffer), waiting or moving the client as needed. The request is sent next, after
    /// every earlier one (the run was flushed). `false`: the client is gone or killed
    /// meanwhile, and the request must not be sent.
    pub(super) async fn fence(&mut self, len: usize) -> bool {
        if self.fencing.stripes.is_empty() {
            return true;
        }
        // Earlier requests on the client's own connection first: stripes are never held
        // across a wait (a BLPOP there could wait for another client blocked on them).
        if self.last_route != Route::Shared {
            if self.drain().await.is_err() {
                self.closing = true;
                return false;
            }
            self.last_route = Route::Shared;
        }
        let mut moved = false;
        loop {
            let conflict = match self.take_stripes() {
                Ok(()) => return true,
                Err(conflict) => conflict,
            };
            self.first_batch_sent();
            if self.fencing.waiting.is_none() {
                let wanted = self.stripes_ahead(len);
                self.fencing.waiting = Some(self.ctx.pool.fences.enter(wanted));
                continue;
            }
            if let Conflict::Owner(owner) = conflict {
                // Moving to the owner is safe once nothing of this client is in flight.
                if let Err(e) = self.drain_for_a_while().await {
                    tracing::debug!(error = %e, "client gone while waiting for a key's stripe");
                    self.closing = true;
                    return false;
                }
                let slot = self.ctx.pool.slot_of(owner);
                if slot.protocol == self.routes.shared.slot.protocol && slot != self.routes.shared.slot {
                    self.routes.shared.move_to(slot);
                    if !std::mem::replace(&mut moved, true) {
                        continue;
                    }
                }
            }
            // Keys owned by two connections, by the other protocol's, held by a write-back,
            // or wanted by a client ahead in the room: wait, unless the client is killed
            // or strata shuts down.
            if !self.pause().await {
                return false;
            }
        }
    }

    /// A pinned request waits while a read-through write-back holds one of its keys (see
    /// `Fences::hold_for_write_back`); its stripes are then forgotten, since pinned
    /// connections are not fenced. `false`: the client is gone or killed meanwhile.
    pub(super) async fn after_write_backs(&mut self) -> bool {
        let fences = self.ctx.pool.fences.clone();
        while self.fencing.stripes.iter().any(|&stripe| fences.held_for_write_back(stripe)) {
            if !self.pause().await {
                return false;
            }
        }
        self.fencing.stripes.clear();
        true
    }

    /// Sleeps `RETRY` unless the client is killed or strata shuts down; `false` then.
    async fn pause(&mut self) -> bool {
        let kill = self.registration.handle.kill.clone();
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = kill.cancelled() => {}
            () = self.ctx.shutdown.cancelled() => {}
        }
        if self.registration.handle.kill.is_cancelled() || self.ctx.shutdown.is_cancelled() {
            self.closing = true;
            return false;
        }
        true
    }

    /// Waits for the client's replies to be written, keeping its place in the room for
    /// at most `TURN_HOLD` (the drain itself goes on: cancelling it could lose a reply).
    async fn drain_for_a_while(&mut self) -> std::io::Result<()> {
        let mut ticket = self.fencing.waiting.take();
        let drained = {
            let drain = self.drain_keeping_turn();
            tokio::pin!(drain);
            let hold = tokio::time::sleep(TURN_HOLD);
            tokio::pin!(hold);
            loop {
                tokio::select! {
                    drained = &mut drain => break drained,
                    () = &mut hold, if ticket.is_some() => ticket = None,
                }
            }
        };
        self.fencing.waiting = ticket;
        drained
    }

    /// The stripes of the current request and of every complete request read after it:
    /// what a later reader must not overtake while this client waits.
    fn stripes_ahead(&self, len: usize) -> Vec<u16> {
        let mut wanted: Vec<u16> = self.fencing.stripes.to_vec();
        let server = self.ctx.server.load();
        let mut parser = RequestParser::new(self.parser.limits());
        let (mut ranges, mut stripes) = (Vec::new(), Stripes::new());
        let mut at = len.min(self.rbuf.len());
        // Bounded by the read buffer, which the client buffer limit bounds.
        while let Ok(Some(frame)) = parser.next(&self.rbuf[at..], &mut ranges) {
            let (consumed, source) = match &frame {
                Frame::Empty { len } => {
                    at += len;
                    continue;
                }
                Frame::Multibulk { len } => (*len, &self.rbuf[at..at + len]),
                Frame::Inline { consumed, encoded } => (*consumed, &encoded[..]),
            };
            let argv: Vec<&[u8]> = ranges.iter().map(|r| &source[r.clone()]).collect();
            stripes.clear();
            stripes_of(server.commands.lookup(&argv).map(|i| &**i), &argv, &mut stripes);
            wanted.extend_from_slice(&stripes);
            at += consumed;
        }
        wanted
    }
}
