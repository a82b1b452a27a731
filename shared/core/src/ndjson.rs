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
    write_records_prefix(out, domain, batch, count);
    // Record lines never contain a raw newline (JSON escapes it), so newlines are record separators.
    out.extend(body.iter().map(|&b| if b == b'\n' { b',' } else { b }));
    out.extend_from_slice(RECORDS_SUFFIX);
    count
}

const RECORDS_SUFFIX: &[u8] = b"]}\n";

fn write_records_prefix(out: &mut Vec<u8>, domain: Domain, batch: u64, count: u64) {
    out.extend_from_slice(b"{\"type\":\"records\",\"domain\":\"");
    out.extend_from_slice(domain.as_str().as_bytes());
    out.extend_from_slice(b"\",\"batch\":");
    out.extend_from_slice(itoa::Buffer::new().format(batch).as_bytes());
    out.extend_from_slice(b",\"count\":");
    out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
    out.extend_from_slice(b",\"data\":[");
}

/// The one rule for how a stored chunk becomes `records` lines: lines of at most `batch_size`
/// records (`TRACE_STREAM_BATCH_SIZE`), in order; an empty chunk is one empty line. The stream route and
/// the client reading chunk URLs both follow it, so both give the same lines whatever the chunks' size.
pub fn chunk_lines(records: u64, batch_size: u64) -> u64 {
    records.div_ceil(batch_size.max(1)).max(1)
}

/// Appends the `records` lines of one stored chunk (its NDJSON, one record per line), numbered from
/// `first_batch`, split by [`chunk_lines`]. Returns (records, lines).
pub fn write_records_lines(
    out: &mut Vec<u8>,
    domain: Domain,
    first_batch: u64,
    chunk: &[u8],
    batch_size: u64,
) -> (u64, u64) {
    let batch_size = usize::try_from(batch_size.max(1)).unwrap_or(usize::MAX);
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    if body.is_empty() {
        write_records_line(out, domain, first_batch, body);
        return (0, 1);
    }
    let (mut records, mut lines, mut start, mut in_line) = (0u64, 0u64, 0usize, 0usize);
    // Record boundaries: every newline, and the end of the body.
    let ends = newline_positions(body).chain(std::iter::once(body.len()));
    for end in ends {
        in_line += 1;
        records += 1;
        if in_line == batch_size || end == body.len() {
            write_records_line(out, domain, first_batch.saturating_add(lines), &body[start..end]);
            lines += 1;
            start = end + 1;
            in_line = 0;
        }
    }
    (records, lines)
}

fn newline_positions(body: &[u8]) -> impl Iterator<Item = usize> + '_ {
    body.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i)
}

/// The exact size in bytes of the `records` lines [`write_records_lines`] writes for a chunk of
/// `records` records and `ndjson_bytes` bytes of NDJSON (newline-terminated records), computed from the
/// manifest alone: how the stream knows its size before its first byte.
pub fn records_lines_len(
    domain: Domain,
    first_batch: u64,
    records: u64,
    ndjson_bytes: u64,
    batch_size: u64,
) -> u64 {
    let lines = chunk_lines(records, batch_size);
    let batch_size = batch_size.max(1);
    let fixed = |batch: u64, count: u64| {
        let mut prefix = Vec::with_capacity(64);
        write_records_prefix(&mut prefix, domain, batch, count);
        (prefix.len() + RECORDS_SUFFIX.len()) as u64
    };
    let mut total = 0;
    for line in 0..lines {
        let count = if records == 0 { 0 } else { batch_size.min(records - line * batch_size) };
        total += fixed(first_batch.saturating_add(line), count);
    }
    // The records' bytes: each record's newline becomes a comma, except the last of each line.
    total + ndjson_bytes.saturating_sub(if records == 0 { 0 } else { lines })
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
    fn chunks_split_into_lines_of_the_batch_size_and_their_size_is_known_up_front() {
        let chunk: Vec<u8> =
            (0..7).flat_map(|i| format!("{{\"n\":{i},\"s\":\"a\\nb\"}}\n").into_bytes()).collect();
        for batch_size in [1u64, 2, 3, 7, 8, 5000] {
            let mut out = Vec::new();
            let (records, lines) = write_records_lines(&mut out, Domain::Rejects, 4, &chunk, batch_size);
            assert_eq!((records, lines), (7, chunk_lines(7, batch_size)), "batch size {batch_size}");
            assert_eq!(
                out.len() as u64,
                records_lines_len(Domain::Rejects, 4, 7, chunk.len() as u64, batch_size)
            );
            let parsed: Vec<StreamLine> = out
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert_eq!(parsed.len() as u64, lines);
            let mut n = 0;
            for (k, line) in parsed.iter().enumerate() {
                let StreamLine::Records { batch, count, data, .. } = line else { panic!("{line:?}") };
                assert_eq!(*batch, 4 + k as u64);
                assert!(*count <= batch_size && *count == data.len() as u64);
                for record in data {
                    assert_eq!(record["n"], n);
                    n += 1;
                }
            }
            assert_eq!(n, 7);
        }
        let mut out = Vec::new();
        assert_eq!(write_records_lines(&mut out, Domain::Jobs, 0, b"", 10), (0, 1));
        assert_eq!(out.len() as u64, records_lines_len(Domain::Jobs, 0, 0, 0, 10));
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
