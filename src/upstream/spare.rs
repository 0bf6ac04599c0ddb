//! Ready dedicated connections, so a client that becomes stateful (a blocking command,
//! MULTI, SUBSCRIBE) gets its own upstream connection at once instead of after a connect
//! and handshake. Without them, two clients issuing blocking commands a moment apart
//! could reach Redis in the opposite order, and Redis serves blocked clients in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Dedicated;
use crate::breaker::Breaker;
use crate::config::UpstreamConfig;
use crate::resp::reply::Protocol;

/// Spare connections, refilled in the background.
pub struct Spares {
    /// Idle connections; at most `want` per protocol.
    ready: Mutex<Vec<(Protocol, Dedicated)>>,
    want: usize,
    taken: Notify,
}

/// How often a full pool re-checks that its connections are alive.
const RECHECK: Duration = Duration::from_secs(1);

impl Spares {
    /// Keeps `want` spare connections per protocol (0: none).
    pub fn start(config: &UpstreamConfig, want: usize, breaker: Arc<Breaker>) -> Arc<Spares> {
        let spares = Arc::new(Spares { ready: Mutex::new(Vec::new()), want, taken: Notify::new() });
        if want > 0 {
            tokio::spawn(refill(spares.clone(), config.clone(), breaker));
        }
        spares
    }

    /// A live spare connection speaking `protocol`, if one is ready.
    pub fn take(&self, protocol: Protocol) -> Option<Dedicated> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.retain(|(_, d)| !d.tx.is_closed());
        let index = ready.iter().position(|(p, _)| *p == protocol)?;
        let (_, dedicated) = ready.swap_remove(index);
        drop(ready);
        self.taken.notify_one();
        Some(dedicated)
    }

    fn missing(&self, protocol: Protocol) -> usize {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.retain(|(_, d)| !d.tx.is_closed());
        self.want.saturating_sub(ready.iter().filter(|(p, _)| *p == protocol).count())
    }

    fn put(&self, protocol: Protocol, dedicated: Dedicated) {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).push((protocol, dedicated));
    }
}

async fn refill(spares: Arc<Spares>, config: UpstreamConfig, breaker: Arc<Breaker>) {
    loop {
        if breaker.is_closed() {
            'fill: for protocol in [Protocol::Resp2, Protocol::Resp3] {
                for _ in 0..spares.missing(protocol) {
                    match Dedicated::open(&config, protocol).await {
                        Ok(dedicated) => spares.put(protocol, dedicated),
                        // The shared connections' supervisors report outages; here we just retry later.
                        Err(_) => break 'fill,
                    }
                }
            }
        }
        tokio::select! {
            () = spares.taken.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}
