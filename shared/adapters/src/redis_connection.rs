//! The Redis connection: one per process, shared by the job store, the rate limiter and the backfill
//! markers, and the error of a failed command.
//!
//! [`RedisConnection`] is a single node (a [`ConnectionManager`], which reconnects by itself) or a
//! Redis Cluster (a [`ClusterConnection`], which follows slot moves; ElastiCache Serverless is always
//! clustered); both speak [`ConnectionLike`], so the adapters do not care which. `rediss://` URLs
//! connect over TLS (rustls, server name checked) trusting the system roots or `REDIS_TLS_CA_FILE`.
//!
//! The connection is made at start-up, so that a wrong CA or host name stops the process there, with
//! an error naming the variable to fix. Never logs or returns the URL (it may hold a password).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};
use trace_core::config::Config;
use trace_core::ports::BackendError;
use trace_core::BackendTimeouts;

use crate::tls::{self, CaBundle};

/// The variable of the Redis CA bundle, for messages.
const CA_VAR: &str = "REDIS_TLS_CA_FILE";

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://` or `rediss://` URL (of one node of a cluster).
    pub url: String,
    /// A PEM CA bundle to trust instead of the system roots (`rediss://` only).
    pub ca_file: Option<String>,
    /// Whether the server is a Redis Cluster.
    pub cluster: bool,
    /// Connect and reply timeouts (`connect`, `redis_response`).
    pub timeouts: BackendTimeouts,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("host", &host_of(&self.url))
            .field("tls", &self.tls())
            .field("ca_file", &self.ca_file)
            .field("cluster", &self.cluster)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl RedisOptions {
    /// A single node at `url`, the system roots for TLS.
    pub fn new(url: &str) -> Self {
        RedisOptions {
            url: url.to_owned(),
            ca_file: None,
            cluster: false,
            timeouts: BackendTimeouts::default(),
        }
    }

    /// Trusts the CAs of the PEM bundle at `path`.
    pub fn with_ca_file(mut self, path: &str) -> Self {
        self.ca_file = Some(path.to_owned());
        self
    }

    /// Talks to a Redis Cluster.
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// `REDIS_URL`, `REDIS_TLS_CA_FILE`, `REDIS_CLUSTER`; `None` when Redis is not configured.
    pub fn from_config(config: &Config) -> Option<Self> {
        let url = config.redis_url.as_deref()?;
        Some(RedisOptions {
            url: url.to_owned(),
            ca_file: config.redis_tls_ca_file.clone(),
            cluster: config.redis_cluster,
            timeouts: config.timeouts,
        })
    }

    /// Whether the URL asks for TLS.
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone (clones share it).
#[derive(Clone)]
pub enum RedisConnection {
    /// One node; reconnects by itself.
    Single(ConnectionManager),
    /// A cluster; routes each command to its slot's node.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to the single Redis at `url` (`redis://` or `rediss://` with the system roots).
pub async fn connect(url: &str) -> Result<RedisConnection, BackendError> {
    connect_with(&RedisOptions::new(url)).await
}

/// Connects as `options` say; fails when the server cannot be reached or its certificate is refused
/// (the error then names `REDIS_TLS_CA_FILE` and what the certificate failed).
pub async fn connect_with(options: &RedisOptions) -> Result<RedisConnection, BackendError> {
    let ca = match &options.ca_file {
        Some(path) => {
            Some(CaBundle::read(CA_VAR, path).map_err(|e| BackendError::new("redis", "read CA bundle", e))?)
        }
        None => None,
    };
    if options.tls() {
        tls::install_provider();
    }
    let certs = || TlsCertificates { client_tls: None, root_cert: ca.as_ref().map(|b| b.pem.clone()) };
    let refused = |e: redis::RedisError| match options.tls().then(|| tls::certificate_refusal(&e)).flatten() {
        Some(refusal) => BackendError::new(
            "redis",
            "connect",
            tls::TlsRefused::new("Redis", host_of(&options.url), refusal, CA_VAR, options.ca_file.as_deref()),
        ),
        None => failed("connect")(e),
    };
    if options.cluster {
        let mut builder = ClusterClientBuilder::new(vec![options.url.as_str()])
            .connection_timeout(options.timeouts.connect)
            .response_timeout(options.timeouts.redis_response);
        if ca.is_some() {
            builder = builder.certs(certs());
        }
        let client = builder.build().map_err(failed("open"))?;
        let conn = client.get_async_connection().await.map_err(refused)?;
        return Ok(RedisConnection::Cluster(conn));
    }
    let client = if ca.is_some() {
        redis::Client::build_with_tls(options.url.as_str(), certs())
    } else {
        redis::Client::open(options.url.as_str())
    }
    .map_err(failed("open"))?;
    // One plain connection first: the manager retries a failing connect for seconds, a refused
    // certificate should stop start-up at once.
    let probe_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.timeouts.connect))
        .set_response_timeout(Some(options.timeouts.redis_response));
    let mut probe =
        client.get_multiplexed_async_connection_with_config(&probe_config).await.map_err(refused)?;
    let _: String = redis::cmd("PING").query_async(&mut probe).await.map_err(failed("ping"))?;
    drop(probe);
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.timeouts.connect))
        .set_response_timeout(Some(options.timeouts.redis_response));
    let manager = ConnectionManager::new_with_config(client, manager_config).await.map_err(refused)?;
    Ok(RedisConnection::Single(manager))
}

/// The host of a URL (no user, password, port or path), for messages.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => host_port.split(':').next().unwrap_or_default().to_owned(),
    }
}

/// Turns a Redis error of operation `op` into a [`BackendError`].
pub fn failed(op: &'static str) -> impl Fn(redis::RedisError) -> BackendError {
    move |e| BackendError::new("redis", op, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_told_without_the_password() {
        assert_eq!(host_of("rediss://user:secret@cache.example.com:6379/0"), "cache.example.com");
        assert_eq!(host_of("redis://127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("rediss://[::1]:6380"), "::1");
        let options = RedisOptions::new("rediss://:secret@cache:6379").with_cluster(true);
        assert!(!format!("{options:?}").contains("secret"));
    }

    #[test]
    fn options_from_the_configuration() {
        let vars = [
            ("REDIS_URL", "rediss://cache:6379"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
            ("REDIS_CLUSTER", "true"),
        ];
        let config =
            Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
        let options = RedisOptions::from_config(&config).unwrap();
        assert_eq!(
            options,
            RedisOptions::new("rediss://cache:6379").with_ca_file("/ca.pem").with_cluster(true)
        );
        assert!(options.tls());
        assert_eq!(RedisOptions::from_config(&Config::from_lookup(|_| None).unwrap()), None);
    }

    #[tokio::test]
    async fn a_bad_ca_file_fails_before_connecting_naming_the_variable() {
        let options = RedisOptions::new("rediss://127.0.0.1:1").with_ca_file("/nonexistent/ca.pem");
        let Err(e) = connect_with(&options).await else { panic!("connected with a missing CA file") };
        assert!(e.to_string().contains("REDIS_TLS_CA_FILE=/nonexistent/ca.pem"), "{e}");
    }
}
