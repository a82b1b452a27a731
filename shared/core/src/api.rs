//! Wire types of the HTTP answers, defined once for the server and its clients so they cannot drift:
//! the 202 answer of submit ([`Accepted`]), a job's status ([`JobInfo`]), the history ([`JobList`]),
//! the events answers — inline ([`InlineResult`]) and a result page ([`ResultPage`], read as a
//! [`Page`]) — and the error body ([`ErrorBody`]).
//!
//! An events answer is `{"stage":"events","results":{"<domain>":{…}},"aggregation":…}`, its domains
//! in the request's order ([`DomainMap`]). Its records are generic: a client reads them as
//! `Vec<Value>`, the server writes records it has already rendered as JSON ([`RenderedRecords`]), so
//! they are copied into the answer without being parsed into values and serialised again.

use std::fmt;
use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::Domain;
use crate::ids::JobId;
use crate::job::{JobError, JobMeta, JobStatus, Progress};
use crate::profile::Profile;
use crate::queue::QueueKind;

/// The 202 answer of `POST /api/trace/events`: the request became a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// Always `events`.
    #[serde(default)]
    pub stage: String,
    /// Always true.
    #[serde(rename = "async", default)]
    pub is_async: bool,
    /// The job.
    pub job_id: JobId,
    /// Its status (`queued`).
    pub status: JobStatus,
    /// The queue it went to.
    pub queue: QueueKind,
    /// Path of its status.
    pub status_url: String,
    /// Path of its result pages.
    pub result_url: String,
    /// Path of its NDJSON stream.
    pub stream_url: String,
}

impl Accepted {
    /// The answer for a job just queued on `queue`.
    pub fn queued(job_id: JobId, queue: QueueKind) -> Self {
        Accepted {
            stage: "events".to_owned(),
            is_async: true,
            job_id,
            status: JobStatus::Queued,
            queue,
            status_url: format!("/api/trace/job/{job_id}"),
            result_url: format!("/api/trace/job/{job_id}/result"),
            stream_url: format!("/api/trace/job/{job_id}/stream"),
        }
    }

    /// The same answer with an absolute `stream_url` on `base` (`TRACE_STREAM_BASE_URL`: the stream
    /// function on its own host, e.g. its Function URL); `None` keeps the relative path.
    pub fn with_stream_base(mut self, base: Option<&str>) -> Self {
        if let Some(base) = base {
            self.stream_url = format!("{}{}", base.trim_end_matches('/'), self.stream_url);
        }
        self
    }
}

/// A job's status: `GET /api/trace/job/{id}`, an entry of the history, the answer of cancel.
///
/// The dashboard's front end reads `job_id`, `status`, `profile`, `cid_count`, `domains`, `progress`
/// (text), `created_at` (epoch seconds), `elapsed_seconds` and `error` (text or null): those names and
/// types are its wire contract. The rest is this project's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job.
    pub job_id: JobId,
    /// `queued|started|finished|failed|cancelled`.
    pub status: JobStatus,
    /// Its profile.
    pub profile: Profile,
    /// Unique container ids.
    pub cid_count: u64,
    /// Domains, in result order.
    pub domains: Vec<Domain>,
    /// Progress as one line of text ([`Progress::describe`]): `queued`, `history 2/5: 45,000 of
    /// 114,000 ids (39.5%)`, `complete`, …
    pub progress: String,
    /// Progress of the current run, structured.
    pub progress_detail: Progress,
    /// The queue.
    pub queue: QueueKind,
    /// Submitted, in seconds since the Unix epoch (milliseconds as the fraction).
    #[serde(with = "epoch_seconds")]
    pub created_at: DateTime<Utc>,
    /// Started, in epoch seconds.
    #[serde(with = "epoch_seconds::option", default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Ended, in epoch seconds.
    #[serde(with = "epoch_seconds::option", default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Seconds run so far (or in all).
    pub elapsed_seconds: f64,
    /// Why it failed, in words (null unless failed).
    pub error: Option<String>,
    /// The failure's stable code (`SOURCE_ERROR`, `JOB_TIMEOUT`, …; null unless failed).
    pub error_code: Option<String>,
    /// Worker attempts.
    pub attempt: u32,
    /// Shards the job is split into, each run by its own worker (1: run whole).
    #[serde(default = "one")]
    pub shards: u32,
    /// Shards finished so far, for a job split into shards (its progress sums theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_done: Option<u32>,
}

fn one() -> u32 {
    1
}

impl JobInfo {
    /// The answer for a job at `now`.
    pub fn of(meta: JobMeta, now: DateTime<Utc>) -> Self {
        let (error, error_code) = match meta.error.clone() {
            Some(JobError { code, message }) => (Some(message), Some(code)),
            None => (None, None),
        };
        let elapsed_seconds = meta.elapsed_seconds(now);
        let progress = meta.progress.describe(meta.status, &meta.domains);
        JobInfo {
            elapsed_seconds,
            progress,
            job_id: meta.job_id,
            status: meta.status,
            profile: meta.profile,
            cid_count: meta.cid_count,
            domains: meta.domains,
            progress_detail: meta.progress,
            queue: meta.queue,
            created_at: meta.created_at,
            started_at: meta.started_at,
            completed_at: meta.completed_at,
            error,
            error_code,
            attempt: meta.attempt,
            shards: meta.shards,
            shards_done: (meta.shards > 1 && meta.status == JobStatus::Finished).then_some(meta.shards),
        }
    }

    /// The answer for a job split into shards that has not ended, with its shards' progress summed
    /// and the number of them finished.
    pub fn with_shards(mut self, progress: Progress, domains: &[Domain], done: u32) -> Self {
        self.progress = progress.describe(self.status, domains);
        self.progress_detail = progress;
        self.shards_done = Some(done);
        self
    }
}

/// Timestamps as seconds since the Unix epoch, a JSON number with milliseconds as the fraction (the
/// dashboard's `created_at`).
mod epoch_seconds {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    fn to_seconds(t: &DateTime<Utc>) -> f64 {
        t.timestamp_millis() as f64 / 1000.0
    }

    fn from_seconds<E: serde::de::Error>(s: f64) -> Result<DateTime<Utc>, E> {
        DateTime::from_timestamp_millis((s * 1000.0).round() as i64)
            .ok_or_else(|| E::custom(format!("{s} is not a time in epoch seconds")))
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(to_seconds(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        from_seconds(f64::deserialize(d)?)
    }

    /// The same for an optional time (null when absent).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&to_seconds(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<f64>::deserialize(d)?.map(from_seconds).transpose()
        }
    }
}

/// `GET /api/trace/jobs`: the newest jobs first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobInfo>,
    /// Their number.
    pub count: u64,
}

impl From<Vec<JobInfo>> for JobList {
    fn from(jobs: Vec<JobInfo>) -> Self {
        JobList { count: jobs.len() as u64, jobs }
    }
}

/// The body of every error answer: `{"code","message",…}` plus the fields some codes carry
/// (`status`, `limit`, `retry_after_seconds`, …; see [`TraceError::body`](crate::TraceError::body),
/// which produces it). A field missing from a foreign body (a gateway's `{"message":…}`) is empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code (`JOB_NOT_FOUND`, …).
    #[serde(default)]
    pub code: String,
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// The other fields.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// The `stage` of an events answer: always `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Stage {
    /// `events`.
    #[default]
    #[serde(rename = "events")]
    Events,
}

/// A JSON object keyed by domain, in the order of its entries (the request's domain order), both
/// when written and when read.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainMap<T>(pub Vec<(Domain, T)>);

impl<T> Deref for DomainMap<T> {
    type Target = [(Domain, T)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> IntoIterator for DomainMap<T> {
    type Item = (Domain, T);
    type IntoIter = std::vec::IntoIter<(Domain, T)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T: Serialize> Serialize for DomainMap<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (domain, value) in &self.0 {
            map.serialize_entry(domain, value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for DomainMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Ordered<T> {
            type Value = DomainMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by domain")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(DomainMap(entries))
            }
        }
        deserializer.deserialize_map(Ordered(std::marker::PhantomData))
    }
}

/// An events answer: `{"stage":"events","results":{"<domain>":R,…},"aggregation":A|null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsAnswer<R, A = Value> {
    /// Always `events`.
    #[serde(default)]
    pub stage: Stage,
    /// Per domain, in the request's order.
    pub results: DomainMap<R>,
    /// The MSD aggregation (null for other profiles).
    #[serde(default)]
    pub aggregation: Option<A>,
}

impl<R, A> EventsAnswer<R, A> {
    /// The answer of `results` and `aggregation`.
    pub fn new(results: Vec<(Domain, R)>, aggregation: Option<A>) -> Self {
        EventsAnswer { stage: Stage::Events, results: DomainMap(results), aggregation }
    }
}

impl<R: Serialize, A: Serialize> EventsAnswer<R, A> {
    /// The answer as JSON, written into a buffer of `capacity` bytes (the expected size, so a large
    /// answer is written without reallocations).
    pub fn to_json(&self, capacity: usize) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }
}

/// The records of one domain in an inline answer: `{"data":[…],"count":n}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecords<D = Vec<Value>> {
    /// The records.
    pub data: D,
    /// Their number.
    pub count: u64,
}

/// The 200 answer of submit: the whole result inline.
pub type InlineResult<D = Vec<Value>, A = Value> = EventsAnswer<DomainRecords<D>, A>;

/// One page of a domain's records: `{"data":[…],"count","total","offset","limit"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainPage<D = Vec<Value>> {
    /// The records `offset..offset+count`.
    pub data: D,
    /// Records in `data`.
    pub count: u64,
    /// Records of the domain in all.
    pub total: u64,
    /// First record's position.
    pub offset: u64,
    /// The limit asked for.
    pub limit: u64,
}

/// `GET /api/trace/job/{id}/result`: one page of one domain's records.
pub type ResultPage<D = Vec<Value>, A = Value> = EventsAnswer<DomainPage<D>, A>;

/// A result page as a client reads it: its one domain, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The domain.
    pub domain: Domain,
    /// The records `offset..offset+count`.
    pub data: Vec<Value>,
    /// Records in `data`.
    pub count: u64,
    /// Records of the domain in all.
    pub total: u64,
    /// First record's position.
    pub offset: u64,
    /// The limit asked for.
    pub limit: u64,
    /// The MSD aggregation (None when null).
    pub aggregation: Option<Value>,
}

/// Why a body is not a result page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not JSON of the page's shape.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// `results` is empty.
    #[error("the page has no domain")]
    NoDomain,
    /// `results` has several domains.
    #[error("the page has more than one domain")]
    SeveralDomains,
    /// `count` is not the number of records in `data`.
    #[error("count {count} but {records} records")]
    CountMismatch {
        /// The page's `count`.
        count: u64,
        /// Records in its `data`.
        records: usize,
    },
}

impl Page {
    /// Parses and checks a page body.
    pub fn parse(body: &[u8]) -> Result<Page, PageError> {
        serde_json::from_slice::<ResultPage>(body)?.try_into()
    }
}

impl TryFrom<ResultPage> for Page {
    type Error = PageError;

    fn try_from(answer: ResultPage) -> Result<Page, PageError> {
        let mut results = answer.results.into_iter();
        let (domain, page) = results.next().ok_or(PageError::NoDomain)?;
        if results.next().is_some() {
            return Err(PageError::SeveralDomains);
        }
        if page.count != page.data.len() as u64 {
            return Err(PageError::CountMismatch { count: page.count, records: page.data.len() });
        }
        Ok(Page {
            domain,
            data: page.data,
            count: page.count,
            total: page.total,
            offset: page.offset,
            limit: page.limit,
            aggregation: answer.aggregation,
        })
    }
}

impl From<Page> for ResultPage {
    fn from(page: Page) -> Self {
        let Page { domain, data, count, total, offset, limit, aggregation } = page;
        EventsAnswer::new(vec![(domain, DomainPage { data, count, total, offset, limit })], aggregation)
    }
}

/// Records already rendered as JSON objects, kept as one JSON array (`[{…},{…}]`) and written into
/// an answer as they are: no record is parsed into a value or serialised again (writing only checks
/// that the bytes are JSON).
#[derive(Debug, Clone)]
pub struct RenderedRecords {
    /// `[`, the records separated by commas, `]`.
    json: Vec<u8>,
    count: u64,
}

impl Default for RenderedRecords {
    fn default() -> Self {
        RenderedRecords { json: b"[]".to_vec(), count: 0 }
    }
}

impl RenderedRecords {
    /// Appends the record `render` writes (one JSON object, no newline).
    pub fn push_with(&mut self, render: impl FnOnce(&mut Vec<u8>)) {
        self.json.pop();
        if self.count > 0 {
            self.json.push(b',');
        }
        render(&mut self.json);
        self.json.push(b']');
        self.count += 1;
    }

    /// Appends one record given as JSON.
    pub fn push(&mut self, record: &[u8]) {
        self.push_with(|out| out.extend_from_slice(record));
    }

    /// Records held.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of the array.
    pub fn byte_len(&self) -> usize {
        self.json.len()
    }

    /// The array's bytes from offset `from` on.
    pub fn bytes_from(&self, from: usize) -> &[u8] {
        self.json.get(from..).unwrap_or_default()
    }
}

/// The bytes `json` gains when it is written as a JSON string, as `lambda_http` sends a buffered body
/// inside Lambda's invoke response: `"` and `\` become two bytes, the control characters `\n`, `\r`,
/// `\t`, `\u{8}`, `\u{c}` two and the others six (`\u00XX`). Other bytes, UTF-8 included, are sent as
/// they are.
pub fn json_string_overhead(json: &[u8]) -> usize {
    json.iter()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0x00..=0x1f => 5,
            _ => 0,
        })
        .sum()
}

impl Serialize for RenderedRecords {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_slice(&self.json).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The answer of `GET /api/trace/job/{id}/chunks[?from=n]`: a finished job's stored chunks, per domain
/// in result order, each with a URL that serves its bytes (a presigned object-store GET, or the
/// service's own `/api/trace/job/{id}/chunks/{domain}/{index}` when the store cannot presign).
///
/// The answer is buffered (through API Gateway in AWS), so it lists chunks only up to a byte budget:
/// a job with more chunks than fit (presigned URLs with a session token are ~1.6 KB each) is listed
/// over several answers, `next_from` giving the `from` of the next one (None: this answer ends the
/// list). `from` counts chunks over all domains in result order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkList {
    /// The job.
    pub job_id: JobId,
    /// Always `finished`.
    pub status: JobStatus,
    /// Its profile (what the stream's `meta` line carries).
    pub profile: Profile,
    /// Records over all domains.
    pub total_records: u64,
    /// The manifest's overall checksum.
    pub checksum: u32,
    /// Records per `records` line of the stream (`TRACE_STREAM_BATCH_SIZE`; a domain's last line may
    /// hold fewer): a reader re-cuts the chunks with [`LineAligner`](crate::ndjson::LineAligner) to
    /// give the stream's very lines.
    pub stream_batch_size: u64,
    /// When the URLs stop working (Unix seconds).
    pub expires_at: i64,
    /// How long they work from the answer.
    pub expires_in_seconds: u64,
    /// The MSD aggregation, when the profile has one.
    pub aggregation: Option<Value>,
    /// Chunks over all domains.
    pub chunks_total: u64,
    /// The position (over all domains) of the first chunk listed here.
    pub from: u64,
    /// The `from` of the answer that lists the next chunks; None when this one lists the last.
    pub next_from: Option<u64>,
    /// Every domain of the job, in result order, with the chunks of it this answer lists.
    pub domains: Vec<ChunkDomain>,
}

/// One domain of a [`ChunkList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkDomain {
    /// The domain.
    pub domain: Domain,
    /// Records in all its chunks.
    pub records: u64,
    /// Its chunks listed in this answer, in order.
    pub chunks: Vec<ChunkLink>,
}

/// One chunk of a [`ChunkList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLink {
    /// Its position in the domain, from 0.
    pub index: u64,
    /// Where to GET its stored bytes: absolute (presigned, no credentials) or a path of this API
    /// (the caller's credentials).
    pub url: String,
    /// Records (lines) in it.
    pub records: u64,
    /// Size of its NDJSON.
    pub bytes: u64,
    /// Size of the stored object (what the URL serves).
    pub stored_bytes: u64,
    /// How the object is encoded (`gzip`, `lz4`, `plain`).
    pub encoding: crate::encoding::ChunkEncoding,
    /// CRC-32 (IEEE) of its NDJSON.
    pub crc32: u32,
}

impl ChunkLink {
    /// The manifest entry this link describes (its `key` is the URL), to check fetched bytes with
    /// [`ChunkEntry::decode`](crate::layout::ChunkEntry::decode).
    pub fn entry(&self) -> crate::layout::ChunkEntry {
        crate::layout::ChunkEntry {
            key: self.url.clone(),
            records: self.records,
            bytes: self.bytes,
            crc32: self.crc32,
            encoding: self.encoding,
            stored_bytes: Some(self.stored_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overhead_of_json_as_a_string_is_what_serde_json_adds() {
        for text in [
            r#"{"a":"b"}"#,
            r#"{"path":"C:\\tmp","q":"say \"hi\""}"#,
            "{\"t\":\"tab\\there\"}",
            "plain ascii, and ünïcödé",
            "controls \u{1}\u{8}\u{c}\n\r\t\u{1f}",
            "",
        ] {
            let as_string = serde_json::to_string(text).unwrap();
            // The string's quotes are not part of the overhead.
            assert_eq!(as_string.len() - 2, text.len() + json_string_overhead(text.as_bytes()), "{text:?}");
        }
    }

    #[test]
    fn status_has_the_dashboard_field_types_and_round_trips() {
        let created = DateTime::parse_from_rfc3339("2026-11-30T10:00:00.250Z").unwrap().with_timezone(&Utc);
        let mut meta = JobMeta::new(
            JobId::new(),
            Profile::MidSectionDefect,
            3,
            vec![Domain::History],
            QueueKind::Heavy,
            created,
        );
        meta.status = JobStatus::Failed;
        meta.error = Some(JobError { code: "SOURCE_ERROR".into(), message: "the database failed".into() });
        let info = JobInfo::of(meta, created);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["progress"], "failed");
        assert_eq!(json["created_at"], 1_796_032_800.25);
        assert_eq!(json["started_at"], Value::Null);
        assert_eq!(
            (json["error"].as_str(), json["error_code"].as_str()),
            (Some("the database failed"), Some("SOURCE_ERROR"))
        );
        assert!(json["progress_detail"].is_object() && json["elapsed_seconds"].is_number());
        assert_eq!(serde_json::from_value::<JobInfo>(json).unwrap(), info);
    }

    #[test]
    fn accepted_round_trips_with_the_client_fields() {
        let job = JobId::new();
        let a = Accepted::queued(job, QueueKind::Light);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["async"], true);
        assert_eq!(json["stage"], "events");
        assert_eq!(json["stream_url"], format!("/api/trace/job/{job}/stream"));
        assert_eq!(serde_json::from_value::<Accepted>(json).unwrap(), a);
    }

    #[test]
    fn a_stream_base_makes_the_stream_url_absolute() {
        let job = JobId::new();
        let accepted = Accepted::queued(job, QueueKind::Light);
        assert_eq!(accepted.clone().with_stream_base(None), accepted);
        let remote = accepted.with_stream_base(Some("https://abc.lambda-url.eu-west-1.on.aws/"));
        assert_eq!(
            remote.stream_url,
            format!("https://abc.lambda-url.eu-west-1.on.aws/api/trace/job/{job}/stream")
        );
        assert_eq!(remote.status_url, format!("/api/trace/job/{job}"), "the rest stays relative");
    }
    #[test]
    fn inline_answer_is_written_byte_for_byte_in_domain_order() {
        let mut holds = RenderedRecords::default();
        holds.push(br#"{"a":1}"#);
        holds.push_with(|out| out.extend_from_slice(br#"{"a":"x,y"}"#));
        let answer: InlineResult<RenderedRecords, Value> = EventsAnswer::new(
            vec![
                (Domain::Holds, DomainRecords { count: holds.count(), data: holds }),
                (Domain::History, DomainRecords { count: 0, data: RenderedRecords::default() }),
            ],
            None,
        );
        let json = answer.to_json(0).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"stage":"events","results":{"holds":{"data":[{"a":1},{"a":"x,y"}],"count":2},"history":{"data":[],"count":0}},"aggregation":null}"#
        );
        let read: InlineResult = serde_json::from_slice(&json).unwrap();
        assert_eq!(read.results[0].0, Domain::Holds);
        assert_eq!(read.results[1].0, Domain::History);
        assert_eq!(read.results[0].1.data, vec![serde_json::json!({"a":1}), serde_json::json!({"a":"x,y"})]);
    }

    #[test]
    fn result_page_is_written_byte_for_byte() {
        let mut data = RenderedRecords::default();
        data.push(br#"{"x":1}"#);
        let page: ResultPage<RenderedRecords> = EventsAnswer::new(
            vec![(Domain::Jobs, DomainPage { count: data.count(), data, total: 9, offset: 8, limit: 5000 })],
            Some(serde_json::json!({"k":1})),
        );
        assert_eq!(
            std::str::from_utf8(&page.to_json(0).unwrap()).unwrap(),
            r#"{"stage":"events","results":{"jobs":{"data":[{"x":1}],"count":1,"total":9,"offset":8,"limit":5000}},"aggregation":{"k":1}}"#
        );
    }

    #[test]
    fn records_that_are_not_json_are_refused_when_written() {
        let mut data = RenderedRecords::default();
        data.push(b"{not json");
        let answer: InlineResult<RenderedRecords> =
            EventsAnswer::new(vec![(Domain::Jobs, DomainRecords { count: 1, data })], None);
        assert!(answer.to_json(0).is_err());
    }

    #[test]
    fn page_parses_and_checks_its_count() {
        let page = Page::parse(
            br#"{"stage":"events","results":{"jobs":{"data":[{"x":1}],"count":1,"total":9,"offset":8,"limit":5000}},"aggregation":{"k":1}}"#,
        )
        .unwrap();
        assert_eq!((page.domain, page.count, page.total, page.offset), (Domain::Jobs, 1, 9, 8));
        assert_eq!(page.aggregation, Some(serde_json::json!({"k":1})));
        assert!(Page::parse(
            br#"{"results":{"jobs":{"data":[],"count":1,"total":9,"offset":8,"limit":5000}},"aggregation":null}"#
        )
        .is_err());
        let back = serde_json::to_value(ResultPage::from(page)).unwrap();
        assert_eq!(back["results"]["jobs"]["offset"], 8);
    }

    #[test]
    fn the_error_body_reads_what_the_server_writes() {
        let error = crate::TraceError::TooManyRequests { retry_after_seconds: 7 };
        let written = error.body();
        let body: ErrorBody = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(body.code, "TOO_MANY_REQUESTS");
        assert_eq!(body.message, error.to_string());
        assert_eq!(body.details["retry_after_seconds"], 7);
        assert_eq!(serde_json::to_value(&body).unwrap(), written);
    }

    #[test]
    fn the_history_counts_its_jobs() {
        let list = JobList::from(Vec::new());
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"jobs":[],"count":0}"#);
    }
}

/// One message of a dead-letter queue (`GET /api/trace/admin/dlq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `heavy` or `light`: the queue it came from.
    pub queue: String,
    /// The message's id.
    pub message_id: String,
    /// Its job (absent: the message is not a job's, e.g. malformed).
    pub job_id: Option<String>,
    /// How many times it was received.
    pub receive_count: u32,
    /// Its job's status now, if the job is known.
    pub job_status: Option<crate::job::JobStatus>,
    /// The job's failure code, if it failed.
    pub error_code: Option<String>,
}

/// `GET /api/trace/admin/dlq`: the messages of both dead-letter queues (at most `limit` each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetters {
    /// The messages.
    pub messages: Vec<DeadLetter>,
}

/// `POST /api/trace/admin/dlq/redrive`: how many messages went back to their queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    /// Messages moved from the heavy dead-letter queue to the heavy queue.
    pub heavy: u64,
    /// Messages moved from the light dead-letter queue to the light queue.
    pub light: u64,
}
