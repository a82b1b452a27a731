//! The `worker` function: runs queue messages (job shards) of `TRACE_WORKER_QUEUE` into result chunks.
//! Lambda (SQS events, partial batch responses) when `AWS_LAMBDA_RUNTIME_API` is set, otherwise a
//! local process that long-polls its queue and stops cleanly on SIGTERM/SIGINT.

use trace_adapters::runtime::{config_or_exit, init_logging, Backends, BackendsFromConfig};
use trace_service::{serve, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("worker");
    init_logging(config.log_format);
    let backends = Backends::from_config(&config).await?;
    serve::worker(App::new(config, backends)).await.map_err(|e| anyhow::anyhow!(e))
}
