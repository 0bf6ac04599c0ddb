//! The ways a client's forwarded requests reach Redis, one implementation of `Forward`
//! each: the client's shared, multiplexed connection (`shared`) and its own connection
//! (`own`). `Routes::send` is the one place a `Route` picks its implementation.
//!
//! A new route is one more implementation and one more line there: Redis Cluster's
//! "to the node of the key's hash slot" keeps a `SharedPool` per node and picks one by
//! slot in its `send`; a near cache answers a read's `Job` from memory (its `reply` filled
//! at once) and forwards the rest. What the route carries comes back the same way for
//! all of them: on the job's `reply`, settled by `server::pending`. Requests strata
//! answers itself never reach a route (`Action::Local`), and pass-through takes the own
//! connection's socket for itself (`handler::passthrough`).

mod own;
mod shared;

use crate::error::Error;
use crate::resp::reply::Protocol;
use crate::upstream::Job;

pub(super) use own::OwnRoute;
pub(super) use shared::SharedRoute;

use super::action::Route;

/// One way to Redis for a client's forwarded requests.
pub(super) trait Forward {
    /// Sends `job` for a client speaking `protocol`; its replies come back on `job.reply`.
    /// `Err` only when the job never reached a connection: nothing of it ran.
    async fn send(&mut self, job: Job, protocol: Protocol) -> Result<(), Error>;

    /// The connection keeps state of the client's (MULTI, WATCH, SELECT…): losing it
    /// loses that state, so the client's connection must close with it.
    fn holds_client_state(&self) -> bool;
}

/// The routes of one client.
pub(super) struct Routes {
    pub(super) shared: SharedRoute,
    pub(super) own: OwnRoute,
}

impl Routes {
    /// Sends `job` on `route`.
    pub(super) async fn send(&mut self, route: Route, job: Job, protocol: Protocol) -> Result<(), Error> {
        match route {
            Route::Shared => self.shared.send(job, protocol).await,
            Route::Pinned => self.own.send(job, protocol).await,
        }
    }

    /// Whether losing `route`'s connection loses the client's state.
    pub(super) fn holds_client_state(&self, route: Route) -> bool {
        match route {
            Route::Shared => self.shared.holds_client_state(),
            Route::Pinned => self.own.holds_client_state(),
        }
    }
}
