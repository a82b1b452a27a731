//! Step 2's second part: the job's first shard counts the job's first domain (every shard's ids)
//! beside its reading, so that a followed stream ([`crate::follow`]) can open that domain with its
//! total while the job runs, whichever shards run when. The count ([`JobCount`]) is stored by the
//! shard's first attempt; a continuation finds it and does not count again, a later attempt (a
//! takeover, a retry hours later) counts again and replaces it. A follower checks the total it sent
//! against the result's records and ends with `RESULT_CHANGED` if they differ (the source changed).
//!
//! One `count(*)` per [`COUNT_STEP`] ids, no row leaving the database: history's 15,000 ids take
//! 57 ms (an index-only scan), 114,000 ids about half a second. The job's ids are not held while it
//! counts (at a million ids they would be 11 MB beside the reading's chunk buffers, the shard's
//! peak): the shard's reading of the input notes where each [`SPAN`] ids lie in it, and the count
//! reads them again one span at a time (a ranged read of ~1.5 MB). A count that fails is logged and
//! left out: the job goes on, and a follower learns the total when the shards end.

use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use trace_core::domain::Domain;
use trace_core::ids::IdList;
use trace_core::job::JobMeta;
use trace_core::layout::{self, JobCount};
use trace_core::message::ShardMessage;
use trace_core::ports::{SourceError, StoreError};

use crate::engine;
use crate::App;

/// Ids handed to the source per count (a database counts them in one query).
const COUNT_STEP: usize = 10_000;

/// Ids read again per ranged read of the input while counting.
pub(super) const SPAN: usize = 100_000;

/// Whether this run should count: the job's first shard, when no count is stored or this is a later
/// attempt of it.
pub(super) async fn wanted(app: &App, meta: &JobMeta, message: &ShardMessage) -> bool {
    if message.shard != 0 || message.domains.is_empty() {
        return false;
    }
    if meta.attempt > 1 {
        return true;
    }
    match app.backends.store.get(&layout::count_key(&meta.result_id())).await {
        Ok(_) => false,
        Err(StoreError::NotFound(_)) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the job's count: counting again");
            true
        }
    }
}

/// Counts the first domain's records of the job's ids (all of them, read again from the input a
/// `span` at a time) and stores the count.
pub(super) async fn first_domain(app: &App, meta: &JobMeta, message: &ShardMessage, spans: Vec<Range<u64>>) {
    let Some(&domain) = message.domains.first() else { return };
    let records = match count(app, meta, domain, spans).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%domain, error = %e, "could not count the first domain's records: a follower waits for the shards' end");
            return;
        }
    };
    let body = serde_json::to_vec(&JobCount { domain, records }).unwrap_or_default();
    match app.backends.store.put(&layout::count_key(&meta.result_id()), Bytes::from(body)).await {
        Ok(_) => tracing::debug!(%domain, records, "first domain counted"),
        Err(e) => tracing::warn!(error = %e, "could not store the job's count"),
    }
}

/// How long a shard's end waits for its count once its reading is done.
const COUNT_GRACE: Duration = Duration::from_secs(10);

/// Runs the shard's reading (`write`) with the `count` beside it: the reading's outcome, once the
/// count has ended too — unless the reading failed, or the count takes more than [`COUNT_GRACE`]
/// longer (a slow database): then the count is left out (a follower takes the total from the shards'
/// records) rather than hold up the shard's end.
pub(super) async fn beside<T, E>(
    count: impl Future<Output = ()>,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (mut count, mut write) = (pin!(count), pin!(write));
    tokio::select! {
        () = &mut count => write.await,
        written = &mut write => {
            if written.is_ok() && tokio::time::timeout(COUNT_GRACE, count).await.is_err() {
                tracing::warn!(grace_s = COUNT_GRACE.as_secs(), "the count outlasted the reading: left out");
            }
            written
        }
    }
}

/// Why a count was left out.
#[derive(Debug, thiserror::Error)]
enum CountError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a span of the input is not a list of ids: {0}")]
    Span(#[from] serde_json::Error),
    #[error("a span of the input holds no id (the input changed?)")]
    EmptySpan,
    #[error(transparent)]
    Source(#[from] SourceError),
}

async fn count(app: &App, meta: &JobMeta, domain: Domain, spans: Vec<Range<u64>>) -> Result<u64, CountError> {
    let key = layout::input_key(&meta.result_id());
    let source = app.backends.source.clone();
    let mut records = 0;
    for span in spans {
        let ids = IdList::from_span(&app.backends.store.get_range(&key, span).await?)?;
        if ids.is_empty() {
            return Err(CountError::EmptySpan);
        }
        records += engine::count(source.as_ref(), &ids, domain, COUNT_STEP).await?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use trace_core::message::ShardMessage;

    use super::*;
    use crate::testing::{app, submitted};

    /// The count read back a span at a time (spans of 7 ids, the last one shorter) is the count of
    /// every id of the job, whichever shard's range the reading kept.
    #[tokio::test]
    async fn the_count_read_span_by_span_counts_every_id_of_the_job() {
        let app = app(&[("TRACE_SHARD_MIN_IDS", "100"), ("TRACE_MAX_SHARDS", "3")]).await;
        let (job, deliveries) = submitted(&app, 250, &["history", "rejects"], "query_tool").await;
        let message = ShardMessage::parse(&deliveries[0].body).unwrap();
        let meta = app.backends.jobs.get(&job).await.unwrap().unwrap();
        let (kept, spans) =
            super::super::input::read_shard_ids(&app, &meta, &message, Some(7)).await.unwrap();
        assert_eq!(kept.len() as u64, message.ids_to - message.ids_from);
        let spans = spans.expect("spans asked for");
        assert_eq!(spans.len(), 250usize.div_ceil(7));
        let all: IdList = {
            let input = app.backends.store.get(&layout::input_key(&job)).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&input).unwrap()["container_ids"]
                .as_array()
                .map(|ids| serde_json::from_value(serde_json::Value::Array(ids.clone())).unwrap())
                .unwrap()
        };
        assert_eq!(all.len(), 250);
        for domain in [Domain::History, Domain::Rejects] {
            let expected = engine::count(app.backends.source.as_ref(), &all, domain, 1_000).await.unwrap();
            assert!(expected > 0);
            assert_eq!(count(&app, &meta, domain, spans.clone()).await.unwrap(), expected, "{domain}");
        }
        let (_, none) = super::super::input::read_shard_ids(&app, &meta, &message, None).await.unwrap();
        assert!(none.is_none());
    }

    /// The shard's end waits for its count, but no more than the grace once its reading is done, and
    /// not at all after a failed reading.
    #[tokio::test(start_paused = true)]
    async fn the_shard_s_end_waits_for_its_count_only_so_long() {
        let started = tokio::time::Instant::now();
        let slow_count = tokio::time::sleep(Duration::from_secs(3));
        let read: Result<u8, ()> = beside(slow_count, async { Ok(7) }).await;
        assert_eq!((read, started.elapsed().as_secs()), (Ok(7), 3), "a count within the grace is awaited");

        let started = tokio::time::Instant::now();
        let stuck_count = std::future::pending::<()>();
        let read: Result<u8, ()> = beside(stuck_count, async { Ok(7) }).await;
        assert_eq!((read, started.elapsed()), (Ok(7), COUNT_GRACE), "a stuck count is left after the grace");

        let started = tokio::time::Instant::now();
        let read: Result<u8, &str> = beside(std::future::pending::<()>(), async { Err("failed") }).await;
        assert_eq!((read, started.elapsed().as_secs()), (Err("failed"), 0), "a failed reading ends at once");

        let started = tokio::time::Instant::now();
        let reading = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ()>(1)
        };
        let read = beside(async {}, reading).await;
        assert_eq!((read, started.elapsed().as_secs()), (Ok(1), 30), "a quick count waits for the reading");
    }
}
