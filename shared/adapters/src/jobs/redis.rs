//! Job metadata in Redis.
//!
//! Keys ([`crate::keys`]): `{prefix}:job:{id}:meta`, a hash with fields `status` and `attempt`
//! (plain, compared by the compare-and-set scripts), `meta` (the JSON of the rest), `progress` and
//! `heartbeat_at` (updated on their own), `owner` and `tenant` (written once, by the create: no later
//! change can give a job to someone else); `{prefix}:jobs`, a sorted set of job ids by creation time
//! for the history listing, and `{prefix}:owner:{hash}:jobs`, the same for one owner (named by the
//! hash of its id). Every change that depends on the current state is one Lua script, so it is
//! atomic; every script's keys share the `{prefix}` hash tag, so it runs on a Redis Cluster too.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};
use trace_core::auth::hash_id;
use trace_core::job::{Guard, JobMeta, JobStatus, Progress};
use trace_core::ports::{CasOutcome, JobStore, JobStoreError};
use trace_core::JobId;

use crate::keys::Keys;
use crate::redis_connection::{self, failed, RedisConnection};

/// A Redis-backed job store. Cheap to clone (the connection manager is shared).
#[derive(Clone)]
pub struct RedisJobStore {
    conn: RedisConnection,
    keys: Keys,
    create: Script,
    cas: Script,
    progress: Script,
    extend: Script,
}

impl std::fmt::Debug for RedisJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobStore").field("prefix", &self.keys.prefix()).finish_non_exhaustive()
    }
}

fn backend(op: &'static str, e: redis::RedisError) -> JobStoreError {
    JobStoreError::Backend(failed(op)(e))
}

/// KEYS: meta, history, the owner's history. ARGV: ttl seconds, score, job id, then field/value
/// pairs. Both histories drop the entries older than a TTL; the owner's history, which no one else
/// writes, also expires a TTL after its newest job (an owner who stops leaves nothing behind).
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[2] - ARGV[1] * 1000)
end
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[3], ARGV[1]) end
return 1
"#;

/// KEYS: an owner's history. ARGV: ttl seconds. Makes it live at least that long.
const EXTEND: &str = r#"
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"#;

/// KEYS: meta. ARGV: expected status, expected attempt, then field/value pairs.
/// Returns 0 missing, 1 conflict, 2 applied.
const CAS: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 2
"#;

impl RedisJobStore {
    /// Connects to `url`; every key starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, JobStoreError> {
        Ok(Self::from_connection(redis_connection::connect(url).await?, prefix))
    }

    /// Uses an existing connection manager (shared with the rate limiter and the markers).
    pub fn from_connection(conn: RedisConnection, prefix: &str) -> Self {
        RedisJobStore {
            conn,
            keys: Keys::new(prefix),
            create: Script::new(CREATE),
            cas: Script::new(CAS),
            progress: Script::new(CAS),
            extend: Script::new(EXTEND),
        }
    }

    /// The fields every write sets (not the owner: see [`Self::owner_fields`]).
    fn fields(meta: &JobMeta) -> Vec<(&'static str, String)> {
        vec![
            ("status", meta.status.as_str().to_owned()),
            ("attempt", meta.attempt.to_string()),
            ("meta", to_json(meta)),
            ("progress", to_json(&meta.progress)),
            ("heartbeat_at", meta.heartbeat_at.map(|t| t.to_rfc3339()).unwrap_or_default()),
        ]
    }

    /// The fields only the create sets.
    fn owner_fields(meta: &JobMeta) -> Vec<(&'static str, String)> {
        let mut fields = vec![("owner", meta.owner.clone())];
        fields.extend(meta.tenant.clone().map(|t| ("tenant", t)));
        fields
    }

    fn decode(
        id: &JobId,
        map: std::collections::HashMap<String, String>,
    ) -> Result<Option<JobMeta>, JobStoreError> {
        if map.is_empty() {
            return Ok(None);
        }
        let corrupt = |reason: String| JobStoreError::Corrupt { job: *id, reason };
        let field = |name: &str| map.get(name).ok_or_else(|| corrupt(format!("missing field {name}")));
        let mut meta: JobMeta = serde_json::from_str(field("meta")?).map_err(|e| corrupt(e.to_string()))?;
        meta.status = JobStatus::parse(field("status")?).ok_or_else(|| corrupt("bad status".into()))?;
        meta.attempt = field("attempt")?.parse().map_err(|_| corrupt("bad attempt".into()))?;
        meta.progress = serde_json::from_str(field("progress")?).map_err(|e| corrupt(e.to_string()))?;
        // A job created before owners were kept has none: it belongs to nobody (admins see it).
        meta.owner = map.get("owner").cloned().unwrap_or_default();
        meta.tenant = map.get("tenant").cloned();
        meta.heartbeat_at = match map.get("heartbeat_at").map(String::as_str) {
            None | Some("") => None,
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| corrupt(e.to_string()))?
                    .with_timezone(&Utc),
            ),
        };
        Ok(Some(meta))
    }

    async fn cas_outcome(&self, id: &JobId, code: i64) -> Result<CasOutcome, JobStoreError> {
        Ok(match code {
            2 => CasOutcome::Applied,
            1 => match self.get(id).await? {
                Some(meta) => CasOutcome::Conflict(Box::new(meta)),
                None => CasOutcome::Missing,
            },
            _ => CasOutcome::Missing,
        })
    }
}

/// JSON of a plain core type (maps with string keys, no custom serialisers: it cannot fail).
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn create(&self, meta: &JobMeta, ttl: Duration) -> Result<(), JobStoreError> {
        let mut inv = self.create.key(self.keys.job_meta(meta.job_id));
        inv.key(self.keys.job_history())
            .key(self.keys.owner_history(&hash_id(&meta.owner)))
            .arg(ttl.as_secs().max(1))
            .arg(meta.created_at.timestamp_millis())
            .arg(meta.job_id.to_string());
        for (k, v) in Self::fields(meta).into_iter().chain(Self::owner_fields(meta)) {
            inv.arg(k).arg(v);
        }
        let created: i64 =
            inv.invoke_async(&mut self.conn.clone()).await.map_err(|e| backend("create", e))?;
        if created == 1 {
            Ok(())
        } else {
            Err(JobStoreError::AlreadyExists(meta.job_id))
        }
    }

    async fn get(&self, id: &JobId) -> Result<Option<JobMeta>, JobStoreError> {
        let map: std::collections::HashMap<String, String> =
            self.conn.clone().hgetall(self.keys.job_meta(id)).await.map_err(|e| backend("hgetall", e))?;
        Self::decode(id, map)
    }

    async fn compare_and_set(&self, guard: Guard, next: &JobMeta) -> Result<CasOutcome, JobStoreError> {
        let mut inv = self.cas.key(self.keys.job_meta(next.job_id));
        inv.arg(guard.status.as_str()).arg(guard.attempt);
        for (k, v) in Self::fields(next) {
            inv.arg(k).arg(v);
        }
        let code: i64 =
            inv.invoke_async(&mut self.conn.clone()).await.map_err(|e| backend("compare_and_set", e))?;
        self.cas_outcome(&next.job_id, code).await
    }

    async fn update_progress(
        &self,
        id: &JobId,
        guard: Guard,
        progress: &Progress,
        renewed: Option<DateTime<Utc>>,
    ) -> Result<CasOutcome, JobStoreError> {
        let mut inv = self.progress.key(self.keys.job_meta(id));
        inv.arg(guard.status.as_str()).arg(guard.attempt).arg("progress").arg(to_json(progress));
        if let Some(at) = renewed {
            inv.arg("heartbeat_at").arg(at.to_rfc3339());
        }
        let code: i64 =
            inv.invoke_async(&mut self.conn.clone()).await.map_err(|e| backend("update_progress", e))?;
        self.cas_outcome(id, code).await
    }

    async fn list_recent(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobMeta>, JobStoreError> {
        const PAGE: isize = 200;
        const MAX_SCANNED: isize = 10_000;
        let history = match owner {
            Some(owner) => self.keys.owner_history(&hash_id(owner)),
            None => self.keys.job_history(),
        };
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut start: isize = 0;
        while out.len() < limit && start < MAX_SCANNED {
            let ids: Vec<String> = conn
                .zrevrange(&history, start, start + PAGE - 1)
                .await
                .map_err(|e| backend("zrevrange", e))?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.keys.job_meta(id));
            }
            let maps: Vec<std::collections::HashMap<String, String>> =
                pipe.query_async(&mut conn).await.map_err(|e| backend("hgetall", e))?;
            let mut expired = Vec::new();
            for (id, map) in ids.iter().zip(maps) {
                let Ok(job) = id.parse::<JobId>() else {
                    expired.push(id.clone());
                    continue;
                };
                match Self::decode(&job, map)? {
                    None => expired.push(id.clone()),
                    // A shard's record is its job's business, not a job of the history.
                    Some(meta)
                        if meta.parent.is_none()
                            && owner.is_none_or(|o| meta.owner == o)
                            && status.is_none_or(|s| meta.status == s)
                            && out.len() < limit =>
                    {
                        out.push(meta)
                    }
                    Some(_) => {}
                }
            }
            if !expired.is_empty() {
                let _: i64 = conn.zrem(&history, &expired).await.map_err(|e| backend("zrem", e))?;
                start -= expired.len() as isize;
            }
            start += PAGE;
        }
        Ok(out)
    }

    async fn refresh_ttl(&self, id: &JobId, ttl: Duration) -> Result<bool, JobStoreError> {
        let mut conn = self.conn.clone();
        let seconds = ttl.as_secs().max(1);
        let meta = self.keys.job_meta(id);
        let (owner, refreshed): (Option<String>, bool) = redis::pipe()
            .hget(&meta, "owner")
            .expire(&meta, seconds as i64)
            .query_async(&mut conn)
            .await
            .map_err(|e| backend("expire", e))?;
        // The owner's history must list the job as long as it lives.
        if let (true, Some(owner)) = (refreshed, owner) {
            let _: i64 = self
                .extend
                .key(self.keys.owner_history(&hash_id(&owner)))
                .arg(seconds)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| backend("expire", e))?;
        }
        Ok(refreshed)
    }
}
