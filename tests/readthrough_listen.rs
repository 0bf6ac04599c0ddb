//! A LISTEN connection that drops may have missed NOTIFYs: once it is back, strata treats
//! every rule-backed key as possibly stale, says so in its log and in `INFO strata`. And
//! what strata logs at `info` and above never holds a key.

mod support;

#[path = "support/pg.rs"]
mod pg;

#[path = "support/pg_rig.rs"]
mod pg_rig;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pg::PgServer;
use pg_rig::{PRODUCT_RULE, Rig, bulk, counter, eventually, show, within};
// `pg.rs` finds its free port through `super::free_port`.
use support::free_port;

/// Everything logged at `info` and above in this test binary.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buffer
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn listen_sessions(pg: &PgServer) -> String {
    pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_listen_reconnects_no_row_answers_are_forgotten() {
    let _ = logs();
    within(30, async {
        let rule = format!("{PRODUCT_RULE}negative_ttl = \"1h\"\n");
        let rig = Rig::start("listen_channel = \"strata_invalidate\"\n", &rule).await;
        let addr = rig.strata.addr;
        let mut c = rig.client().await;
        eventually!(Duration::from_secs(5), "strata LISTENs", listen_sessions(&rig.pg) != "0");
        // "No row" for product 9, remembered for an hour.
        for _ in 0..2 {
            assert_eq!(show(&c.command(&["GET", "product:details:9"]).await), "$-1\r\n");
        }
        assert_eq!(counter(addr, "strata_readthrough_negative_hits").await, 1);
        assert_eq!(counter(addr, "strata_readthrough_listen_reconnects").await, 0);

        // The LISTEN session is cut and the row appears without a NOTIFY reaching strata.
        rig.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'");
        rig.pg.psql("INSERT INTO products VALUES (9, 'Nine', 900)");
        eventually!(
            Duration::from_secs(10),
            "LISTEN is re-established and counted",
            counter(addr, "strata_readthrough_listen_reconnects").await == 1
        );
        assert_eq!(show(&c.command(&["GET", "product:details:9"]).await), show(&bulk(&rig.product_json(9))));
        assert!(logged().contains("listening for cache invalidations again"), "{}", logged());

        // A line naming no rule is reported without its content (it holds a key).
        rig.pg.psql("SELECT pg_notify('strata_invalidate', '@no_such_rule secret-capture-77')");
        eventually!(
            Duration::from_secs(2),
            "the unknown rule is reported",
            logged().contains("NOTIFY names an unknown rule")
        );
        assert!(!logged().contains("secret-capture-77"), "a key in the log:\n{}", logged());
    })
    .await;
}
