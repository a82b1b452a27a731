//! Step 2: read the shard's ids from the job's input (`jobs/{id}/input.json`).

use trace_core::ids::IdList;
use trace_core::job::JobMeta;
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use super::ShardError;
use crate::App;

/// The ids of `message`'s shard, compactly (one buffer, not one allocation per id).
pub(super) async fn read_shard_ids(
    app: &App,
    meta: &JobMeta,
    message: &ShardMessage,
) -> Result<IdList, ShardError> {
    let input = match app.backends.store.get(&layout::input_key(&meta.result_id())).await {
        Ok(b) => b,
        Err(StoreError::NotFound(k)) => return Err(ShardError::BadInput(format!("{k} is missing"))),
        Err(e) => return Err(e.into()),
    };
    // Only the ids; the raw JSON is dropped at once.
    #[derive(serde::Deserialize)]
    struct InputIds {
        container_ids: IdList,
    }
    let all = serde_json::from_slice::<InputIds>(&input)
        .map_err(|e| ShardError::BadInput(format!("input.json: {e}")))?
        .container_ids;
    drop(input);
    tracing::debug!("input read");
    let (from, to) = (message.ids_from as usize, message.ids_to as usize);
    if from > to || to > all.len() {
        return Err(ShardError::BadInput(format!(
            "shard ids {from}..{to} outside the {} input ids",
            all.len()
        )));
    }
    Ok(if (from, to) == (0, all.len()) { all } else { all.slice(from..to) })
}
