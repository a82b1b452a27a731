//! Step 4: complete the result. The manifest goes last among the objects (its presence means the
//! result is complete); the shard's checkpoint goes, and, after a run resumed or restarted, any chunk
//! an earlier attempt stored that the manifest does not list; then the job is marked finished, if it
//! is still ours.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::Utc;
use trace_core::aggregation::MsdAggregation;
use trace_core::job::{JobMeta, JobStatus, Progress};
use trace_core::layout::{self, DomainManifest, Manifest};
use trace_core::ports::CasOutcome;
use trace_core::Profile;

use super::lease::{Lease, LeaseLost};
use super::ShardError;
use crate::App;

/// Stores the manifest of the job's chunks (`domains`, in result order), if the run still holds the
/// job; its size in bytes. After a run that `resumed` (or restarted), stored chunks the manifest does
/// not list are removed, so the result is exactly what the manifest says.
pub(super) async fn write(
    app: &App,
    lease: &Lease,
    profile: Profile,
    domains: Vec<DomainManifest>,
    aggregation: Option<MsdAggregation>,
    resumed: bool,
) -> Result<u64, ShardError> {
    lease.check_held()?;
    let meta = lease.meta();
    let listed: BTreeSet<String> =
        domains.iter().flat_map(|d| d.chunks.iter().map(|c| c.key.clone())).collect();
    let aggregation = aggregation.map(|a| serde_json::to_value(a).unwrap_or_default());
    let manifest = Manifest::new(meta.result_id(), profile, domains, aggregation, Utc::now());
    let body = serde_json::to_vec(&manifest).map_err(|e| ShardError::BadInput(e.to_string()))?;
    let size = body.len() as u64;
    let store = &app.backends.store;
    let key = layout::manifest_key(&meta.result_id());
    // Create-only: a result once complete is never replaced. A manifest already there is another run's
    // of this job (a duplicate, a zombie, or an earlier run that could not mark the job finished): the
    // same result lets this run go on to the finish (whose compare-and-set decides); a different one
    // means the job is not this run's.
    if !store.put_new(&key, Bytes::from(body)).await? {
        let existing: Manifest = serde_json::from_slice(&store.get(&key).await?)
            .map_err(|e| ShardError::BadInput(format!("{key}: {e}")))?;
        if (existing.checksum, existing.total_records) != (manifest.checksum, manifest.total_records) {
            tracing::warn!("a different result of this job is already complete: leaving it");
            return Err(LeaseLost::TakenOver.into());
        }
        tracing::info!("the same result is already complete (an earlier run's)");
    }
    tracing::debug!("manifest stored");
    store.delete_prefix(&layout::checkpoint_prefix(&meta.result_id())).await?;
    if resumed {
        for stray in store.list(&layout::result_prefix(&meta.result_id())).await? {
            if !listed.contains(&stray.key) {
                tracing::info!(
                    key = stray.key,
                    "removing a chunk an earlier attempt stored beyond this result"
                );
                store.delete_prefix(&stray.key).await?;
            }
        }
    }
    Ok(size)
}

/// `started → finished` with the run's final `progress`, unless the job was cancelled or taken over
/// meanwhile. The result is complete by now, so a job store that fails is retried here (back-off,
/// within the retry window) rather than by running the job again; a reply lost after the write
/// applied shows as the job finished by this very attempt, which is success.
pub(super) async fn mark_finished(app: &App, lease: &Lease, progress: &Progress) -> Result<(), ShardError> {
    let done = JobMeta { progress: progress.clone(), ..lease.meta().clone() };
    let finished =
        done.transitioned(JobStatus::Finished, Utc::now(), None).map_err(|_| LeaseLost::TakenOver)?;
    let mut delays = super::retry_delays(app);
    let outcome = loop {
        match app.backends.jobs.compare_and_set(lease.meta().guard(), &finished).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                let Some(delay) = delays.next() else { return Err(e.into()) };
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not mark the job finished: retrying");
                tokio::time::sleep(delay).await;
            }
        }
    };
    let own_finish = matches!(&outcome, CasOutcome::Conflict(found)
        if found.status == JobStatus::Finished && found.attempt == finished.attempt);
    if own_finish {
        tracing::info!("the job store had applied this run's finish before its reply was lost");
    } else {
        lease.held_after(app, outcome, &finished).await?;
    }
    // The metadata lives as long as the result just written: the time to live starts now.
    if let Err(e) = app.backends.jobs.refresh_ttl(&finished.job_id, app.config.job_ttl).await {
        tracing::warn!(error = %e, "could not refresh the finished job's time to live");
    }
    Ok(())
}
