//! The two worker pools a job can be queued on. A leaf of the crate's vocabulary.

use serde::{Deserialize, Serialize};

/// The two worker pools. Heavy workers have more memory and a longer timeout; light ones keep small
/// jobs moving while heavy ones run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// Large or MSD jobs.
    Heavy,
    /// Everything else.
    Light,
}

impl QueueKind {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueKind::Heavy => "heavy",
            QueueKind::Light => "light",
        }
    }
}
