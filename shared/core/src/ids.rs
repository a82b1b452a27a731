//! Identifiers that are valid by construction: [`ContainerId`] and [`JobId`].
//!
//! Parse once at the edge; everything past it takes these types and never re-checks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest container id accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 64;

/// A container (production lot) id: 1 to 64 characters from `A-Z a-z 0-9 - _ . : /`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ContainerId(String);

/// Why a string is not a container id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContainerId {
    /// The empty string.
    #[error("container id is empty")]
    Empty,
    /// More than [`MAX_CONTAINER_ID_LEN`] characters.
    #[error("container id is longer than {MAX_CONTAINER_ID_LEN} characters")]
    TooLong,
    /// A character outside the allowed set.
    #[error("container id contains {0:?}; allowed are letters, digits and - _ . : /")]
    BadChar(char),
}

impl ContainerId {
    /// Checks `s` and wraps it.
    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidContainerId> {
        let s = s.into();
        if s.is_empty() {
            return Err(InvalidContainerId::Empty);
        }
        if s.len() > MAX_CONTAINER_ID_LEN {
            return Err(InvalidContainerId::TooLong);
        }
        if let Some(c) =
            s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
        {
            return Err(InvalidContainerId::BadChar(c));
        }
        Ok(ContainerId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ContainerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ContainerId::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job id: a random UUID v4, written lower-case and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job id {0:?}: expected a UUID like 3f2b8c1e-0d4a-4c55-9a8e-2b7f6c1d9e00")]
pub struct InvalidJobId(pub String);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        JobId(Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form: ids appear in URLs and object keys, one spelling each.
        if s.len() != 36 {
            return Err(InvalidJobId(s.chars().take(64).collect()));
        }
        Uuid::parse_str(s).map(JobId).map_err(|_| InvalidJobId(s.to_owned()))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(ContainerId::parse("CID-0000001").is_ok());
        assert!(ContainerId::parse("lot_7.a:b/c").is_ok());
        assert_eq!(ContainerId::parse(""), Err(InvalidContainerId::Empty));
        assert_eq!(ContainerId::parse("a b"), Err(InvalidContainerId::BadChar(' ')));
        assert_eq!(ContainerId::parse("x".repeat(65)), Err(InvalidContainerId::TooLong));
        assert!(ContainerId::parse("x".repeat(64)).is_ok());
        assert!(serde_json::from_str::<ContainerId>("\"a'b\"").is_err());
    }

    #[test]
    fn job_ids() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
        assert!("3f2b8c1e0d4a4c559a8e2b7f6c1d9e00".parse::<JobId>().is_err());
        assert!("3f2b8c1e-0d4a-4c55-9a8e-2b7f6c1d9e00".parse::<JobId>().is_ok());
    }
}
