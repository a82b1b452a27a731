//! `trace-bench`: measures the system on the local service stack and prints one table (and writes the
//! same figures as JSON).
//!
//! ```text
//! infra/bench.sh [--ids 114000] [--small 10000] [--repeat 5] [--out bench-results.json]
//!                [--only worker,stream,status,sync]
//! ```
//! (`infra/bench.sh` brings the stack up, builds in release mode and runs this binary.)
//!
//! - **dataset**: loads the reference dataset for `--ids` containers and reports its rows;
//! - **floor**: the workers' SQL (same queries, id batches, fetch size) streamed and discarded;
//! - **worker**: one job run by the `worker` binary as its own process — wall time, records/s, NDJSON
//!   MB/s, object-store writes and the process's peak RSS (`VmHWM` from `/proc`), at `--small` and `--ids`;
//! - **stream**: time to first byte, MB/s and peak RSS of the `stream` process while a client reads the
//!   whole `--ids` result;
//! - **status under load**: p50 / p99 of `GET /api/trace/job/{id}` at a steady 200 requests/s while an
//!   `--ids` job runs in the worker, with no job for comparison; three times: with every process
//!   sharing every CPU; sharing them with the status side (status, Redis, the load) in the real-time
//!   class (`chrt --fifo`, needs root); with the job's processes (worker, PostgreSQL, emulator)
//!   pinned to a CPU of their own and the status side to the others, as on separate hosts in AWS.
//!   Each also reports how long the status process waited for a CPU per request (`schedstat`);
//! - **sync path**: `POST /api/trace/events` with 20,000 ids: latency and peak RSS of the `submit` process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use trace_adapters::queue::sqs::{create_queue_with_dlq, SqsQueue};
use trace_adapters::runtime::Backends;
use trace_adapters::source::postgres::{self, PgSource};
use trace_adapters::store::s3::S3Store;
use trace_core::layout::{self, Manifest};
use trace_core::ports::EventSource;
use trace_core::{Config, ContainerId, Domain, JobId, JobStatus, Profile, QueueKind, TraceRequest};
use trace_dataset::container_id;
use trace_service::{submit, App};

struct Args {
    ids: u64,
    small: u64,
    repeat: usize,
    out: PathBuf,
    skip_seed: bool,
    /// The parts to run (`--only worker,status`); every part when empty.
    only: Vec<String>,
}

/// The parts `--only` can choose.
const PARTS: [&str; 4] = ["worker", "stream", "status", "sync"];

impl Args {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        ids: 114_000,
        small: 10_000,
        repeat: 5,
        out: PathBuf::from("bench-results.json"),
        skip_seed: false,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--ids" => a.ids = value()?.parse()?,
            "--small" => a.small = value()?.parse()?,
            "--repeat" => a.repeat = value()?.parse::<usize>()?.max(1),
            "--out" => a.out = value()?.into(),
            "--skip-seed" => a.skip_seed = true,
            "--only" => {
                a.only = value()?.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
                if let Some(unknown) = a.only.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("--only: {unknown:?} is not one of {}", PARTS.join(", "));
                }
            }
            _ => bail!(
                "usage: trace-bench [--ids N] [--small N] [--repeat N] [--out FILE] [--skip-seed] [--only {}]",
                PARTS.join(",")
            ),
        }
    }
    Ok(a)
}

/// A child process of the benchmark, killed on drop.
struct Proc {
    child: Child,
}

impl Proc {
    /// Peak resident set size so far (`VmHWM`), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of the local service stack, by group: the stack's PostgreSQL, the emulator and Redis.
fn stack_processes() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|p| p.chars().all(|c| c.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(comm) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c) else {
            continue;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let group = if comm == "postgres" {
            "postgres"
        } else if comm.starts_with("redis-server") {
            "redis"
        } else if cmdline.contains("localstack") || cmdline.contains("moto_server") {
            "emulator"
        } else {
            continue;
        };
        out.push((group, pid.to_owned()));
    }
    out
}

/// CPU seconds used so far by process `pid` (or `self`).
fn cpu_seconds(pid: &str) -> Option<f64> {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick = *TICK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / tick)
}

/// CPU seconds used so far by groups of processes: the stack's PostgreSQL, emulator and Redis, this
/// process, and the given child pids.
fn cpu_snapshot(children: &[(&'static str, u32)]) -> std::collections::BTreeMap<&'static str, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (group, pid) in stack_processes() {
        if let Some(secs) = cpu_seconds(&pid) {
            *out.entry(group).or_insert(0.0) += secs;
        }
    }
    if let Some(secs) = cpu_seconds("self") {
        out.insert("bench", secs);
    }
    for (name, pid) in children {
        if let Some(secs) = cpu_seconds(&pid.to_string()) {
            out.insert(name, secs);
        }
    }
    out
}

/// Runs `program args… pid` for each of `pids` (quietly); returns how many failed.
fn run_for_each(program: &str, args: &[&str], pids: &[String]) -> usize {
    pids.iter()
        .filter(|pid| {
            !Command::new(program)
                .args(args)
                .arg(pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// Pins processes (every thread) to the CPUs in `cpus` (a `taskset` list such as `0` or `0-3`); says
/// so when it cannot.
fn pin(pids: &[String], cpus: &str) {
    let failed = run_for_each("taskset", &["--all-tasks", "--cpu-list", "-p", cpus], pids);
    if failed > 0 {
        eprintln!("warning: could not pin {failed} of {} processes to CPUs {cpus}", pids.len());
    }
}

/// Puts processes (every thread) in the real-time class, `SCHED_FIFO` priority 10 with reset-on-fork
/// (what they start later runs in the normal class), or back in the normal class. Needs
/// `CAP_SYS_NICE` (root); says so and returns false when it cannot.
fn realtime(pids: &[String], on: bool) -> bool {
    let args: &[&str] = if on {
        &["--all-tasks", "--pid", "--fifo", "--reset-on-fork", "10"]
    } else {
        &["--all-tasks", "--pid", "--other", "0"]
    };
    let failed = run_for_each("chrt", args, pids);
    if failed > 0 {
        let class = if on { "the real-time class (needs CAP_SYS_NICE)" } else { "the normal class" };
        eprintln!("warning: could not put {failed} of {} processes in {class}", pids.len());
    }
    failed == 0
}

/// Nanoseconds the threads of process `pid` have spent runnable but waiting for a CPU
/// (`/proc/<pid>/task/*/schedstat`, second field).
fn run_delay_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Where the two sides of the status-under-load measurement run: the job's side (the worker,
/// PostgreSQL, the emulator) and the status side (the status process, Redis, the load generator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Every process shares every CPU, in the normal scheduling class.
    Shared,
    /// Every process shares every CPU; the status side is in the real-time class, as a host running
    /// both sides would configure it.
    SharedRealtime,
    /// Each side on CPUs of its own, as on separate hosts in AWS: the job's side the last CPU, the
    /// status side the others.
    Isolated,
}

impl Placement {
    const ALL: [Placement; 3] = [Placement::Shared, Placement::SharedRealtime, Placement::Isolated];

    /// The key of its figures in the JSON.
    fn key(self) -> &'static str {
        match self {
            Placement::Shared => "status_under_load",
            Placement::SharedRealtime => "status_under_load_realtime",
            Placement::Isolated => "status_under_load_isolated",
        }
    }

    /// How the table describes it.
    fn describe(self) -> &'static str {
        match self {
            Placement::Shared => "every process sharing every CPU",
            Placement::SharedRealtime => {
                "every process sharing every CPU, status side in the real-time class"
            }
            Placement::Isolated => "job's processes on a CPU of their own",
        }
    }
}

fn cpu_delta(
    before: &std::collections::BTreeMap<&'static str, f64>,
    after: &std::collections::BTreeMap<&'static str, f64>,
) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in after {
        out.insert(
            k.to_string(),
            json!(((v - before.get(k).copied().unwrap_or(0.0)) * 100.0).round() / 100.0),
        );
    }
    Value::Object(out)
}

/// `MALLOC_ARENA_MAX` of the worker functions in `template.yaml` (`tests/it/template.rs` checks the template).
const WORKER_MALLOC_ARENA_MAX: &str = "2";

struct Bench {
    name: String,
    sqs: aws_sdk_sqs::Client,
    env: Vec<(String, String)>,
    app: App,
    pool: deadpool_postgres::Pool,
    http: reqwest::Client,
    bin_dir: PathBuf,
    logs: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn ids(n: u64) -> Vec<ContainerId> {
    (1..=n).filter_map(|i| ContainerId::parse(container_id(i)).ok()).collect()
}

impl Bench {
    fn spawn(&self, name: &'static str, extra: &[(&str, String)]) -> anyhow::Result<Proc> {
        // One log per process started: `worker-3.log` is the third worker.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let log = std::fs::File::create(self.logs.join(format!("{name}-{nth}.log")))?;
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.env_remove("AWS_LAMBDA_RUNTIME_API").envs(self.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child =
            cmd.stdout(Stdio::null()).stderr(log).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc { child })
    }

    /// A worker on the light queue `queue`, with the environment `template.yaml` gives the workers.
    fn spawn_worker(&self, queue: String) -> anyhow::Result<Proc> {
        let env = [
            ("TRACE_WORKER_QUEUE", "light".to_owned()),
            ("TRACE_LIGHT_QUEUE_URL", queue),
            ("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENA_MAX.to_owned()),
        ];
        self.spawn("worker", &env)
    }

    async fn spawn_http(
        &self,
        name: &'static str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<(Proc, String)> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = vec![("TRACE_HTTP_ADDR", addr.clone())];
        env.extend_from_slice(extra);
        let proc = self.spawn(name, &env)?;
        let base = format!("http://{addr}");
        for _ in 0..200 {
            if self.http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok((proc, base));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{name} did not start; see {}", self.logs.display())
    }

    /// Waits for `job` to finish: when this process saw it, and when the worker recorded it.
    async fn wait(&self, job: &JobId) -> anyhow::Result<(Instant, chrono::DateTime<chrono::Utc>)> {
        loop {
            let meta = self.app.backends.jobs.get(job).await?.context("job vanished")?;
            match meta.status {
                JobStatus::Finished => {
                    return Ok((Instant::now(), meta.completed_at.context("finished without a time")?))
                }
                JobStatus::Failed | JobStatus::Cancelled => {
                    bail!("job {job} ended {}: {:?}", meta.status, meta.error)
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A light queue of its own for one measured job, and the app that enqueues on it. A worker killed
    /// at the end of a measurement may leave a long poll open in the emulator, which would swallow the
    /// next message on the same queue for a whole visibility timeout.
    async fn own_queue(&self, tag: &str) -> anyhow::Result<(String, App)> {
        let visibility = Duration::from_secs(120);
        let unique = &JobId::new().to_string()[..8];
        let name = format!("{}-{tag}-{unique}", self.name);
        let (url, _) = create_queue_with_dlq(&self.sqs, &name, 3, visibility).await?;
        let mut backends = self.app.backends.clone();
        backends.light = Arc::new(SqsQueue::new(self.sqs.clone(), url.clone()));
        Ok((url, App { backends, ..self.app.clone() }))
    }

    async fn enqueue(&self, app: &App, n: u64) -> anyhow::Result<JobId> {
        let request = TraceRequest {
            ids: ids(n),
            profile: Profile::QueryTool,
            domains: Domain::BASE.to_vec(),
            params: Default::default(),
        };
        let accepted = submit::enqueue(app, &request, QueueKind::Light).await?;
        Ok(accepted.job_id)
    }

    async fn manifest(&self, job: &JobId) -> anyhow::Result<Manifest> {
        Ok(serde_json::from_slice(&self.app.backends.store.get(&layout::manifest_key(job)).await?)?)
    }

    /// The same SQL the workers run, streamed and discarded.
    async fn floor(&self, n: u64) -> anyhow::Result<Value> {
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

    /// One job of `n` ids in a fresh worker process.
    async fn worker(&self, n: u64) -> anyhow::Result<(Value, JobId)> {
        let (queue, app) = self.own_queue(&format!("worker-{n}")).await?;
        let worker = self.spawn_worker(queue)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle_rss = worker.peak_rss_mib();
        let pids = [("worker", worker.child.id())];
        let cpu0 = cpu_snapshot(&pids);
        // From the submit call to the worker's recording the job finished (the wall clock, not this
        // process's polling, ends the run).
        let started = chrono::Utc::now();
        let job = self.enqueue(&app, n).await?;
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
        Ok((
            json!({
                "ids": n, "records": m.total_records, "seconds": secs,
                "records_per_s": m.total_records as f64 / secs,
                "ndjson_mb": bytes as f64 / 1e6, "ndjson_mb_per_s": bytes as f64 / 1e6 / secs,
                "stored_mb": stored as f64 / 1e6,
                "object_store_writes": chunks + 1, "chunks": chunks,
                "peak_rss_mib": peak, "idle_rss_mib": idle_rss, "cpu_s": cpu,
            }),
            job,
        ))
    }

    async fn stream(&self, job: &JobId) -> anyhow::Result<Value> {
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

    /// Status latency at a steady `rate` while an `n`-id job runs (for 10 s with no job when `n` is
    /// `None`), with the two sides placed as `placement` says. Also how long the status process
    /// waited for a CPU, per request: the share of the latency that is scheduling.
    async fn status_load(&self, n: Option<u64>, rate: u32, placement: Placement) -> anyhow::Result<Value> {
        let (status, base) = self.spawn_http("status", &[]).await?;
        let tag = match (n, placement) {
            (None, _) => "status-alone",
            (Some(_), Placement::Shared) => "load",
            (Some(_), Placement::SharedRealtime) => "load-realtime",
            (Some(_), Placement::Isolated) => "load-isolated",
        };
        let (queue, app) = self.own_queue(tag).await?;
        // With no job, nobody takes the message: the job stays queued and its status is read as such.
        let worker = match n {
            Some(_) => Some(self.spawn_worker(queue)?),
            None => None,
        };
        let job_side: Vec<String> = stack_processes()
            .into_iter()
            .filter(|(group, _)| *group != "redis")
            .map(|(_, pid)| pid)
            .chain(worker.as_ref().map(|w| w.child.id().to_string()))
            .collect();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let light_side: Vec<String> = stack_processes()
            .into_iter()
            .filter(|(group, _)| *group == "redis")
            .map(|(_, pid)| pid)
            .chain([status.child.id().to_string(), std::process::id().to_string()])
            .collect();
        let isolated = placement == Placement::Isolated && cpus >= 2;
        if isolated {
            pin(&job_side, &(cpus - 1).to_string());
            pin(&light_side, &format!("0-{}", cpus.saturating_sub(2)));
        }
        let in_realtime = placement == Placement::SharedRealtime && realtime(&light_side, true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waited_before = run_delay_ns(status.child.id());
        let started = Instant::now();
        let job = self.enqueue(&app, n.unwrap_or(10)).await?;
        let url = Arc::new(format!("{base}/api/trace/job/{job}"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let wait = async {
            match n {
                Some(_) => self.wait(&job).await.map(|(seen, _)| seen),
                None => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(Instant::now())
                }
            }
        };
        tokio::pin!(wait);
        let done = loop {
            tokio::select! {
                done = &mut wait => break done?,
                _ = tick.tick() => {
                    let (http, url, tx) = (self.http.clone(), url.clone(), tx.clone());
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let ok = http.get(url.as_str()).send().await.is_ok_and(|r| r.status().is_success());
                        let _ = tx.send((t.elapsed(), ok));
                    });
                }
            }
        };
        drop(tx);
        let waited_ns = run_delay_ns(status.child.id()).saturating_sub(waited_before);
        if in_realtime {
            realtime(&light_side, false);
        }
        if isolated {
            let all = format!("0-{}", cpus - 1);
            pin(&job_side, &all);
            pin(&light_side, &all);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut latencies = Vec::new();
        let mut errors = 0u64;
        while let Ok((d, ok)) = rx.try_recv() {
            if ok {
                latencies.push(d.as_secs_f64() * 1e3);
            } else {
                errors += 1;
            }
        }
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
        };
        let secs = (done - started).as_secs_f64();
        Ok(json!({
            "rate_per_s": rate, "isolated": isolated, "realtime": in_realtime,
            "requests": latencies.len() as u64 + errors, "errors": errors,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies.last(),
            "status_cpu_wait_ms_per_request": waited_ns as f64 / 1e6 / (latencies.len() as f64 + errors as f64).max(1.0),
            "job_ids": n, "job_seconds": secs, "status_peak_rss_mib": status.peak_rss_mib(),
            "worker_peak_rss_mib": worker.as_ref().map(Proc::peak_rss_mib),
        }))
    }

    /// `POST /api/trace/events` with `n` ids of `domains` in a fresh submit process.
    async fn sync_path(&self, n: u64, domains: &[&str]) -> anyhow::Result<Value> {
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
}

/// The run with the median `seconds`, with every run's `seconds` and the highest `peak_rss_mib` of all.
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

fn env_or(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run through infra/bench.sh (or bring up infra/local-stack.sh)")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let (endpoint, redis, database) =
        (env_or("AWS_ENDPOINT_URL")?, env_or("REDIS_URL")?, env_or("DATABASE_URL")?);
    let pool = postgres::pool(&database, 4)?;
    let mut results = serde_json::Map::new();

    // Dataset.
    if !args.skip_seed {
        let t = Instant::now();
        postgres::seed(&pool, args.ids as u32).await?;
        eprintln!("seeded {} ids in {:.1} s", args.ids, t.elapsed().as_secs_f64());
    }
    let conn = pool.get().await?;
    let mut rows = serde_json::Map::new();
    let mut total = 0i64;
    for d in Domain::BASE {
        let n: i64 = conn.query_one(&format!("SELECT count(*) FROM {d}"), &[]).await?.get(0);
        total += n;
        rows.insert(d.to_string(), n.into());
    }
    drop(conn);
    rows.insert("total".into(), total.into());
    results.insert("dataset".into(), json!({ "ids": args.ids, "rows": rows }));

    // Resources of this run.
    let name = format!("bench-{}", &JobId::new().to_string()[..8]);
    let sdk = trace_adapters::aws::sdk_config(Some(&endpoint)).await;
    let sqs = trace_adapters::aws::sqs_client(&sdk);
    let visibility = Duration::from_secs(120);
    let (heavy, _) = create_queue_with_dlq(&sqs, &format!("{name}-heavy"), 3, visibility).await?;
    let (light, _) = create_queue_with_dlq(&sqs, &format!("{name}-light"), 3, visibility).await?;
    S3Store::new(trace_adapters::aws::s3_client(&sdk), &name).ensure_bucket().await?;
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("REDIS_URL", redis),
        ("REDIS_KEY_PREFIX", name.clone()),
        ("DATABASE_URL", database),
        ("TRACE_HEAVY_QUEUE_URL", heavy),
        ("TRACE_LIGHT_QUEUE_URL", light),
        ("TRACE_BUCKET", name.clone()),
        ("TRACE_RATE_LIMIT_REQUESTS", "1000000000".into()),
        // The processes' log level: RUST_LOG when set, warnings otherwise.
        ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let lookup: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    let config = Config::from_lookup(|k| lookup.get(k).cloned().or_else(|| std::env::var(k).ok()))?;
    let backends = Backends::from_config(&config).await?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary dir")?.to_path_buf();
    let logs = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&logs)?;
    let bench = Bench {
        name: name.clone(),
        sqs: sqs.clone(),
        env,
        app: App::new(config, backends),
        pool,
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
        bin_dir,
        logs,
    };
    eprintln!("bench {name}: process logs in {}", bench.logs.display());

    // Floor and worker alternate, `--repeat` times each; the median run by time is reported (the
    // machine's noise hits both alike), with every run kept in the JSON.
    let mut last_job = None;
    if args.runs("worker") {
        for n in [args.small, args.ids] {
            let (mut floors, mut workers) = (Vec::new(), Vec::new());
            for round in 1..=args.repeat {
                let floor = bench.floor(n).await?;
                eprintln!("floor {n} ({round}/{}): {floor}", args.repeat);
                floors.push(floor);
                let (worker, job) = bench.worker(n).await?;
                eprintln!("worker {n} ({round}/{}): {worker}", args.repeat);
                workers.push(worker);
                last_job = Some(job);
            }
            // Each round's worker time over the floor just before it: the pair shares the machine's
            // state of the moment (on a VM its speed drifts by ±10% within minutes).
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
        }
    }
    if args.runs("stream") {
        let job = match last_job {
            Some(job) => job,
            None => bench.worker(args.ids).await?.1,
        };
        let stream = bench.stream(&job).await?;
        eprintln!("stream {}: {stream}", args.ids);
        results.insert(format!("stream_{}", args.ids), stream);
    }
    if args.runs("status") {
        let idle = bench.status_load(None, 200, Placement::Shared).await?;
        eprintln!("status, no job: {idle}");
        results.insert("status_no_job".into(), idle);
        for placement in Placement::ALL {
            let load = bench.status_load(Some(args.ids), 200, placement).await?;
            eprintln!("{}: {load}", placement.key());
            results.insert(placement.key().into(), load);
        }
    }
    if args.runs("sync") {
        for domains in [&["history", "materials", "rejects", "holds", "jobs"][..], &["holds"]] {
            let sync = bench.sync_path(20_000, domains).await?;
            eprintln!("sync: {sync}");
            results.insert(format!("sync_20000_{}", domains.len()), sync);
        }
    }

    print_table(&results, &args);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&Value::Object(results))?)?;
    eprintln!("figures written to {}", args.out.display());
    Ok(())
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => v.to_string(),
    }
}

fn print_table(r: &serde_json::Map<String, Value>, a: &Args) {
    let get = |k: &str, f2: &str| r.get(k).map(|v| v[f2].clone()).unwrap_or(Value::Null);
    let runs = |k: &str| {
        get(k, "runs_seconds")
            .as_array()
            .map(|a| a.iter().map(f).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let peak = |k: &str| match get(k, "max_peak_rss_mib") {
        Value::Null => get(k, "peak_rss_mib"),
        v => v,
    };
    let cpu = |k: &str| {
        get(k, "cpu_s")
            .as_object()
            .map(|m| m.iter().map(|(p, s)| format!("{p} {}", f(s))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    println!("\n| measure | figure |\n|---|---|");
    println!("| dataset rows ({} ids) | {} |", a.ids, get("dataset", "rows")["total"]);
    if a.runs("worker") {
        for n in [a.small, a.ids] {
            let (floor, worker) = (format!("floor_{n}"), format!("worker_{n}"));
            println!(
                "| floor read, {n} ids | {} s ({} rows/s; runs {} s) |",
                f(&get(&floor, "seconds")),
                f(&get(&floor, "rows_per_s")),
                runs(&floor)
            );
            println!(
                "| worker, {n} ids | {} s, {} records/s, {} MB NDJSON at {} MB/s ({} MB stored), {} object writes, peak RSS {} MiB (highest of the runs; runs {} s) |",
                f(&get(&worker, "seconds")),
                f(&get(&worker, "records_per_s")),
                f(&get(&worker, "ndjson_mb")),
                f(&get(&worker, "ndjson_mb_per_s")),
                f(&get(&worker, "stored_mb")),
                get(&worker, "object_store_writes"),
                f(&peak(&worker)),
                runs(&worker),
            );
            println!("| worker run CPU s, {n} ids | {} |", cpu(&worker));
            let ratio = get(&worker, "seconds").as_f64().unwrap_or(f64::NAN)
                / get(&floor, "seconds").as_f64().unwrap_or(f64::NAN);
            let rounds = get(&format!("ratio_{n}"), "rounds")
                .as_array()
                .map(|a| {
                    a.iter().map(|r| format!("{:.2}", r.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .join(", ");
            println!(
                "| worker / floor, {n} ids | median of the rounds' ratios {:.2}× (rounds {rounds}); ratio of the medians {ratio:.2}× |",
                get(&format!("ratio_{n}"), "median_of_rounds").as_f64().unwrap_or(f64::NAN)
            );
        }
        let small = peak(&format!("worker_{}", a.small)).as_f64().unwrap_or(f64::NAN);
        let big = peak(&format!("worker_{}", a.ids)).as_f64().unwrap_or(f64::NAN);
        println!("| worker peak RSS {} vs {} ids | {:.2}× |", a.ids, a.small, big / small);
    }
    if a.runs("stream") {
        let s = format!("stream_{}", a.ids);
        println!(
            "| stream, {} ids | first byte {} ms, {} MB/s, peak RSS {} MiB |",
            a.ids,
            f(&get(&s, "first_byte_ms")),
            f(&get(&s, "mb_per_s")),
            f(&get(&s, "peak_rss_mib"))
        );
    }
    if a.runs("status") {
        let figures = |key: &str| {
            format!(
                "p50 {} ms, p99 {} ms, {} requests, {} errors; status process waited {} ms per request for a CPU",
                f(&get(key, "p50_ms")),
                f(&get(key, "p99_ms")),
                get(key, "requests"),
                get(key, "errors"),
                f(&get(key, "status_cpu_wait_ms_per_request"))
            )
        };
        println!("| status at 200 req/s, no job running | {} |", figures("status_no_job"));
        for placement in Placement::ALL {
            let key = placement.key();
            let not_applied = match placement {
                Placement::Shared => false,
                Placement::SharedRealtime => get(key, "realtime") != Value::Bool(true),
                Placement::Isolated => get(key, "isolated") != Value::Bool(true),
            };
            let note = if not_applied { " (NOT APPLIED: see the warnings)" } else { "" };
            println!(
                "| status at 200 req/s during a {}-id job, {}{note} | {} |",
                a.ids,
                placement.describe(),
                figures(key)
            );
        }
    }
    if a.runs("sync") {
        for k in ["sync_20000_5", "sync_20000_1"] {
            println!(
                "| submit, 20000 ids, {} | HTTP {}, {} ms, peak RSS {} MiB |",
                get(k, "domains"),
                get(k, "http_status"),
                f(&get(k, "latency_ms")),
                f(&get(k, "peak_rss_mib"))
            );
        }
    }
}
