//! The trace request: parsing and validation of `POST /api/trace/events` bodies.
//!
//! [`TraceRequest::parse`] is the only way in: it enforces the body-size limit, decodes JSON,
//! checks every id, profile and domain, and removes duplicate ids keeping first-seen order. Ids follow
//! the dashboard's rules: trimmed; empty and non-string entries dropped; any printable text of at most
//! 64 characters accepted; a request left with no id is refused.

use std::fmt;

use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::domain::Domain;
use crate::error::TraceError;
use crate::ids::{ContainerId, InvalidContainerId};
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

/// The body as sent. Unknown fields (the dashboard also sends `cache_key`, `seed_container_ids`,
/// `lineage`, …) are ignored.
#[derive(Deserialize)]
struct RawRequest {
    container_ids: Option<RawIds>,
    profile: Option<Box<serde_json::value::RawValue>>,
    domains: Option<RawDomains>,
    params: Option<Box<serde_json::value::RawValue>>,
}

/// Largest `params` object accepted, in bytes of JSON (the dashboard's are a few hundred): parsed into
/// JSON values only within this bound, so a hostile one cannot cost many times its size.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;

/// `container_ids` read element by element, without holding the array as JSON values: strings are
/// trimmed and checked, empty strings and non-strings are dropped (as the dashboard's original service
/// did), duplicates are dropped keeping first-seen order, and the first invalid id is kept for the error.
#[derive(Default)]
struct RawIds {
    ids: Vec<ContainerId>,
    first_invalid: Option<(usize, InvalidContainerId)>,
}

impl<'de> Deserialize<'de> for RawIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(RawIdsVisitor)
    }
}

struct RawIdsVisitor;

impl<'de> Visitor<'de> for RawIdsVisitor {
    type Value = RawIds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of container id strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawIds, A::Error> {
        let mut out = RawIds::default();
        // The ids seen, as positions in `out.ids` found by the id's hash: about 6 bytes an id, where a
        // set of copies cost about 60 (and repeats are never stored).
        let mut seen: HashTable<u32> = HashTable::new();
        let state = std::hash::RandomState::new();
        let mut index = 0;
        while let Some(element) = seq.next_element::<Element>()? {
            if let Element::Text(text) = element {
                match ContainerId::parse(&text) {
                    Ok(id) => {
                        let ids = &mut out.ids;
                        let hash = state.hash_one(id.as_str());
                        if seen.find(hash, |at| ids[*at as usize] == id).is_none() {
                            if ids.len() == ids.capacity() {
                                // Growth by a quarter, not doubling: the peak while it moves stays near
                                // twice the ids held, not three times.
                                ids.reserve_exact((ids.len() / 4).max(64));
                            }
                            seen.insert_unique(hash, ids.len() as u32, |at| {
                                state.hash_one(ids[*at as usize].as_str())
                            });
                            ids.push(id);
                        }
                    }
                    Err(InvalidContainerId::Empty) => {}
                    Err(e) => {
                        out.first_invalid.get_or_insert((index, e));
                    }
                }
            }
            index += 1;
        }
        Ok(out)
    }
}

/// `domains` read element by element: each name becomes a [`Domain`] at once (repeats dropped), and
/// the first unknown name ends the reading (its error is the request's), so a long hostile list costs
/// nothing.
#[derive(Default)]
struct RawDomains {
    domains: Vec<Domain>,
    unknown: Option<String>,
}

impl<'de> Deserialize<'de> for RawDomains {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(RawDomainsVisitor)
    }
}

struct RawDomainsVisitor;

impl<'de> Visitor<'de> for RawDomainsVisitor {
    type Value = RawDomains;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of domain names")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDomains, A::Error> {
        let mut out = RawDomains::default();
        while out.unknown.is_none() {
            let Some(name) = seq.next_element::<std::borrow::Cow<'de, str>>()? else { break };
            match name.parse::<Domain>() {
                Ok(d) if !out.domains.contains(&d) => out.domains.push(d),
                Ok(_) => {}
                Err(_) => out.unknown = Some(name.chars().take(64).collect()),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// One element of `container_ids`: its text, or anything else (skipped without being kept).
enum Element {
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Element, E> {
        Ok(Element::Text(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Element, E> {
        Ok(Element::Text(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Element::Other)
    }
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
        if let Some((index, e)) = raw_ids.first_invalid {
            return Err(TraceError::InvalidContainerId { index, reason: e.to_string() });
        }
        if raw_ids.ids.is_empty() {
            return Err(TraceError::EmptyContainerIds);
        }
        let ids = raw_ids.ids;
        let profile: Option<String> = match raw.profile {
            None => None,
            Some(p) if p.get().len() > 256 => {
                return Err(TraceError::InvalidRequest("`profile` is longer than 256 bytes".to_owned()))
            }
            Some(p) => serde_json::from_str(p.get())
                .map_err(|e| TraceError::InvalidRequest(format!("profile: {e}")))?,
        };
        let profile = match profile.as_deref() {
            None | Some("") => Profile::QueryTool,
            Some(p) => p.parse()?,
        };
        // No domains: the five tables, or for MSD the dashboard's backward default.
        let default_domains =
            || if profile.is_msd() { Domain::MSD_DEFAULT.to_vec() } else { Domain::BASE.to_vec() };
        let domains = match raw.domains {
            None => default_domains(),
            Some(RawDomains { unknown: Some(name), .. }) => return Err(TraceError::UnknownDomain(name)),
            Some(RawDomains { domains, .. }) if domains.is_empty() => default_domains(),
            Some(RawDomains { domains, .. }) => domains,
        };
        let params = match raw.params {
            None => serde_json::Map::new(),
            Some(p) if p.get().len() > MAX_PARAMS_BYTES => {
                return Err(TraceError::InvalidRequest(format!(
                    "`params` is larger than {MAX_PARAMS_BYTES} bytes"
                )))
            }
            Some(p) => {
                match serde_json::from_str::<Option<serde_json::Map<String, serde_json::Value>>>(p.get()) {
                    Ok(map) => map.unwrap_or_default(),
                    Err(e) => return Err(TraceError::InvalidRequest(format!("params: {e}"))),
                }
            }
        };
        Ok(TraceRequest { ids, profile, domains, params })
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
        assert_eq!(code(r#"{"container_ids":["", "  ", 7, null]}"#), "EMPTY_CONTAINER_IDS");
        assert_eq!(code(r#"{"container_ids":["A","B\u0000"]}"#), "INVALID_CONTAINER_ID");
        assert_eq!(code(r#"{"container_ids":["A","x\ty"]}"#), "INVALID_CONTAINER_ID");
        assert_eq!(code(r#"{"container_ids":["A"],"profile":"nope"}"#), "UNKNOWN_PROFILE");
        assert_eq!(code(r#"{"container_ids":["A"],"domains":["history","x"]}"#), "UNKNOWN_DOMAIN");
        let big = format!(r#"{{"container_ids":["{}"]}}"#, "A".repeat(100));
        assert_eq!(TraceRequest::parse(big.as_bytes(), 50).unwrap_err().code(), "PAYLOAD_TOO_LARGE");
    }

    #[test]
    fn bad_id_reports_its_position() {
        let long = "x".repeat(65);
        let body = format!(r#"{{"container_ids":["A",7,"B","{long}","C\u0001"]}}"#);
        match parse(&body).unwrap_err() {
            TraceError::InvalidContainerId { index, .. } => assert_eq!(index, 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_dashboard_request_shape_is_accepted() {
        let r = parse(
            r#"{"profile":"query_tool","container_ids":["  A-1 ", "", 7, null, {"x":[1]}, "lot 7", "A-1", "批次ä"],
                "domains":["holds"],"cache_key":"k","seed_container_ids":["A-1"],
                "lineage":{"ancestors":{},"children_map":{},"seed_roots":[]},"some_future_field":true}"#,
        )
        .unwrap();
        let ids: Vec<_> = r.ids.iter().map(|i| i.as_str()).collect();
        assert_eq!(ids, ["A-1", "lot 7", "批次ä"], "trimmed, non-strings and empties dropped, deduplicated");
        assert_eq!(r.domains, vec![Domain::Holds]);
    }
}
