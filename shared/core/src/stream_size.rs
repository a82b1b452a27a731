//! The size of a job's NDJSON stream, known from its manifest alone, before the first byte: exact for
//! the plain stream ([`plain_len`]), estimated for its gzip form ([`gzip_estimate`]). The stream route
//! decides with them whether a result fits Lambda's cap on a streamed answer.

use crate::encoding::ChunkEncoding;
use crate::layout::{ChunkEntry, DomainManifest, Manifest};
use crate::ndjson::{chunk_lines, domain_lines_len, records_lines_len, StreamLine};

/// gzip of the stream (zlib-rs, fast level, a full flush after each piece) against the stored gzip chunks
/// (libdeflate level 1, one member per chunk) holding the same records: the stream's compressed
/// `records` lines are at most this many times the chunks' `stored_bytes`, as a fraction
/// (numerator, denominator). Measured at 1.41–1.43 (stream 5.2× smaller than the NDJSON, chunks 7.4×):
/// 1.411–1.431 on the embedded dataset (chunks of 120 to 25,000 records, lines of 50 to 5,000;
/// `results::tests`), 1.431 on the seeded database (`tests/it/lambda_limits.rs`). 1.6 leaves 12% above
/// the highest measure. An estimate too low is caught while streaming (the stream then ends with an
/// `error` line instead of being cut by Lambda); one too high only refuses a result that might have fit.
pub const GZIP_OVER_STORED: (u64, u64) = (8, 5);

/// Bytes a gzip piece adds besides its compressed data (block header, full flush marker), generously;
/// and the gzip member's header and trailer.
const GZIP_PIECE_OVERHEAD: u64 = 16;
const GZIP_FRAME: u64 = 18;

fn line_len(line: &StreamLine) -> u64 {
    let mut out = Vec::with_capacity(128);
    line.write_to(&mut out);
    out.len() as u64
}

/// The lines of the stream that are not `records` lines, in bytes (the same for every estimate).
fn frame_lines_len(m: &Manifest) -> u64 {
    let domains = m.domains.iter().map(|d| d.domain).collect();
    let mut total = line_len(&StreamLine::Meta { job_id: m.job_id, profile: m.profile, domains });
    for d in &m.domains {
        total += line_len(&StreamLine::DomainStart { domain: d.domain, total: d.records });
        total += line_len(&StreamLine::DomainEnd { domain: d.domain, count: d.records });
    }
    if let Some(data) = &m.aggregation {
        total += line_len(&StreamLine::Aggregation { data: data.clone() });
    }
    total + line_len(&StreamLine::Complete { total_records: m.total_records })
}

/// Each chunk of a domain with the size of its lines were it cut into lines on its own (batch numbers
/// counted as if each chunk began a line): never below its share of the domain's lines, which
/// [`LineAligner`](crate::ndjson::LineAligner) cuts across chunk boundaries — what the gzip
/// estimate, an upper bound, counts.
fn chunk_line_lens(d: &DomainManifest, batch_size: u64) -> impl Iterator<Item = (&ChunkEntry, u64)> + '_ {
    let mut batch = 0;
    d.chunks.iter().map(move |c| {
        let len = records_lines_len(d.domain, batch, c.records, c.bytes, batch_size);
        batch += chunk_lines(c.records, batch_size);
        (c, len)
    })
}

/// The exact size in bytes of the plain NDJSON stream of `m` with `records` lines of at most `batch_size`
/// records: `meta`, per domain `domain_start`, `records`…, `domain_end`, `aggregation` (when the manifest has
/// one), `complete` — what the stream route sends when every chunk reads back.
pub fn plain_len(m: &Manifest, batch_size: u64) -> u64 {
    let records: u64 = m
        .domains
        .iter()
        .map(|d| domain_lines_len(d.domain, d.records, d.chunks.iter().map(|c| c.bytes).sum(), batch_size))
        .sum();
    frame_lines_len(m) + records
}

/// An estimate in bytes of the gzip form of the stream (one gzip member, a piece per line group), that
/// should not be below the real size: a gzip chunk's lines count [`GZIP_OVER_STORED`] times its stored
/// size; a chunk stored otherwise (plain, LZ4: old manifests) counts its plain lines, compressed or not.
pub fn gzip_estimate(m: &Manifest, batch_size: u64) -> u64 {
    let (num, den) = GZIP_OVER_STORED;
    let mut pieces = 2 + 2 * m.domains.len() as u64;
    let mut total = GZIP_FRAME + frame_lines_len(m);
    for d in &m.domains {
        for (chunk, len) in chunk_line_lens(d, batch_size) {
            pieces += 1;
            total += match (chunk.encoding, chunk.stored_bytes) {
                (ChunkEncoding::Gzip, Some(stored)) => (stored * num).div_ceil(den).min(len),
                _ => len,
            };
        }
    }
    total + pieces * GZIP_PIECE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ChunkBuilder;
    use crate::ndjson::{write_records_lines, LineAligner};
    use crate::{Domain, JobId, Profile};

    /// A manifest of `domains` with `records` records each, stored in chunks of `chunk_records`, and the
    /// NDJSON of every chunk.
    fn manifest(records: usize, chunk_records: usize, aggregation: bool) -> (Manifest, Vec<Vec<Vec<u8>>>) {
        let job = JobId::new();
        let mut domains = Vec::new();
        let mut bodies = Vec::new();
        for domain in [Domain::Holds, Domain::Rejects] {
            let mut builder = ChunkBuilder::new(job, domain, 0, chunk_records, ChunkEncoding::Gzip);
            let mut chunks = Vec::new();
            for i in 0..records {
                let record = format!("{{\"id\":\"CID-{i:07}\",\"n\":{i},\"s\":\"a \\\"quoted\\\" text\"}}");
                if let Some(sealed) = builder.push_record(|out| out.extend_from_slice(record.as_bytes())) {
                    chunks.push(sealed);
                }
            }
            chunks.extend(builder.finish());
            bodies.push(chunks.iter().map(|c| c.entry.decode(c.body.clone()).unwrap().to_vec()).collect());
            domains.push(DomainManifest {
                domain,
                records: records as u64,
                chunks: chunks.into_iter().map(|c| c.entry).collect(),
            });
        }
        let aggregation = aggregation.then(|| serde_json::json!({"total": records, "by": {"x": 1}}));
        let m = Manifest::new(job, Profile::QueryTool, domains, aggregation, chrono::Utc::now());
        (m, bodies)
    }

    /// The stream as the route writes it.
    fn written(m: &Manifest, bodies: &[Vec<Vec<u8>>], batch_size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let domains = m.domains.iter().map(|d| d.domain).collect();
        StreamLine::Meta { job_id: m.job_id, profile: m.profile, domains }.write_to(&mut out);
        for (d, chunks) in m.domains.iter().zip(bodies) {
            StreamLine::DomainStart { domain: d.domain, total: d.records }.write_to(&mut out);
            let mut aligner = LineAligner::new(batch_size);
            let mut blocks: Vec<_> = chunks
                .iter()
                .zip(&d.chunks)
                .filter_map(|(body, c)| aligner.push(bytes::Bytes::from(body.clone()), c.records))
                .collect();
            blocks.extend(aligner.finish());
            for b in blocks {
                write_records_lines(&mut out, d.domain, b.first_batch, &b.ndjson, batch_size);
            }
            StreamLine::DomainEnd { domain: d.domain, count: d.records }.write_to(&mut out);
        }
        if let Some(data) = &m.aggregation {
            StreamLine::Aggregation { data: data.clone() }.write_to(&mut out);
        }
        StreamLine::Complete { total_records: m.total_records }.write_to(&mut out);
        out
    }

    #[test]
    fn the_plain_size_is_the_size_of_the_stream() {
        for (records, chunk_records, aggregation) in
            [(0, 10, false), (1, 10, true), (57, 10, false), (250, 100, true), (250, 37, false)]
        {
            let (m, bodies) = manifest(records, chunk_records, aggregation);
            for batch_size in [1u64, 3, 10, 64, 5000] {
                let stream = written(&m, &bodies, batch_size);
                assert_eq!(
                    plain_len(&m, batch_size),
                    stream.len() as u64,
                    "{records} records, chunks of {chunk_records}, lines of {batch_size}"
                );
                assert!(gzip_estimate(&m, batch_size) <= stream.len() as u64 + 18 + 16 * 64);
            }
        }
    }
}
