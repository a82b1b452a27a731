//! CloudWatch metrics in the Embedded Metric Format (EMF): one JSON object per line on stdout, with
//! the `_aws` block at the top level, which CloudWatch Logs turns into metrics (no API call, no
//! permission beyond writing logs). Written when `TRACE_METRICS` says so (`emf`, or `auto` in Lambda).
//!
//! Two lines, both in the namespace [`NAMESPACE`]:
//! - per job run that ends ([`JobEnd`], the worker): dimensions `[Queue]`, `[Queue, Outcome]`; metrics
//!   `QueueWaitMs`, `RunMs`, `Records`, `BytesStored`, `ObjectWrites`; properties `job_id`, `shard`,
//!   `attempt`, `outcome`, `error_code`;
//! - per HTTP request ([`RequestEnd`], every HTTP function): dimensions `[Route]`, `[Route, Status]`;
//!   metrics `LatencyMs` (until the answer's head: a stream's body goes on after it), `Requests`;
//!   property `request_id`.

use std::io::Write;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use trace_core::config::{in_lambda, MetricsMode};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "TraceJobs";

/// A metric's CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Milliseconds,
    /// A count.
    Count,
    /// Bytes.
    Bytes,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One EMF line: dimensions (with the sets they are aggregated by), metrics, and properties (searchable
/// in Logs Insights, not metrics).
#[derive(Debug, Clone, Default)]
pub struct Emf {
    dimension_sets: Vec<Vec<&'static str>>,
    dimensions: Vec<(&'static str, String)>,
    metrics: Vec<(&'static str, Unit, f64)>,
    properties: Map<String, Value>,
}

impl Emf {
    /// A line aggregated by each of `sets` (each a list of dimension names).
    pub fn new(sets: &[&[&'static str]]) -> Self {
        Emf { dimension_sets: sets.iter().map(|s| s.to_vec()).collect(), ..Emf::default() }
    }

    /// Sets a dimension's value.
    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    /// Adds a metric.
    pub fn metric(mut self, name: &'static str, unit: Unit, value: f64) -> Self {
        self.metrics.push((name, unit, value));
        self
    }

    /// Adds a property.
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The line (no newline), stamped `timestamp_ms` (epoch milliseconds).
    pub fn render(&self, timestamp_ms: i64) -> String {
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": self.dimension_sets,
                    "Metrics": self.metrics.iter()
                        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        for (name, value) in &self.properties {
            line.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.dimensions {
            line.insert((*name).to_owned(), Value::String(value.clone()));
        }
        for (name, _, value) in &self.metrics {
            line.insert((*name).to_owned(), json!(value));
        }
        Value::Object(line).to_string()
    }

    /// Writes the line, stamped now, to stdout in one write (the log lines go to stderr).
    pub fn emit(&self) {
        let mut line = self.render(chrono::Utc::now().timestamp_millis());
        line.push('\n');
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// Whether this process writes EMF lines (`TRACE_METRICS`, `auto` = in Lambda).
pub fn enabled(mode: MetricsMode) -> bool {
    mode.emits(in_lambda())
}

/// How a worker's run of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The result is complete.
    Finished,
    /// The job failed for good.
    Failed,
    /// The job was cancelled.
    Cancelled,
    /// A transient failure: the job was released for another delivery.
    Retried,
    /// The process was shutting down: the job was released.
    Released,
    /// Another worker took the job over.
    TakenOver,
    /// The Lambda invocation was ending: the run checkpointed and sent a continuation message.
    Continued,
}

impl Outcome {
    /// The `Outcome` dimension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Retried => "retried",
            Outcome::Released => "released",
            Outcome::TakenOver => "taken_over",
            Outcome::Continued => "continued",
        }
    }
}

/// The end of a worker's run of one job shard.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// The job.
    pub job_id: String,
    /// Its shard.
    pub shard: u32,
    /// Its attempt.
    pub attempt: u32,
    /// `heavy` or `light`.
    pub queue: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// The failure's code (`JOB_TIMEOUT`, `SOURCE_ERROR`, …), if it failed or was retried.
    pub error_code: Option<&'static str>,
    /// From the job's creation to this run's claim.
    pub queue_wait: Duration,
    /// From the claim to the end of the run.
    pub run: Duration,
    /// Records written.
    pub records: u64,
    /// Bytes of the objects stored (chunks and manifest, as stored: compressed).
    pub bytes_stored: u64,
    /// Objects written (chunks and manifest).
    pub object_writes: u64,
}

impl JobEnd {
    /// Its EMF line.
    pub fn emf(&self) -> Emf {
        Emf::new(&[&["Queue"], &["Queue", "Outcome"]])
            .dimension("Queue", self.queue)
            .dimension("Outcome", self.outcome.as_str())
            .metric("QueueWaitMs", Unit::Milliseconds, millis(self.queue_wait))
            .metric("RunMs", Unit::Milliseconds, millis(self.run))
            .metric("Records", Unit::Count, self.records as f64)
            .metric("BytesStored", Unit::Bytes, self.bytes_stored as f64)
            .metric("ObjectWrites", Unit::Count, self.object_writes as f64)
            .property("job_id", self.job_id.clone())
            .property("shard", self.shard)
            .property("attempt", self.attempt)
            .property("outcome", self.outcome.as_str())
            .property("error_code", self.error_code.map_or(Value::Null, Value::from))
    }
}

/// One answered HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEnd {
    /// `METHOD /route/{template}` (`unmatched` for no route).
    pub route: String,
    /// The HTTP status.
    pub status: u16,
    /// Until the answer's head.
    pub latency: Duration,
    /// The request's id.
    pub request_id: String,
}

impl RequestEnd {
    /// Its EMF line.
    pub fn emf(&self) -> Emf {
        Emf::new(&[&["Route"], &["Route", "Status"]])
            .dimension("Route", self.route.clone())
            .dimension("Status", self.status.to_string())
            .metric("LatencyMs", Unit::Milliseconds, millis(self.latency))
            .metric("Requests", Unit::Count, 1.0)
            .property("request_id", self.request_id.clone())
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `router` with one EMF line per request when `mode` says so (else unchanged). Inside
/// [`with_request_ids`](crate::http::with_request_ids), so the line carries the request's id.
pub fn with_request_metrics(router: Router, mode: MetricsMode) -> Router {
    if enabled(mode) {
        router.layer(middleware::from_fn(measure))
    } else {
        router
    }
}

async fn measure(request: Request, next: Next) -> Response {
    let route = route_of(&request);
    let started = Instant::now();
    let response = next.run(request).await;
    RequestEnd {
        route,
        status: response.status().as_u16(),
        latency: started.elapsed(),
        request_id: crate::http::request_id(),
    }
    .emf()
    .emit();
    response
}

/// `METHOD /template` of the route that matched (its template, never the ids in the path).
fn route_of(request: &Request) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(line).expect("JSON")
    }

    /// Every metric and dimension the `_aws` block names is at the top level with the right type.
    fn check_emf(line: &Value) {
        let aws = &line["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{aws}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], NAMESPACE);
        for set in directives[0]["Dimensions"].as_array().unwrap() {
            for name in set.as_array().unwrap() {
                assert!(line[name.as_str().unwrap()].is_string(), "dimension {name} missing: {line}");
            }
        }
        for metric in directives[0]["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "metric {name} missing: {line}");
            assert!(["Milliseconds", "Count", "Bytes"].contains(&metric["Unit"].as_str().unwrap()));
        }
    }

    #[test]
    fn a_job_end_is_one_emf_line_with_its_queue_outcome_and_counts() {
        let end = JobEnd {
            job_id: "0b8e".into(),
            shard: 0,
            attempt: 1,
            queue: "heavy",
            outcome: Outcome::Failed,
            error_code: Some("JOB_TIMEOUT"),
            queue_wait: Duration::from_micros(1_500_250),
            run: Duration::from_secs(12),
            records: 4_667_096,
            bytes_stored: 170_000_000,
            object_writes: 191,
        };
        let line = parse(&end.emf().render(1_764_530_000_123));
        check_emf(&line);
        assert_eq!(line["_aws"]["Timestamp"], 1_764_530_000_123i64);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Queue"], ["Queue", "Outcome"]])
        );
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["QueueWaitMs", "RunMs", "Records", "BytesStored", "ObjectWrites"]);
        assert_eq!((&line["Queue"], &line["Outcome"]), (&json!("heavy"), &json!("failed")));
        assert_eq!(line["QueueWaitMs"], 1500.25);
        assert_eq!(line["RunMs"], 12000.0);
        assert_eq!(line["Records"], 4_667_096.0);
        assert_eq!(line["BytesStored"], 170_000_000.0);
        assert_eq!(line["ObjectWrites"], 191.0);
        assert_eq!(
            (&line["job_id"], &line["outcome"], &line["error_code"]),
            (&json!("0b8e"), &json!("failed"), &json!("JOB_TIMEOUT"))
        );
        let finished = parse(&JobEnd { outcome: Outcome::Finished, error_code: None, ..end }.emf().render(0));
        assert_eq!((&finished["Outcome"], &finished["error_code"]), (&json!("finished"), &Value::Null));
    }

    #[test]
    fn a_request_is_one_emf_line_with_its_route_template_status_and_latency() {
        let line = parse(
            &RequestEnd {
                route: "GET /api/trace/job/{id}".into(),
                status: 404,
                latency: Duration::from_millis(3),
                request_id: "r-1".into(),
            }
            .emf()
            .render(5),
        );
        check_emf(&line);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Route"], ["Route", "Status"]])
        );
        assert_eq!((&line["Route"], &line["Status"]), (&json!("GET /api/trace/job/{id}"), &json!("404")));
        assert_eq!((&line["LatencyMs"], &line["Requests"]), (&json!(3.0), &json!(1.0)));
        assert_eq!(line["request_id"], "r-1");
    }

    #[tokio::test]
    async fn the_route_is_the_matched_template_never_the_path() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let router = Router::new().route("/api/trace/job/{id}", get(|| async { "ok" })).layer(
            middleware::from_fn(move |request: Request, next: Next| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(route_of(&request));
                    next.run(request).await
                }
            }),
        );
        for uri in ["/api/trace/job/0b8e-secret-id", "/nowhere"] {
            let request = axum::http::Request::builder().uri(uri).body(Body::empty()).unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), ["GET /api/trace/job/{id}", "unmatched"]);
    }

    #[test]
    fn metrics_follow_trace_metrics_with_auto_in_lambda_only() {
        assert!(MetricsMode::Auto.emits(true));
        assert!(!MetricsMode::Auto.emits(false));
        assert!(MetricsMode::Emf.emits(false));
        assert!(!MetricsMode::Off.emits(true));
    }
}
