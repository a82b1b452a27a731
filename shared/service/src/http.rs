//! HTTP: the routes of each function, the authentication and rate-limit layers, and the one place a [`TraceError`]
//! becomes an answer (status, JSON body with its `code`, `Retry-After`).
//!
//! Every job route acts as the caller's [`Principal`], taken from the request's extensions: a job is
//! its submitter's, and another caller's job answers like an unknown one.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use trace_core::{Principal, TraceError};

use crate::{auth, chunks, results, status, submit, App};

/// A [`TraceError`] as an HTTP answer.
#[derive(Debug)]
pub struct ApiError(pub TraceError);

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    /// The status and JSON body, with the request's id ([`request_id`]) in the body and the
    /// `x-request-id` header. A 5xx is logged with its details (the error's sources) under the same id;
    /// its body tells only what failed.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let id = request_id();
        if status.is_server_error() {
            // As an error value, so the log shows its sources too.
            tracing::error!(
                request_id = %id,
                code = self.0.code(),
                error = &self.0 as &dyn std::error::Error,
                "request failed"
            );
        }
        let mut response = (status, Json(self.0.body_for(&id))).into_response();
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        if let TraceError::TooManyRequests { retry_after_seconds } = self.0 {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}

/// The response header that carries the request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being answered, set by [`with_request_ids`].
    static REQUEST_ID: String;
}

/// The id of the request being answered: Lambda's request id in Lambda, a fresh UUID otherwise (also
/// outside [`with_request_ids`]).
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| uuid_v4())
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Gives every request an id — the Lambda invocation's request id when there is one (so the log lines
/// and Lambda's own records agree), else a new UUID — that error bodies carry ([`ApiError`]), every
/// log line of the request carries (a span), and every answer returns in `x-request-id`.
pub fn with_request_ids(router: Router) -> Router {
    router.layer(middleware::from_fn(identify_request))
}

async fn identify_request(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<lambda_runtime::Context>()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(uuid_v4);
    let span = tracing::info_span!("request", request_id = %id);
    let mut response =
        tracing::Instrument::instrument(REQUEST_ID.scope(id.clone(), next.run(request)), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Which routes a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `POST /api/trace/events`.
    Submit,
    /// Job status, history, cancel.
    Status,
    /// Stream and result pages.
    Stream,
}

/// The router of the given parts (each function serves one; the local run serves all), plus
/// `GET /health`. Every route but `/health` is behind the authentication layer ([`auth::layer`]),
/// which runs first: an unauthenticated request is answered 401 before it is counted or reaches a
/// backend.
pub fn router(app: App, parts: &[Part]) -> Router {
    let mut api = Router::new();
    let counted = || middleware::from_fn_with_state(app.clone(), rate_limit);
    for part in parts {
        match part {
            Part::Submit => {
                // Counted by the handler on the submit limiter.
                api = api.route(
                    "/api/trace/events",
                    post(submit_handler).layer(axum::extract::DefaultBodyLimit::disable()),
                );
            }
            Part::Status => {
                // The status read counts the caller itself (see `status_handler`); cancel and history go
                // through the rate-limit layer like the other limited routes.
                api = api
                    .route("/api/trace/job/{id}", get(status_handler).delete(cancel_handler.layer(counted())))
                    .route("/api/trace/job/{id}/retry", post(retry_handler.layer(counted())))
                    .route("/api/trace/jobs", get(list_handler.layer(counted())))
                    .route("/api/trace/admin/dlq", get(dlq_list_handler.layer(counted())))
                    .route("/api/trace/admin/dlq/redrive", post(dlq_redrive_handler.layer(counted())));
            }
            Part::Stream => {
                api = api
                    .route("/api/trace/job/{id}/stream", get(stream_handler.layer(counted())))
                    .route("/api/trace/job/{id}/result", get(result_handler.layer(counted())))
                    .route("/api/trace/job/{id}/chunks", get(chunks::list_handler.layer(counted())))
                    .route(
                        "/api/trace/job/{id}/chunks/{domain}/{index}",
                        get(chunks::chunk_handler.layer(counted())),
                    );
            }
        }
    }
    let api = api.route_layer(middleware::from_fn_with_state(app.clone(), auth::layer));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(|| async { ApiError(TraceError::NoSuchRoute) })
        .with_state(app)
}

/// Counts one request of the authenticated caller on the job reads' limit (its principal's hash:
/// junk credentials never get this far, so they cannot open fresh windows).
async fn rate_limit(State(app): State<App>, request: Request, next: Next) -> Response {
    let counted = match auth::principal_of(&request) {
        Ok(principal) => app.limiter.check(&principal.hash()).await,
        Err(e) => Err(e),
    };
    match counted {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError(e).into_response(),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn submit_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    request: Request,
) -> Response {
    if let Err(e) = app.submit_limiter.check(&principal.hash()).await {
        return ApiError(e).into_response();
    }
    // Read at most one byte past the limit ourselves, so an oversized body gets our JSON answer.
    let limit = app.config.limits.max_body_bytes;
    let body = match axum::body::to_bytes(request.into_body(), limit.saturating_add(1)).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError(TraceError::PayloadTooLarge { bytes: limit.saturating_add(1), limit })
                .into_response()
        }
    };
    match submit::submit(&app, &principal, &body).await {
        Ok(submit::Answer::Inline(json)) => {
            ([(header::CONTENT_TYPE, "application/json")], Body::from(json)).into_response()
        }
        Ok(submit::Answer::Accepted(accepted)) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// `GET /api/trace/job/{id}`, rate limited like the other job routes. The count and the job read are
/// each one job-store round trip and independent, so they are made at once: the most frequent route
/// answers after one round trip instead of two. An over-limit caller gets its 429 all the same.
async fn status_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = principal.hash();
    let (counted, status) = tokio::join!(app.limiter.check(&who), status::status(&app, &principal, &id));
    counted?;
    Ok(Json(status?).into_response())
}

async fn cancel_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(status::cancel(&app, &principal, &id).await?).into_response())
}

/// `GET /api/trace/admin/dlq`.
async fn dlq_list_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    Ok(Json(crate::dlq::list(&app, &principal).await?).into_response())
}

/// `POST /api/trace/admin/dlq/redrive`.
async fn dlq_redrive_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    Ok(Json(crate::dlq::redrive(&app, &principal).await?).into_response())
}

/// `POST /api/trace/job/{id}/retry`.
async fn retry_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::ACCEPTED, Json(status::retry(&app, &principal, &id).await?)).into_response())
}

/// Query of `GET /api/trace/jobs`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

async fn list_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(status::list(&app, &principal, q.status.as_deref(), q.limit.as_deref()).await?).into_response())
}

/// The response header with the plain NDJSON stream's size in bytes (for the caller's progress; the
/// body is shorter when it is gzip).
pub const STREAM_BYTES_HEADER: &str = "x-trace-stream-bytes";

/// `GET /api/trace/job/{id}/stream`: the NDJSON stream, gzip when the caller accepts it and compression
/// is on ([`results::stream`]), or 413 `RESULT_TOO_LARGE_FOR_STREAM` before the first byte; with
/// `?follow=true`, a queued or running job's lines as they are stored ([`crate::follow`]).
async fn stream_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    // Every Accept-Encoding field counts, as one list.
    let accept: Vec<&str> =
        headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect();
    let accept = Some(accept.join(","));
    let (bytes, gzip, body) = match q.follow.as_deref() {
        None | Some("false") => {
            let answer = results::stream(&app, &principal, &id, accept.as_deref()).await?;
            (answer.bytes, answer.gzip, Body::from_stream(answer.body))
        }
        Some("true") => {
            let answer = crate::follow::stream(&app, &principal, &id, accept.as_deref()).await?;
            (answer.bytes, answer.gzip, Body::from_stream(answer.body))
        }
        Some(other) => {
            return Err(TraceError::InvalidParameter {
                name: "follow",
                reason: format!("true or false, not {other:?}"),
            }
            .into())
        }
    };
    let mut response =
        ([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], body)
            .into_response();
    let headers = response.headers_mut();
    if let Some(bytes) = bytes {
        headers.insert(STREAM_BYTES_HEADER, HeaderValue::from(bytes));
    }
    if app.config.stream_compression == trace_core::config::StreamCompression::Gzip {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// Query of `GET /api/trace/job/{id}/stream`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// `true`: follow a queued or running job ([`crate::follow`]).
    follow: Option<String>,
}

/// Query of `GET /api/trace/job/{id}/result`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    domain: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

async fn result_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let (domain, offset, limit) = (q.domain.as_deref(), q.offset.as_deref(), q.limit.as_deref());
    let page = results::page(&app, &principal, &id, domain, offset, limit).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from(page)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use trace_adapters::runtime::{Backends, BackendsFromConfig};
    use trace_core::Config;

    async fn app() -> App {
        app_with(&[]).await
    }

    /// An app with `vars`; open authentication unless `vars` say otherwise.
    async fn app_with(vars: &[(&str, &str)]) -> App {
        let config = Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(v.to_string()),
            None if name == "TRACE_AUTH" => Some("open".to_owned()),
            None => (name == "TRACE_LOCAL_DIR")
                .then(|| std::env::temp_dir().join("trace-http-test").display().to_string()),
        })
        .unwrap();
        let backends = Backends::from_config(&config).await.unwrap();
        App::new(config, backends)
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        call(router, "GET", path).await
    }

    async fn call(router: &Router, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
        call_with(router, method, path, None).await
    }

    async fn call_with(
        router: &Router,
        method: &str,
        path: &str,
        api_key: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = axum::http::Request::builder().method(method).uri(path);
        if let Some(key) = api_key {
            request = request.header("x-api-key", key);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn every_function_s_router_builds_and_answers_health() {
        let app = app().await;
        for parts in [
            &[Part::Submit][..],
            &[Part::Status],
            &[Part::Stream],
            &[Part::Submit, Part::Status, Part::Stream],
        ] {
            let router = router(app.clone(), parts);
            assert_eq!(get(&router, "/health").await.0, StatusCode::OK, "{parts:?}");
            let (status, body) = get(&router, "/nowhere").await;
            assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
        }
    }

    #[tokio::test]
    async fn a_function_serves_only_its_routes() {
        let app = app().await;
        let submit_only = router(app.clone(), &[Part::Submit]);
        assert_eq!(get(&submit_only, "/api/trace/jobs").await.0, StatusCode::NOT_FOUND);
        let status_only = router(app, &[Part::Status]);
        let (status, body) = get(&status_only, "/api/trace/jobs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["jobs"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn status_reads_cancels_and_history_share_one_rate_limit() {
        let app = app_with(&[("TRACE_RATE_LIMIT_REQUESTS", "3")]).await;
        let router = router(app, &[Part::Status]);
        let job = format!("/api/trace/job/{}", trace_core::JobId::new());
        let requests = [("GET", job.as_str()), ("DELETE", job.as_str()), ("GET", "/api/trace/jobs")];
        let mut answers = Vec::new();
        for (method, path) in requests {
            answers.push(call(&router, method, path).await.0);
        }
        assert_eq!(answers, [StatusCode::NOT_FOUND, StatusCode::NOT_FOUND, StatusCode::OK]);
        // The window is used up: each route is refused now.
        for (method, path) in requests {
            let (status, body) = call(&router, method, path).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_REQUESTS"))
            );
        }
    }

    /// A database that fails the way a real one does, with its host, credentials and SQL in the text.
    struct BrokenDatabase;

    #[async_trait::async_trait]
    impl trace_core::ports::EventSource for BrokenDatabase {
        async fn open(
            &self,
            _domain: trace_core::Domain,
            _ids: &[trace_core::ContainerId],
        ) -> Result<Box<dyn trace_core::ports::RowCursor>, trace_core::ports::SourceError> {
            Err(trace_core::ports::BackendError::new(
                "postgres",
                "connect",
                "error connecting to postgres://trace:hunter2@db.internal:5432/trace: relation \"holds\" does not exist",
            )
            .into())
        }
    }

    /// Log lines written while the test runs.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_backend_failure_answers_what_failed_and_a_request_id_and_logs_the_details() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let mut app = app_with(&[("TRACE_AUTH", "open")]).await;
        app.backends.source = std::sync::Arc::new(BrokenDatabase);
        let router = with_request_ids(router(app, &[Part::Submit]));
        let request = Request::builder()
            .method("POST")
            .uri("/api/trace/events")
            .body(Body::from(r#"{"container_ids":["A"],"domains":["holds"]}"#))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let header = response.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();

        // The caller: what failed, in words, and the request's id; no host, credentials or SQL.
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
        assert_eq!(body["message"], "the database is unavailable; retry later");
        assert_eq!(body["error"]["message"], body["message"]);
        let id = body["request_id"].as_str().expect("a request id").to_owned();
        assert_eq!((body["meta"]["request_id"].as_str(), header.as_str()), (Some(id.as_str()), id.as_str()));
        let text = body.to_string();
        for secret in ["hunter2", "db.internal", "relation", "postgres"] {
            assert!(!text.contains(secret), "the body shows {secret:?}: {text}");
        }

        // The log: the details under the same id, the password redacted.
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = log.lines().find(|l| l.contains("request failed")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains(&id) && line.contains("does not exist"), "{line}");
        assert!(!log.contains("hunter2"), "{log}");
    }

    #[tokio::test]
    async fn every_answer_has_a_request_id_header() {
        let router = with_request_ids(router(app().await, &[Part::Status]));
        let request = axum::http::Request::builder().uri("/health").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let first = response.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        let request = axum::http::Request::builder().uri("/health").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_ne!(response.headers()[REQUEST_ID_HEADER].to_str().unwrap(), first, "one id per request");
        assert_eq!(uuid::Uuid::parse_str(&first).map(|u| u.get_version_num()), Ok(4));
    }

    #[tokio::test]
    async fn in_lambda_the_request_id_is_the_invocation_s() {
        let router = with_request_ids(router(app().await, &[Part::Status]));
        let mut context = lambda_runtime::Context::default();
        context.request_id = "8f5c2b8e-lambda-request".to_owned();
        let mut request = axum::http::Request::builder().uri("/nowhere").body(Body::empty()).unwrap();
        request.extensions_mut().insert(context);
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "8f5c2b8e-lambda-request");
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["request_id"], "8f5c2b8e-lambda-request");
    }

    /// An app whose callers are the API keys `k-alice`, `k-bob` and `k-root` (an admin).
    async fn owners_app() -> App {
        let entry = trace_core::auth::api_key_entry;
        let keys =
            format!("{},{},{}", entry("alice", "k-alice"), entry("bob", "k-bob"), entry("root", "k-root"));
        app_with(&[
            ("TRACE_ASYNC_CID_THRESHOLD", "1"),
            ("TRACE_AUTH", "keys"),
            ("TRACE_API_KEYS", &keys),
            ("TRACE_ADMIN_PRINCIPALS", "key:root"),
        ])
        .await
    }

    /// A request of `principal` (an API key principal), through the authentication layer.
    async fn call_as(
        router: &Router,
        principal: &Principal,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_owned()))
            .unwrap();
        // Authenticated by the real layer: principal `key:{name}` sends the key `k-{name}`.
        let name = principal.id().strip_prefix("key:").expect("an API key principal");
        request.headers_mut().insert("x-api-key", format!("k-{name}").parse().unwrap());
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    /// A 404 body with the job id and the timestamp taken out: what must not differ between an
    /// unknown job and another caller's.
    fn shape(body: &serde_json::Value, id: &str) -> serde_json::Value {
        let mut shape: serde_json::Value =
            serde_json::from_str(&body.to_string().replace(id, "{id}")).unwrap();
        // Every answer has its own time and request id.
        shape["meta"].as_object_mut().map(|meta| (meta.remove("timestamp"), meta.remove("request_id")));
        shape.as_object_mut().map(|top| top.remove("request_id"));
        shape
    }

    /// Submits a job as `owner` and lets a worker finish it; its id.
    async fn finished_job(app: &App, router: &Router, owner: &Principal) -> String {
        let (status, accepted) = call_as(
            router,
            owner,
            "POST",
            "/api/trace/events",
            r#"{"container_ids":["A","B"],"domains":["holds"]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let job = accepted["job_id"].as_str().unwrap().to_owned();
        let queue = app.backends.light.clone();
        let deliveries = queue
            .receive(1, std::time::Duration::from_secs(1), std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        let (_, shutdown) = tokio::sync::watch::channel(false);
        let disposition = crate::worker::handle_delivery(app, &queue, &deliveries[0], shutdown, None).await;
        crate::worker::settle_message(queue.as_ref(), &deliveries[0], disposition).await;
        let (_, status) = call_as(router, owner, "GET", &format!("/api/trace/job/{job}"), "").await;
        assert_eq!(status["status"], "finished", "{status}");
        job
    }

    fn history(body: &serde_json::Value) -> Vec<String> {
        body["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test]
    async fn another_caller_s_job_answers_like_an_unknown_one_and_an_admin_sees_all() {
        let app = owners_app().await;
        let router = router(app.clone(), &[Part::Submit, Part::Status, Part::Stream]);
        let alice = Principal::new("key:alice", None);
        let bob = Principal::new("key:bob", None);
        let root = Principal::new("key:root", None).with_admin(true);
        let a_job = finished_job(&app, &router, &alice).await;
        let b_job = finished_job(&app, &router, &bob).await;
        let stored = app.backends.jobs.get(&a_job.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!((stored.owner.as_str(), stored.tenant.as_deref()), ("key:alice", None));

        // Each route, for an unknown id and for Alice's job as Bob: the same 404.
        let unknown = trace_core::JobId::new().to_string();
        let routes = [
            ("GET", "/api/trace/job/{id}"),
            ("GET", "/api/trace/job/{id}/result"),
            ("GET", "/api/trace/job/{id}/result?domain=holds&offset=0&limit=10"),
            ("GET", "/api/trace/job/{id}/stream"),
            ("GET", "/api/trace/job/{id}/chunks"),
            ("DELETE", "/api/trace/job/{id}"),
        ];
        for (method, route) in routes {
            let (status, body) = call_as(&router, &bob, method, &route.replace("{id}", &a_job), "").await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::NOT_FOUND, Some("JOB_NOT_FOUND")),
                "{method} {route}"
            );
            let (unknown_status, unknown_body) =
                call_as(&router, &bob, method, &route.replace("{id}", &unknown), "").await;
            assert_eq!(unknown_status, StatusCode::NOT_FOUND, "{method} {route}");
            assert_eq!(shape(&body, &a_job), shape(&unknown_body, &unknown), "{method} {route}");
            // The owner reads it (the cancel of a finished job is a 409: it is seen).
            let (status, _) = call_as(&router, &alice, method, &route.replace("{id}", &a_job), "").await;
            let expected = if method == "DELETE" { StatusCode::CONFLICT } else { StatusCode::OK };
            assert_eq!(status, expected, "{method} {route} as the owner");
        }

        // Each history holds its owner's jobs only; the admin's holds both.
        let (_, body) = call_as(&router, &alice, "GET", "/api/trace/jobs", "").await;
        assert_eq!(history(&body), std::slice::from_ref(&a_job));
        let (_, body) = call_as(&router, &bob, "GET", "/api/trace/jobs", "").await;
        assert_eq!(history(&body), std::slice::from_ref(&b_job));
        let (_, body) = call_as(&router, &root, "GET", "/api/trace/jobs", "").await;
        assert_eq!(history(&body), [b_job.clone(), a_job.clone()]);
        for job in [&a_job, &b_job] {
            let (status, body) = call_as(&router, &root, "GET", &format!("/api/trace/job/{job}"), "").await;
            assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("finished")));
            let (status, _) =
                call_as(&router, &root, "GET", &format!("/api/trace/job/{job}/stream"), "").await;
            assert_eq!(status, StatusCode::OK);
        }
        // A status answer does not name the owner.
        let (_, body) = call_as(&router, &root, "GET", &format!("/api/trace/job/{a_job}"), "").await;
        assert!(!body.to_string().contains("key:alice"), "{body}");
    }

    /// A request of `principal` (an API key principal); the raw answer.
    async fn raw_as(router: &Router, principal: &Principal, path: &str) -> Response {
        let name = principal.id().strip_prefix("key:").expect("an API key principal");
        let request = axum::http::Request::builder()
            .uri(path)
            .header("x-api-key", format!("k-{name}"))
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn without_presigned_urls_the_chunk_list_points_at_the_service_s_own_chunk_route() {
        let app = owners_app().await;
        let router = router(app.clone(), &[Part::Submit, Part::Status, Part::Stream]);
        let alice = Principal::new("key:alice", None);
        let job = finished_job(&app, &router, &alice).await;
        let (status, body) =
            call_as(&router, &alice, "GET", &format!("/api/trace/job/{job}/chunks"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list: trace_core::api::ChunkList = serde_json::from_value(body).unwrap();
        assert_eq!((list.from, list.next_from), (0, None));
        let mut served = 0;
        for d in &list.domains {
            for link in &d.chunks {
                assert_eq!(link.url, crate::chunks::chunk_path(&job, d.domain, link.index));
                let response = raw_as(&router, &alice, &link.url).await;
                assert_eq!(response.status(), StatusCode::OK);
                let headers = response.headers().clone();
                assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
                let stored = response.into_body().collect().await.unwrap().to_bytes();
                let expected_encoding = link.encoding.content_encoding();
                assert_eq!(
                    headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()),
                    expected_encoding
                );
                let mut entry = link.entry();
                if expected_encoding.is_none() {
                    // LZ4 and plain chunks are served decoded.
                    (entry.encoding, entry.stored_bytes) = (trace_core::encoding::ChunkEncoding::Plain, None);
                }
                let ndjson = entry.decode(stored).expect("the listed size and CRC-32");
                assert_eq!(ndjson.iter().filter(|b| **b == b'\n').count() as u64, link.records);
                served += 1;
            }
        }
        assert_eq!(served, list.chunks_total);
        let (status, _) =
            call_as(&router, &alice, "GET", &format!("/api/trace/job/{job}/chunks/holds/999"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) =
            call_as(&router, &alice, "GET", &format!("/api/trace/job/{job}/chunks?from=x"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn only_the_owner_or_an_admin_cancels_a_job() {
        // Threshold 1: a submit of two ids is a job; no worker runs, so jobs stay queued.
        let app = owners_app().await;
        let router = router(app.clone(), &[Part::Submit, Part::Status]);
        let alice = Principal::new("key:alice", None);
        let bob = Principal::new("key:bob", None);
        let root = Principal::new("key:root", None).with_admin(true);
        let submit = |who: Principal| {
            let router = router.clone();
            async move {
                let body = r#"{"container_ids":["A","B"],"domains":["holds"]}"#;
                let (status, accepted) = call_as(&router, &who, "POST", "/api/trace/events", body).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
                accepted["job_id"].as_str().unwrap().to_owned()
            }
        };
        let (first, second, third) =
            (submit(alice.clone()).await, submit(alice.clone()).await, submit(bob.clone()).await);

        let (status, body) = call_as(&router, &bob, "DELETE", &format!("/api/trace/job/{first}"), "").await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("JOB_NOT_FOUND")));
        let (_, body) = call_as(&router, &alice, "GET", &format!("/api/trace/job/{first}"), "").await;
        assert_eq!(body["status"], "queued", "Bob's cancel changed Alice's job");

        let (status, body) = call_as(&router, &alice, "DELETE", &format!("/api/trace/job/{first}"), "").await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("cancelled")));
        for job in [&second, &third] {
            let (status, body) =
                call_as(&router, &root, "DELETE", &format!("/api/trace/job/{job}"), "").await;
            assert_eq!(
                (status, body["status"].as_str()),
                (StatusCode::OK, Some("cancelled")),
                "admin cancel"
            );
        }
        let (_, body) = call_as(&router, &bob, "GET", &format!("/api/trace/job/{third}"), "").await;
        assert_eq!(body["status"], "cancelled");
        let (_, body) = call_as(&router, &alice, "GET", "/api/trace/jobs?status=cancelled", "").await;
        assert_eq!(history(&body), [second.clone(), first.clone()]);
    }

    #[tokio::test]
    async fn submits_have_their_own_rate_limit() {
        let app =
            app_with(&[("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "2"), ("TRACE_RATE_LIMIT_REQUESTS", "2")]).await;
        let router = router(app, &[Part::Submit, Part::Status]);
        let submit = |router: Router| async move {
            let request = Request::builder()
                .method("POST")
                .uri("/api/trace/events")
                .body(Body::from(r#"{"container_ids":["A"],"domains":["holds"]}"#))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        };
        assert_eq!(submit(router.clone()).await, StatusCode::OK);
        assert_eq!(submit(router.clone()).await, StatusCode::OK);
        assert_eq!(submit(router.clone()).await, StatusCode::TOO_MANY_REQUESTS);
        // The reads' own window is untouched by the submits.
        assert_eq!(get(&router, "/api/trace/jobs").await.0, StatusCode::OK);
    }

    fn keys_app_vars(entries: &str) -> Vec<(&'static str, String)> {
        vec![("TRACE_AUTH", "keys".to_owned()), ("TRACE_API_KEYS", entries.to_owned())]
    }

    #[tokio::test]
    async fn without_credentials_every_route_but_health_is_401() {
        let entries = trace_core::auth::api_key_entry("alice", "k-alice");
        let vars = keys_app_vars(&entries);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let router = router(app_with(&vars).await, &[Part::Submit, Part::Status, Part::Stream]);
        let job = trace_core::JobId::new();
        let routes = [
            ("POST", "/api/trace/events".to_owned()),
            ("GET", format!("/api/trace/job/{job}")),
            ("DELETE", format!("/api/trace/job/{job}")),
            ("GET", "/api/trace/jobs".to_owned()),
            ("GET", format!("/api/trace/job/{job}/stream")),
            ("GET", format!("/api/trace/job/{job}/result")),
            ("GET", format!("/api/trace/job/{job}/chunks")),
            ("GET", format!("/api/trace/job/{job}/chunks/holds/0")),
            ("POST", format!("/api/trace/job/{job}/retry")),
            ("GET", "/api/trace/admin/dlq".to_owned()),
            ("POST", "/api/trace/admin/dlq/redrive".to_owned()),
        ];
        for (method, path) in &routes {
            for key in [None, Some("junk")] {
                let (status, body) = call_with(&router, method, path, key).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(get(&router, "/health").await.0, StatusCode::OK);
        // With the key the same routes answer as usual (here: no such job).
        let (status, _) = call_with(&router, "GET", &format!("/api/trace/job/{job}"), Some("k-alice")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn junk_keys_get_401_and_use_up_no_window_while_the_real_caller_s_limit_holds() {
        let entries = format!(
            "{},{}",
            trace_core::auth::api_key_entry("alice", "k-alice"),
            trace_core::auth::api_key_entry("bob", "k-bob")
        );
        let mut vars = keys_app_vars(&entries);
        vars.push(("TRACE_RATE_LIMIT_REQUESTS", "3".to_owned()));
        vars.push(("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "2".to_owned()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let router = router(app_with(&vars).await, &[Part::Submit, Part::Status]);
        for i in 0..3 {
            assert_eq!(call_with(&router, "GET", "/api/trace/jobs", Some("k-alice")).await.0, StatusCode::OK);
            // A rotating junk key per request: 401 each time, never a fresh window.
            let junk = format!("junk-{i}");
            assert_eq!(
                call_with(&router, "GET", "/api/trace/jobs", Some(&junk)).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        let (status, body) = call_with(&router, "GET", "/api/trace/jobs", Some("k-alice")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_REQUESTS"))
        );
        assert_eq!(
            call_with(&router, "GET", "/api/trace/jobs", Some("junk-9")).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Another principal has its own window.
        assert_eq!(call_with(&router, "GET", "/api/trace/jobs", Some("k-bob")).await.0, StatusCode::OK);
        // Submits count per principal too.
        let submit = |key: &'static str| {
            let router = router.clone();
            async move {
                let request = Request::builder()
                    .method("POST")
                    .uri("/api/trace/events")
                    .header("x-api-key", key)
                    .body(Body::from(r#"{"container_ids":["A"],"domains":["holds"]}"#))
                    .unwrap();
                router.oneshot(request).await.unwrap().status()
            }
        };
        assert_eq!(submit("k-bob").await, StatusCode::OK);
        assert_eq!(submit("junk").await, StatusCode::UNAUTHORIZED);
        assert_eq!(submit("k-bob").await, StatusCode::OK);
        assert_eq!(submit("k-bob").await, StatusCode::TOO_MANY_REQUESTS);
    }
}
