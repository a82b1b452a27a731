//! Every Redis key of the system, in one place. All start with `REDIS_KEY_PREFIX`:
//!
//! | key                                   | holds                                               |
//! |---------------------------------------|-----------------------------------------------------|
//! | `{prefix}:job:{id}:meta`              | a job's metadata (hash; [`crate::jobs::redis`])      |
//! | `{prefix}:jobs`                       | job ids by creation time (sorted set; the history)  |
//! | `{prefix}:ratelimit:{caller}`         | a caller's request count in its window              |
//! | `{prefix}:backfill:{start}/{end}:{batch}` | a backfill batch's marker (`pending` or its job id) |

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
        format!("{}:job:{job}:meta", self.prefix)
    }

    /// The history: job ids by creation time.
    pub fn job_history(&self) -> String {
        format!("{}:jobs", self.prefix)
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
        assert_eq!(keys.job_meta("j1"), "trace:job:j1:meta");
        assert_eq!(keys.job_history(), "trace:jobs");
        assert_eq!(keys.rate_limit("reads", "10.0.0.1"), "trace:ratelimit:reads:10.0.0.1");
        assert_eq!(
            keys.backfill_marker("2025-01-01T00:00:00Z/2025-01-02T00:00:00Z", 3),
            "trace:backfill:2025-01-01T00:00:00Z/2025-01-02T00:00:00Z:3"
        );
    }
}
