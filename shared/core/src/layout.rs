//! Where a job's data lives in the object store, and the result's manifest.
//!
//! ```text
//! jobs/{job_id}/input.json                                  the job's container ids
//! jobs/{job_id}/result/{domain}/{shard:04}-{chunk:06}.ndjson result chunks, one record per line
//! jobs/{job_id}/manifest.json                               written last: its presence = result complete
//! ```
//! Chunk keys sort in result order (shard, then chunk) so a job split into shards run by several
//! workers lays its chunks out side by side. Each chunk holds up to `TRACE_STREAM_BATCH_SIZE` records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::ids::{ContainerId, JobId};
use crate::request::Profile;

/// All objects of a job start with this.
pub fn job_prefix(job: &JobId) -> String {
    format!("jobs/{job}/")
}

/// The input ids object.
pub fn input_key(job: &JobId) -> String {
    format!("jobs/{job}/input.json")
}

/// The manifest object.
pub fn manifest_key(job: &JobId) -> String {
    format!("jobs/{job}/manifest.json")
}

/// The folder of one domain's chunks.
pub fn domain_prefix(job: &JobId, domain: Domain) -> String {
    format!("jobs/{job}/result/{domain}/")
}

/// One chunk's key.
pub fn chunk_key(job: &JobId, domain: Domain, shard: u32, chunk: u32) -> String {
    format!("jobs/{job}/result/{domain}/{shard:04}-{chunk:06}.ndjson")
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
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Object key.
    pub key: String,
    /// Records (lines) in it.
    pub records: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of its bytes.
    pub crc32: u32,
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

impl DomainManifest {
    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
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
    /// The NDJSON bytes.
    pub body: bytes::Bytes,
}

/// Accumulates one domain's records into chunks of `batch_size` lines.
///
/// Holds at most one open chunk; [`ChunkBuilder::push_record`] hands back the sealed chunk when it fills.
#[derive(Debug)]
pub struct ChunkBuilder {
    job: JobId,
    domain: Domain,
    shard: u32,
    batch_size: usize,
    next_chunk: u32,
    buf: Vec<u8>,
    records: usize,
}

impl ChunkBuilder {
    /// A builder for one domain of one shard.
    pub fn new(job: JobId, domain: Domain, shard: u32, batch_size: usize) -> Self {
        ChunkBuilder {
            job,
            domain,
            shard,
            batch_size: batch_size.max(1),
            next_chunk: 0,
            buf: Vec::new(),
            records: 0,
        }
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

    /// Records in the open chunk.
    pub fn open_records(&self) -> usize {
        self.records
    }

    fn seal(&mut self) -> SealedChunk {
        // The next chunk is usually as large as this one: keep the capacity hint, give the bytes away.
        let capacity = self.buf.len() + self.buf.len() / 8;
        let body = std::mem::replace(&mut self.buf, Vec::with_capacity(capacity));
        let entry = ChunkEntry {
            key: chunk_key(&self.job, self.domain, self.shard, self.next_chunk),
            records: self.records as u64,
            bytes: body.len() as u64,
            crc32: crc32fast::hash(&body),
        };
        self.next_chunk += 1;
        self.records = 0;
        SealedChunk { entry, body: bytes::Bytes::from(body) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_result_order() {
        let job = JobId::new();
        let mut keys = vec![
            chunk_key(&job, Domain::History, 1, 0),
            chunk_key(&job, Domain::History, 0, 10),
            chunk_key(&job, Domain::History, 0, 2),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                chunk_key(&job, Domain::History, 0, 2),
                chunk_key(&job, Domain::History, 0, 10),
                chunk_key(&job, Domain::History, 1, 0),
            ]
        );
        assert!(keys[0].starts_with(&domain_prefix(&job, Domain::History)));
        assert!(keys[0].ends_with("/history/0000-000002.ndjson"));
        assert_eq!(input_key(&job), format!("jobs/{job}/input.json"));
    }

    #[test]
    fn builder_seals_full_chunks_and_the_rest() {
        let job = JobId::new();
        let mut b = ChunkBuilder::new(job, Domain::Jobs, 0, 2);
        assert!(b.push_record(|o| o.extend_from_slice(b"{\"a\":1}")).is_none());
        let first = b.push_record(|o| o.extend_from_slice(b"{\"a\":2}")).unwrap();
        assert_eq!(first.body.as_ref(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(first.entry.records, 2);
        assert_eq!(first.entry.crc32, crc32fast::hash(&first.body));
        assert!(first.entry.key.ends_with("0000-000000.ndjson"));
        b.push_record(|o| o.extend_from_slice(b"{}"));
        let rest = b.finish().unwrap();
        assert!(rest.entry.key.ends_with("0000-000001.ndjson"));
        assert_eq!(rest.entry.records, 1);
        assert!(b.finish().is_none());
    }

    #[test]
    fn manifest_consistency() {
        let job = JobId::new();
        let chunk = |n| ChunkEntry { key: "k".into(), records: n, bytes: 1, crc32: n as u32 };
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
}
