//! The inline answer: the whole result in one JSON body, built within a byte budget
//! (`TRACE_INLINE_MAX_BYTES`). Lambda's buffered answers stop at 6,291,556 bytes, counted as Lambda
//! carries them: `lambda_http` puts the JSON body into the invoke response as a JSON string, where every
//! `"` costs two bytes (a typical record grows ~16%). The budget counts those bytes
//! ([`json_string_overhead`]); when it would be exceeded the run stops at once with
//! [`InlineError::TooLarge`] and submit turns the request into a job.
//!
//! Answer: `{"stage":"events","results":{"<domain>":{"data":[…],"count":n}},"aggregation":{…}|null}`.

use std::sync::Arc;

use async_trait::async_trait;
use trace_core::api::{json_string_overhead, DomainRecords, EventsAnswer, InlineResult, RenderedRecords};
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
        for i in 0..batch.len() {
            let before = records.byte_len();
            records.push_with(|out| batch.write_row_json(i, out));
            // The new bytes start where the closing `]` was.
            let added = records.bytes_from(before.saturating_sub(1));
            self.used += records.byte_len() - before + json_string_overhead(added);
            if self.used > self.budget {
                return Err(InlineError::TooLarge(self.budget));
            }
        }
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
    let aggregation_bytes = aggregation
        .as_ref()
        .map_or(4, |a| serde_json::to_vec(a).map_or(0, |v| v.len() + json_string_overhead(&v)));
    if sink.used + aggregation_bytes > budget {
        return Err(InlineError::TooLarge(budget));
    }
    let results =
        sink.parts.into_iter().map(|(d, data)| (d, DomainRecords { count: data.count(), data })).collect();
    let answer: InlineResult<RenderedRecords, _> = EventsAnswer::new(results, aggregation);
    answer.to_json(sink.used + aggregation_bytes).map_err(InlineError::Render)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace_adapters::runtime::{Backends, BackendsFromConfig};
    use trace_core::Config;

    async fn app(budget: usize) -> App {
        let budget = budget.to_string();
        let config = Config::from_lookup(|name| match name {
            "TRACE_INLINE_MAX_BYTES" => Some(budget.clone()),
            "TRACE_AUTH" => Some("open".to_owned()),
            "TRACE_LOCAL_DIR" => Some(std::env::temp_dir().join("trace-inline-test").display().to_string()),
            _ => None,
        })
        .unwrap();
        let backends = Backends::from_config(&config).await.unwrap();
        App::new(config, backends)
    }

    fn request() -> TraceRequest {
        let ids: Vec<String> = (1..=300).map(trace_dataset::container_id).collect();
        let body = serde_json::json!({ "container_ids": ids, "domains": ["history", "holds"] });
        TraceRequest::parse(body.to_string().as_bytes(), usize::MAX).unwrap()
    }

    /// The budget holds the answer as Lambda carries it (a JSON string: quotes count twice), not as
    /// written: an answer that fits raw but not escaped becomes a job.
    #[tokio::test]
    async fn the_budget_counts_the_answer_as_lambda_sends_it() {
        let answer = run(&app(50_000_000).await, &request()).await.unwrap();
        let raw = answer.len();
        let escaped = raw + json_string_overhead(&answer);
        assert!(escaped - raw > 10_000, "the answer has quotes to escape: {raw} → {escaped}");

        // Enough for the raw bytes (with room for the frame), not for the escaped ones: a job.
        match run(&app(raw + 1_000).await, &request()).await {
            Err(InlineError::TooLarge(budget)) => assert_eq!(budget, raw + 1_000),
            other => panic!(
                "an answer over its escaped budget must not be given inline: {:?}",
                other.map(|a| a.len())
            ),
        }
        // Enough for the escaped bytes: the same answer, inline.
        assert_eq!(run(&app(escaped + 1_000).await, &request()).await.unwrap(), answer);
    }
}
