//! `trace-bootstrap`: creates what the system needs on a service stack.
//!
//! ```text
//! trace-bootstrap resources [--prefix NAME]   queues heavy/light with DLQs, the bucket; prints their env lines
//! trace-bootstrap seed [--ids N]              schema + reference dataset for containers 1..N (default 114000)
//! trace-bootstrap api-key --name NAME         a fresh random API key and its TRACE_API_KEYS entry
//! ```
//! Reads `AWS_ENDPOINT_URL`, `DATABASE_URL` and the rest of the configuration from the environment.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use trace_adapters::queue::sqs::create_queue_with_dlq;
use trace_adapters::runtime::{config_or_exit, init_logging};
use trace_adapters::store::s3::S3Store;
use trace_adapters::{aws, source::postgres};
use trace_core::Config;

/// Creates what the system needs on a service stack (the environment says where it is).
#[derive(Debug, Parser)]
#[command(name = "trace-bootstrap")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to create.
#[derive(Debug, Subcommand)]
enum Command {
    /// Queues heavy and light with their DLQs, and the bucket; prints their environment lines.
    Resources {
        /// Prefix of the queues' and the bucket's names.
        #[arg(long, value_name = "NAME", default_value = "trace")]
        prefix: String,
    },
    /// The schema and the reference dataset for containers 1..N.
    Seed {
        /// How many container ids to load.
        #[arg(long, value_name = "N", default_value_t = 114_000)]
        ids: u32,
    },
    /// A fresh random API key (give it to the caller: `TRACE_API_KEY`) and its `TRACE_API_KEYS`
    /// entry `NAME=sha256hex` (give it to the service). The service never sees the key itself.
    ApiKey {
        /// The key's name; the caller is principal `key:NAME`.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ApiKey { name } = &cli.command {
        return api_key(name);
    }
    let config = config_or_exit("trace-bootstrap");
    init_logging(config.log_format);
    match cli.command {
        Command::Resources { prefix } => resources(&config, &prefix).await,
        Command::Seed { ids } => seed(&config, ids).await,
        Command::ApiKey { name } => api_key(&name),
    }
}

/// Prints a new key (32 random bytes, hex, prefixed `trk_`) and its `TRACE_API_KEYS` entry.
fn api_key(name: &str) -> anyhow::Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !name_ok {
        bail!("--name: 1 to 64 letters, digits, '-', '_', '.' or '@'");
    }
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness available"))?;
    let key = format!("trk_{}", trace_core::auth::hex(&random));
    let entry = trace_core::auth::api_key_entry(name, &key);
    println!("TRACE_API_KEY={key}");
    println!("TRACE_API_KEYS entry: {entry}");
    Ok(())
}

/// Creates the queues `{prefix}-heavy` and `{prefix}-light` (with DLQs) and the bucket
/// `{prefix}-results`; prints their environment lines.
async fn resources(config: &Config, prefix: &str) -> anyhow::Result<()> {
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
    S3Store::new(aws::s3_client(&sdk), &bucket).ensure_bucket().await.context("creating the bucket")?;
    println!("TRACE_HEAVY_QUEUE_URL={heavy}");
    println!("TRACE_LIGHT_QUEUE_URL={light}");
    println!("TRACE_BUCKET={bucket}");
    Ok(())
}

/// Loads the schema and the reference dataset for containers 1..`n` into `DATABASE_URL`.
async fn seed(config: &Config, n: u32) -> anyhow::Result<()> {
    let Some(url) = &config.database_url else { bail!("seed needs DATABASE_URL") };
    let pool = postgres::pool(url, 1)?;
    let started = Instant::now();
    postgres::seed(&pool, n).await.context("loading the reference dataset")?;
    eprintln!("seeded {n} container ids in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
