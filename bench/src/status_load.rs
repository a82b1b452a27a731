//! Status under load: the latency of `GET /api/trace/job/{id}` at a steady rate while a job runs (or
//! none), with the job's side and the status side of the machine placed on its CPUs in one of three
//! ways, and how long the status process waited for a CPU per request.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::processes::{pin, realtime, run_delay_ns, stack_processes, Proc};
use crate::system::{Bench, Trace};

/// Where the two sides of the status-under-load measurement run: the job's side (the worker,
/// PostgreSQL, the emulator) and the status side (the status process, Redis, the load generator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
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
    pub const ALL: [Placement; 3] = [Placement::Shared, Placement::SharedRealtime, Placement::Isolated];

    /// The key of its figures in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Placement::Shared => "status_under_load",
            Placement::SharedRealtime => "status_under_load_realtime",
            Placement::Isolated => "status_under_load_isolated",
        }
    }

    /// How the table describes it.
    pub fn describe(self) -> &'static str {
        match self {
            Placement::Shared => "every process sharing every CPU",
            Placement::SharedRealtime => {
                "every process sharing every CPU, status side in the real-time class"
            }
            Placement::Isolated => "job's processes on a CPU of their own",
        }
    }
}

/// The processes of the two sides, and how they were placed.
struct Sides {
    /// The worker, PostgreSQL and the emulator.
    job: Vec<String>,
    /// The status process, Redis and this process (the load generator).
    status: Vec<String>,
    cpus: usize,
    /// Each side was pinned to CPUs of its own.
    isolated: bool,
    /// The status side was put in the real-time class.
    realtime: bool,
}

impl Sides {
    /// Finds the two sides' processes and places them as `placement` says.
    fn place(worker: Option<&Proc>, status: &Proc, placement: Placement) -> Sides {
        let job: Vec<String> = stack_processes()
            .into_iter()
            .filter(|(group, _)| *group != "redis")
            .map(|(_, pid)| pid)
            .chain(worker.map(|w| w.child.id().to_string()))
            .collect();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let status: Vec<String> = stack_processes()
            .into_iter()
            .filter(|(group, _)| *group == "redis")
            .map(|(_, pid)| pid)
            .chain([status.child.id().to_string(), std::process::id().to_string()])
            .collect();
        let isolated = placement == Placement::Isolated && cpus >= 2;
        if isolated {
            pin(&job, &(cpus - 1).to_string());
            pin(&status, &format!("0-{}", cpus.saturating_sub(2)));
        }
        let realtime = placement == Placement::SharedRealtime && realtime(&status, true);
        Sides { job, status, cpus, isolated, realtime }
    }

    /// Puts every process back in the normal class, on every CPU.
    fn restore(&self) {
        if self.realtime {
            realtime(&self.status, false);
        }
        if self.isolated {
            let all = format!("0-{}", self.cpus - 1);
            pin(&self.job, &all);
            pin(&self.status, &all);
        }
    }
}

/// The answers to the load: each request's latency and whether it succeeded.
type Answers = UnboundedReceiver<(Duration, bool)>;

/// Latencies of the successful requests (ms, sorted) and the count of failed ones.
struct Latencies {
    ms: Vec<f64>,
    errors: u64,
}

impl Latencies {
    /// The answers received so far.
    fn drain(mut answers: Answers) -> Latencies {
        let (mut ms, mut errors) = (Vec::new(), 0u64);
        while let Ok((d, ok)) = answers.try_recv() {
            if ok {
                ms.push(d.as_secs_f64() * 1e3);
            } else {
                errors += 1;
            }
        }
        ms.sort_by(f64::total_cmp);
        Latencies { ms, errors }
    }

    /// The `p` quantile (0..1).
    fn pct(&self, p: f64) -> Option<f64> {
        self.ms.get(((self.ms.len() as f64 * p) as usize).min(self.ms.len().saturating_sub(1))).copied()
    }

    /// Requests sent.
    fn requests(&self) -> u64 {
        self.ms.len() as u64 + self.errors
    }
}

impl Bench {
    /// Status latency at a steady `rate` while an `n`-id job runs (for 10 s with no job when `n` is
    /// `None`), with the two sides placed as `placement` says. Also how long the status process
    /// waited for a CPU, per request: the share of the latency that is scheduling.
    pub async fn status_load(
        &self,
        n: Option<u64>,
        rate: u32,
        placement: Placement,
    ) -> anyhow::Result<Value> {
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
        let sides = Sides::place(worker.as_ref(), &status, placement);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waited_before = run_delay_ns(status.child.id());
        let started = Instant::now();
        let job = self.enqueue(&app, n.unwrap_or(10), Trace::QUERY_TOOL).await?;
        let wait = async {
            match n {
                Some(_) => self.wait(&job).await.map(|(seen, _)| seen),
                None => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(Instant::now())
                }
            }
        };
        let (done, answers) = self.load(format!("{base}/api/trace/job/{job}"), rate, wait).await?;
        let waited_ns = run_delay_ns(status.child.id()).saturating_sub(waited_before);
        sides.restore();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let latencies = Latencies::drain(answers);
        Ok(json!({
            "rate_per_s": rate, "isolated": sides.isolated, "realtime": sides.realtime,
            "requests": latencies.requests(), "errors": latencies.errors,
            "p50_ms": latencies.pct(0.50), "p99_ms": latencies.pct(0.99), "max_ms": latencies.ms.last(),
            "status_cpu_wait_ms_per_request": waited_ns as f64 / 1e6 / (latencies.requests() as f64).max(1.0),
            "job_ids": n, "job_seconds": (done - started).as_secs_f64(),
            "status_peak_rss_mib": status.peak_rss_mib(),
            "worker_peak_rss_mib": worker.as_ref().map(Proc::peak_rss_mib),
        }))
    }

    /// `GET url` at a steady `rate` until `until` ends; returns what it returned and the answers (those
    /// still in flight arrive later).
    async fn load(
        &self,
        url: String,
        rate: u32,
        until: impl Future<Output = anyhow::Result<Instant>>,
    ) -> anyhow::Result<(Instant, Answers)> {
        let url = Arc::new(url);
        let (tx, rx) = unbounded_channel();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        tokio::pin!(until);
        let done = loop {
            tokio::select! {
                done = &mut until => break done?,
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
        Ok((done, rx))
    }
}
