//! Invalidation from the database: LISTEN on a channel; each NOTIFY payload line names a
//! key (`product:details:42`) or a rule and its captures (`@product_details 42`), which
//! strata deletes in Redis, so a row change reaches the cache at once.
//!
//! The connection is re-established with backoff. Notifications sent while it is down
//! are lost for good, so once LISTEN is back (every time but a first attempt that
//! succeeded) strata assumes every rule-backed key may be stale: `Fallback::assume_stale`
//! forgets "no row" answers and keeps loads in flight from writing back. Values already
//! written back to Redis keep their tier TTL, which bounds how long they can be stale.

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
    let mut attempts = 0u64;
    loop {
        let mut listened = false;
        if let Err(e) = listen_once(&fallback, &channel, &shutdown, attempts, &mut listened).await {
            tracing::warn!(channel = %channel, error = %e, "LISTEN for invalidations failed; retrying");
        }
        attempts += 1;
        if shutdown.is_cancelled() {
            return;
        }
        // A session that got as far as LISTEN was a success: retry soon after a drop.
        backoff = if listened { BACKOFF_MIN } else { (backoff * 2).min(BACKOFF_MAX) };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// One LISTEN session, from connecting until the connection is lost (an error) or shutdown.
async fn listen_once(
    fallback: &Fallback,
    channel: &str,
    shutdown: &CancellationToken,
    attempt: u64,
    listened: &mut bool,
) -> Result<(), sqlx::Error> {
    let Some(db) = fallback.database() else { return Ok(()) };
    let mut listener = PgListener::connect_with(db.pool()).await?;
    // sqlx would reconnect inside `recv` without a word; the session ends here instead,
    // so the reconnect below can say that notifications may have been missed.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    *listened = true;
    if attempt == 0 {
        tracing::info!(channel, "listening for cache invalidations");
    } else {
        // After LISTEN, not before: a change from here on arrives as a notification.
        fallback.assume_stale();
        tracing::warn!(
            channel,
            "listening for cache invalidations again; notifications sent meanwhile were lost, \
             so every \"no row\" answer is forgotten and loads in flight are not written back"
        );
    }
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            n = listener.try_recv() => n?,
        };
        let Some(notification) = notification else {
            return Err(sqlx::Error::Io(std::io::ErrorKind::ConnectionAborted.into()));
        };
        for line in notification.payload().lines().map(str::trim).filter(|k| !k.is_empty()) {
            match key_of(fallback, line) {
                Some(key) => fallback.invalidate(key).await,
                // The line holds a key (or its captures): debug only, never in info logs.
                None => {
                    tracing::warn!(channel, "NOTIFY names an unknown rule or the wrong captures");
                    tracing::debug!(payload = line, "the NOTIFY line not understood");
                }
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
