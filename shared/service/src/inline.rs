//! The inline answer: the whole result in one JSON body, built within a byte budget
//! (`TRACE_INLINE_MAX_BYTES`). Lambda's buffered answers stop at 6 MB; when the budget would be
//! exceeded the run stops at once with [`InlineError::TooLarge`] and submit turns the request into a job.
//!
//! Answer: `{"stage":"events","results":{"<domain>":{"data":[…],"count":n}},"aggregation":{…}|null}`.

use std::sync::Arc;

use async_trait::async_trait;
use trace_core::ports::SourceError;
use trace_core::record::RowBatch;
use trace_core::{Domain, TraceRequest};

use crate::engine::{self, RecordSink};
use crate::App;

/// Why an inline answer was not given.
#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    /// The answer outgrew its byte budget: run the request as a job instead.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The event source failed: the caller is told the service is unavailable.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Bytes of the answer around the records (keys, counts, braces), generously.
const FRAME_BYTES: usize = 64;

struct InlineSink {
    budget: usize,
    used: usize,
    /// Per requested domain: the records as a JSON array body (no brackets), and the count.
    parts: Vec<(Domain, Vec<u8>, u64)>,
}

#[async_trait]
impl RecordSink for InlineSink {
    type Error = InlineError;

    async fn rows(&mut self, batch: &RowBatch) -> Result<(), InlineError> {
        let Some((_, buf, count)) = self.parts.iter_mut().find(|(d, _, _)| *d == batch.domain()) else {
            return Ok(());
        };
        let before = buf.len();
        for i in 0..batch.len() {
            if !buf.is_empty() {
                buf.push(b',');
            }
            batch.write_row_json(i, buf);
            *count += 1;
            if self.used + (buf.len() - before) > self.budget {
                return Err(InlineError::TooLarge(self.budget));
            }
        }
        self.used += buf.len() - before;
        Ok(())
    }
}

/// Runs `request` inline; the JSON answer, or `TooLarge` past the budget.
pub async fn run(app: &App, request: &TraceRequest) -> Result<Vec<u8>, InlineError> {
    let budget = app.config.limits.inline_max_bytes;
    let parts = request.domains.iter().map(|d| (*d, Vec::new(), 0)).collect();
    let mut sink = InlineSink { budget, used: FRAME_BYTES * (request.domains.len() + 1), parts };
    let aggregation = engine::read_into(
        app.backends.source.clone(),
        Arc::new(request.ids.clone()),
        request.profile,
        &request.domains,
        app.config.id_batch_size,
        &mut sink,
    )
    .await?;
    let aggregation = aggregation.map(|a| serde_json::to_vec(&a).unwrap_or_default());
    if sink.used + aggregation.as_ref().map_or(4, Vec::len) > budget {
        return Err(InlineError::TooLarge(budget));
    }
    let mut out = Vec::with_capacity(sink.used + 256);
    out.extend_from_slice(br#"{"stage":"events","results":{"#);
    for (i, (domain, records, count)) in sink.parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!(r#""{domain}":{{"data":["#).as_bytes());
        out.extend_from_slice(&records);
        out.extend_from_slice(format!(r#"],"count":{count}}}"#).as_bytes());
    }
    out.extend_from_slice(br#"},"aggregation":"#);
    out.extend_from_slice(aggregation.as_deref().unwrap_or(b"null"));
    out.push(b'}');
    Ok(out)
}
