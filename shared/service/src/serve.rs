//! Running a function in Lambda or as a local process, from the same code.
//!
//! In Lambda (`AWS_LAMBDA_RUNTIME_API` set, also by `cargo lambda watch`) the HTTP functions answer
//! API Gateway / Function URL events through `lambda_http` (the stream function with response
//! streaming), and the worker answers SQS events with a partial batch response. Locally, the router is
//! served with `axum::serve` and the worker long-polls its queue; both stop cleanly on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use axum::Router;
use lambda_runtime::{service_fn, LambdaEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use trace_core::config::in_lambda;
use trace_core::ports::{Delivery, JobQueue};
use trace_core::QueueKind;

use crate::backfill::{Backfill, Window};
use crate::worker::{self, Disposition};
use crate::App;

/// Errors of the serving loops (the runtime's, or binding a socket).
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// A watch that turns true on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

/// Serves an HTTP function: through Lambda when in Lambda (streaming responses when `streaming`),
/// else on `TRACE_HTTP_ADDR` until a shutdown signal. One EMF line per request when `TRACE_METRICS`
/// says so ([`crate::metrics`]).
pub async fn http(app: &App, router: Router, streaming: bool) -> Result<(), ServeError> {
    let router = crate::metrics::with_request_metrics(router, app.config.metrics);
    if in_lambda() {
        let router = crate::http::with_request_ids(router);
        return if streaming {
            lambda_http::run_with_streaming_response(router).await
        } else {
            lambda_http::run(router).await
        };
    }
    local_http(router, app.config.http_addr, shutdown_signal()).await
}

/// Serves `router` on `addr` until `shutdown` turns true (every request with its id, as in Lambda).
pub async fn local_http(
    router: Router,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let router = crate::http::with_request_ids(router);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Runs the worker of `TRACE_WORKER_QUEUE`: SQS events in Lambda, a polling loop otherwise.
pub async fn worker(app: App) -> Result<(), ServeError> {
    let kind = app.config.worker_queue;
    if in_lambda() {
        let app = Arc::new(app);
        return lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
            let app = app.clone();
            let time_left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
            let invocation_ends = Instant::now() + time_left;
            async move {
                Ok::<_, lambda_runtime::Error>(
                    sqs_batch(&app, kind, event.payload, Some(invocation_ends)).await,
                )
            }
        }))
        .await;
    }
    worker::poll_queue(app, kind, shutdown_signal()).await;
    Ok(())
}

/// Handles an SQS event: every record that is not done is reported as a batch item failure, so only
/// it comes back; the others are deleted by Lambda. `invocation_ends` is when the invocation ends.
pub async fn sqs_batch(
    app: &App,
    kind: QueueKind,
    event: SqsEvent,
    invocation_ends: Option<Instant>,
) -> SqsBatchResponse {
    let queue: Arc<dyn JobQueue> = app.backends.queue(kind).clone();
    let (_never, shutdown) = watch::channel(false);
    let mut failures = Vec::new();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let delivery = Delivery {
            receive_count: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            attributes: record
                .message_attributes
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
                .collect::<HashMap<_, _>>(),
            message_id: message_id.clone(),
            receipt: record.receipt_handle.clone().unwrap_or_default(),
            body: record.body.clone().unwrap_or_default(),
        };
        match worker::handle_delivery(app, &queue, &delivery, shutdown.clone(), invocation_ends).await {
            Disposition::Delete => {}
            Disposition::Retry { after } => {
                if let Err(e) = queue.extend_visibility(&delivery.receipt, after).await {
                    tracing::warn!(message_id, error = %e, "could not set the retry delay");
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                failures.push(failure);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Serves the backfill in Lambda: each EventBridge event (the schedule's "Scheduled Event") runs the
/// window ending at its `time`. A run with failed batches answers an error, so that Lambda retries it
/// (the retry queues only the unmarked batches).
pub async fn backfill(backfill: Backfill) -> Result<(), ServeError> {
    let backfill = Arc::new(backfill);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let backfill = backfill.clone();
        async move {
            let window = Window::of_event(&event.payload, backfill.window_length(), chrono::Utc::now());
            tracing::info!(%window, time = ?event.payload.time, detail_type = %event.payload.detail_type, "backfill event");
            let report = backfill.run(window).await?;
            if report.failed > 0 {
                return Err(format!(
                    "backfill of {window}: {} of {} batches could not be queued (a retry queues them)",
                    report.failed,
                    report.batches.len()
                )
                .into());
            }
            Ok::<_, lambda_runtime::Error>(report)
        }
    }))
    .await
}
