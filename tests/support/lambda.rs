//! A minimal emulator of the AWS Lambda Runtime API, to run the function binaries in Lambda mode in
//! tests, and the helper that starts a binary against it.
//!
//! The emulator serves the endpoints the `lambda_runtime` crate calls (see its `requests.rs`):
//! - `GET /2018-06-01/runtime/invocation/next`: waits for the next event given to
//!   [`LambdaRuntime::invoke`] and answers it with the `Lambda-Runtime-*` headers;
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the answer. A buffered answer is the
//!   handler's JSON. A streamed answer (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked)
//!   of an HTTP function (`Content-Type: application/vnd.awslambda.http-integration-response`) is a
//!   JSON prelude `{"statusCode":…,"headers":{…},"cookies":[…]}`, eight NUL bytes, then the payload.
//!   A mid-stream error arrives as `Lambda-Runtime-Function-Error-Type` / `-Body` (base64) — as HTTP
//!   trailers from the real protocol, or, as `lambda_runtime` 1.x writes them, as those lines at the
//!   end of the body. Both are recognised;
//! - `POST /2018-06-01/runtime/invocation/{id}/error` and `POST /2018-06-01/runtime/init/error`:
//!   the function's error report (`{"errorType","errorMessage"}`).
//!
//! It enforces Lambda's payload limits, which a local run never meets otherwise: an event or a buffered
//! answer over [`MAX_BUFFERED_BYTES`], or a streamed answer over [`MAX_STREAMED_BYTES`], fails the
//! invocation as it would in AWS.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::system::{binary, System};

/// Lambda's limit on an invocation's request and on a buffered response, in bytes (6 MB as Lambda
/// counts it).
pub const MAX_BUFFERED_BYTES: usize = 6_291_556;

/// Lambda's limit on a streamed response: 200 MB.
pub const MAX_STREAMED_BYTES: usize = 200 * 1024 * 1024;

/// The error Lambda gives an answer of `len` bytes over its limit (`streaming` or buffered), if it is.
pub fn over_limit(streaming: bool, len: usize) -> Option<FunctionError> {
    let limit = if streaming { MAX_STREAMED_BYTES } else { MAX_BUFFERED_BYTES };
    (len > limit).then(|| FunctionError {
        error_type: "Function.ResponseSizeTooLarge".into(),
        body: Value::String(format!(
            "Response payload size ({len} bytes) exceeded maximum allowed payload size ({limit} bytes)."
        )),
    })
}

/// Content type of a streamed HTTP answer (prelude, 8 NULs, payload).
pub const HTTP_INTEGRATION_RESPONSE: &str = "application/vnd.awslambda.http-integration-response";

/// The delimiter between the prelude of a streamed HTTP answer and its payload.
const PRELUDE_DELIMITER: [u8; 8] = [0; 8];

/// The error-type line `lambda_runtime` appends to a stream that failed midway.
const ERROR_TYPE_LINE: &[u8] = b"Lambda-Runtime-Function-Error-Type: ";

/// An error the function reported (or that ended its stream).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionError {
    /// `Lambda-Runtime-Function-Error-Type` (or the body's `errorType`).
    pub error_type: String,
    /// The error body: the JSON the function sent, or a string when it was not JSON.
    pub body: Value,
}

/// A streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    /// Whether it was an HTTP integration response (with a prelude).
    pub http: bool,
    /// The prelude's status code (200 when there is no prelude).
    pub status: u16,
    /// The prelude's headers, names lower-cased; several values are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The prelude's cookies.
    pub cookies: Vec<String>,
    /// The payload after the prelude (without an error tail).
    pub body: Bytes,
    /// A mid-stream error.
    pub error: Option<FunctionError>,
}

/// What one invocation ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A buffered answer: the handler's JSON.
    Buffered(Value),
    /// A streamed answer.
    Streamed(Streamed),
    /// The function reported an error for this invocation.
    Error(FunctionError),
}

/// An HTTP answer, whether it came buffered (an API Gateway / Function URL proxy response) or streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Cookies.
    pub cookies: Vec<String>,
    /// The body as sent (base64-decoded when the proxy response said so; still gzip when
    /// `Content-Encoding` says so: see [`HttpAnswer::decoded`]).
    pub body: Bytes,
    /// Whether it was streamed.
    pub streamed: bool,
}

impl HttpAnswer {
    /// A header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as an HTTP client reads it: gunzipped when `Content-Encoding: gzip` (one gzip member,
    /// nothing after it), else as sent. [`body`](Self::body) keeps the bytes as sent.
    pub fn decoded(&self) -> Bytes {
        match self.header("content-encoding") {
            Some(coding) if coding.eq_ignore_ascii_case("gzip") => {
                use std::io::Read as _;
                let mut decoder = flate2::read::GzDecoder::new(&self.body[..]);
                let mut out = Vec::new();
                decoder.read_to_end(&mut out).expect("the body is one valid gzip member");
                assert!(decoder.into_inner().is_empty(), "bytes after the gzip member");
                Bytes::from(out)
            }
            Some(other) => panic!("unexpected Content-Encoding {other}"),
            None => self.body.clone(),
        }
    }

    /// The body (decoded) as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.decoded().to_vec()).expect("the body is UTF-8")
    }

    /// The body (decoded) as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.decoded())
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:.500}", self.text()))
    }

    /// The body as NDJSON lines.
    pub fn ndjson(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:.200}: {e}")))
            .collect()
    }
}

impl Invocation {
    /// The buffered JSON answer; panics on anything else.
    pub fn json(self) -> Value {
        match self {
            Invocation::Buffered(v) => v,
            other => panic!("expected a buffered answer, got {other:?}"),
        }
    }

    /// The streamed answer; panics on anything else.
    pub fn streamed(self) -> Streamed {
        match self {
            Invocation::Streamed(s) => s,
            other => panic!("expected a streamed answer, got {other:?}"),
        }
    }

    /// The answer as HTTP: a buffered proxy response (`statusCode`, `headers`, `body`,
    /// `isBase64Encoded`, `cookies`) or a streamed HTTP integration response. Panics on a function
    /// error, a stream that failed midway, or anything that is not an HTTP answer.
    pub fn http(self) -> HttpAnswer {
        match self {
            Invocation::Buffered(v) => {
                let status = v["statusCode"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("not a proxy response (no statusCode): {v}"))
                    as u16;
                let headers = v["headers"]
                    .as_object()
                    .map(|h| h.iter().map(|(k, v)| (k.to_ascii_lowercase(), header_text(v))).collect())
                    .unwrap_or_default();
                let cookies = string_list(&v["cookies"]);
                let body = match &v["body"] {
                    Value::Null => Bytes::new(),
                    Value::String(s) if v["isBase64Encoded"].as_bool() == Some(true) => {
                        Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).expect("base64 body"))
                    }
                    Value::String(s) => Bytes::from(s.clone()),
                    other => panic!("proxy response body is not a string: {other}"),
                };
                HttpAnswer { status, headers, cookies, body, streamed: false }
            }
            Invocation::Streamed(s) => {
                assert!(s.http, "streamed answer without an HTTP prelude: {s:?}");
                if let Some(e) = &s.error {
                    panic!(
                        "the stream failed midway: {e:?}; payload so far: {:.500}",
                        String::from_utf8_lossy(&s.body)
                    );
                }
                HttpAnswer {
                    status: s.status,
                    headers: s.headers,
                    cookies: s.cookies,
                    body: s.body,
                    streamed: true,
                }
            }
            Invocation::Error(e) => panic!("the function reported an error: {e:?}"),
        }
    }
}

fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(header_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Parses the body of a streamed answer: with `http`, the prelude, the delimiter and the payload; a
/// trailing error (`Lambda-Runtime-Function-Error-Type: …\r\nLambda-Runtime-Function-Error-Body:
/// <base64>\r\n`) is split off into [`Streamed::error`].
pub fn parse_streamed(http: bool, raw: &[u8]) -> Result<Streamed, String> {
    let (status, headers, cookies, payload) = if http {
        let at =
            raw.windows(PRELUDE_DELIMITER.len()).position(|w| w == PRELUDE_DELIMITER).ok_or_else(|| {
                format!("no 8-NUL delimiter after the prelude in {:.300}", String::from_utf8_lossy(raw))
            })?;
        let prelude: Value = serde_json::from_slice(&raw[..at]).map_err(|e| {
            format!("prelude is not JSON ({e}): {:.300}", String::from_utf8_lossy(&raw[..at]))
        })?;
        let status =
            prelude["statusCode"].as_u64().ok_or_else(|| format!("prelude without statusCode: {prelude}"))?;
        let headers = prelude["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.to_ascii_lowercase(), header_text(v))).collect())
            .unwrap_or_default();
        (status as u16, headers, string_list(&prelude["cookies"]), &raw[at + PRELUDE_DELIMITER.len()..])
    } else {
        (200, BTreeMap::new(), Vec::new(), raw)
    };
    let (body, error) = match payload.windows(ERROR_TYPE_LINE.len()).rposition(|w| w == ERROR_TYPE_LINE) {
        Some(at) => (&payload[..at], Some(parse_error_lines(&payload[at..]))),
        None => (payload, None),
    };
    Ok(Streamed { http, status, headers, cookies, body: Bytes::copy_from_slice(body), error })
}

/// `Name: value\r\n` error lines (the trailer form written into the body).
fn parse_error_lines(tail: &[u8]) -> FunctionError {
    let text = String::from_utf8_lossy(tail);
    let mut error_type = String::new();
    let mut body = Value::Null;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(": ").unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "lambda-runtime-function-error-type" => error_type = value.to_owned(),
            "lambda-runtime-function-error-body" => body = decode_error_body(value),
            _ => {}
        }
    }
    FunctionError { error_type, body }
}

fn decode_error_body(value: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .unwrap_or_else(|_| value.as_bytes().to_vec());
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

struct Pending {
    request_id: String,
    event: Value,
}

struct Shared {
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Invocation>>>,
    init_error: Mutex<Option<FunctionError>>,
    function_arn: String,
    /// The function's timeout: each invocation's deadline is this long after the function takes it.
    timeout: Mutex<Duration>,
    /// The deadline of each invocation in hand.
    deadlines: Mutex<HashMap<String, SystemTime>>,
}

/// The function timeout of an emulator unless [`LambdaRuntime::set_timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The Runtime API emulator, on a free 127.0.0.1 port. Stops when dropped.
pub struct LambdaRuntime {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LambdaRuntime {
    /// Starts an emulator for a function named `trace-test`.
    pub async fn start() -> LambdaRuntime {
        Self::start_named("trace-test").await
    }

    /// Starts an emulator whose invocations carry the ARN of function `name`.
    pub async fn start_named(name: &str) -> LambdaRuntime {
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            next: tokio::sync::Mutex::new(rx),
            waiting: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            timeout: Mutex::new(DEFAULT_TIMEOUT),
            deadlines: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the runtime API");
        let addr = listener.local_addr().expect("runtime API address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LambdaRuntime { addr, queue, shared, server }
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the function's timeout, as the function's `Timeout` would in AWS: the deadline the next
    /// invocations carry (`Lambda-Runtime-Deadline-Ms`). An answer after it is refused as Lambda does
    /// (`Sandbox.Timedout`), so a function that overruns fails here.
    pub fn set_timeout(&self, timeout: Duration) {
        *self.shared.timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    /// The error the function reported while starting, if any.
    pub fn init_error(&self) -> Option<FunctionError> {
        self.shared.init_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues `event` for the function and waits up to `timeout` for its answer.
    pub async fn try_invoke(&self, event: Value, timeout: Duration) -> Result<Invocation, String> {
        let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
        if size > MAX_BUFFERED_BYTES {
            return Err(format!(
                "request payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_BUFFERED_BYTES} bytes)"
            ));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.clone(), tx);
        self.queue
            .send(Pending { request_id: request_id.clone(), event })
            .map_err(|_| "runtime API stopped")?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(invocation)) => Ok(invocation),
            Ok(Err(_)) => Err(format!("invocation {request_id}: the runtime API dropped it")),
            Err(_) => {
                self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&request_id);
                Err(format!(
                    "invocation {request_id}: no answer within {timeout:?} (init error: {:?})",
                    self.init_error()
                ))
            }
        }
    }

    /// Like [`try_invoke`](Self::try_invoke), panicking when no answer comes.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Invocation {
        self.try_invoke(event, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

fn epoch_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let pending = shared.next.lock().await.recv().await;
    let Some(Pending { request_id, event }) = pending else {
        return StatusCode::GONE.into_response();
    };
    let timeout = *shared.timeout.lock().unwrap_or_else(|e| e.into_inner());
    let ends = SystemTime::now() + timeout;
    shared.deadlines.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.clone(), ends);
    let deadline = epoch_ms(ends);
    let trace = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0;Lineage=1:a1b2c3d4:0",
        epoch_ms(SystemTime::now()) / 1000,
        &uuid::Uuid::new_v4().simple().to_string()[..24],
        &uuid::Uuid::new_v4().simple().to_string()[..16],
    );
    let mut response = Response::new(Body::from(serde_json::to_vec(&event).expect("event JSON")));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("lambda-runtime-aws-request-id", request_id.parse().expect("header"));
    headers.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().expect("header"));
    headers.insert("lambda-runtime-invoked-function-arn", shared.function_arn.parse().expect("header"));
    headers.insert("lambda-runtime-trace-id", trace.parse().expect("header"));
    response
}

fn complete(shared: &Shared, id: &str, invocation: Invocation) -> Response {
    let deadline = shared.deadlines.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    let timeout = *shared.timeout.lock().unwrap_or_else(|e| e.into_inner());
    let invocation = match deadline {
        Some(deadline) if SystemTime::now() > deadline => Invocation::Error(FunctionError {
            error_type: "Sandbox.Timedout".into(),
            body: Value::String(format!("Task timed out after {:.2} seconds", timeout.as_secs_f64())),
        }),
        _ => invocation,
    };
    match shared.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
        Some(tx) => {
            let _ = tx.send(invocation);
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "OK"}))).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"errorType": "InvalidRequestID", "errorMessage": format!("unknown request id {id}")})),
        )
            .into_response(),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(e) => {
            let error = FunctionError {
                error_type: "Emulator.BodyReadError".into(),
                body: Value::String(e.to_string()),
            };
            return complete(&shared, &id, Invocation::Error(error));
        }
    };
    let trailers = collected.trailers().cloned();
    let raw = collected.to_bytes();
    let streaming = header(&headers, "lambda-runtime-function-response-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
    let invocation = if let Some(error) = over_limit(streaming, raw.len()) {
        Invocation::Error(error)
    } else if streaming {
        let http = header(&headers, "content-type").is_some_and(|c| c.starts_with(HTTP_INTEGRATION_RESPONSE));
        match parse_streamed(http, &raw) {
            Ok(mut streamed) => {
                if let Some(error_type) =
                    trailers.as_ref().and_then(|t| header(t, "lambda-runtime-function-error-type"))
                {
                    let body = trailers
                        .as_ref()
                        .and_then(|t| header(t, "lambda-runtime-function-error-body"))
                        .map(decode_error_body)
                        .unwrap_or(Value::Null);
                    streamed.error = Some(FunctionError { error_type: error_type.to_owned(), body });
                }
                Invocation::Streamed(streamed)
            }
            Err(e) => Invocation::Error(FunctionError {
                error_type: "Emulator.BadStream".into(),
                body: Value::String(e),
            }),
        }
    } else {
        match serde_json::from_slice(&raw) {
            Ok(v) => Invocation::Buffered(v),
            Err(e) => Invocation::Error(FunctionError {
                error_type: "Emulator.ResponseNotJson".into(),
                body: Value::String(format!("{e}: {:.300}", String::from_utf8_lossy(&raw))),
            }),
        }
    };
    complete(&shared, &id, invocation)
}

fn error_report(headers: &HeaderMap, body: &[u8]) -> FunctionError {
    let body: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let error_type = header(headers, "lambda-runtime-function-error-type")
        .map(str::to_owned)
        .or_else(|| body["errorType"].as_str().map(str::to_owned))
        .unwrap_or_default();
    FunctionError { error_type, body }
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    complete(&shared, &id, Invocation::Error(error_report(&headers, &body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error_report(&headers, &body));
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "OK"}))).into_response()
}

/// A function binary running in Lambda mode against its own [`LambdaRuntime`]. The process is killed
/// when this is dropped; its stderr goes to [`log`](Self::log).
pub struct LambdaFunction {
    /// The emulator the function polls.
    pub runtime: LambdaRuntime,
    child: Child,
    log: PathBuf,
    name: String,
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LambdaFunction {
    /// Starts `binary_name` in Lambda mode with the environment of `system`'s processes plus `extra`
    /// (for the worker: `TRACE_WORKER_QUEUE`). Its log is in the system's log folder.
    pub async fn start(system: &System, binary_name: &str, extra: &[(&str, &str)]) -> LambdaFunction {
        let name = system
            .env
            .iter()
            .find(|(k, _)| k == "REDIS_KEY_PREFIX")
            .map(|(_, v)| v.as_str())
            .unwrap_or("lambda");
        let logs = std::env::temp_dir().join("trace-e2e").join(name);
        Self::start_with_env(&system.env, &logs, binary_name, extra).await
    }

    /// Starts `binary_name` in Lambda mode with `env` plus `extra`, logging into the folder `logs`.
    pub async fn start_with_env(
        env: &[(String, String)],
        logs: &FsPath,
        binary_name: &str,
        extra: &[(&str, &str)],
    ) -> LambdaFunction {
        let function = format!("trace-{binary_name}");
        let runtime = LambdaRuntime::start_named(&function).await;
        std::fs::create_dir_all(logs).expect("log dir");
        let log = logs
            .join(format!("lambda-{binary_name}-{}.log", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary(binary_name));
        cmd.env_remove("TRACE_HTTP_ADDR").envs(env.iter().map(|(k, v)| (k, v)));
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime.addr())
            .env("AWS_LAMBDA_FUNCTION_NAME", &function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/03/12/[$LATEST]0123456789abcdef0123456789abcdef")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            // As deployed: the template's LoggingConfig (JSON, ApplicationLogLevel INFO).
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            // As deployed: the principal comes from the authorizer's context in the event.
            .env("TRACE_AUTH", "gateway")
            // As deployed: PostgreSQL's certificate verified (Lambda's default sslmode is verify-full)
            // against the stack's throwaway CA, which signed it for 127.0.0.1 and localhost.
            .env("DATABASE_SSLMODE", "verify-full")
            .env("DATABASE_CA_FILE", crate::required("TRACE_TEST_CA_FILE"));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // stdout (the EMF metric lines) and stderr (the log) into one file, as Lambda sends both to the
        // function's log group.
        let stdout = file.try_clone().expect("log file");
        let child = cmd.stdout(stdout).stderr(file).spawn().expect("spawn the function");
        LambdaFunction { runtime, child, log, name: binary_name.to_owned() }
    }

    /// The function's log file.
    pub fn log(&self) -> &FsPath {
        &self.log
    }

    /// Feeds `event` to the function and waits up to `timeout` for its answer; panics (with the end of
    /// the log) when the process exits or no answer comes.
    pub async fn invoke(&mut self, event: Value, timeout: Duration) -> Invocation {
        let answer = self.runtime.try_invoke(event, timeout);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                result = &mut answer => match result {
                    Ok(invocation) => return invocation,
                    Err(e) => panic!("{}: {e}\n{}", self.name, self.log_tail()),
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("{} exited with {status} before answering\n{}", self.name, self.log_tail());
                    }
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("---- {} (last lines) ----\n{tail}", self.log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_over_lambda_s_limits_fail_like_in_aws() {
        assert!(over_limit(false, MAX_BUFFERED_BYTES).is_none());
        let error = over_limit(false, MAX_BUFFERED_BYTES + 1).expect("one byte over the buffered limit");
        assert_eq!(error.error_type, "Function.ResponseSizeTooLarge");
        assert!(error.body.as_str().is_some_and(|b| b.contains("6291557 bytes")), "{:?}", error.body);
        // A stream may be far larger than a buffered answer, up to its own cap.
        assert!(over_limit(true, MAX_BUFFERED_BYTES + 1).is_none());
        assert!(over_limit(true, MAX_STREAMED_BYTES).is_none());
        assert!(over_limit(true, MAX_STREAMED_BYTES + 1).is_some());
    }

    #[test]
    fn streamed_http_answer_is_split_at_the_prelude() {
        let mut raw = br#"{"statusCode":404,"headers":{"content-type":"application/x-ndjson","vary":["a","b"]},"cookies":["c=1"]}"#.to_vec();
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(b"{\"type\":\"meta\"}\n");
        let s = parse_streamed(true, &raw).unwrap();
        assert_eq!(s.status, 404);
        assert_eq!(s.headers["content-type"], "application/x-ndjson");
        assert_eq!(s.headers["vary"], "a, b");
        assert_eq!(s.cookies, vec!["c=1".to_owned()]);
        assert_eq!(&s.body[..], b"{\"type\":\"meta\"}\n");
        assert_eq!(s.error, None);
    }

    #[test]
    fn error_tail_of_a_stream_is_split_off() {
        let mut raw = br#"{"statusCode":200,"headers":{},"cookies":[]}"#.to_vec();
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(b"partial\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode("boom");
        raw.extend_from_slice(
            format!("Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: {b64}\r\n")
                .as_bytes(),
        );
        let s = parse_streamed(true, &raw).unwrap();
        assert_eq!(&s.body[..], b"partial\n");
        let e = s.error.unwrap();
        assert_eq!(e.error_type, "Runtime.StreamError");
        assert_eq!(e.body, Value::String("boom".into()));
        assert!(parse_streamed(true, b"{\"statusCode\":200}").is_err(), "no delimiter");
    }

    #[test]
    fn a_gzip_body_is_read_decoded_and_kept_as_sent() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"{\"type\":\"meta\"}\n").unwrap();
        let gz = encoder.finish().unwrap();
        let headers = BTreeMap::from([("content-encoding".to_owned(), "gzip".to_owned())]);
        let a = HttpAnswer {
            status: 200,
            headers,
            cookies: vec![],
            body: Bytes::from(gz.clone()),
            streamed: true,
        };
        assert_eq!(&a.body[..], &gz[..]);
        assert_eq!(a.ndjson(), vec![serde_json::json!({"type": "meta"})]);
    }

    #[test]
    fn buffered_proxy_response_becomes_http() {
        let v = serde_json::json!({
            "statusCode": 201, "headers": {"Content-Type": "text/plain"}, "multiValueHeaders": {},
            "body": base64::engine::general_purpose::STANDARD.encode("hi"), "isBase64Encoded": true, "cookies": []
        });
        let a = Invocation::Buffered(v).http();
        assert_eq!((a.status, a.header("content-type"), &a.body[..]), (201, Some("text/plain"), &b"hi"[..]));
    }
}
