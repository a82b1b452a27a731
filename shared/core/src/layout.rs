//! Where a job's data lives in the object store, and the result's manifest.
//!
//! ```text
//! jobs/{job_id}/input.json                                  the job's container ids
//! jobs/{job_id}/result/{domain}/{shard:04}-{chunk:06}-a{attempt:03}.ndjson[.gz|.lz4]
//!                                                           result chunks, one record per line
//! jobs/{job_id}/checkpoint/{shard:04}.json                  a running shard's progress (`checkpoint`)
//! jobs/{job_id}/shards/{shard:04}.json                      a finished shard's chunks (a job split into shards)
//! jobs/{job_id}/count.json                                 the first domain's records, counted first (live tail)
//! jobs/{job_id}/manifest.json                               written last: its presence = result complete
//! ```
//! Chunk keys sort in result order (shard, then chunk) so a job split into shards run by several
//! workers lays its chunks out side by side. A chunk's key names the attempt that wrote it: a run taken
//! over (a zombie that wakes later) writes only keys of its own attempt, which its successor's manifest
//! never lists, so it cannot change a result it no longer owns (its strays are swept when the manifest
//! is written, and expire with the job). Each chunk holds up to `TRACE_CHUNK_RECORDS` records,
//! stored gzip-compressed, LZ4-compressed or plain (`TRACE_CHUNK_ENCODING`; the manifest records which, and
//! the size and CRC-32 of the NDJSON itself, so a reader checks what it finally serves).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::encoding::ChunkEncoding;
use crate::ids::{ContainerId, JobId};
use crate::profile::Profile;

/// The input ids object.
pub fn input_key(job: &JobId) -> String {
    format!("jobs/{job}/input.json")
}

/// The record of how a job ended when it did not finish (failed or cancelled): its metadata.
pub fn outcome_key(job: &JobId) -> String {
    format!("jobs/{job}/outcome.json")
}

/// The folder of a job's checkpoints (one per shard, while it runs).
pub fn checkpoint_prefix(job: &JobId) -> String {
    format!("jobs/{job}/checkpoint/")
}

/// One shard's checkpoint.
pub fn checkpoint_key(job: &JobId, shard: u32) -> String {
    format!("{}{shard:04}.json", checkpoint_prefix(job))
}

/// The folder of a sharded job's finished shards.
pub fn shards_prefix(job: &JobId) -> String {
    format!("jobs/{job}/shards/")
}

/// The record of one finished shard ([`ShardDone`]).
pub fn shard_done_key(job: &JobId, shard: u32) -> String {
    format!("{}{shard:04}.json", shards_prefix(job))
}

/// What a finished shard of a job split into shards leaves for the reduce: its chunks per domain (in
/// result order) and its part of the MSD aggregation. Written create-only, before the shard is marked
/// finished; the reduce writes the job's manifest from all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardDone {
    /// The shard.
    pub shard: u32,
    /// Its chunks, per domain in result order.
    pub domains: Vec<DomainManifest>,
    /// Its part of the MSD aggregation (mergeable sums), for the MSD profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<crate::aggregation::MsdPartial>,
}

/// The job's [`JobCount`].
pub fn count_key(job: &JobId) -> String {
    format!("jobs/{job}/count.json")
}

/// The records the job's first domain (in result order) will have, counted by the source beside the
/// reading of the job's first shard (again by a later attempt of it). A followed stream's first `domain_start` carries it long
/// before the records are all read; every later domain starts after the shards holding it have ended,
/// when their records say its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    /// The domain counted.
    pub domain: Domain,
    /// Its records, every shard.
    pub records: u64,
}

/// The manifest object.
pub fn manifest_key(job: &JobId) -> String {
    format!("jobs/{job}/manifest.json")
}

/// The folder of all of a job's chunks (every domain, every shard).
pub fn result_prefix(job: &JobId) -> String {
    format!("jobs/{job}/result/")
}

/// The folder of one domain's chunks.
pub fn domain_prefix(job: &JobId, domain: Domain) -> String {
    format!("{}{domain}/", result_prefix(job))
}

/// Where one chunk lives: its place in the result and the attempt that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSlot {
    /// The shard.
    pub shard: u32,
    /// The chunk's number within its shard and domain.
    pub chunk: u32,
    /// The job attempt that wrote it.
    pub attempt: u32,
}

/// One chunk's key.
pub fn chunk_key(job: &JobId, domain: Domain, slot: ChunkSlot, encoding: ChunkEncoding) -> String {
    let ChunkSlot { shard, chunk, attempt } = slot;
    format!("{}{shard:04}-{chunk:06}-a{attempt:03}{}", domain_prefix(job, domain), encoding.extension())
}

/// The slot a chunk key names (`…/{shard:04}-{chunk:06}-a{attempt:03}.ndjson…`).
pub fn chunk_slot(key: &str) -> Option<ChunkSlot> {
    let name = key.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    let mut parts = stem.split('-');
    let shard = parts.next()?.parse().ok()?;
    let chunk = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.strip_prefix('a')?.parse().ok()?;
    parts.next().is_none().then_some(ChunkSlot { shard, chunk, attempt })
}

/// The chunk number of a chunk key.
pub fn chunk_number(key: &str) -> Option<u32> {
    chunk_slot(key).map(|s| s.chunk)
}

/// Why a stored chunk cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("result chunk {key} does not match its manifest entry: {reason}")]
pub struct ChunkCorrupt {
    /// The chunk's key.
    pub key: String,
    /// What did not match.
    pub reason: String,
}

/// The body of `input.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInput {
    /// The job.
    pub job_id: JobId,
    /// The profile.
    pub profile: Profile,
    /// Domains, in result order.
    pub domains: Vec<Domain>,
    /// Profile parameters.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Unique container ids, in request order.
    pub container_ids: Vec<ContainerId>,
    /// The job's metadata as submit created it (queued): what rebuilds the job when the job store
    /// lost it. Absent from inputs written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::job::JobMeta>,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Object key.
    pub key: String,
    /// Records (lines) in it.
    pub records: u64,
    /// Size of its NDJSON in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of its NDJSON bytes.
    pub crc32: u32,
    /// How the object is encoded (absent: plain).
    #[serde(default, skip_serializing_if = "ChunkEncoding::is_plain")]
    pub encoding: ChunkEncoding,
    /// Size of the stored object when it is encoded (absent: the same as `bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
}

impl ChunkEntry {
    /// The chunk's NDJSON from the stored object `stored`, checked against this entry (size, decoding,
    /// CRC-32 of the NDJSON).
    pub fn decode(&self, stored: bytes::Bytes) -> Result<bytes::Bytes, ChunkCorrupt> {
        let corrupt = |reason: String| ChunkCorrupt { key: self.key.clone(), reason };
        let expected_stored = self.stored_bytes.unwrap_or(self.bytes);
        if stored.len() as u64 != expected_stored {
            return Err(corrupt(format!("{} bytes stored, {expected_stored} expected", stored.len())));
        }
        let ndjson = match self.encoding {
            ChunkEncoding::Plain => stored,
            ChunkEncoding::Lz4 => {
                let size = usize::try_from(self.bytes).map_err(|_| corrupt("size out of range".into()))?;
                let out = lz4_flex::block::decompress(&stored, size)
                    .map_err(|e| corrupt(format!("LZ4 block: {e}")))?;
                bytes::Bytes::from(out)
            }
            ChunkEncoding::Gzip => {
                let size = usize::try_from(self.bytes).map_err(|_| corrupt("size out of range".into()))?;
                let mut out = vec![0; size];
                // libdeflate checks the member's own CRC-32 and size too.
                let n = libdeflater::Decompressor::new()
                    .gzip_decompress(&stored, &mut out)
                    .map_err(|e| corrupt(format!("gzip: {e}")))?;
                out.truncate(n);
                bytes::Bytes::from(out)
            }
        };
        if ndjson.len() as u64 != self.bytes || crc32fast::hash(&ndjson) != self.crc32 {
            return Err(corrupt("checksum mismatch".into()));
        }
        Ok(ndjson)
    }
}

/// A stored chunk's NDJSON without its entry (a running shard's chunk, not yet listed), checked as far
/// as its encoding allows: a gzip member by its own CRC-32 and size, plain NDJSON by ending a line.
/// None for an LZ4 block (it does not say its size) or anything that does not decode.
pub fn decode_unlisted(key: &str, stored: bytes::Bytes) -> Option<bytes::Bytes> {
    let ndjson = if key.ends_with(ChunkEncoding::Gzip.extension()) {
        let tail = stored.len().checked_sub(4)?;
        // A member's last 4 bytes: its content's size (mod 2^32; a chunk is far smaller).
        let size = u32::from_le_bytes(stored[tail..].try_into().ok()?) as usize;
        // Deflate expands at most 1,032-fold: a larger claim is a damaged trailer, not a chunk.
        if size > 256 << 20 || size > stored.len().saturating_mul(1032) {
            return None;
        }
        let mut out = vec![0; size];
        let n = libdeflater::Decompressor::new().gzip_decompress(&stored, &mut out).ok()?;
        (n == size).then(|| bytes::Bytes::from(out))?
    } else if key.ends_with(ChunkEncoding::Plain.extension()) {
        stored
    } else {
        return None;
    };
    ndjson.ends_with(b"\n").then_some(ndjson)
}

/// The chunks of one domain, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainManifest {
    /// The domain.
    pub domain: Domain,
    /// Records in all its chunks.
    pub records: u64,
    /// Its chunks, in result order.
    pub chunks: Vec<ChunkEntry>,
}

/// The description of a complete result. Written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job.
    pub job_id: JobId,
    /// Its profile.
    pub profile: Profile,
    /// Per domain, in result order.
    pub domains: Vec<DomainManifest>,
    /// The MSD aggregation, if the profile has one.
    pub aggregation: Option<serde_json::Value>,
    /// Records over all domains.
    pub total_records: u64,
    /// CRC-32 over the chunk checksums in order: one figure that changes if any chunk does.
    pub checksum: u32,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

impl Manifest {
    /// Builds a manifest, computing totals and the overall checksum.
    pub fn new(
        job_id: JobId,
        profile: Profile,
        domains: Vec<DomainManifest>,
        aggregation: Option<serde_json::Value>,
        created_at: DateTime<Utc>,
    ) -> Self {
        let total_records = domains.iter().map(|d| d.records).sum();
        let checksum = overall_checksum(&domains);
        Manifest { job_id, profile, domains, aggregation, total_records, checksum, created_at }
    }

    /// Whether totals and checksum agree with the chunk entries (a torn or edited manifest fails).
    pub fn is_consistent(&self) -> bool {
        self.domains.iter().all(|d| d.records == d.chunks.iter().map(|c| c.records).sum::<u64>())
            && self.total_records == self.domains.iter().map(|d| d.records).sum::<u64>()
            && self.checksum == overall_checksum(&self.domains)
    }

    /// The manifest of one domain.
    pub fn domain(&self, domain: Domain) -> Option<&DomainManifest> {
        self.domains.iter().find(|d| d.domain == domain)
    }
}

fn overall_checksum(domains: &[DomainManifest]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for d in domains {
        h.update(d.domain.as_str().as_bytes());
        for c in &d.chunks {
            h.update(&c.crc32.to_le_bytes());
            h.update(&c.records.to_le_bytes());
        }
    }
    h.finalize()
}

/// A full chunk ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedChunk {
    /// Where it goes, with its counts and checksum.
    pub entry: ChunkEntry,
    /// The object's bytes (encoded as `entry.encoding` says).
    pub body: bytes::Bytes,
}

/// Accumulates one domain's records into chunks of `batch_size` lines.
///
/// Holds at most one open chunk; [`ChunkBuilder::push_record`] hands back the sealed chunk when it fills.
/// With LZ4 the open chunk's buffer is reused from chunk to chunk and only the compressed bytes leave.
#[derive(Debug)]
pub struct ChunkBuilder {
    job: JobId,
    domain: Domain,
    shard: u32,
    attempt: u32,
    batch_size: usize,
    encoding: ChunkEncoding,
    next_chunk: u32,
    buf: Vec<u8>,
    records: usize,
}

impl ChunkBuilder {
    /// A builder for one domain of one shard (attempt 1: see [`ChunkBuilder::by_attempt`]).
    pub fn new(job: JobId, domain: Domain, shard: u32, batch_size: usize, encoding: ChunkEncoding) -> Self {
        ChunkBuilder {
            job,
            domain,
            shard,
            attempt: 1,
            batch_size: batch_size.max(1),
            encoding,
            next_chunk: 0,
            buf: Vec::new(),
            records: 0,
        }
    }

    /// The builder writing the chunks of job attempt `attempt` (named in their keys).
    pub fn by_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The builder numbering its chunks from `first` (a run resumed after `first` stored chunks).
    pub fn numbered_from(mut self, first: u32) -> Self {
        self.next_chunk = first;
        self
    }

    /// The builder with `ndjson` (`records` lines) already in its open chunk (a run resumed from a
    /// checkpoint).
    pub fn with_open(mut self, ndjson: Vec<u8>, records: usize) -> Self {
        self.buf = ndjson;
        self.records = records;
        self
    }

    /// The open chunk: its NDJSON and its number of records.
    pub fn open(&self) -> (&[u8], usize) {
        (&self.buf, self.records)
    }

    /// The number the chunk open now gets when it is sealed.
    pub fn next_chunk(&self) -> u32 {
        self.next_chunk
    }

    /// Appends one record: `write` must append exactly one JSON value (no newline).
    pub fn push_record(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Option<SealedChunk> {
        write(&mut self.buf);
        self.buf.push(b'\n');
        self.records += 1;
        (self.records >= self.batch_size).then(|| self.seal())
    }

    /// Seals what is open, if anything (at the end of the domain).
    pub fn finish(&mut self) -> Option<SealedChunk> {
        (self.records > 0).then(|| self.seal())
    }

    fn seal(&mut self) -> SealedChunk {
        let (bytes, crc32) = (self.buf.len() as u64, crc32fast::hash(&self.buf));
        let (body, stored_bytes) = match self.encoding {
            ChunkEncoding::Plain => {
                // The next chunk is usually as large as this one: keep the capacity hint, give the bytes away.
                let capacity = self.buf.len() + self.buf.len() / 8;
                let body = std::mem::replace(&mut self.buf, Vec::with_capacity(capacity));
                (bytes::Bytes::from(body), None)
            }
            ChunkEncoding::Lz4 => {
                // The output starts at the largest possible size; trimmed to the compressed bytes (an
                // in-place shrink) before it waits for its upload. No buffer is kept per builder.
                let mut out = lz4_flex::block::compress(&self.buf);
                out.shrink_to_fit();
                self.buf.clear();
                let n = out.len() as u64;
                (bytes::Bytes::from(out), Some(n))
            }
            ChunkEncoding::Gzip => {
                let out = gzip(&self.buf);
                self.buf.clear();
                let n = out.len() as u64;
                (bytes::Bytes::from(out), Some(n))
            }
        };
        let entry = ChunkEntry {
            key: chunk_key(
                &self.job,
                self.domain,
                ChunkSlot { shard: self.shard, chunk: self.next_chunk, attempt: self.attempt },
                self.encoding,
            ),
            records: self.records as u64,
            bytes,
            crc32,
            encoding: self.encoding,
            stored_bytes,
        };
        self.next_chunk += 1;
        self.records = 0;
        SealedChunk { entry, body }
    }
}

/// A gzip member of `data` at libdeflate's level 1 (the fastest; the level chosen by `trace-bench --only
/// codecs`: level 1 gives 7.6×, level 6 9.5× at a third of the speed).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    gzip_append(data, &mut out);
    out.shrink_to_fit();
    out
}

/// Appends a gzip member of `data` (as [`gzip`]) to `out`, without another buffer; its size.
pub fn gzip_append(data: &[u8], out: &mut Vec<u8>) -> usize {
    // Level 1 by number: libdeflater's `CompressionLvl::fastest()` is level 0, which stores without
    // compressing.
    let level = libdeflater::CompressionLvl::new(1).unwrap_or_default();
    let mut compressor = libdeflater::Compressor::new(level);
    let start = out.len();
    out.resize(start + compressor.gzip_compress_bound(data.len()), 0);
    // The room has the bound's size, so compression cannot run out of it.
    let n = compressor.gzip_compress(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ChunkEncoding = ChunkEncoding::Plain;

    fn slot(shard: u32, chunk: u32, attempt: u32) -> ChunkSlot {
        ChunkSlot { shard, chunk, attempt }
    }

    /// A running shard's chunk is taken only when its own encoding vouches for it whole.
    #[test]
    fn an_unlisted_chunk_is_taken_only_whole() {
        let ndjson = b"{\"a\":1}\n{\"a\":2}\n".repeat(50);
        let gz = bytes::Bytes::from(gzip(&ndjson));
        let key = |e: ChunkEncoding| format!("jobs/x/result/history/0000-000000-a001{}", e.extension());
        let g = ChunkEncoding::Gzip;
        assert_eq!(decode_unlisted(&key(g), gz.clone()).as_deref(), Some(&ndjson[..]));
        assert_eq!(decode_unlisted(&key(g), gz.slice(..gz.len() - 1)), None, "cut short");
        let mut lying = gz.to_vec();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&(200u32 << 20).to_le_bytes());
        assert_eq!(
            decode_unlisted(&key(g), lying.into()),
            None,
            "a trailer claiming 200 MiB of a small member"
        );
        assert_eq!(
            decode_unlisted(&key(P), bytes::Bytes::from_static(b"{}\n")).as_deref(),
            Some(&b"{}\n"[..])
        );
        assert_eq!(decode_unlisted(&key(P), bytes::Bytes::from_static(b"{}\n{")), None, "a torn line");
        assert_eq!(decode_unlisted(&key(ChunkEncoding::Lz4), gz), None, "LZ4 waits for the shard's end");
    }

    #[test]
    fn keys_sort_in_result_order_and_name_their_slot() {
        let job = JobId::new();
        let mut keys = vec![
            chunk_key(&job, Domain::History, slot(1, 0, 1), P),
            chunk_key(&job, Domain::History, slot(0, 10, 2), P),
            chunk_key(&job, Domain::History, slot(0, 2, 1), P),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                chunk_key(&job, Domain::History, slot(0, 2, 1), P),
                chunk_key(&job, Domain::History, slot(0, 10, 2), P),
                chunk_key(&job, Domain::History, slot(1, 0, 1), P),
            ]
        );
        assert!(keys[0].starts_with(&domain_prefix(&job, Domain::History)));
        assert!(keys[0].ends_with("/history/0000-000002-a001.ndjson"));
        assert_eq!(input_key(&job), format!("jobs/{job}/input.json"));
        let lz4 = chunk_key(&job, Domain::Jobs, slot(3, 7, 12), ChunkEncoding::Lz4);
        assert!(lz4.ends_with("/jobs/0003-000007-a012.ndjson.lz4"), "{lz4}");
        assert_eq!(chunk_slot(&lz4), Some(slot(3, 7, 12)));
        assert_eq!(chunk_number(&lz4), Some(7));
        for junk in [
            "",
            "a/b",
            "0000-000001.ndjson",
            "0000-x-a001.ndjson",
            "0000-000001-001.ndjson",
            "0-1-a1-2.ndjson",
        ] {
            assert_eq!(chunk_slot(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_builder_names_its_attempt_in_its_chunks_keys() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::Holds, 2, 1, P).by_attempt(4).numbered_from(9);
        let sealed = b.push_record(|o| o.extend_from_slice(b"{}")).expect("a chunk of one record");
        assert_eq!(chunk_slot(&sealed.entry.key), Some(slot(2, 9, 4)));
    }

    #[test]
    fn gzip_chunks_are_gzip_members_that_decode_to_the_ndjson() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::Holds, 0, 3, ChunkEncoding::Gzip);
        for i in 0..3 {
            let sealed = b.push_record(|o| o.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes()));
            if i < 2 {
                assert!(sealed.is_none());
                continue;
            }
            let sealed = sealed.unwrap();
            assert!(sealed.entry.key.ends_with("/holds/0000-000000-a001.ndjson.gz"));
            assert_eq!(&sealed.body[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate method");
            assert_eq!(sealed.entry.stored_bytes, Some(sealed.body.len() as u64));
            let ndjson = sealed.entry.decode(sealed.body.clone()).unwrap();
            assert_eq!(ndjson.as_ref(), b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
            // A flipped byte in the deflate data fails the member's own checks or the manifest's.
            let mut bad = sealed.body.to_vec();
            bad[12] ^= 0x40;
            assert!(sealed.entry.decode(bad.into()).is_err());
        }
        // Compressed, not merely wrapped (level 0 would store the bytes as they are).
        let ndjson: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{{\"id\":\"CID-{i:07}\",\"event\":\"hold\"}}\n").into_bytes())
            .collect();
        assert!(gzip(&ndjson).len() * 4 < ndjson.len(), "{} of {} bytes", gzip(&ndjson).len(), ndjson.len());
        assert_eq!(ChunkEncoding::of_key("a/0000-000000.ndjson.gz"), Some(ChunkEncoding::Gzip));
        assert_eq!(ChunkEncoding::of_key("a/0000-000000.ndjson"), Some(ChunkEncoding::Plain));
        assert_eq!(ChunkEncoding::of_key("a/manifest.json"), None);
    }

    #[test]
    fn builder_seals_full_chunks_and_the_rest() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::Jobs, 0, 2, P);
        assert!(b.push_record(|o| o.extend_from_slice(b"{\"a\":1}")).is_none());
        let first = b.push_record(|o| o.extend_from_slice(b"{\"a\":2}")).unwrap();
        assert_eq!(first.body.as_ref(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(first.entry.records, 2);
        assert_eq!(first.entry.crc32, crc32fast::hash(&first.body));
        assert_eq!(first.entry.decode(first.body.clone()).unwrap(), first.body);
        assert!(first.entry.key.ends_with("0000-000000-a001.ndjson"));
        b.push_record(|o| o.extend_from_slice(b"{}"));
        let rest = b.finish().unwrap();
        assert!(rest.entry.key.ends_with("0000-000001-a001.ndjson"));
        assert_eq!(rest.entry.records, 1);
        assert!(b.finish().is_none());
    }

    #[test]
    fn manifest_consistency() {
        let job = JobId::new();
        let chunk = |n| ChunkEntry {
            key: "k".into(),
            records: n,
            bytes: 1,
            crc32: n as u32,
            encoding: P,
            stored_bytes: None,
        };
        let d = DomainManifest { domain: Domain::History, records: 5, chunks: vec![chunk(3), chunk(2)] };
        let mut m = Manifest::new(job, Profile::QueryTool, vec![d], None, Utc::now());
        assert_eq!(m.total_records, 5);
        assert!(m.is_consistent());
        m.domains[0].chunks[1].crc32 = 99;
        assert!(!m.is_consistent());
        let json = serde_json::to_string(&m).unwrap();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    /// LZ4 chunks: smaller than their NDJSON, decoded back byte for byte, the builder's buffer reused.
    #[test]
    fn lz4_chunks_round_trip() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::History, 3, 100, ChunkEncoding::Lz4);
        let mut plain = Vec::new();
        let mut sealed = Vec::new();
        for i in 0..250 {
            let record = format!(r#"{{"container_id":"C{i:08}","step":"ETCH","qty":{i}}}"#);
            plain.extend_from_slice(record.as_bytes());
            plain.push(b'\n');
            sealed.extend(b.push_record(|o| o.extend_from_slice(record.as_bytes())));
        }
        sealed.extend(b.finish());
        assert_eq!(sealed.iter().map(|c| c.entry.records).collect::<Vec<_>>(), vec![100, 100, 50]);
        let mut back = Vec::new();
        for c in &sealed {
            assert_eq!(c.entry.encoding, ChunkEncoding::Lz4);
            assert!(c.entry.key.ends_with(".ndjson.lz4"));
            assert_eq!(c.entry.stored_bytes, Some(c.body.len() as u64));
            assert!(c.entry.stored_bytes.unwrap() * 2 < c.entry.bytes, "{:?}", c.entry);
            back.extend_from_slice(&c.entry.decode(c.body.clone()).unwrap());
        }
        assert_eq!(back, plain);
    }

    /// A damaged object is refused with the chunk's key, whatever part is damaged.
    #[test]
    fn damaged_chunks_are_refused() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::Holds, 0, 1000, ChunkEncoding::Lz4);
        for i in 0..500 {
            b.push_record(|o| o.extend_from_slice(format!(r#"{{"n":{i},"hold":"QA"}}"#).as_bytes()));
        }
        let c = b.finish().unwrap();
        let mut flipped = c.body.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        for body in [
            bytes::Bytes::from(flipped),
            c.body.slice(..c.body.len() - 1),
            bytes::Bytes::from(vec![0u8; c.body.len()]),
        ] {
            let err = c.entry.decode(body).unwrap_err();
            assert_eq!(err.key, c.entry.key);
        }
        // A plain entry refuses a body of the right size but other bytes.
        let mut p = ChunkBuilder::new(job, Domain::Holds, 0, 1000, P);
        p.push_record(|o| o.extend_from_slice(b"{\"n\":1}"));
        let c = p.finish().unwrap();
        assert!(c.entry.decode(bytes::Bytes::from_static(b"{\"n\":2}\n")).is_err());
    }

    /// Manifests written before chunk encodings existed still read as plain chunks.
    #[test]
    fn entries_without_encoding_are_plain() {
        let e: ChunkEntry =
            serde_json::from_str(r#"{"key":"k.ndjson","records":1,"bytes":8,"crc32":5}"#).unwrap();
        assert_eq!(e.encoding, ChunkEncoding::Plain);
        assert_eq!(e.stored_bytes, None);
        let json = serde_json::to_value(&e).unwrap();
        assert!(json.get("encoding").is_none() && json.get("stored_bytes").is_none());
    }
}
