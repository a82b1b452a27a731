//! `trace-local`: all four functions in one process on `TRACE_HTTP_ADDR` (default 127.0.0.1:8080),
//! with a heavy and a light worker polling in the background. With no other settings it needs no
//! server: in-process queues, results under `TRACE_LOCAL_DIR`, job metadata in memory, and the
//! reference dataset computed in process, and no authentication (`TRACE_AUTH` defaults to `open` then,
//! with a warning; otherwise to `keys`). Set the variables of the real services to use them instead.

use trace_adapters::runtime::{config_or_exit, init_logging, Backends, BackendsFromConfig};
use trace_core::config::AuthMode;
use trace_core::QueueKind;
use trace_service::http::{router, Part};
use trace_service::{serve, worker, App};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = config_or_exit("trace-local");
    init_logging(config.log_format);
    // With every backend embedded this is the "nothing installed" run: no credentials unless asked for.
    if config.auth.mode_defaulted && config.backends_embedded() {
        config.auth.mode = AuthMode::Open;
    }
    let addr = config.http_addr;
    let backends = Backends::from_config(&config).await?;
    let app = App::try_new(config, backends)?;
    let shutdown = serve::shutdown_signal();
    let workers: Vec<_> = [QueueKind::Heavy, QueueKind::Light]
        .into_iter()
        .map(|kind| tokio::spawn(worker::poll_queue(app.clone(), kind, shutdown.clone())))
        .collect();
    eprintln!(
        "trace-local on http://{addr}\n  try: curl -s -X POST http://{addr}/api/trace/events -H 'content-type: application/json' \\\n         -d '{{\"container_ids\":[\"CID-0000001\",\"CID-0000002\"],\"domains\":[\"holds\"]}}'"
    );
    let metrics = app.config.metrics;
    let routes = trace_service::metrics::with_request_metrics(
        router(app, &[Part::Submit, Part::Status, Part::Stream]),
        metrics,
    );
    serve::local_http(routes, addr, shutdown).await.map_err(|e| anyhow::anyhow!(e))?;
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
