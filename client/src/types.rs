//! The request and answer bodies of the API, as the client reads them (README, section "API").

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use trace_core::ndjson::StreamLine;
use trace_core::{Domain, Profile};

/// The body of `POST /api/trace/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SubmitRequest {
    /// Container ids (duplicates are removed by the server, first seen kept).
    pub container_ids: Vec<String>,
    /// The profile (server default `query_tool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The domains, in result order (server default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<Domain>>,
    /// Extra parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Map<String, Value>>,
}

impl SubmitRequest {
    /// A request for `ids` with the server's defaults.
    pub fn new(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        SubmitRequest { container_ids: ids.into_iter().map(Into::into).collect(), ..Default::default() }
    }
}

/// The 202 answer of submit and a job's status: the server's own wire types.
pub use trace_core::api::{Accepted, JobInfo};

/// The records of one domain in an inline answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DomainRecords {
    /// The records.
    pub data: Vec<Value>,
    /// Their number.
    pub count: u64,
}

/// The 200 answer of submit: the whole result inline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InlineResult {
    /// Records per domain, in the answer's order.
    #[serde(deserialize_with = "ordered_results")]
    pub results: Vec<(Domain, DomainRecords)>,
    /// The MSD aggregation (null otherwise).
    #[serde(default)]
    pub aggregation: Option<Value>,
}

impl InlineResult {
    /// The answer as the stream's line sequence (without `meta`, as there is no job): per domain
    /// `domain_start`, `records` lines of at most `batch_size` records, `domain_end`; then
    /// `aggregation` (when present) and `complete`.
    pub fn into_lines(self, batch_size: usize) -> Vec<StreamLine> {
        let batch_size = batch_size.max(1);
        let mut lines = Vec::new();
        let mut total = 0u64;
        for (domain, records) in self.results {
            let count = records.data.len() as u64;
            lines.push(StreamLine::DomainStart { domain, total: count });
            for (batch, data) in records.data.chunks(batch_size).enumerate() {
                lines.push(StreamLine::Records {
                    domain,
                    batch: batch as u64,
                    count: data.len() as u64,
                    data: data.to_vec(),
                });
            }
            lines.push(StreamLine::DomainEnd { domain, count });
            total += count;
        }
        if let Some(data) = self.aggregation.filter(|a| !a.is_null()) {
            lines.push(StreamLine::Aggregation { data });
        }
        lines.push(StreamLine::Complete { total_records: total });
        lines
    }
}

/// Deserialises the `results` object keeping its key order.
fn ordered_results<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Domain, DomainRecords)>, D::Error> {
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(Domain, DomainRecords)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of domain results")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((domain, records)) = map.next_entry::<Domain, DomainRecords>()? {
                out.push((domain, records));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered)
}

/// What submit answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// 200: the result itself.
    Inline(InlineResult),
    /// 202: a job to wait for.
    Accepted(Accepted),
}

/// `GET /api/trace/jobs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobInfo>,
    /// Their number.
    pub count: u64,
}

/// One page of a domain's records (`GET /api/trace/job/{id}/result`).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The domain.
    pub domain: Domain,
    /// The records `offset..offset+count`.
    pub data: Vec<Value>,
    /// Records in `data`.
    pub count: u64,
    /// Records of the domain in all.
    pub total: u64,
    /// First record's position.
    pub offset: u64,
    /// The limit asked for.
    pub limit: u64,
    /// The MSD aggregation (None when null).
    pub aggregation: Option<Value>,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(deserialize_with = "ordered_pages")]
    results: Vec<(Domain, RawDomainPage)>,
    #[serde(default)]
    aggregation: Option<Value>,
}

#[derive(Deserialize)]
struct RawDomainPage {
    data: Vec<Value>,
    count: u64,
    total: u64,
    offset: u64,
    limit: u64,
}

fn ordered_pages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Domain, RawDomainPage)>, D::Error> {
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(Domain, RawDomainPage)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object with one domain page")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<Domain, RawDomainPage>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered)
}

impl Page {
    /// Parses a page body.
    pub fn parse(body: &[u8]) -> Result<Page, String> {
        let raw: RawPage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let mut results = raw.results.into_iter();
        let (domain, page) = results.next().ok_or("the page has no domain")?;
        if results.next().is_some() {
            return Err("the page has more than one domain".into());
        }
        if page.count != page.data.len() as u64 {
            return Err(format!("count {} but {} records", page.count, page.data.len()));
        }
        Ok(Page {
            domain,
            data: page.data,
            count: page.count,
            total: page.total,
            offset: page.offset,
            limit: page.limit,
            aggregation: raw.aggregation.filter(|a| !a.is_null()),
        })
    }
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
        let lines = inline.into_lines(2);
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

    #[test]
    fn page_parses_and_checks_its_count() {
        let page = Page::parse(
            br#"{"stage":"events","results":{"jobs":{"data":[{"x":1}],"count":1,"total":9,"offset":8,"limit":5000}},"aggregation":{"k":1}}"#,
        )
        .unwrap();
        assert_eq!((page.domain, page.count, page.total, page.offset), (Domain::Jobs, 1, 9, 8));
        assert_eq!(page.aggregation, Some(json!({"k":1})));
        assert!(Page::parse(
            br#"{"results":{"jobs":{"data":[],"count":1,"total":9,"offset":8,"limit":5000}},"aggregation":null}"#
        )
        .is_err());
    }

    #[test]
    fn submit_request_leaves_out_defaults() {
        let r = SubmitRequest { profile: Some(Profile::MidSectionDefect), ..SubmitRequest::new(["A", "B"]) };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"container_ids":["A","B"],"profile":"mid_section_defect"})
        );
    }
}
