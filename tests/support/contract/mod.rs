//! One contract suite per port. Each `run_*` function takes an implementation and checks the
//! behaviour every implementation must share, so the local stand-ins cannot drift from the real
//! services.

pub mod jobs;
pub mod queue;
pub mod source;
pub mod store;
