//! The request and answer bodies of the API, as the client reads them (README, section "API").

use serde::Serialize;
use serde_json::Value;
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

/// The answers of the API: the server's own wire types.
pub use trace_core::api::{
    Accepted, ChunkDomain, ChunkLink, ChunkList, DomainRecords, ErrorBody, InlineResult, JobInfo, JobList,
    Page, ResultPage,
};

/// What submit answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// 200: the result itself.
    Inline(InlineResult),
    /// 202: a job to wait for.
    Accepted(Accepted),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn submit_request_leaves_out_defaults() {
        let r = SubmitRequest { profile: Some(Profile::MidSectionDefect), ..SubmitRequest::new(["A", "B"]) };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"container_ids":["A","B"],"profile":"mid_section_defect"})
        );
    }
}
