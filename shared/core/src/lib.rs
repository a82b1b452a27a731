//! Domain core of the trace job system.
//!
//! Everything here is pure: no I/O, no AWS, Redis or SQL types. It holds the request and its
//! validation ([`request`]), admission ([`admission`]), the job state machine ([`job`]), the result
//! layout and manifest ([`layout`]), the NDJSON line types ([`ndjson`]), the MSD aggregation
//! ([`aggregation`]), configuration ([`config`]) and the ports adapters implement ([`ports`]).

pub mod admission;
pub mod aggregation;
pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod config;
pub mod domain;
pub mod encoding;
pub mod error;
pub mod ids;
pub mod job;
pub mod layout;
pub mod message;
pub mod ndjson;
pub mod paging;
pub mod ports;
pub mod profile;
pub mod queue;
pub mod record;
pub mod request;
pub mod stream_size;

pub use admission::Admission;
pub use auth::Principal;
pub use config::{BackendTimeouts, Config};
pub use domain::Domain;
pub use encoding::ChunkEncoding;
pub use error::TraceError;
pub use ids::{ContainerId, JobId};
pub use job::{JobMeta, JobStatus};
pub use profile::Profile;
pub use queue::QueueKind;
pub use request::TraceRequest;
