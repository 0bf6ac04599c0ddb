//! Reads the upstream's version and `COMMAND` table, retrying in the background until
//! Redis answers. Until then strata uses the built-in Redis 7.0 table.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::time::sleep;

use super::connect::roundtrip;
use super::connect::{connect, push_command};
use crate::command::{CommandTable, TableSource};
use crate::config::UpstreamConfig;
use crate::resp::reply::Protocol;

/// What strata knows about the Redis behind it.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `redis_version` from `INFO server`, or `unknown` before the first probe.
    pub version: String,
    /// The command table in use.
    pub commands: Arc<CommandTable>,
}

impl ServerInfo {
    /// The state before any probe succeeded.
    pub fn builtin() -> ServerInfo {
        ServerInfo { version: "unknown".into(), commands: Arc::new(CommandTable::builtin()) }
    }
}

/// Probes until one probe succeeds, then stores the result.
pub async fn probe_loop(config: UpstreamConfig, target: Arc<ArcSwap<ServerInfo>>) {
    let mut backoff = config.reconnect_min;
    loop {
        match probe(&config).await {
            Ok(info) => {
                tracing::info!(version = %info.version, commands = info.commands.len(), "read upstream command table");
                target.store(Arc::new(info));
                return;
            }
            Err(e) => tracing::debug!(error = %e, "upstream probe failed; using built-in command table"),
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

async fn probe(config: &UpstreamConfig) -> Result<ServerInfo, String> {
    let mut conn = connect(config, Protocol::Resp2, false).await.map_err(|e| e.to_string())?;
    let mut payload = BytesMut::new();
    push_command(&mut payload, &["INFO", "server"]);
    push_command(&mut payload, &["COMMAND"]);
    let replies =
        roundtrip(&mut conn.stream, &mut conn.leftover, &payload, 2).await.map_err(|e| e.to_string())?;
    let info = String::from_utf8_lossy(&replies[0]);
    let version =
        info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown").trim().to_string();
    let commands = CommandTable::from_reply(&replies[1], TableSource::Upstream).map_err(|e| e.to_string())?;
    Ok(ServerInfo { version, commands: Arc::new(commands) })
}
