//! What a user waits for and what one job costs (`--only e2e`): the time from the submit call to the
//! last record at the client for an `--ids` job, read (a) through the chunk URLs, several at once, and
//! (b) through the stream route with Lambda's streaming limits modelled; and the job's AWS cost at list
//! prices from the counts measured — for this design and for the seed's (chunks of 5,000 records as
//! LZ4 blocks, read through the stream or result pages).
//!
//! Every function runs as its own process (submit, status, stream, worker), the client is the `trace`
//! library as a user runs it, polling every [`POLL`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use trace_client::{Auth, Client, ClientConfig, Secret, SubmitRequest, Submitted};
use trace_core::JobId;
use trace_dataset::container_id;

use crate::cost::{self, Invocations, JobCounts};
use crate::system::Bench;

/// The client's status poll interval in these runs (the `trace` command's default is 3 s; the
/// dashboard polls every few seconds too: a user waits up to one interval more than measured here).
const POLL: Duration = Duration::from_millis(500);

/// Memory (MB) of the functions in `template.yaml` (the heavy worker: its `HeavyWorkerMemory` default;
/// a job of more than 40,000 ids is heavy).
mod memory_mb {
    pub const SUBMIT: u64 = 256;
    pub const STATUS: u64 = 256;
    pub const STREAM: u64 = 512;
    pub const HEAVY_WORKER: u64 = 3008;
}

/// Lambda's response streaming: the first 6 MB at full speed, then at most 2 MB/s, at most 200 MiB in all
/// (the same cap as the tests' Runtime API emulator).
mod lambda_stream {
    pub const FREE_BYTES: f64 = 6e6;
    pub const BYTES_PER_S: f64 = 2e6;
    pub const MAX_BYTES: u64 = 200 << 20;
}

/// A layout of the stored result, as the worker's environment sets it.
#[derive(Debug, Clone, Copy)]
pub struct Design {
    /// Its name in the figures.
    pub name: &'static str,
    chunk_records: u32,
    encoding: &'static str,
    /// Whether the stream route compresses for a caller that accepts gzip.
    stream_gzip: bool,
}

impl Design {
    /// This project's: gzip chunks of 25,000 records.
    pub const NOW: Design =
        Design { name: "now", chunk_records: 25_000, encoding: "gzip", stream_gzip: true };
    /// The seed's: LZ4 blocks of 5,000 records.
    pub const SEED: Design =
        Design { name: "seed", chunk_records: 5_000, encoding: "lz4", stream_gzip: false };
}

/// The functions of one run, and a client of them.
struct Functions {
    client: Client,
    stream_base: String,
    _procs: Vec<crate::processes::Proc>,
}

impl Bench {
    async fn functions(&self, design: Design) -> anyhow::Result<Functions> {
        let (queue, _) = self.own_queue(&format!("e2e-{}", design.name)).await?;
        // A non-MSD job of more than TRACE_EVENTS_CID_LIMIT (50,000) ids is refused by default: the limit is
        // raised here so that the one 114,000-id job measures the path every large job takes (an MSD job
        // bypasses the limit in production and goes the same way).
        let submit_env = [
            ("TRACE_HEAVY_QUEUE_URL", queue.clone()),
            ("TRACE_LIGHT_QUEUE_URL", queue.clone()),
            ("TRACE_EVENTS_CID_LIMIT", "1000000".to_owned()),
        ];
        let (submit, submit_base) = self.spawn_http("submit", &submit_env).await?;
        let (status, status_base) = self.spawn_http("status", &[]).await?;
        // The stream compresses as it does in Lambda when the caller accepts gzip.
        let compression = if design.stream_gzip { "gzip" } else { "off" };
        let (stream, stream_base) =
            self.spawn_http("stream", &[("TRACE_STREAM_COMPRESSION", compression.into())]).await?;
        let worker = self.spawn_worker_with(
            queue,
            &[
                ("TRACE_CHUNK_RECORDS", design.chunk_records.to_string()),
                ("TRACE_CHUNK_ENCODING", design.encoding.into()),
            ],
        )?;
        let mut config = ClientConfig::new(status_base);
        config.submit_url = Some(submit_base);
        config.stream_url = Some(stream_base.clone());
        config.auth = Auth::ApiKey(Secret::new(self.api_key.clone()));
        config.poll_interval = POLL;
        Ok(Functions {
            client: Client::new(config)?,
            stream_base,
            _procs: vec![submit, status, stream, worker],
        })
    }

    /// Redis commands served so far (`INFO commandstats`, the bench's own `INFO` calls left out).
    async fn redis_commands(&self) -> anyhow::Result<u64> {
        let url = self.env_var("REDIS_URL").context("REDIS_URL is not set")?;
        let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
        Ok(info
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Submits an `n`-id job of the five tables and waits for it; figures of the wait.
    async fn submit_and_wait(&self, f: &Functions, n: u64) -> anyhow::Result<(JobId, Value, Instant)> {
        let request = SubmitRequest::new((1..=n).map(container_id));
        let started = Instant::now();
        let Submitted::Accepted(accepted) = f.client.submit(&request).await? else {
            bail!("{n} ids were answered inline")
        };
        let submit_ms = started.elapsed().as_secs_f64() * 1e3;
        let job = accepted.job_id;
        let mut polls = 0u64;
        let info = f.client.wait(&job, |_| polls += 1).await?;
        let finished = started.elapsed().as_secs_f64();
        let run_s = match (info.started_at, info.completed_at) {
            (Some(s), Some(c)) => (c - s).as_seconds_f64(),
            _ => finished,
        };
        let figures = json!({
            "submit_ms": submit_ms, "polls": polls, "finished_at_client_s": finished, "worker_run_s": run_s,
        });
        Ok((job, figures, started))
    }

    /// (a): the chunk list, then every chunk through its URL, `parallel` at once, in order.
    async fn read_chunk_urls(&self, f: &Functions, job: &JobId, parallel: usize) -> anyhow::Result<Value> {
        let started = Instant::now();
        let (mut records, mut lines) = (0u64, 0u64);
        // As `trace stream` reads: the chunks' records unparsed, each turned into the stream's lines.
        let list = f.client.chunks(job).await?;
        let mut stream = f.client.read_chunk_pieces(list, parallel, |_| {});
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            match piece? {
                trace_client::Piece::Records(block) => {
                    out.clear();
                    lines += block.write_lines(&mut out);
                    records += block.records;
                }
                trace_client::Piece::Line(_) => lines += 1,
            }
        }
        Ok(
            json!({ "read_s": started.elapsed().as_secs_f64(), "records": records, "lines": lines, "parallel": parallel }),
        )
    }

    /// (b): the stream route, accepting gzip as a browser does; the wire bytes, and when 6 MB had arrived.
    async fn read_stream(&self, f: &Functions, job: &JobId) -> anyhow::Result<Value> {
        let url = format!("{}/api/trace/job/{job}/stream", f.stream_base);
        let started = Instant::now();
        let response = self.http.get(url).header("accept-encoding", "gzip").send().await?;
        let code = response.status().as_u16();
        let header =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (encoding, plain_bytes) = (header("content-encoding"), header("x-trace-stream-bytes"));
        if !response.status().is_success() {
            let body: Value = response.json().await.unwrap_or_default();
            return Ok(json!({ "http_status": code, "refused": body["code"] }));
        }
        let (mut wire, mut at_6mb) = (0u64, None);
        let mut decoder = flate2::write::GzDecoder::new(LineCounter(0));
        let mut body = response.bytes_stream();
        while let Some(piece) = body.next().await {
            let piece = piece?;
            wire += piece.len() as u64;
            if wire as f64 >= lambda_stream::FREE_BYTES && at_6mb.is_none() {
                at_6mb = Some(started.elapsed().as_secs_f64());
            }
            if encoding.is_some() {
                std::io::Write::write_all(&mut decoder, &piece)?;
            } else {
                decoder.get_mut().0 += piece.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        let lines = if encoding.is_some() { decoder.finish()?.0 } else { decoder.get_ref().0 };
        let read_s = started.elapsed().as_secs_f64();
        let modelled = match at_6mb {
            Some(t) => t + (wire as f64 - lambda_stream::FREE_BYTES) / lambda_stream::BYTES_PER_S,
            None => read_s,
        };
        Ok(json!({
            "http_status": code, "content_encoding": encoding, "plain_bytes": plain_bytes, "wire_bytes": wire,
            "lines": lines, "read_s": read_s, "lambda_modelled_s": modelled,
            "over_lambda_cap": wire > lambda_stream::MAX_BYTES,
        }))
    }

    /// One design's end-to-end run of an `n`-id job and its cost.
    pub async fn end_to_end(&self, n: u64, design: Design) -> anyhow::Result<Value> {
        let f = self.functions(design).await?;
        let redis0 = self.redis_commands().await?;
        let (job, wait, started) = self.submit_and_wait(&f, n).await?;
        let m = self.manifest(&job).await?;
        let chunks: u64 = m.domains.iter().map(|d| d.chunks.len() as u64).sum();
        let stored: u64 =
            m.domains.iter().flat_map(|d| &d.chunks).map(|c| c.stored_bytes.unwrap_or(c.bytes)).sum();
        let plain: u64 = m.domains.iter().flat_map(|d| &d.chunks).map(|c| c.bytes).sum();
        let pages: u64 = m.domains.iter().map(|d| d.records.div_ceil(5000)).sum();
        let at_finish = started.elapsed().as_secs_f64();
        let urls = if design.encoding == "gzip" {
            let read = self.read_chunk_urls(&f, &job, 4).await?;
            let last_record = started.elapsed().as_secs_f64();
            Some((read, last_record))
        } else {
            None
        };
        let redis_commands = self.redis_commands().await?.saturating_sub(redis0);
        let stream = self.read_stream(&f, &job).await?;
        let stream_total = stream["lambda_modelled_s"].as_f64().map(|s| at_finish + s);
        // Pages: the route's rate limit (60 a minute, `TRACE_RATE_LIMIT_REQUESTS`) bounds a reader.
        let pages_minutes = pages as f64 / 60.0;

        let ms = |s: f64| (s * 1e3).ceil() as u64;
        let worker_s = wait["worker_run_s"].as_f64().unwrap_or(0.0);
        let polls = wait["polls"].as_u64().unwrap_or(0);
        let base = |reader: Vec<Invocations>, gets: u64, transfer: u64| {
            let mut lambda = vec![
                Invocations {
                    function: "submit",
                    memory_mb: memory_mb::SUBMIT,
                    count: 1,
                    billed_ms: ms(wait["submit_ms"].as_f64().unwrap_or(0.0) / 1e3),
                },
                // A poll is billed at least 1 ms; measured at the client they take a few.
                Invocations {
                    function: "status",
                    memory_mb: memory_mb::STATUS,
                    count: polls,
                    billed_ms: polls * 3,
                },
                Invocations {
                    function: "worker (heavy)",
                    memory_mb: memory_mb::HEAVY_WORKER,
                    count: 1,
                    billed_ms: ms(worker_s),
                },
            ];
            lambda.extend(reader);
            JobCounts {
                lambda,
                api_requests: 1 + polls + 1,
                // Input, chunks, manifest.
                s3_puts: chunks + 2,
                // The worker's input read, the reader's manifest read, the chunks.
                s3_gets: 2 + gets,
                stored_bytes: stored,
                stored_seconds: self.app.config.job_ttl.as_secs(),
                // Send, receive, delete, and a visibility extension per heartbeat.
                sqs_requests: 3 + (worker_s / self.app.config.worker_heartbeat.as_secs_f64()) as u64,
                redis_commands,
                transfer_bytes: transfer,
            }
        };
        let mut readers = serde_json::Map::new();
        if let Some((read, last)) = &urls {
            let chunk_list = Invocations {
                function: "stream (chunk list)",
                memory_mb: memory_mb::STREAM,
                count: 1,
                billed_ms: 50,
            };
            let counts = base(vec![chunk_list], chunks, stored);
            readers.insert(
                "chunk_urls".into(),
                json!({
                    "submit_to_last_record_s": last, "read": read, "cost": cost::dollars(&counts),
                }),
            );
        }
        let stream_fn = Invocations {
            function: "stream",
            memory_mb: memory_mb::STREAM,
            count: 1,
            billed_ms: ms(stream["lambda_modelled_s"].as_f64().unwrap_or(0.0)),
        };
        let wire = stream["wire_bytes"].as_u64().unwrap_or(0);
        let streamable = stream["http_status"] == 200 && !stream["over_lambda_cap"].as_bool().unwrap_or(true);
        readers.insert("stream".into(), json!({
            "submit_to_last_record_s": if streamable { json!(stream_total) } else { Value::Null },
            "read": stream,
            "cost": if streamable { cost::dollars(&base(vec![stream_fn], chunks, wire)) } else { Value::Null },
        }));
        // Pages: one stream invocation per page (~1 chunk read each), rate-limited.
        let page_fn = Invocations {
            function: "stream (pages)",
            memory_mb: memory_mb::STREAM,
            count: pages,
            billed_ms: pages * 40,
        };
        readers.insert(
            "pages".into(),
            json!({
                "pages": pages, "minutes_at_rate_limit": pages_minutes,
                "submit_to_last_record_s": at_finish + pages_minutes * 60.0,
                "cost": cost::dollars(&base(vec![page_fn], pages, plain)),
            }),
        );
        Ok(json!({
            "design": design.name, "chunk_records": design.chunk_records, "encoding": design.encoding,
            "ids": n, "records": m.total_records, "chunks": chunks, "object_writes": chunks + 2,
            "ndjson_mb": plain as f64 / 1e6, "stored_mb": stored as f64 / 1e6,
            "wait": wait, "readers": readers,
        }))
    }
}

/// Counts the newlines written into it.
struct LineCounter(u64);

impl std::io::Write for LineCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
