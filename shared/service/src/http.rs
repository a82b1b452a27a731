//! HTTP: the routes of each function, the rate-limit layer, and the one place a [`TraceError`]
//! becomes an answer (status, JSON body with its `code`, `Retry-After`).
//!
//! Every job route acts as the caller's [`Principal`], taken from the request's extensions: a job is
//! its submitter's, and another caller's job answers like an unknown one.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use trace_core::{Principal, TraceError};

use crate::{results, status, submit, App};

/// A [`TraceError`] as an HTTP answer.
#[derive(Debug)]
pub struct ApiError(pub TraceError);

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            // As an error value, so the log shows its sources too.
            tracing::error!(
                code = self.0.code(),
                error = &self.0 as &dyn std::error::Error,
                "request failed"
            );
        }
        let mut response = (status, Json(self.0.body())).into_response();
        if let TraceError::TooManyRequests { retry_after_seconds } = self.0 {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
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
/// `GET /health`.
pub fn router(app: App, parts: &[Part]) -> Router {
    let mut limited = Router::new();
    let mut open = Router::new().route("/health", get(health));
    for part in parts {
        match part {
            Part::Submit => {
                open = open.route(
                    "/api/trace/events",
                    post(submit_handler).layer(axum::extract::DefaultBodyLimit::disable()),
                );
            }
            Part::Status => {
                // The status read counts the caller itself (see `status_handler`); cancel and history go
                // through the rate-limit layer like the other limited routes.
                let counted = middleware::from_fn_with_state(app.clone(), rate_limit);
                open = open
                    .route("/api/trace/job/{id}", get(status_handler).delete(cancel_handler.layer(counted)));
                limited = limited.route("/api/trace/jobs", get(list_handler));
            }
            Part::Stream => {
                limited = limited
                    .route("/api/trace/job/{id}/stream", get(stream_handler))
                    .route("/api/trace/job/{id}/result", get(result_handler));
            }
        }
    }
    // Status, result and stream are rate limited; submit and health are not.
    if parts.iter().any(|p| matches!(p, Part::Status | Part::Stream)) {
        open = open.merge(limited.route_layer(middleware::from_fn_with_state(app.clone(), rate_limit)));
    }
    open.fallback(|| async { ApiError(TraceError::NoSuchRoute) })
        .layer(middleware::from_fn(interim_principal))
        .with_state(app)
}

/// INTERIM, until the authentication layer (issue 14, item 1) is merged and replaces it: a request
/// that no layer has given a principal acts as the open mode's [`Principal::local`], so every
/// handler finds one. Requests that carry a principal already (tests) keep theirs.
async fn interim_principal(mut request: Request, next: Next) -> Response {
    if request.extensions().get::<Principal>().is_none() {
        request.extensions_mut().insert(Principal::local());
    }
    next.run(request).await
}

/// Who is calling: the API key when one is sent, else the client address (API Gateway's source IP,
/// the first `X-Forwarded-For` hop, or the socket peer).
pub fn caller(request: &Request) -> String {
    let headers = request.headers();
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
        return format!("key:{key}");
    }
    if let Some(ip) = lambda_source_ip(request) {
        return format!("ip:{ip}");
    }
    if let Some(ip) = forwarded_for(headers) {
        return format!("ip:{ip}");
    }
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "unknown".to_owned(),
    }
}

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let first = headers.get("x-forwarded-for")?.to_str().ok()?.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

fn lambda_source_ip(request: &Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    match request.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.clone(),
        _ => None,
    }
}

async fn rate_limit(State(app): State<App>, request: Request, next: Next) -> Response {
    let who = caller(&request);
    match app.limiter.check(&who).await {
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
    if let Err(e) = app.submit_limiter.check(&caller(&request)).await {
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
    request: Request,
) -> Result<Response, ApiError> {
    let who = caller(&request);
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

async fn stream_handler(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let body = results::stream(&app, &principal, &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response())
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

    async fn app_with(vars: &[(&str, &str)]) -> App {
        let config = Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(v.to_string()),
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
        let request = axum::http::Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
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

    /// A request of `principal`, as the authentication layer would hand it on.
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
        request.extensions_mut().insert(principal.clone());
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
        shape["meta"].as_object_mut().map(|meta| meta.remove("timestamp"));
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
        let app = app_with(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]).await;
        let router = router(app.clone(), &[Part::Submit, Part::Status, Part::Stream]);
        let alice = Principal::new("key:alice", Some("acme".into()));
        let bob = Principal::new("key:bob", None);
        let root = Principal::new("key:root", None).with_admin(true);
        let a_job = finished_job(&app, &router, &alice).await;
        let b_job = finished_job(&app, &router, &bob).await;
        let stored = app.backends.jobs.get(&a_job.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!((stored.owner.as_str(), stored.tenant.as_deref()), ("key:alice", Some("acme")));

        // Each route, for an unknown id and for Alice's job as Bob: the same 404.
        let unknown = trace_core::JobId::new().to_string();
        let routes = [
            ("GET", "/api/trace/job/{id}"),
            ("GET", "/api/trace/job/{id}/result"),
            ("GET", "/api/trace/job/{id}/result?domain=holds&offset=0&limit=10"),
            ("GET", "/api/trace/job/{id}/stream"),
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
        assert_eq!(history(&body), [a_job.as_str()]);
        let (_, body) = call_as(&router, &bob, "GET", "/api/trace/jobs", "").await;
        assert_eq!(history(&body), [b_job.as_str()]);
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

    #[tokio::test]
    async fn only_the_owner_or_an_admin_cancels_a_job() {
        // Threshold 1: a submit of two ids is a job; no worker runs, so jobs stay queued.
        let app = app_with(&[("TRACE_ASYNC_CID_THRESHOLD", "1")]).await;
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
}
