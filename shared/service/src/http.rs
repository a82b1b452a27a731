//! HTTP: the routes of each function, the authentication and rate-limit layers, and the one place a [`TraceError`]
//! becomes an answer (status, JSON body with its `code`, `Retry-After`).

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

use crate::{auth, results, status, submit, App};

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
                    .route("/api/trace/jobs", get(list_handler.layer(counted())));
            }
            Part::Stream => {
                api = api
                    .route("/api/trace/job/{id}/stream", get(stream_handler.layer(counted())))
                    .route("/api/trace/job/{id}/result", get(result_handler.layer(counted())));
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

async fn submit_handler(State(app): State<App>, request: Request) -> Response {
    let counted = match auth::principal_of(&request) {
        Ok(principal) => app.submit_limiter.check(&principal.hash()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = counted {
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
    match submit::submit(&app, &body).await {
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
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    let who = principal.hash();
    let (counted, status) = tokio::join!(app.limiter.check(&who), status::status(&app, &id));
    counted?;
    Ok(Json(status?).into_response())
}

async fn cancel_handler(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(status::cancel(&app, &id).await?).into_response())
}

/// Query of `GET /api/trace/jobs`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

async fn list_handler(State(app): State<App>, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    Ok(Json(status::list(&app, q.status.as_deref(), q.limit.as_deref()).await?).into_response())
}

async fn stream_handler(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let body = results::stream(&app, &id).await?;
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
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = results::page(&app, &id, q.domain.as_deref(), q.offset.as_deref(), q.limit.as_deref()).await?;
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
        let entries = crate::auth::keys::entry("alice", "k-alice");
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
            crate::auth::keys::entry("alice", "k-alice"),
            crate::auth::keys::entry("bob", "k-bob")
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
