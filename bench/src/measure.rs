//! The measurements of a job's path: the floor read, the worker, the stream and the sync path, each
//! returning its figures as JSON; and the floor/worker rounds with their medians and ratios.

use std::time::{Duration, Instant};

use anyhow::bail;

use futures::StreamExt;
use serde_json::{json, Map, Value};
use trace_adapters::source::postgres::PgSource;
use trace_core::ports::EventSource;
use trace_core::{Domain, JobId};
use trace_dataset::container_id;

use crate::processes::{cpu_delta, cpu_snapshot};
use crate::system::{ids, Bench, Trace};

impl Bench {
    /// The same SQL the workers run, streamed and discarded.
    pub async fn floor(&self, n: u64) -> anyhow::Result<Value> {
        let source =
            PgSource::new(self.pool.clone(), self.app.config.fetch_size, self.app.config.id_batch_size);
        let ids = ids(n);
        let cpu0 = cpu_snapshot(&[]);
        let started = Instant::now();
        let mut rows = 0u64;
        for batch in ids.chunks(self.app.config.id_batch_size) {
            for domain in Domain::BASE {
                let mut cursor = source.open(domain, batch).await?;
                while let Some(b) = cursor.next_batch().await? {
                    rows += b.len() as u64;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_delta(&cpu0, &cpu_snapshot(&[]));
        Ok(json!({ "ids": n, "rows": rows, "seconds": secs, "rows_per_s": rows as f64 / secs, "cpu_s": cpu }))
    }

    /// One `trace` job of `n` ids in a fresh worker process.
    pub async fn worker(&self, n: u64, trace: Trace) -> anyhow::Result<(Value, JobId)> {
        let (queue, app) = self.own_queue(&format!("{}-{n}", trace.name)).await?;
        let worker = self.spawn_worker(queue)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss = worker.peak_rss_mib();
        let pids = [("worker", worker.child.id())];
        let cpu0 = cpu_snapshot(&pids);
        // From the submit call to the worker's recording the job finished (the wall clock, not this
        // process's polling, ends the run).
        let started = chrono::Utc::now();
        let job = self.enqueue(&app, n, trace).await?;
        let (_, finished) = self.wait(&job).await?;
        let secs = (finished - started).as_seconds_f64();
        let cpu = cpu_delta(&cpu0, &cpu_snapshot(&pids));
        let peak = worker.peak_rss_mib();
        drop(worker);
        let m = self.manifest(&job).await?;
        let bytes: u64 = m.domains.iter().flat_map(|d| &d.chunks).map(|c| c.bytes).sum();
        let chunks: usize = m.domains.iter().map(|d| d.chunks.len()).sum();
        let stored: u64 =
            m.domains.iter().flat_map(|d| &d.chunks).map(|c| c.stored_bytes.unwrap_or(c.bytes)).sum();
        let aggregation_bytes = m.aggregation.as_ref().map(|a| a.to_string().len());
        Ok((
            json!({
                "ids": n, "profile": trace.profile, "domains": trace.domains, "records": m.total_records, "seconds": secs,
                "records_per_s": m.total_records as f64 / secs,
                "ndjson_mb": bytes as f64 / 1e6, "ndjson_mb_per_s": bytes as f64 / 1e6 / secs,
                "stored_mb": stored as f64 / 1e6,
                "object_store_writes": chunks + 1, "chunks": chunks,
                "peak_rss_mib": peak, "idle_rss_mib": idle_rss, "cpu_s": cpu,
                "aggregation_bytes": aggregation_bytes,
            }),
            job,
        ))
    }

    /// Reads the whole result of `job` from a fresh stream process.
    pub async fn stream(&self, job: &JobId) -> anyhow::Result<Value> {
        let (stream, base) = self.spawn_http("stream", &[]).await?;
        let started = Instant::now();
        let response = self.http.get(format!("{base}/api/trace/job/{job}/stream")).send().await?;
        if !response.status().is_success() {
            bail!("stream answered {}", response.status());
        }
        let mut body = response.bytes_stream();
        let mut first_byte = None;
        let mut bytes = 0u64;
        let mut lines = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            first_byte.get_or_insert_with(|| started.elapsed());
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        Ok(json!({
            "bytes": bytes, "lines": lines, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs,
            "first_byte_ms": first_byte.unwrap_or_default().as_secs_f64() * 1e3,
            "peak_rss_mib": stream.peak_rss_mib(),
        }))
    }

    /// `POST /api/trace/events` with `n` ids of `domains` in a fresh submit process.
    pub async fn sync_path(&self, n: u64, domains: &[&str]) -> anyhow::Result<Value> {
        let (submit, base) = self.spawn_http("submit", &[]).await?;
        let ids: Vec<String> = (1..=n).map(container_id).collect();
        let body = serde_json::to_vec(&json!({ "container_ids": ids, "domains": domains }))?;
        let started = Instant::now();
        let response = self.http.post(format!("{base}/api/trace/events")).body(body).send().await?;
        let code = response.status().as_u16();
        let bytes = response.bytes().await?.len();
        let secs = started.elapsed().as_secs_f64();
        Ok(json!({
            "ids": n, "domains": domains, "http_status": code, "answer_bytes": bytes,
            "latency_ms": secs * 1e3, "peak_rss_mib": submit.peak_rss_mib(),
        }))
    }

    /// Floor and worker alternate `repeat` times at `n` ids; the median run by time of each goes into
    /// `results` (the machine's noise hits both alike), with every run kept, and each round's worker time
    /// over the floor just before it. Returns the last job run.
    pub async fn rounds(
        &self,
        n: u64,
        repeat: usize,
        results: &mut Map<String, Value>,
    ) -> anyhow::Result<JobId> {
        let (mut floors, mut workers, mut last_job) = (Vec::new(), Vec::new(), None);
        for round in 1..=repeat {
            let floor = self.floor(n).await?;
            eprintln!("floor {n} ({round}/{repeat}): {floor}");
            floors.push(floor);
            let (worker, job) = self.worker(n, Trace::QUERY_TOOL).await?;
            eprintln!("worker {n} ({round}/{repeat}): {worker}");
            workers.push(worker);
            last_job = Some(job);
        }
        // Each round's ratio: the pair shares the machine's state of the moment (on a VM its speed
        // drifts by ±10% within minutes).
        let mut ratios: Vec<f64> = floors
            .iter()
            .zip(&workers)
            .filter_map(|(f, w)| Some(w["seconds"].as_f64()? / f["seconds"].as_f64()?))
            .collect();
        let by_round = ratios.clone();
        ratios.sort_by(f64::total_cmp);
        results.insert(
            format!("ratio_{n}"),
            json!({ "median_of_rounds": ratios.get(ratios.len() / 2), "rounds": by_round }),
        );
        results.insert(format!("floor_{n}"), median_run(floors));
        results.insert(format!("worker_{n}"), median_run(workers));
        last_job.ok_or_else(|| anyhow::anyhow!("no round run"))
    }
}

/// The run of median time, with every run's time (in round order) and the highest peak RSS of all.
fn median_run(mut runs: Vec<Value>) -> Value {
    let all: Vec<Value> = runs.iter().map(|r| r["seconds"].clone()).collect();
    runs.sort_by(|a, b| {
        a["seconds"].as_f64().unwrap_or(0.0).total_cmp(&b["seconds"].as_f64().unwrap_or(0.0))
    });
    let peak = runs
        .iter()
        .filter_map(|r| r["peak_rss_mib"].as_f64())
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mut median = runs.swap_remove(runs.len() / 2);
    median["runs_seconds"] = Value::Array(all);
    if let Some(peak) = peak {
        median["max_peak_rss_mib"] = json!(peak);
    }
    median
}
