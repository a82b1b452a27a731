//! The reference trace dataset, generated in pure Rust.
//!
//! Benchmarks and integration tests run against one fixed dataset (specified in `dataset.md`): for
//! container `i` (1..N) the row counts per domain come from the hash [`mix`], and every column value is
//! a closed-form function of `i` and the row's `seq`. The PostgreSQL side loads it with set-based SQL
//! (`trace_seed(n)` in the adapters' `sql/schema.sql`); this module generates exactly the same rows
//! without a database. It backs the embedded local event source and cross-checks the SQL generator.
//! The two MSD domains (`upstream_history`, `downstream_rejects`) are derived here from the history and
//! rejects rows exactly as their SQL in the adapters' domain catalog derives them.
//!
//! Ids are defined for `1..=`[`MAX_INDEX`] (seven digits). All arithmetic is exact for that range.

use chrono::{DateTime, Utc};

use trace_core::domain::Domain;
use trace_core::record::{RowBatch, Value};

/// The largest container index the dataset defines (container ids carry seven digits).
pub const MAX_INDEX: u64 = 9_999_999;

/// `T0` of the specification, `2025-01-01 00:00:00+00`, as Unix seconds.
pub const T0_UNIX: i64 = 1_735_689_600;

/// The multiplier of [`mix`].
const MIX_MUL: u64 = 73_244_475;
const LOW32: u64 = 0xFFFF_FFFF;

/// The dataset's 32-bit integer hash: `x` is taken mod 2^32, then mixed twice by
/// `x = ((x ^ (x >> 16)) * 73244475) mod 2^32` and finished with `x ^ (x >> 16)`.
///
/// Every intermediate fits in 64 bits (`x < 2^32`, multiplier `< 2^27`), so this is plain `u64` math;
/// the result is below 2^32.
pub fn mix(x: u64) -> u64 {
    let mut x = x & LOW32;
    x = ((x ^ (x >> 16)) * MIX_MUL) & LOW32;
    x = ((x ^ (x >> 16)) * MIX_MUL) & LOW32;
    x ^ (x >> 16)
}

/// The id of container `i`: `CID-` and `i` zero-padded to seven digits (`CID-0000001`).
///
/// Meaningful for `1..=`[`MAX_INDEX`]; a larger index is printed in full (wider than seven digits,
/// where SQL `lpad` would truncate), and [`parse_container_index`] does not accept it.
pub fn container_id(i: u64) -> String {
    format!("CID-{i:07}")
}

/// The index of a container id: the inverse of [`container_id`].
///
/// `None` for anything that is not exactly `CID-` followed by seven ASCII digits, and for index 0
/// (which the dataset does not have).
pub fn parse_container_index(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("CID-")?;
    if digits.len() != 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(i) => Some(i),
    }
}

/// `mix(8i + k)`, with the multiplication taken mod 2^64: `mix` only reads the low 32 bits, so this
/// equals the specification's value for every `i`.
fn mix_at(i: u64, k: u64) -> u64 {
    mix(i.wrapping_mul(8).wrapping_add(k))
}

/// The history row count of container `i` (1..=39); the rejects rows point into it.
fn history_count(i: u64) -> u64 {
    1 + mix_at(i, 1) % 39
}

/// How many rows container `i` has in `domain`.
///
/// history `1 + mix(8i+1) mod 39`, materials `mix(8i+2) mod 17`, rejects `mix(8i+3) mod 5`,
/// holds `mix(8i+4) mod 3`, jobs `mix(8i+5) mod 21`; `upstream_history` the distinct (workcenter,
/// equipment) pairs of the history rows, `downstream_rejects` as rejects.
pub fn row_count(domain: Domain, i: u64) -> u32 {
    let n = match domain {
        Domain::History => history_count(i),
        Domain::Materials => mix_at(i, 2) % 17,
        Domain::Rejects | Domain::DownstreamRejects => mix_at(i, 3) % 5,
        Domain::Holds => mix_at(i, 4) % 3,
        Domain::Jobs => mix_at(i, 5) % 21,
        Domain::UpstreamHistory => upstream_history(i).len() as u64,
    };
    // At most 39.
    n as u32
}

/// Row counts of `domains` (in that order) for containers `1..=n`.
pub fn totals<const N: usize>(domains: [Domain; N], n: u64) -> [u64; N] {
    let mut sums = [0u64; N];
    for i in 1..=n {
        for (sum, domain) in sums.iter_mut().zip(domains) {
            *sum += u64::from(row_count(domain, i));
        }
    }
    sums
}

/// `T(s)` of the specification: `T0 + s` seconds.
fn t(s: u64) -> Value {
    // `s` stays far below 2^40 for indexes up to MAX_INDEX.
    let secs = T0_UNIX + s as i64;
    Value::Time(DateTime::<Utc>::from_timestamp(secs, 0).expect("dataset instant in range"))
}

fn int(v: u64) -> Value {
    Value::Int(v as i64)
}

/// `prefix` followed by `v` zero-padded to `width` digits (the SQL `prefix || lpad(v::text, width, '0')`;
/// every value the dataset pads fits its width).
fn padded(prefix: &str, v: u64, width: usize) -> Value {
    Value::Text(format!("{prefix}{v:0width$}"))
}

/// The workcenter group of workcenter `WC-nn` (`n` its number): `WG-` and `n / 5`.
fn workcenter_group(workcenter: u64) -> Value {
    Value::Text(format!("WG-{}", workcenter / 5))
}

/// Row `s` of container `i` in `history`, as numbers (a workcenter is its `nn`, an instant its `T` offset).
#[derive(Debug, Clone, Copy)]
struct HistoryRow {
    seq: u64,
    workcenter: u64,
    step: u64,
    equipment: u64,
    qty_in: u64,
    qty_out: u64,
    move_in: u64,
    move_out: u64,
}

impl HistoryRow {
    fn new(i: u64, s: u64) -> Self {
        let qty_in = 500 + i % 500 - s;
        HistoryRow {
            seq: s,
            workcenter: (i + 7 * s) % 40,
            step: s,
            equipment: (13 * i + 29 * s) % 500,
            qty_in,
            qty_out: qty_in - (i + s) % 4,
            move_in: 97 * i + 3600 * s,
            move_out: 97 * i + 3600 * s + 600 + (i * s) % 3000,
        }
    }
}

/// Row `s` of container `i` in `rejects`, as numbers.
#[derive(Debug, Clone, Copy)]
struct RejectRow {
    seq: u64,
    workcenter: u64,
    reason_code: u64,
    qty: u64,
    rejected_at: u64,
}

impl RejectRow {
    /// `history` is the container's history row count.
    fn new(i: u64, s: u64, history: u64) -> Self {
        // The history row (its seq) the reject happened at.
        let k = 1 + (7 * i + 3 * s) % history;
        RejectRow {
            seq: s,
            workcenter: (i + 7 * k) % 40,
            reason_code: (3 * i + 5 * s) % 25,
            qty: 1 + (i + 7 * s) % 20,
            rejected_at: 97 * i + 3600 * k + 1800,
        }
    }
}

fn history_rows(i: u64) -> impl Iterator<Item = HistoryRow> {
    (1..=history_count(i)).map(move |s| HistoryRow::new(i, s))
}

fn reject_rows(i: u64) -> impl Iterator<Item = RejectRow> {
    let history = history_count(i);
    (1..=u64::from(row_count(Domain::Rejects, i))).map(move |s| RejectRow::new(i, s, history))
}

/// The `upstream_history` rows of container `i`.
fn upstream_history(i: u64) -> Vec<HistoryRow> {
    latest_per_station(history_rows(i).collect())
}

/// Of one container's history `rows`, per (workcenter, equipment) the row with the latest `move_in`
/// (ties: highest seq), ordered by `move_in` (then seq).
fn latest_per_station(mut rows: Vec<HistoryRow>) -> Vec<HistoryRow> {
    // Within a (workcenter, equipment) the latest first; keep the first of each.
    rows.sort_by_key(|r| (r.workcenter, r.equipment, std::cmp::Reverse((r.move_in, r.seq))));
    rows.dedup_by_key(|r| (r.workcenter, r.equipment));
    rows.sort_by_key(|r| (r.move_in, r.seq));
    rows
}

/// The `downstream_rejects` rows of container `i`: its rejects ordered by time, then seq.
fn downstream_rejects(i: u64) -> Vec<RejectRow> {
    let mut rows: Vec<RejectRow> = reject_rows(i).collect();
    rows.sort_by_key(|r| (r.rejected_at, r.seq));
    rows
}

/// Appends every row of container `i` in `domain` to `batch`, values as the specification gives them,
/// in the column order of [`Domain::columns`] and the order the domain's SQL returns them (the table
/// domains by `seq` 1..=[`row_count`]).
///
/// `batch` must be a batch of `domain`.
pub fn push_rows(domain: Domain, i: u64, batch: &mut RowBatch) {
    debug_assert_eq!(batch.domain(), domain, "push_rows into a batch of another domain");
    let id = container_id(i);
    let cid = || Value::Text(id.clone());
    match domain {
        Domain::History => {
            for r in history_rows(i) {
                batch.push_row([
                    cid(),
                    int(r.seq),
                    padded("WC-", r.workcenter, 2),
                    padded("STEP-", r.step, 3),
                    padded("EQ-", r.equipment, 4),
                    int(r.qty_in),
                    int(r.qty_out),
                    t(r.move_in),
                    t(r.move_out),
                ]);
            }
        }
        Domain::UpstreamHistory => {
            for r in upstream_history(i) {
                batch.push_row([
                    cid(),
                    padded("WC-", r.workcenter, 2),
                    workcenter_group(r.workcenter),
                    padded("EQ-", r.equipment, 4),
                    padded("STEP-", r.step, 3),
                    t(r.move_in),
                    int(r.qty_in),
                ]);
            }
        }
        Domain::Rejects => {
            for r in reject_rows(i) {
                batch.push_row([
                    cid(),
                    int(r.seq),
                    padded("WC-", r.workcenter, 2),
                    padded("RC-", r.reason_code, 2),
                    int(r.qty),
                    t(r.rejected_at),
                ]);
            }
        }
        Domain::DownstreamRejects => {
            for r in downstream_rejects(i) {
                batch.push_row([
                    cid(),
                    padded("WC-", r.workcenter, 2),
                    workcenter_group(r.workcenter),
                    padded("RC-", r.reason_code, 2),
                    Value::Text("(NA)".to_owned()),
                    int(r.qty),
                    t(r.rejected_at),
                ]);
            }
        }
        Domain::Materials => push_materials(i, cid, batch),
        Domain::Holds => push_holds(i, cid, batch),
        Domain::Jobs => push_jobs(i, cid, batch),
    }
}

fn push_materials(i: u64, cid: impl Fn() -> Value, batch: &mut RowBatch) {
    for s in 1..=u64::from(row_count(Domain::Materials, i)) {
        batch.push_row([
            cid(),
            int(s),
            padded("ML-", (31 * i + s) % 10_000_000, 7),
            padded("PN-", (i + 11 * s) % 2000, 5),
            Value::Float(((i * s) % 100_000) as f64 / 100.0),
            t(97 * i + 1800 * s),
        ]);
    }
}

fn push_holds(i: u64, cid: impl Fn() -> Value, batch: &mut RowBatch) {
    for s in 1..=u64::from(row_count(Domain::Holds, i)) {
        let release_at = if (i + s).is_multiple_of(10) {
            Value::Null
        } else {
            t(97 * i + 7200 * s + 60 + (i * s) % 86_400)
        };
        batch.push_row([cid(), int(s), padded("HR-", (i + s) % 12, 2), t(97 * i + 7200 * s), release_at]);
    }
}

fn push_jobs(i: u64, cid: impl Fn() -> Value, batch: &mut RowBatch) {
    for s in 1..=u64::from(row_count(Domain::Jobs, i)) {
        batch.push_row([
            cid(),
            int(s),
            padded("EQ-", (17 * i + 23 * s) % 500, 4),
            padded("JOB-", 100 * i + s, 10),
            padded("RCP-", (i * s) % 300, 3),
            t(97 * i + 2400 * s),
            t(97 * i + 2400 * s + 300 + (i * s) % 2000),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::{Duration, TimeZone};

    use super::*;

    fn rows_of(domain: Domain, i: u64) -> Vec<Vec<Value>> {
        let mut batch = RowBatch::with_capacity(domain, 40);
        push_rows(domain, i, &mut batch);
        batch.rows().map(<[Value]>::to_vec).collect()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn instant(v: &Value) -> DateTime<Utc> {
        match v {
            Value::Time(t) => *t,
            other => panic!("not a time: {other:?}"),
        }
    }

    fn at(rfc3339: &str) -> Value {
        Value::Time(DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc))
    }

    #[test]
    fn mix_matches_reference_values() {
        // Expected values computed independently in python3 with the specification's formula:
        //   x %= 2**32; x = ((x ^ (x >> 16)) * 73244475) % 2**32  (twice); x ^ (x >> 16)
        let cases: [(u64, u64); 8] = [
            (0, 0),
            (1, 824_515_495),
            (2, 1_722_258_072),
            (9, 80_224_587),
            (12_345, 1_747_545_881),
            (4_294_967_295, 539_527_247),
            (4_294_967_296, 0),
            ((1 << 40) + 5, 592_649_042),
        ];
        for (x, expected) in cases {
            assert_eq!(mix(x), expected, "mix({x})");
        }
    }

    #[test]
    fn t0_is_the_specified_instant() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(t(0), Value::Time(t0));
        assert_eq!(t(3_661), Value::Time(t0 + Duration::seconds(3_661)));
    }

    #[test]
    fn check_figures_match_the_specification() {
        // dataset.md, "Check figures".
        let small = totals(Domain::BASE, 10_000);
        assert_eq!(small, [197_906, 80_142, 20_063, 10_179, 100_200]);
        assert_eq!(small.iter().sum::<u64>(), 408_490);
        let large = totals(Domain::BASE, 114_000);
        assert_eq!(large, [2_273_847, 911_444, 228_686, 114_193, 1_138_926]);
        assert_eq!(large.iter().sum::<u64>(), 4_667_096);
        // The MSD views ("The two MSD domains"): as many rows as history and rejects.
        let msd = [Domain::UpstreamHistory, Domain::DownstreamRejects];
        assert_eq!(totals(msd, 10_000), [197_906, 20_063]);
        assert_eq!(totals(msd, 114_000), [2_273_847, 228_686]);
    }

    #[test]
    fn push_rows_yields_row_count_rows_with_seq_1_to_n() {
        for i in [1, 2, 3, 77, 9_999, 114_000, MAX_INDEX] {
            for domain in Domain::BASE {
                let rows = rows_of(domain, i);
                assert_eq!(rows.len(), row_count(domain, i) as usize, "{domain} of {i}");
                for (n, row) in rows.iter().enumerate() {
                    assert_eq!(row.len(), domain.columns().len());
                    assert_eq!(row[0], Value::Text(container_id(i)));
                    assert_eq!(row[1], Value::Int(n as i64 + 1));
                }
            }
        }
    }

    #[test]
    fn sample_rows_match_hand_computed_values() {
        // Expected rows computed with an independent python3 port of dataset.md.
        // Container 1: history 28, materials 12, rejects 0, holds 0, jobs 6 rows.
        let counts: Vec<u32> = Domain::BASE.iter().map(|&d| row_count(d, 1)).collect();
        assert_eq!(counts, [28, 12, 0, 0, 6]);
        assert_eq!(
            rows_of(Domain::History, 1)[0],
            [
                text("CID-0000001"),
                Value::Int(1),
                text("WC-08"),
                text("STEP-001"),
                text("EQ-0042"),
                Value::Int(500),
                Value::Int(498),
                at("2025-01-01T01:01:37Z"),
                at("2025-01-01T01:11:38Z"),
            ]
        );
        assert_eq!(
            rows_of(Domain::Materials, 1)[0],
            [
                text("CID-0000001"),
                Value::Int(1),
                text("ML-0000032"),
                text("PN-00012"),
                Value::Float(0.01),
                at("2025-01-01T00:31:37Z"),
            ]
        );
        assert_eq!(
            rows_of(Domain::Jobs, 1)[0],
            [
                text("CID-0000001"),
                Value::Int(1),
                text("EQ-0040"),
                text("JOB-0000000101"),
                text("RCP-001"),
                at("2025-01-01T00:41:37Z"),
                at("2025-01-01T00:46:38Z"),
            ]
        );
        assert_eq!(
            rows_of(Domain::Rejects, 2),
            [[
                text("CID-0000002"),
                Value::Int(1),
                text("WC-08"),
                text("RC-11"),
                Value::Int(10),
                at("2025-01-01T18:33:14Z"),
            ]]
        );
        assert_eq!(
            rows_of(Domain::Holds, 2),
            [
                [
                    text("CID-0000002"),
                    Value::Int(1),
                    text("HR-03"),
                    at("2025-01-01T02:03:14Z"),
                    at("2025-01-01T02:04:16Z"),
                ],
                [
                    text("CID-0000002"),
                    Value::Int(2),
                    text("HR-04"),
                    at("2025-01-01T04:03:14Z"),
                    at("2025-01-01T04:04:18Z"),
                ],
            ]
        );
        // Container 77, last history row (2 rows) and last materials row (4 rows, qty 3.08).
        assert_eq!(
            rows_of(Domain::History, 77)[1],
            [
                text("CID-0000077"),
                Value::Int(2),
                text("WC-11"),
                text("STEP-002"),
                text("EQ-0059"),
                Value::Int(575),
                Value::Int(572),
                at("2025-01-01T04:04:29Z"),
                at("2025-01-01T04:17:03Z"),
            ]
        );
        assert_eq!(rows_of(Domain::Materials, 77)[3][4], Value::Float(3.08));
    }

    #[test]
    fn container_ids_round_trip() {
        assert_eq!(container_id(1), "CID-0000001");
        assert_eq!(container_id(114_000), "CID-0114000");
        assert_eq!(container_id(MAX_INDEX), "CID-9999999");
        for i in [1, 2, 77, 9_999, 114_000, 1_234_567, MAX_INDEX] {
            assert_eq!(parse_container_index(&container_id(i)), Some(i));
        }
    }

    #[test]
    fn malformed_container_ids_are_rejected() {
        for bad in [
            "",
            "CID-",
            "CID-0000000",
            "CID-000001",
            "CID-00000001",
            "CID-10000000",
            "cid-0000001",
            "CID0000001",
            " CID-0000001",
            "CID-0000001 ",
            "CID-+000001",
            "CID--000001",
            "CID-00000a1",
            "CID-000000١",
            "XYZ-0000001",
        ] {
            assert_eq!(parse_container_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_reject_happens_at_one_of_the_containers_history_workcenters() {
        let history_wc = Domain::History.column_index("workcenter").unwrap();
        let history_seq = Domain::History.column_index("seq").unwrap();
        let reject_wc = Domain::Rejects.column_index("workcenter").unwrap();
        let mut rejects_seen = 0;
        for i in 1..=500 {
            let history = rows_of(Domain::History, i);
            let workcenters: HashSet<&str> =
                history.iter().map(|row| row[history_wc].as_text().unwrap()).collect();
            for reject in rows_of(Domain::Rejects, i) {
                let wc = reject[reject_wc].as_text().unwrap();
                assert!(workcenters.contains(wc), "container {i}: reject at {wc}, history {workcenters:?}");
                rejects_seen += 1;
            }
            assert_eq!(history.last().unwrap()[history_seq], Value::Int(history.len() as i64));
        }
        // The test means something only if there are rejects to check.
        assert!(rejects_seen > 500, "{rejects_seen} rejects");
    }

    #[test]
    fn a_hold_is_open_exactly_when_i_plus_seq_is_a_multiple_of_10() {
        let release = Domain::Holds.column_index("release_at").unwrap();
        let (mut open, mut closed) = (0, 0);
        for i in 1..=1_000u64 {
            for row in rows_of(Domain::Holds, i) {
                let Value::Int(seq) = row[1] else { panic!("seq {:?}", row[1]) };
                let still_on_hold = (i + seq as u64).is_multiple_of(10);
                match (&row[release], still_on_hold) {
                    (Value::Null, true) => open += 1,
                    (Value::Time(released), false) => {
                        let Value::Time(held) = row[release - 1] else { panic!("hold_at") };
                        assert!(*released > held, "container {i} seq {seq}");
                        closed += 1;
                    }
                    (other, _) => panic!("container {i} seq {seq}: release_at {other:?}"),
                }
            }
        }
        assert!(open > 0 && closed > open, "{open} open, {closed} closed");
        // Container 9, seq 1: 9 + 1 = 10, still on hold (python3 port of dataset.md).
        assert_eq!(
            rows_of(Domain::Holds, 9)[0],
            [text("CID-0000009"), Value::Int(1), text("HR-10"), at("2025-01-01T02:14:33Z"), Value::Null]
        );
    }

    #[test]
    fn the_msd_views_are_history_and_rejects_reshaped() {
        let column = |d: Domain, name: &str| d.column_index(name).unwrap();
        for i in 1..=2_000 {
            // No container passes a workcenter twice: upstream_history is every history row, by move_in.
            let history = rows_of(Domain::History, i);
            let upstream = rows_of(Domain::UpstreamHistory, i);
            assert_eq!(upstream.len(), history.len(), "container {i}");
            assert_eq!(upstream.len(), row_count(Domain::UpstreamHistory, i) as usize);
            for (u, h) in upstream.iter().zip(&history) {
                for name in ["container_id", "workcenter", "equipment", "step", "move_in", "qty_in"] {
                    let (u, h) =
                        (&u[column(Domain::UpstreamHistory, name)], &h[column(Domain::History, name)]);
                    assert_eq!(u, h, "container {i} {name}");
                }
            }
            // downstream_rejects: the same rejects, by time then seq.
            let rejects = rows_of(Domain::Rejects, i);
            let downstream = rows_of(Domain::DownstreamRejects, i);
            assert_eq!(downstream.len(), row_count(Domain::DownstreamRejects, i) as usize);
            let mut by_time = rejects.clone();
            by_time.sort_by_key(|r| (instant(&r[5]), r[1].as_int()));
            for (d, r) in downstream.iter().zip(&by_time) {
                assert_eq!(d[..2], [r[0].clone(), r[2].clone()], "container {i}");
                assert_eq!(d[3..], [r[3].clone(), text("(NA)"), r[4].clone(), r[5].clone()], "container {i}");
            }
            assert_eq!(downstream.len(), rejects.len());
            // The group of WC-nn is WG-(nn / 5).
            for row in upstream.iter().chain(&downstream) {
                let wc: u64 = row[1].as_text().unwrap()[3..].parse().unwrap();
                assert_eq!(row[2], Value::Text(format!("WG-{}", wc / 5)));
            }
        }
    }

    #[test]
    fn downstream_rejects_are_ordered_by_time_not_seq() {
        // Container 7's third reject happened first; container 3's four happened at one time (its only
        // history row), so seq orders them (python3 port of dataset.md).
        let seqs = |i| downstream_rejects(i).iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(7), [3, 1, 2]);
        assert_eq!(seqs(3), [1, 2, 3, 4]);
        let times: Vec<DateTime<Utc>> =
            rows_of(Domain::DownstreamRejects, 7).iter().map(|r| instant(&r[6])).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(
            rows_of(Domain::DownstreamRejects, 2),
            [[
                text("CID-0000002"),
                text("WC-08"),
                text("WG-1"),
                text("RC-11"),
                text("(NA)"),
                Value::Int(10),
                at("2025-01-01T18:33:14Z"),
            ]]
        );
        assert_eq!(
            rows_of(Domain::UpstreamHistory, 1)[0],
            [
                text("CID-0000001"),
                text("WC-08"),
                text("WG-1"),
                text("EQ-0042"),
                text("STEP-001"),
                at("2025-01-01T01:01:37Z"),
                Value::Int(500),
            ]
        );
    }

    #[test]
    fn upstream_history_keeps_the_latest_track_in_per_workcenter_and_equipment() {
        let row = |seq, workcenter, equipment, move_in| HistoryRow {
            seq,
            workcenter,
            step: seq,
            equipment,
            qty_in: 0,
            qty_out: 0,
            move_in,
            move_out: 0,
        };
        let rows =
            vec![row(1, 3, 7, 50), row(2, 3, 7, 90), row(3, 3, 8, 10), row(4, 3, 7, 90), row(5, 1, 7, 70)];
        let kept: Vec<u64> = latest_per_station(rows).iter().map(|r| r.seq).collect();
        // (3, 7): seq 2 and 4 tie on the latest move_in, the higher seq wins; then by move_in.
        assert_eq!(kept, [3, 5, 4]);
    }

    #[test]
    fn the_msd_aggregation_is_the_same_over_the_views_and_the_tables() {
        use trace_core::aggregation::{MsdAggregator, MsdInputs};
        let views = MsdInputs::for_request(&[Domain::UpstreamHistory, Domain::DownstreamRejects]);
        let mut by_tables = MsdAggregator::new();
        let mut by_views = MsdAggregator::with_inputs(views);
        for first in (1..=3_000).step_by(1_000) {
            for domain in Domain::ALL {
                let mut batch = RowBatch::with_capacity(domain, 0);
                for i in first..first + 1_000 {
                    push_rows(domain, i, &mut batch);
                }
                by_tables.observe(&batch);
                by_views.observe(&batch);
            }
            by_tables.end_batch();
            by_views.end_batch();
        }
        let (tables, views) = (by_tables.finish(), by_views.finish());
        assert!(tables.group_count > 900 && tables.reject_lot_count > 1_500, "{tables:?}");
        assert_eq!(views, tables);
    }
}
