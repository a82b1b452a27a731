//! The `submit` function: POST /api/trace/events: validate, admit, answer inline (200) or queue a job (202).
//! Lambda when `AWS_LAMBDA_RUNTIME_API` is set, otherwise a local HTTP process on `TRACE_HTTP_ADDR`.

use trace_adapters::runtime::{config_or_exit, init_logging, Backends, BackendsFromConfig};
use trace_service::http::{router, Part};
use trace_service::{serve, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("submit");
    init_logging(config.log_format);
    let backends = Backends::from_config(&config).await?;
    let app = App::try_new(config, backends)?;
    serve::http(&app, router(app.clone(), &[Part::Submit]), false).await.map_err(|e| anyhow::anyhow!(e))
}
