//! Step 3: write the chunks. The [`engine`] reads the shard's ids into a [`ChunkWriter`], which turns
//! each fetch into records of chunks, uploads every chunk as it fills (a few at once), and reports
//! progress on the lease. Between two id batches it stores the shard's [`Checkpoint`] every
//! `TRACE_CHECKPOINT_SECONDS`, and before it stops for a shutdown or the end of the Lambda invocation;
//! a writer made from a checkpoint goes on from it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use trace_core::aggregation::MsdAggregator;
use trace_core::checkpoint::{Checkpoint, DomainCheckpoint, OpenChunk};
use trace_core::ids::IdList;
use trace_core::job::Progress;
use trace_core::layout::{self, ChunkBuilder, ChunkEntry, DomainManifest, SealedChunk};
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;
use trace_core::record::RowBatch;
use trace_core::Domain;

use super::checkpoint::Found;
use super::lease::Lease;
use super::ShardError;
use crate::engine::{self, RecordSink};
use crate::App;

/// Chunk uploads in flight at once per worker: overlaps the object store's latency with reading.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Least time between two progress writes of a run (the first is at once; the heartbeat and the
/// finish write the rest). Each write is a job-store round trip on the path of the rows, and a
/// 114,000-id job fills about 1,500 chunks and id batches.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Turns fetches into chunks and uploads them as they fill.
pub(super) struct ChunkWriter<'a> {
    app: &'a App,
    lease: &'a Lease,
    /// Makes the run checkpoint and release the job at the next id batch when it turns true.
    shutdown: watch::Receiver<bool>,
    /// The shard's message.
    message: &'a ShardMessage,
    builders: BTreeMap<Domain, ChunkBuilder>,
    /// Each domain's stored chunks.
    entries: BTreeMap<Domain, Vec<ChunkEntry>>,
    uploads: JoinSet<Result<(Domain, ChunkEntry), StoreError>>,
    progress: Progress,
    /// When progress was last written.
    published: Option<Instant>,
    /// Objects stored so far and their bytes (as stored), for the job-end metrics.
    stored: Stored,
    /// Shard ids read (every domain) at the last id batch's end.
    ids_done: u64,
    /// The shard ids the run started from (a checkpoint's), if it resumed.
    resumed_at: Option<u64>,
    /// Whether the run keeps checkpoints: not for the MSD profile, whose aggregation needs every row
    /// (its runs start from the first id).
    checkpoints: bool,
    /// When the run started, and the job's run time before it.
    started: Instant,
    ran_before: Duration,
    /// When the checkpoint was last stored (or the run started), and whether this run stored one.
    checkpointed: Instant,
    saved: bool,
    /// When the run checkpoints at the next id batch and stops to continue in a new invocation.
    continue_at: Option<Instant>,
}

/// Objects a run stored and their bytes as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stored {
    /// Objects written.
    pub(super) objects: u64,
    /// Their bytes, as stored.
    pub(super) bytes: u64,
}

impl std::ops::Add for Stored {
    type Output = Stored;
    fn add(self, other: Stored) -> Stored {
        Stored { objects: self.objects + other.objects, bytes: self.bytes + other.bytes }
    }
}

impl<'a> ChunkWriter<'a> {
    /// A writer of `message`'s domains, from the checkpoint `found` when there is one (else with no
    /// chunk yet). At `continue_at` it stores a checkpoint at the next id batch and stops
    /// ([`ShardError::Continue`]).
    pub(super) fn new(
        app: &'a App,
        lease: &'a Lease,
        message: &'a ShardMessage,
        found: Option<Found>,
        shutdown: watch::Receiver<bool>,
        continue_at: Option<Instant>,
    ) -> Self {
        let config = &app.config;
        let job = lease.meta().result_id();
        let mut builders: BTreeMap<Domain, ChunkBuilder> = message
            .domains
            .iter()
            .map(|d| {
                let builder =
                    ChunkBuilder::new(job, *d, message.shard, config.chunk_records, config.chunk_encoding);
                (*d, builder.by_attempt(lease.meta().attempt))
            })
            .collect();
        let mut entries = BTreeMap::new();
        let mut progress = lease.progress();
        let (mut ids_done, mut resumed_at, mut ran_before) = (0, None, Duration::ZERO);
        if let Some(Found { checkpoint, open }) = found {
            for (d, ndjson) in checkpoint.domains.into_iter().zip(open) {
                if let Some(b) = builders.remove(&d.domain) {
                    let b = b.numbered_from(d.chunks.len() as u32).with_open(ndjson, d.open.records as usize);
                    builders.insert(d.domain, b);
                }
                entries.insert(d.domain, d.chunks);
            }
            progress.records_written =
                entries.values().flatten().map(|c: &ChunkEntry| c.records).sum::<u64>()
                    + builders.values().map(|b| b.open().1 as u64).sum::<u64>();
            ids_done = checkpoint.ids_done;
            resumed_at = Some(ids_done);
            ran_before = Duration::from_millis(checkpoint.ran_for_ms);
        }
        progress.set_ids_done(ids_done);
        ChunkWriter {
            app,
            lease,
            shutdown,
            message,
            builders,
            entries,
            uploads: JoinSet::new(),
            progress,
            published: None,
            stored: Stored::default(),
            ids_done,
            resumed_at,
            checkpoints: !message.profile.is_msd(),
            started: Instant::now(),
            ran_before,
            checkpointed: Instant::now(),
            saved: false,
            continue_at,
        }
    }

    /// Whether the run started from a checkpoint.
    pub(super) fn resumed(&self) -> bool {
        self.resumed_at.is_some()
    }

    /// Whether this run stored a checkpoint.
    pub(super) fn saved(&self) -> bool {
        self.saved
    }

    /// Stores the checkpoint of the run at the end of an id batch, once every upload in flight has
    /// landed (so its chunks are all listed), if the run still holds the job. Its object counts in
    /// [`Stored`].
    async fn save_checkpoint(&mut self) -> Result<(), ShardError> {
        self.lease.check_held()?;
        while !self.uploads.is_empty() {
            self.collect_one().await?;
        }
        let config = &self.app.config;
        let meta = self.lease.meta();
        let mut domains = Vec::with_capacity(self.message.domains.len());
        let mut open: Vec<&[u8]> = Vec::with_capacity(self.message.domains.len());
        for d in &self.message.domains {
            let mut chunks = self.entries.get(d).cloned().unwrap_or_default();
            chunks.sort_by(|a, b| a.key.cmp(&b.key));
            let (ndjson, records) = self.builders.get(d).map_or((&[][..], 0), ChunkBuilder::open);
            domains.push(DomainCheckpoint {
                domain: *d,
                chunks,
                open: OpenChunk { records: records as u64, ..Default::default() },
            });
            open.push(ndjson);
        }
        let checkpoint = Checkpoint {
            job_id: meta.result_id(),
            shard: self.message.shard,
            ids_from: self.message.ids_from,
            ids_to: self.message.ids_to,
            ids_done: self.ids_done,
            id_batch_size: config.id_batch_size as u64,
            chunk_records: config.chunk_records as u64,
            encoding: config.chunk_encoding,
            domains,
            ran_for_ms: (self.ran_before + self.started.elapsed()).as_millis() as u64,
            attempt: meta.attempt,
            saved_at: Utc::now(),
        };
        let body = checkpoint.encode(&open);
        let size = body.len() as u64;
        let key = layout::checkpoint_key(&meta.result_id(), self.message.shard);
        self.app.backends.store.put(&key, Bytes::from(body)).await?;
        tracing::debug!(ids_done = self.ids_done, bytes = size, "checkpoint stored");
        self.checkpointed = Instant::now();
        self.saved = true;
        self.stored.objects += 1;
        self.stored.bytes += size;
        Ok(())
    }

    /// The chunks stored so far.
    pub(super) fn stored(&self) -> Stored {
        self.stored
    }

    /// The progress of the run so far.
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Reads `ids` of `message`'s domains into chunks; the MSD aggregator for the MSD profile.
    pub(super) async fn write(&mut self, ids: Arc<IdList>) -> Result<Option<MsdAggregator>, ShardError> {
        let message = self.message;
        let (source, id_batch_size) = (self.app.backends.source.clone(), self.app.config.id_batch_size);
        let first = self.resumed_at.unwrap_or(0);
        engine::read_from(source, ids, message.profile, &message.domains, id_batch_size, first, self).await
    }

    /// Seals the open chunks, waits for every upload, and returns the domains in result order.
    pub(super) async fn finish(&mut self, order: &[Domain]) -> Result<Vec<DomainManifest>, ShardError> {
        let sealed: Vec<(Domain, SealedChunk)> =
            self.builders.iter_mut().filter_map(|(d, b)| b.finish().map(|c| (*d, c))).collect();
        for (domain, chunk) in sealed {
            self.upload(domain, chunk).await?;
        }
        while !self.uploads.is_empty() {
            self.collect_one().await?;
        }
        Ok(order
            .iter()
            .map(|d| {
                let mut chunks = self.entries.remove(d).unwrap_or_default();
                chunks.sort_by(|a, b| a.key.cmp(&b.key));
                DomainManifest { domain: *d, records: chunks.iter().map(|c| c.records).sum(), chunks }
            })
            .collect())
    }

    /// Waits for every upload in flight, ignoring their outcome (the run is being abandoned).
    pub(super) async fn drain(&mut self) {
        while self.uploads.join_next().await.is_some() {}
    }

    /// At the end of an id batch: stores a checkpoint when one is due, or before the run stops for a
    /// shutdown or to continue in a new invocation (then stops it).
    async fn batch_end(&mut self) -> Result<(), ShardError> {
        let shutting_down = *self.shutdown.borrow();
        let continuing = self.continue_at.is_some_and(|at| Instant::now() >= at);
        let left = self.ids_done < self.message.ids_to - self.message.ids_from;
        let due = self.checkpointed.elapsed() >= self.app.config.checkpoint_every;
        if self.checkpoints && left && (shutting_down || continuing || due) {
            self.save_checkpoint().await?;
        }
        if shutting_down && left {
            return Err(ShardError::Shutdown);
        }
        if continuing && left {
            return Err(ShardError::Continue);
        }
        Ok(())
    }

    /// Records progress: written to the job store (which also tells about a cancel) at most every
    /// [`PROGRESS_EVERY`], otherwise left for the heartbeat.
    async fn report(&mut self) -> Result<(), ShardError> {
        if self.published.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
            self.lease.note(self.progress.clone());
            return Ok(());
        }
        self.published = Some(Instant::now());
        self.lease.publish(self.app, self.progress.clone()).await
    }

    async fn collect_one(&mut self) -> Result<(), ShardError> {
        if let Some(joined) = self.uploads.join_next().await {
            let (domain, entry) = joined.map_err(|e| ShardError::BadInput(format!("upload task: {e}")))??;
            self.stored.objects += 1;
            self.stored.bytes += entry.stored_bytes.unwrap_or(entry.bytes);
            self.entries.entry(domain).or_default().push(entry);
        }
        Ok(())
    }

    async fn upload(&mut self, domain: Domain, chunk: SealedChunk) -> Result<(), ShardError> {
        while self.uploads.len() >= UPLOADS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let store = self.app.backends.store.clone();
        self.uploads.spawn(async move {
            store.put(&chunk.entry.key, chunk.body).await?;
            Ok((domain, chunk.entry))
        });
        self.report().await
    }
}

#[async_trait]
impl RecordSink for ChunkWriter<'_> {
    type Error = ShardError;

    async fn rows(&mut self, batch: &RowBatch) -> Result<(), ShardError> {
        self.lease.check_held()?;
        let domain = batch.domain();
        self.progress.domain = Some(domain);
        let mut sealed = Vec::new();
        if let Some(builder) = self.builders.get_mut(&domain) {
            for i in 0..batch.len() {
                if let Some(chunk) = builder.push_record(|out| batch.write_row_json(i, out)) {
                    sealed.push(chunk);
                }
            }
        }
        self.progress.records_written += batch.len() as u64;
        for chunk in sealed {
            self.upload(domain, chunk).await?;
        }
        Ok(())
    }

    async fn ids_done(&mut self, ids_done: u64) -> Result<(), ShardError> {
        self.lease.check_held()?;
        self.ids_done = ids_done;
        self.progress.set_ids_done(ids_done);
        self.batch_end().await?;
        self.report().await
    }

    async fn domain_done(&mut self, domain: Domain) -> Result<(), ShardError> {
        // Its open chunk goes out now, while the next domains are read, not after the last one.
        if let Some(chunk) = self.builders.get_mut(&domain).and_then(ChunkBuilder::finish) {
            self.upload(domain, chunk).await?;
        }
        Ok(())
    }
}
