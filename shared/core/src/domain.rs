//! The trace domains and the shape of their records.
//!
//! This is the one table of domains on the core side: which domains exist, in which order they are
//! returned, and which columns a record of each domain carries. The SQL that reads a domain lives with
//! the PostgreSQL adapter; everything else (validation, chunking, aggregation) is driven from here.
//!
//! Five domains are tables ([`Domain::BASE`]); two more are the dashboard's MSD views over them
//! ([`Domain::UpstreamHistory`] over `history`, [`Domain::DownstreamRejects`] over `rejects`), with a
//! workcenter group beside the workcenter and without `seq`.

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
    /// The MSD page's upstream view of `history`: per container, the latest track-in at each
    /// (workcenter, equipment), with the workcenter group.
    UpstreamHistory,
    /// The MSD page's downstream view of `rejects`: each reject with the workcenter group, its loss
    /// reason and total quantity.
    DownstreamRejects,
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
const UPSTREAM_HISTORY: &[Column] = &[
    col("container_id", Text),
    col("workcenter", Text),
    // Null for a workcenter outside the reference naming (`WC-nn`).
    nullable("workcenter_group", Text),
    col("equipment", Text),
    col("step", Text),
    col("move_in", Time),
    col("qty_in", Int),
];
const DOWNSTREAM_REJECTS: &[Column] = &[
    col("container_id", Text),
    col("workcenter", Text),
    // Null for a workcenter outside the reference naming (`WC-nn`).
    nullable("workcenter_group", Text),
    col("loss_reason", Text),
    col("equipment", Text),
    col("reject_total_qty", Int),
    col("txn_at", Time),
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
    /// Every domain, in result order: the five tables, then the two MSD views.
    pub const ALL: [Domain; 7] = [
        Domain::History,
        Domain::Materials,
        Domain::Rejects,
        Domain::Holds,
        Domain::Jobs,
        Domain::UpstreamHistory,
        Domain::DownstreamRejects,
    ];

    /// The five table domains, in result order: the domains of a request that names none (MSD aside).
    pub const BASE: [Domain; 5] =
        [Domain::History, Domain::Materials, Domain::Rejects, Domain::Holds, Domain::Jobs];

    /// The domains of an MSD request that names none: the dashboard's backward tracing.
    pub const MSD_DEFAULT: [Domain; 2] = [Domain::UpstreamHistory, Domain::Materials];

    /// The wire name (`"history"`, …), also the table name and the chunk folder.
    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::History => "history",
            Domain::Materials => "materials",
            Domain::Rejects => "rejects",
            Domain::Holds => "holds",
            Domain::Jobs => "jobs",
            Domain::UpstreamHistory => "upstream_history",
            Domain::DownstreamRejects => "downstream_rejects",
        }
    }

    /// The columns of this domain's records, in the order sources produce them.
    /// The first is always `container_id`; in the table domains the second is `seq`.
    pub const fn columns(self) -> &'static [Column] {
        match self {
            Domain::History => HISTORY,
            Domain::Materials => MATERIALS,
            Domain::Rejects => REJECTS,
            Domain::Holds => HOLDS,
            Domain::Jobs => JOBS,
            Domain::UpstreamHistory => UPSTREAM_HISTORY,
            Domain::DownstreamRejects => DOWNSTREAM_REJECTS,
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

/// The wire names of [`Domain::ALL`], comma-separated, for error messages.
pub const KNOWN_NAMES: &str =
    "history, materials, rejects, holds, jobs, upstream_history, downstream_rejects";

/// A domain name that is not one of [`Domain::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown domain {0:?}; known domains are {known}", known = KNOWN_NAMES)]
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
        }
        for d in Domain::BASE {
            assert_eq!(d.columns()[1].name, "seq");
        }
    }

    #[test]
    fn the_unknown_domain_message_lists_every_domain() {
        let names: Vec<&str> = Domain::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(KNOWN_NAMES, names.join(", "));
        let message = UnknownDomain("x".into()).to_string();
        assert!(message.ends_with(&format!("known domains are {KNOWN_NAMES}")), "{message}");
    }

    #[test]
    fn base_and_msd_default_are_known_domains() {
        assert_eq!(Domain::BASE, Domain::ALL[..5]);
        assert!(Domain::MSD_DEFAULT.iter().all(|d| Domain::ALL.contains(d)));
        assert_eq!("upstream_history".parse(), Ok(Domain::UpstreamHistory));
        assert_eq!("downstream_rejects".parse(), Ok(Domain::DownstreamRejects));
    }
}
