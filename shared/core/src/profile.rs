//! The request profile: which shape a trace has and which aggregation it gets. A leaf of the crate's
//! vocabulary (no imports from other modules), so every layer can name it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a trace is shaped and which aggregation it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// The query tool: events per container (the default).
    QueryTool,
    /// The query tool, reverse direction (from materials to containers).
    QueryToolReverse,
    /// Mid-section defect analysis (`mid_section_defect`, alias `msd`): adds the reject aggregation and
    /// bypasses the id limit.
    MidSectionDefect,
}

impl Profile {
    /// The canonical wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::QueryTool => "query_tool",
            Profile::QueryToolReverse => "query_tool_reverse",
            Profile::MidSectionDefect => "mid_section_defect",
        }
    }

    /// Whether this is the MSD profile.
    pub const fn is_msd(self) -> bool {
        matches!(self, Profile::MidSectionDefect)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "query_tool" => Ok(Profile::QueryTool),
            "query_tool_reverse" => Ok(Profile::QueryToolReverse),
            "mid_section_defect" | "msd" => Ok(Profile::MidSectionDefect),
            other => Err(UnknownProfile(other.chars().take(64).collect())),
        }
    }
}

/// A profile name that is not one of the known ones (at most its first 64 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}; known profiles are query_tool, query_tool_reverse, mid_section_defect (msd)")]
pub struct UnknownProfile(pub String);
