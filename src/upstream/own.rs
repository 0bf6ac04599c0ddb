//! strata's own commands to Redis, through fred on connections client traffic never
//! uses: write-backs of values loaded from PostgreSQL, invalidation deletes, and loading
//! `lua/strata.lua` (at start and after every reconnect). Commands fail fast while
//! disconnected and are never retried, so nothing waits on a dead socket.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::{Options, ReconnectPolicy};
use fred::types::{Expiration, SetOptions};

use crate::config::UpstreamConfig;

/// The Redis Functions library strata relies on.
pub const LIBRARY: &str = include_str!("../../lua/strata.lua");

/// A fred client for strata's own commands.
pub struct OwnClient {
    client: Client,
    timeout: Duration,
}

/// Why one of strata's own commands failed.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct OwnError(String);

impl OwnClient {
    /// Builds the client and starts connecting in the background (Redis may be down).
    pub fn start(config: &UpstreamConfig) -> Result<OwnClient, OwnError> {
        let url = config.url.to_string();
        let fred_config = fred::types::config::Config::from_url(&url).map_err(|e| OwnError(e.to_string()))?;
        let min_ms = config.reconnect_min.as_millis() as u32;
        let max_ms = config.reconnect_max.as_millis() as u32;
        let client = Builder::from_config(fred_config)
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                // A write-back that may have reached Redis is never sent again.
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, min_ms, max_ms, 2))
            .build()
            .map_err(|e| OwnError(e.to_string()))?;
        let loader = client.clone();
        client.on_reconnect(move |_| {
            let loader = loader.clone();
            async move {
                if let Err(e) = loader.function_load::<String, _>(true, LIBRARY).await {
                    tracing::warn!(error = %e, "cannot load lua/strata.lua into Redis; hash write-backs will fail");
                }
                Ok(())
            }
        });
        client.connect();
        let timeout = config.command_timeout.unwrap_or(Duration::from_secs(5));
        Ok(OwnClient { client, timeout })
    }

    fn options(&self) -> Options {
        Options { fail_fast: true, timeout: Some(self.timeout), max_attempts: Some(1), ..Options::default() }
    }

    /// `SET key value PX ttl NX`: true when written (false: a newer value was there).
    pub async fn set_absent(&self, key: Bytes, value: Bytes, ttl_ms: u64) -> Result<bool, OwnError> {
        let reply: Option<String> = self
            .client
            .with_options(&self.options())
            .set(key, value, Some(Expiration::PX(ttl_ms as i64)), Some(SetOptions::NX), false)
            .await
            .map_err(|e| OwnError(e.to_string()))?;
        Ok(reply.is_some())
    }

    /// Writes a hash with its TTL only if the key is absent (`strata_hset_absent`).
    pub async fn hash_absent(
        &self,
        key: Bytes,
        fields: &[(Bytes, Bytes)],
        ttl_ms: u64,
    ) -> Result<bool, OwnError> {
        let mut args: Vec<Value> = vec![Value::from(ttl_ms as i64)];
        for (f, v) in fields {
            args.push(Value::Bytes(f.clone()));
            args.push(Value::Bytes(v.clone()));
        }
        let written: i64 = self
            .client
            .with_options(&self.options())
            .fcall("strata_hset_absent", vec![Key::from(key)], args)
            .await
            .map_err(|e| OwnError(e.to_string()))?;
        Ok(written == 1)
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: Bytes) -> Result<bool, OwnError> {
        let n: i64 = self
            .client
            .with_options(&self.options())
            .exists(Key::from(key))
            .await
            .map_err(|e| OwnError(e.to_string()))?;
        Ok(n > 0)
    }

    /// `DEL key`, for invalidations.
    pub async fn del(&self, key: Bytes) -> Result<(), OwnError> {
        let _: i64 = self
            .client
            .with_options(&self.options())
            .del(Key::from(key))
            .await
            .map_err(|e| OwnError(e.to_string()))?;
        Ok(())
    }
}
