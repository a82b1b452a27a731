//! `trace-bench`: measures the system on the local service stack and prints one table (and writes the
//! same figures as JSON).
//!
//! ```text
//! infra/bench.sh [--ids 114000] [--small 10000] [--repeat 5] [--out bench-results.json]
//!                [--only worker,stream,status,sync,msd,codecs,e2e]
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
//! - **sync path**: `POST /api/trace/events` with 20,000 ids: latency and peak RSS of the `submit` process;
//! - **msd**: one MSD job of `--ids` ids run by the `worker` binary as its own process, measured as the
//!   worker rounds' jobs are (once, no floor): forward tracing (`upstream_history` + `downstream_rejects`,
//!   the aggregation reads those two only), then backward (`upstream_history` + `materials`, the default;
//!   the aggregation also reads `rejects`);
//! - **codecs**: the chunk encodings compared on `--small` ids' records (ratio, writer CPU, reader speed);
//! - **scale**: the `--ids` job split across `--workers` (1, 2, 4, 8) worker processes behind a latency
//!   model of the network (a proxy: 2 ms round trips, 50 MB/s per connection, measured before the runs) in front of PostgreSQL and
//!   the object store: wall time, speed-up, rows/s, peak RSS per worker (`scale.rs`);
//! - **e2e**: submit to the last record at the client for `--ids` ids through the chunk URLs and through
//!   the stream with Lambda's streaming limits modelled, and the AWS cost of the job, this design and the
//!   seed's.

mod codecs;
mod cost;
mod e2e;
mod measure;
mod processes;
mod scale;
mod status_load;
mod system;
mod table;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use serde_json::{json, Map, Value};
use trace_adapters::source::postgres;
use trace_core::{Domain, JobId};

use crate::status_load::Placement;
use crate::system::{Bench, Stack, Trace};

/// The benchmark's flags.
#[derive(Debug, Parser)]
#[command(name = "trace-bench", about = "Measures the trace job system on the local service stack")]
pub struct Args {
    /// Container ids of the reference dataset, and of the big job.
    #[arg(long, value_name = "N", default_value_t = 114_000)]
    pub ids: u64,
    /// Container ids of the small job.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub small: u64,
    /// Floor/worker rounds at each size (at least 1).
    #[arg(long, value_name = "N", default_value_t = 5)]
    repeat: usize,
    /// Where the figures are written as JSON.
    #[arg(long, value_name = "FILE", default_value = "bench-results.json")]
    out: PathBuf,
    /// Don't load the dataset: the stack already holds it.
    #[arg(long)]
    skip_seed: bool,
    /// Worker processes of the scale part's runs, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "N,..", default_values_t = [1usize, 2, 4, 8])]
    workers: Vec<usize>,
    /// The parts to run, comma-separated; every part when not given.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PARTS")]
    only: Vec<Part>,
}

/// The parts `--only` can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Floor and worker rounds at `--small` and `--ids`.
    Worker,
    /// The stream of an `--ids` result.
    Stream,
    /// Status under load.
    Status,
    /// The sync path.
    Sync,
    /// MSD jobs of `--ids` ids, forward and backward.
    Msd,
    /// The chunk encodings compared (no stack needed).
    Codecs,
    /// Submit to the last record at the client, and the AWS cost of one job, now and in the seed's design.
    E2e,
    /// The `--ids` job split across `--workers` worker processes, the network modelled.
    Scale,
}

impl Args {
    /// Whether `part` is to run.
    pub fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }

    /// Rounds of floor and worker runs.
    fn rounds(&self) -> usize {
        self.repeat.max(1)
    }
}

/// `MALLOC_ARENA_MAX` of the worker functions in `template.yaml` (`tests/it/template.rs` checks the template).
const WORKER_MALLOC_ARENA_MAX: &str = "2";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Map::new();
    if args.runs(Part::Codecs) {
        results.insert("codecs".into(), codecs::measure(args.small, 25_000));
        if args.only == [Part::Codecs] {
            table::print_table(&results, &args);
            std::fs::write(&args.out, serde_json::to_vec_pretty(&Value::Object(results))?)?;
            return Ok(());
        }
    }
    let stack = Stack::from_env()?;
    let pool = postgres::pool(&stack.database, 4)?;
    results.insert("dataset".into(), dataset(&pool, &args).await?);
    let bench = Bench::start(stack, pool).await?;
    eprintln!("bench {}: process logs in {}", bench.name, bench.logs.display());
    run_parts(&bench, &args, &mut results).await?;
    table::print_table(&results, &args);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&Value::Object(results))?)?;
    eprintln!("figures written to {}", args.out.display());
    Ok(())
}

/// Loads the reference dataset (unless `--skip-seed`); its rows by domain.
async fn dataset(pool: &deadpool_postgres::Pool, args: &Args) -> anyhow::Result<Value> {
    if !args.skip_seed {
        let t = Instant::now();
        postgres::seed(pool, args.ids as u32).await?;
        eprintln!("seeded {} ids in {:.1} s", args.ids, t.elapsed().as_secs_f64());
    }
    let conn = pool.get().await?;
    let mut rows = Map::new();
    let mut total = 0i64;
    for d in Domain::BASE {
        let n: i64 = conn.query_one(&format!("SELECT count(*) FROM {d}"), &[]).await?.get(0);
        total += n;
        rows.insert(d.to_string(), n.into());
    }
    rows.insert("total".into(), total.into());
    Ok(json!({ "ids": args.ids, "rows": rows }))
}

/// Runs the parts `args` chooses, in order, each adding its figures to `results`.
async fn run_parts(bench: &Bench, args: &Args, results: &mut Map<String, Value>) -> anyhow::Result<()> {
    let mut last_job: Option<JobId> = None;
    if args.runs(Part::Worker) {
        for n in [args.small, args.ids] {
            last_job = Some(bench.rounds(n, args.rounds(), results).await?);
        }
    }
    if args.runs(Part::Stream) {
        let job = match last_job {
            Some(job) => job,
            None => bench.worker(args.ids, Trace::QUERY_TOOL).await?.1,
        };
        let stream = bench.stream(&job).await?;
        eprintln!("stream {}: {stream}", args.ids);
        results.insert(format!("stream_{}", args.ids), stream);
    }
    if args.runs(Part::Status) {
        let idle = bench.status_load(None, 200, Placement::Shared).await?;
        eprintln!("status, no job: {idle}");
        results.insert("status_no_job".into(), idle);
        for placement in Placement::ALL {
            let load = bench.status_load(Some(args.ids), 200, placement).await?;
            eprintln!("{}: {load}", placement.key());
            results.insert(placement.key().into(), load);
        }
    }
    if args.runs(Part::Sync) {
        for domains in [&["history", "materials", "rejects", "holds", "jobs"][..], &["holds"]] {
            let sync = bench.sync_path(20_000, domains).await?;
            eprintln!("sync: {sync}");
            results.insert(format!("sync_20000_{}", domains.len()), sync);
        }
    }
    if args.runs(Part::E2e) {
        for design in [e2e::Design::NOW, e2e::Design::SEED] {
            let run = bench.end_to_end(args.ids, design).await?;
            eprintln!("end to end, {} design: {run}", design.name);
            results.insert(format!("e2e_{}_{}", design.name, args.ids), run);
        }
    }
    if args.runs(Part::Scale) {
        results.insert(format!("scale_{}", args.ids), bench.scale(args.ids, &args.workers).await?);
    }
    if args.runs(Part::Msd) {
        for trace in Trace::MSD {
            let (msd, _) = bench.worker(args.ids, trace).await?;
            eprintln!("{} {}: {msd}", trace.name, args.ids);
            results.insert(format!("{}_{}", trace.name, args.ids), msd);
        }
    }
    Ok(())
}
