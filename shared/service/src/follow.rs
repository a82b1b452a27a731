//! The live tail: `GET /api/trace/job/{id}/stream?follow=true` on a queued or running job sends the
//! lines of the finished job's stream as their records are stored, and ends with `complete` when the
//! job does. Without `follow` such a job answers 409 `JOB_NOT_COMPLETE`, as the dashboard expects.
//!
//! # Which chunks, when
//! Result order is each domain's chunks of shard 0, then shard 1's, … (`layout`). A chunk is sent
//! once it and every chunk before it in that order are stored, so the first domain streams while the
//! job runs and every later domain once its shards are done (all domains are read together, id batch
//! by id batch: a later domain's first chunk follows the earlier domain's last only when the shard
//! ends).
//!
//! - A running shard's chunks are found by listing their slot (`{domain}/{shard:04}-{chunk:06}-`), the
//!   newest attempt's first. Any attempt's chunk of a slot will do as long as the settings stay: a
//!   run resumed from a checkpoint, or started again from the first id, builds the same chunks
//!   (`checkpoint`), so a zombie's or a dead attempt's chunk has the bytes its successor's will have.
//!   (A run under other chunk settings — a deploy between two attempts — starts over with other
//!   chunks: the check below then ends the stream with `RESULT_CHANGED`.) Each is checked by its own
//!   encoding (gzip's CRC-32 and size); LZ4 blocks do not say their size, so LZ4 chunks are sent once
//!   their shard is done.
//! - A shard's end is its record (`jobs/{id}/shards/{shard}.json`, a job split into shards) or the
//!   job's manifest; from then on the listed entries are used, and the chunks already sent are
//!   checked against them (records and CRC-32). A mismatch (the source changed between two attempts)
//!   ends the stream with an `error` line `RESULT_CHANGED`: what was sent is not the result.
//! - The first domain's `domain_start` carries its total: the job's first shard counts it beside its
//!   reading ([`JobCount`], `worker::count`); without a count, it is known when every shard has ended.
//! - Once the manifest exists the rest is the finished stream's, from where the live part stopped
//!   ([`results::lines_from`]), with the same [`LineAligner`]: the lines are the finished stream's,
//!   line for line.
//!
//! - The total sent is checked against the result's once known (`RESULT_CHANGED` if they differ).
//!
//! The follower polls every [`POLL`] while nothing new is stored, every [`QUIET_POLL`] once nothing
//! has been sent for [`QUIET_AFTER`] (each look: a listing, the manifest or shard
//! record, and one job-store read to notice a job that failed or was cancelled: an `error` line with
//! the job's code ends the stream),
//! and gives up after `TRACE_FOLLOW_SECONDS` with an `error` line `FOLLOW_TIME_LIMIT` (a Lambda
//! invocation lasts at most 15 minutes). Its size cannot be known before the first byte: it has no
//! `x-trace-stream-bytes` header, and every byte counts against `TRACE_STREAM_MAX_BYTES`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use trace_core::job::JobMeta;
use trace_core::layout::{self, ChunkEntry, JobCount, Manifest, ShardDone};
use trace_core::ndjson::{write_records_lines, LineAligner, StreamLine};
use trace_core::ports::StoreError;
use trace_core::{Domain, JobStatus, Principal, TraceError};

use crate::results::{self, line, Sender, Step, StreamAnswer};
use crate::status::{job_store_unavailable, parse_job_id};
use crate::App;

/// Time between two looks for a new chunk while none is stored, as long as lines keep coming: well
/// inside the 2 s a caller may wait for a stored chunk's records. A look is one listing, one manifest
/// read, one job-store read, and, of a job split into shards, a read of the shard's record (before
/// the count exists, of each shard's): about 8–12 object store requests a second.
pub const POLL: Duration = Duration::from_millis(250);

/// After this long with nothing sent (a job waiting in its queue, a slow domain), the looks slow down
/// to [`QUIET_POLL`]: a quiet 10-minute follow then costs ~2,400 requests instead of ~7,200.
const QUIET_AFTER: Duration = Duration::from_secs(10);

/// Time between two looks after [`QUIET_AFTER`] with nothing sent; a chunk stored then still reaches
/// the caller within about a second.
const QUIET_POLL: Duration = Duration::from_secs(1);

/// The wait before the next look, `quiet` after the last line sent.
fn poll_after(quiet: Duration) -> Duration {
    if quiet < QUIET_AFTER {
        POLL
    } else {
        QUIET_POLL
    }
}

/// How long a failing object store is asked again before a followed stream gives up.
const STORE_PATIENCE: Duration = Duration::from_secs(10);

/// Lines sent ahead of the caller: the follower stops reading when the caller is slower.
const AHEAD: usize = 2;

/// `GET …/stream?follow=true`: a finished job's stream as [`results::stream`] sends it; a queued or
/// running job's followed stream; a failed or cancelled one's 409 `JOB_NOT_COMPLETE`.
pub async fn stream(
    app: &App,
    principal: &Principal,
    id: &str,
    accept_encoding: Option<&str>,
) -> Result<StreamAnswer<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>, TraceError> {
    let job_id = parse_job_id(id)?;
    let meta = app.backends.jobs.get(&job_id).await.map_err(job_store_unavailable)?;
    // A job's own record, not one of its shards' (a shard's id is answered as without `follow`).
    let running =
        meta.filter(|m| matches!(m.status, JobStatus::Queued | JobStatus::Started) && m.parent.is_none());
    let Some(meta) = running.filter(|m| principal.may_see(&m.owner)) else {
        // Finished, ended otherwise, unknown or not the caller's: as without `follow`.
        return results::stream(app, principal, id, accept_encoding).await.map(|answer| StreamAnswer {
            bytes: answer.bytes,
            gzip: answer.gzip,
            body: answer.body.left_stream(),
        });
    };
    let gzip = results::gzip_wanted(app, accept_encoding);
    tracing::info!(job_id = id, status = %meta.status, shards = meta.shards, "following a running job");
    let (tx, rx) = mpsc::channel(AHEAD);
    let now = Instant::now();
    let follower = Follower {
        app: app.clone(),
        meta,
        tx,
        until: now + app.config.follow_for,
        started: now,
        last_sent_ms: AtomicU64::new(0),
    };
    tokio::spawn(follower.run());
    let pieces = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let sender = Sender::new(app, id, gzip, app.config.stream_max_bytes);
    Ok(StreamAnswer { bytes: None, gzip, body: results::body(pieces, sender).right_stream() })
}

/// Why the follower stops before the end.
enum Stop {
    /// The caller has gone.
    Gone,
    /// An `error` line ends the stream: its code and message.
    Error(String, String),
}

fn stop(code: &str, message: String) -> Stop {
    Stop::Error(code.to_owned(), message)
}

/// What a step of the follower gives, or why it stops.
type Following<T> = Result<T, Stop>;

/// Sends a running job's lines to the caller.
struct Follower {
    app: App,
    meta: JobMeta,
    tx: mpsc::Sender<Bytes>,
    until: Instant,
    /// When it started, and when it last sent a line (ms after `started`): the looks slow down after
    /// a quiet while.
    started: Instant,
    last_sent_ms: AtomicU64,
}

/// The chunks of the first domain sent so far for the shard in progress: each one's records and CRC-32.
type Sent = Vec<(u64, u32)>;

impl Follower {
    async fn run(self) {
        let job = self.meta.job_id;
        match self.lines().await {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Error(code, message)) => {
                tracing::info!(job_id = %job, code, message, "followed stream ended early");
                let _ = self.tx.send(line(&StreamLine::Error { code, message })).await;
            }
        }
    }

    async fn send(&self, piece: Bytes) -> Following<()> {
        if piece.is_empty() {
            return Ok(());
        }
        self.tx.send(piece).await.map_err(|_| Stop::Gone)?;
        self.last_sent_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn lines(&self) -> Following<()> {
        let meta = &self.meta;
        let job = meta.job_id;
        let batch_size = self.app.config.stream_batch_size as u64;
        self.send(line(&StreamLine::Meta {
            job_id: job,
            profile: meta.profile,
            domains: meta.domains.clone(),
        }))
        .await?;
        let Some(&first) = meta.domains.first() else { return self.rest(Step::DomainStart(0), None).await };
        let shards = meta.shards.max(1);
        let mut ended = vec![None; shards as usize];
        let total = loop {
            if let Some(manifest) = self.manifest().await? {
                return self.finish_from(manifest, Step::DomainStart(0), None).await;
            }
            if let Some(total) = self.first_total(first, &mut ended).await? {
                break total;
            }
            self.idle().await?;
        };
        self.send(line(&StreamLine::DomainStart { domain: first, total })).await?;
        let mut aligner = LineAligner::new(batch_size);
        // Chunks of the first domain in shards before the one in progress.
        let mut before = 0;
        for shard in 0..shards {
            let mut sent: Sent = Vec::new();
            loop {
                // A caller slower than the job keeps this loop busy: the time limit holds here too.
                self.in_time()?;
                if let Some(ndjson) = self.live_chunk(first, shard, sent.len() as u32).await? {
                    let records = ndjson.iter().filter(|b| **b == b'\n').count() as u64;
                    sent.push((records, crc32fast::hash(&ndjson)));
                    self.push(&mut aligner, first, ndjson, records).await?;
                    continue;
                }
                if let Some(manifest) = self.manifest().await? {
                    let listed = manifest.domains.first().map_or(&[][..], |d| &d.chunks[..]);
                    check(&sent, listed.get(before..).unwrap_or_default())?;
                    check_total(total, &manifest)?;
                    let at = Step::Chunk(0, before + sent.len());
                    return self.finish_from(manifest, at, Some(aligner)).await;
                }
                if shards > 1 {
                    if let Some(done) = self.shard_done(shard).await? {
                        let listed = done.domains.first().map_or(&[][..], |d| &d.chunks[..]);
                        check(&sent, listed)?;
                        for entry in &listed[sent.len()..] {
                            let ndjson = self.read(entry).await?;
                            self.push(&mut aligner, first, ndjson, entry.records).await?;
                        }
                        before += listed.len();
                        break;
                    }
                }
                self.idle().await?;
            }
        }
        // Every shard has ended: the manifest follows.
        loop {
            if let Some(manifest) = self.manifest().await? {
                check_total(total, &manifest)?;
                return self.finish_from(manifest, Step::Chunk(0, before), Some(aligner)).await;
            }
            self.idle().await?;
        }
    }

    /// Sends the lines one more chunk of `domain` completes.
    async fn push(
        &self,
        aligner: &mut LineAligner,
        domain: Domain,
        ndjson: Bytes,
        records: u64,
    ) -> Following<()> {
        let Some(block) = aligner.push(ndjson, records) else { return Ok(()) };
        let mut out = Vec::new();
        let batch_size = self.app.config.stream_batch_size as u64;
        write_records_lines(&mut out, domain, block.first_batch, &block.ndjson, batch_size);
        self.send(Bytes::from(out)).await
    }

    /// The finished stream's lines from `step` on.
    async fn finish_from(
        &self,
        manifest: Manifest,
        step: Step,
        aligner: Option<LineAligner>,
    ) -> Following<()> {
        if manifest.job_id != self.meta.job_id || !manifest.is_consistent() {
            return Err(stop("INTERNAL", format!("the manifest of {} is inconsistent", self.meta.job_id)));
        }
        self.rest(step, Some((manifest, aligner))).await
    }

    async fn rest(&self, step: Step, from: Option<(Manifest, Option<LineAligner>)>) -> Following<()> {
        let (manifest, aligner) = match from {
            Some(from) => from,
            None => loop {
                if let Some(m) = self.manifest().await? {
                    break (m, None);
                }
                self.idle().await?;
            },
        };
        let mut lines = Box::pin(results::lines_from(self.app.clone(), manifest, step, aligner));
        while let Some(piece) = lines.next().await {
            self.send(piece).await?;
        }
        Ok(())
    }

    /// The job's total of its first domain: its count, or (without one) the shards' records once
    /// every shard has ended.
    async fn first_total(&self, domain: Domain, ended: &mut [Option<u64>]) -> Following<Option<u64>> {
        let job = self.meta.job_id;
        if let Some(body) = self.get(&layout::count_key(&job)).await? {
            match serde_json::from_slice::<JobCount>(&body) {
                Ok(c) if c.domain == domain => return Ok(Some(c.records)),
                _ => tracing::warn!(job_id = %job, "an unreadable count: waiting for the shards' end"),
            }
        }
        if ended.len() > 1 {
            for (shard, records) in ended.iter_mut().enumerate() {
                if records.is_none() {
                    if let Some(done) = self.shard_done(shard as u32).await? {
                        *records = done.domains.first().map(|d| d.records);
                    }
                }
            }
        }
        Ok(ended.iter().copied().sum())
    }

    /// One chunk of a running shard, any attempt's, checked by its own encoding; None while its slot
    /// is empty (or holds only an LZ4 chunk, sent when the shard ends).
    async fn live_chunk(&self, domain: Domain, shard: u32, chunk: u32) -> Following<Option<Bytes>> {
        let slot = format!("{}{shard:04}-{chunk:06}-", layout::domain_prefix(&self.meta.job_id, domain));
        let listed = self.list(&slot).await?;
        // The newest attempt first (keys end `-a{attempt:03}`): the run that will most likely end the
        // shard.
        for object in listed.into_iter().rev() {
            // Swept meanwhile (a stray of a dead attempt): the next look finds another.
            let Some(stored) = self.get(&object.key).await? else { continue };
            match layout::decode_unlisted(&object.key, stored) {
                Some(ndjson) => return Ok(Some(ndjson)),
                None => tracing::debug!(key = object.key, "a chunk sent when its shard ends"),
            }
        }
        Ok(None)
    }

    /// A finished shard's record.
    async fn shard_done(&self, shard: u32) -> Following<Option<ShardDone>> {
        let key = layout::shard_done_key(&self.meta.job_id, shard);
        match self.get(&key).await? {
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| stop("INTERNAL", format!("{key} is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// The job's manifest, once written.
    async fn manifest(&self) -> Following<Option<Manifest>> {
        let key = layout::manifest_key(&self.meta.job_id);
        match self.get(&key).await? {
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| stop("INTERNAL", format!("{key} is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// A listed chunk's NDJSON, checked against its entry.
    async fn read(&self, entry: &ChunkEntry) -> Following<Bytes> {
        let stored = self
            .get(&entry.key)
            .await?
            .ok_or_else(|| stop("CHUNK_MISSING", format!("result chunk {} is missing", entry.key)))?;
        entry.decode(stored).map_err(|e| stop("CHUNK_CORRUPT", e.to_string()))
    }

    /// An object, None when there is none. A failing store is asked again every [`POLL`] for
    /// [`STORE_PATIENCE`] before the stream ends with `STORE_ERROR` (a stalled S3 is normal weather).
    async fn get(&self, key: &str) -> Following<Option<Bytes>> {
        let mut failures = 0;
        loop {
            match self.app.backends.store.get(key).await {
                Ok(body) => return Ok(Some(body)),
                Err(StoreError::NotFound(_)) => return Ok(None),
                Err(e) => self.store_failed(e, &mut failures).await?,
            }
        }
    }

    /// The objects under `prefix`, with [`get`](Self::get)'s patience.
    async fn list(&self, prefix: &str) -> Following<Vec<trace_core::ports::ObjectInfo>> {
        let mut failures = 0;
        loop {
            match self.app.backends.store.list(prefix).await {
                Ok(listed) => return Ok(listed),
                Err(e) => self.store_failed(e, &mut failures).await?,
            }
        }
    }

    async fn store_failed(&self, e: StoreError, failures: &mut u32) -> Following<()> {
        *failures += 1;
        if *failures * POLL.as_millis() as u32 > STORE_PATIENCE.as_millis() as u32 || self.tx.is_closed() {
            return Err(store_error(e));
        }
        tracing::warn!(job_id = %self.meta.job_id, error = %e, failures, "the result store failed while following: asking again");
        tokio::time::sleep(POLL).await;
        Ok(())
    }

    /// Whether the caller is still there and the follow's time is not up.
    fn in_time(&self) -> Following<()> {
        if self.tx.is_closed() {
            return Err(Stop::Gone);
        }
        if Instant::now() >= self.until {
            return Err(stop(
                "FOLLOW_TIME_LIMIT",
                format!(
                    "job {} is still running after {} s of following: follow it again, or read it when it has finished",
                    self.meta.job_id,
                    self.app.config.follow_for.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Waits for the next look, unless the job ended otherwise, the follow's time is up, or the caller
    /// has gone.
    async fn idle(&self) -> Following<()> {
        self.in_time()?;
        match self.app.backends.jobs.get(&self.meta.job_id).await {
            Ok(Some(meta)) => ended(&meta)?,
            // Lost or unreachable job store: the object store still tells when the result is complete.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_id = %self.meta.job_id, error = %e, "job store unavailable while following")
            }
        }
        let last_sent = Duration::from_millis(self.last_sent_ms.load(Ordering::Relaxed));
        tokio::time::sleep(poll_after(self.started.elapsed().saturating_sub(last_sent))).await;
        Ok(())
    }
}

/// The first domain's total sent in its `domain_start` (the job's count) is the result's: else the
/// source changed after the count (or a retry left an old count), and the lines differ from the
/// finished stream's.
fn check_total(total: u64, manifest: &Manifest) -> Following<()> {
    match manifest.domains.first() {
        Some(d) if d.records == total => Ok(()),
        _ => Err(stop(
            "RESULT_CHANGED",
            format!("the job's first domain has other records than the total announced ({total}): its source changed while it ran; read it again now that it has finished"),
        )),
    }
}

/// A job that failed or was cancelled ends its followed stream with its code.
fn ended(meta: &JobMeta) -> Following<()> {
    match meta.status {
        JobStatus::Failed => {
            let (code, message) = meta
                .error
                .as_ref()
                .map(|e| (e.code.clone(), e.message.clone()))
                .unwrap_or_else(|| ("JOB_FAILED".to_owned(), String::new()));
            Err(Stop::Error(code, format!("job {} failed: {message}", meta.job_id)))
        }
        JobStatus::Cancelled => Err(stop("JOB_CANCELLED", format!("job {} was cancelled", meta.job_id))),
        _ => Ok(()),
    }
}

/// The chunks sent live are the first ones `listed` (same records, same CRC-32).
fn check(sent: &Sent, listed: &[ChunkEntry]) -> Following<()> {
    let same = sent.len() <= listed.len()
        && sent
            .iter()
            .zip(listed)
            .all(|(&(records, crc), entry)| entry.records == records && entry.crc32 == crc);
    if same {
        Ok(())
    } else {
        Err(stop(
            "RESULT_CHANGED",
            "the job's result differs from the records already sent (its source changed between two runs): read it again when it has finished".to_owned(),
        ))
    }
}

fn store_error(e: StoreError) -> Stop {
    stop("STORE_ERROR", format!("the result store failed while following: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::sync::watch;
    use tokio::time::Instant;
    use trace_core::ndjson::StreamLine;
    use trace_core::ports::Delivery;
    use trace_core::{JobId, Principal};

    use crate::testing::{app, slow_source};
    use crate::App;

    /// A job of `ids` ids over history and holds, submitted to the light queue; its messages.
    async fn submitted(app: &App, ids: u64) -> (JobId, Vec<Delivery>) {
        crate::testing::submitted(app, ids, &["history", "holds"], "query_tool").await
    }

    /// Runs each delivery in a task of its own; when the last has ended.
    fn run_all(app: &App, deliveries: Vec<Delivery>) -> tokio::task::JoinHandle<Instant> {
        let app = app.clone();
        tokio::spawn(async move {
            let runs = deliveries.into_iter().map(|d| {
                let app = app.clone();
                async move {
                    let (_, shutdown) = watch::channel(false);
                    let queue = app.backends.light.clone();
                    crate::worker::handle_delivery(&app, &queue, &d, shutdown, None).await
                }
            });
            futures::future::join_all(runs).await;
            Instant::now()
        })
    }

    /// A followed stream's bytes, each line with when it arrived.
    async fn follow(app: &App, job: &JobId) -> Vec<(Instant, String)> {
        let answer = super::stream(app, &Principal::local(), &job.to_string(), None).await.unwrap();
        let mut body = Box::pin(answer.body);
        let (mut lines, mut partial) = (Vec::new(), String::new());
        while let Some(piece) = body.next().await {
            partial.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
            while let Some(at) = partial.find('\n') {
                lines.push((Instant::now(), partial[..at].to_owned()));
                partial.drain(..=at);
            }
        }
        assert!(partial.is_empty());
        lines
    }

    /// The finished job's stream, as lines.
    async fn finished(app: &App, job: &JobId) -> Vec<String> {
        let answer = crate::results::stream(app, &Principal::local(), &job.to_string(), None).await.unwrap();
        let bytes: Vec<u8> = answer
            .body
            .map(|p| p.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        String::from_utf8(bytes).unwrap().lines().map(str::to_owned).collect()
    }

    /// The followed lines are the finished stream's (the first difference told briefly).
    fn same_lines(followed: &[String], finished: &[String], what: &str) {
        let short = |l: Option<&String>| l.map(|l| l.chars().take(160).collect::<String>());
        let first = (0..followed.len().max(finished.len())).find(|&i| followed.get(i) != finished.get(i));
        if let Some(i) = first {
            panic!(
                "{what}: line {i} of {} followed / {} finished differs:\n followed {:?}\n finished {:?}",
                followed.len(),
                finished.len(),
                short(followed.get(i)),
                short(finished.get(i))
            );
        }
    }

    fn kind(line: &str) -> String {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["type"].as_str().unwrap().to_owned()
    }

    /// Followed from before its first chunk: the records come while the job runs, and the lines are
    /// the finished job's, one for one; for a job run whole and one split into three shards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_followed_job_sends_records_while_it_runs_and_ends_as_the_finished_stream() {
        for shards in ["1", "3"] {
            let app = app(&[
                ("TRACE_CHUNK_RECORDS", "500"),
                ("TRACE_DB_ID_BATCH_SIZE", "20"),
                ("TRACE_STREAM_BATCH_SIZE", "300"),
                ("TRACE_SHARD_MIN_IDS", "100"),
                ("TRACE_MAX_SHARDS", shards),
                ("TRACE_LIGHT_WORKER_CONCURRENCY", "4"),
            ])
            .await;
            let (app, _) = slow_source(&app, Duration::from_millis(15));
            let (job, deliveries) = submitted(&app, 600).await;
            assert_eq!(deliveries.len().to_string(), shards);
            let follower = {
                let app = app.clone();
                tokio::spawn(async move { follow(&app, &job).await })
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            let ended = run_all(&app, deliveries).await.unwrap();
            let followed = follower.await.unwrap();
            let first_records = followed.iter().find(|(_, l)| kind(l) == "records").unwrap().0;
            assert!(first_records < ended, "{shards} shard(s): records arrived before the job's end");
            let early = followed.iter().filter(|(at, l)| *at < ended && kind(l) == "records").count();
            let lines: Vec<String> = followed.into_iter().map(|(_, l)| l).collect();
            same_lines(&lines, &finished(&app, &job).await, &format!("{shards} shard(s)"));
            // The first domain's total came from the count the first shard stored.
            let count = app.backends.store.get(&trace_core::layout::count_key(&job)).await.unwrap();
            let count: trace_core::layout::JobCount = serde_json::from_slice(&count).unwrap();
            let start: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
            assert_eq!((count.domain.as_str(), Some(count.records)), ("history", start["total"].as_u64()));
            assert_eq!(kind(lines.last().unwrap()), "complete");
            eprintln!("{shards} shard(s): {early} of the records lines sent before the job ended");
        }
    }

    /// A total announced from a count that the records do not match (the source changed after the
    /// count, or an old count was left) ends the followed stream with `RESULT_CHANGED` instead of
    /// `complete`: its lines would not be the finished stream's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_count_the_records_do_not_match_ends_the_followed_stream_with_result_changed() {
        let app = app(&[("TRACE_CHUNK_RECORDS", "500"), ("TRACE_DB_ID_BATCH_SIZE", "20")]).await;
        let (app, _) = slow_source(&app, Duration::from_millis(5));
        let (job, deliveries) = submitted(&app, 200).await;
        let wrong = trace_core::layout::JobCount { domain: trace_core::Domain::History, records: 1 };
        let key = trace_core::layout::count_key(&job);
        app.backends.store.put(&key, serde_json::to_vec(&wrong).unwrap().into()).await.unwrap();
        let follower = {
            let app = app.clone();
            tokio::spawn(async move { follow(&app, &job).await })
        };
        run_all(&app, deliveries).await.unwrap();
        let lines: Vec<String> = follower.await.unwrap().into_iter().map(|(_, l)| l).collect();
        let start: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(start["total"], 1, "the stored count was announced");
        let Ok(StreamLine::Error { code, .. }) = serde_json::from_str(lines.last().unwrap()) else {
            panic!("{:?}", lines.last())
        };
        assert_eq!(code, "RESULT_CHANGED");
        assert_eq!(kind(finished(&app, &job).await.last().unwrap()), "complete");
    }

    /// A running shard's own record is not followed (it has no result of its own): answered at once
    /// as without `follow`.
    #[tokio::test]
    async fn a_shard_s_own_id_is_answered_as_without_follow() {
        let app = app(&[("TRACE_SHARD_MIN_IDS", "100"), ("TRACE_MAX_SHARDS", "3")]).await;
        let (job, deliveries) = submitted(&app, 300).await;
        let message = trace_core::message::ShardMessage::parse(&deliveries[0].body).unwrap();
        assert!(crate::worker::claimed_for_test(&app, &message).await);
        let shard = message.lease_id();
        assert_ne!(shard, job);
        let followed = tokio::time::timeout(
            Duration::from_secs(5),
            super::stream(&app, &Principal::local(), &shard.to_string(), None),
        )
        .await
        .expect("answered at once");
        let without = crate::results::stream(&app, &Principal::local(), &shard.to_string(), None).await;
        assert_eq!(followed.err().map(|e| e.code()), without.err().map(|e| e.code()));
    }

    /// The looks slow down after a quiet while, and only then.
    #[test]
    fn the_looks_slow_down_after_a_quiet_while() {
        assert_eq!(super::poll_after(Duration::ZERO), super::POLL);
        assert_eq!(super::poll_after(super::QUIET_AFTER - Duration::from_millis(1)), super::POLL);
        assert_eq!(super::poll_after(super::QUIET_AFTER), super::QUIET_POLL);
        assert!(
            super::QUIET_POLL + super::POLL < Duration::from_secs(2),
            "a chunk still reaches the caller within 2 s"
        );
    }

    /// A cancelled job's followed stream ends with an `error` line `JOB_CANCELLED`; a job never run
    /// ends its follow with `FOLLOW_TIME_LIMIT` once `TRACE_FOLLOW_SECONDS` have passed.
    #[tokio::test]
    async fn a_followed_stream_ends_with_an_error_line_for_a_cancelled_job_or_the_time_limit() {
        let app = app(&[("TRACE_FOLLOW_SECONDS", "1")]).await;
        let (job, _) = submitted(&app, 50).await;
        let started = Instant::now();
        let lines = follow(&app, &job).await;
        assert!(started.elapsed() >= Duration::from_secs(1));
        let kinds: Vec<String> = lines.iter().map(|(_, l)| kind(l)).collect();
        assert_eq!(kinds, ["meta", "error"]);
        let Ok(StreamLine::Error { code, .. }) = serde_json::from_str(&lines[1].1) else { panic!() };
        assert_eq!(code, "FOLLOW_TIME_LIMIT");

        let app = crate::testing::app(&[]).await;
        let (job, _) = submitted(&app, 50).await;
        let follower = {
            let app = app.clone();
            tokio::spawn(async move { follow(&app, &job).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        crate::status::cancel(&app, &Principal::local(), &job.to_string()).await.unwrap();
        let lines = follower.await.unwrap();
        let Ok(StreamLine::Error { code, .. }) = serde_json::from_str(&lines.last().unwrap().1) else {
            panic!()
        };
        assert_eq!(code, "JOB_CANCELLED");
    }

    /// A finished job's `follow=true` stream is its finished stream (with its size); an unknown job
    /// is `JOB_NOT_FOUND` either way.
    #[tokio::test]
    async fn following_a_finished_or_unknown_job_answers_as_without_follow() {
        let app = app(&[]).await;
        let (job, deliveries) = submitted(&app, 30).await;
        run_all(&app, deliveries).await.unwrap();
        let answer = super::stream(&app, &Principal::local(), &job.to_string(), None).await.unwrap();
        assert!(answer.bytes.is_some());
        let lines: Vec<String> = follow(&app, &job).await.into_iter().map(|(_, l)| l).collect();
        same_lines(&lines, &finished(&app, &job).await, "finished");
        let unknown = JobId::new().to_string();
        let Err(e) = super::stream(&app, &Principal::local(), &unknown, None).await else { panic!() };
        assert_eq!(e.code(), "JOB_NOT_FOUND");
    }
}
