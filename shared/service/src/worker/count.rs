//! Step 2's second part: the job's first shard counts the job's first domain (every shard's ids)
//! beside its reading, so that a followed stream ([`crate::follow`]) can open that domain with its
//! total while the job runs, whichever shards run when. The count is stored once (create-only,
//! [`JobCount`]); a later run of the shard finds it and does not count again.
//!
//! One `count(*)` per [`COUNT_STEP`] ids, no row leaving the database: history's 15,000 ids take
//! 57 ms (an index-only scan), 114,000 ids about half a second. The whole job's ids are held while
//! it counts (a few MB at a million ids; the reading's chunk buffers, later, are the peak). A count
//! that fails is logged and left out: the job goes on, and a follower learns the total when the
//! shards end.

use bytes::Bytes;
use trace_core::ids::IdList;
use trace_core::job::JobMeta;
use trace_core::layout::{self, JobCount};
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use crate::engine;
use crate::App;

/// Ids handed to the source per count (a database counts them in one query).
const COUNT_STEP: usize = 10_000;

/// Whether this run should count: the job's first shard, when no count is stored.
pub(super) async fn wanted(app: &App, meta: &JobMeta, message: &ShardMessage) -> bool {
    if message.shard != 0 || message.domains.is_empty() {
        return false;
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

/// Counts the first domain's records of the job's `ids` (all of them) and stores the count.
pub(super) async fn first_domain(app: &App, meta: &JobMeta, message: &ShardMessage, ids: IdList) {
    let Some(&domain) = message.domains.first() else { return };
    let source = app.backends.source.clone();
    let records = match engine::count(source.as_ref(), &ids, domain, COUNT_STEP).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%domain, error = %e, "could not count the first domain's records: a follower waits for the shards' end");
            return;
        }
    };
    drop(ids);
    let body = serde_json::to_vec(&JobCount { domain, records }).unwrap_or_default();
    match app.backends.store.put_new(&layout::count_key(&meta.result_id()), Bytes::from(body)).await {
        Ok(_) => tracing::debug!(%domain, records, "first domain counted"),
        Err(e) => tracing::warn!(error = %e, "could not store the job's count"),
    }
}
