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
        ("GET /api/trace/jobs", "StatusFunction"),
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
