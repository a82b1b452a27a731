//! Event sources: [`postgres::PgSource`] (PostgreSQL, server-side cursors, fetch by fetch) and
//! [`embedded::DatasetSource`] (the reference dataset computed in process, so the local run needs no
//! database). Both implement [`trace_core::ports::EventSource`]. The SQL of each domain is in
//! [`catalog`], one table.

pub mod catalog;
pub mod embedded;
pub mod postgres;
