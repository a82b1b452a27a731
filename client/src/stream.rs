//! The resumable NDJSON stream consumer.
//!
//! Lines are parsed one by one from the body as it arrives ([`LineReader`], bounded). The consumer
//! keeps track of where it is (the job's domains from `meta`, the domain in progress, the records of
//! it received in complete `records` lines, the next batch number). When the body ends or fails
//! before `complete`, it resumes:
//!
//! - before `meta` (nothing delivered yet) it opens the stream again;
//! - after it, it reads the rest from `GET …/result?domain=&offset=&limit=`: the domain in progress
//!   from `offset` = its records already delivered, then every remaining domain page by page, and
//!   delivers them as the same lines the stream would have sent (`domain_start`, `records` with the
//!   next batch numbers, `domain_end`, `aggregation`, `complete`), so the caller sees no gap, no
//!   duplicate and no difference.
//!
//! A line that is not JSON of a known type is a [`ClientError::MalformedLine`] (no resumption: the
//! server is sending something wrong); an `error` line is a [`ClientError::StreamError`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;
use trace_core::ndjson::StreamLine;
use trace_core::{Domain, JobId};

use crate::lines::{LineReader, ReadError};
use crate::{Client, ClientError};

/// Where an interrupted stream was resumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// 1 for the first resumption of this stream, and so on.
    pub attempt: u32,
    /// The domain the next records come from (None when the stream is opened again from the start,
    /// or only `aggregation` / `complete` were missing).
    pub domain: Option<Domain>,
    /// Records of that domain already delivered (the page offset it continues from).
    pub offset: u64,
    /// Why.
    pub reason: String,
}

/// The typed lines of a job's stream ([`Client::stream`]).
pub struct LineStream {
    inner: BoxStream<'static, Result<StreamLine, ClientError>>,
    resumes: Arc<AtomicU32>,
}

impl LineStream {
    /// How many times this stream has been resumed so far.
    pub fn resumes(&self) -> u32 {
        self.resumes.load(Ordering::Relaxed)
    }
}

impl Stream for LineStream {
    type Item = Result<StreamLine, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for LineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineStream").field("resumes", &self.resumes()).finish()
    }
}

type Body = BoxStream<'static, Result<Bytes, reqwest::Error>>;

enum Mode {
    /// (Re)open the stream.
    Open,
    /// Reading the stream.
    Live(LineReader<Body>),
    /// Reading pages.
    Paging(Paging),
    /// Finished (or failed).
    Done,
}

/// Where paging is.
struct Paging {
    /// Index into the job's domains.
    index: usize,
    /// Records of that domain delivered.
    offset: u64,
    /// Next batch number.
    batch: u64,
    /// Its `domain_start` total, once delivered.
    total: Option<u64>,
}

struct State {
    client: Client,
    job: JobId,
    mode: Mode,
    /// Lines to deliver before anything else.
    pending: VecDeque<StreamLine>,
    /// From `meta`: the domains in stream order (None before `meta`).
    domains: Option<Vec<Domain>>,
    /// Domains whose `domain_end` was delivered.
    domains_done: usize,
    /// The domain between its `domain_start` and `domain_end`, with its total.
    open_domain: Option<(Domain, u64)>,
    /// The domain of the last `domain_start` and its records delivered.
    last_domain: Option<Domain>,
    domain_records: u64,
    next_batch: u64,
    aggregation_done: bool,
    /// The aggregation as read from a page (all pages carry it).
    page_aggregation: Option<Option<Value>>,
    total_records: u64,
    attempts: u32,
    resumes: Arc<AtomicU32>,
    on_resume: Box<dyn FnMut(&Resume) + Send>,
}

pub(crate) fn open(client: Client, job: JobId, on_resume: Box<dyn FnMut(&Resume) + Send>) -> LineStream {
    let resumes = Arc::new(AtomicU32::new(0));
    let state = State {
        client,
        job,
        mode: Mode::Open,
        pending: VecDeque::new(),
        domains: None,
        domains_done: 0,
        open_domain: None,
        last_domain: None,
        domain_records: 0,
        next_batch: 0,
        aggregation_done: false,
        page_aggregation: None,
        total_records: 0,
        attempts: 0,
        resumes: resumes.clone(),
        on_resume,
    };
    let inner = futures::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
    .boxed();
    LineStream { inner, resumes }
}

fn snippet(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned()
}

impl State {
    async fn next(&mut self) -> Option<Result<StreamLine, ClientError>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(Ok(line));
            }
            match std::mem::replace(&mut self.mode, Mode::Done) {
                Mode::Done => return None,
                Mode::Open => match self.client.open_stream(&self.job).await {
                    Ok(response) => {
                        let body: Body = response.bytes_stream().boxed();
                        self.mode = Mode::Live(LineReader::new(body, self.client.config.max_line_bytes));
                    }
                    Err(e @ ClientError::Transport { .. }) => {
                        if let Err(e) = self.interrupted(e.to_string()).await {
                            return Some(Err(e));
                        }
                    }
                    Err(e) => return Some(Err(e)),
                },
                Mode::Live(mut reader) => match reader.next_line().await {
                    Ok(Some(bytes)) => {
                        let line_no = reader.line_no();
                        let line = match serde_json::from_slice::<StreamLine>(&bytes) {
                            Ok(line) => line,
                            Err(e) => {
                                return Some(Err(ClientError::MalformedLine {
                                    line_no,
                                    reason: e.to_string(),
                                    snippet: snippet(&bytes),
                                }))
                            }
                        };
                        if let Err(reason) = self.observe(&line) {
                            return Some(Err(ClientError::MalformedLine {
                                line_no,
                                reason,
                                snippet: snippet(&bytes),
                            }));
                        }
                        match line {
                            StreamLine::Error { code, message } => {
                                return Some(Err(ClientError::StreamError { code, message }))
                            }
                            StreamLine::Complete { .. } => {}
                            _ => self.mode = Mode::Live(reader),
                        }
                        return Some(Ok(line));
                    }
                    Ok(None) => {
                        if let Err(e) =
                            self.interrupted("the stream ended before its complete line".into()).await
                        {
                            return Some(Err(e));
                        }
                    }
                    Err(ReadError::Truncated { bytes }) => {
                        let reason =
                            format!("the stream ended inside line {} ({bytes} bytes)", reader.line_no() + 1);
                        if let Err(e) = self.interrupted(reason).await {
                            return Some(Err(e));
                        }
                    }
                    Err(ReadError::Body(e)) => {
                        if let Err(e) = self.interrupted(format!("reading the stream failed: {e}")).await {
                            return Some(Err(e));
                        }
                    }
                    Err(ReadError::TooLong { line_no, limit, head }) => {
                        return Some(Err(ClientError::MalformedLine {
                            line_no,
                            reason: format!("longer than the limit of {limit} bytes"),
                            snippet: snippet(&head),
                        }))
                    }
                },
                Mode::Paging(paging) => {
                    if let Err(e) = self.page_step(paging).await {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Updates the position after a live line; an error for a line that contradicts the sequence.
    fn observe(&mut self, line: &StreamLine) -> Result<(), String> {
        match line {
            StreamLine::Meta { domains, .. } => {
                if self.domains.is_some() {
                    return Err("a second meta line".into());
                }
                self.domains = Some(domains.clone());
            }
            StreamLine::DomainStart { domain, total } => {
                self.open_domain = Some((*domain, *total));
                self.last_domain = Some(*domain);
                self.domain_records = 0;
                self.next_batch = 0;
            }
            StreamLine::Records { domain, batch, count, data } => {
                if self.open_domain.map(|(d, _)| d) != Some(*domain) {
                    return Err(format!("records of {domain} outside its domain_start/domain_end"));
                }
                if *count != data.len() as u64 {
                    return Err(format!("count {count} but {} records", data.len()));
                }
                self.domain_records += *count;
                self.total_records += *count;
                self.next_batch = batch + 1;
            }
            StreamLine::DomainEnd { .. } => {
                self.open_domain = None;
                self.domains_done += 1;
            }
            StreamLine::Aggregation { .. } => self.aggregation_done = true,
            StreamLine::Warning { .. } | StreamLine::Error { .. } | StreamLine::Complete { .. } => {}
        }
        Ok(())
    }

    /// The live stream broke: plan the resumption (or give up).
    async fn interrupted(&mut self, reason: String) -> Result<(), ClientError> {
        if self.attempts >= self.client.config.max_resumes {
            self.mode = Mode::Done;
            return Err(ClientError::StreamInterrupted {
                after_domain: self.last_domain,
                after_records: self.domain_records,
                reason,
            });
        }
        self.attempts += 1;
        self.resumes.fetch_add(1, Ordering::Relaxed);
        let resume = match &self.domains {
            None => {
                // Nothing delivered yet: open the stream again, after a short pause.
                tokio::time::sleep(Duration::from_millis(200 * u64::from(self.attempts))).await;
                self.mode = Mode::Open;
                Resume { attempt: self.attempts, domain: None, offset: 0, reason }
            }
            Some(domains) => {
                let paging = match self.open_domain {
                    Some((domain, total)) => Paging {
                        index: self.domains_done,
                        offset: self.domain_records,
                        batch: self.next_batch,
                        total: Some(total),
                    }
                    .checked(domains, domain)?,
                    None => Paging { index: self.domains_done, offset: 0, batch: 0, total: None },
                };
                let resume = Resume {
                    attempt: self.attempts,
                    domain: domains.get(paging.index).copied(),
                    offset: paging.offset,
                    reason,
                };
                self.mode = Mode::Paging(paging);
                resume
            }
        };
        (self.on_resume)(&resume);
        Ok(())
    }

    /// One step of paging: a page of the current domain, or the closing lines.
    async fn page_step(&mut self, mut p: Paging) -> Result<(), ClientError> {
        let domains = self.domains.clone().unwrap_or_default();
        let limit = self.client.config.page_limit;
        if let Some(&domain) = domains.get(p.index) {
            if p.total.is_some_and(|t| p.offset >= t) {
                // Everything of the domain was delivered but not its domain_end.
                self.end_domain(domain, &mut p);
                self.mode = Mode::Paging(p);
                return Ok(());
            }
            let page = match self.client.page(&self.job, Some(domain), p.offset, limit).await {
                Ok(page) => page,
                Err(e @ ClientError::Transport { .. }) => return self.retry_page(p, e).await,
                Err(e) => return Err(e),
            };
            let url = || format!("result page {domain} offset {}", p.offset);
            if page.domain != domain || page.offset != p.offset {
                return Err(ClientError::InvalidResponse {
                    url: url(),
                    reason: format!("got {} offset {}", page.domain, page.offset),
                });
            }
            match p.total {
                Some(total) if total != page.total => {
                    return Err(ClientError::InvalidResponse {
                        url: url(),
                        reason: format!("total {} but the stream announced {total}", page.total),
                    })
                }
                Some(_) => {}
                None => {
                    p.total = Some(page.total);
                    self.pending.push_back(StreamLine::DomainStart { domain, total: page.total });
                    self.last_domain = Some(domain);
                    self.domain_records = 0;
                }
            }
            self.page_aggregation = Some(page.aggregation.clone());
            if page.count == 0 && p.offset < page.total {
                return Err(ClientError::InvalidResponse {
                    url: url(),
                    reason: format!("an empty page before the domain's {} records", page.total),
                });
            }
            if page.count > 0 {
                p.offset += page.count;
                self.domain_records += page.count;
                self.total_records += page.count;
                self.pending.push_back(StreamLine::Records {
                    domain,
                    batch: p.batch,
                    count: page.count,
                    data: page.data,
                });
                p.batch += 1;
            }
            if p.offset >= page.total {
                self.end_domain(domain, &mut p);
            }
            self.mode = Mode::Paging(p);
            return Ok(());
        }
        // All domains delivered: the aggregation (every page carries it) and complete.
        if !self.aggregation_done {
            let aggregation = match self.page_aggregation.take() {
                Some(a) => a,
                None => match self.client.page(&self.job, domains.first().copied(), 0, 1).await {
                    Ok(page) => page.aggregation,
                    Err(e @ ClientError::Transport { .. }) => return self.retry_page(p, e).await,
                    Err(e) => return Err(e),
                },
            };
            self.aggregation_done = true;
            if let Some(data) = aggregation {
                self.pending.push_back(StreamLine::Aggregation { data });
            }
        }
        self.pending.push_back(StreamLine::Complete { total_records: self.total_records });
        self.mode = Mode::Done;
        Ok(())
    }

    fn end_domain(&mut self, domain: Domain, p: &mut Paging) {
        let count = p.total.unwrap_or(p.offset);
        self.pending.push_back(StreamLine::DomainEnd { domain, count });
        self.domains_done += 1;
        *p = Paging { index: p.index + 1, offset: 0, batch: 0, total: None };
    }

    /// A page failed in transit: try it again while attempts remain.
    async fn retry_page(&mut self, p: Paging, error: ClientError) -> Result<(), ClientError> {
        if self.attempts >= self.client.config.max_resumes {
            return Err(ClientError::StreamInterrupted {
                after_domain: self.last_domain,
                after_records: self.domain_records,
                reason: format!("resuming from result pages failed: {error}"),
            });
        }
        self.attempts += 1;
        tokio::time::sleep(Duration::from_millis(500 * u64::from(self.attempts))).await;
        self.mode = Mode::Paging(p);
        Ok(())
    }
}

impl Paging {
    /// Checks that the open domain is the next one of `domains`.
    fn checked(self, domains: &[Domain], open: Domain) -> Result<Paging, ClientError> {
        if domains.get(self.index) != Some(&open) {
            return Err(ClientError::StreamInterrupted {
                after_domain: Some(open),
                after_records: self.offset,
                reason: format!("the stream's domains are out of the order its meta line announced ({open})"),
            });
        }
        Ok(self)
    }
}
