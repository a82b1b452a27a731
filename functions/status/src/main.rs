//! The `status` function: job status, history and cancel.
//! Lambda when `AWS_LAMBDA_RUNTIME_API` is set, otherwise a local HTTP process on `TRACE_HTTP_ADDR`.

use trace_adapters::runtime::{config_or_exit, init_logging, Backends, BackendsFromConfig};
use trace_service::http::{router, Part};
use trace_service::{serve, App};

// One thread: a status answer is two small job-store reads, and in Lambda one request runs at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("status");
    init_logging(config.log_format);
    let backends = Backends::from_config(&config).await?;
    let app = App::try_new(config, backends)?;
    serve::http(&app, router(app.clone(), &[Part::Status]), false).await.map_err(|e| anyhow::anyhow!(e))
}
