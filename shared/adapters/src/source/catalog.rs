//! The one table of domains on the SQL side: how each domain is read, and the schema it is read from.
//!
//! Every query takes the container ids as one array parameter (`$1 text[]`, at most
//! `TRACE_DB_ID_BATCH_SIZE` ids) and returns the columns of `Domain::columns()` in that order, ordered
//! by container and `seq`. Integers are cast to `int8` and decimals to `float8` so that every column
//! decodes one way.

use trace_core::Domain;

/// The SQL that reads one domain.
#[derive(Debug, Clone, Copy)]
pub struct DomainSql {
    /// The domain.
    pub domain: Domain,
    /// `SELECT …` over `$1::text[]`.
    pub select: &'static str,
}

/// Every domain's query, in `Domain::ALL` order.
pub const DOMAINS: [DomainSql; 5] = [
    DomainSql {
        domain: Domain::History,
        select: "SELECT container_id, seq::int8, workcenter, step, equipment, qty_in::int8, qty_out::int8, move_in, move_out \
                 FROM history WHERE container_id = ANY($1::text[]) ORDER BY container_id, seq",
    },
    DomainSql {
        domain: Domain::Materials,
        select: "SELECT container_id, seq::int8, material_lot, part_no, qty::float8, consumed_at \
                 FROM materials WHERE container_id = ANY($1::text[]) ORDER BY container_id, seq",
    },
    DomainSql {
        domain: Domain::Rejects,
        select: "SELECT container_id, seq::int8, workcenter, reason_code, qty::int8, rejected_at \
                 FROM rejects WHERE container_id = ANY($1::text[]) ORDER BY container_id, seq",
    },
    DomainSql {
        domain: Domain::Holds,
        select: "SELECT container_id, seq::int8, hold_reason, hold_at, release_at \
                 FROM holds WHERE container_id = ANY($1::text[]) ORDER BY container_id, seq",
    },
    DomainSql {
        domain: Domain::Jobs,
        select: "SELECT container_id, seq::int8, equipment, job_id, recipe, start_at, end_at \
                 FROM jobs WHERE container_id = ANY($1::text[]) ORDER BY container_id, seq",
    },
];

/// The query of `domain`.
pub fn select(domain: Domain) -> &'static str {
    DOMAINS.iter().find(|d| d.domain == domain).map(|d| d.select).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Backfill (not a domain query): which containers changed in a time window.
// ---------------------------------------------------------------------------------------------

/// The containers that changed in `[$1, $2)` (`timestamptz`), one row each (`container_id text`),
/// ordered by id: those with a history row that moved out (`move_out`) in the window. The reference
/// tables have no update time; a move-out is the event that adds to a container's trace.
///
/// Without an index on `history (move_out)` this is one sequential scan of `history` per window
/// (~2.5 M rows for 114,000 containers); a production database should have that index.
pub const CHANGED_IDS: &str = "SELECT DISTINCT container_id FROM history \
                               WHERE move_out >= $1 AND move_out < $2 ORDER BY container_id";

/// Tables, the `trace_mix` hash and the `trace_seed(n)` generator of the reference dataset.
pub const SCHEMA_SQL: &str = include_str!("../../sql/schema.sql");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_query_per_domain_in_order() {
        let domains: Vec<_> = DOMAINS.iter().map(|d| d.domain).collect();
        assert_eq!(domains, Domain::ALL.to_vec());
        for d in Domain::ALL {
            let sql = select(d);
            assert!(sql.contains(&format!("FROM {d} ")), "{d}");
            // Column names in the select list match the core's record columns, in order.
            let list = sql.trim_start_matches("SELECT ").split(" FROM ").next().unwrap();
            let names: Vec<_> = list.split(", ").map(|c| c.split("::").next().unwrap().trim()).collect();
            let expected: Vec<_> = d.columns().iter().map(|c| c.name).collect();
            assert_eq!(names, expected, "{d}");
        }
    }
}
