//! The one table of domains on the SQL side: how each domain is read, and the schema it is read from.
//!
//! Every query takes the container ids as one array parameter (`$1 text[]`, at most
//! `TRACE_DB_ID_BATCH_SIZE` ids) and returns the columns of `Domain::columns()` in that order, ordered
//! by container and `seq` (the two MSD views: by container and time). Integers are cast to `int8` and
//! decimals to `float8` so that every column decodes one way.
//!
//! The MSD views read the five tables only (no view or extra object in the database): each is one
//! primary-key range read of its table per id batch, sorted in memory.

use trace_core::Domain;

/// The SQL that reads one domain.
#[derive(Debug, Clone, Copy)]
pub struct DomainSql {
    /// The domain.
    pub domain: Domain,
    /// `SELECT …` over `$1::text[]`.
    pub select: &'static str,
}

/// The workcenter group of `workcenter` as SQL: `WG-` and `nn / 5` for `WC-nn` (one to nine digits),
/// null for any other name. Tested without a regular expression: a regex costs ~7 µs a row, several
/// times the rest of the row.
macro_rules! workcenter_group {
    () => {
        "CASE WHEN workcenter LIKE 'WC-%' AND length(workcenter) BETWEEN 4 AND 12 \
                   AND translate(substr(workcenter, 4), '0123456789', '') = '' \
              THEN 'WG-' || (substr(workcenter, 4)::int / 5) END AS workcenter_group"
    };
}

/// Every domain's query, in `Domain::ALL` order.
pub const DOMAINS: [DomainSql; 7] = [
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
    // Per container and (workcenter, equipment) the latest track-in (ties: the highest seq), rows
    // without equipment or track-in time left out; by container, then track-in time.
    DomainSql {
        domain: Domain::UpstreamHistory,
        select: concat!(
            "SELECT container_id, workcenter, ",
            workcenter_group!(),
            ", equipment, step, move_in, qty_in::int8 \
             FROM (SELECT DISTINCT ON (container_id, workcenter, equipment) \
                          container_id, seq, workcenter, equipment, step, move_in, qty_in \
                   FROM history WHERE container_id = ANY($1::text[]) \
                     AND equipment IS NOT NULL AND move_in IS NOT NULL \
                   ORDER BY container_id, workcenter, equipment, move_in DESC, seq DESC) AS latest \
             ORDER BY container_id, move_in, seq"
        ),
    },
    // Each reject; the table has no equipment (`(NA)`), an empty reason reads `(NA)` too.
    DomainSql {
        domain: Domain::DownstreamRejects,
        select: concat!(
            "SELECT container_id, workcenter, ",
            workcenter_group!(),
            ", coalesce(nullif(reason_code, ''), '(NA)') AS loss_reason, '(NA)' AS equipment, \
             qty::int8 AS reject_total_qty, rejected_at AS txn_at \
             FROM rejects WHERE container_id = ANY($1::text[]) ORDER BY container_id, rejected_at, seq"
        ),
    },
];

/// The query of `domain`.
pub fn select(domain: Domain) -> &'static str {
    DOMAINS.iter().find(|d| d.domain == domain).map(|d| d.select).unwrap_or_default()
}

/// How many rows the query of `domain` gives (over the same `$1::text[]`): the query without its
/// last `ORDER BY` (the outer one: an inner one, as in a `DISTINCT ON`, stays), counted.
pub fn count(domain: Domain) -> String {
    let select = select(domain);
    let unordered = select.rsplit_once(" ORDER BY ").map_or(select, |(query, _)| query);
    format!("SELECT count(*)::int8 FROM ({unordered}) AS counted")
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

    /// The names of a select list's items: `a, b::int8, f(x, y) AS c` → `a, b, c`.
    fn select_names(sql: &str) -> Vec<String> {
        let list = sql.strip_prefix("SELECT ").unwrap();
        let (mut names, mut depth, mut item) = (Vec::new(), 0, String::new());
        for ch in list.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 && (ch == ',' || item.ends_with(" FROM")) {
                if item.ends_with(" FROM") {
                    item.truncate(item.len() - " FROM".len());
                    names.push(item.clone());
                    break;
                }
                names.push(std::mem::take(&mut item));
                continue;
            }
            item.push(ch);
        }
        names
            .iter()
            .map(|item| {
                let item = item.trim();
                let name = item.rsplit(" AS ").next().unwrap();
                name.split("::").next().unwrap().trim().to_owned()
            })
            .collect()
    }

    #[test]
    fn one_query_per_domain_in_order() {
        let domains: Vec<_> = DOMAINS.iter().map(|d| d.domain).collect();
        assert_eq!(domains, Domain::ALL.to_vec());
        for d in Domain::ALL {
            let sql = select(d);
            let table = match d {
                Domain::UpstreamHistory => Domain::History,
                Domain::DownstreamRejects => Domain::Rejects,
                table => table,
            };
            assert!(sql.contains(&format!("FROM {table} ")), "{d}");
            assert!(sql.contains("WHERE container_id = ANY($1::text[])"), "{d}");
            // Column names in the select list match the core's record columns, in order.
            let expected: Vec<_> = d.columns().iter().map(|c| c.name).collect();
            assert_eq!(select_names(sql), expected, "{d}");
        }
    }
}
