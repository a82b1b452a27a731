//! The trace domains and the shape of their records.
//!
//! This is the one table of domains on the core side: which domains exist, in which order they are
//! returned, and which columns a record of each domain carries. The SQL that reads a domain lives with
//! the PostgreSQL adapter; everything else (validation, chunking, aggregation) is driven from here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of event a trace fetches for each container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Step history: move-in / move-out per workcenter step.
    History,
    /// Material lots consumed.
    Materials,
    /// Rejected quantities with a reason code.
    Rejects,
    /// Holds placed on the container.
    Holds,
    /// Equipment jobs the container ran through.
    Jobs,
}

/// The type of one column of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit integer.
    Int,
    /// Decimal quantity, carried as a 64-bit float.
    Float,
    /// Instant in UTC, rendered as RFC 3339.
    Time,
}

/// One column of a domain's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Field name in the JSON record.
    pub name: &'static str,
    /// Its type.
    pub kind: ColumnType,
    /// Whether the value may be null.
    pub nullable: bool,
}

const fn col(name: &'static str, kind: ColumnType) -> Column {
    Column { name, kind, nullable: false }
}

const fn nullable(name: &'static str, kind: ColumnType) -> Column {
    Column { name, kind, nullable: true }
}

use ColumnType::{Float, Int, Text, Time};

const HISTORY: &[Column] = &[
    col("container_id", Text),
    col("seq", Int),
    col("workcenter", Text),
    col("step", Text),
    col("equipment", Text),
    col("qty_in", Int),
    col("qty_out", Int),
    col("move_in", Time),
    col("move_out", Time),
];
const MATERIALS: &[Column] = &[
    col("container_id", Text),
    col("seq", Int),
    col("material_lot", Text),
    col("part_no", Text),
    col("qty", Float),
    col("consumed_at", Time),
];
const REJECTS: &[Column] = &[
    col("container_id", Text),
    col("seq", Int),
    col("workcenter", Text),
    col("reason_code", Text),
    col("qty", Int),
    col("rejected_at", Time),
];
const HOLDS: &[Column] = &[
    col("container_id", Text),
    col("seq", Int),
    col("hold_reason", Text),
    col("hold_at", Time),
    nullable("release_at", Time),
];
const JOBS: &[Column] = &[
    col("container_id", Text),
    col("seq", Int),
    col("equipment", Text),
    col("job_id", Text),
    col("recipe", Text),
    col("start_at", Time),
    col("end_at", Time),
];

impl Domain {
    /// Every domain, in result order (the order of a request that names no domains).
    pub const ALL: [Domain; 5] =
        [Domain::History, Domain::Materials, Domain::Rejects, Domain::Holds, Domain::Jobs];

    /// The wire name (`"history"`, …), also the table name and the chunk folder.
    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::History => "history",
            Domain::Materials => "materials",
            Domain::Rejects => "rejects",
            Domain::Holds => "holds",
            Domain::Jobs => "jobs",
        }
    }

    /// The columns of this domain's records, in the order sources produce them.
    /// The first two are always `container_id` and `seq`.
    pub const fn columns(self) -> &'static [Column] {
        match self {
            Domain::History => HISTORY,
            Domain::Materials => MATERIALS,
            Domain::Rejects => REJECTS,
            Domain::Holds => HOLDS,
            Domain::Jobs => JOBS,
        }
    }

    /// Position of a named column, if the domain has it.
    pub fn column_index(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name == name)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain name that is not one of [`Domain::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown domain {0:?}")]
pub struct UnknownDomain(pub String);

impl FromStr for Domain {
    type Err = UnknownDomain;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| UnknownDomain(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Domain::ALL {
            assert_eq!(d.as_str().parse::<Domain>().unwrap(), d);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        assert_eq!("History".parse::<Domain>(), Err(UnknownDomain("History".into())));
    }

    #[test]
    fn every_domain_starts_with_the_key_columns() {
        for d in Domain::ALL {
            assert_eq!(d.columns()[0].name, "container_id");
            assert_eq!(d.columns()[1].name, "seq");
        }
    }
}
