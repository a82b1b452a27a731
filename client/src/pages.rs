//! Result pages as the stream lines they stand for: the one conversion used wherever records arrive
//! as pages rather than as a stream — a stream resumed from pages, `trace result --all`, and an
//! inline answer.

use serde_json::Value;
use trace_core::ndjson::StreamLine;
use trace_core::Domain;

use crate::types::{InlineResult, Page};
use crate::ClientError;

/// One domain read page by page: checks that each page is the next one and turns it into lines
/// (`domain_start` before the first page, a `records` line per non-empty page with consecutive batch
/// numbers, `domain_end` once every record is delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct DomainPages {
    domain: Domain,
    /// Position of the first record read here (`domain_end` counts from it).
    start: u64,
    /// Position of the next record (the next page's offset).
    offset: u64,
    /// Next batch number.
    batch: u64,
    /// The domain's total, once its `domain_start` was delivered.
    total: Option<u64>,
}

impl DomainPages {
    /// `domain` from record `offset` on; its `domain_start` is still to be delivered.
    pub fn new(domain: Domain, offset: u64) -> Self {
        DomainPages { domain, start: offset, offset, batch: 0, total: None }
    }

    /// The rest of a domain whose `domain_start` (announcing `total`) and first `delivered` records,
    /// in batches up to `next_batch`, were delivered already.
    pub fn resume(domain: Domain, delivered: u64, next_batch: u64, total: u64) -> Self {
        DomainPages { domain, start: 0, offset: delivered, batch: next_batch, total: Some(total) }
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The offset of the next page.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Records delivered from the first position read here on.
    pub fn delivered(&self) -> u64 {
        self.offset - self.start
    }

    /// Whether every record was delivered.
    pub fn is_complete(&self) -> bool {
        self.total.is_some_and(|total| self.offset >= total)
    }

    /// The domain's `domain_end`.
    pub fn end(&self) -> StreamLine {
        StreamLine::DomainEnd { domain: self.domain, count: self.delivered() }
    }

    /// The lines `page` stands for, `domain_end` included when it completes the domain; an error
    /// when it is not the next page of the domain.
    pub fn lines(&mut self, page: Page) -> Result<Vec<StreamLine>, ClientError> {
        self.check(&page)?;
        let mut lines = Vec::with_capacity(3);
        if self.total.is_none() {
            self.total = Some(page.total);
            lines.push(StreamLine::DomainStart { domain: self.domain, total: page.total });
        }
        if page.count > 0 {
            self.offset += page.count;
            let batch = self.batch;
            self.batch += 1;
            lines.push(StreamLine::Records {
                domain: self.domain,
                batch,
                count: page.count,
                data: page.data,
            });
        }
        if self.is_complete() {
            lines.push(self.end());
        }
        Ok(lines)
    }

    fn check(&self, page: &Page) -> Result<(), ClientError> {
        let invalid = |reason: String| ClientError::InvalidResponse {
            url: format!("result page {} offset {}", self.domain, self.offset),
            reason,
        };
        if page.domain != self.domain || page.offset != self.offset {
            return Err(invalid(format!("got {} offset {}", page.domain, page.offset)));
        }
        match self.total {
            Some(total) if total != page.total => {
                return Err(invalid(format!("total {} but {total} was announced", page.total)))
            }
            _ => {}
        }
        if page.count == 0 && self.offset < page.total {
            return Err(invalid(format!("an empty page before the domain's {} records", page.total)));
        }
        Ok(())
    }
}

/// The lines that close a stream: `aggregation` (when there is one) and `complete`.
pub fn closing_lines(aggregation: Option<Value>, total_records: u64) -> Vec<StreamLine> {
    let aggregation = aggregation.filter(|a| !a.is_null()).map(|data| StreamLine::Aggregation { data });
    aggregation.into_iter().chain([StreamLine::Complete { total_records }]).collect()
}

/// An inline answer as the stream's line sequence (without `meta`, as there is no job): each domain
/// as pages of at most `batch_size` records, then the closing lines.
pub fn inline_lines(answer: InlineResult, batch_size: usize) -> Result<Vec<StreamLine>, ClientError> {
    let batch_size = batch_size.max(1);
    let mut lines = Vec::new();
    let mut total_records = 0;
    for (domain, records) in answer.results {
        let total = records.data.len() as u64;
        let mut data = records.data.into_iter();
        let mut pages = DomainPages::new(domain, 0);
        while !pages.is_complete() {
            let data: Vec<Value> = data.by_ref().take(batch_size).collect();
            let (count, offset) = (data.len() as u64, pages.offset());
            let page =
                Page { domain, data, count, total, offset, limit: batch_size as u64, aggregation: None };
            lines.extend(pages.lines(page)?);
        }
        total_records += total;
    }
    lines.extend(closing_lines(answer.aggregation, total_records));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_answer_keeps_domain_order_and_becomes_stream_lines() {
        let body = r#"{"stage":"events","results":{
            "holds":{"data":[{"a":1},{"a":2},{"a":3}],"count":3},
            "history":{"data":[],"count":0}},"aggregation":null}"#;
        let inline: InlineResult = serde_json::from_str(body).unwrap();
        assert_eq!(inline.results[0].0, Domain::Holds);
        let lines = inline_lines(inline, 2).unwrap();
        assert_eq!(
            lines,
            vec![
                StreamLine::DomainStart { domain: Domain::Holds, total: 3 },
                StreamLine::Records {
                    domain: Domain::Holds,
                    batch: 0,
                    count: 2,
                    data: vec![json!({"a":1}), json!({"a":2})]
                },
                StreamLine::Records { domain: Domain::Holds, batch: 1, count: 1, data: vec![json!({"a":3})] },
                StreamLine::DomainEnd { domain: Domain::Holds, count: 3 },
                StreamLine::DomainStart { domain: Domain::History, total: 0 },
                StreamLine::DomainEnd { domain: Domain::History, count: 0 },
                StreamLine::Complete { total_records: 3 },
            ]
        );
    }

    fn page(offset: u64, count: u64, total: u64) -> Page {
        let data = (offset..offset + count).map(|i| json!({ "i": i })).collect();
        Page { domain: Domain::Jobs, data, count, total, offset, limit: 2, aggregation: None }
    }

    #[test]
    fn pages_from_an_offset_count_from_it() {
        let mut pages = DomainPages::new(Domain::Jobs, 1);
        let first = pages.lines(page(1, 2, 4)).unwrap();
        assert_eq!(first[0], StreamLine::DomainStart { domain: Domain::Jobs, total: 4 });
        assert!(matches!(first[1], StreamLine::Records { batch: 0, count: 2, .. }));
        let last = pages.lines(page(3, 1, 4)).unwrap();
        assert!(matches!(last[0], StreamLine::Records { batch: 1, count: 1, .. }));
        assert_eq!(last[1], StreamLine::DomainEnd { domain: Domain::Jobs, count: 3 });
        assert!(pages.is_complete());
    }

    #[test]
    fn a_page_that_is_not_the_next_one_is_refused() {
        let mut pages = DomainPages::resume(Domain::Jobs, 2, 1, 4);
        assert!(pages.lines(page(3, 1, 4)).is_err(), "wrong offset");
        assert!(pages.lines(page(2, 1, 5)).is_err(), "another total");
        assert!(pages.lines(page(2, 0, 4)).is_err(), "empty before the end");
        assert_eq!(pages.lines(page(2, 2, 4)).unwrap().len(), 2, "records and domain_end");
    }
}
