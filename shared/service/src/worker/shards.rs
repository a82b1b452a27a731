//! Step 4 of one shard of a job split into shards (see [`crate::sharding`]): the shard records its
//! chunks, is marked finished, and the shard that finds every shard's record stored writes the job's
//! manifest (the reduce).
//!
//! Exactly one complete result: the shards' records are in the object store, each written before its
//! shard is marked finished, and a shard lists them only after writing its own. Of the last two
//! shards to finish, at least one therefore sees both (the object store lists what it has stored),
//! and the manifest is written create-only (`If-None-Match: *`), so when both see every record both
//! build the same manifest and one write wins. No counter is needed: the records are the truth. A
//! shard whose run stopped between its finish and the reduce has its message back: its claim finds
//! the shard finished and tries the reduce again.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::Utc;
use trace_core::aggregation::{MsdAggregator, MsdPartial};
use trace_core::job::{JobStatus, Progress};
use trace_core::layout::{self, DomainManifest, Manifest, ShardDone};
use trace_core::message::ShardMessage;
use trace_core::ports::{CasOutcome, StoreError};

use super::lease::{Lease, LeaseLost};
use super::{manifest, ShardError};
use crate::record::{self, Asker};
use crate::App;

/// Records the shard's chunks (`domains`, in result order) and its part of the MSD aggregation,
/// marks the shard finished, then tries the reduce; the record's size in bytes.
pub(super) async fn finish(
    app: &App,
    lease: &Lease,
    message: &ShardMessage,
    domains: Vec<DomainManifest>,
    partial: Option<MsdPartial>,
    progress: &Progress,
) -> Result<u64, ShardError> {
    lease.check_held()?;
    let done = ShardDone { shard: message.shard, domains, partial };
    let body = serde_json::to_vec(&done).map_err(|e| ShardError::BadInput(e.to_string()))?;
    let size = body.len() as u64;
    let store = &app.backends.store;
    let key = layout::shard_done_key(&message.job_id, message.shard);
    if !store.put_new(&key, Bytes::from(body)).await? {
        let existing: ShardDone = serde_json::from_slice(&store.get(&key).await?)
            .map_err(|e| ShardError::BadInput(format!("{key}: {e}")))?;
        if existing != done {
            tracing::warn!("a different result of this shard is already recorded: leaving it");
            return Err(LeaseLost::TakenOver.into());
        }
    }
    store.delete_prefix(&layout::checkpoint_key(&message.job_id, message.shard)).await?;
    manifest::mark_finished(app, lease, progress).await?;
    tracing::info!("shard finished");
    reduce(app, message).await?;
    Ok(size)
}

/// Writes the job's manifest if every shard has recorded its chunks (true then, or when it already
/// exists), and marks the job finished.
pub(super) async fn reduce(app: &App, message: &ShardMessage) -> Result<bool, ShardError> {
    let store = &app.backends.store;
    let job = message.job_id;
    let recorded = store.list(&layout::shards_prefix(&job)).await?;
    if (recorded.len() as u64) < u64::from(message.shards) {
        tracing::debug!(recorded = recorded.len(), shards = message.shards, "other shards still running");
        return Ok(false);
    }
    let mut parts = Vec::with_capacity(message.shards as usize);
    for shard in 0..message.shards {
        let key = layout::shard_done_key(&job, shard);
        let part: ShardDone = match store.get(&key).await {
            Ok(body) => {
                serde_json::from_slice(&body).map_err(|e| ShardError::BadInput(format!("{key}: {e}")))?
            }
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        parts.push(part);
    }
    // Result order: each domain's chunks of shard 0, then shard 1's, … — a single run's record order.
    let domains: Vec<DomainManifest> = message
        .domains
        .iter()
        .map(|&domain| {
            let chunks: Vec<_> = parts
                .iter()
                .flat_map(|p| p.domains.iter().filter(|d| d.domain == domain).flat_map(|d| d.chunks.clone()))
                .collect();
            DomainManifest { domain, records: chunks.iter().map(|c| c.records).sum(), chunks }
        })
        .collect();
    let aggregation = message.profile.is_msd().then(|| {
        let mut merged = MsdAggregator::new();
        for partial in parts.iter().filter_map(|p| p.partial.as_ref()) {
            merged.merge(partial);
        }
        serde_json::to_value(merged.finish()).unwrap_or_default()
    });
    let listed: BTreeSet<String> =
        domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.clone())).collect();
    let manifest = Manifest::new(job, message.profile, domains, aggregation, Utc::now());
    let body = serde_json::to_vec(&manifest).map_err(|e| ShardError::BadInput(e.to_string()))?;
    let key = layout::manifest_key(&job);
    if !store.put_new(&key, Bytes::from(body)).await? {
        let existing: Manifest = serde_json::from_slice(&store.get(&key).await?)
            .map_err(|e| ShardError::BadInput(format!("{key}: {e}")))?;
        if (existing.checksum, existing.total_records) != (manifest.checksum, manifest.total_records) {
            tracing::warn!("a different result of this job is already complete: leaving it");
            return Ok(true);
        }
    } else {
        tracing::info!(
            shards = message.shards,
            records = manifest.total_records,
            "every shard done: manifest stored"
        );
    }
    store.delete_prefix(&layout::checkpoint_prefix(&job)).await?;
    for stray in store.list(&layout::result_prefix(&job)).await? {
        if !listed.contains(&stray.key) {
            tracing::info!(key = stray.key, "removing a chunk no shard's result lists");
            store.delete_prefix(&stray.key).await?;
        }
    }
    job_finished(app, message, &manifest).await?;
    Ok(true)
}

/// The job (not a shard) becomes finished with its manifest's records, unless it ended otherwise
/// (cancelled; failed: a retry re-runs its failed shards and reduces again).
async fn job_finished(app: &App, message: &ShardMessage, manifest: &Manifest) -> Result<(), ShardError> {
    for _ in 0..5 {
        let Some(meta) =
            record::get_or_restore(app, &message.job_id, Asker::Message).await.map_err(|e| match e {
                record::RestoreError::Store(e) => ShardError::Store(e),
                record::RestoreError::Jobs(e) => ShardError::Jobs(e),
            })?
        else {
            return Ok(());
        };
        let mut meta = meta;
        if meta.status == JobStatus::Failed && super::redrivable(&meta) {
            // Every shard is done after all (the failed one was redriven meanwhile): the result is
            // complete, so the failure no longer holds.
            let _ = app.backends.store.delete_prefix(&layout::outcome_key(&meta.job_id)).await;
            let Ok(queued) = meta.requeued() else { return Ok(()) };
            if app.backends.jobs.compare_and_set(meta.guard(), &queued).await? != CasOutcome::Applied {
                continue;
            }
            meta = queued;
        }
        if meta.status == JobStatus::Queued {
            // Its shards' claims could not mark it started (the job store was down then).
            let Ok(started) = meta.transitioned(JobStatus::Started, Utc::now(), None) else { return Ok(()) };
            if app.backends.jobs.compare_and_set(meta.guard(), &started).await? != CasOutcome::Applied {
                continue;
            }
            meta = started;
        }
        if meta.status != JobStatus::Started {
            tracing::info!(status = %meta.status, "the job ended otherwise: left as it is");
            return Ok(());
        }
        let mut progress = Progress::start(meta.cid_count);
        progress.records_written = manifest.total_records;
        let done = trace_core::job::JobMeta { progress, ..meta.clone() };
        let Ok(finished) = done.transitioned(JobStatus::Finished, Utc::now(), None) else { return Ok(()) };
        if app.backends.jobs.compare_and_set(meta.guard(), &finished).await? == CasOutcome::Applied {
            tracing::info!("job finished");
            if let Err(e) = app.backends.jobs.refresh_ttl(&finished.job_id, app.config.job_ttl).await {
                tracing::warn!(error = %e, "could not refresh the finished job's time to live");
            }
            return Ok(());
        }
    }
    Ok(())
}
