//! The Redis connection: one [`ConnectionManager`] per process, shared by the job store, the rate
//! limiter and the backfill markers (it reconnects by itself), and the error of a failed command.

use redis::aio::ConnectionManager;
use trace_core::ports::BackendError;

/// Connects to the Redis at `url` (`redis://` or `rediss://`).
pub async fn connect(url: &str) -> Result<ConnectionManager, BackendError> {
    let client = redis::Client::open(url).map_err(failed("open"))?;
    ConnectionManager::new(client).await.map_err(failed("connect"))
}

/// Turns a Redis error of operation `op` into a [`BackendError`].
pub fn failed(op: &'static str) -> impl Fn(redis::RedisError) -> BackendError {
    move |e| BackendError::new("redis", op, e)
}
