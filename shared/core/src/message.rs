//! The queue message: which job, and which part of it (a shard), a worker runs.
//!
//! SQS messages are small (256 KiB): a message carries references only; the ids are in the object
//! store (`layout::input_key`). A job is split into `shards` messages over disjoint ranges of its
//! input ids (`TRACE_SHARD_MIN_IDS`, `TRACE_MAX_SHARDS`), each run by its own worker under its own lease.

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::ids::JobId;
use crate::profile::Profile;

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMessage {
    /// The job.
    pub job_id: JobId,
    /// This shard's number, from 0.
    pub shard: u32,
    /// How many shards the job has.
    pub shards: u32,
    /// First input id (index into `input.json`'s ids) of this shard.
    pub ids_from: u64,
    /// One past its last input id.
    pub ids_to: u64,
    /// The job's profile.
    pub profile: Profile,
    /// The job's domains, in result order.
    pub domains: Vec<Domain>,
    /// How many runs of this shard came before this message: 0 for the message submit sends, then one
    /// more for each continuation a run sends when its Lambda invocation ends (it resumes from the
    /// shard's checkpoint).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub continuation: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ShardMessage {
    /// The single shard covering a whole job of `cid_count` ids.
    pub fn whole(job_id: JobId, profile: Profile, domains: Vec<Domain>, cid_count: u64) -> Self {
        ShardMessage {
            job_id,
            shard: 0,
            shards: 1,
            ids_from: 0,
            ids_to: cid_count,
            profile,
            domains,
            continuation: 0,
        }
    }

    /// The `shards` messages of a job of `cid_count` ids split into contiguous id ranges of sizes
    /// differing by at most one, in result order. One shard is [`ShardMessage::whole`].
    pub fn split(
        job_id: JobId,
        profile: Profile,
        domains: Vec<Domain>,
        cid_count: u64,
        shards: u32,
    ) -> Vec<Self> {
        let n = u64::from(shards.max(1));
        (0..n)
            .map(|i| ShardMessage {
                shard: i as u32,
                shards: n as u32,
                ids_from: cid_count * i / n,
                ids_to: cid_count * (i + 1) / n,
                ..ShardMessage::whole(job_id, profile, domains.clone(), cid_count)
            })
            .collect()
    }

    /// The job store's record of this message's lease: the job's own for a whole job, the shard's
    /// ([`JobId::shard`]) for a job split into shards.
    pub fn lease_id(&self) -> JobId {
        if self.shards > 1 {
            self.job_id.shard(self.shard)
        } else {
            self.job_id
        }
    }

    /// The message that continues this shard's run in a new invocation.
    pub fn continued(&self) -> Self {
        ShardMessage { continuation: self.continuation.saturating_add(1), ..self.clone() }
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a message body.
    pub fn parse(body: &str) -> Result<Self, String> {
        let m: ShardMessage =
            serde_json::from_str(body).map_err(|e| format!("malformed shard message: {e}"))?;
        if m.shards == 0 || m.shard >= m.shards || m.ids_from > m.ids_to {
            return Err(format!(
                "inconsistent shard message: shard {}/{}, ids {}..{}",
                m.shard, m.shards, m.ids_from, m.ids_to
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let m = ShardMessage::whole(JobId::new(), Profile::QueryTool, vec![Domain::Holds], 10);
        assert_eq!(ShardMessage::parse(&m.to_body()).unwrap(), m);
        assert!(ShardMessage::parse("{").is_err());
        let bad = ShardMessage { shard: 1, ..m.clone() };
        assert!(ShardMessage::parse(&bad.to_body()).is_err());
        let bad = ShardMessage { ids_from: 11, ..m };
        assert!(ShardMessage::parse(&bad.to_body()).is_err());
    }
}
