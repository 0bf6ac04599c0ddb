//! Same-key order across connections, on the client's side: a forwarded request takes
//! its keys' stripes (`upstream::fence`), for the client's shared connection or, on its
//! own connection, for the client alone. When another connection owns one, the client
//! takes a ticket in the waiting room (reserving the stripes of everything it has read,
//! so later readers give way), and waits: for its earlier replies, to move to that
//! connection, or, across protocols and from its own connection, until the stripe
//! empties.

use std::time::Duration;

use super::Handler;
use crate::command::Kind;
use crate::resp::request::{Frame, RequestParser};
use crate::server::action::Route;
use crate::upstream::fence::{Access, Conflict, Held, Pinned, Stripes, Ticket, Watch, stripes_of};

/// Longest wait between tries while a stripe belongs to a connection the client cannot
/// move to: a release wakes the client at once (`Fences::watch`); this only bounds a
/// missed wake.
const RETRY: Duration = Duration::from_millis(10);
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
    /// Stripes taken for requests not yet sent; they go with the next job.
    pub(super) held: Held,
    /// The request being routed goes on the client's own connection and may block there
    /// (BLPOP, WAIT): it takes no stripes, nor do requests behind it.
    pub(super) blocking: bool,
    /// What the client's own connection has in flight.
    pub(super) pinned: std::sync::Arc<Pinned>,
    /// The stripes of the commands queued in the client's MULTI, one bit each: EXEC runs
    /// them, so EXEC takes them. Allocated at the first queued key.
    queued: Option<Box<[u64; 64]>>,
}

impl Fencing {
    /// The client's own connection was given up (RESET, a protocol switch): what it had
    /// in flight, a blocked command say, says nothing about the next one, and neither
    /// does a transaction begun on it.
    pub(super) fn own_connection_dropped(&mut self) {
        self.pinned = std::sync::Arc::default();
        self.queued = None;
    }

    /// Keeps the stripes of a command queued in a transaction for its EXEC (`kind`,
    /// routed with the transaction `open` after it); EXEC gets them all.
    pub(super) fn transaction(&mut self, open: bool, kind: Option<Kind>) {
        if open {
            let queued = self.queued.get_or_insert_with(|| Box::new([0; 64]));
            for &stripe in &self.stripes {
                queued[usize::from(stripe / 64)] |= 1 << (stripe % 64);
            }
            return;
        }
        let Some(queued) = self.queued.take() else { return };
        if kind == Some(Kind::Exec) {
            for (word, bits) in queued.iter().enumerate() {
                for stripe in (0..64u16).filter(|b| bits & (1 << b) != 0).map(|b| word as u16 * 64 + b) {
                    if !self.stripes.contains(&stripe) {
                        self.stripes.push(stripe);
                    }
                }
            }
        }
    }
}

impl Handler {
    /// Takes the current request's stripes for the client's connection on `route`, all
    /// or none; on failure says why.
    pub(super) fn take_stripes(&mut self, route: Route) -> Result<(), Conflict> {
        if self.fencing.stripes.is_empty() {
            return Ok(());
        }
        let pool = &self.ctx.pool;
        let mine = pool.number(self.routes.shared.slot);
        let start = self.fencing.held.len();
        let Fencing { stripes, access, waiting, held, pinned, .. } = &mut self.fencing;
        let waiting = waiting.as_ref();
        for &stripe in stripes.iter() {
            let taken = match (waiting, route) {
                (Some(ticket), _) if !ticket.is_first_for(stripe) => Err(Conflict::Reserved),
                (_, Route::Shared) => pool.fences.try_take(stripe, mine, *access, waiting.is_some()),
                (_, Route::Pinned) => pool.fences.try_take_pinned(stripe, pinned, waiting.is_some()),
            };
            if let Err(conflict) = taken {
                held.give_back_from(start);
                return Err(conflict);
            }
            match route {
                Route::Shared => held.push(&pool.fences, stripe, *access),
                Route::Pinned => held.push_pinned(&pool.fences, pinned, stripe),
            }
        }
        Ok(())
    }

    /// Takes the stripes of the current request (the first `len` bytes of the read
    /// buffer) for `route`, waiting or moving the client as needed. The request is sent
    /// next, after every earlier one (the run was flushed). `false`: the client is gone
    /// or killed meanwhile, and the request must not be sent.
    pub(super) async fn fence(&mut self, route: Route, len: usize) -> bool {
        if self.fencing.stripes.is_empty() && !self.fencing.blocking {
            return true;
        }
        // Earlier requests on the client's other connection first: stripes are never held
        // across a wait (a BLPOP there could wait for another client blocked on them).
        if self.last_route != route {
            if self.drain().await.is_err() {
                self.closing = true;
                return false;
            }
            self.last_route = route;
        }
        if route == Route::Pinned && (self.fencing.blocking || self.fencing.pinned.may_block()) {
            // It waits behind a request that may block, or may block itself: unfenced.
            if self.fencing.blocking {
                self.fencing.held.mark_blocking(&self.fencing.pinned);
                // From here the client may wait for its own replies: its place in the
                // room must not hold up the request that would unblock it.
                self.fencing.waiting = None;
            }
            self.fencing.stripes.clear();
            return true;
        }
        let mut moved = false;
        let fences = self.ctx.pool.fences.clone();
        // A key held on a client's own connection (no command timeout there) while Redis
        // stalls would hold this request for as long: after the command timeout, which
        // bounds every other hold, it goes on unfenced and meets the stall itself.
        let give_up = self.ctx.config.upstream.command_timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let watch = fences.watch();
            let conflict = match self.take_stripes(route) {
                Ok(()) => return true,
                Err(_) if give_up.is_some_and(|at| tokio::time::Instant::now() >= at) => {
                    self.fencing.stripes.clear();
                    return true;
                }
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
            // Keys owned by two connections, by the other protocol's, by a client's own
            // connection, held by a write-back, or wanted by a client ahead in the room:
            // wait, unless the client is killed or strata shuts down.
            if !self.pause(watch).await {
                return false;
            }
        }
    }

    /// Waits for a release seen by `watch` (at most `RETRY`) unless the client is killed
    /// or strata shuts down; `false` then.
    async fn pause(&mut self, watch: Watch<'_>) -> bool {
        let kill = self.registration.handle.kill.clone();
        tokio::select! {
            () = watch.released(RETRY) => {}
            () = kill.cancelled() => {}
            () = self.ctx.shutdown.cancelled() => {}
        }
        // Whatever woke it, the tasks that free stripes get a turn before the next try:
        // a wake that came before it ever waited would otherwise make this loop spin.
        tokio::task::yield_now().await;
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
