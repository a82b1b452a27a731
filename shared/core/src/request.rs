//! The trace request: parsing and validation of `POST /api/trace/events` bodies.
//!
//! [`TraceRequest::parse`] is the only way in: it enforces the body-size limit, decodes JSON,
//! checks every id, profile and domain, and removes duplicate ids keeping first-seen order.

use std::collections::HashSet;

use serde::Deserialize;

use crate::domain::Domain;
use crate::error::TraceError;
use crate::ids::ContainerId;
use crate::profile::Profile;

/// A validated trace request.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// Container ids, unique, in first-seen order.
    pub ids: Vec<ContainerId>,
    /// The profile.
    pub profile: Profile,
    /// Domains to fetch, unique, in the order given (when none were given: [`Domain::BASE`], or
    /// [`Domain::MSD_DEFAULT`] for the MSD profile).
    pub domains: Vec<Domain>,
    /// Profile parameters, passed through.
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawRequest {
    container_ids: Option<Vec<serde_json::Value>>,
    profile: Option<String>,
    domains: Option<Vec<String>>,
    params: Option<serde_json::Map<String, serde_json::Value>>,
}

impl TraceRequest {
    /// Validates a request body of at most `max_body_bytes`.
    pub fn parse(body: &[u8], max_body_bytes: usize) -> Result<Self, TraceError> {
        if body.len() > max_body_bytes {
            return Err(TraceError::PayloadTooLarge { bytes: body.len(), limit: max_body_bytes });
        }
        let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                TraceError::InvalidRequest(e.to_string())
            } else {
                TraceError::InvalidJson(e.to_string())
            }
        })?;
        let raw_ids = raw
            .container_ids
            .ok_or_else(|| TraceError::InvalidRequest("missing field `container_ids`".to_owned()))?;
        if raw_ids.is_empty() {
            return Err(TraceError::EmptyContainerIds);
        }
        let mut seen = HashSet::with_capacity(raw_ids.len());
        let mut ids = Vec::with_capacity(raw_ids.len());
        for (index, value) in raw_ids.into_iter().enumerate() {
            let serde_json::Value::String(text) = value else {
                return Err(TraceError::InvalidContainerId { index, reason: "not a string".to_owned() });
            };
            let id = ContainerId::parse(text)
                .map_err(|e| TraceError::InvalidContainerId { index, reason: e.to_string() })?;
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        let profile = match raw.profile.as_deref() {
            None | Some("") => Profile::QueryTool,
            Some(p) => p.parse()?,
        };
        // No domains: the five tables, or for MSD the dashboard's backward default.
        let default_domains =
            || if profile.is_msd() { Domain::MSD_DEFAULT.to_vec() } else { Domain::BASE.to_vec() };
        let domains = match raw.domains {
            None => default_domains(),
            Some(names) if names.is_empty() => default_domains(),
            Some(names) => {
                let mut domains = Vec::with_capacity(names.len());
                for name in names {
                    let d: Domain = name
                        .parse()
                        .map_err(|_| TraceError::UnknownDomain(name.chars().take(64).collect()))?;
                    if !domains.contains(&d) {
                        domains.push(d);
                    }
                }
                domains
            }
        };
        Ok(TraceRequest { ids, profile, domains, params: raw.params.unwrap_or_default() })
    }

    /// Number of unique ids: the `cid_count` of admission and job metadata.
    pub fn cid_count(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<TraceRequest, TraceError> {
        TraceRequest::parse(body.as_bytes(), 1 << 20)
    }

    #[test]
    fn defaults_and_dedup() {
        let r = parse(r#"{"container_ids":["B","A","B","C","A"]}"#).unwrap();
        let ids: Vec<_> = r.ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(ids, ["B", "A", "C"]);
        assert_eq!(r.cid_count(), 3);
        assert_eq!(r.profile, Profile::QueryTool);
        assert_eq!(r.domains, Domain::BASE.to_vec());
    }

    #[test]
    fn an_msd_request_without_domains_traces_backward() {
        for body in [
            r#"{"container_ids":["A"],"profile":"msd"}"#,
            r#"{"container_ids":["A"],"profile":"mid_section_defect","domains":[]}"#,
        ] {
            assert_eq!(parse(body).unwrap().domains, [Domain::UpstreamHistory, Domain::Materials]);
        }
        let r = parse(r#"{"container_ids":["A"],"profile":"query_tool_reverse","domains":[]}"#).unwrap();
        assert_eq!(r.domains, Domain::BASE.to_vec());
        let r = parse(
            r#"{"container_ids":["A"],"profile":"msd","domains":["upstream_history","downstream_rejects"]}"#,
        )
        .unwrap();
        assert_eq!(r.domains, [Domain::UpstreamHistory, Domain::DownstreamRejects]);
    }

    #[test]
    fn profiles_and_domains() {
        let r = parse(r#"{"container_ids":["A"],"profile":"msd","domains":["rejects","history","rejects"]}"#)
            .unwrap();
        assert_eq!(r.profile, Profile::MidSectionDefect);
        assert_eq!(r.domains, vec![Domain::Rejects, Domain::History]);
        let r = parse(r#"{"container_ids":["A"],"profile":"mid_section_defect","params":{"x":1}}"#).unwrap();
        assert!(r.profile.is_msd());
        assert_eq!(r.params["x"], 1);
    }

    #[test]
    fn each_error_has_its_code() {
        let code = |body: &str| parse(body).unwrap_err().code();
        assert_eq!(code("{"), "INVALID_JSON");
        assert_eq!(code("[]"), "INVALID_REQUEST");
        assert_eq!(code("{}"), "INVALID_REQUEST");
        assert_eq!(code(r#"{"container_ids":"A"}"#), "INVALID_REQUEST");
        assert_eq!(code(r#"{"container_ids":[]}"#), "EMPTY_CONTAINER_IDS");
        assert_eq!(code(r#"{"container_ids":["A",""]}"#), "INVALID_CONTAINER_ID");
        assert_eq!(code(r#"{"container_ids":["A",7]}"#), "INVALID_CONTAINER_ID");
        assert_eq!(code(r#"{"container_ids":["A"],"profile":"nope"}"#), "UNKNOWN_PROFILE");
        assert_eq!(code(r#"{"container_ids":["A"],"domains":["history","x"]}"#), "UNKNOWN_DOMAIN");
        let big = format!(r#"{{"container_ids":["{}"]}}"#, "A".repeat(100));
        assert_eq!(TraceRequest::parse(big.as_bytes(), 50).unwrap_err().code(), "PAYLOAD_TOO_LARGE");
    }

    #[test]
    fn bad_id_reports_its_position() {
        match parse(r#"{"container_ids":["A","B","c d"]}"#).unwrap_err() {
            TraceError::InvalidContainerId { index, .. } => assert_eq!(index, 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
