//! **scale**: one job split across 1, 2, 4, 8… worker processes, with the network modelled.
//!
//! This machine has 2 cores, and on loopback the database and the object store answer in
//! microseconds: the workers would only compete for the CPU. In AWS they are hosts away, so a worker
//! spends much of its time waiting for round trips. The model: a TCP proxy (`trace_integration::tcp_proxy`)
//! in front of PostgreSQL and in front of the S3/SQS emulator delays every byte by half a round trip each
//! way and caps each connection's bandwidth ([`LINK`]; measured before the runs: [`calibrate`]). The job of `--ids` ids is split into as many
//! shards as workers (`TRACE_SHARD_MIN_IDS=1`, `TRACE_MAX_SHARDS` = the workers), each worker its own
//! process; figures: wall time from submit to the job's finish, speed-up over one worker, rows/s, and
//! the highest peak RSS of any worker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use trace_integration::tcp_proxy::{Shape, TcpProxy};
use trace_service::App;

use crate::processes::{cpu_delta, cpu_snapshot};
use crate::system::{Bench, Trace};

/// The network of the model: 2 ms round trips (an RDS instance or S3 in the same region, from Lambda),
/// 50 MB/s per connection and direction. What it gives is measured too ([`calibrate`]): tokio's timer
/// has a resolution of 1 ms.
pub const LINK: Shape = Shape { one_way: Duration::from_millis(1), bytes_per_second: Some(50_000_000) };

/// The model as measured through the database proxy: the round trip a query adds (`SELECT 1`) and
/// the throughput of a 20 MB answer, each against the direct connection.
async fn calibrate(direct: &str, proxied: &str) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, url) in [("direct", direct), ("proxied", proxied)] {
        let pool = trace_adapters::source::postgres::pool(url, 1)?;
        let conn = pool.get().await?;
        conn.query_one("SELECT 1", &[]).await?;
        let t = std::time::Instant::now();
        for _ in 0..50 {
            conn.query_one("SELECT 1", &[]).await?;
        }
        let rtt_ms = t.elapsed().as_secs_f64() * 1e3 / 50.0;
        let t = std::time::Instant::now();
        let rows = conn.query("SELECT repeat('x', 1000) FROM generate_series(1, 20000)", &[]).await?;
        let mb_per_s = rows.len() as f64 * 1000.0 / 1e6 / t.elapsed().as_secs_f64();
        out.insert(name.into(), json!({ "query_round_trip_ms": rtt_ms, "bulk_mb_per_s": mb_per_s }));
    }
    Ok(Value::Object(out))
}

/// The socket address of `url`'s host and port (default `default_port`).
async fn address(url: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is no URL"))?;
    let host = parsed.host_str().context("no host")?.to_owned();
    let port = parsed.port().unwrap_or(default_port);
    let found = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    found.context("the host has no address")
}

/// `url` with its port replaced by `port` (the proxy's, on the same loopback host).
fn through(url: &str, port: u16) -> anyhow::Result<String> {
    let mut parsed = reqwest::Url::parse(url)?;
    parsed.set_port(Some(port)).map_err(|()| anyhow::anyhow!("{url} takes no port"))?;
    Ok(parsed.to_string().trim_end_matches('/').to_owned())
}

impl Bench {
    /// Runs the `n`-id job with each number of `workers` behind the latency model.
    pub async fn scale(&self, n: u64, workers: &[usize]) -> anyhow::Result<Value> {
        let database = self.env_var("DATABASE_URL").context("DATABASE_URL")?;
        let endpoint = self.env_var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL")?;
        let db_proxy = TcpProxy::start_shaped(address(&database, 5432).await?, LINK).await;
        let s3_proxy = TcpProxy::start_shaped(address(&endpoint, 80).await?, LINK).await;
        let env = [
            ("DATABASE_URL", through(&database, db_proxy.addr.port())?),
            ("AWS_ENDPOINT_URL", through(&endpoint, s3_proxy.addr.port())?),
        ];
        let measured = calibrate(&database, &env[0].1).await?;
        eprintln!("the network model, measured: {measured}");
        let mut runs = Vec::new();
        let mut one: Option<f64> = None;
        for &count in workers {
            let count = count.max(1);
            let (queue, app) = self.own_queue(&format!("scale-{count}")).await?;
            let mut config = (*app.config).clone();
            config.limits.shard_min_ids = 1;
            config.limits.max_shards = count;
            config.limits.light_worker_concurrency = count;
            let app = App { config: std::sync::Arc::new(config), ..app };
            let procs = (0..count)
                .map(|_| self.spawn_worker_with(queue.clone(), &env))
                .collect::<anyhow::Result<Vec<_>>>()?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pids: Vec<_> = procs.iter().map(|p| ("workers", p.child.id())).collect();
            let started = chrono::Utc::now();
            let cpu_before = cpu_ticks();
            let groups_before = cpu_snapshot(&pids);
            let job = self.enqueue(&app, n, Trace::QUERY_TOOL).await?;
            let (_, finished) = self.wait(&job).await?;
            let groups = cpu_delta(&groups_before, &cpu_snapshot(&pids));
            let cpu = cpu_ticks().zip(cpu_before).map(|((busy, all), (busy0, all0))| {
                100.0 * (busy - busy0) as f64 / (all - all0).max(1) as f64
            });
            let secs = (finished - started).as_seconds_f64();
            let peaks: Vec<f64> = procs.iter().map(|p| p.peak_rss_mib()).collect();
            drop(procs);
            let m = self.manifest(&job).await?;
            let speed_up = one.map_or(1.0, |t| t / secs);
            one.get_or_insert(secs);
            let run = json!({
                "workers": count, "ids": n, "records": m.total_records, "seconds": secs,
                "speed_up": speed_up, "rows_per_s": m.total_records as f64 / secs,
                "max_peak_rss_mib": peaks.iter().copied().fold(0.0, f64::max),
                "peak_rss_mib_per_worker": peaks,
                // The whole machine's (every core's) busy share during the run: workers, PostgreSQL,
                // the object store emulator and the proxies share it.
                "machine_cpu_busy_percent": cpu,
                // Where those cores went, CPU seconds per group ("bench": this process — the proxies
                // of the network model, the submit and the polling).
                "cpu_seconds": groups,
                "cores": std::thread::available_parallelism().map_or(0, usize::from),
            });
            eprintln!("scale {n} ids, {count} workers: {run}");
            runs.push(run);
        }
        Ok(json!({
            "model": { "round_trip_ms": LINK.one_way.as_secs_f64() * 2e3, "mb_per_s_per_connection": 50, "measured": measured },
            "runs": runs,
        }))
    }
}

/// The machine's CPU time so far, in clock ticks: (busy, all), from `/proc/stat`'s `cpu` line (idle and
/// I/O wait are not busy). None where there is no `/proc/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((all - idle, all))
}
