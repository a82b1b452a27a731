//! Markers in process memory (local run, tests), expiring like the Redis ones. Times come from
//! tokio's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use trace_core::ports::{BackendError, BackfillMarkers, Claim};

/// A marker: the job id (`None` while pending) and when it expires.
type Marker = (Option<String>, Instant);

/// When a marker set now for `ttl` expires: whole seconds, at least one, as in Redis (`EX`).
fn expiry(ttl: Duration) -> Instant {
    Instant::now() + Duration::from_secs(ttl.as_secs().max(1))
}

/// Markers in this process.
#[derive(Debug, Default)]
pub struct MemoryMarkers {
    markers: Mutex<HashMap<(String, usize), Marker>>,
}

impl MemoryMarkers {
    /// No markers.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_markers<T>(&self, f: impl FnOnce(&mut HashMap<(String, usize), Marker>) -> T) -> T {
        let mut markers = self.markers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        markers.retain(|_, (_, expires)| now < *expires);
        f(&mut markers)
    }
}

#[async_trait]
impl BackfillMarkers for MemoryMarkers {
    async fn claim(&self, window: &str, batch: usize, ttl: Duration) -> Result<Claim, BackendError> {
        Ok(self.with_markers(|markers| match markers.get(&(window.to_owned(), batch)) {
            Some((job_id, _)) => Claim::Taken { job_id: job_id.clone() },
            None => {
                markers.insert((window.to_owned(), batch), (None, expiry(ttl)));
                Claim::Won
            }
        }))
    }

    async fn confirm(
        &self,
        window: &str,
        batch: usize,
        job_id: &str,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let marker = (Some(job_id.to_owned()), expiry(ttl));
        self.with_markers(|markers| markers.insert((window.to_owned(), batch), marker));
        Ok(())
    }

    async fn release(&self, window: &str, batch: usize) -> Result<(), BackendError> {
        self.with_markers(|markers| markers.remove(&(window.to_owned(), batch)));
        Ok(())
    }
}
