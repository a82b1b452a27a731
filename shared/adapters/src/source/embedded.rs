//! The embedded source: the reference dataset (`trace_dataset`) computed in process.
//!
//! It answers for any id of the form `CID-0000001` … `CID-9999999` exactly as the PostgreSQL tables
//! loaded by `trace_seed(n)` do for ids up to `n`, so the local run needs no database and tests can
//! compare the two. Other ids have no rows.

use std::sync::Arc;

use async_trait::async_trait;
use trace_core::ports::{EventSource, RowCursor, SourceError};
use trace_core::record::{RowBatch, RowGauge};
use trace_core::{ContainerId, Domain};
use trace_dataset as dataset;

/// The embedded dataset source.
#[derive(Debug, Clone)]
pub struct DatasetSource {
    fetch_size: usize,
    gauge: Option<Arc<RowGauge>>,
}

impl DatasetSource {
    /// A source handing out `fetch_size` rows per fetch.
    pub fn new(fetch_size: usize) -> Self {
        DatasetSource { fetch_size: fetch_size.max(1), gauge: None }
    }

    /// Counts every handed-out row on `gauge` while its batch is alive.
    pub fn with_gauge(mut self, gauge: Arc<RowGauge>) -> Self {
        self.gauge = Some(gauge);
        self
    }
}

#[async_trait]
impl EventSource for DatasetSource {
    async fn open(&self, domain: Domain, ids: &[ContainerId]) -> Result<Box<dyn RowCursor>, SourceError> {
        // Same order as the SQL: by container id text (ids of one width sort like their index).
        let mut indexes: Vec<u64> =
            ids.iter().filter_map(|id| dataset::parse_container_index(id.as_str())).collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes.reverse();
        Ok(Box::new(DatasetCursor {
            domain,
            fetch_size: self.fetch_size,
            pending: indexes,
            carry: RowBatch::with_capacity(domain, 0),
            carry_at: 0,
            gauge: self.gauge.clone(),
        }))
    }

    async fn count(&self, domain: Domain, ids: &[ContainerId]) -> Result<u64, SourceError> {
        let mut indexes: Vec<u64> =
            ids.iter().filter_map(|id| dataset::parse_container_index(id.as_str())).collect();
        indexes.sort_unstable();
        indexes.dedup();
        Ok(indexes.into_iter().map(|i| u64::from(dataset::row_count(domain, i))).sum())
    }
}

struct DatasetCursor {
    domain: Domain,
    fetch_size: usize,
    /// Container indexes still to generate, last first.
    pending: Vec<u64>,
    /// Rows of the current container not yet handed out.
    carry: RowBatch,
    carry_at: usize,
    gauge: Option<Arc<RowGauge>>,
}

#[async_trait]
impl RowCursor for DatasetCursor {
    async fn next_batch(&mut self) -> Result<Option<RowBatch>, SourceError> {
        let mut out = RowBatch::with_capacity(self.domain, self.fetch_size);
        while out.len() < self.fetch_size {
            if self.carry_at < self.carry.len() {
                out.push_row_from(&self.carry, self.carry_at);
                self.carry_at += 1;
                continue;
            }
            let Some(i) = self.pending.pop() else { break };
            self.carry = RowBatch::with_capacity(self.domain, dataset::row_count(self.domain, i) as usize);
            dataset::push_rows(self.domain, i, &mut self.carry);
            self.carry_at = 0;
        }
        if out.is_empty() {
            return Ok(None);
        }
        if let Some(gauge) = &self.gauge {
            out.count_on(gauge.clone());
        }
        Ok(Some(out))
    }
}
