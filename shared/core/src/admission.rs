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
}
