//! Logging: the one place the `tracing` subscriber of every binary is chosen and installed.
//!
//! In Lambda the function's `LoggingConfig` decides: Lambda sets `AWS_LAMBDA_LOG_FORMAT` (`JSON`) and
//! `AWS_LAMBDA_LOG_LEVEL` (its `ApplicationLogLevel`), and the process follows them unless
//! `LOG_FORMAT` / `RUST_LOG` say otherwise ([`LogSettings::choose`]). A JSON line carries the keys a
//! Powertools user looks for ([`PowertoolsJson`]): `timestamp`, `level`, `message`, `service`,
//! `cold_start`, `function_request_id` (and `xray_trace_id` when Lambda gives one), then the event's
//! fields and its spans' fields at the top level. Lambda filters JSON lines by their `level`, so a
//! line below `ApplicationLogLevel` never reaches CloudWatch even if written.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use trace_core::config::LogFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The filter used when neither `RUST_LOG` nor Lambda names a level.
pub const DEFAULT_FILTER: &str = "info";

/// What the subscriber is made of, chosen from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The `EnvFilter` directives.
    pub filter: String,
    /// One JSON object per line (else human text).
    pub json: bool,
    /// The `service` key of the JSON lines.
    pub service: String,
}

impl LogSettings {
    /// The settings from `LOG_FORMAT` (`format`) and the variables `lookup` reads; `binary` names the
    /// service when nothing else does.
    ///
    /// - filter: `RUST_LOG`; else Lambda's `AWS_LAMBDA_LOG_LEVEL` (`TRACE`, `DEBUG`, `INFO`, `WARN`,
    ///   `ERROR`, `FATAL` → `error`); else `info`;
    /// - JSON: `LOG_FORMAT=json`; or with `auto`, `AWS_LAMBDA_LOG_FORMAT=JSON` (Text: text), and when
    ///   Lambda says neither, whether the process runs in Lambda (`AWS_LAMBDA_RUNTIME_API`);
    /// - service: `POWERTOOLS_SERVICE_NAME`, else `AWS_LAMBDA_FUNCTION_NAME`, else `binary`.
    pub fn choose(format: LogFormat, binary: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let filter = set("RUST_LOG")
            .or_else(|| set("AWS_LAMBDA_LOG_LEVEL").and_then(|level| lambda_level(&level)))
            .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
        let json = match format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => {
                match set("AWS_LAMBDA_LOG_FORMAT").map(|f| f.to_ascii_uppercase()).as_deref() {
                    Some("JSON") => true,
                    Some("TEXT") => false,
                    _ => set("AWS_LAMBDA_RUNTIME_API").is_some(),
                }
            }
        };
        let service = set("POWERTOOLS_SERVICE_NAME")
            .or_else(|| set("AWS_LAMBDA_FUNCTION_NAME"))
            .unwrap_or_else(|| binary.to_owned());
        LogSettings { filter, json, service }
    }
}

/// The `tracing` filter of a Lambda `ApplicationLogLevel`; `None` for a value Lambda does not define.
fn lambda_level(level: &str) -> Option<String> {
    let filter = match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        // tracing has no level above ERROR.
        "ERROR" | "FATAL" => "error",
        _ => return None,
    };
    Some(filter.to_owned())
}

/// Installs the subscriber chosen by [`LogSettings::choose`] from the process's environment, on
/// stderr; the binary's file name names the service when nothing else does. A second call does
/// nothing.
pub fn init_logging(format: LogFormat) {
    let binary = std::env::args_os()
        .next()
        .and_then(|path| std::path::Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "trace".to_owned());
    let settings = LogSettings::choose(format, &binary, |name| std::env::var(name).ok());
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if settings.json {
        builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(PowertoolsJson::new(settings.service))
            .try_init()
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
    };
}

/// Which lines belong to the process's first invocation (Powertools' `cold_start`): those of the first
/// request id seen, and those before any (the start-up, part of the cold start).
#[derive(Debug, Default)]
pub struct ColdStart {
    first: OnceLock<String>,
}

impl ColdStart {
    /// Whether a line of `request_id` (none: outside any invocation) belongs to the cold start.
    pub fn is_cold(&self, request_id: Option<&str>) -> bool {
        match request_id {
            Some(id) => self.first.get_or_init(|| id.to_owned()) == id,
            None => self.first.get().is_none(),
        }
    }
}

/// A JSON event format with Powertools' keys; the other fields at the top level (see the module).
#[derive(Debug)]
pub struct PowertoolsJson {
    service: String,
    cold: ColdStart,
}

impl PowertoolsJson {
    /// The format of a process whose lines carry `service`.
    pub fn new(service: impl Into<String>) -> Self {
        PowertoolsJson { service: service.into(), cold: ColdStart::default() }
    }
}

/// Span fields that Lambda's runtime (`requestId`, `xrayTraceId`) or this code (`request_id`) use for
/// the invocation; shown under Powertools' names.
const LAMBDA_REQUEST_ID: &str = "requestId";
const LAMBDA_TRACE_ID: &str = "xrayTraceId";
const REQUEST_ID: &str = "request_id";

impl<S, N> FormatEvent<S, N> for PowertoolsJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Spans from the outermost in: an inner span's field wins over an outer one's.
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(formatted.as_str()) {
                    fields.extend(map);
                }
            }
        }
        let request_id = fields
            .remove(LAMBDA_REQUEST_ID)
            .or_else(|| fields.get(REQUEST_ID).cloned())
            .and_then(|v| v.as_str().map(str::to_owned));
        let trace_id = fields.remove(LAMBDA_TRACE_ID);
        let mut visitor = JsonVisitor(Map::new());
        event.record(&mut visitor);
        let mut event_fields = visitor.0;
        let message = event_fields.remove("message").unwrap_or(Value::String(String::new()));
        let meta = event.metadata();

        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("message".into(), message);
        line.insert("service".into(), self.service.clone().into());
        line.insert("cold_start".into(), self.cold.is_cold(request_id.as_deref()).into());
        line.insert("function_request_id".into(), request_id.map_or(Value::Null, Value::String));
        if let Some(trace_id) = trace_id {
            line.insert("xray_trace_id".into(), trace_id);
        }
        line.insert("target".into(), meta.target().into());
        for (key, value) in fields.into_iter().chain(event_fields) {
            if !is_powertools_key(&key) {
                line.insert(key, value);
            }
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The keys a field may not overwrite.
fn is_powertools_key(key: &str) -> bool {
    matches!(key, "timestamp" | "level" | "message" | "service" | "cold_start" | "function_request_id")
}

/// An event's fields as JSON values (numbers and booleans as such, the rest as text).
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its sources, as the text format shows them.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn choose(format: LogFormat, pairs: &[(&str, &str)]) -> LogSettings {
        let env: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LogSettings::choose(format, "worker", |name| env.get(name).cloned())
    }

    #[test]
    fn lambda_s_logging_config_decides_unless_rust_log_or_log_format_say_otherwise() {
        // A local process: text, info, the binary's name.
        assert_eq!(
            choose(LogFormat::Auto, &[]),
            LogSettings { filter: "info".into(), json: false, service: "worker".into() }
        );
        // Lambda with LoggingConfig {LogFormat: JSON, ApplicationLogLevel: DEBUG}.
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
            ("AWS_LAMBDA_FUNCTION_NAME", "trace-jobs-WorkerHeavyFunction-AbC"),
        ];
        assert_eq!(
            choose(LogFormat::Auto, &lambda),
            LogSettings {
                filter: "debug".into(),
                json: true,
                service: "trace-jobs-WorkerHeavyFunction-AbC".into()
            }
        );
        // Every Lambda level; FATAL is tracing's ERROR; an unknown one falls back to info.
        for (aws, filter) in
            [("TRACE", "trace"), ("INFO", "info"), ("WARN", "warn"), ("ERROR", "error"), ("FATAL", "error")]
        {
            assert_eq!(choose(LogFormat::Auto, &[("AWS_LAMBDA_LOG_LEVEL", aws)]).filter, filter, "{aws}");
        }
        assert_eq!(choose(LogFormat::Auto, &[("AWS_LAMBDA_LOG_LEVEL", "LOUD")]).filter, "info");
        // RUST_LOG wins over Lambda's level; an empty one does not count.
        let mut with_rust_log = lambda.to_vec();
        with_rust_log.push(("RUST_LOG", "trace_service=debug,warn"));
        assert_eq!(choose(LogFormat::Auto, &with_rust_log).filter, "trace_service=debug,warn");
        with_rust_log.pop();
        with_rust_log.push(("RUST_LOG", " "));
        assert_eq!(choose(LogFormat::Auto, &with_rust_log).filter, "debug");
        // LOG_FORMAT=text wins; Lambda's Text format is followed; Lambda without a format: JSON.
        assert!(!choose(LogFormat::Text, &lambda).json);
        assert!(
            !choose(LogFormat::Auto, &[("AWS_LAMBDA_RUNTIME_API", "x"), ("AWS_LAMBDA_LOG_FORMAT", "Text")])
                .json
        );
        assert!(choose(LogFormat::Auto, &[("AWS_LAMBDA_RUNTIME_API", "x")]).json);
        assert!(choose(LogFormat::Json, &[]).json);
        // POWERTOOLS_SERVICE_NAME names the service first.
        let mut named = lambda.to_vec();
        named.push(("POWERTOOLS_SERVICE_NAME", "trace-jobs"));
        assert_eq!(choose(LogFormat::Auto, &named).service, "trace-jobs");
    }

    #[test]
    fn cold_start_is_the_first_invocation_and_the_start_up_before_it() {
        let cold = ColdStart::default();
        assert!(cold.is_cold(None), "start-up");
        assert!(cold.is_cold(Some("req-1")));
        assert!(cold.is_cold(Some("req-1")), "every line of the first invocation");
        assert!(!cold.is_cold(Some("req-2")));
        assert!(!cold.is_cold(None), "after the first invocation");
        assert!(cold.is_cold(Some("req-1")));
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(log: &Captured) -> Vec<Value> {
        let bytes = log.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l}: {e}")))
            .collect()
    }

    #[test]
    fn every_json_line_carries_the_powertools_keys() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(PowertoolsJson::new("trace-worker"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("starting");
            for id in ["8f5b-first", "a2c4-second"] {
                let invoke =
                    tracing::info_span!("Lambda runtime invoke", requestId = id, xrayTraceId = "1-abc");
                let _invoke = invoke.enter();
                let job = tracing::info_span!("job", job_id = "j-1", shard = 0u32);
                let _job = job.enter();
                tracing::warn!(records = 42u64, ok = true, "job \"finished\"");
            }
        });
        let lines = lines(&log);
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            for key in ["timestamp", "level", "message", "service", "cold_start", "function_request_id"] {
                assert!(line.get(key).is_some(), "{key} missing: {line}");
            }
            assert_eq!(line["service"], "trace-worker");
            let timestamp = line["timestamp"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
            assert!(timestamp.ends_with('Z') && timestamp.len() == 24, "milliseconds, UTC: {timestamp}");
        }
        assert_eq!(
            (&lines[0]["level"], &lines[0]["message"]),
            (&Value::from("INFO"), &Value::from("starting"))
        );
        assert_eq!(lines[0]["cold_start"], true);
        assert_eq!(lines[0]["function_request_id"], Value::Null);

        let first = &lines[1];
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "job \"finished\"");
        assert_eq!(first["function_request_id"], "8f5b-first");
        assert_eq!(first["cold_start"], true);
        assert_eq!(first["xray_trace_id"], "1-abc");
        assert_eq!((&first["job_id"], &first["shard"]), (&Value::from("j-1"), &Value::from(0)));
        assert_eq!((&first["records"], &first["ok"]), (&Value::from(42), &Value::from(true)));
        assert!(first.get("requestId").is_none(), "shown as function_request_id only: {first}");

        assert_eq!(lines[2]["function_request_id"], "a2c4-second");
        assert_eq!(lines[2]["cold_start"], false);
    }

    #[test]
    fn this_code_s_request_span_names_the_request_outside_lambda_s_span() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(PowertoolsJson::new("trace-status"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "r-9");
            let _span = span.enter();
            tracing::error!(message_id = "m", "request failed");
        });
        let line = &lines(&log)[0];
        assert_eq!(line["function_request_id"], "r-9");
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["message"], "request failed");
    }
}
