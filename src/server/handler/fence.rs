//! Same-key order across shared connections, on the client's side: a shared-route
//! request takes its keys' stripes for the client's connection (`upstream::fence`). When
//! another connection owns one, the client's earlier replies are waited for and the
//! client moves to that connection, or, across protocols, waits until the stripe empties.

use std::time::Duration;

use super::Handler;
use crate::server::route::Route;
use crate::upstream::fence::ConnNumber;

/// Pause between tries while a stripe belongs to a connection the client cannot move to.
const RETRY: Duration = Duration::from_millis(1);

impl Handler {
    /// Takes the current request's stripes for the client's shared connection, all or
    /// none; on failure names the connection that owns one.
    pub(super) fn take_stripes(&mut self) -> Result<(), ConnNumber> {
        if self.stripes.is_empty() {
            return Ok(());
        }
        let pool = &self.ctx.pool;
        let mine = pool.number(self.slot);
        let start = self.held.len();
        for &stripe in &self.stripes {
            if let Err(owner) = pool.fences.try_take(stripe, mine) {
                self.held.release_from(start);
                return Err(owner);
            }
            self.held.push(&pool.fences, stripe);
        }
        Ok(())
    }

    /// Takes the current request's stripes, waiting or moving the client as needed. The
    /// request is sent next, after every earlier one (the run was flushed). `false`: the
    /// client is gone or killed meanwhile, and the request must not be sent.
    pub(super) async fn fence(&mut self) -> bool {
        if self.stripes.is_empty() {
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
        while let Err(owner) = self.take_stripes() {
            self.first_batch_sent();
            // Moving to the owner is safe once nothing of this client is in flight.
            if let Err(e) = self.drain().await {
                tracing::debug!(error = %e, "client gone while waiting for a key's stripe");
                self.closing = true;
                return false;
            }
            let slot = self.ctx.pool.slot_of(owner);
            if slot.protocol == self.slot.protocol && slot != self.slot {
                self.slot = slot;
                self.shared = None;
                if !std::mem::replace(&mut moved, true) {
                    continue;
                }
            }
            // Keys owned by two connections, or by the other protocol's: wait for them,
            // unless the client is killed or strata shuts down meanwhile.
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
        }
        true
    }
}
