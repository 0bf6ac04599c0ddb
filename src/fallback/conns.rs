//! The connections read-through queries run on. sqlx's pool pings every connection it
//! takes back (a Sync round trip to PostgreSQL after each query: a seventh of strata's CPU
//! in a run of misses, and as much work again for the backend), so queries use
//! connections kept here instead, at most `postgres.pool_size` of them: an idle one is
//! reused (pinged first when it has been idle for a while), a missing one opened. A
//! connection whose query was cut off mid-way (strata's statement timeout, a lost
//! client) is pinged in the background, which waits until PostgreSQL is done with it,
//! and only then reused; one broken on the wire, or told by the server to go, is closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::FallbackError;

/// A connection idle this long is pinged before it is used: PostgreSQL may have
/// restarted meanwhile.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Idle connections, most recently used last. Never more than the permits allow.
type Idle = Arc<Mutex<Vec<(PgConnection, Instant)>>>;

/// Query connections, idle and in use.
pub struct Conns {
    options: PgConnectOptions,
    idle: Idle,
    /// One permit per connection in use or to be opened: `postgres.pool_size`.
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    /// Longest a cut-off connection may take to be ready again before it is closed.
    recover_within: Duration,
}

/// A connection lent for one query; back to the idle ones with `finished`, or, dropped
/// unfinished, recovered in the background.
pub struct Lease {
    conn: Option<PgConnection>,
    idle: Idle,
    permit: Option<OwnedSemaphorePermit>,
    recover_within: Duration,
}

impl Conns {
    /// Up to `size` connections, each opened within `connect_timeout` when first needed;
    /// a cut-off one gets `recover_within` to be ready again.
    pub fn new(
        options: PgConnectOptions,
        size: u32,
        connect_timeout: Duration,
        recover_within: Duration,
    ) -> Conns {
        Conns {
            options,
            idle: Idle::default(),
            permits: Arc::new(Semaphore::new(size as usize)),
            connect_timeout,
            recover_within,
        }
    }

    /// A connection for one query: an idle one, or a new one, waiting at most the connect
    /// timeout for a free place.
    pub async fn lease(&self) -> Result<Lease, FallbackError> {
        let unavailable = |what: &str| FallbackError::Unavailable(format!("postgres: {what}"));
        let permit = tokio::time::timeout(self.connect_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| unavailable("every connection busy"))?
            .map_err(|_| unavailable("closed"))?;
        let lease = |conn| Lease {
            conn: Some(conn),
            idle: self.idle.clone(),
            permit: Some(permit),
            recover_within: self.recover_within,
        };
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, since)) = idle else { break };
            if since.elapsed() < IDLE_CHECK || conn.ping().await.is_ok() {
                return Ok(lease(conn));
            }
        }
        let conn = tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(|e| unavailable(&e.to_string()))?;
        Ok(lease(conn))
    }
}

impl Lease {
    /// The connection.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lease holds its connection until it ends"))
    }

    /// The query ended with `result`: a connection that answered (rows or an SQL error)
    /// goes back to the idle ones; one that failed on the wire, or that the server is
    /// closing (shutdown, connection errors), is closed.
    pub fn finished<T>(mut self, result: &Result<T, sqlx::Error>) {
        let conn = self.conn.take();
        if let Some(conn) = conn.filter(|_| result.as_ref().err().is_none_or(still_usable)) {
            // Back before the permit goes, so whoever takes the permit finds it.
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        // Cut off mid-query: its place stays taken until PostgreSQL has finished with it.
        let (idle, permit, within) = (self.idle.clone(), self.permit.take(), self.recover_within);
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(within, conn.ping()).await {
                idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
            }
            drop(permit);
        });
    }
}

/// Whether a connection that got `error` can serve the next query.
fn still_usable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => false,
        // Class 57P (operator intervention: shutdown, crash) and 08 (connection
        // exception) end the session; the server closes it after the error.
        sqlx::Error::Database(db) => {
            db.code().is_none_or(|code| !code.starts_with("57P") && !code.starts_with("08"))
        }
        _ => true,
    }
}
