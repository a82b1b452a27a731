//! Step 2: read the shard's ids from the job's input (`jobs/{id}/input.json`).

use serde::de::DeserializeSeed;
use std::ops::Range;

use trace_core::ids::{IdList, IdRange, IdRangeSpans};
use trace_core::job::JobMeta;
use trace_core::layout;
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;

use super::ShardError;
use crate::App;

/// The ids of `message`'s shard, compactly (one buffer, not one allocation per id); with
/// `spans_of: Some(n)`, also the byte spans of the job's ids in the input, `n` ids a span (see
/// [`IdRangeSpans`]), for the count ([`super::count`]) to read them again a span at a time.
pub(super) async fn read_shard_ids(
    app: &App,
    meta: &JobMeta,
    message: &ShardMessage,
    spans_of: Option<usize>,
) -> Result<(IdList, Option<Vec<Range<u64>>>), ShardError> {
    let input = match app.backends.store.get(&layout::input_key(&meta.result_id())).await {
        Ok(b) => b,
        Err(StoreError::NotFound(k)) => return Err(ShardError::BadInput(format!("{k} is missing"))),
        Err(e) => return Err(e.into()),
    };
    // Only this shard's ids are kept (the others are checked and skipped); the raw JSON is dropped at
    // once. A shard of a million-id job holds its own range, not the million.
    let (from, to) = (message.ids_from as usize, message.ids_to as usize);
    let mut de = serde_json::Deserializer::from_slice(&input);
    let found = InputIds { keep: from..to, spans_of, text: &input }
        .deserialize(&mut de)
        .map_err(|e| ShardError::BadInput(format!("input.json: {e}")))?;
    drop(input);
    tracing::debug!("input read");
    let Some((ids, total, spans)) = found else {
        return Err(ShardError::BadInput("input.json has no container_ids".to_owned()));
    };
    if from > to || to > total {
        return Err(ShardError::BadInput(format!("shard ids {from}..{to} outside the {total} input ids")));
    }
    Ok((ids, spans))
}

/// The `container_ids` of an input object (`text`), only the range `keep` kept ([`IdRange`]), with the
/// spans of the ids when asked ([`IdRangeSpans`]); the other fields skipped.
struct InputIds<'t> {
    keep: Range<usize>,
    spans_of: Option<usize>,
    text: &'t [u8],
}

/// The ids kept, the number of ids, the spans when asked.
type Found = Option<(IdList, usize, Option<Vec<Range<u64>>>)>;

impl<'de> DeserializeSeed<'de> for InputIds<'_> {
    type Value = Found;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for InputIds<'_> {
    type Value = Found;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a job's input object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "container_ids" {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else if let Some(every) = self.spans_of {
                let seed = IdRangeSpans { keep: self.keep.clone(), every, text: self.text };
                let (ids, n, spans) = map.next_value_seed(seed)?;
                found = Some((ids, n, Some(spans)));
            } else {
                let (ids, n) = map.next_value_seed(IdRange(self.keep.clone()))?;
                found = Some((ids, n, None));
            }
        }
        Ok(found)
    }
}
