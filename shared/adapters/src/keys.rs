//! Every Redis key of the system, in one place. All start with `REDIS_KEY_PREFIX`.
//!
//! Redis Cluster (ElastiCache Serverless is always clustered) runs a script or transaction only when
//! all its keys are in one hash slot. The job store's keys therefore share one hash tag, `{prefix}`: a
//! job's creation writes its metadata, the history and its owner's history in one script, and the
//! history page reads many jobs' metadata in one pipeline. Job metadata is a few hundred bytes per job
//! and lives for `TRACE_JOB_TTL_SECONDS`, so one slot holds it easily. The rate-limit counters and the
//! backfill markers are one key per command and carry no tag: they spread over the cluster.
//!
//! | key                                       | holds                                                |
//! |-------------------------------------------|------------------------------------------------------|
//! | `{prefix}:job:{id}:meta`                  | a job's metadata (hash; [`crate::jobs::redis`])       |
//! | `{prefix}:jobs`                           | job ids by creation time (sorted set; the history)   |
//! | `{prefix}:owner:{owner}:jobs`             | one owner's job ids by creation time (its history)   |
//! | `prefix:ratelimit:{limit}:{caller}`       | a caller's request count in its window               |
//! | `prefix:backfill:{start}/{end}:{batch}`   | a backfill batch's marker (`pending` or its job id)  |
//!
//! (`{owner}` and `{caller}` stand for hashes of the principal, never the principal itself.)

use std::fmt::Display;

/// The key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys starting with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A job's metadata.
    pub fn job_meta(&self, job: impl Display) -> String {
        format!("{{{}}}:job:{job}:meta", self.prefix)
    }

    /// The history: job ids by creation time.
    pub fn job_history(&self) -> String {
        format!("{{{}}}:jobs", self.prefix)
    }

    /// One owner's history: its job ids by creation time. `owner` is the hash of its principal.
    pub fn owner_history(&self, owner: &str) -> String {
        format!("{{{}}}:owner:{owner}:jobs", self.prefix)
    }

    /// A caller's request count in one limit (`reads`, `submits`).
    pub fn rate_limit(&self, limit: &str, caller: &str) -> String {
        format!("{}:ratelimit:{limit}:{caller}", self.prefix)
    }

    /// The marker of batch `batch` of the backfill window `window` (`start/end`).
    pub fn backfill_marker(&self, window: &str, batch: usize) -> String {
        format!("{}:backfill:{window}:{batch}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_names() {
        let keys = Keys::new("trace");
        assert_eq!(keys.job_meta("j1"), "{trace}:job:j1:meta");
        assert_eq!(keys.job_history(), "{trace}:jobs");
        assert_eq!(keys.owner_history("ab12"), "{trace}:owner:ab12:jobs");
        assert_eq!(keys.rate_limit("reads", "ab12"), "trace:ratelimit:reads:ab12");
        assert_eq!(
            keys.backfill_marker("2025-01-01T00:00:00Z/2025-01-02T00:00:00Z", 3),
            "trace:backfill:2025-01-01T00:00:00Z/2025-01-02T00:00:00Z:3"
        );
    }
}
