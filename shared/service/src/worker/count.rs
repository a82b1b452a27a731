//! Step 2's second part: the shard counts its first domain's records before reading them, so that a
//! followed stream ([`crate::follow`]) can open that domain with its total while the job runs. The
//! count is stored once per shard (create-only, [`ShardCount`]); a later run of the shard finds it.
//!
//! It runs beside the reading, on a connection of its own, and costs one `count(*)` per id batch of
//! one domain (no row leaves the database). A count that fails is logged and left out: the job goes
//! on, and a follower learns the total from the shard's finished chunks instead.

use std::sync::Arc;

use bytes::Bytes;
use trace_core::ids::IdList;
use trace_core::job::JobMeta;
use trace_core::layout::{self, ShardCount};
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use crate::engine;
use crate::App;

/// Counts and stores the first domain's records of `message`'s shard unless a count is stored.
pub(super) async fn first_domain(app: &App, meta: &JobMeta, message: &ShardMessage, ids: Arc<IdList>) {
    let Some(&domain) = message.domains.first() else { return };
    let key = layout::count_key(&meta.result_id(), message.shard);
    let store = &app.backends.store;
    match store.get(&key).await {
        Ok(_) => return,
        Err(StoreError::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not read the shard's count: counting again");
        }
    }
    let source = app.backends.source.clone();
    let records = match engine::count(source.as_ref(), ids.as_ref(), domain, app.config.id_batch_size).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%domain, error = %e, "could not count the first domain's records: a follower waits for the shard's end");
            return;
        }
    };
    let count = ShardCount { shard: message.shard, domain, records };
    let body = serde_json::to_vec(&count).unwrap_or_default();
    match store.put_new(&key, Bytes::from(body)).await {
        Ok(_) => tracing::debug!(%domain, records, "first domain counted"),
        Err(e) => tracing::warn!(error = %e, "could not store the shard's count"),
    }
}
