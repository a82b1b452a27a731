//! The SAM template (`template.yaml`): CI's offline check (`infra/validate-template.sh`: SAM translation,
//! then cfn-lint) rejects a mistyped SAM property value and accepts the real template; and the
//! translated template matches the code: every configuration variable with the code's default, the
//! functions, memory, queues, dead-letter queues and visibility timeouts, routes, streaming URL,
//! schedule, lifecycle rule, and an event in `events/` for every function.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use trace_core::config::VARIABLES;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A fresh temporary folder.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(trace_integration::unique("template"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs `infra/validate-template.sh template [translated]`.
fn validate(template: &Path, translated: Option<&Path>) -> Output {
    let mut cmd = Command::new(format!("{REPO}/infra/validate-template.sh"));
    cmd.arg(template);
    if let Some(t) = translated {
        cmd.arg(t);
    }
    cmd.output().expect("run infra/validate-template.sh")
}

/// Runs the check on a copy made by [`broken_copy`], then removes the copy.
fn validate_copy(copy: &Path) -> Output {
    let out = validate(copy, None);
    let _ = std::fs::remove_dir_all(copy.parent().expect("the copy's folder"));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `template.yaml` with `from` (which must occur exactly once) replaced by `to`, in a temp folder.
fn broken_copy(from: &str, to: &str) -> PathBuf {
    let source = std::fs::read_to_string(format!("{REPO}/template.yaml")).expect("template.yaml");
    assert_eq!(source.matches(from).count(), 1, "template.yaml should contain {from:?} once");
    let path = temp_dir().join("template.yaml");
    std::fs::write(&path, source.replace(from, to)).expect("write the copy");
    path
}

#[test]
fn the_check_rejects_a_mistyped_sam_property_value() {
    // SAM passes FunctionUrlConfig.InvokeMode through unchecked, and cfn-lint on the SAM template does
    // not look into it: only linting the translated template sees the AWS::Lambda::Url value.
    let copy = broken_copy("InvokeMode: RESPONSE_STREAM", "InvokeMode: STREAMING");
    let out = validate_copy(&copy);
    let report = text(&out);
    assert!(!out.status.success(), "a template with InvokeMode: STREAMING passed the check:\n{report}");
    assert!(
        report.contains("StreamFunctionUrl/Properties/InvokeMode") && report.contains("STREAMING"),
        "{report}"
    );
    // A mistyped SQS event property (SAM accepts it, CloudFormation would not).
    let copy = broken_copy(
        "FunctionResponseTypes: [ReportBatchItemFailures]\n            ScalingConfig: { MaximumConcurrency: !Ref LightWorkerConcurrency }",
        "FunctionResponseTypes: [ReportBatchFailures]\n            ScalingConfig: { MaximumConcurrency: !Ref LightWorkerConcurrency }",
    );
    let out = validate_copy(&copy);
    let report = text(&out);
    assert!(
        !out.status.success(),
        "a template with FunctionResponseTypes: [ReportBatchFailures] passed:\n{report}"
    );
    assert!(report.contains("ReportBatchFailures"), "{report}");
}

/// The real template, translated by SAM (and checked: the script must pass on it).
fn translated() -> Value {
    let path = temp_dir().join("translated.json");
    let out = validate(Path::new(&format!("{REPO}/template.yaml")), Some(&path));
    assert!(out.status.success(), "infra/validate-template.sh fails on template.yaml:\n{}", text(&out));
    assert!(text(&out).contains("is valid"), "{}", text(&out));
    let json = std::fs::read_to_string(&path).expect("translated template");
    let _ = std::fs::remove_dir_all(path.parent().expect("its folder"));
    serde_json::from_str(&json).expect("JSON")
}

/// A parameter's default as text (`None`: no default).
fn param_default(t: &Value, name: &str) -> Option<String> {
    match &t["Parameters"][name]["Default"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[test]
fn the_template_is_valid_and_matches_the_code() {
    let t = translated();
    let r = &t["Resources"];
    let functions: BTreeSet<&str> = r
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["Type"] == "AWS::Lambda::Function")
        .map(|(k, _)| k.as_str())
        .collect();
    let expected = [
        ("SubmitFunction", "submit", json!(256), "submit.json"),
        ("StatusFunction", "status", json!(256), "status.json"),
        ("StreamFunction", "stream", json!(512), "stream.json"),
        ("ResultFunction", "stream", json!(256), "result-api.json"),
        ("WorkerHeavyFunction", "worker", json!({"Ref": "HeavyWorkerMemory"}), "worker-sqs.json"),
        ("WorkerLightFunction", "worker", json!(1024), "worker-sqs.json"),
        ("BackfillFunction", "backfill", json!(256), "backfill-schedule.json"),
    ];
    assert_eq!(functions, expected.iter().map(|e| e.0).collect(), "the template's functions");
    assert_eq!(param_default(&t, "HeavyWorkerMemory").as_deref(), Some("3008"));
    assert_eq!(param_default(&t, "Architecture").as_deref(), Some("arm64"));
    assert!(t["Parameters"]["Architecture"]["AllowedValues"].as_array().unwrap().contains(&json!("x86_64")));

    for (name, binary, memory, event) in expected {
        let f = &r[name];
        let p = &f["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{name}");
        assert_eq!(p["Handler"], "bootstrap", "{name}");
        assert_eq!(p["Architectures"], json!([{"Ref": "Architecture"}]), "{name}");
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], binary, "{name}");
        assert_eq!(p["MemorySize"], memory, "{name}");
        let cargo =
            std::fs::read_to_string(format!("{REPO}/functions/{binary}/Cargo.toml")).expect("Cargo.toml");
        assert!(
            cargo.contains(&format!("name = \"{binary}\"")),
            "functions/{binary} builds no binary {binary}"
        );
        // Every function has an event to be invoked with (tests/lambda_events.rs, tests/backfill.rs).
        assert!(Path::new(&format!("{REPO}/events/{event}")).exists(), "{name}: events/{event} is missing");

        // Every configuration variable, with the code's default where the code has one.
        let env = &p["Environment"]["Variables"];
        for v in VARIABLES {
            let value = &env[v.name];
            if v.name == "TRACE_WORKER_QUEUE" {
                continue;
            }
            if v.name == "TRACE_STREAM_RESPONSE" && name == "ResultFunction" {
                // Behind the HTTP API the stream binary must answer buffered.
                assert_eq!(value, "buffered", "{name}: {}", v.name);
                continue;
            }
            assert!(!value.is_null(), "{name}: {} is not set in the template", v.name);
            let set = match value {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => match o.get("Ref").and_then(Value::as_str) {
                    Some(p) if t["Parameters"].get(p).is_some() => param_default(&t, p),
                    _ => None, // a resource, a condition: a deployment value
                },
                other => Some(other.to_string()),
            };
            match set {
                Some(default) => assert_eq!(default, v.default, "{name}: default of {}", v.name),
                None => {
                    assert_eq!(v.default, "", "{name}: {} must default to the code's {:?}", v.name, v.default)
                }
            }
        }
    }
    // glibc's arenas capped as infra/bench.sh runs its workers (bench/src/main.rs, WORKER_MALLOC_ARENA_MAX).
    for worker in ["WorkerHeavyFunction", "WorkerLightFunction"] {
        assert_eq!(r[worker]["Properties"]["Environment"]["Variables"]["MALLOC_ARENA_MAX"], "2", "{worker}");
    }
    assert_eq!(
        r["WorkerHeavyFunction"]["Properties"]["Environment"]["Variables"]["TRACE_WORKER_QUEUE"],
        "heavy"
    );
    assert_eq!(
        r["WorkerLightFunction"]["Properties"]["Environment"]["Variables"]["TRACE_WORKER_QUEUE"],
        "light"
    );

    // Queues: each worker on its own queue, visibility at least 6 x its timeout, a DLQ after
    // TRACE_MAX_RECEIVE_COUNT deliveries, partial batch responses.
    let code_default = |name: &str| VARIABLES.iter().find(|v| v.name == name).unwrap().default;
    assert_eq!(
        param_default(&t, "MaxReceiveCount").as_deref(),
        Some(code_default("TRACE_MAX_RECEIVE_COUNT"))
    );
    let mut queues = BTreeSet::new();
    for (worker, kind) in [("WorkerHeavyFunction", "heavy"), ("WorkerLightFunction", "light")] {
        let mapping = r
            .as_object()
            .unwrap()
            .values()
            .find(|v| {
                v["Type"] == "AWS::Lambda::EventSourceMapping"
                    && v["Properties"]["FunctionName"]["Ref"] == worker
            })
            .unwrap_or_else(|| panic!("{worker} has no SQS event"));
        let m = &mapping["Properties"];
        assert_eq!(m["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]), "{worker}");
        assert_eq!(m["BatchSize"], 1, "{worker}");
        let queue = m["EventSourceArn"]["Fn::GetAtt"][0].as_str().expect("a queue of the template");
        assert!(queue.to_lowercase().starts_with(kind), "{worker} reads {queue}");
        queues.insert(queue.to_owned());
        let q = &r[queue]["Properties"];
        let timeout = r[worker]["Properties"]["Timeout"].as_u64().expect("timeout");
        let visibility = q["VisibilityTimeout"].as_u64().expect("visibility");
        assert!(visibility >= 6 * timeout, "{queue}: visibility {visibility} s < 6 x {worker}'s {timeout} s");
        assert_eq!(q["RedrivePolicy"]["maxReceiveCount"], json!({"Ref": "MaxReceiveCount"}), "{queue}");
        let dlq = q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str().expect("a DLQ");
        assert_eq!(r[dlq]["Type"], "AWS::SQS::Queue", "{queue}'s DLQ");
        // Its own queue only, for the heartbeat.
        let policies = r[format!("{worker}Role")]["Properties"]["Policies"].to_string();
        assert!(
            policies.contains("sqs:ChangeMessageVisibility") && policies.contains(queue),
            "{worker}: {policies}"
        );
    }
    assert_eq!(queues.len(), 2, "the workers read different queues");
    let heavy_timeout = r["WorkerHeavyFunction"]["Properties"]["Timeout"].clone();
    assert_ne!(
        heavy_timeout, r["WorkerLightFunction"]["Properties"]["Timeout"],
        "the workers' timeouts differ"
    );

    // The stream really streams: a Function URL in RESPONSE_STREAM mode.
    let url = &r["StreamFunctionUrl"]["Properties"];
    assert_eq!(url["InvokeMode"], "RESPONSE_STREAM");
    assert_eq!(url["TargetFunctionArn"], json!({"Ref": "StreamFunction"}));

    // The HTTP API routes.
    let api =
        r.as_object().unwrap().values().find(|v| v["Type"] == "AWS::ApiGatewayV2::Api").expect("HTTP API");
    let paths = &api["Properties"]["Body"]["paths"];
    for (path, method, function) in [
        ("/api/trace/events", "post", "SubmitFunction"),
        ("/api/trace/job/{id}", "x-amazon-apigateway-any-method", "StatusFunction"),
        ("/api/trace/jobs", "get", "StatusFunction"),
        ("/api/trace/job/{id}/result", "get", "ResultFunction"),
    ] {
        let uri =
            paths[path][method]["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"].as_str().unwrap_or("");
        assert!(
            uri.contains(&format!("${{{function}.Arn}}")),
            "{method} {path} should invoke {function}: {uri}"
        );
    }

    // The schedule invokes the backfill.
    let rule =
        r.as_object().unwrap().values().find(|v| v["Type"] == "AWS::Events::Rule").expect("a schedule");
    assert_eq!(rule["Properties"]["ScheduleExpression"], json!({"Ref": "BackfillSchedule"}));
    assert_eq!(rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0], "BackfillFunction");
    let window: u64 = code_default("TRACE_BACKFILL_WINDOW_SECONDS").parse().unwrap();
    assert_eq!(
        param_default(&t, "BackfillSchedule").as_deref(),
        Some(format!("rate({} hour)", window / 3600).as_str())
    );

    // Results expire with the job: the lifecycle rule's days are the job TTL's.
    let rule = &r["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0];
    assert_eq!(rule["Prefix"], "jobs/");
    assert_eq!(
        rule["ExpirationInDays"],
        json!({"Fn::FindInMap": ["JobTtlDays", {"Ref": "JobTtlSeconds"}, "Days"]})
    );
    for ttl in t["Parameters"]["JobTtlSeconds"]["AllowedValues"].as_array().unwrap() {
        let seconds: u64 = ttl.to_string().trim_matches('"').parse().unwrap();
        let days = &t["Mappings"]["JobTtlDays"][seconds.to_string()]["Days"];
        assert_eq!(days.as_u64(), Some(seconds / 86_400), "JobTtlDays[{seconds}]");
    }

    let outputs: BTreeSet<&str> = t["Outputs"].as_object().unwrap().keys().map(String::as_str).collect();
    for o in ["ApiUrl", "StreamUrl", "HeavyQueueUrl", "LightQueueUrl", "Bucket"] {
        assert!(outputs.contains(o), "output {o} is missing");
    }
}
