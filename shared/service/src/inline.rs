//! The inline answer: the whole result in one JSON body, built within a byte budget
//! (`TRACE_INLINE_MAX_BYTES`). Lambda's buffered answers stop at 6 MB; when the budget would be
//! exceeded the run stops at once with [`InlineError::TooLarge`] and submit turns the request into a job.
//!
//! Answer: `{"stage":"events","results":{"<domain>":{"data":[…],"count":n}},"aggregation":{…}|null}`.

use std::sync::Arc;

use async_trait::async_trait;
use trace_core::api::{DomainRecords, EventsAnswer, InlineResult, RenderedRecords};
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
    /// The answer could not be written as JSON (a stored record that is not JSON): an internal error.
    #[error("the inline answer could not be written: {0}")]
    Render(#[source] serde_json::Error),
}

/// Bytes of the answer around the records (keys, counts, braces), generously.
const FRAME_BYTES: usize = 64;

struct InlineSink {
    budget: usize,
    used: usize,
    /// Per requested domain: its records, rendered.
    parts: Vec<(Domain, RenderedRecords)>,
}

#[async_trait]
impl RecordSink for InlineSink {
    type Error = InlineError;

    async fn rows(&mut self, batch: &RowBatch) -> Result<(), InlineError> {
        let Some((_, records)) = self.parts.iter_mut().find(|(d, _)| *d == batch.domain()) else {
            return Ok(());
        };
        let before = records.byte_len();
        for i in 0..batch.len() {
            records.push_with(|out| batch.write_row_json(i, out));
            if self.used + (records.byte_len() - before) > self.budget {
                return Err(InlineError::TooLarge(self.budget));
            }
        }
        self.used += records.byte_len() - before;
        Ok(())
    }
}

/// Runs `request` inline; the JSON answer, or `TooLarge` past the budget.
pub async fn run(app: &App, request: &TraceRequest) -> Result<Vec<u8>, InlineError> {
    let budget = app.config.limits.inline_max_bytes;
    let parts = request.domains.iter().map(|d| (*d, RenderedRecords::default())).collect();
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
    let aggregation_bytes = aggregation.as_ref().map_or(4, |a| serde_json::to_vec(a).map_or(0, |v| v.len()));
    if sink.used + aggregation_bytes > budget {
        return Err(InlineError::TooLarge(budget));
    }
    let results =
        sink.parts.into_iter().map(|(d, data)| (d, DomainRecords { count: data.count(), data })).collect();
    let answer: InlineResult<RenderedRecords, _> = EventsAnswer::new(results, aggregation);
    answer.to_json(sink.used + aggregation_bytes).map_err(InlineError::Render)
}
