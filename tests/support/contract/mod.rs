//! One contract suite per port. Each function takes an implementation and checks one property every
//! implementation must have, so the local stand-ins cannot drift from the real services.

pub mod changed;
pub mod jobs;
pub mod markers;
pub mod queue;
pub mod ratelimit;
pub mod secrets;
pub mod source;
pub mod store;
