//! Figures computed directly from the database, independently of the system under test: row counts,
//! an order-independent checksum of every record, and the MSD aggregation as a SQL `GROUP BY`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::DateTime;
use futures::{pin_mut, TryStreamExt};
use serde_json::Value;
use trace_core::domain::ColumnType;
use trace_core::Domain;

/// Count and order-independent hashes of a set of records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Records.
    pub count: u64,
    /// Wrapping sum of record hashes.
    pub sum: u64,
    /// Xor of record hashes.
    pub xor: u64,
}

impl Digest {
    /// Adds one record, as its canonical text ([`canonical_json`]).
    pub fn add(&mut self, canonical: &str) {
        let mut h = DefaultHasher::new();
        canonical.hash(&mut h);
        let h = h.finish();
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
        self.xor ^= h;
    }
}

/// The canonical text of a record as streamed (JSON): domain, then each column in order — times as
/// Unix seconds, floats in shortest form, null as `∅`.
pub fn canonical_json(domain: Domain, record: &Value) -> String {
    let mut out = domain.as_str().to_owned();
    for column in domain.columns() {
        out.push('|');
        let v = &record[column.name];
        match (column.kind, v) {
            (_, Value::Null) => out.push('∅'),
            (ColumnType::Time, Value::String(s)) => {
                let t = DateTime::parse_from_rfc3339(s)
                    .unwrap_or_else(|e| panic!("{}: bad time {s}: {e}", column.name));
                out.push_str(&t.timestamp().to_string());
            }
            (ColumnType::Float, Value::Number(n)) => out.push_str(&n.as_f64().expect("float").to_string()),
            (ColumnType::Int, Value::Number(n)) => out.push_str(&n.as_i64().expect("int").to_string()),
            (ColumnType::Text, Value::String(s)) => out.push_str(s),
            (kind, v) => panic!("{domain}.{}: {v} does not fit {kind:?}", column.name),
        }
    }
    out
}

/// Digest of `records` (streamed JSON) per domain.
pub fn digest_json<'a>(records: impl IntoIterator<Item = (Domain, &'a Value)>) -> BTreeMap<Domain, Digest> {
    let mut out: BTreeMap<Domain, Digest> = BTreeMap::new();
    for (domain, record) in records {
        out.entry(domain).or_default().add(&canonical_json(domain, record));
    }
    out
}

/// The rows of `domain` as a `FROM` item named after it, with SQL of its own (not the system's): a
/// table, or for the two MSD views a derivation written differently from the domain catalog's (an
/// anti-join instead of `DISTINCT ON`, the workcenter's last two digits instead of a pattern).
pub fn relation(domain: Domain) -> String {
    const GROUP: &str = "'WG-' || (right(workcenter, 2)::int / 5)";
    match domain {
        Domain::UpstreamHistory => format!(
            "(SELECT container_id, workcenter, {GROUP} AS workcenter_group, equipment, step, move_in, qty_in \
              FROM history h WHERE NOT EXISTS (SELECT 1 FROM history later \
                  WHERE later.container_id = h.container_id AND later.workcenter = h.workcenter \
                    AND later.equipment = h.equipment AND (later.move_in, later.seq) > (h.move_in, h.seq))) \
             AS {domain}"
        ),
        Domain::DownstreamRejects => format!(
            "(SELECT container_id, workcenter, {GROUP} AS workcenter_group, reason_code AS loss_reason, \
                     text '(NA)' AS equipment, qty AS reject_total_qty, rejected_at AS txn_at FROM rejects) \
             AS {domain}"
        ),
        table => table.as_str().to_owned(),
    }
}

/// The same digest computed from the tables for `ids`, with its own SQL (not the system's).
pub async fn digest_db(
    pool: &deadpool_postgres::Pool,
    domains: &[Domain],
    ids: &[String],
) -> BTreeMap<Domain, Digest> {
    let conn = pool.get().await.expect("connect");
    let mut out = BTreeMap::new();
    for &domain in domains {
        let select: Vec<String> = domain
            .columns()
            .iter()
            .map(|c| match c.kind {
                ColumnType::Text => c.name.to_owned(),
                ColumnType::Int => format!("{}::int8", c.name),
                ColumnType::Float => format!("{}::float8", c.name),
                ColumnType::Time => format!("extract(epoch from {})::int8", c.name),
            })
            .collect();
        let sql =
            format!("SELECT {} FROM {} WHERE container_id = ANY($1)", select.join(", "), relation(domain));
        let rows = conn.query_raw(sql.as_str(), [&ids]).await.expect("query");
        pin_mut!(rows);
        let mut digest = Digest::default();
        while let Some(row) = rows.try_next().await.expect("row") {
            let mut text = domain.as_str().to_owned();
            for (i, c) in domain.columns().iter().enumerate() {
                text.push('|');
                let cell = match c.kind {
                    ColumnType::Text => row.get::<_, Option<String>>(i),
                    ColumnType::Int | ColumnType::Time => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
                    ColumnType::Float => row.get::<_, Option<f64>>(i).map(|v| v.to_string()),
                };
                text.push_str(cell.as_deref().unwrap_or("∅"));
            }
            digest.add(&text);
        }
        out.insert(domain, digest);
    }
    out
}

/// Rows of `domain` for `ids`, counted by the database.
pub async fn count(pool: &deadpool_postgres::Pool, domain: Domain, ids: &[String]) -> u64 {
    let conn = pool.get().await.expect("connect");
    let row = conn
        .query_one(
            &format!("SELECT count(*) FROM {} WHERE container_id = ANY($1)", relation(domain)),
            &[&ids],
        )
        .await
        .expect("count");
    row.get::<_, i64>(0) as u64
}

/// One MSD group as the database computes it: (reject_qty, lots, qty_in) by (workcenter, reason).
pub type MsdGroups = BTreeMap<(String, String), (i64, i64, i64)>;

/// The MSD aggregation of `ids` as a SQL GROUP BY, and the number of containers with a reject.
pub async fn msd_by_sql(pool: &deadpool_postgres::Pool, ids: &[String]) -> (MsdGroups, i64) {
    let conn = pool.get().await.expect("connect");
    let sql = "
        WITH r AS (SELECT container_id, workcenter, reason_code, qty FROM rejects WHERE container_id = ANY($1)),
             g AS (SELECT workcenter, reason_code, sum(qty)::int8 AS reject_qty, count(DISTINCT container_id)::int8 AS lots
                   FROM r GROUP BY workcenter, reason_code),
             l AS (SELECT DISTINCT workcenter, reason_code, container_id FROM r),
             q AS (SELECT l.workcenter, l.reason_code, sum(h.qty_in)::int8 AS qty_in
                   FROM l JOIN history h ON h.container_id = l.container_id AND h.workcenter = l.workcenter
                   GROUP BY l.workcenter, l.reason_code)
        SELECT g.workcenter, g.reason_code, g.reject_qty, g.lots, coalesce(q.qty_in, 0)::int8
        FROM g LEFT JOIN q USING (workcenter, reason_code)";
    let groups = conn
        .query(sql, &[&ids])
        .await
        .expect("msd group by")
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
        .collect();
    let lots: i64 = conn
        .query_one("SELECT count(DISTINCT container_id) FROM rejects WHERE container_id = ANY($1)", &[&ids])
        .await
        .expect("lots")
        .get(0);
    (groups, lots)
}
