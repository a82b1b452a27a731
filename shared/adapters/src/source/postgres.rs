//! PostgreSQL event source: a server-side cursor per id batch, read `DB_SLOW_FETCHMANY_SIZE` rows per
//! `FETCH` — the same bounded reads as the original `fetchmany` loop. A cursor holds one pooled
//! connection and at most one fetch of rows; nothing is prefetched.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use trace_core::config::{in_lambda, split_sslmode, Config, SslMode};
use trace_core::domain::ColumnType;
use trace_core::ports::{BackendError, EventSource, RowCursor, SourceError};
use trace_core::record::{RowBatch, RowGauge, Value};
use trace_core::{BackendTimeouts, ContainerId, Domain};

use super::catalog;
use crate::tls::{self, CaBundle};

fn pg(op: &'static str, e: impl Into<trace_core::ports::BoxError>) -> SourceError {
    SourceError::Backend(BackendError::new("postgres", op, e))
}

/// The variable of the PostgreSQL CA bundle, for messages.
const CA_VAR: &str = "DATABASE_CA_FILE";

/// How connections to the database are secured: `DATABASE_SSLMODE` and `DATABASE_CA_FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTlsOptions {
    /// `DATABASE_SSLMODE`; `None`: the URL's `sslmode=`, else the default ([`SslMode::resolve`]).
    pub sslmode: Option<SslMode>,
    /// A PEM CA bundle to trust instead of the system roots (`verify-full`).
    pub ca_file: Option<String>,
}

impl PgTlsOptions {
    /// `DATABASE_SSLMODE` and `DATABASE_CA_FILE`.
    pub fn from_config(config: &Config) -> Self {
        PgTlsOptions { sslmode: config.database_sslmode, ca_file: config.database_ca_file.clone() }
    }
}

/// A connection pool to the database; TLS as the URL's `sslmode=` says (default: `disable` in a
/// local process, `verify-full` in Lambda), the system roots trusted.
pub fn pool(url: &str, size: usize) -> Result<Pool, BackendError> {
    pool_with(url, size, &PgTlsOptions::default())
}

/// The mode in effect for `url` under `tls`, and the URL without its `sslmode=` (which tokio-postgres
/// cannot parse when it is `verify-full`).
pub fn sslmode(url: &str, tls: &PgTlsOptions) -> Result<(SslMode, String), BackendError> {
    let (url, from_url) = split_sslmode(url);
    let from_url = match from_url {
        None => None,
        Some(value) => Some(SslMode::parse(&value).ok_or_else(|| {
            BackendError::new(
                "postgres",
                "parse url",
                format!("DATABASE_URL: sslmode={value:?} is not supported: use {}", SslMode::EXPECTED),
            )
        })?),
    };
    Ok((SslMode::resolve(tls.sslmode, from_url, in_lambda()), url))
}

/// A connection pool to the database, its connections secured as `tls` says: `disable` plain TCP,
/// `require` encrypted without a certificate check, `verify-full` encrypted with the certificate
/// checked against `DATABASE_CA_FILE` (or the system roots) and the host name. Connects nothing yet
/// (see [`check`]).
pub fn pool_with(url: &str, size: usize, tls: &PgTlsOptions) -> Result<Pool, BackendError> {
    pool_bounded(url, size, tls, &BackendTimeouts::default())
}

/// [`pool_with`] with `timeouts`: a connection opens within `connect` (and a caller waits at most
/// that long for one from the pool); every statement, each fetch of a cursor included, is bounded
/// by the server's `statement_timeout` = `db_statement` (a lock or a stall fails the read, and the
/// run retries it, instead of hanging until the job's timeout).
pub fn pool_bounded(
    url: &str,
    size: usize,
    tls: &PgTlsOptions,
    timeouts: &BackendTimeouts,
) -> Result<Pool, BackendError> {
    let (mode, url) = sslmode(url, tls)?;
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| BackendError::new("postgres", "parse url", e))?;
    config.connect_timeout(timeouts.connect);
    let statement = format!("-c statement_timeout={}", timeouts.db_statement.as_millis());
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{given} {statement}"),
        _ => statement,
    };
    config.options(&options);
    // A cursor dropped mid-read (cancel, error) leaves its transaction open; every connection is
    // rolled back when it returns to the pool, so the next user gets a clean session.
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Custom("ROLLBACK".to_owned()) };
    let setup = |e| BackendError::new("postgres", "tls setup", e);
    if tls.ca_file.is_some() && mode != SslMode::VerifyFull {
        tracing::warn!(sslmode = mode.as_str(), "{CA_VAR} is set but only used with sslmode verify-full");
    }
    let manager = match mode {
        SslMode::Disable => {
            config.ssl_mode(PgSslMode::Disable);
            Manager::from_config(config, NoTls, manager_config)
        }
        SslMode::Require => {
            config.ssl_mode(PgSslMode::Require);
            let connector = MakeRustlsConnect::new(tls::unverified_config().map_err(setup)?);
            Manager::from_config(config, connector, manager_config)
        }
        SslMode::VerifyFull => {
            let ca = match &tls.ca_file {
                Some(path) => Some(CaBundle::read(CA_VAR, path).map_err(setup)?),
                None => None,
            };
            config.ssl_mode(PgSslMode::Require);
            let connector =
                MakeRustlsConnect::new(tls::verifying_config(ca.as_ref(), CA_VAR).map_err(setup)?);
            Manager::from_config(config, connector, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(timeouts.connect))
        .create_timeout(Some(timeouts.connect))
        .build()
        .map_err(|e| BackendError::new("postgres", "pool", e))
}

/// Connects once, at start-up: a refused certificate, or a server without TLS when TLS is asked
/// for, is an error naming the variable to fix. Any other failure (the database is down) is only
/// logged: the requests report it, as before.
pub async fn check(pool: &Pool, url: &str, tls: &PgTlsOptions) -> Result<(), BackendError> {
    let (mode, _) = sslmode(url, tls)?;
    // Well within Lambda's 10 s for a function's initialisation.
    let attempt = tokio::time::timeout(std::time::Duration::from_secs(5), pool.get()).await;
    let error = match attempt {
        Ok(Ok(_conn)) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => {
            tracing::warn!("the database did not answer within 5 s at start-up");
            return Ok(());
        }
    };
    if mode != SslMode::Disable {
        if let Some(refusal) = tls::certificate_refusal(&error) {
            let refused =
                tls::TlsRefused::new("PostgreSQL", host_of(url), refusal, CA_VAR, tls.ca_file.as_deref());
            return Err(BackendError::new("postgres", "connect", refused));
        }
        if chain_text(&error).contains("does not support TLS") {
            return Err(BackendError::new(
                "postgres",
                "connect",
                format!(
                    "the server at {} does not accept TLS, and sslmode is {} (DATABASE_SSLMODE or sslmode= in \
                     DATABASE_URL)",
                    host_of(url),
                    mode.as_str()
                ),
            ));
        }
    }
    tracing::warn!(error = %chain_text(&error), "the database cannot be reached at start-up");
    Ok(())
}

/// An error and its causes, in one line.
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// The host of a `postgres://` URL (no user, password, port or path), for messages.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or_default().to_owned()
}

/// Applies the schema (idempotent) and loads the reference dataset for containers `1..=n`.
///
/// The freshly loaded tables are vacuumed too, so the first reads do not pay for setting hint bits and
/// no autovacuum of the load runs later in the background (both would skew a benchmark's timings).
/// The load is not bound by the reads' `statement_timeout` (a million containers take minutes on a
/// busy machine); the connection gets its timeout back before it returns to the pool.
pub async fn seed(pool: &Pool, n: u32) -> Result<(), BackendError> {
    let conn = pool.get().await.map_err(|e| BackendError::new("postgres", "connect", e))?;
    conn.batch_execute("SET statement_timeout = 0")
        .await
        .map_err(|e| BackendError::new("postgres", "settings", e))?;
    let loaded = async {
        conn.batch_execute(catalog::SCHEMA_SQL)
            .await
            .map_err(|e| BackendError::new("postgres", "schema", e))?;
        conn.execute("SELECT trace_seed($1)", &[&(n as i32)])
            .await
            .map_err(|e| BackendError::new("postgres", "seed", e))?;
        conn.batch_execute("VACUUM (FREEZE, ANALYZE) history, materials, rejects, holds, jobs")
            .await
            .map_err(|e| BackendError::new("postgres", "vacuum", e))
    }
    .await;
    let reset = conn
        .batch_execute("RESET statement_timeout")
        .await
        .map_err(|e| BackendError::new("postgres", "settings", e));
    loaded.and(reset)
}

/// Ids per `count(*)`: a count sends no row back, so its batches can be far larger than a read's.
/// Measured on the reference dataset: history's count of 15,000 ids (297,783 rows) in one query
/// takes 57 ms (an index-only scan), 150 queries of 100 ids about 0.6 s.
pub const COUNT_IDS: usize = 10_000;

/// The PostgreSQL source.
#[derive(Clone)]
pub struct PgSource {
    pool: Pool,
    fetch_size: usize,
    id_batch_size: usize,
    gauge: Option<Arc<RowGauge>>,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("fetch_size", &self.fetch_size)
            .field("id_batch_size", &self.id_batch_size)
            .finish_non_exhaustive()
    }
}

impl PgSource {
    /// A source reading `fetch_size` rows per fetch and querying `id_batch_size` ids at a time.
    pub fn new(pool: Pool, fetch_size: usize, id_batch_size: usize) -> Self {
        PgSource {
            pool,
            fetch_size: fetch_size.max(1),
            id_batch_size: id_batch_size.clamp(1, 1000),
            gauge: None,
        }
    }

    /// Counts every fetched row on `gauge` while its batch is alive (for tests and benchmarks).
    pub fn with_gauge(mut self, gauge: Arc<RowGauge>) -> Self {
        self.gauge = Some(gauge);
        self
    }

    /// The pool (for the benchmark's raw reads and the bootstrap).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

#[async_trait]
impl EventSource for PgSource {
    async fn open(&self, domain: Domain, ids: &[ContainerId]) -> Result<Box<dyn RowCursor>, SourceError> {
        let conn = self.pool.get().await.map_err(|e| pg("connect", e))?;
        let batches = ids
            .chunks(self.id_batch_size)
            .map(|c| c.iter().map(|id| id.as_str().to_owned()).collect())
            .rev()
            .collect();
        // One cursor name per domain: the prepared `FETCH` of a cursor carries its row type.
        let cursor = format!("trace_{domain}");
        Ok(Box::new(PgCursor {
            conn,
            domain,
            declare: format!("DECLARE {cursor} NO SCROLL CURSOR FOR {}", catalog::select(domain)),
            fetch: format!("FETCH {} FROM {cursor}", self.fetch_size),
            close: format!("CLOSE {cursor}; COMMIT"),
            fetch_size: self.fetch_size,
            pending: batches,
            open: false,
            gauge: self.gauge.clone(),
        }))
    }

    /// One `count(*)` of the domain's query per [`COUNT_IDS`] ids, on one connection: no row leaves the
    /// server.
    async fn count(&self, domain: Domain, ids: &[ContainerId]) -> Result<u64, SourceError> {
        let conn = self.pool.get().await.map_err(|e| pg("connect", e))?;
        let statement = conn.prepare_cached(&catalog::count(domain)).await.map_err(|e| pg("prepare", e))?;
        let mut rows = 0u64;
        for batch in ids.chunks(COUNT_IDS) {
            let batch: Vec<&str> = batch.iter().map(ContainerId::as_str).collect();
            let row = conn.query_one(&statement, &[&batch]).await.map_err(|e| pg("count", e))?;
            let n: i64 = row.try_get(0).map_err(|e| pg("count", e))?;
            rows += n.max(0) as u64;
        }
        Ok(rows)
    }
}

struct PgCursor {
    conn: Object,
    domain: Domain,
    declare: String,
    fetch: String,
    close: String,
    fetch_size: usize,
    /// Id batches not yet queried, last first.
    pending: Vec<Vec<String>>,
    /// Whether the cursor is declared (inside a transaction).
    open: bool,
    gauge: Option<Arc<RowGauge>>,
}

impl PgCursor {
    /// Opens the cursor over `ids` and reads its first fetch in one round trip: `BEGIN`, `DECLARE`
    /// and the first `FETCH` are pipelined (sent together, answered in order). Both statements are
    /// prepared once per connection; the `FETCH` right after its cursor's first `DECLARE`, so that
    /// the server describes its rows.
    async fn declare_and_fetch(&mut self, ids: Vec<String>) -> Result<Vec<Row>, SourceError> {
        let this = &*self;
        let declare = this.conn.prepare_cached(&this.declare).await.map_err(|e| pg("prepare", e))?;
        let (_, _, rows) = tokio::try_join!(
            async { this.conn.batch_execute("BEGIN READ ONLY").await.map_err(|e| pg("begin", e)) },
            async { this.conn.execute(&declare, &[&ids]).await.map_err(|e| pg("declare", e)) },
            this.fetch(),
        )?;
        self.open = true;
        Ok(rows)
    }

    /// The next fetch (its statement is prepared at the first, while the cursor exists).
    async fn fetch(&self) -> Result<Vec<Row>, SourceError> {
        let fetch = self.conn.prepare_cached(&self.fetch).await.map_err(|e| pg("prepare", e))?;
        self.conn.query(&fetch, &[]).await.map_err(|e| pg("fetch", e))
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.open = false;
        self.conn.batch_execute(&self.close).await.map_err(|e| pg("close", e))
    }

    fn decode(&self, rows: Vec<Row>) -> Result<RowBatch, SourceError> {
        let columns = self.domain.columns();
        let mut batch = RowBatch::with_capacity(self.domain, rows.len());
        // One row's cells, reused for every row.
        let mut cells = Vec::with_capacity(columns.len());
        for row in &rows {
            if row.len() != columns.len() {
                return Err(SourceError::BadRow {
                    domain: self.domain,
                    reason: format!("{} columns, expected {}", row.len(), columns.len()),
                });
            }
            for (i, column) in columns.iter().enumerate() {
                let bad = |e: tokio_postgres::Error| SourceError::BadRow {
                    domain: self.domain,
                    reason: format!("column {}: {e}", column.name),
                };
                let value = match column.kind {
                    ColumnType::Text => row.try_get::<_, Option<String>>(i).map_err(bad)?.map(Value::Text),
                    ColumnType::Int => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Int),
                    ColumnType::Float => row.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Float),
                    ColumnType::Time => {
                        row.try_get::<_, Option<DateTime<Utc>>>(i).map_err(bad)?.map(Value::Time)
                    }
                };
                cells.push(value.unwrap_or(Value::Null));
            }
            batch.push_row(cells.drain(..));
        }
        if let Some(gauge) = &self.gauge {
            batch.count_on(gauge.clone());
        }
        drop(rows);
        Ok(batch)
    }
}

#[async_trait]
impl RowCursor for PgCursor {
    async fn next_batch(&mut self) -> Result<Option<RowBatch>, SourceError> {
        loop {
            let rows = if self.open {
                self.fetch().await?
            } else {
                match self.pending.pop() {
                    Some(ids) => self.declare_and_fetch(ids).await?,
                    None => return Ok(None),
                }
            };
            let full = rows.len() >= self.fetch_size;
            if !full {
                self.close().await?;
            }
            if !rows.is_empty() {
                return self.decode(rows).map(Some);
            }
        }
    }
}
