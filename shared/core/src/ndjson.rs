//! The NDJSON stream: its line types, in one place.
//!
//! A stream is `meta`, then per domain `domain_start`, `records`…, `domain_end`, then `aggregation`
//! (MSD only), optional `warning`, and `complete` — or an `error` line where it stops early.
//! Field names are the existing dashboard client's; keep them exactly.
//!
//! `records` lines are written from stored chunk bytes without parsing them
//! ([`write_records_line`]); [`StreamLine`] is the typed form for readers.

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::ids::JobId;
use crate::profile::Profile;

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamLine {
    /// First line.
    Meta {
        /// The job.
        job_id: JobId,
        /// Its profile.
        profile: Profile,
        /// Domains in stream order.
        domains: Vec<Domain>,
    },
    /// A domain begins.
    DomainStart {
        /// The domain.
        domain: Domain,
        /// Records that will follow for it.
        total: u64,
    },
    /// One stored chunk of records.
    Records {
        /// The domain.
        domain: Domain,
        /// Chunk number within the domain, from 0.
        batch: u64,
        /// Records in `data`.
        count: u64,
        /// The records.
        data: Vec<serde_json::Value>,
    },
    /// A domain ends.
    DomainEnd {
        /// The domain.
        domain: Domain,
        /// Records sent for it.
        count: u64,
    },
    /// The MSD aggregation.
    Aggregation {
        /// Its figures.
        data: serde_json::Value,
    },
    /// Something went partly wrong (e.g. some domains failed).
    Warning {
        /// Stable code.
        code: String,
        /// Domains without a result.
        failed_domains: Vec<Domain>,
    },
    /// The stream stops early.
    Error {
        /// Stable code.
        code: String,
        /// Detail.
        message: String,
    },
    /// Last line.
    Complete {
        /// Records over all domains.
        total_records: u64,
    },
}

impl StreamLine {
    /// Appends the line as JSON plus `\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Serialising these plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// Appends a `records` line whose `data` is the NDJSON `chunk` (one record per line), without
/// parsing the records. Returns the number of records.
pub fn write_records_line(out: &mut Vec<u8>, domain: Domain, batch: u64, chunk: &[u8]) -> u64 {
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    let count = if body.is_empty() { 0 } else { body.iter().filter(|b| **b == b'\n').count() as u64 + 1 };
    out.reserve(body.len() + 96);
    out.extend_from_slice(b"{\"type\":\"records\",\"domain\":\"");
    out.extend_from_slice(domain.as_str().as_bytes());
    out.extend_from_slice(format!("\",\"batch\":{batch},\"count\":{count},\"data\":[").as_bytes());
    // Record lines never contain a raw newline (JSON escapes it), so newlines are record separators.
    out.extend(body.iter().map(|&b| if b == b'\n' { b',' } else { b }));
    out.extend_from_slice(b"]}\n");
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_line_from_raw_chunk_parses_as_typed_line() {
        let mut out = Vec::new();
        let n = write_records_line(&mut out, Domain::Holds, 3, b"{\"a\":\"x\\ny\"}\n{\"a\":2}\n");
        assert_eq!(n, 2);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let line: StreamLine = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            StreamLine::Records {
                domain: Domain::Holds,
                batch: 3,
                count: 2,
                data: vec![serde_json::json!({"a":"x\ny"}), serde_json::json!({"a":2})],
            }
        );
    }

    #[test]
    fn empty_chunk() {
        let mut out = Vec::new();
        assert_eq!(write_records_line(&mut out, Domain::Jobs, 0, b""), 0);
        let line: StreamLine = serde_json::from_slice(&out).unwrap();
        assert!(matches!(line, StreamLine::Records { count: 0, .. }));
    }

    #[test]
    fn line_shapes_are_the_client_contract() {
        let cases = [
            (
                StreamLine::DomainStart { domain: Domain::History, total: 7 },
                r#"{"type":"domain_start","domain":"history","total":7}"#,
            ),
            (
                StreamLine::DomainEnd { domain: Domain::History, count: 7 },
                r#"{"type":"domain_end","domain":"history","count":7}"#,
            ),
            (StreamLine::Complete { total_records: 9 }, r#"{"type":"complete","total_records":9}"#),
            (
                StreamLine::Warning { code: "PARTIAL".into(), failed_domains: vec![Domain::Jobs] },
                r#"{"type":"warning","code":"PARTIAL","failed_domains":["jobs"]}"#,
            ),
            (
                StreamLine::Error { code: "X".into(), message: "m".into() },
                r#"{"type":"error","code":"X","message":"m"}"#,
            ),
        ];
        for (line, text) in cases {
            let mut out = Vec::new();
            line.write_to(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{text}\n"));
        }
    }
}
