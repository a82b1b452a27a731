//! Scheduled backfill: queue trace jobs for the containers that changed in a time window, so their
//! results are ready before anyone asks. [`window`] says which window a run covers, [`run`] queues
//! its jobs; the Lambda glue is [`serve::backfill`](crate::serve::backfill).
//!
//! - **Window**: `[end - length, end)`, where `end` is the scheduled event's `time` truncated to a
//!   multiple of `TRACE_BACKFILL_WINDOW_SECONDS` (counted from the Unix epoch). A schedule whose period
//!   equals the length covers every window once, whatever minute it fires at.
//! - **Change**: the reference tables have no update time; a container changed in the window when one
//!   of its history rows moved out (`move_out`) in it (the [`ChangedIds`](trace_core::ports::ChangedIds)
//!   port: PostgreSQL, or the same rule over the embedded dataset).
//! - **Batches**: the changed ids, sorted and de-duplicated, split into the fewest batches of at most
//!   `TRACE_EVENTS_CID_LIMIT` ids, of equal sizes (±1). Each batch is one job a client could have
//!   submitted (`query_tool`, every domain, tagged `params.backfill`), created by
//!   [`submit::enqueue`](crate::submit::enqueue) on the queue the admission rule picks (heavy above
//!   `TRACE_HEAVY_CID_THRESHOLD` ids), owned by the system principal [`OWNER`] (admins see them).
//! - **Idempotence**: a marker per (window, batch) (the
//!   [`BackfillMarkers`](trace_core::ports::BackfillMarkers) port; `{prefix}:backfill:{start}/{end}:{batch}`
//!   in Redis), claimed before the job is created (expiring after [`CLAIM_TTL`], the longest a
//!   Lambda run lives), then set to the job id for `TRACE_JOB_TTL_SECONDS`. A repeated or concurrent
//!   run of the same window finds the batch marked and creates nothing; a batch whose job could not be
//!   queued is unmarked, so the retry of a failed run queues exactly the missing batches. A run that
//!   dies between claim and job leaves its claim for [`CLAIM_TTL`]; after that, running the window again
//!   (`backfill --window-end …`) queues that batch. Without Redis (local run) the markers live in the
//!   process.

pub mod run;
pub mod window;

pub use run::{split, Backfill, BackfillError, BatchReport, Outcome, Report, CLAIM_TTL, OWNER};
pub use window::Window;
