//! The `stream` function: the NDJSON stream and paginated results of finished jobs (streaming responses in Lambda).
//! Lambda when `AWS_LAMBDA_RUNTIME_API` is set, otherwise a local HTTP process on `TRACE_HTTP_ADDR`.

use trace_adapters::runtime::{config_or_exit, init_logging, Backends, BackendsFromConfig};
use trace_service::http::{router, Part};
use trace_service::{serve, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("stream");
    init_logging(config.log_format);
    let backends = Backends::from_config(&config).await?;
    // Streamed through the Function URL; buffered behind the HTTP API (result pages).
    let streaming = config.stream_responses;
    let app = App::try_new(config, backends)?;
    serve::http(&app, router(app.clone(), &[Part::Stream]), streaming).await.map_err(|e| anyhow::anyhow!(e))
}
