//! An HTTP proxy in front of the S3/SQS emulator that answers some requests 503 instead of
//! forwarding them: the processes under test get `AWS_ENDPOINT_URL` = the proxy, and a rule decides,
//! request by request, which fail (as S3's `SlowDown` / SQS's `ServiceUnavailable` do in AWS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;

/// What the rule sees of a request.
pub struct Seen<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its path (S3: `/{bucket}/{key}`; SQS: `/`).
    pub path: &'a str,
    /// The SQS action (`X-Amz-Target`'s, e.g. `AmazonSQS.SendMessage`), if any.
    pub target: Option<&'a str>,
}

type Rule = dyn Fn(&Seen<'_>) -> bool + Send + Sync;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rule: Box<Rule>,
    failed: AtomicU64,
    forwarded: AtomicU64,
    /// Until when requests are held unanswered (a stopped server, as SIGSTOP makes it).
    paused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:port`.
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// A proxy to `upstream` failing the requests `rule` picks.
    pub async fn start(
        upstream: &str,
        rule: impl Fn(&Seen<'_>) -> bool + Send + Sync + 'static,
    ) -> FaultProxy {
        // reqwest is built without a crypto provider of its own: the workspace's one (aws-lc-rs).
        trace_adapters::tls::install_provider();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().build().expect("client"),
            rule: Box::new(rule),
            failed: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            paused_until: std::sync::Mutex::new(None),
        });
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FaultProxy { url, shared, server }
    }

    /// Holds every request (accepted, unanswered) for `how_long` from now, as a server stopped with
    /// SIGSTOP does; then they go on.
    pub fn stop_for(&self, how_long: std::time::Duration) {
        *self.shared.paused_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now() + how_long);
    }

    /// Requests answered 503 so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response {
    let until = *shared.paused_until.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(until) = until {
        tokio::time::sleep_until(until).await;
    }
    let (parts, body) = request.into_parts();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let seen = Seen { method: &parts.method, path: parts.uri.path(), target };
    if (shared.rule)(&seen) {
        shared.failed.fetch_add(1, Ordering::SeqCst);
        return unavailable(target.is_some());
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    match send(&shared, &parts.method, &parts.uri, &parts.headers, body).await {
        Ok(response) => response,
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn send(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::Result<Response> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = shared.client.request(method.clone(), format!("{}{path}", shared.upstream)).body(body);
    for (name, value) in headers {
        if !matches!(name.as_str(), "host" | "content-length" | "transfer-encoding" | "connection") {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await?;
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            out.append(name, value.clone());
        }
    }
    let bytes = answer.bytes().await?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out;
    Ok(response)
}

/// The 503 each service sends when it sheds load.
fn unavailable(sqs: bool) -> Response {
    if sqs {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/x-amz-json-1.0")],
            r#"{"__type":"com.amazonaws.sqs#ServiceUnavailable","message":"injected by the fault proxy"}"#,
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>injected by the fault proxy</Message></Error>",
        )
            .into_response()
    }
}
