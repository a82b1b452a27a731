//! The client's credentials on the wire, against local test servers that check what they receive:
//! the `trace` command sends `TRACE_API_KEY` as `x-api-key`; with `--sigv4` (or `TRACE_SIGV4=1`) and
//! credentials in the standard AWS environment variables it signs every request, and the servers
//! verify each signature by recomputing it from the SigV4 specification (`support/sigv4.rs`); a 202
//! answer's absolute `stream_url` is followed to a second server; refused credentials are a clear
//! error with exit code 1.

#[path = "support/sigv4.rs"]
#[allow(dead_code)]
mod sigv4;

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use trace_client::{Auth, Client, ClientConfig, ClientError, StreamLine};
use trace_core::{Domain, JobId, Profile};

const ACCESS_KEY: &str = "AKIATESTTRACE0000001";
const SECRET_KEY: &str = "tRaCeTeStSeCrEt/0123456789+abcdefghijklm";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//session+token==";
const API_KEY: &str = "tk_live_3b1f0c9a";

/// What a test server demands.
#[derive(Clone, Copy, Debug)]
enum Expect {
    ApiKey,
    SigV4 { service: &'static str, region: &'static str },
}

/// One request a server received, and whether its credentials held.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    verdict: Result<String, String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Server {
    expect: Expect,
    job: JobId,
    /// Base URL put in front of the 202 answer's stream path ("" = relative).
    stream_base: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn secret_of(id: &str) -> Option<&'static str> {
    (id == ACCESS_KEY).then_some(SECRET_KEY)
}

/// The stream lines the servers send for `job`.
fn stream_lines(job: JobId) -> Vec<StreamLine> {
    let data =
        vec![json!({"container_id": "CID-0000001", "hold": "H1"}), json!({"container_id": "CID-0000002"})];
    vec![
        StreamLine::Meta { job_id: job, profile: Profile::QueryTool, domains: vec![Domain::Holds] },
        StreamLine::DomainStart { domain: Domain::Holds, total: 2 },
        StreamLine::Records { domain: Domain::Holds, batch: 0, count: 2, data },
        StreamLine::DomainEnd { domain: Domain::Holds, count: 2 },
        StreamLine::Complete { total_records: 2 },
    ]
}

fn status_body(job: JobId) -> Value {
    json!({
        "job_id": job, "status": "finished", "profile": "query_tool", "cid_count": 2, "domains": ["holds"],
        "progress": "complete",
        "progress_detail": {"domain": null, "records_written": 2, "ids_done": 2, "ids_total": 2, "percent": 100.0},
        "queue": "light", "created_at": 1767225600.0, "started_at": null, "completed_at": null,
        "elapsed_seconds": 1.5, "error": null, "error_code": null, "attempt": 1
    })
}

/// Checks the credentials, records the request, then answers like the trace API.
async fn handle(State(server): State<Server>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let path = parts.uri.path().to_owned();
    let verdict = match server.expect {
        Expect::ApiKey => match parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            Some(API_KEY) => Ok("key:test".to_owned()),
            Some(_) => Err("unknown API key".to_owned()),
            None => Err("no credentials".to_owned()),
        },
        Expect::SigV4 { service, region } => {
            let signed = sigv4::Signed {
                method: parts.method.as_str(),
                path: &path,
                query: parts.uri.query().unwrap_or(""),
                headers: &headers,
                body: &body,
            };
            sigv4::verify(&signed, secret_of, Some(SystemTime::now())).and_then(|v| {
                if (v.service.as_str(), v.region.as_str()) != (service, region) {
                    return Err(format!("signed for {}/{}, not {service}/{region}", v.service, v.region));
                }
                if !v.signed_headers.iter().any(|h| h == "x-amz-security-token") {
                    return Err("the session token is not signed".to_owned());
                }
                Ok(v.access_key)
            })
        }
    };
    server.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
        verdict: verdict.clone(),
    });
    if let Err(reason) = verdict {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "UNAUTHORIZED", "message": reason})))
            .into_response();
    }
    let job = server.job;
    let job_path = format!("/api/trace/job/{job}");
    match (parts.method.as_str(), path.as_str()) {
        ("POST", "/api/trace/events") => {
            let base = server.stream_base.lock().unwrap().clone();
            let answer = json!({
                "stage": "events", "async": true, "job_id": job, "status": "queued", "queue": "light",
                "status_url": job_path, "result_url": format!("{job_path}/result"),
                "stream_url": format!("{base}{job_path}/stream"),
            });
            (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
        }
        ("GET", p) if p == job_path => axum::Json(status_body(job)).into_response(),
        ("GET", p) if p == format!("{job_path}/stream") => {
            let mut out = Vec::new();
            for line in stream_lines(job) {
                line.write_to(&mut out);
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from(out)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"code": "NOT_FOUND", "message": "no route"})))
            .into_response(),
    }
}

/// A server demanding `expect`, and its base URL.
async fn serve(expect: Expect, job: JobId) -> (Server, String) {
    let server = Server {
        expect,
        job,
        stream_base: Arc::new(Mutex::new(String::new())),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new().fallback(handle).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (server, format!("http://{addr}"))
}

/// Runs `trace` with `args`, `env` and `stdin`, in a clean environment for credentials.
async fn trace(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trace"));
        command.args(&args).arg("--quiet");
        for var in [
            "TRACE_API_KEY",
            "TRACE_TOKEN",
            "TRACE_SIGV4",
            "TRACE_API_URL",
            "TRACE_SUBMIT_URL",
            "TRACE_STATUS_URL",
            "TRACE_STREAM_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            command.env_remove(var);
        }
        // No profile files and no instance metadata: the environment is the only credential source.
        command
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command.envs(env);
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ("AWS_SESSION_TOKEN", SESSION_TOKEN),
];

#[tokio::test]
async fn the_cli_sends_trace_api_key_and_says_when_the_server_refuses_it() {
    let job = JobId::new();
    let (server, base) = serve(Expect::ApiKey, job).await;
    let job_arg = job.to_string();

    let out = trace(&["--url", &base, "status", &job_arg], &[("TRACE_API_KEY", API_KEY)], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["job_id"], job.to_string());
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-api-key"), Some(API_KEY));
    assert_eq!(seen[0].header("authorization"), None);

    // A wrong key, and none: 401, a clear message, exit code 1, and the key is not printed.
    for env in [&[("TRACE_API_KEY", "tk_wrong_key_xyz")][..], &[]] {
        let out = trace(&["--url", &base, "status", &job_arg], env, "").await;
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("the server refused the credentials"), "{stderr}");
        assert!(!stderr.contains("tk_wrong_key_xyz"), "{stderr}");
    }
    assert!(server.seen()[1..].iter().all(|s| s.verdict.is_err()));

    // A bearer token goes in Authorization (this server wants a key, so it refuses it).
    let out = trace(&["--url", &base, "status", &job_arg], &[("TRACE_TOKEN", "eyJhbGci.e30.sig")], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.seen().last().unwrap().header("authorization"), Some("Bearer eyJhbGci.e30.sig"));

    // Two kinds of credentials at once are a usage error, before any request.
    let before = server.seen().len();
    let out =
        trace(&["--url", &base, "--sigv4", "status", &job_arg], &[("TRACE_API_KEY", API_KEY)], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("one kind of credentials"), "{}", text(&out.stderr));
    assert_eq!(server.seen().len(), before);
}

#[tokio::test]
async fn the_cli_signs_every_request_with_sigv4_and_follows_an_absolute_stream_url() {
    let job = JobId::new();
    let expect = Expect::SigV4 { service: "execute-api", region: "eu-west-1" };
    let (api, api_base) = serve(expect, job).await;
    let (streams, stream_base) = serve(expect, job).await;
    *api.stream_base.lock().unwrap() = stream_base.clone();

    let args = [
        "--url",
        &api_base,
        "--sigv4",
        "--sigv4-service",
        "execute-api",
        "--region",
        "eu-west-1",
        "submit",
        "--follow",
        "--interval",
        "100ms",
        // This server has the stream route only (the chunk URLs are tests/it/chunk_urls.rs's).
        "--via",
        "stream",
    ];
    let out = trace(&args, &AWS_ENV, "CID-0000001\nCID-0000002\n").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Vec<StreamLine> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got, stream_lines(job));

    let seen = api.seen();
    let routes: Vec<(&str, &str)> = seen.iter().map(|s| (s.method.as_str(), s.path.as_str())).collect();
    assert_eq!(routes, [("POST", "/api/trace/events"), ("GET", format!("/api/trace/job/{job}").as_str())]);
    let streamed = streams.seen();
    assert_eq!(streamed.len(), 1, "the stream is read from the stream_url's host");
    assert_eq!(streamed[0].path, format!("/api/trace/job/{job}/stream"));
    for s in seen.iter().chain(&streamed) {
        assert_eq!(s.verdict.as_deref(), Ok(ACCESS_KEY), "{} {}", s.method, s.path);
        assert_eq!(s.header("x-amz-security-token"), Some(SESSION_TOKEN));
        assert!(s.header("x-amz-content-sha256").is_some());
    }

    // TRACE_SIGV4=1 and the region from AWS_REGION; a host that names no service needs --sigv4-service.
    let job_arg = job.to_string();
    let mut env = AWS_ENV.to_vec();
    env.extend([("TRACE_SIGV4", "1"), ("AWS_REGION", "eu-west-1")]);
    let out =
        trace(&["--url", &api_base, "--sigv4-service", "execute-api", "status", &job_arg], &env, "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(api.seen().last().unwrap().verdict.as_deref(), Ok(ACCESS_KEY));
    let out = trace(&["--url", &api_base, "status", &job_arg], &env, "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--sigv4-service"), "{}", text(&out.stderr));

    // A wrong secret key: the server's check fails, the client says so.
    let mut env = AWS_ENV.to_vec();
    env[1] = ("AWS_SECRET_ACCESS_KEY", "not-the-secret-key");
    let args = ["--url", &api_base, "--sigv4", "--sigv4-service", "execute-api", "--region", "eu-west-1"];
    let out = trace(&[&args[..], &["status", &job_arg]].concat(), &env, "").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the server refused the credentials"), "{stderr}");
    assert!(!stderr.contains("not-the-secret-key") && !stderr.contains(SESSION_TOKEN), "{stderr}");
}

#[tokio::test]
async fn the_library_follows_absolute_stream_urls_and_keeps_relative_ones_on_its_base() {
    let job = JobId::new();
    let (api, api_base) = serve(Expect::ApiKey, job).await;
    let (streams, stream_base) = serve(Expect::ApiKey, job).await;
    let mut config = ClientConfig::new(&api_base);
    config.auth = Auth::api_key(API_KEY);
    let client = Client::new(config).unwrap();

    let collect = |client: Client| async move {
        let mut lines = client.stream(&job);
        let mut out = Vec::new();
        while let Some(line) = lines.next().await {
            out.push(line.unwrap());
        }
        out
    };
    let relative = client.at_stream_url(&format!("/api/trace/job/{job}/stream")).unwrap();
    assert_eq!(collect(relative).await, stream_lines(job));
    assert_eq!(api.seen().len(), 1);
    assert!(streams.seen().is_empty());

    // A stage prefix before /api/trace/job/ is kept.
    let absolute = client.at_stream_url(&format!("{stream_base}/api/trace/job/{job}/stream")).unwrap();
    assert_eq!(absolute.config().stream_url.as_deref(), Some(stream_base.as_str()));
    assert_eq!(collect(absolute).await, stream_lines(job));
    assert_eq!(streams.seen().len(), 1);
    assert_eq!(streams.seen()[0].header("x-api-key"), Some(API_KEY));
    let staged = client.at_stream_url(&format!("{stream_base}/prod/api/trace/job/{job}/stream")).unwrap();
    assert_eq!(staged.config().stream_url, Some(format!("{stream_base}/prod")));

    for bad in ["ftp://x/api/trace/job/1/stream", "https://x.example/somewhere", "not a url"] {
        assert!(matches!(client.at_stream_url(bad), Err(ClientError::InvalidResponse { .. })), "{bad}");
    }
    let https = Client::new(ClientConfig::new("https://api.example")).unwrap();
    assert!(
        https.at_stream_url(&format!("{stream_base}/api/trace/job/{job}/stream")).is_err(),
        "no downgrade"
    );
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, leaf.pem, leaf.key).
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=trace test CA"],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ],
    );
    (dir.join("ca.pem"), dir.join("leaf.pem"), dir.join("leaf.key"))
}

/// An HTTPS server answering every request with `job`'s status; its port.
async fn serve_tls(cert: &std::path::Path, key: &std::path::Path, job: JobId) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = status_body(job).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_cli_speaks_https_and_verifies_the_server() {
    let dir = std::env::temp_dir().join(format!("trace-client-tls-{}", std::process::id()));
    let (ca, cert, key) = certificates(&dir);
    let job = JobId::new();
    let port = serve_tls(&cert, &key, job).await;
    let job_arg = job.to_string();
    let url = format!("https://127.0.0.1:{port}");
    // The system roots plus the test CA (rustls-native-certs reads SSL_CERT_FILE).
    let ca = ca.display().to_string();
    let out = trace(&["--url", &url, "status", &job_arg], &[("SSL_CERT_FILE", &ca)], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["job_id"], job_arg);
    // Without the CA the server is not trusted: a transport error, exit code 1.
    let out = trace(&["--url", &url, "status", &job_arg], &[], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("request to https://"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn https_works_with_the_installed_provider() {
    // Nothing listens with TLS here: the point is that the handshake is attempted (a rustls error,
    // not a panic for want of a crypto provider).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let client = Client::new(ClientConfig::new(format!("https://{addr}"))).unwrap();
    let err = client.status(&JobId::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
}
