//! Connections to the real Redis: shared multiplexed ones, dedicated (pinned) ones, and
//! the start-up probe that reads the server's version and command table.
//!
//! Client traffic travels as raw bytes over these connections; strata's own commands
//! (later: write-backs, script loading) do not share them.

mod conn;
mod connect;
pub mod fence;
mod job;
mod outbox;
pub mod own;
mod pool;
mod probe;
mod spare;

use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use conn::Exit;
pub use connect::roundtrip;
pub use connect::{Connected, connect, push_command};
pub use job::{Detached, FrameEnds, Job, Msg, Replies};
pub use pool::{SharedPool, SlotId};
pub use probe::{ServerInfo, probe_loop};
pub use spare::Spares;

use crate::config::UpstreamConfig;
use crate::resp::reply::Protocol;

/// Failures talking to the upstream Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Redis refused the handshake (wrong password, bad database).
    #[error("handshake refused: {0}")]
    Handshake(String),
}

/// A connection owned by one client (MULTI, WATCH, blocking commands, SELECT, AUTH).
pub struct Dedicated {
    /// Sends requests to the connection task.
    pub tx: mpsc::Sender<Msg>,
    /// Redis' client id for the connection (for CLIENT UNBLOCK / KILL by strata id).
    pub upstream_id: Option<i64>,
    /// The connection task; finishes when the connection ends.
    pub task: JoinHandle<Exit>,
}

/// Requests one pinned connection may have queued; the client's pipeline depth bounds it anyway.
const DEDICATED_QUEUE: usize = 1024;

impl Dedicated {
    /// Opens a dedicated connection in `protocol`. Pinned connections have no command
    /// timeout: they carry blocking commands that legitimately wait.
    pub async fn open(config: &UpstreamConfig, protocol: Protocol) -> Result<Dedicated, UpstreamError> {
        let conn = connect(config, protocol, true).await?;
        Ok(Self::spawn(conn.stream, conn.leftover, None, conn.client_id))
    }

    fn spawn(
        stream: TcpStream,
        leftover: BytesMut,
        timeout: Option<Duration>,
        upstream_id: Option<i64>,
    ) -> Dedicated {
        let (tx, rx) = mpsc::channel(DEDICATED_QUEUE);
        let task = tokio::spawn(conn::drive(stream, leftover, rx, timeout, false));
        Dedicated { tx, upstream_id, task }
    }

    /// Takes the socket back; call only when no request is in flight.
    pub async fn detach(self) -> Option<Detached> {
        let (to, from) = oneshot::channel();
        self.tx.send(Msg::Detach(to)).await.ok()?;
        from.await.ok()
    }
}
