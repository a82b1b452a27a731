//! Admission control: refuse, run inline, or run as a job — and on which queue.

use crate::config::Limits;
use crate::error::TraceError;
use crate::queue::QueueKind;
use crate::request::TraceRequest;

/// Where an admitted request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// At or below the async threshold: answered in the request.
    Inline,
    /// Above it: a job on this queue.
    Async(QueueKind),
}

/// Decides how a validated request runs.
///
/// - A non-MSD request above `events_cid_limit` is refused with `CID_LIMIT_EXCEEDED`; MSD bypasses the
///   limit (and a warning is logged).
/// - At or below `async_cid_threshold` it runs inline; above it, it becomes a job.
pub fn admit(request: &TraceRequest, limits: &Limits) -> Result<Admission, TraceError> {
    let cid_count = request.cid_count();
    if cid_count > limits.events_cid_limit {
        if !request.profile.is_msd() {
            return Err(TraceError::CidLimitExceeded { cid_count, limit: limits.events_cid_limit });
        }
        tracing::warn!(
            cid_count,
            limit = limits.events_cid_limit,
            "mid_section_defect request above TRACE_EVENTS_CID_LIMIT: admitted (MSD bypasses the limit)"
        );
    }
    if cid_count <= limits.async_cid_threshold {
        Ok(Admission::Inline)
    } else {
        Ok(Admission::Async(route(request, limits)))
    }
}

/// The queue rule: MSD jobs and jobs above `heavy_cid_threshold` ids go to the heavy queue, all others
/// to the light one. Also used for inline requests that turn into jobs because their answer is too big.
pub fn route(request: &TraceRequest, limits: &Limits) -> QueueKind {
    if request.profile.is_msd() || request.cid_count() > limits.heavy_cid_threshold {
        QueueKind::Heavy
    } else {
        QueueKind::Light
    }
}

/// How many shards a job of `cid_count` ids on `queue` is split into: one per `shard_min_ids` ids
/// (a job at or below it runs whole), at most `max_shards` and at most the queue's worker concurrency
/// (more shards than workers would only wait for one another).
pub fn shards(cid_count: usize, queue: QueueKind, limits: &Limits) -> u32 {
    let workers = match queue {
        QueueKind::Heavy => limits.heavy_worker_concurrency,
        QueueKind::Light => limits.light_worker_concurrency,
    };
    let wanted = cid_count.div_ceil(limits.shard_min_ids.max(1)).max(1);
    wanted.min(limits.max_shards).min(workers).clamp(1, u32::MAX as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ContainerId;
    use crate::profile::Profile;

    fn request(n: usize, profile: Profile) -> TraceRequest {
        TraceRequest {
            ids: (0..n).map(|i| ContainerId::parse(format!("C{i}")).unwrap()).collect(),
            profile,
            domains: crate::Domain::ALL.to_vec(),
            params: Default::default(),
        }
    }

    #[test]
    fn thresholds() {
        let l = Limits::default();
        assert_eq!(admit(&request(20_000, Profile::QueryTool), &l).unwrap(), Admission::Inline);
        assert_eq!(
            admit(&request(20_001, Profile::QueryTool), &l).unwrap(),
            Admission::Async(QueueKind::Light)
        );
        assert_eq!(
            admit(&request(45_000, Profile::QueryToolReverse), &l).unwrap(),
            Admission::Async(QueueKind::Heavy)
        );
        assert_eq!(
            admit(&request(50_000, Profile::QueryTool), &l).unwrap(),
            Admission::Async(QueueKind::Heavy)
        );
        let err = admit(&request(50_001, Profile::QueryTool), &l).unwrap_err();
        assert_eq!(err, TraceError::CidLimitExceeded { cid_count: 50_001, limit: 50_000 });
        assert_eq!(
            admit(&request(60_000, Profile::MidSectionDefect), &l).unwrap(),
            Admission::Async(QueueKind::Heavy)
        );
        assert_eq!(admit(&request(10, Profile::MidSectionDefect), &l).unwrap(), Admission::Inline);
        assert_eq!(route(&request(10, Profile::MidSectionDefect), &l), QueueKind::Heavy);
    }

    #[test]
    fn a_job_is_split_by_its_size_within_the_shard_and_worker_bounds() {
        let limits = Limits {
            shard_min_ids: 25_000,
            max_shards: 8,
            heavy_worker_concurrency: 6,
            light_worker_concurrency: 3,
            ..Limits::default()
        };
        assert_eq!(shards(0, QueueKind::Light, &limits), 1);
        assert_eq!(shards(25_000, QueueKind::Light, &limits), 1);
        assert_eq!(shards(25_001, QueueKind::Light, &limits), 2);
        assert_eq!(shards(114_000, QueueKind::Light, &limits), 3, "the light workers bound it");
        assert_eq!(shards(114_000, QueueKind::Heavy, &limits), 5);
        assert_eq!(shards(1_000_000, QueueKind::Heavy, &limits), 6, "the heavy workers bound it");
        assert_eq!(
            shards(1_000_000, QueueKind::Heavy, &Limits { heavy_worker_concurrency: 100, ..limits.clone() }),
            8
        );
        assert_eq!(shards(1_000_000, QueueKind::Heavy, &Limits { max_shards: 1, ..limits }), 1);
    }
}
