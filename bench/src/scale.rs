//! **scale**: one job split across 1, 2, 4, 8… worker processes, with the network modelled.
//!
//! This machine has 2 cores, and on loopback the database and the object store answer in
//! microseconds: the workers would only compete for the CPU. In AWS they are hosts away, so a worker
//! spends much of its time waiting for round trips. The model: a TCP proxy (`trace_integration::tcp_proxy`)
//! in front of PostgreSQL and in front of the S3/SQS emulator delays every byte by half a round trip each
//! way and caps each connection's bandwidth ([`LINK`]). The job of `--ids` ids is split into as many
//! shards as workers (`TRACE_SHARD_MIN_IDS=1`, `TRACE_MAX_SHARDS` = the workers), each worker its own
//! process; figures: wall time from submit to the job's finish, speed-up over one worker, rows/s, and
//! the highest peak RSS of any worker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use trace_integration::tcp_proxy::{Shape, TcpProxy};
use trace_service::App;

use crate::system::{Bench, Trace};

/// The network of the model: 1.5 ms round trips (an RDS instance or S3 in the same region, from Lambda),
/// 50 MB/s per connection and direction.
pub const LINK: Shape = Shape { one_way: Duration::from_micros(750), bytes_per_second: Some(50_000_000) };

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
            let started = chrono::Utc::now();
            let job = self.enqueue(&app, n, Trace::QUERY_TOOL).await?;
            let (_, finished) = self.wait(&job).await?;
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
            });
            eprintln!("scale {n} ids, {count} workers: {run}");
            runs.push(run);
        }
        Ok(json!({
            "model": { "round_trip_ms": LINK.one_way.as_secs_f64() * 2e3, "mb_per_s_per_connection": 50 },
            "runs": runs,
        }))
    }
}
