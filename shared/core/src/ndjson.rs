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

/// A run of a domain's records that starts on a `records` line boundary: what
/// [`LineAligner`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignedBlock {
    /// The number of its first `records` line in the domain.
    pub first_batch: u64,
    /// Its records, one per line (newline-terminated).
    pub ndjson: bytes::Bytes,
    /// How many.
    pub records: u64,
}

/// Re-cuts a domain's chunks, in result order, into blocks of whole `records` lines: a line holds
/// `batch_size` records wherever the chunks' boundaries fall (a job split into shards has a partial
/// chunk at the end of each shard), and only the domain's last line holds fewer. The records of a
/// line not yet complete wait for the next chunk (fewer than `batch_size`); [`LineAligner::finish`]
/// hands out the last. Each block then becomes its lines by [`write_records_lines`]. Chunks whose
/// sizes are multiples of `batch_size` pass through without a copy.
#[derive(Debug)]
pub struct LineAligner {
    batch_size: u64,
    carry: Vec<u8>,
    carry_records: u64,
    emitted: u64,
}

impl LineAligner {
    /// An aligner for lines of `batch_size` records (at least 1).
    pub fn new(batch_size: u64) -> Self {
        LineAligner { batch_size: batch_size.max(1), carry: Vec::new(), carry_records: 0, emitted: 0 }
    }

    /// The block of whole lines the next chunk (`ndjson`, `records` newline-terminated records)
    /// completes, records waiting from earlier chunks first; None while no line is complete.
    pub fn push(&mut self, ndjson: bytes::Bytes, records: u64) -> Option<AlignedBlock> {
        let total = self.carry_records.saturating_add(records);
        let whole = total - total % self.batch_size;
        if whole == 0 {
            self.carry.extend_from_slice(&ndjson);
            self.carry_records = total;
            return None;
        }
        // The carry holds fewer than a line, so the block takes at least one record of this chunk.
        let take = whole - self.carry_records;
        let cut = if take >= records {
            ndjson.len()
        } else {
            newline_positions(&ndjson)
                .nth(usize::try_from(take - 1).unwrap_or(usize::MAX))
                .map_or(ndjson.len(), |i| i + 1)
        };
        let block = if self.carry.is_empty() {
            ndjson.slice(..cut)
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(&ndjson[..cut]);
            bytes::Bytes::from(joined)
        };
        self.carry = ndjson[cut..].to_vec();
        self.carry_records = records.saturating_sub(take);
        let first_batch = self.emitted / self.batch_size;
        self.emitted += whole;
        Some(AlignedBlock { first_batch, ndjson: block, records: whole })
    }

    /// The domain's last, partial line's records, if any.
    pub fn finish(&mut self) -> Option<AlignedBlock> {
        if self.carry_records == 0 {
            return None;
        }
        let block = AlignedBlock {
            first_batch: self.emitted / self.batch_size,
            ndjson: bytes::Bytes::from(std::mem::take(&mut self.carry)),
            records: self.carry_records,
        };
        self.emitted += self.carry_records;
        self.carry_records = 0;
        Some(block)
    }
}

/// The exact size in bytes of the `records` lines of a whole domain of `records` records and
/// `ndjson_bytes` bytes of NDJSON, as [`LineAligner`] and [`write_records_lines`] write them (none for
/// an empty domain).
pub fn domain_lines_len(domain: Domain, records: u64, ndjson_bytes: u64, batch_size: u64) -> u64 {
    if records == 0 {
        return 0;
    }
    records_lines_len(domain, 0, records, ndjson_bytes, batch_size)
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

    /// The lines of a domain's records cut into chunks of `sizes`, through a [`LineAligner`].
    fn aligned_lines(records: &[String], sizes: &[usize], batch_size: u64) -> Vec<u8> {
        let mut aligner = LineAligner::new(batch_size);
        let mut out = Vec::new();
        let mut at = 0;
        for &size in sizes {
            let chunk: String = records[at..at + size].iter().map(|r| format!("{r}\n")).collect();
            at += size;
            if let Some(b) = aligner.push(bytes::Bytes::from(chunk), size as u64) {
                write_records_lines(&mut out, Domain::History, b.first_batch, &b.ndjson, batch_size);
            }
        }
        if let Some(b) = aligner.finish() {
            write_records_lines(&mut out, Domain::History, b.first_batch, &b.ndjson, batch_size);
        }
        out
    }

    #[test]
    fn lines_do_not_depend_on_where_the_chunks_end() {
        let records: Vec<String> = (0..103).map(|i| format!("{{\"n\":{i}}}")).collect();
        for batch_size in [1u64, 5, 10, 25, 200] {
            let whole = aligned_lines(&records, &[103], batch_size);
            let total = (records.iter().map(|r| r.len() + 1).sum::<usize>()) as u64;
            assert_eq!(whole.len() as u64, domain_lines_len(Domain::History, 103, total, batch_size));
            for sizes in
                [vec![50, 53], vec![25, 25, 25, 28], vec![1; 103], vec![7, 0, 96], vec![100, 3], vec![3, 100]]
            {
                assert_eq!(
                    aligned_lines(&records, &sizes, batch_size),
                    whole,
                    "chunks {sizes:?}, lines of {batch_size}"
                );
            }
        }
        assert_eq!(domain_lines_len(Domain::History, 0, 0, 5), 0);
    }

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
