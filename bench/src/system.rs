//! The system under measurement: this run's queues, bucket and Redis key prefix on the local service
//! stack, the app that submits jobs to them, and the function processes (release binaries next to this
//! one) started against them, each with its own log file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trace_adapters::queue::sqs::{create_queue_with_dlq, SqsQueue};
use trace_adapters::runtime::{Backends, BackendsFromConfig};
use trace_adapters::store::s3::S3Store;
use trace_core::layout::{self, Manifest};
use trace_core::{
    Config, ContainerId, Domain, JobId, JobStatus, Principal, Profile, QueueKind, TraceRequest,
};
use trace_dataset::container_id;
use trace_service::{submit, App};

use crate::processes::Proc;
use crate::WORKER_MALLOC_ARENA_MAX;

/// What a measured job traces: its profile and domains, with the name its figures go under.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    /// The figures' name (JSON key prefix) and the tag of the job's queue.
    pub name: &'static str,
    /// The job's profile.
    pub profile: Profile,
    /// The job's domains.
    pub domains: &'static [Domain],
}

impl Trace {
    /// The query tool over the five tables: the worker rounds' job.
    pub const QUERY_TOOL: Trace =
        Trace { name: "worker", profile: Profile::QueryTool, domains: &Domain::BASE };
    /// MSD forward tracing: its aggregation reads the two requested views and nothing else.
    pub const MSD_FORWARD: Trace = Trace {
        name: "msd_forward",
        profile: Profile::MidSectionDefect,
        domains: &[Domain::UpstreamHistory, Domain::DownstreamRejects],
    };
    /// MSD backward tracing, the default of an MSD request: its aggregation also reads `rejects`.
    pub const MSD_BACKWARD: Trace =
        Trace { name: "msd_backward", profile: Profile::MidSectionDefect, domains: &Domain::MSD_DEFAULT };

    /// The MSD jobs the `msd` part runs, in order.
    pub const MSD: [Trace; 2] = [Trace::MSD_FORWARD, Trace::MSD_BACKWARD];

    /// The domains' wire names joined by `sep`.
    pub fn domain_names(&self, sep: &str) -> String {
        self.domains.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(sep)
    }
}

/// The system of one benchmark run.
pub struct Bench {
    /// This run's name: the prefix of its queues, its bucket and its Redis keys.
    pub name: String,
    sqs: aws_sdk_sqs::Client,
    /// The environment of every process started.
    env: Vec<(String, String)>,
    /// Submits jobs and reads their state, as the functions do.
    pub app: App,
    /// The stack's PostgreSQL.
    pub pool: deadpool_postgres::Pool,
    /// The load generator's and reader's HTTP client.
    pub http: reqwest::Client,
    bin_dir: PathBuf,
    /// Where the processes' logs go.
    pub logs: PathBuf,
    /// The API key every process accepts (sent by `http`).
    pub api_key: String,
}

/// How long a message stays invisible once received (the workers extend it while they work).
const VISIBILITY: Duration = Duration::from_secs(120);

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// The reference dataset's first `n` container ids.
pub fn ids(n: u64) -> Vec<ContainerId> {
    (1..=n).filter_map(|i| ContainerId::parse(container_id(i)).ok()).collect()
}

/// A variable of the stack's environment.
fn env_or(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run through infra/bench.sh (or bring up infra/local-stack.sh)")
    })
}

/// Where the local service stack is (`eval "$(infra/local-stack.sh env)"`).
pub struct Stack {
    endpoint: String,
    redis: String,
    /// The PostgreSQL URL.
    pub database: String,
}

impl Stack {
    /// Reads `AWS_ENDPOINT_URL`, `REDIS_URL` and `DATABASE_URL`.
    pub fn from_env() -> anyhow::Result<Stack> {
        Ok(Stack {
            endpoint: env_or("AWS_ENDPOINT_URL")?,
            redis: env_or("REDIS_URL")?,
            database: env_or("DATABASE_URL")?,
        })
    }
}

impl Bench {
    /// Creates this run's queues and bucket on `stack`, and the app on them.
    pub async fn start(stack: Stack, pool: deadpool_postgres::Pool) -> anyhow::Result<Bench> {
        let Stack { endpoint, redis, database } = stack;
        let name = format!("bench-{}", &JobId::new().to_string()[..8]);
        let api_key = format!("trk_{}", JobId::new().to_string().replace('-', ""));
        let sdk = trace_adapters::aws::sdk_config(Some(&endpoint)).await;
        let sqs = trace_adapters::aws::sqs_client(&sdk);
        let (heavy, _) = create_queue_with_dlq(&sqs, &format!("{name}-heavy"), 3, VISIBILITY).await?;
        let (light, _) = create_queue_with_dlq(&sqs, &format!("{name}-light"), 3, VISIBILITY).await?;
        S3Store::new(trace_adapters::aws::s3_client(&sdk), &name).ensure_bucket().await?;
        let env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", endpoint),
            ("REDIS_URL", redis),
            ("REDIS_KEY_PREFIX", name.clone()),
            ("DATABASE_URL", database),
            ("TRACE_HEAVY_QUEUE_URL", heavy),
            ("TRACE_LIGHT_QUEUE_URL", light),
            ("TRACE_BUCKET", name.clone()),
            ("TRACE_RATE_LIMIT_REQUESTS", "1000000000".into()),
            ("TRACE_SUBMIT_RATE_LIMIT_REQUESTS", "1000000000".into()),
            // Authenticated like a deployment: one API key for this run, sent by `http`.
            ("TRACE_AUTH", "keys".into()),
            ("TRACE_API_KEYS", trace_core::auth::api_key_entry("bench", &api_key)),
            // The processes' log level: RUST_LOG when set, warnings otherwise.
            ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // reqwest is built without a crypto provider of its own: the workspace's one (aws-lc-rs).
        trace_adapters::tls::install_provider();
        let lookup: HashMap<String, String> = env.iter().cloned().collect();
        let config = Config::from_lookup(|k| lookup.get(k).cloned().or_else(|| std::env::var(k).ok()))?;
        let backends = Backends::from_config(&config).await?;
        let exe = std::env::current_exe()?;
        let bin_dir = exe.parent().context("binary dir")?.to_path_buf();
        let logs = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&logs)?;
        Ok(Bench {
            name,
            sqs,
            env,
            app: App::new(config, backends),
            pool,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::HeaderName::from_static("x-api-key"),
                    reqwest::header::HeaderValue::from_str(&api_key)?,
                )]))
                .build()?,
            bin_dir,
            logs,
            api_key,
        })
    }

    /// Starts the function binary `name` with the run's environment and `extra`.
    fn spawn(&self, name: &'static str, extra: &[(&str, String)]) -> anyhow::Result<Proc> {
        // One log per process started: `worker-3.log` is the third worker.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let log = std::fs::File::create(self.logs.join(format!("{name}-{nth}.log")))?;
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.env_remove("AWS_LAMBDA_RUNTIME_API").envs(self.env.iter().map(|(k, v)| (k, v)));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child =
            cmd.stdout(Stdio::null()).stderr(log).spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc { child })
    }

    /// A worker on the light queue `queue`, with the environment `template.yaml` gives the workers.
    pub fn spawn_worker(&self, queue: String) -> anyhow::Result<Proc> {
        self.spawn_worker_with(queue, &[])
    }

    /// [`spawn_worker`](Self::spawn_worker) with `extra` variables.
    pub fn spawn_worker_with(&self, queue: String, extra: &[(&str, String)]) -> anyhow::Result<Proc> {
        let mut env = vec![
            ("TRACE_WORKER_QUEUE", "light".to_owned()),
            ("TRACE_LIGHT_QUEUE_URL", queue),
            ("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENA_MAX.to_owned()),
        ];
        env.extend_from_slice(extra);
        self.spawn("worker", &env)
    }

    /// A variable of the processes' environment.
    pub fn env_var(&self, name: &str) -> Option<String> {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// Starts the HTTP function `name` on a free port; returns it once it answers `/health`, with its
    /// base URL.
    pub async fn spawn_http(
        &self,
        name: &'static str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<(Proc, String)> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = vec![("TRACE_HTTP_ADDR", addr.clone())];
        env.extend_from_slice(extra);
        let proc = self.spawn(name, &env)?;
        let base = format!("http://{addr}");
        for _ in 0..200 {
            if self.http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok((proc, base));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{name} did not start; see {}", self.logs.display())
    }

    /// Waits for `job` to finish: when this process saw it, and when the worker recorded it.
    pub async fn wait(&self, job: &JobId) -> anyhow::Result<(Instant, chrono::DateTime<chrono::Utc>)> {
        loop {
            let meta = self.app.backends.jobs.get(job).await?.context("job vanished")?;
            match meta.status {
                JobStatus::Finished => {
                    return Ok((Instant::now(), meta.completed_at.context("finished without a time")?))
                }
                JobStatus::Failed | JobStatus::Cancelled => {
                    bail!("job {job} ended {}: {:?}", meta.status, meta.error)
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// A light queue of its own for one measured job, and the app that enqueues on it. A worker killed
    /// at the end of a measurement may leave a long poll open in the emulator, which would swallow the
    /// next message on the same queue for a whole visibility timeout.
    pub async fn own_queue(&self, tag: &str) -> anyhow::Result<(String, App)> {
        let unique = &JobId::new().to_string()[..8];
        let name = format!("{}-{tag}-{unique}", self.name);
        let (url, _) = create_queue_with_dlq(&self.sqs, &name, 3, VISIBILITY).await?;
        let mut backends = self.app.backends.clone();
        backends.light = Arc::new(SqsQueue::new(self.sqs.clone(), url.clone()));
        Ok((url, App { backends, ..self.app.clone() }))
    }

    /// Submits a `trace` job of the first `n` ids on `app`'s light queue.
    pub async fn enqueue(&self, app: &App, n: u64, trace: Trace) -> anyhow::Result<JobId> {
        let request = TraceRequest {
            ids: ids(n),
            profile: trace.profile,
            domains: trace.domains.to_vec(),
            params: Default::default(),
        };
        // Owned by the bench's key, the caller its HTTP reads authenticate as.
        let accepted =
            submit::enqueue(app, &Principal::new("key:bench", None), &request, QueueKind::Light).await?;
        Ok(accepted.job_id)
    }

    /// The manifest of finished `job`.
    pub async fn manifest(&self, job: &JobId) -> anyhow::Result<Manifest> {
        Ok(serde_json::from_slice(&self.app.backends.store.get(&layout::manifest_key(job)).await?)?)
    }
}
