//! Step 2: read the shard's ids from the job's input (`jobs/{id}/input.json`).

use serde::de::DeserializeSeed;
use trace_core::ids::{IdList, IdRange};
use trace_core::job::JobMeta;
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use super::ShardError;
use crate::App;

/// The ids of `message`'s shard, compactly (one buffer, not one allocation per id); with `all`, every
/// id of the job too.
pub(super) async fn read_shard_ids(
    app: &App,
    meta: &JobMeta,
    message: &ShardMessage,
    all: bool,
) -> Result<(IdList, Option<IdList>), ShardError> {
    let input = match app.backends.store.get(&layout::input_key(&meta.result_id())).await {
        Ok(b) => b,
        Err(StoreError::NotFound(k)) => return Err(ShardError::BadInput(format!("{k} is missing"))),
        Err(e) => return Err(e.into()),
    };
    // Only this shard's ids are kept (the others are checked and skipped); the raw JSON is dropped at
    // once. A shard of a million-id job holds its own range, not the million.
    let (from, to) = (message.ids_from as usize, message.ids_to as usize);
    let kept = if all { 0..usize::MAX } else { from..to };
    let mut de = serde_json::Deserializer::from_slice(&input);
    let found =
        InputIds(kept).deserialize(&mut de).map_err(|e| ShardError::BadInput(format!("input.json: {e}")))?;
    drop(input);
    tracing::debug!("input read");
    let Some((ids, total)) = found else {
        return Err(ShardError::BadInput("input.json has no container_ids".to_owned()));
    };
    if from > to || to > total {
        return Err(ShardError::BadInput(format!("shard ids {from}..{to} outside the {total} input ids")));
    }
    if all {
        return Ok((ids.slice(from..to), Some(ids)));
    }
    Ok((ids, None))
}

/// The `container_ids` of an input object, only the range `.0` kept ([`IdRange`]); the other fields
/// skipped.
struct InputIds(std::ops::Range<usize>);

impl<'de> DeserializeSeed<'de> for InputIds {
    type Value = Option<(IdList, usize)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for InputIds {
    type Value = Option<(IdList, usize)>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a job's input object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "container_ids" {
                found = Some(map.next_value_seed(IdRange(self.0.clone()))?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}
