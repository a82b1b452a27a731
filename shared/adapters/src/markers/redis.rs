//! Markers in Redis: `{prefix}:backfill:{start}/{end}:{batch}`, claimed with `SET NX EX` (value
//! `pending`), then set to the job id.

use std::time::Duration;

use async_trait::async_trait;
use trace_core::ports::{BackendError, BackfillMarkers, Claim};

use crate::keys::Keys;
use crate::redis_connection::{failed, RedisConnection};

/// Value of a marker claimed by a run that has not created its job yet.
const PENDING: &str = "pending";

/// Markers in Redis. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisMarkers {
    conn: RedisConnection,
    keys: Keys,
}

impl std::fmt::Debug for RedisMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMarkers").field("prefix", &self.keys.prefix()).finish_non_exhaustive()
    }
}

impl RedisMarkers {
    /// Markers over `conn`; their keys start with `prefix`.
    pub fn new(conn: RedisConnection, prefix: &str) -> Self {
        RedisMarkers { conn, keys: Keys::new(prefix) }
    }
}

#[async_trait]
impl BackfillMarkers for RedisMarkers {
    async fn claim(&self, window: &str, batch: usize, ttl: Duration) -> Result<Claim, BackendError> {
        let key = self.keys.backfill_marker(window, batch);
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(PENDING)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut conn)
            .await
            .map_err(failed("claim"))?;
        if set.is_some() {
            return Ok(Claim::Won);
        }
        let value: Option<String> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(failed("get"))?;
        Ok(Claim::Taken { job_id: value.filter(|v| v != PENDING) })
    }

    async fn confirm(
        &self,
        window: &str,
        batch: usize,
        job_id: &str,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys.backfill_marker(window, batch))
            .arg(job_id)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("confirm"))?;
        Ok(())
    }

    async fn release(&self, window: &str, batch: usize) -> Result<(), BackendError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.backfill_marker(window, batch))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("release"))?;
        Ok(())
    }
}
