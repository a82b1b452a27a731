//! A running shard's durable progress, and how a later run resumes from it.
//!
//! The engine reads a shard's ids in batches of `TRACE_DB_ID_BATCH_SIZE`, every domain of a batch
//! before the next, and each domain's records fill chunks of `TRACE_CHUNK_RECORDS`. Between two id
//! batches, once the uploads in flight have landed, a run's whole state is small: the ids read, each
//! domain's stored chunks (with their checksums) and the records of its open chunk. A [`Checkpoint`]
//! is that state. A run that starts from it reads from the next id batch on, with each domain's open
//! chunk filled as it was, and so builds the same chunks an uninterrupted run would: the same records,
//! order, chunk boundaries and checksums (the source's reads are ordered:
//! `ports::EventSource::open`).
//!
//! Stored as one object (`layout::checkpoint_key`), written with a single PUT: each domain's open
//! records as a gzip member, in the order of `domains`, then a newline and the [`Checkpoint`] as one
//! line of JSON (last, so the members are compressed straight into the object's buffer).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::encoding::ChunkEncoding;
use crate::ids::JobId;
use crate::layout::{self, ChunkEntry};
use crate::message::ShardMessage;

/// One domain's open chunk in a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenChunk {
    /// Records in it.
    pub records: u64,
    /// Size of its NDJSON.
    pub bytes: u64,
    /// CRC-32 of its NDJSON.
    pub crc32: u32,
    /// Size of its gzip member in the checkpoint object.
    pub stored_bytes: u64,
}

/// One domain's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCheckpoint {
    /// The domain.
    pub domain: Domain,
    /// Its chunks stored so far, in order (numbered from 0, none missing).
    pub chunks: Vec<ChunkEntry>,
    /// Its open chunk.
    pub open: OpenChunk,
}

/// A shard's durable progress, taken between two id batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The job.
    pub job_id: JobId,
    /// The shard.
    pub shard: u32,
    /// The shard's ids (into the job's input).
    pub ids_from: u64,
    /// One past its last id.
    pub ids_to: u64,
    /// Shard ids read, every domain: where the next run starts (a multiple of `id_batch_size`, or
    /// every id).
    pub ids_done: u64,
    /// The id batch size of the run.
    pub id_batch_size: u64,
    /// Records per chunk.
    pub chunk_records: u64,
    /// How the chunks are encoded.
    pub encoding: ChunkEncoding,
    /// Per requested domain, in result order.
    pub domains: Vec<DomainCheckpoint>,
    /// The job's run time so far, every run (for `TRACE_JOB_TIMEOUT_SECONDS`), in milliseconds.
    pub ran_for_ms: u64,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// When it was written.
    pub saved_at: DateTime<Utc>,
}

/// The settings a checkpoint's chunks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Ids per id batch.
    pub id_batch_size: u64,
    /// Records per chunk.
    pub chunk_records: u64,
    /// Chunk encoding.
    pub encoding: ChunkEncoding,
}

/// Why a stored checkpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable checkpoint: {0}")]
pub struct BadCheckpoint(String);

impl Checkpoint {
    /// Whether a run of `message` with `layout` can resume from it: the same shard, domains and
    /// layout (a changed setting starts the shard again), and a consistent state.
    pub fn fits(&self, message: &ShardMessage, layout: Layout) -> bool {
        let total = self.ids_to.saturating_sub(self.ids_from);
        let own = Layout {
            id_batch_size: self.id_batch_size,
            chunk_records: self.chunk_records,
            encoding: self.encoding,
        };
        self.job_id == message.job_id
            && self.shard == message.shard
            && (self.ids_from, self.ids_to) == (message.ids_from, message.ids_to)
            && own == layout
            && self.ids_done <= total
            && (self.ids_done == total || self.ids_done.is_multiple_of(self.id_batch_size.max(1)))
            && self.domains.iter().map(|d| d.domain).eq(message.domains.iter().copied())
            && self.domains.iter().all(|d| {
                d.open.records < self.chunk_records
                    && d.chunks.iter().enumerate().all(|(i, c)| {
                        layout::chunk_slot(&c.key)
                            .is_some_and(|s| (s.shard, s.chunk) == (self.shard, i as u32))
                    })
            })
    }

    /// Records stored so far or held in open chunks, every domain.
    pub fn records(&self) -> u64 {
        self.domains.iter().map(|d| d.chunks.iter().map(|c| c.records).sum::<u64>() + d.open.records).sum()
    }

    /// The stored object: this checkpoint with `open`, each domain's open NDJSON in the order of
    /// `domains` (their sizes and checksums are filled in here).
    pub fn encode(mut self, open: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (d, ndjson) in self.domains.iter_mut().zip(open) {
            let stored = layout::gzip_append(ndjson, &mut out);
            d.open = OpenChunk {
                records: d.open.records,
                bytes: ndjson.len() as u64,
                crc32: crc32fast::hash(ndjson),
                stored_bytes: stored as u64,
            };
        }
        out.push(b'\n');
        // Compact JSON holds no newline: the object's last newline ends the members.
        out.extend_from_slice(&serde_json::to_vec(&self).unwrap_or_default());
        out
    }

    /// A stored checkpoint object: the checkpoint and each domain's open NDJSON, checked.
    pub fn decode(stored: &[u8]) -> Result<(Checkpoint, Vec<Vec<u8>>), BadCheckpoint> {
        let bad = |why: String| BadCheckpoint(why);
        let line_start =
            stored.iter().rposition(|b| *b == b'\n').ok_or_else(|| bad("no header line".into()))?;
        let checkpoint: Checkpoint =
            serde_json::from_slice(&stored[line_start + 1..]).map_err(|e| bad(format!("header: {e}")))?;
        let mut rest = &stored[..line_start];
        let mut open = Vec::with_capacity(checkpoint.domains.len());
        for d in &checkpoint.domains {
            let n = usize::try_from(d.open.stored_bytes).map_err(|_| bad("size out of range".into()))?;
            let size = usize::try_from(d.open.bytes).map_err(|_| bad("size out of range".into()))?;
            if n > rest.len() || size > 64 << 20 {
                return Err(bad(format!("{}: open chunk out of range", d.domain)));
            }
            let (member, tail) = rest.split_at(n);
            rest = tail;
            // One byte more than the size: a member that decodes to more than it says is refused.
            let mut ndjson = vec![0; size + 1];
            let got = libdeflater::Decompressor::new()
                .gzip_decompress(member, &mut ndjson)
                .map_err(|e| bad(format!("{}: gzip: {e}", d.domain)))?;
            ndjson.truncate(got);
            if ndjson.len() != size || crc32fast::hash(&ndjson) != d.open.crc32 {
                return Err(bad(format!("{}: open chunk checksum mismatch", d.domain)));
            }
            if ndjson.iter().filter(|b| **b == b'\n').count() as u64 != d.open.records {
                return Err(bad(format!("{}: open chunk record count mismatch", d.domain)));
            }
            open.push(ndjson);
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes".into()));
        }
        Ok((checkpoint, open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{chunk_key, ChunkSlot};
    use crate::profile::Profile;

    fn entry(job: &JobId, domain: Domain, n: u32, records: u64) -> ChunkEntry {
        ChunkEntry {
            key: chunk_key(job, domain, ChunkSlot { shard: 0, chunk: n, attempt: 1 }, ChunkEncoding::Gzip),
            records,
            bytes: records * 10,
            crc32: n,
            encoding: ChunkEncoding::Gzip,
            stored_bytes: Some(records),
        }
    }

    fn sample(job: JobId) -> Checkpoint {
        Checkpoint {
            job_id: job,
            shard: 0,
            ids_from: 0,
            ids_to: 30,
            ids_done: 20,
            id_batch_size: 10,
            chunk_records: 4,
            encoding: ChunkEncoding::Gzip,
            domains: vec![
                DomainCheckpoint {
                    domain: Domain::History,
                    chunks: vec![entry(&job, Domain::History, 0, 4)],
                    open: OpenChunk { records: 2, ..Default::default() },
                },
                DomainCheckpoint { domain: Domain::Holds, chunks: vec![], open: OpenChunk::default() },
            ],
            ran_for_ms: 1_500,
            attempt: 1,
            saved_at: Utc::now(),
        }
    }

    /// The stored object gives back the checkpoint and the open records; a changed byte is refused.
    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        let cp = sample(JobId::new());
        let open: [&[u8]; 2] = [b"{\"a\":1}\n{\"a\":2}\n", b""];
        let stored = cp.clone().encode(&open);
        let (back, records) = Checkpoint::decode(&stored).unwrap();
        assert_eq!(records, vec![open[0].to_vec(), vec![]]);
        assert_eq!(back.domains[0].open.bytes, open[0].len() as u64);
        assert_eq!(back.records(), 6);
        assert_eq!(Checkpoint { domains: vec![], ..back.clone() }, Checkpoint { domains: vec![], ..cp });
        let line = stored.iter().rposition(|b| *b == b'\n').unwrap();
        for at in [0, line / 2, line - 1] {
            let mut damaged = stored.clone();
            damaged[at] ^= 0xff;
            assert!(Checkpoint::decode(&damaged).is_err(), "a changed byte at {at}");
        }
        assert!(Checkpoint::decode(&stored[..stored.len() - 1]).is_err());
        assert!(Checkpoint::decode(&stored[1..]).is_err());
        assert!(Checkpoint::decode(b"{}").is_err());
    }

    /// Only a run of the same shard, domains and layout resumes from a checkpoint.
    #[test]
    fn a_checkpoint_fits_only_the_same_shard_domains_and_layout() {
        let job = JobId::new();
        let cp = sample(job);
        let message = ShardMessage::whole(job, Profile::QueryTool, vec![Domain::History, Domain::Holds], 30);
        let layout = Layout { id_batch_size: 10, chunk_records: 4, encoding: ChunkEncoding::Gzip };
        assert!(cp.fits(&message, layout));
        assert!(!cp.fits(&message, Layout { chunk_records: 5, ..layout }));
        assert!(!cp.fits(&message, Layout { id_batch_size: 20, ..layout }));
        assert!(!cp.fits(&ShardMessage { domains: vec![Domain::History], ..message.clone() }, layout));
        assert!(!cp.fits(
            &ShardMessage::whole(JobId::new(), Profile::QueryTool, message.domains.clone(), 30),
            layout
        ));
        assert!(!Checkpoint { ids_done: 15, ..cp.clone() }.fits(&message, layout));
        assert!(Checkpoint { ids_done: 30, ..cp.clone() }.fits(&message, layout));
        let mut gap = cp;
        gap.domains[0].chunks[0].key = chunk_key(
            &job,
            Domain::History,
            ChunkSlot { shard: 0, chunk: 1, attempt: 1 },
            ChunkEncoding::Gzip,
        );
        assert!(!gap.fits(&message, layout));
    }
}
