//! Invalidation from the database: LISTEN on a channel; each NOTIFY payload line names a
//! key (`product:details:42`) or a rule and its captures (`@product_details 42`), which
//! strata deletes in Redis, so a row change reaches the cache at once.
//! The connection is re-established with backoff; notifications sent while it is down
//! are lost, which the write-back TTL bounds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::Fallback;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Listens until shutdown.
pub async fn run(fallback: Arc<Fallback>, channel: String, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Err(e) = listen_once(&fallback, &channel, &shutdown).await {
            tracing::warn!(channel = %channel, error = %e, "LISTEN for invalidations failed; retrying");
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn listen_once(
    fallback: &Fallback,
    channel: &str,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let Some(db) = fallback.database() else { return Ok(()) };
    let mut listener = PgListener::connect_with(db.pool()).await?;
    listener.listen(channel).await?;
    tracing::info!(channel, "listening for cache invalidations");
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            n = listener.recv() => n?,
        };
        for line in notification.payload().lines().map(str::trim).filter(|k| !k.is_empty()) {
            match key_of(fallback, line) {
                Some(key) => fallback.invalidate(key).await,
                None => tracing::warn!(payload = line, "NOTIFY names an unknown rule or the wrong captures"),
            }
        }
    }
}

/// `@rule capture …` renders the rule's key; any other line is the key itself.
fn key_of(fallback: &Fallback, line: &str) -> Option<Bytes> {
    let Some(spec) = line.strip_prefix('@') else { return Some(Bytes::copy_from_slice(line.as_bytes())) };
    let mut words = spec.split_whitespace();
    let rule = words.next()?;
    let captures: Vec<&[u8]> = words.map(str::as_bytes).collect();
    fallback.key_for(rule, &captures)
}
