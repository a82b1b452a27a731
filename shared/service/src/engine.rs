//! The trace engine: reads the requested domains for a list of ids from the event source, one id
//! batch at a time (`TRACE_DB_ID_BATCH_SIZE` ids), every domain of a batch before the next batch, and
//! hands each fetch to a [`RecordSink`]. The MSD aggregation is computed on the way, so no domain's
//! rows are ever held beyond one fetch.

use std::ops::Range;

use async_trait::async_trait;
use trace_core::aggregation::{MsdAggregation, MsdAggregator};
use trace_core::ids::IdList;
use trace_core::ports::{EventSource, JobStoreError, QueueError, SourceError, StoreError};
use trace_core::record::RowBatch;
use trace_core::{ContainerId, Domain, Profile};

/// Why a run stopped early. The variants say what happens next: see `worker::Disposition`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The event source failed (transient).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The object store failed (transient).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job store failed (transient).
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
    /// The queue failed (transient).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A caller cancelled the job.
    #[error("the job was cancelled")]
    Cancelled,
    /// Another worker took the job over (this one was presumed dead).
    #[error("another worker took the job over")]
    Superseded,
    /// The job ran past `TRACE_JOB_TIMEOUT_SECONDS`.
    #[error("the job ran longer than {0} s")]
    Timeout(u64),
    /// The process is shutting down: release the job.
    #[error("the worker is shutting down")]
    Shutdown,
    /// An inline answer outgrew its byte budget.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The job's input is missing or unreadable (permanent).
    #[error("bad job input: {0}")]
    BadInput(String),
}

/// Receives what the engine reads.
#[async_trait]
pub trait RecordSink: Send {
    /// One fetch of rows of a requested domain, in result order within the domain.
    async fn rows(&mut self, batch: &RowBatch) -> Result<(), RunError>;
    /// Every row of the first `ids_done` ids has been handed over; `next` is the domain read next.
    async fn ids_done(&mut self, ids_done: u64, next: Option<Domain>) -> Result<(), RunError>;
}

/// Ids the engine reads in batches: a request's `Vec` or a job's compact [`IdList`].
pub trait Ids: Sync {
    /// Number of ids.
    fn count(&self) -> usize;
    /// Ids `range` as owned ids.
    fn batch(&self, range: Range<usize>) -> Vec<ContainerId>;
}

impl Ids for Vec<ContainerId> {
    fn count(&self) -> usize {
        self.len()
    }
    fn batch(&self, range: Range<usize>) -> Vec<ContainerId> {
        self[range].to_vec()
    }
}

impl Ids for IdList {
    fn count(&self) -> usize {
        self.len()
    }
    fn batch(&self, range: Range<usize>) -> Vec<ContainerId> {
        IdList::batch(self, range)
    }
}

/// Reads `domains` for `ids` into `sink`; returns the MSD aggregation for the MSD profile.
///
/// For MSD, `rejects` and `history` are read even when not requested (for the aggregation only).
pub async fn run(
    source: &dyn EventSource,
    ids: &dyn Ids,
    profile: Profile,
    domains: &[Domain],
    id_batch_size: usize,
    sink: &mut dyn RecordSink,
) -> Result<Option<MsdAggregation>, RunError> {
    let mut aggregator = profile.is_msd().then(MsdAggregator::new);
    let mut order: Vec<Domain> = domains.to_vec();
    if aggregator.is_some() {
        for needed in [Domain::Rejects, Domain::History] {
            if !order.contains(&needed) {
                order.push(needed);
            }
        }
    }
    let total = ids.count();
    let step = id_batch_size.max(1);
    let mut done = 0u64;
    for start in (0..total).step_by(step) {
        let id_batch = ids.batch(start..(start + step).min(total));
        let id_batch = id_batch.as_slice();
        for &domain in &order {
            let wanted = domains.contains(&domain);
            let needed = aggregator.is_some() && MsdAggregator::needs(domain);
            let mut cursor = source.open(domain, id_batch).await?;
            while let Some(batch) = cursor.next_batch().await? {
                if let Some(agg) = aggregator.as_mut().filter(|_| needed) {
                    agg.observe(&batch);
                }
                if wanted {
                    sink.rows(&batch).await?;
                }
            }
        }
        if let Some(agg) = aggregator.as_mut() {
            agg.end_batch();
        }
        done += id_batch.len() as u64;
        let next = (done < total as u64).then(|| order[0]);
        sink.ids_done(done, next).await?;
    }
    Ok(aggregator.map(MsdAggregator::finish))
}
