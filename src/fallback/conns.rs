//! The connections read-through queries run on. sqlx's pool pings every connection it
//! takes back (a Sync round trip to PostgreSQL after each query: a seventh of strata's CPU
//! in a run of misses, and as much work again for the backend), so queries use
//! connections kept here instead, at most `postgres.pool_size` of them: an idle one is
//! reused (pinged first when it has been idle for a while), a missing one opened. A
//! connection goes back only after its query finished; one cut off mid-way (the statement
//! timeout, a lost client) or broken is closed, since its state is unknown.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::FallbackError;

/// A connection idle this long is pinged before it is used: PostgreSQL may have
/// restarted meanwhile.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Query connections, idle and in use.
pub struct Conns {
    options: PgConnectOptions,
    /// Idle connections, most recently used last. Never more than `permits` allows.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One permit per connection in use or to be opened: `postgres.pool_size`.
    permits: Semaphore,
    connect_timeout: Duration,
}

/// A connection lent for one query; back to the idle ones with `finished`.
pub struct Lease<'a> {
    conn: PgConnection,
    conns: &'a Conns,
    _permit: SemaphorePermit<'a>,
}

impl Conns {
    /// Up to `size` connections, each opened within `connect_timeout` when first needed.
    pub fn new(options: PgConnectOptions, size: u32, connect_timeout: Duration) -> Conns {
        Conns {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size as usize),
            connect_timeout,
        }
    }

    /// A connection for one query: an idle one, or a new one, waiting at most the connect
    /// timeout for a free place.
    pub async fn lease(&self) -> Result<Lease<'_>, FallbackError> {
        let unavailable = |what: &str| FallbackError::Unavailable(format!("postgres: {what}"));
        let permit = tokio::time::timeout(self.connect_timeout, self.permits.acquire())
            .await
            .map_err(|_| unavailable("every connection busy"))?
            .map_err(|_| unavailable("closed"))?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, since)) = idle else { break };
            if since.elapsed() < IDLE_CHECK || conn.ping().await.is_ok() {
                return Ok(Lease { conn, conns: self, _permit: permit });
            }
        }
        let conn = tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(|e| unavailable(&e.to_string()))?;
        Ok(Lease { conn, conns: self, _permit: permit })
    }
}

impl Lease<'_> {
    /// The connection.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The query ended with `result`: a connection that answered (rows or an SQL error)
    /// goes back to the idle ones; one that failed on the wire is closed.
    pub fn finished<T>(self, result: &Result<T, sqlx::Error>) {
        let usable = match result {
            Ok(_) => true,
            Err(e) => !matches!(e, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)),
        };
        // Back before the permit goes, so whoever takes the permit finds it.
        let Lease { conn, conns, _permit } = self;
        if usable {
            conns.idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
        }
    }
}
