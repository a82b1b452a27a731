//! Step 2's first part: where the shard's earlier runs got to. A run starts from the shard's last
//! [`Checkpoint`] when it fits (see [`Checkpoint::fits`]); without one, from the first id. What earlier
//! attempts stored stays where it is until the manifest is written: their chunks' keys name their
//! attempt, so they cannot be mistaken for this run's, and the manifest's write sweeps the ones it
//! does not list (other shards' chunks are never touched). The checkpoints themselves are
//! stored by the [`ChunkWriter`](super::chunks::ChunkWriter) between two id batches.

use trace_core::checkpoint::{Checkpoint, Layout};
use trace_core::job::JobMeta;
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use super::ShardError;
use crate::App;

/// A checkpoint to resume from, and each domain's open records (NDJSON, in the order of its domains).
pub(super) struct Found {
    pub(super) checkpoint: Checkpoint,
    pub(super) open: Vec<Vec<u8>>,
}

impl Found {
    /// The job's run time before this run.
    pub(super) fn ran_for(found: Option<&Found>) -> std::time::Duration {
        std::time::Duration::from_millis(found.map_or(0, |f| f.checkpoint.ran_for_ms))
    }
}

/// The layout this worker's chunks have (what a checkpoint must match to be resumed).
fn layout(app: &App) -> Layout {
    Layout {
        id_batch_size: app.config.id_batch_size as u64,
        chunk_records: app.config.chunk_records as u64,
        encoding: app.config.chunk_encoding,
    }
}

/// The checkpoint `message`'s run resumes from, if one fits. An unfit one (or an earlier run of this
/// one's, `again`, that starts over) is removed.
pub(super) async fn load(
    app: &App,
    meta: &JobMeta,
    message: &ShardMessage,
    again: bool,
) -> Result<Option<Found>, ShardError> {
    let store = &app.backends.store;
    let key = layout::checkpoint_key(&meta.result_id(), message.shard);
    let found = match store.get(&key).await {
        // The MSD aggregation needs every row: its runs always start from the first id.
        Ok(_) if message.profile.is_msd() => None,
        Ok(body) => match Checkpoint::decode(&body) {
            Ok((checkpoint, open)) if checkpoint.fits(message, layout(app)) => {
                Some(Found { checkpoint, open })
            }
            Ok(_) => {
                tracing::warn!("the checkpoint does not fit this run (settings changed): starting again");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "starting again");
                None
            }
        },
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match &found {
        Some(Found { checkpoint: cp, .. }) => tracing::info!(
            ids_done = cp.ids_done,
            records = cp.records(),
            saved_by_attempt = cp.attempt,
            ran_for_s = cp.ran_for_ms / 1000,
            "resuming from the checkpoint"
        ),
        None if again || meta.attempt > 1 || message.continuation > 0 => {
            store.delete_prefix(&key).await?;
        }
        None => {}
    }
    Ok(found)
}
