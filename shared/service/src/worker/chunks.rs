//! Step 3: write the chunks. The [`engine`] reads the shard's ids into a [`ChunkWriter`], which turns
//! each fetch into records of chunks, uploads every chunk as it fills (a few at once), and reports
//! progress on the lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use trace_core::aggregation::MsdAggregation;
use trace_core::ids::IdList;
use trace_core::job::Progress;
use trace_core::layout::{ChunkBuilder, ChunkEntry, DomainManifest, SealedChunk};
use trace_core::message::ShardMessage;
use trace_core::ports::StoreError;
use trace_core::record::RowBatch;
use trace_core::Domain;

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
    /// Makes the run release the job at the next batch when it turns true.
    shutdown: watch::Receiver<bool>,
    builders: BTreeMap<Domain, ChunkBuilder>,
    entries: BTreeMap<Domain, Vec<ChunkEntry>>,
    uploads: JoinSet<Result<(Domain, ChunkEntry), StoreError>>,
    progress: Progress,
    /// When progress was last written.
    published: Option<Instant>,
    /// Objects stored so far and their bytes (as stored), for the job-end metrics.
    stored: Stored,
}

/// Objects a run stored and their bytes as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stored {
    /// Objects written.
    pub(super) objects: u64,
    /// Their bytes, as stored.
    pub(super) bytes: u64,
}

impl<'a> ChunkWriter<'a> {
    /// A writer of `message`'s domains, with no chunk yet.
    pub(super) fn new(
        app: &'a App,
        lease: &'a Lease,
        message: &ShardMessage,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let config = &app.config;
        let builders = message
            .domains
            .iter()
            .map(|d| {
                let job = lease.meta().job_id;
                let builder =
                    ChunkBuilder::new(job, *d, message.shard, config.chunk_records, config.chunk_encoding);
                (*d, builder)
            })
            .collect();
        ChunkWriter {
            app,
            lease,
            shutdown,
            builders,
            entries: BTreeMap::new(),
            uploads: JoinSet::new(),
            progress: lease.progress(),
            published: None,
            stored: Stored::default(),
        }
    }

    /// The chunks stored so far.
    pub(super) fn stored(&self) -> Stored {
        self.stored
    }

    /// The progress of the run so far.
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Reads `ids` of `message`'s domains into chunks; the MSD aggregation for the MSD profile.
    pub(super) async fn write(
        &mut self,
        ids: IdList,
        message: &ShardMessage,
    ) -> Result<Option<MsdAggregation>, ShardError> {
        let (source, id_batch_size) = (self.app.backends.source.clone(), self.app.config.id_batch_size);
        engine::read_into(source, Arc::new(ids), message.profile, &message.domains, id_batch_size, self).await
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

    /// Stops the run between two batches when the job was lost or the process is shutting down.
    fn check_stop(&self) -> Result<(), ShardError> {
        self.lease.check_held()?;
        if *self.shutdown.borrow() {
            return Err(ShardError::Shutdown);
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
        self.check_stop()?;
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
        self.check_stop()?;
        self.progress.set_ids_done(ids_done);
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
