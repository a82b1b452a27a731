//! The SAM template (`template.yaml`): CI's offline check (`infra/validate-template.sh`: SAM translation,
//! then cfn-lint) rejects a mistyped SAM property value and accepts the real template; and the
//! translated template matches the code: every configuration variable with the code's default, the
//! functions, memory, queues, dead-letter queues and visibility timeouts, routes, streaming URL,
//! schedule, lifecycle rule, and an event in `events/` for every function.
//!
//! And it is locked down: every HTTP API route has an authorizer (IAM, or JWT by parameter), the
//! Function URL uses IAM, only the functions that read the database may read its one secret, and no
//! `Environment` holds a password or a deploy-time resolved secret. Each of these checks is also run on
//! a translation broken on purpose, to show it fails.
//!
//! And it is operable: every function logs JSON at `LogLevel` into its own log group kept
//! `LogRetentionDays`, is traced (X-Ray), has error and throttle alarms; every queue and dead-letter queue
//! has its alarm, so has the API's 5xx; a dashboard shows them with the EMF metrics; the backfill's failed
//! runs reach a queue. `samconfig.toml` builds without a prompt and picks the architecture once for build
//! and deploy. Each check is also run on a copy without what it checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

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

/// The real template, translated by SAM (and checked: the script must pass on it). Translated once
/// per test run (about 20 s), shared by the tests.
fn translated() -> Value {
    static TRANSLATED: OnceLock<Value> = OnceLock::new();
    TRANSLATED
        .get_or_init(|| {
            let path = temp_dir().join("translated.json");
            let out = validate(Path::new(&format!("{REPO}/template.yaml")), Some(&path));
            assert!(
                out.status.success(),
                "infra/validate-template.sh fails on template.yaml:\n{}",
                text(&out)
            );
            assert!(text(&out).contains("is valid"), "{}", text(&out));
            let json = std::fs::read_to_string(&path).expect("translated template");
            let _ = std::fs::remove_dir_all(path.parent().expect("its folder"));
            serde_json::from_str(&json).expect("JSON")
        })
        .clone()
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

        // Every configuration variable the function's binary reads, with the code's default where the
        // code has one; a few with the deployment's own value; the local-only ones never.
        let env = &p["Environment"]["Variables"];
        for v in VARIABLES {
            let value = &env[v.name];
            if v.name == "TRACE_WORKER_QUEUE" {
                continue;
            }
            if NOT_IN_LAMBDA.contains(&v.name) {
                assert!(value.is_null(), "{name}: {} must not be set in AWS: {value}", v.name);
                continue;
            }
            if let Some((_, expected)) = DEPLOYMENT_VALUES.iter().find(|(n, _)| *n == v.name) {
                let set = match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => {
                        o.get("Ref").and_then(Value::as_str).and_then(|p| param_default(&t, p))
                    }
                    _ => None,
                };
                assert_eq!(set.as_deref(), Some(*expected), "{name}: {} in AWS", v.name);
                continue;
            }
            if v.name == "TRACE_STREAM_RESPONSE" && name == "ResultFunction" {
                // Behind the HTTP API the stream binary must answer buffered.
                assert_eq!(value, "buffered", "{name}: {}", v.name);
                continue;
            }
            let read_by: Vec<&str> = v.read_by.split(',').map(str::trim).collect();
            if !read_by.iter().any(|b| *b == binary || *b == "all") {
                continue; // not this binary's: it may be set (Globals) or not
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

    // The HTTP API routes: each a Route resource with its integration and the function's permission.
    let routes: Vec<(&str, &Value)> = of_type(&t, "AWS::ApiGatewayV2::Route");
    let keys: BTreeSet<&str> =
        routes.iter().filter_map(|(_, v)| v["Properties"]["RouteKey"].as_str()).collect();
    let expected_routes = [
        ("POST /api/trace/events", "SubmitFunction"),
        ("ANY /api/trace/job/{id}", "StatusFunction"),
        ("POST /api/trace/job/{id}/retry", "StatusFunction"),
        ("GET /api/trace/jobs", "StatusFunction"),
        ("GET /api/trace/admin/dlq", "StatusFunction"),
        ("POST /api/trace/admin/dlq/redrive", "StatusFunction"),
        ("GET /api/trace/job/{id}/result", "ResultFunction"),
        ("GET /api/trace/job/{id}/chunks", "ResultFunction"),
    ];
    assert_eq!(keys, expected_routes.iter().map(|e| e.0).collect(), "the HTTP API's routes");
    for (key, function) in expected_routes {
        let (_, route) = routes.iter().find(|(_, v)| v["Properties"]["RouteKey"] == key).unwrap();
        let target = route["Properties"]["Target"]["Fn::Sub"].as_str().unwrap_or("");
        let integration = target
            .strip_prefix("integrations/${")
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{key}: target {target}"));
        let i = &r[integration]["Properties"];
        assert_eq!(i["IntegrationType"], "AWS_PROXY", "{key}");
        assert_eq!(
            i["IntegrationUri"],
            json!({"Fn::GetAtt": [function, "Arn"]}),
            "{key} should invoke {function}"
        );
        let allowed = of_type(&t, "AWS::Lambda::Permission").iter().any(|(_, p)| {
            p["Properties"]["FunctionName"] == json!({"Ref": function})
                && p["Properties"]["Principal"] == "apigateway.amazonaws.com"
        });
        assert!(allowed, "the HTTP API may not invoke {function}");
    }
    // A 202's stream URL points at the Function URL.
    assert_eq!(
        r["SubmitFunction"]["Properties"]["Environment"]["Variables"]["TRACE_STREAM_BASE_URL"],
        json!({"Fn::GetAtt": ["StreamFunctionUrl", "FunctionUrl"]})
    );

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

/// Variables of a local process only: in AWS the gateway authenticates (`TRACE_AUTH=gateway`), and the
/// database's URL comes from Secrets Manager (`DATABASE_SECRET_ARN`), never from the environment.
const NOT_IN_LAMBDA: &[&str] = &[
    "DATABASE_URL",
    "TRACE_API_KEYS",
    "TRACE_JWT_ISSUER",
    "TRACE_JWT_AUDIENCE",
    "TRACE_JWT_PUBLIC_KEY_FILE",
    "TRACE_SIGV4_CREDENTIALS_FILE",
];

/// Variables the deployment sets to its own value (a parameter's default, or a literal), not the code's
/// default for a local process.
const DEPLOYMENT_VALUES: &[(&str, &str)] =
    &[("TRACE_AUTH", "gateway"), ("DATABASE_SSLMODE", "verify-full"), ("REDIS_CLUSTER", "true")];

/// The functions that read the database, and so its secret.
const READ_THE_DATABASE: [&str; 4] =
    ["SubmitFunction", "WorkerHeavyFunction", "WorkerLightFunction", "BackfillFunction"];

/// The resources of one type, by name.
fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    t["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, v)| v["Type"] == kind)
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

/// What lets a request into the API without an authorizer: a route whose authorization is not IAM
/// (or JWT with the JWT authorizer when `AuthMode` is JWT), an authorizer not tied to `UsesJwt`, a
/// route defined in an OpenAPI body (SAM `HttpApi` events), a Function URL without IAM.
fn open_doors(t: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let routes = of_type(t, "AWS::ApiGatewayV2::Route");
    if routes.is_empty() {
        problems.push("no routes".to_owned());
    }
    let by_mode = json!({"Fn::If": ["UsesJwt", "JWT", "AWS_IAM"]});
    let authorizer = json!({"Fn::If": ["UsesJwt", {"Ref": "JwtAuthorizer"}, {"Ref": "AWS::NoValue"}]});
    for (name, route) in &routes {
        let p = &route["Properties"];
        if p["AuthorizationType"] != by_mode || p["AuthorizerId"] != authorizer {
            problems.push(format!(
                "route {name} ({}): authorization {} / authorizer {}",
                p["RouteKey"], p["AuthorizationType"], p["AuthorizerId"]
            ));
        }
    }
    for (name, api) in of_type(t, "AWS::ApiGatewayV2::Api") {
        let p = &api["Properties"];
        if !p["Body"].is_null() || !p["BodyS3Location"].is_null() || !p["Target"].is_null() {
            problems.push(format!("API {name} has routes outside the Route resources (Body or Target)"));
        }
    }
    let jwt = of_type(t, "AWS::ApiGatewayV2::Authorizer");
    if jwt.len() != 1 {
        problems.push(format!("{} authorizers, expected the one JWT authorizer", jwt.len()));
    }
    for (name, a) in jwt {
        let p = &a["Properties"];
        let ok = name == "JwtAuthorizer"
            && a["Condition"] == "UsesJwt"
            && p["AuthorizerType"] == "JWT"
            && p["JwtConfiguration"]["Issuer"] == json!({"Ref": "JwtIssuer"})
            && p["JwtConfiguration"]["Audience"] == json!({"Fn::Split": [",", {"Ref": "JwtAudience"}]});
        if !ok {
            problems.push(format!("authorizer {name}: {a}"));
        }
    }
    if t["Conditions"]["UsesJwt"] != json!({"Fn::Equals": [{"Ref": "AuthMode"}, "JWT"]}) {
        problems.push(format!("UsesJwt: {}", t["Conditions"]["UsesJwt"]));
    }
    let mode = &t["Parameters"]["AuthMode"];
    if mode["Default"] != "IAM" || mode["AllowedValues"] != json!(["IAM", "JWT"]) {
        problems.push(format!("AuthMode: {mode}"));
    }
    let urls = of_type(t, "AWS::Lambda::Url");
    if urls.is_empty() {
        problems.push("no Function URL".to_owned());
    }
    for (name, url) in urls {
        if url["Properties"]["AuthType"] != "AWS_IAM" {
            problems.push(format!("Function URL {name}: AuthType {}", url["Properties"]["AuthType"]));
        }
    }
    problems
}

/// Every IAM statement of a role that allows `secretsmanager:GetSecretValue` (or a wildcard covering it),
/// with its resource.
fn secret_grants(role: &Value) -> Vec<Value> {
    let mut grants = Vec::new();
    for policy in role["Properties"]["Policies"].as_array().into_iter().flatten() {
        let statements = &policy["PolicyDocument"]["Statement"];
        let statements = match statements {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for s in statements {
            let actions = match &s["Action"] {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let reads = actions.iter().filter_map(Value::as_str).any(|a| {
                let a = a.to_ascii_lowercase();
                a == "*"
                    || a == "secretsmanager:*"
                    || a == "secretsmanager:getsecretvalue"
                    || (a.starts_with("secretsmanager:") && a.ends_with('*'))
            });
            if reads {
                grants.push(s["Resource"].clone());
            }
        }
    }
    grants
}

/// Where a secret could leak: a function reading the database's secret that does not need it, one that
/// needs it but cannot, a grant on anything but the one secret, managed policies that could grant it.
fn secret_leaks(t: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, f) in of_type(t, "AWS::Lambda::Function") {
        let role = f["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap_or_default();
        let role = &t["Resources"][role];
        let grants = secret_grants(role);
        let arn = &f["Properties"]["Environment"]["Variables"]["DATABASE_SECRET_ARN"];
        let needs = READ_THE_DATABASE.contains(&name);
        if needs {
            if grants != [json!({"Ref": "DatabaseSecretArn"})] {
                problems.push(format!(
                    "{name} reads the database: its grants {grants:?}, expected the one secret"
                ));
            }
            if *arn != json!({"Ref": "DatabaseSecretArn"}) {
                problems.push(format!("{name} reads the database: DATABASE_SECRET_ARN is {arn}"));
            }
        } else {
            if !grants.is_empty() {
                problems.push(format!("{name} never reads the database but may read secrets: {grants:?}"));
            }
            if !arn.is_null() {
                problems.push(format!("{name} never reads the database but has DATABASE_SECRET_ARN"));
            }
        }
        let managed = role["Properties"]["ManagedPolicyArns"].to_string();
        if managed.contains("SecretsManager") || managed.contains("AdministratorAccess") {
            problems.push(format!("{name}: managed policies {managed}"));
        }
    }
    problems
}

/// A password in an `Environment`: a resolved secret (`{{resolve:secretsmanager…}}`, `ssm-secure`), a
/// `NoEcho` parameter, a URL with a user and password, or a parameter meant to hold one.
fn passwords_in_environments(t: &Value) -> Vec<String> {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("Ref") {
                    out.push(r.clone());
                }
                if let Some(Value::String(sub)) = o.get("Fn::Sub") {
                    out.extend(
                        sub.split("${").skip(1).filter_map(|s| s.split('}').next()).map(str::to_owned),
                    );
                }
                o.values().for_each(|v| refs(v, out));
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (name, f) in of_type(t, "AWS::Lambda::Function") {
        let env = &f["Properties"]["Environment"];
        let mut texts = Vec::new();
        strings(env, &mut texts);
        for s in &texts {
            let lower = s.to_ascii_lowercase();
            if lower.contains("resolve:secretsmanager") || lower.contains("resolve:ssm-secure") {
                problems.push(format!("{name}: a secret resolved at deploy time: {s}"));
            }
            if let Some(rest) = s.split("://").nth(1) {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.contains('@') {
                    problems.push(format!("{name}: a URL with credentials: {s}"));
                }
            }
        }
        let mut names = Vec::new();
        refs(env, &mut names);
        for p in names {
            let param = &t["Parameters"][&p];
            if param["NoEcho"] == json!(true) || param["NoEcho"] == "true" {
                problems.push(format!("{name}: the NoEcho parameter {p} in its environment"));
            }
            let lower = p.to_ascii_lowercase();
            if lower.contains("password") || lower == "databaseurl" {
                problems.push(format!("{name}: parameter {p} in its environment"));
            }
        }
    }
    problems
}

/// The translated template with `change` applied.
fn changed(t: &Value, change: impl FnOnce(&mut Value)) -> Value {
    let mut copy = t.clone();
    change(&mut copy);
    copy
}

#[test]
fn every_route_has_an_authorizer_and_the_function_url_uses_iam() {
    let t = translated();
    assert_eq!(open_doors(&t), Vec::<String>::new());

    // The check fails on a route without authorization, a route authorized by IAM only (JWT mode would
    // leave it on IAM, fine, but the authorizer must follow AuthMode), an unconditioned authorizer, a
    // route in an OpenAPI body, and a Function URL without IAM.
    let no_auth =
        changed(&t, |t| t["Resources"]["JobsRoute"]["Properties"]["AuthorizationType"] = json!("NONE"));
    assert!(open_doors(&no_auth).iter().any(|p| p.contains("JobsRoute")), "{:?}", open_doors(&no_auth));
    let fixed = changed(&t, |t| {
        let p = &mut t["Resources"]["SubmitRoute"]["Properties"];
        p["AuthorizationType"] = json!("AWS_IAM");
        p.as_object_mut().unwrap().remove("AuthorizerId");
    });
    assert!(open_doors(&fixed).iter().any(|p| p.contains("SubmitRoute")));
    let always = changed(&t, |t| {
        t["Resources"]["JwtAuthorizer"].as_object_mut().unwrap().remove("Condition");
    });
    assert!(open_doors(&always).iter().any(|p| p.contains("JwtAuthorizer")));
    let body = changed(&t, |t| {
        t["Resources"]["TraceHttpApi"]["Properties"]["Body"] = json!({"paths": {"/x": {"get": {}}}});
    });
    assert!(open_doors(&body).iter().any(|p| p.contains("Body")));
    let open_url =
        changed(&t, |t| t["Resources"]["StreamFunctionUrl"]["Properties"]["AuthType"] = json!("NONE"));
    assert!(open_doors(&open_url).iter().any(|p| p.contains("StreamFunctionUrl")));
}

#[test]
fn only_the_functions_that_read_the_database_may_read_its_one_secret() {
    let t = translated();
    assert_eq!(secret_leaks(&t), Vec::<String>::new());
    let arn = &t["Parameters"]["DatabaseSecretArn"];
    assert!(arn["Default"].is_null(), "DatabaseSecretArn is required: {arn}");

    // The status function given the secret; a worker's grant widened to every secret; the backfill
    // without its grant: each is found.
    let status = changed(&t, |t| {
        let policies = t["Resources"]["StatusFunctionRole"]["Properties"]["Policies"].as_array_mut();
        let grant = json!({"PolicyName": "leak", "PolicyDocument": {"Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "DatabaseSecretArn"}}
        ]}});
        match policies {
            Some(p) => p.push(grant),
            None => t["Resources"]["StatusFunctionRole"]["Properties"]["Policies"] = json!([grant]),
        }
    });
    assert!(
        secret_leaks(&status).iter().any(|p| p.starts_with("StatusFunction")),
        "{:?}",
        secret_leaks(&status)
    );
    let wide = changed(&t, |t| {
        let text = t["Resources"]["WorkerLightFunctionRole"]
            .to_string()
            .replace(r#""Resource":{"Ref":"DatabaseSecretArn"}"#, r#""Resource":"*""#);
        t["Resources"]["WorkerLightFunctionRole"] = serde_json::from_str(&text).unwrap();
    });
    assert!(secret_leaks(&wide).iter().any(|p| p.starts_with("WorkerLightFunction")));
    let without = changed(&t, |t| {
        let text = t["Resources"]["BackfillFunctionRole"]
            .to_string()
            .replace("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret");
        t["Resources"]["BackfillFunctionRole"] = serde_json::from_str(&text).unwrap();
    });
    assert!(secret_leaks(&without).iter().any(|p| p.starts_with("BackfillFunction")));
}

#[test]
fn no_environment_holds_a_password() {
    let t = translated();
    assert_eq!(passwords_in_environments(&t), Vec::<String>::new());
    // The Redis URL may not carry one either: its parameter refuses a user or password.
    let pattern = t["Parameters"]["RedisUrl"]["AllowedPattern"].as_str().unwrap_or_default();
    assert!(pattern.contains("[^@/]"), "RedisUrl's AllowedPattern should refuse '@': {pattern}");

    // What the template did before: the secret resolved at deploy time into every function.
    for (value, what) in [
        (json!({"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecretArn}:SecretString}}"}), "resolved"),
        (json!("postgres://trace:hunter2@db.example:5432/trace"), "credentials"),
    ] {
        let leaky = changed(&t, |t| {
            t["Resources"]["StatusFunction"]["Properties"]["Environment"]["Variables"]["DATABASE_URL"] =
                value;
        });
        let problems = passwords_in_environments(&leaky);
        assert!(problems.iter().any(|p| p.starts_with("StatusFunction") && p.contains(what)), "{problems:?}");
    }
    let no_echo = changed(&t, |t| t["Parameters"]["RedisUrl"]["NoEcho"] = json!(true));
    assert!(passwords_in_environments(&no_echo).iter().any(|p| p.contains("NoEcho parameter RedisUrl")));
}

// --- operations: logs, tracing, alarms, dashboard, the backfill's failure destination --------------

/// The `Fn::GetAtt` / `Ref` target named by `v`.
fn target(v: &Value) -> Option<&str> {
    v["Ref"].as_str().or_else(|| v["Fn::GetAtt"][0].as_str())
}

/// An alarm's actions: the topic when `AlarmTopicArn` is given, none otherwise.
fn notifies_the_topic(alarm: &Value) -> bool {
    let by_topic = json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]});
    alarm["Properties"]["AlarmActions"] == by_topic
}

/// The alarms on `metric` of `namespace` whose dimension `dimension` is `value`.
fn alarms_on<'a>(
    t: &'a Value,
    namespace: &str,
    metric: &str,
    dimension: &str,
    value: &Value,
) -> Vec<&'a Value> {
    of_type(t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| {
            let p = &a["Properties"];
            p["Namespace"] == namespace
                && p["MetricName"] == metric
                && p["Dimensions"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["Name"] == dimension && d["Value"] == *value))
        })
        .collect()
}

/// What keeps the stack from being operated: a function without its own log group (retention from
/// `LogRetentionDays`), without JSON `LoggingConfig` at `LogLevel`, or without active tracing; a queue,
/// dead-letter queue or function without its alarm; the API without its 5xx alarm; alarms that cannot
/// notify; no dashboard; a backfill without its failure destination.
fn operability_gaps(t: &Value) -> Vec<String> {
    let mut gaps = Vec::new();
    let r = &t["Resources"];
    let retention = &t["Parameters"]["LogRetentionDays"];
    if retention["Default"].as_u64() != Some(30) && retention["Default"] != "30" {
        gaps.push(format!("LogRetentionDays defaults to {}", retention["Default"]));
    }
    let allowed = retention["AllowedValues"].to_string();
    for days in ["1", "7", "14", "30", "90", "365", "3653"] {
        if !allowed.contains(days) {
            gaps.push(format!("LogRetentionDays does not allow {days}: {allowed}"));
        }
    }
    let levels = t["Parameters"]["LogLevel"]["AllowedValues"].to_string();
    if !["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].iter().all(|l| levels.contains(l)) {
        gaps.push(format!("LogLevel is not Lambda's ApplicationLogLevel: {levels}"));
    }

    let mut groups = BTreeSet::new();
    let functions = of_type(t, "AWS::Lambda::Function");
    for (name, f) in &functions {
        let p = &f["Properties"];
        let logging = &p["LoggingConfig"];
        if logging["LogFormat"] != "JSON" || logging["ApplicationLogLevel"] != json!({"Ref": "LogLevel"}) {
            gaps.push(format!("{name}: LoggingConfig {logging}"));
        }
        if logging["SystemLogLevel"].is_null() {
            gaps.push(format!("{name}: no SystemLogLevel"));
        }
        match logging["LogGroup"]["Ref"].as_str() {
            Some(group) if r[group]["Type"] == "AWS::Logs::LogGroup" => {
                if r[group]["Properties"]["RetentionInDays"] != json!({"Ref": "LogRetentionDays"}) {
                    gaps.push(format!(
                        "{name}: log group {group} keeps {}",
                        r[group]["Properties"]["RetentionInDays"]
                    ));
                }
                if !groups.insert(group.to_owned()) {
                    gaps.push(format!("{name}: log group {group} shared with another function"));
                }
            }
            _ => gaps.push(format!("{name}: no log group of the template: {}", logging["LogGroup"])),
        }
        if p["TracingConfig"]["Mode"] != "Active" {
            gaps.push(format!("{name}: tracing {}", p["TracingConfig"]));
        }
        for metric in ["Errors", "Throttles"] {
            let alarms = alarms_on(t, "AWS/Lambda", metric, "FunctionName", &json!({"Ref": name}));
            if alarms.is_empty() {
                gaps.push(format!("{name}: no {metric} alarm"));
            }
        }
    }

    // Queues: the work queues (those with a dead-letter queue), their dead-letter queues, and the
    // backfill's failure queue.
    let mut work = Vec::new();
    let mut dead = vec!["BackfillFailureQueue".to_owned()];
    for (name, q) in of_type(t, "AWS::SQS::Queue") {
        if let Some(dlq) = q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str() {
            work.push(name.to_owned());
            dead.push(dlq.to_owned());
        }
    }
    if work.len() < 2 {
        gaps.push(format!("work queues: {work:?}"));
    }
    for q in &dead {
        let alarms = alarms_on(
            t,
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            &json!({"Fn::GetAtt": [q, "QueueName"]}),
        );
        let depth_over_zero = alarms.iter().any(|a| {
            a["Properties"]["Threshold"].as_f64() == Some(0.0)
                && a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
        });
        if !depth_over_zero {
            gaps.push(format!("{q}: no alarm on a depth > 0"));
        }
    }
    for q in &work {
        let alarms = alarms_on(
            t,
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "QueueName",
            &json!({"Fn::GetAtt": [q, "QueueName"]}),
        );
        if !alarms.iter().any(|a| a["Properties"]["Threshold"] == json!({"Ref": "QueueAgeAlarmSeconds"})) {
            gaps.push(format!("{q}: no alarm on its oldest message's age over QueueAgeAlarmSeconds"));
        }
    }
    if alarms_on(t, "AWS/ApiGateway", "5xx", "ApiId", &json!({"Ref": "TraceHttpApi"})).is_empty() {
        gaps.push("the HTTP API has no 5xx alarm".to_owned());
    }
    for (name, alarm) in of_type(t, "AWS::CloudWatch::Alarm") {
        if !notifies_the_topic(alarm) {
            gaps.push(format!(
                "alarm {name} does not notify AlarmTopicArn: {}",
                alarm["Properties"]["AlarmActions"]
            ));
        }
    }
    if t["Conditions"]["HasAlarmTopic"]
        != json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]})
    {
        gaps.push(format!("HasAlarmTopic: {}", t["Conditions"]["HasAlarmTopic"]));
    }
    if t["Parameters"]["AlarmTopicArn"]["Default"] != "" {
        gaps.push("AlarmTopicArn must be optional (default empty)".to_owned());
    }

    // The dashboard shows the queues, the functions, the API and the EMF metrics.
    let dashboards = of_type(t, "AWS::CloudWatch::Dashboard");
    match dashboards.first() {
        None => gaps.push("no dashboard".to_owned()),
        Some((_, d)) => {
            let body = d["Properties"]["DashboardBody"].to_string();
            let expected = functions.iter().map(|(n, _)| format!("${{{n}}}"));
            let queues = work.iter().chain(&dead).map(|q| format!("${{{q}.QueueName}}"));
            let metrics =
                ["TraceJobs", "RunMs", "QueueWaitMs", "Records", "BytesStored", "ObjectWrites", "LatencyMs"];
            for needle in
                expected.chain(queues).chain(["${TraceHttpApi}".to_owned()]).chain(metrics.map(String::from))
            {
                if !body.contains(&needle) {
                    gaps.push(format!("the dashboard does not show {needle}"));
                }
            }
        }
    }

    // The backfill, invoked asynchronously: retried, then its event goes to the failure queue.
    let configs: Vec<&Value> = of_type(t, "AWS::Lambda::EventInvokeConfig")
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| target(&c["Properties"]["FunctionName"]) == Some("BackfillFunction"))
        .collect();
    match configs.as_slice() {
        [c] => {
            let p = &c["Properties"];
            if p["DestinationConfig"]["OnFailure"]["Destination"]
                != json!({"Fn::GetAtt": ["BackfillFailureQueue", "Arn"]})
            {
                gaps.push(format!("the backfill's OnFailure: {}", p["DestinationConfig"]));
            }
            if p["MaximumRetryAttempts"].is_null() {
                gaps.push("the backfill's MaximumRetryAttempts is unset".to_owned());
            }
            let role = r["BackfillFunctionRole"]["Properties"]["Policies"].to_string();
            if !(role.contains("sqs:SendMessage") && role.contains("BackfillFailureQueue")) {
                gaps.push("the backfill may not send to its failure queue".to_owned());
            }
        }
        other => gaps.push(format!("{} EventInvokeConfig of the backfill", other.len())),
    }
    gaps
}

#[test]
fn every_function_logs_json_at_a_level_into_its_own_group_is_traced_and_alarmed_and_shown() {
    let t = translated();
    assert_eq!(operability_gaps(&t), Vec::<String>::new());

    // Each check fails on a template without what it checks.
    let fails = |broken: Value, needle: &str| {
        let gaps = operability_gaps(&broken);
        assert!(gaps.iter().any(|g| g.contains(needle)), "expected a gap about {needle}: {gaps:?}");
    };
    fails(
        changed(&t, |t| {
            t["Resources"]["StatusFunction"]["Properties"].as_object_mut().unwrap().remove("LoggingConfig");
        }),
        "StatusFunction: LoggingConfig",
    );
    fails(
        changed(&t, |t| {
            t["Resources"]["SubmitFunction"]["Properties"]["LoggingConfig"]["ApplicationLogLevel"] =
                json!("DEBUG")
        }),
        "SubmitFunction: LoggingConfig",
    );
    fails(
        changed(&t, |t| t["Resources"]["StreamLogGroup"]["Properties"]["RetentionInDays"] = json!(3653)),
        "StreamFunction: log group StreamLogGroup keeps",
    );
    fails(
        changed(&t, |t| {
            t["Resources"]["WorkerLightFunction"]["Properties"]
                .as_object_mut()
                .unwrap()
                .remove("TracingConfig");
        }),
        "WorkerLightFunction: tracing",
    );
    fails(
        changed(&t, |t| {
            t["Resources"].as_object_mut().unwrap().remove("LightDeadLetterAlarm");
        }),
        "LightDeadLetterQueue: no alarm",
    );
    fails(
        changed(&t, |t| {
            t["Resources"].as_object_mut().unwrap().remove("HeavyQueueAgeAlarm");
        }),
        "HeavyQueue: no alarm on its oldest",
    );
    fails(
        changed(&t, |t| {
            t["Resources"].as_object_mut().unwrap().remove("WorkerHeavyThrottlesAlarm");
        }),
        "WorkerHeavyFunction: no Throttles alarm",
    );
    fails(
        changed(&t, |t| {
            t["Resources"].as_object_mut().unwrap().remove("Api5xxAlarm");
        }),
        "no 5xx alarm",
    );
    fails(
        changed(&t, |t| {
            t["Resources"]["BackfillErrorsAlarm"]["Properties"]
                .as_object_mut()
                .unwrap()
                .remove("AlarmActions");
        }),
        "BackfillErrorsAlarm does not notify",
    );
    fails(
        changed(&t, |t| {
            t["Resources"].as_object_mut().unwrap().remove("Dashboard");
        }),
        "no dashboard",
    );
    let config = of_type(&t, "AWS::Lambda::EventInvokeConfig")[0].0.to_owned();
    fails(
        changed(&t, |t| {
            t["Resources"][&config]["Properties"].as_object_mut().unwrap().remove("DestinationConfig");
        }),
        "OnFailure",
    );
}

/// `samconfig.toml` as (section, key) → value text, for the flat TOML the SAM CLI reads.
fn samconfig(text: &str) -> Vec<((String, String), String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            entries
                .push(((section.clone(), key.trim().to_owned()), value.trim().trim_matches('"').to_owned()));
        }
    }
    entries
}

/// Why `sam build` would prompt, or build and deploy different things: beta features off, the
/// architecture not chosen exactly once for both commands, capabilities missing.
fn samconfig_gaps(text: &str, architectures: &[Value]) -> Vec<String> {
    let entries = samconfig(text);
    let get = |section: &str, key: &str| {
        entries.iter().find(|((s, k), _)| s == section && k == key).map(|(_, v)| v.as_str())
    };
    let mut gaps = Vec::new();
    if get("", "version") != Some("0.1") {
        gaps.push(format!("version {:?}", get("", "version")));
    }
    for key in ["beta_features", "cached", "parallel"] {
        if get("default.build.parameters", key) != Some("true") {
            gaps.push(format!("[default.build.parameters] {key} is not true"));
        }
    }
    let capabilities = get("default.deploy.parameters", "capabilities").unwrap_or_default();
    for c in ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"] {
        if !capabilities.split_whitespace().any(|x| x == c) {
            gaps.push(format!("deploy capabilities lack {c}"));
        }
    }
    // Once, in the section both `sam build` and `sam deploy` read.
    let overrides: Vec<&((String, String), String)> = entries
        .iter()
        .filter(|((_, k), v)| k == "parameter_overrides" && v.contains("Architecture="))
        .collect();
    match overrides.as_slice() {
        [((section, _), value)] if section == "default.global.parameters" => {
            let arch =
                value.split_whitespace().find_map(|p| p.strip_prefix("Architecture=")).unwrap_or_default();
            if !architectures.contains(&json!(arch)) {
                gaps.push(format!("Architecture={arch} is not one of {architectures:?}"));
            }
        }
        other => gaps.push(format!(
            "the architecture is set {} times, or outside the global section: {other:?}",
            other.len()
        )),
    }
    if entries.iter().any(|((s, k), _)| k == "parameter_overrides" && s != "default.global.parameters") {
        gaps.push("a command's own parameter_overrides would replace the global one".to_owned());
    }
    gaps
}

#[test]
fn samconfig_builds_without_a_prompt_and_picks_the_architecture_once_for_build_and_deploy() {
    let text = std::fs::read_to_string(format!("{REPO}/samconfig.toml")).expect("samconfig.toml");
    let t = translated();
    let architectures = t["Parameters"]["Architecture"]["AllowedValues"].as_array().unwrap().clone();
    assert_eq!(samconfig_gaps(&text, &architectures), Vec::<String>::new());

    let fails = |broken: String, needle: &str| {
        let gaps = samconfig_gaps(&broken, &architectures);
        assert!(gaps.iter().any(|g| g.contains(needle)), "expected a gap about {needle}: {gaps:?}");
    };
    fails(text.replace("beta_features = true\ncached", "cached"), "beta_features");
    fails(
        text.replace(
            "[default.build.parameters]\n",
            "[default.build.parameters]\nparameter_overrides = \"Architecture=x86_64\"\n",
        ),
        "2 times",
    );
    fails(text.replace("Architecture=arm64", "Architecture=riscv"), "riscv");
    fails(text.replace(" CAPABILITY_AUTO_EXPAND", ""), "CAPABILITY_AUTO_EXPAND");

    // The release profile sets what cargo-lambda would otherwise set its own way, so `sam build`
    // deploys the build infra/bench.sh measures; and neither script turns the profile off.
    let cargo = std::fs::read_to_string(format!("{REPO}/Cargo.toml")).expect("Cargo.toml");
    let release = cargo.split("[profile.release]").nth(1).expect("[profile.release]");
    let release = release.split("\n[").next().unwrap_or_default();
    for key in ["panic", "lto", "codegen-units", "strip"] {
        assert!(
            release.lines().any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "[profile.release] {key}"
        );
    }
    for script in ["infra/sam-build.sh", "infra/bench.sh"] {
        let text = std::fs::read_to_string(format!("{REPO}/{script}")).expect(script);
        assert!(!text.contains("--disable-optimizations") && !text.contains("--profile"), "{script}");
    }
    let bench = std::fs::read_to_string(format!("{REPO}/infra/bench.sh")).unwrap();
    assert!(bench.contains("cargo build --release"), "infra/bench.sh builds [profile.release]");
}

/// Whether `role` (a translated role resource) allows `action` on a resource of the results bucket that
/// covers `object` (`jobs/{id}/…`: a resource naming it, or all of `jobs/*`).
fn grants(role: &Value, action: &str, object: &str) -> bool {
    let policies = role["Properties"]["Policies"].as_array().cloned().unwrap_or_default();
    policies
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().cloned().unwrap_or_default())
        .any(|s| {
            let actions = match &s["Action"] {
                Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
                Value::String(a) => vec![a.clone()],
                _ => vec![],
            };
            let resources = match &s["Resource"] {
                Value::Array(r) => r.clone(),
                other => vec![other.clone()],
            };
            s["Effect"] == "Allow"
                && actions.iter().any(|a| a == action)
                && resources.iter().any(|r| {
                    let text = r.to_string();
                    text.contains(&format!("/jobs/*/{object}\"")) || text.contains("/jobs/*\"")
                })
        })
}

/// Every function that records a job's outcome beside its input may write it (submit and the
/// backfill when a job cannot be queued, status on cancel, the workers), and the backfill's reaper may
/// read what the object store knows of a job (a missing object answering 404, not 403).
#[test]
fn every_function_that_records_an_outcome_may_write_it_and_the_reaper_may_read_it() {
    let t = translated();
    for role in [
        "SubmitFunctionRole",
        "BackfillFunctionRole",
        "StatusFunctionRole",
        "WorkerHeavyFunctionRole",
        "WorkerLightFunctionRole",
    ] {
        assert!(
            grants(&t["Resources"][role], "s3:PutObject", "outcome.json"),
            "{role} cannot write outcome.json"
        );
    }
    let backfill = &t["Resources"]["BackfillFunctionRole"];
    for object in ["outcome.json", "input.json", "manifest.json"] {
        assert!(grants(backfill, "s3:GetObject", object), "the reaper cannot read {object}");
    }
    assert!(backfill.to_string().contains("s3:ListBucket"), "the reaper's missing objects would be 403");
    // The check finds a role without the grant.
    let narrowed = changed(&t, |t| {
        let text = t["Resources"]["SubmitFunctionRole"].to_string().replace("outcome.json", "other.json");
        t["Resources"]["SubmitFunctionRole"] = serde_json::from_str(&text).unwrap();
    });
    assert!(!grants(&narrowed["Resources"]["SubmitFunctionRole"], "s3:PutObject", "outcome.json"));
}

/// A followed stream (`?follow=true`) lives in StreamFunction: it reads and lists a running job's
/// objects, and ends (`FOLLOW_TIME_LIMIT`) before the function's timeout cuts it; the workers may
/// write the counts its first `domain_start` carries.
#[test]
fn a_followed_stream_may_list_a_running_job_and_ends_before_its_function_does() {
    let t = translated();
    let r = &t["Resources"];
    let role = &r["StreamFunctionRole"];
    assert!(grants(role, "s3:GetObject", "counts/*"), "the stream cannot read the counts");
    assert!(role.to_string().contains("s3:ListBucket"), "the stream cannot list a running job's chunks");
    let timeout = r["StreamFunction"]["Properties"]["Timeout"].as_u64().expect("timeout");
    let follow = r["StreamFunction"]["Properties"]["Environment"]["Variables"]["TRACE_FOLLOW_SECONDS"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .expect("TRACE_FOLLOW_SECONDS set for the stream function");
    assert!(follow + 30 <= timeout, "a follow of {follow} s is cut by the function's {timeout} s");
    for worker in ["WorkerHeavyFunctionRole", "WorkerLightFunctionRole"] {
        assert!(grants(&r[worker], "s3:PutObject", "counts/*"), "{worker} cannot store a count");
    }
}
