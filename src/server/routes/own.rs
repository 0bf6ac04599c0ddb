//! The client's own connection: for state Redis keeps per connection (MULTI, WATCH,
//! SELECT, blocking commands). Taken from the ready spares, or opened, on first use; its
//! Redis id is published so CLIENT UNBLOCK/KILL and TRACKING REDIRECT can name it.

use std::sync::Arc;

use super::Forward;
use crate::config::UpstreamConfig;
use crate::error::{Error, Kind, Side};
use crate::resp::reply::Protocol;
use crate::server::registry::ClientHandle;
use crate::upstream::{Dedicated, Job, Msg, Spares};

/// The client's own connection, if it has one, and the protocol it speaks.
pub(in crate::server) struct OwnRoute {
    spares: Arc<Spares>,
    config: UpstreamConfig,
    handle: Arc<ClientHandle>,
    conn: Option<(Dedicated, Protocol)>,
}

impl OwnRoute {
    pub(in crate::server) fn new(
        spares: Arc<Spares>,
        config: UpstreamConfig,
        handle: Arc<ClientHandle>,
    ) -> OwnRoute {
        OwnRoute { spares, config, handle, conn: None }
    }

    /// Whether a request in `protocol` can go at once, without taking or opening a
    /// connection first.
    pub(in crate::server) fn ready(&self, protocol: Protocol) -> bool {
        self.conn.as_ref().is_some_and(|(d, p)| *p == protocol && !d.tx.is_closed())
    }

    /// Replaces the connection, keeping the registry's upstream id in step.
    pub(in crate::server) fn set(&mut self, conn: Option<(Dedicated, Protocol)>) {
        let id = conn.as_ref().and_then(|(d, _)| d.upstream_id).unwrap_or(-1);
        self.handle.set_upstream_id(id);
        self.conn = conn;
    }

    /// Takes the connection away (pass-through takes its socket).
    pub(in crate::server) fn take(&mut self) -> Option<Dedicated> {
        self.conn.take().map(|(d, _)| d)
    }

    /// The protocol of the connection, if there is one.
    pub(in crate::server) fn protocol(&self) -> Option<Protocol> {
        self.conn.as_ref().map(|(_, p)| *p)
    }

    /// The connection now speaks `protocol` (HELLO accepted there).
    pub(in crate::server) fn switched_to(&mut self, protocol: Protocol) {
        if let Some((_, p)) = &mut self.conn {
            *p = protocol;
        }
    }
}

impl Forward for OwnRoute {
    async fn send(&mut self, job: Job, protocol: Protocol) -> Result<(), Error> {
        if !self.ready(protocol) {
            let dedicated = match self.spares.take(protocol) {
                Some(spare) => spare,
                None => Dedicated::open(&self.config, protocol)
                    .await
                    .map_err(|e| Error::new(Kind::CannotConnect, Side::Redis, e.to_string()))?,
            };
            self.set(Some((dedicated, protocol)));
        }
        let Some((dedicated, _)) = &self.conn else { unreachable!("set above") };
        dedicated.tx.send(Msg::Job(job)).await.map_err(|_| Error::redis_lost())
    }

    fn holds_client_state(&self) -> bool {
        true
    }
}
