//! The trace engine: reads the requested domains for a list of ids from the event source, one id
//! batch at a time (`TRACE_DB_ID_BATCH_SIZE` ids), every domain of a batch before the next batch, and
//! hands each fetch to a [`RecordSink`]. The MSD aggregation is computed on the way.
//!
//! Reading runs one fetch ahead of the sink: while the sink renders and stores fetch *k*, the
//! database is already producing fetch *k + 1*. At most three fetches are alive at once (the one
//! the sink holds, one waiting for it, one being read), whatever the job's size.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trace_core::aggregation::{MsdAggregation, MsdAggregator, MsdInputs};
use trace_core::ids::IdList;
use trace_core::ports::{BackendError, EventSource, SourceError};
use trace_core::record::RowBatch;
use trace_core::{ContainerId, Domain, Profile};
use tracing::Instrument;

/// Receives what the engine reads. Each sink has its own error type, saying what can stop a run of
/// it; the engine's own failures reach it as [`SourceError`]s.
#[async_trait]
pub trait RecordSink: Send {
    /// Why this sink stops a run (its own reasons, and the event source's failures).
    type Error: From<SourceError> + Send;
    /// One fetch of rows of a requested domain, in result order within the domain.
    async fn rows(&mut self, batch: &RowBatch) -> Result<(), Self::Error>;
    /// Every row of the first `ids_done` ids has been handed over.
    async fn ids_done(&mut self, ids_done: u64) -> Result<(), Self::Error> {
        let _ = ids_done;
        Ok(())
    }
    /// Every row of a requested domain has been handed over (told once per domain, in the last id
    /// batch, while the domains after it are still being read).
    async fn domain_done(&mut self, domain: Domain) -> Result<(), Self::Error> {
        let _ = domain;
        Ok(())
    }
}

/// Ids the engine reads in batches: a request's `Vec` or a job's compact [`IdList`].
pub trait Ids: Send + Sync {
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

/// How many rows `source` has of `domain` for `ids`, asked `step` ids at a time (the source may
/// split them further).
pub async fn count(
    source: &dyn EventSource,
    ids: &dyn Ids,
    domain: Domain,
    step: usize,
) -> Result<u64, SourceError> {
    let (total, step) = (ids.count(), step.max(1));
    let mut rows = 0;
    for from in (0..total).step_by(step) {
        rows += source.count(domain, &ids.batch(from..(from + step).min(total))).await?;
    }
    Ok(rows)
}

/// What the reading side hands to the sink side.
enum Read {
    /// One fetch of a domain.
    Rows(RowBatch),
    /// A domain's last fetch has been sent.
    DomainDone(Domain),
    /// Every domain of the ids read so far is done: the number of ids read.
    IdsDone(u64),
}

/// Reads `domains` for `ids` into `sink`; returns the MSD aggregation for the MSD profile.
///
/// For MSD, the aggregation's inputs (`MsdInputs::for_request`: `rejects` or `downstream_rejects`,
/// `history` or `upstream_history`) are read even when not requested (for the aggregation only).
/// The reading runs as a task of its own (its decoding on another core than the sink's rendering).
pub async fn read_into<S: RecordSink + ?Sized>(
    source: Arc<dyn EventSource>,
    ids: Arc<dyn Ids>,
    profile: Profile,
    domains: &[Domain],
    id_batch_size: usize,
    sink: &mut S,
) -> Result<Option<MsdAggregation>, S::Error> {
    let aggregator = read_from(source, ids, profile, domains, id_batch_size, 0, sink).await?;
    Ok(aggregator.map(MsdAggregator::finish))
}

/// Like [`read_into`], from id `first` on (a run resumed from a checkpoint; a multiple of
/// `id_batch_size`, else rounded down to one), returning the MSD aggregator itself (a shard of a job
/// hands on its mergeable partial). The MSD profile always reads from the first id (its aggregation
/// needs every row).
pub async fn read_from<S: RecordSink + ?Sized>(
    source: Arc<dyn EventSource>,
    ids: Arc<dyn Ids>,
    profile: Profile,
    domains: &[Domain],
    id_batch_size: usize,
    first: u64,
    sink: &mut S,
) -> Result<Option<MsdAggregator>, S::Error> {
    let first = if profile.is_msd() { 0 } else { first };
    let mut aggregator =
        profile.is_msd().then(|| MsdAggregator::with_inputs(MsdInputs::for_request(domains)));
    let mut order: Vec<Domain> = domains.to_vec();
    if let Some(agg) = &aggregator {
        for needed in agg.inputs().domains() {
            if !order.contains(&needed) {
                order.push(needed);
            }
        }
    }
    let total = ids.count() as u64;
    let (tx, mut rx) = mpsc::channel::<Result<Read, SourceError>>(1);
    let step = id_batch_size.max(1) as u64;
    let first = first.min(total);
    let first = if first == total { first } else { first - first % step };
    let reading = read_ahead(source, ids, order, first, id_batch_size, tx).in_current_span();
    let mut reader = Reader(tokio::spawn(reading));
    let mut ids_read = first;
    let consumed = async {
        while let Some(item) = rx.recv().await {
            match item? {
                Read::Rows(batch) => {
                    if let Some(agg) = aggregator.as_mut().filter(|agg| agg.needs(batch.domain())) {
                        agg.observe(&batch);
                    }
                    if domains.contains(&batch.domain()) {
                        sink.rows(&batch).await?;
                    }
                }
                Read::DomainDone(domain) => {
                    if domains.contains(&domain) {
                        sink.domain_done(domain).await?;
                    }
                }
                Read::IdsDone(done) => {
                    ids_read = done;
                    if let Some(agg) = aggregator.as_mut() {
                        agg.end_batch();
                    }
                    sink.ids_done(done).await?;
                }
            }
        }
        Ok::<(), S::Error>(())
    }
    .await;
    if consumed.is_err() {
        // The sink stopped early (an error, a cancel): stop the reading and let go of what it holds.
        reader.stop().await;
    }
    consumed?;
    // The channel also closes when the reading task dies (a panic): never report a partial read as done.
    let ended = (&mut reader.0).await;
    if let Err(e) = ended
        .map_err(|e| e.to_string())
        .and_then(|()| (ids_read == total).then_some(()).ok_or(format!("{ids_read} of {total} ids read")))
    {
        return Err(SourceError::Backend(BackendError::new("engine", "read ahead", e)).into());
    }
    Ok(aggregator)
}

/// The reading task; aborted when dropped (the run was dropped or failed).
struct Reader(JoinHandle<()>);

impl Reader {
    async fn stop(&mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads every fetch in order into `tx`; a source error is sent on and ends the reading.
async fn read_ahead(
    source: Arc<dyn EventSource>,
    ids: Arc<dyn Ids>,
    order: Vec<Domain>,
    first: u64,
    id_batch_size: usize,
    tx: mpsc::Sender<Result<Read, SourceError>>,
) {
    let total = ids.count();
    let step = id_batch_size.max(1);
    for start in (first as usize..total).step_by(step) {
        let id_batch = ids.batch(start..(start + step).min(total));
        // Rows fetched from the source for this id batch (what a run costs the database).
        let mut rows = 0u64;
        for &domain in &order {
            let mut cursor = match source.open(domain, &id_batch).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                let item = match cursor.next_batch().await {
                    Ok(Some(batch)) => {
                        rows += batch.len() as u64;
                        Ok(Read::Rows(batch))
                    }
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                // A closed channel: the sink side has stopped; nothing more to read.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            if start + step >= total && tx.send(Ok(Read::DomainDone(domain))).await.is_err() {
                return;
            }
        }
        let done = (start + id_batch.len()) as u64;
        tracing::debug!(ids_done = done, rows_read = rows, "id batch read");
        if tx.send(Ok(Read::IdsDone(done))).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use trace_adapters::source::embedded::DatasetSource;
    use trace_core::ports::RowCursor;
    use trace_core::record::RowGauge;

    use super::*;

    /// Why a test sink's run stopped.
    #[derive(Debug, thiserror::Error)]
    enum SinkStop {
        #[error(transparent)]
        Source(#[from] SourceError),
        #[error("the sink stopped")]
        Cancelled,
    }

    /// Counts what it is handed and gives the reader time to run ahead at every fetch.
    struct SlowSink {
        records: u64,
        fetches: u64,
        ids_done: Vec<u64>,
        finished: Vec<Domain>,
        fail_at_fetch: Option<u64>,
    }

    #[async_trait]
    impl RecordSink for SlowSink {
        type Error = SinkStop;

        async fn rows(&mut self, batch: &RowBatch) -> Result<(), SinkStop> {
            assert!(!self.finished.contains(&batch.domain()), "rows of {} after its end", batch.domain());
            self.fetches += 1;
            if Some(self.fetches) == self.fail_at_fetch {
                return Err(SinkStop::Cancelled);
            }
            self.records += batch.len() as u64;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok(())
        }
        async fn ids_done(&mut self, ids_done: u64) -> Result<(), SinkStop> {
            self.ids_done.push(ids_done);
            Ok(())
        }
        async fn domain_done(&mut self, domain: Domain) -> Result<(), SinkStop> {
            self.finished.push(domain);
            Ok(())
        }
    }

    fn ids(n: u64) -> Vec<ContainerId> {
        (1..=n).map(|i| ContainerId::parse(trace_dataset::container_id(i)).unwrap()).collect()
    }

    async fn rows_in(source: &DatasetSource, ids: &[ContainerId]) -> u64 {
        let mut n = 0;
        for d in Domain::ALL {
            let mut cursor = source.open(d, ids).await.unwrap();
            while let Some(b) = cursor.next_batch().await.unwrap() {
                n += b.len() as u64;
            }
        }
        n
    }

    /// Reading runs ahead of a slow sink, but never more than three fetches are alive.
    #[tokio::test]
    async fn reads_ahead_by_a_bounded_amount() {
        let gauge = RowGauge::new();
        let source = Arc::new(DatasetSource::new(100).with_gauge(gauge.clone()));
        let ids = ids(600);
        let mut sink =
            SlowSink { records: 0, fetches: 0, ids_done: vec![], finished: vec![], fail_at_fetch: None };
        let agg = read_into(source, Arc::new(ids.clone()), Profile::QueryTool, &Domain::ALL, 250, &mut sink)
            .await
            .unwrap();
        assert!(agg.is_none());
        assert_eq!(sink.records, rows_in(&DatasetSource::new(100), &ids).await);
        assert_eq!(sink.ids_done, vec![250, 500, 600]);
        assert_eq!(sink.finished, Domain::ALL.to_vec(), "each domain's end told once, in order");
        assert_eq!(gauge.current(), 0);
        let peak = gauge.peak();
        assert!(peak > 100, "the reader never ran ahead (peak {peak} rows)");
        assert!(peak <= 300, "more than three fetches alive: peak {peak} rows");
    }

    /// The end of each requested domain is told once, after its last rows; the domains read only for
    /// the MSD aggregation are not.
    #[tokio::test]
    async fn each_requested_domain_s_end_is_told_after_its_last_rows() {
        let source = Arc::new(DatasetSource::new(100));
        let mut sink =
            SlowSink { records: 0, fetches: 0, ids_done: vec![], finished: vec![], fail_at_fetch: None };
        let domains = [Domain::Holds, Domain::Materials];
        let agg = read_into(source, Arc::new(ids(600)), Profile::MidSectionDefect, &domains, 250, &mut sink)
            .await
            .unwrap();
        assert!(agg.is_some());
        assert_eq!(sink.finished, domains.to_vec());
    }

    /// A sink that stops ends the run with its error, and the rows read ahead are released.
    #[tokio::test]
    async fn a_failing_sink_stops_the_reading() {
        let gauge = RowGauge::new();
        let source = Arc::new(DatasetSource::new(100).with_gauge(gauge.clone()));
        let mut sink =
            SlowSink { records: 0, fetches: 0, ids_done: vec![], finished: vec![], fail_at_fetch: Some(5) };
        let err = read_into(source, Arc::new(ids(600)), Profile::QueryTool, &Domain::ALL, 250, &mut sink)
            .await
            .unwrap_err();
        assert!(matches!(err, SinkStop::Cancelled), "{err}");
        assert_eq!(sink.fetches, 5);
        assert_eq!(gauge.current(), 0);
    }

    /// A source whose reading dies (a panic) after some fetches.
    struct DyingSource {
        inner: DatasetSource,
        fetches_left: Arc<AtomicUsize>,
    }

    struct DyingCursor {
        inner: Box<dyn RowCursor>,
        fetches_left: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl EventSource for DyingSource {
        async fn open(&self, domain: Domain, ids: &[ContainerId]) -> Result<Box<dyn RowCursor>, SourceError> {
            let inner = self.inner.open(domain, ids).await?;
            Ok(Box::new(DyingCursor { inner, fetches_left: self.fetches_left.clone() }))
        }
    }

    #[async_trait]
    impl RowCursor for DyingCursor {
        async fn next_batch(&mut self) -> Result<Option<RowBatch>, SourceError> {
            let left = self.fetches_left.load(Ordering::SeqCst);
            assert!(left > 0, "the source died");
            self.fetches_left.store(left - 1, Ordering::SeqCst);
            self.inner.next_batch().await
        }
    }

    /// A reading task that dies is an error, never a short result reported as complete.
    #[tokio::test]
    async fn a_dying_reader_is_an_error_not_a_short_result() {
        let source = Arc::new(DyingSource {
            inner: DatasetSource::new(100),
            fetches_left: Arc::new(AtomicUsize::new(3)),
        });
        let mut sink =
            SlowSink { records: 0, fetches: 0, ids_done: vec![], finished: vec![], fail_at_fetch: None };
        let err =
            read_into(source, Arc::new(ids(600)), Profile::QueryTool, &[Domain::History], 250, &mut sink)
                .await
                .unwrap_err();
        assert!(matches!(err, SinkStop::Source(_)), "{err}");
        assert!(sink.fetches >= 1, "it read before dying");
    }
}
