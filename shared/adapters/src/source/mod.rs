//! Event sources: [`postgres::PgSource`] (PostgreSQL, server-side cursors, fetch by fetch) and
//! [`embedded::DatasetSource`] (the reference dataset computed in process, so the local run needs no
//! database). Both implement [`trace_core::ports::EventSource`]. The SQL of each domain is in
//! [`catalog`], one table. [`changed`] finds the containers changed in a time window, in either.

pub mod catalog;
pub mod changed;
pub mod embedded;
pub mod postgres;
