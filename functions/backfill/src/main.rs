//! The `backfill` function: queues trace jobs for the containers whose history changed in a time window
//! (logic and rules: `trace_service::backfill`).
//!
//! In Lambda (`AWS_LAMBDA_RUNTIME_API` set) it answers EventBridge scheduled events: each runs the
//! window ending at the event's `time`. Locally it runs one window and prints its report (JSON):
//!
//! ```text
//! backfill [--window-end 2025-01-02T00:00:00Z]     (default: now; truncated to TRACE_BACKFILL_WINDOW_SECONDS)
//! ```
//!
//! Exit status: 0 when every batch is queued (now or by an earlier run), 1 when a batch failed or the
//! run could not start, 2 on a bad argument or configuration.

use chrono::{DateTime, Utc};
use clap::Parser;
use trace_adapters::runtime::{config_or_exit, in_lambda, init_logging, Backends, BackendsFromConfig};
use trace_service::backfill::{Backfill, Window};
use trace_service::{serve, App};

/// Queues trace jobs for the containers with a history row moved out in
/// [end - TRACE_BACKFILL_WINDOW_SECONDS, end), end truncated to a multiple of
/// TRACE_BACKFILL_WINDOW_SECONDS. A window already run queues nothing again.
#[derive(Debug, Parser)]
#[command(name = "backfill")]
struct Args {
    /// End of the window, RFC 3339 (e.g. 2025-01-02T00:00:00Z); default: now.
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    window_end: Option<DateTime<Utc>>,
}

fn rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2025-01-02T00:00:00Z)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("backfill");
    init_logging(config.log_format);
    let end = if in_lambda() { None } else { Args::parse().window_end };
    if config.heavy_queue_url.is_none() || config.light_queue_url.is_none() {
        tracing::warn!(
            "TRACE_HEAVY_QUEUE_URL / TRACE_LIGHT_QUEUE_URL unset: jobs go to in-process queues and are lost \
             when this run ends (set the queue URLs, e.g. from `trace-bootstrap resources`)"
        );
    }
    let backends = Backends::from_config(&config).await?;
    let run = Backfill::new(App::new(config, backends));
    if in_lambda() {
        return serve::backfill(run).await.map_err(|e| anyhow::anyhow!(e));
    }
    let at = end.unwrap_or_else(Utc::now);
    let window = Window::ending_at(at, run.window_length());
    if window.end != at {
        tracing::info!(given = %at, %window, "window end truncated to a multiple of the window length");
    }
    match run.run(window).await {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("backfill: {e}");
            std::process::exit(1);
        }
    }
}
