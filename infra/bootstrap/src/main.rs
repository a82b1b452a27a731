//! `trace-bootstrap`: creates what the system needs on a service stack.
//!
//! ```text
//! trace-bootstrap resources [--prefix NAME]   queues heavy/light with DLQs, the bucket; prints their env lines
//! trace-bootstrap seed [--ids N]              schema + reference dataset for containers 1..N (default 114000)
//! ```
//! Reads `AWS_ENDPOINT_URL`, `DATABASE_URL` and the rest of the configuration from the environment.

use std::time::Instant;

use anyhow::{bail, Context};
use trace_adapters::queue::sqs::create_queue_with_dlq;
use trace_adapters::runtime::{config_or_exit, init_logging};
use trace_adapters::store::s3::S3Store;
use trace_adapters::{aws, source::postgres};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("trace-bootstrap");
    init_logging(config.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("resources") => {
            let prefix = flag("--prefix").unwrap_or_else(|| "trace".to_owned());
            let sdk = aws::sdk_config(config.aws_endpoint_url.as_deref()).await;
            let sqs = aws::sqs_client(&sdk);
            // Visibility: the worker extends it while it works; this is only the initial lease.
            let visibility = config.worker_visibility;
            let (heavy, _) =
                create_queue_with_dlq(&sqs, &format!("{prefix}-heavy"), config.max_receive_count, visibility)
                    .await
                    .context("creating the heavy queue")?;
            let (light, _) =
                create_queue_with_dlq(&sqs, &format!("{prefix}-light"), config.max_receive_count, visibility)
                    .await
                    .context("creating the light queue")?;
            let bucket = format!("{prefix}-results");
            S3Store::new(aws::s3_client(&sdk), &bucket)
                .ensure_bucket()
                .await
                .context("creating the bucket")?;
            println!("TRACE_HEAVY_QUEUE_URL={heavy}");
            println!("TRACE_LIGHT_QUEUE_URL={light}");
            println!("TRACE_BUCKET={bucket}");
        }
        Some("seed") => {
            let n: u32 = match flag("--ids") {
                Some(v) => v.parse().with_context(|| format!("--ids {v:?}: expected a whole number"))?,
                None => 114_000,
            };
            let Some(url) = &config.database_url else { bail!("seed needs DATABASE_URL") };
            let pool = postgres::pool(url, 1)?;
            let started = Instant::now();
            postgres::seed(&pool, n).await.context("loading the reference dataset")?;
            eprintln!("seeded {n} container ids in {:.1} s", started.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!("usage: trace-bootstrap resources [--prefix NAME] | seed [--ids N]");
            std::process::exit(64);
        }
    }
    Ok(())
}
