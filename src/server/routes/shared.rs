//! The shared route: the client's requests go on one of strata's multiplexed connections
//! (its slot in the `SharedPool`), batched with other clients' jobs there.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Forward;
use crate::error::Error;
use crate::resp::reply::Protocol;
use crate::upstream::{Job, Msg, SharedPool, SlotId};

/// The client's place in the shared pool.
pub(in crate::server) struct SharedRoute {
    pool: Arc<SharedPool>,
    /// The connection the client uses (moved to a key's owner by the fences).
    pub(in crate::server) slot: SlotId,
    /// Its sender, once looked up.
    tx: Option<mpsc::Sender<Msg>>,
}

impl SharedRoute {
    /// A client speaking `protocol`, given a connection of the pool.
    pub(in crate::server) fn new(pool: Arc<SharedPool>, protocol: Protocol) -> SharedRoute {
        let slot = pool.assign(protocol);
        SharedRoute { pool, slot, tx: None }
    }

    /// Moves the client to `slot` (another connection of the same pool).
    pub(in crate::server) fn move_to(&mut self, slot: SlotId) {
        self.slot = slot;
        self.tx = None;
    }

    /// Moves the client to a connection of `protocol`.
    pub(in crate::server) fn reassign(&mut self, protocol: Protocol) {
        let slot = self.pool.assign(protocol);
        self.move_to(slot);
    }
}

impl Forward for SharedRoute {
    async fn send(&mut self, job: Job, _protocol: Protocol) -> Result<(), Error> {
        let mut msg = Msg::Job(job);
        // The usual case: the client's connection has room, and nothing waits.
        if let Some(tx) = &self.tx {
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back) | mpsc::error::TrySendError::Closed(back)) => {
                    msg = back
                }
            }
        }
        for _ in 0..2 {
            let tx = match self.tx.clone().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx,
                None => match self.pool.sender(self.slot) {
                    Some(tx) => tx,
                    None => break,
                },
            };
            match tx.send(msg).await {
                Ok(()) => {
                    self.tx = Some(tx);
                    return Ok(());
                }
                // The connection ended before taking the job, so it never reached Redis
                // and one more attempt on the replacement is safe.
                Err(mpsc::error::SendError(back)) => {
                    self.tx = None;
                    msg = back;
                }
            }
        }
        // Never sent, so safe to retry: the same answer as an open breaker.
        Err(Error::redis_unavailable(format!("not connected to {}", self.pool.url())))
    }

    fn holds_client_state(&self) -> bool {
        false
    }
}
