//! `trace`: the command line client of the trace job API (see `trace --help`).

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use trace_client::output::{DirSink, Format, NdjsonSink, Sink};
use trace_client::pages::{closing_lines, inline_lines, DomainPages};
use trace_client::types::ResultPage;
use trace_client::{
    Accepted, Auth, Client, ClientConfig, ClientError, JobInfo, LineStream, Piece, PieceStream, Resume,
    SigV4, StreamLine, SubmitRequest, Submitted, MAX_PAGE,
};
use trace_core::job::JobStatus;
use trace_core::{Domain, JobId, Profile};

/// The local run's address (`cargo run -p trace-local`).
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    usage error, HTTP error (the server's code is printed), credentials refused (401/403),
       transport or output error
  2    the job failed (its code is printed, e.g. SOURCE_ERROR) or was cancelled
  3    poll timeout: the job did not end within --timeout
  4    stream error: interrupted and not resumable, a malformed line, an error line, or a result
       chunk that could not be read through its URL
  5    rate limited (HTTP 429) after the retries
  130  interrupted (Ctrl-C); with --cancel-on-interrupt the job was cancelled first";

/// Command line client of the trace job API.
#[derive(Debug, Parser)]
#[command(name = "trace", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Base URL of the API (every route).
    #[arg(long, env = "TRACE_API_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// Base URL of submit, when it differs from --url.
    #[arg(long, env = "TRACE_SUBMIT_URL", global = true)]
    submit_url: Option<String>,
    /// Base URL of status, history and cancel, when it differs from --url.
    #[arg(long, env = "TRACE_STATUS_URL", global = true)]
    status_url: Option<String>,
    /// Base URL of the stream and result pages (in AWS: the stream function's URL).
    #[arg(long, env = "TRACE_STREAM_URL", global = true)]
    stream_url: Option<String>,
    /// API key, sent as x-api-key (the service's `keys` mode).
    #[arg(long, env = "TRACE_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Bearer token (a JWT), sent as `Authorization: Bearer …`.
    #[arg(long, env = "TRACE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Sign every request with AWS SigV4, credentials from the standard AWS provider chain
    /// (environment, profile, role); TRACE_SIGV4=1 does the same.
    #[arg(long, env = "TRACE_SIGV4", global = true, value_parser = clap::builder::BoolishValueParser::new(),
          action = clap::ArgAction::SetTrue)]
    sigv4: bool,
    /// SigV4 service for hosts that name none (`*.execute-api.*` is execute-api, `*.lambda-url.*` lambda).
    #[arg(long, global = true)]
    sigv4_service: Option<String>,
    /// SigV4 region for hosts that name none (default: AWS_REGION or the AWS profile's).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Retries of a request answered 429 (after its Retry-After) before giving up with exit code 5.
    #[arg(long, default_value_t = 3, global = true)]
    retries: u32,
    /// No progress on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// What `trace dlq` does.
#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Print each dead-lettered message (queue, message id, job id, receive count, the job's status and
    /// error code), one JSON line each.
    List,
    /// Move every dead-lettered message back to its queue; prints how many per queue.
    Redrive,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit container ids (a file or stdin: one per line, or a JSON array).
    Submit(SubmitArgs),
    /// Print a job's status (JSON).
    Status {
        /// The job id.
        job: String,
    },
    /// Wait for a job to end, showing progress; prints its final status (JSON).
    Wait {
        /// The job id.
        job: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Cancel a queued or running job; prints its status (JSON).
    Cancel {
        /// The job id.
        job: String,
    },
    /// Queue a failed job again; prints its status (JSON). `trace wait` follows it.
    Retry {
        /// The job id.
        job: String,
    },
    /// The dead-letter queues (administrators' key): `list` prints each message (one JSON line each,
    /// with its job's status), `redrive` moves them all back to their queues (a failed job runs again).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// List recent jobs, newest first (one JSON line each).
    Jobs {
        /// Only jobs in this status (queued, started, finished, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// How many (1–200).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Stream a finished job's result (resumes an interrupted stream from result pages); with
    /// --follow, a queued or running job's records as they are stored.
    Stream {
        /// The job id.
        job: String,
        /// Follow a queued or running job: print its records while it runs (the stream route).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Read result pages: one page (the server's JSON), or with --all every record via pages.
    Result(ResultArgs),
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// File of container ids; `-` or absent: standard input.
    ids: Option<PathBuf>,
    /// Profile: query_tool, query_tool_reverse, mid_section_defect (msd).
    #[arg(long)]
    profile: Option<String>,
    /// Domains, comma separated (history,materials,rejects,holds,jobs); default all.
    #[arg(long, value_delimiter = ',')]
    domains: Vec<String>,
    /// If the request becomes a job: print its records while it runs (the followed stream), with its
    /// progress.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Debug, Args)]
struct WaitArgs {
    /// Time between status polls (e.g. 3s, 500ms, 1m).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    interval: Duration,
    /// Give up waiting after this long (exit code 3).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    timeout: Duration,
    /// On Ctrl-C, cancel the job before exiting (exit code 130 either way).
    #[arg(long)]
    cancel_on_interrupt: bool,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Write one file per domain into this folder instead of NDJSON lines to stdout.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Format of the per-domain files.
    #[arg(long, default_value = "ndjson", value_parser = parse_format)]
    format: Format,
    /// Do not resume an interrupted stream from result pages (fail with exit code 4).
    #[arg(long)]
    no_resume: bool,
    /// How to read a job's result: `chunks` (its chunk URLs, several at once; a server without the
    /// chunks route is read through the stream) or `stream` (the NDJSON stream route). Same output.
    #[arg(long, default_value = "chunks", value_parser = ["chunks", "stream"])]
    via: String,
    /// Chunks fetched at once when reading through chunk URLs (1–64).
    #[arg(long, default_value_t = trace_client::chunks::DEFAULT_PARALLEL as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
}

#[derive(Debug, Args)]
struct ResultArgs {
    /// The job id.
    job: String,
    /// The domain (default: the job's first; with --all: every domain of the job).
    #[arg(long, value_parser = parse_domain)]
    domain: Option<Domain>,
    /// First record.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Records per page (1–5000).
    #[arg(long, default_value_t = MAX_PAGE)]
    limit: u32,
    /// Read every record through pages and write them like `stream` does.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// A duration in humantime's syntax (`500ms`, `3s`, `30m`, `1h 30m`); a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 3s, 500ms, 30m or 1h 30m: {e}"))
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "ndjson" | "json" => Ok(Format::Ndjson),
        "csv" => Ok(Format::Csv),
        other => Err(format!("{other:?} is not ndjson or csv")),
    }
}

fn parse_domain(text: &str) -> Result<Domain, String> {
    text.parse().map_err(|e: trace_core::domain::UnknownDomain| e.to_string())
}

/// Why the command stopped, and so its exit code.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Client(ClientError),
    Output(io::Error),
    Interrupted,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::Output(_) => 1,
            Failure::Interrupted => 130,
            Failure::Client(e) => match e {
                ClientError::JobFailed { .. } | ClientError::JobCancelled { .. } => 2,
                ClientError::PollTimeout { .. } => 3,
                ClientError::StreamInterrupted { .. }
                | ClientError::MalformedLine { .. }
                | ClientError::StreamError { .. }
                | ClientError::ChunkFailed { .. } => 4,
                ClientError::RateLimited { .. } => 5,
                ClientError::Http { .. }
                | ClientError::Unauthorized { .. }
                | ClientError::Transport { .. }
                | ClientError::InvalidResponse { .. }
                | ClientError::Config(_) => 1,
            },
        }
    }
}

/// Progress on stderr: one redrawn line on a terminal, plain lines otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
    started: Instant,
    drawn: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress { enabled: !quiet, tty: io::stderr().is_terminal(), started: Instant::now(), drawn: false }
    }

    fn elapsed(&self) -> String {
        format!("{:.1}s", self.started.elapsed().as_secs_f64())
    }

    /// A line that is redrawn on a terminal (`transient`), or printed.
    fn show(&mut self, text: &str, transient: bool) {
        if !self.enabled {
            return;
        }
        let mut err = io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
            if !transient {
                let _ = writeln!(err);
            }
            self.drawn = transient;
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    /// A message that must not be overdrawn.
    fn note(&mut self, text: &str) {
        if self.tty && self.drawn {
            eprintln!();
            self.drawn = false;
        }
        eprintln!("{text}");
    }

    fn job(&mut self, info: &JobInfo) {
        let p = &info.progress_detail;
        let domain = p.domain.map(|d| d.as_str()).unwrap_or("-");
        let text = format!(
            "job {} {:<9} {:>5.1}%  domain {domain:<9} records {:>9}  ids {}/{}  elapsed {}",
            info.job_id,
            info.status.as_str(),
            p.percent,
            p.records_written,
            p.ids_done,
            p.ids_total,
            self.elapsed()
        );
        // On a terminal the line is redrawn; otherwise one line per poll.
        self.show(&text, !info.status.is_terminal());
    }

    fn records(&mut self, domain: Domain, received: u64) {
        if self.tty {
            let text =
                format!("streaming  domain {domain:<9} records {received:>9}  elapsed {}", self.elapsed());
            self.show(&text, true);
        }
    }

    fn line(&mut self, line: &StreamLine, received: u64) {
        match line {
            StreamLine::Records { domain, .. } => self.records(*domain, received),
            StreamLine::DomainEnd { domain, count } => {
                let text =
                    format!("streamed   domain {domain:<9} records {count:>9}  elapsed {}", self.elapsed());
                self.show(&text, false);
            }
            _ => {}
        }
    }
}

fn read_ids(path: Option<&PathBuf>) -> Result<Vec<String>, Failure> {
    let mut text = String::new();
    match path.filter(|p| p.as_os_str() != "-") {
        Some(p) => {
            text = std::fs::read_to_string(p)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", p.display())))?
        }
        None => {
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
        }
    }
    parse_ids(&text)
}

/// Ids from a JSON array of strings, or one per line (blank lines and `#` comments skipped).
fn parse_ids(text: &str) -> Result<Vec<String>, Failure> {
    let trimmed = text.trim_start();
    let ids: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
            .map_err(|e| Failure::Usage(format!("the ids are not a JSON array of strings: {e}")))?
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    if ids.is_empty() {
        return Err(Failure::Usage("no container ids given".into()));
    }
    Ok(ids)
}

fn job_id(text: &str) -> Result<JobId, Failure> {
    text.trim().parse().map_err(|e: trace_core::ids::InvalidJobId| Failure::Usage(e.to_string()))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(io::Error::other)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn sink(out: &OutputArgs) -> Result<Box<dyn Sink>, Failure> {
    Ok(match &out.out_dir {
        Some(dir) => Box::new(DirSink::new(dir, out.format)?),
        None => Box::new(NdjsonSink::new(io::stdout())),
    })
}

/// Writes lines to a sink, showing progress (the records received of the domain in progress).
struct Writer {
    sink: Box<dyn Sink>,
    received: u64,
}

impl Writer {
    /// A writer to the sink `out` asks for.
    fn new(out: &OutputArgs) -> Result<Self, Failure> {
        Ok(Writer { sink: sink(out)?, received: 0 })
    }

    fn line(&mut self, line: &StreamLine, progress: &mut Progress) -> Result<(), Failure> {
        match line {
            StreamLine::DomainStart { .. } => self.received = 0,
            StreamLine::Records { count, .. } => self.received += count,
            _ => {}
        }
        progress.line(line, self.received);
        Ok(self.sink.line(line)?)
    }

    fn piece(&mut self, piece: &Piece, progress: &mut Progress) -> Result<(), Failure> {
        match piece {
            Piece::Line(line) => self.line(line, progress),
            Piece::Records(block) => {
                self.received += block.records;
                progress.records(block.domain, self.received);
                Ok(self.sink.records(block)?)
            }
        }
    }

    fn finish(mut self) -> Result<(), Failure> {
        Ok(self.sink.finish()?)
    }
}

/// Streams a job into `out` (through its chunk URLs or the stream route, as `out.via` says); how
/// many times the reading was resumed.
async fn stream_job(
    client: &Client,
    job: &JobId,
    out: &OutputArgs,
    progress: &mut Progress,
) -> Result<u64, Failure> {
    let (notices, mut notices_rx) = tokio::sync::mpsc::unbounded_channel::<Resume>();
    let notify = move |r: &Resume| {
        let _ = notices.send(r.clone());
    };
    let mut through_stream = true;
    // Typed lines from the stream route, or the chunks' records unparsed from the chunk URLs.
    let mut pieces = match out.via.as_str() {
        "stream" => Pieces::Lines(client.stream_with(job, notify)),
        _ => match client.chunks(job).await {
            Ok(list) => {
                through_stream = false;
                Pieces::Chunks(client.read_chunk_pieces(list, usize::from(out.parallel), notify))
            }
            // A server without the chunks route (an older one): its 404 is not about the job.
            Err(ClientError::Http { status: 404, code, .. })
                if !matches!(code.as_str(), "JOB_NOT_FOUND" | "JOB_RESULT_EXPIRED") =>
            {
                progress.note("trace: the server has no chunks route; reading the stream");
                Pieces::Lines(client.stream_with(job, notify))
            }
            Err(e) => return Err(e.into()),
        },
    };
    let mut writer = Writer::new(out)?;
    loop {
        let piece = match &mut pieces {
            Pieces::Lines(lines) => lines.next().await.map(|l| l.map(Piece::Line)),
            Pieces::Chunks(chunks) => chunks.next().await,
        };
        let Some(piece) = piece else { break };
        while let Ok(r) = notices_rx.try_recv() {
            progress.note(&format!(
                "trace: {} ({}); resuming (attempt {}) from {} offset {}",
                if through_stream { "stream interrupted" } else { "chunk read failed" },
                r.reason,
                r.attempt,
                r.domain.map(|d| d.as_str()).unwrap_or("the start"),
                r.offset
            ));
        }
        writer.piece(&piece?, progress)?;
    }
    writer.finish()?;
    Ok(match pieces {
        Pieces::Lines(lines) => lines.resumes(),
        Pieces::Chunks(chunks) => chunks.resumes(),
    } as u64)
}

/// Where [`stream_job`] reads from.
enum Pieces {
    Lines(LineStream),
    Chunks(PieceStream),
}

/// Follows a job from its `stream_url` (which may be on another host): its records are written as
/// they are stored (the followed stream), while its status is polled for progress. Done when the
/// stream is complete and the status says finished; a failed or cancelled job ends as `wait` does
/// (exit code 2), one still waiting at `--timeout` with exit code 3.
async fn follow(
    client: &Client,
    accepted: &Accepted,
    wait: &WaitArgs,
    out: &OutputArgs,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let job = &accepted.job_id;
    let streamer = client.at_stream_url(&accepted.stream_url)?;
    let progress = std::cell::RefCell::new(progress);
    let mut writer = Writer::new(out)?;
    let resumes = {
        let write = async {
            let mut lines = streamer.follow(job, |_: &Resume| {});
            while let Some(line) = lines.next().await {
                writer.line(&line?, &mut progress.borrow_mut())?;
            }
            writer.finish()?;
            Ok::<_, Failure>(lines.resumes())
        };
        let poll = client.wait_with(job, wait.interval, wait.timeout, |info| progress.borrow_mut().job(info));
        tokio::pin!(write, poll);
        let mut written = None;
        loop {
            tokio::select! {
                polled = &mut poll => {
                    polled?;
                    break;
                }
                w = &mut write, if written.is_none() => {
                    let failed = w.is_err();
                    written = Some(w);
                    if failed {
                        // The stream ended early (RESULT_CHANGED, STORE_ERROR, a failed job's code)
                        // while the job may run on: the job's own end, if the next poll tells it,
                        // decides the exit code; else the stream's error now, not at the job's end.
                        let grace = wait.interval + Duration::from_secs(2);
                        if let Ok(polled) = tokio::time::timeout(grace, &mut poll).await {
                            polled?;
                        }
                        break;
                    }
                }
            }
        }
        match written {
            Some(w) => w?,
            None => write.await?,
        }
    };
    let progress = progress.into_inner();
    let elapsed = progress.elapsed();
    progress.note(&format!(
        "trace: job {job} streamed in {elapsed}{}",
        if resumes > 0 { format!(" (followed again {resumes} times)") } else { String::new() }
    ));
    Ok(())
}

/// Runs `work`; on Ctrl-C cancels the job when asked to, and fails with `Interrupted`.
async fn interruptible<F>(client: &Client, job: Option<&JobId>, cancel: bool, work: F) -> Result<(), Failure>
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => result,
        _ = ctrl_c => {
            eprintln!();
            match job {
                Some(job) if cancel => match client.cancel(job).await {
                    Ok(info) => eprintln!("trace: interrupted; job {job} is {}", info.status),
                    Err(e) => eprintln!("trace: interrupted; cancelling job {job} failed: {e}"),
                },
                Some(job) => eprintln!("trace: interrupted; job {job} goes on (`trace cancel {job}` stops it)"),
                None => eprintln!("trace: interrupted"),
            }
            Err(Failure::Interrupted)
        }
    }
}

/// The credentials the global options describe (at most one kind).
async fn auth(cli: &Cli) -> Result<Auth, Failure> {
    let api_key = cli.api_key.clone().filter(|k| !k.is_empty());
    let token = cli.token.clone().filter(|t| !t.is_empty());
    let given = [api_key.is_some(), token.is_some(), cli.sigv4].iter().filter(|g| **g).count();
    if given > 1 {
        return Err(Failure::Usage(
            "give one kind of credentials: --api-key (TRACE_API_KEY), --token (TRACE_TOKEN) or --sigv4 \
             (TRACE_SIGV4)"
                .into(),
        ));
    }
    if cli.sigv4 {
        let mut signer = SigV4::from_environment().await?;
        if let Some(service) = cli.sigv4_service.clone().filter(|s| !s.is_empty()) {
            signer = signer.with_service(service);
        }
        if let Some(region) = cli.region.clone().filter(|r| !r.is_empty()) {
            signer = signer.with_region(region);
        }
        return Ok(Auth::SigV4(signer));
    }
    Ok(match (api_key, token) {
        (Some(key), _) => Auth::api_key(key),
        (None, Some(token)) => Auth::bearer(token),
        (None, None) => Auth::None,
    })
}

/// The client the global options describe (credentials apart).
fn client_config(cli: &Cli) -> ClientConfig {
    let url = if cli.url.trim().is_empty() { DEFAULT_URL } else { cli.url.trim() };
    let mut config = ClientConfig::new(url);
    config.submit_url = cli.submit_url.clone().filter(|u| !u.is_empty());
    config.status_url = cli.status_url.clone().filter(|u| !u.is_empty());
    config.stream_url = cli.stream_url.clone().filter(|u| !u.is_empty());
    config.rate_limit_retries = cli.retries;
    let no_resume = match &cli.command {
        Command::Submit(a) => a.out.no_resume,
        Command::Stream { out, .. } => out.no_resume,
        Command::Result(a) => a.out.no_resume,
        _ => false,
    };
    if no_resume {
        config.max_resumes = 0;
        config.chunk_attempts = 1;
    }
    config
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut config = client_config(&cli);
    config.auth = auth(&cli).await?;
    let client = Client::new(config)?;
    let mut progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Submit(args) => submit(&client, &args, &mut progress).await,
        Command::Status { job } => print_json(&client.status(&job_id(&job)?).await?),
        Command::Wait { job, wait } => {
            let job = job_id(&job)?;
            let work = async {
                let info =
                    client.wait_with(&job, wait.interval, wait.timeout, |info| progress.job(info)).await?;
                print_json(&info)
            };
            interruptible(&client, Some(&job), wait.cancel_on_interrupt, work).await
        }
        Command::Cancel { job } => print_json(&client.cancel(&job_id(&job)?).await?),
        Command::Retry { job } => print_json(&client.retry(&job_id(&job)?).await?),
        Command::Dlq { action: DlqAction::List } => {
            for message in client.dlq_list().await?.messages {
                print_json(&message)?;
            }
            Ok(())
        }
        Command::Dlq { action: DlqAction::Redrive } => print_json(&client.dlq_redrive().await?),
        Command::Jobs { status, limit } => list_jobs(&client, status.as_deref(), limit).await,
        Command::Stream { job, follow: true, out } => {
            let job = job_id(&job)?;
            let work = async {
                let mut writer = Writer::new(&out)?;
                let mut lines = client.follow(&job, |_: &Resume| {});
                while let Some(line) = lines.next().await {
                    writer.line(&line?, &mut progress)?;
                }
                writer.finish()
            };
            interruptible(&client, None, false, work).await
        }
        Command::Stream { job, out, .. } => {
            let job = job_id(&job)?;
            let work = async { stream_job(&client, &job, &out, &mut progress).await.map(|_| ()) };
            interruptible(&client, None, false, work).await
        }
        Command::Result(args) => {
            let job = job_id(&args.job)?;
            if !args.all {
                let page = client.page(&job, args.domain, args.offset, args.limit).await?;
                return print_json(&ResultPage::from(page));
            }
            let work = write_all_pages(&client, &job, &args, &mut progress);
            interruptible(&client, None, false, work).await
        }
    }
}

/// The request `trace submit` describes.
fn submit_request(args: &SubmitArgs) -> Result<SubmitRequest, Failure> {
    let ids = read_ids(args.ids.as_ref())?;
    let profile = match &args.profile {
        Some(p) => Some(p.parse::<Profile>().map_err(|e| Failure::Usage(e.to_string()))?),
        None => None,
    };
    let domains = args
        .domains
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| parse_domain(d.trim()).map_err(Failure::Usage))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubmitRequest {
        profile,
        domains: (!domains.is_empty()).then_some(domains),
        ..SubmitRequest::new(ids)
    })
}

/// `trace submit`: an inline answer is written like a stream; a job is followed or printed.
async fn submit(client: &Client, args: &SubmitArgs, progress: &mut Progress) -> Result<(), Failure> {
    match client.submit(&submit_request(args)?).await? {
        Submitted::Inline(result) => {
            let mut writer = Writer::new(&args.out)?;
            let lines = inline_lines(result, MAX_PAGE as usize)?;
            for line in &lines {
                writer.line(line, progress)?;
            }
            writer.finish()?;
            if let Some(StreamLine::Complete { total_records }) = lines.last() {
                progress.note(&format!("trace: answered inline, {total_records} records"));
            }
            Ok(())
        }
        Submitted::Accepted(accepted) if args.follow => {
            let job = accepted.job_id;
            progress.note(&format!("trace: job {job} accepted ({} queue)", accepted.queue.as_str()));
            let work = follow(client, &accepted, &args.wait, &args.out, progress);
            interruptible(client, Some(&job), args.wait.cancel_on_interrupt, work).await
        }
        Submitted::Accepted(accepted) => print_json(&accepted),
    }
}

/// `trace jobs`: one JSON line per job.
async fn list_jobs(client: &Client, status: Option<&str>, limit: Option<u32>) -> Result<(), Failure> {
    let status = match status.filter(|s| !s.is_empty()) {
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            Failure::Usage(format!("{s:?} is not queued, started, finished, failed or cancelled"))
        })?),
        None => None,
    };
    let list = client.jobs(status, limit).await?;
    for job in &list.jobs {
        print_json(job)?;
    }
    Ok(())
}

/// `trace result --all`: every record of the job's domains (or of one) through pages, written like
/// a stream.
async fn write_all_pages(
    client: &Client,
    job: &JobId,
    args: &ResultArgs,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let domains = match args.domain {
        Some(d) => vec![d],
        None => client.status(job).await?.domains,
    };
    let mut writer = Writer::new(&args.out)?;
    let mut total = 0;
    let mut aggregation = None;
    for domain in domains {
        let mut pages = DomainPages::new(domain, args.offset);
        while !pages.is_complete() {
            let mut page = client.page(job, Some(domain), pages.offset(), args.limit).await?;
            aggregation = page.aggregation.take();
            for line in pages.lines(page)? {
                writer.line(&line, progress)?;
            }
        }
        total += pages.delivered();
    }
    for line in closing_lines(aggregation, total) {
        writer.line(&line, progress)?;
    }
    writer.finish()
}

fn main() -> ExitCode {
    trace_client::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(1),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trace: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::Usage(m) => eprintln!("trace: {m}"),
                Failure::Client(e) => eprintln!("trace: {e}"),
                Failure::Output(e) => eprintln!("trace: writing the output failed: {e}"),
                Failure::Interrupted => {}
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn ids_from_lines_or_json() {
        let ids = parse_ids("CID-1\n\n# comment\n CID-2 \r\n").ok().unwrap();
        assert_eq!(ids, vec!["CID-1", "CID-2"]);
        let ids = parse_ids(r#"["A","B"]"#).ok().unwrap();
        assert_eq!(ids, vec!["A", "B"]);
        assert!(parse_ids("\n\n").is_err());
        assert!(parse_ids("[1,2]").is_err());
    }

    #[test]
    fn exit_codes_are_distinct_per_outcome() {
        let job_id = JobId::new();
        let cases = [
            (Failure::Client(ClientError::JobFailed { job_id, code: "X".into(), message: "m".into() }), 2),
            (
                Failure::Client(ClientError::PollTimeout {
                    job_id,
                    waited: Duration::ZERO,
                    last_status: JobStatus::Queued,
                }),
                3,
            ),
            (
                Failure::Client(ClientError::MalformedLine {
                    line_no: 1,
                    reason: "r".into(),
                    snippet: "".into(),
                }),
                4,
            ),
            (Failure::Client(ClientError::RateLimited { retry_after: Duration::from_secs(1) }), 5),
            (Failure::Interrupted, 130),
            (Failure::Usage("u".into()), 1),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.exit_code(), code, "{failure:?}");
        }
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "trace",
            "submit",
            "ids.txt",
            "--follow",
            "--domains",
            "holds,jobs",
            "--timeout",
            "3s",
            "--format",
            "csv",
            "--out-dir",
            "x",
        ])
        .unwrap();
        let Command::Submit(args) = cli.command else { panic!("submit") };
        assert_eq!(args.domains, vec!["holds", "jobs"]);
        assert_eq!(args.wait.timeout, Duration::from_secs(3));
        assert_eq!(args.out.format, Format::Csv);
    }
}
