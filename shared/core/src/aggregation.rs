//! The mid-section-defect (MSD) aggregation: a reject pareto per (workcenter, reason_code) with defect
//! rates against the input quantity of the rejected lots.
//!
//! Per group: `reject_qty = Σ rejects.qty`; `lots` = distinct containers with such a reject;
//! `qty_in = Σ history.qty_in` of exactly those lots at that workcenter; `defect_rate = reject_qty /
//! qty_in` (null when `qty_in` is 0). Totals: `group_count`, `total_reject_qty`, `reject_lot_count`.
//! The top 100 groups by `reject_qty` are kept, ties by workcenter then reason_code.
//!
//! Which domains it reads ([`MsdInputs::for_request`]): rejects from `downstream_rejects`
//! (`loss_reason`, `reject_total_qty`) when the request carries it and not `rejects`, otherwise from
//! `rejects` (`reason_code`, `qty`); input quantities from `upstream_history` when the request carries
//! it and not `history`, otherwise from `history` (`qty_in` in both). A table the request does not carry
//! is read for the aggregation only. On the reference dataset both sources give the same answer (no
//! container passes a workcenter twice, so `upstream_history` keeps every history row).
//!
//! Memory is bounded by one id batch, never by the job: rows are observed batch by batch (a batch is
//! a set of containers whose rows all arrive before [`MsdAggregator::end_batch`]), and only the
//! ~1000 (workcenter × reason) group sums outlive a batch. Partials from several shards merge exactly,
//! because every container belongs to exactly one batch.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::record::{RowBatch, Value};

/// Groups kept in the final answer.
pub const TOP_GROUPS: usize = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Sums {
    reject_qty: i64,
    lots: u64,
    qty_in: i64,
}

/// Mergeable sums of the aggregation over some containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsdPartial {
    groups: Vec<(String, String, i64, u64, i64)>,
    reject_lot_count: u64,
}

/// One group of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsdGroup {
    /// Workcenter.
    pub workcenter: String,
    /// Reject reason.
    pub reason_code: String,
    /// Σ rejected quantity.
    pub reject_qty: i64,
    /// Distinct rejected containers.
    pub lots: u64,
    /// Σ input quantity of those containers at the workcenter.
    pub qty_in: i64,
    /// `reject_qty / qty_in`, null when `qty_in` is 0.
    pub defect_rate: Option<f64>,
}

/// The aggregation as answered (`aggregation` of results and streams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsdAggregation {
    /// Top groups by reject quantity.
    pub groups: Vec<MsdGroup>,
    /// All groups, before the top-N cut.
    pub group_count: u64,
    /// Σ rejected quantity over all groups.
    pub total_reject_qty: i64,
    /// Containers with any reject.
    pub reject_lot_count: u64,
}

/// Rows of the current batch that matter to the aggregation.
#[derive(Debug, Default)]
struct BatchState {
    /// (workcenter, reason) → (Σ qty, rejected containers).
    rejects: HashMap<(String, String), (i64, HashSet<String>)>,
    /// (container, workcenter) → Σ qty_in.
    qty_in: HashMap<(String, String), i64>,
}

/// The two domains the aggregation reads: one for rejects, one for input quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsdInputs {
    /// `rejects` or `downstream_rejects`.
    pub rejects: Domain,
    /// `history` or `upstream_history`.
    pub history: Domain,
}

impl Default for MsdInputs {
    /// The tables, `rejects` and `history`.
    fn default() -> Self {
        MsdInputs { rejects: Domain::Rejects, history: Domain::History }
    }
}

impl MsdInputs {
    /// The inputs of a request carrying `requested`: of each pair, the MSD view when the request carries
    /// it and not the table, otherwise the table.
    pub fn for_request(requested: &[Domain]) -> Self {
        let pick = |table: Domain, view: Domain| {
            if requested.contains(&view) && !requested.contains(&table) {
                view
            } else {
                table
            }
        };
        MsdInputs {
            rejects: pick(Domain::Rejects, Domain::DownstreamRejects),
            history: pick(Domain::History, Domain::UpstreamHistory),
        }
    }

    /// Both domains, rejects first.
    pub const fn domains(self) -> [Domain; 2] {
        [self.rejects, self.history]
    }

    /// The (reason, quantity) columns of the rejects domain.
    fn reject_columns(self) -> (&'static str, &'static str) {
        match self.rejects {
            Domain::DownstreamRejects => ("loss_reason", "reject_total_qty"),
            _ => ("reason_code", "qty"),
        }
    }
}

/// Streaming MSD aggregation.
#[derive(Debug, Default)]
pub struct MsdAggregator {
    inputs: MsdInputs,
    groups: HashMap<(String, String), Sums>,
    reject_lot_count: u64,
    batch: BatchState,
}

fn text(row: &[Value], i: Option<usize>) -> Option<&str> {
    row.get(i?)?.as_text()
}

fn int(row: &[Value], i: Option<usize>) -> Option<i64> {
    row.get(i?)?.as_int()
}

impl MsdAggregator {
    /// A new, empty aggregation over the tables (`rejects`, `history`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, empty aggregation over `inputs`.
    pub fn with_inputs(inputs: MsdInputs) -> Self {
        MsdAggregator { inputs, ..Self::default() }
    }

    /// The domains it reads.
    pub fn inputs(&self) -> MsdInputs {
        self.inputs
    }

    /// Whether it reads rows of `domain`.
    pub fn needs(&self, domain: Domain) -> bool {
        self.inputs.domains().contains(&domain)
    }

    /// Observes a fetch of rows (domains other than its inputs are ignored).
    pub fn observe(&mut self, batch: &RowBatch) {
        let domain = batch.domain();
        if domain == self.inputs.rejects {
            let (reason, qty) = self.inputs.reject_columns();
            self.observe_rejects(batch, reason, qty);
        } else if domain == self.inputs.history {
            self.observe_history(batch);
        }
    }

    fn observe_rejects(&mut self, batch: &RowBatch, reason: &str, qty: &str) {
        let domain = batch.domain();
        let (c, wc, rc, qty) = (
            domain.column_index("container_id"),
            domain.column_index("workcenter"),
            domain.column_index(reason),
            domain.column_index(qty),
        );
        for row in batch.rows() {
            let (Some(c), Some(wc), Some(rc)) = (text(row, c), text(row, wc), text(row, rc)) else {
                continue;
            };
            let entry = self.batch.rejects.entry((wc.to_owned(), rc.to_owned())).or_default();
            entry.0 += int(row, qty).unwrap_or(0);
            if !entry.1.contains(c) {
                entry.1.insert(c.to_owned());
            }
        }
    }

    fn observe_history(&mut self, batch: &RowBatch) {
        let domain = batch.domain();
        let (c, wc, qty_in) = (
            domain.column_index("container_id"),
            domain.column_index("workcenter"),
            domain.column_index("qty_in"),
        );
        for row in batch.rows() {
            let (Some(c), Some(wc)) = (text(row, c), text(row, wc)) else {
                continue;
            };
            *self.batch.qty_in.entry((c.to_owned(), wc.to_owned())).or_default() +=
                int(row, qty_in).unwrap_or(0);
        }
    }

    /// Closes the current id batch: folds its rows into the group sums and forgets them.
    pub fn end_batch(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let mut rejected: HashSet<&str> = HashSet::new();
        for ((wc, rc), (qty, lots)) in &batch.rejects {
            let qty_in: i64 =
                lots.iter().map(|c| batch.qty_in.get(&(c.clone(), wc.clone())).copied().unwrap_or(0)).sum();
            let sums = self.groups.entry((wc.clone(), rc.clone())).or_default();
            sums.reject_qty += qty;
            sums.lots += lots.len() as u64;
            sums.qty_in += qty_in;
            rejected.extend(lots.iter().map(String::as_str));
        }
        self.reject_lot_count += rejected.len() as u64;
    }

    /// The sums so far (call [`Self::end_batch`] first), for merging across shards.
    pub fn partial(&self) -> MsdPartial {
        let mut groups: Vec<_> = self
            .groups
            .iter()
            .map(|((wc, rc), s)| (wc.clone(), rc.clone(), s.reject_qty, s.lots, s.qty_in))
            .collect();
        groups.sort();
        MsdPartial { groups, reject_lot_count: self.reject_lot_count }
    }

    /// Adds another shard's sums.
    pub fn merge(&mut self, other: &MsdPartial) {
        for (wc, rc, reject_qty, lots, qty_in) in &other.groups {
            let sums = self.groups.entry((wc.clone(), rc.clone())).or_default();
            sums.reject_qty += reject_qty;
            sums.lots += lots;
            sums.qty_in += qty_in;
        }
        self.reject_lot_count += other.reject_lot_count;
    }

    /// The answer (closes the current batch first).
    pub fn finish(mut self) -> MsdAggregation {
        self.end_batch();
        let total_reject_qty = self.groups.values().map(|s| s.reject_qty).sum();
        let group_count = self.groups.len() as u64;
        let mut groups: Vec<MsdGroup> = self
            .groups
            .into_iter()
            .map(|((workcenter, reason_code), s)| MsdGroup {
                workcenter,
                reason_code,
                reject_qty: s.reject_qty,
                lots: s.lots,
                qty_in: s.qty_in,
                defect_rate: (s.qty_in != 0).then(|| s.reject_qty as f64 / s.qty_in as f64),
            })
            .collect();
        groups.sort_by(|a, b| {
            b.reject_qty
                .cmp(&a.reject_qty)
                .then_with(|| a.workcenter.cmp(&b.workcenter))
                .then_with(|| a.reason_code.cmp(&b.reason_code))
        });
        groups.truncate(TOP_GROUPS);
        MsdAggregation { groups, group_count, total_reject_qty, reject_lot_count: self.reject_lot_count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(rows: &[(&str, &str, &str, i64)]) -> RowBatch {
        let mut b = RowBatch::with_capacity(Domain::Rejects, rows.len());
        for (i, (c, wc, rc, qty)) in rows.iter().enumerate() {
            b.push_row([
                Value::Text((*c).into()),
                Value::Int(i as i64 + 1),
                Value::Text((*wc).into()),
                Value::Text((*rc).into()),
                Value::Int(*qty),
                Value::Null,
            ]);
        }
        b
    }

    fn history(rows: &[(&str, &str, i64)]) -> RowBatch {
        let mut b = RowBatch::with_capacity(Domain::History, rows.len());
        for (i, (c, wc, qty_in)) in rows.iter().enumerate() {
            b.push_row([
                Value::Text((*c).into()),
                Value::Int(i as i64 + 1),
                Value::Text((*wc).into()),
                Value::Text("S".into()),
                Value::Text("E".into()),
                Value::Int(*qty_in),
                Value::Int(0),
                Value::Null,
                Value::Null,
            ]);
        }
        b
    }

    fn downstream_rejects(rows: &[(&str, &str, &str, i64)]) -> RowBatch {
        let mut b = RowBatch::with_capacity(Domain::DownstreamRejects, rows.len());
        for (c, wc, rc, qty) in rows {
            b.push_row([
                Value::Text((*c).into()),
                Value::Text((*wc).into()),
                Value::Text("G".into()),
                Value::Text((*rc).into()),
                Value::Text("(NA)".into()),
                Value::Int(*qty),
                Value::Null,
            ]);
        }
        b
    }

    fn upstream_history(rows: &[(&str, &str, i64)]) -> RowBatch {
        let mut b = RowBatch::with_capacity(Domain::UpstreamHistory, rows.len());
        for (c, wc, qty_in) in rows {
            b.push_row([
                Value::Text((*c).into()),
                Value::Text((*wc).into()),
                Value::Text("G".into()),
                Value::Text("E".into()),
                Value::Text("S".into()),
                Value::Null,
                Value::Int(*qty_in),
            ]);
        }
        b
    }

    #[test]
    fn inputs_follow_the_request() {
        use Domain::*;
        let inputs = |requested: &[Domain]| MsdInputs::for_request(requested).domains();
        assert_eq!(inputs(&[Materials]), [Rejects, History]);
        assert_eq!(inputs(&[UpstreamHistory, Materials]), [Rejects, UpstreamHistory]);
        assert_eq!(inputs(&[UpstreamHistory, DownstreamRejects]), [DownstreamRejects, UpstreamHistory]);
        assert_eq!(inputs(&[DownstreamRejects, History]), [DownstreamRejects, History]);
        // Both of a pair: the table.
        assert_eq!(inputs(&[UpstreamHistory, History, DownstreamRejects, Rejects]), [Rejects, History]);
        assert_eq!(MsdAggregator::new().inputs(), MsdInputs::default());
    }

    #[test]
    fn the_msd_views_give_the_same_answer_as_the_tables() {
        let reject_rows =
            [("A", "W1", "R1", 3), ("A", "W1", "R1", 2), ("B", "W1", "R1", 1), ("B", "W2", "R2", 4)];
        let history_rows = [("A", "W1", 100), ("A", "W2", 7), ("B", "W1", 10), ("B", "W2", 20)];
        let mut tables = MsdAggregator::new();
        tables.observe(&rejects(&reject_rows));
        tables.observe(&history(&history_rows));
        let mut views = MsdAggregator::with_inputs(MsdInputs::for_request(&[
            Domain::UpstreamHistory,
            Domain::DownstreamRejects,
        ]));
        views.observe(&downstream_rejects(&reject_rows));
        views.observe(&upstream_history(&history_rows));
        // Rows of a domain that is not an input are ignored (no quantity counted twice).
        views.observe(&history(&history_rows));
        views.observe(&rejects(&reject_rows));
        let (tables, views) = (tables.finish(), views.finish());
        assert_eq!(views, tables);
        assert_eq!((tables.group_count, tables.total_reject_qty, tables.reject_lot_count), (2, 10, 2));
        assert_eq!((tables.groups[0].reject_qty, tables.groups[0].qty_in), (6, 110));
    }

    #[test]
    fn groups_lots_and_rates() {
        let mut agg = MsdAggregator::new();
        // Order within a batch does not matter: history before rejects here.
        agg.observe(&history(&[("A", "W1", 100), ("A", "W1", 50), ("A", "W2", 7), ("B", "W1", 10)]));
        agg.observe(&rejects(&[("A", "W1", "R1", 3), ("A", "W1", "R1", 2), ("B", "W1", "R1", 1)]));
        agg.end_batch();
        agg.observe(&rejects(&[("C", "W9", "R2", 4)]));
        let out = agg.finish();
        assert_eq!(out.group_count, 2);
        assert_eq!(out.total_reject_qty, 10);
        assert_eq!(out.reject_lot_count, 3);
        let g = &out.groups[0];
        assert_eq!((g.workcenter.as_str(), g.reason_code.as_str()), ("W1", "R1"));
        assert_eq!((g.reject_qty, g.lots, g.qty_in), (6, 2, 160));
        assert_eq!(g.defect_rate, Some(6.0 / 160.0));
        assert_eq!(out.groups[1].defect_rate, None);
    }

    #[test]
    fn partials_merge_to_the_same_answer() {
        let mut whole = MsdAggregator::new();
        let mut a = MsdAggregator::new();
        let mut b = MsdAggregator::new();
        let r1 = rejects(&[("A", "W1", "R1", 3)]);
        let h1 = history(&[("A", "W1", 30)]);
        let r2 = rejects(&[("B", "W1", "R1", 5)]);
        let h2 = history(&[("B", "W1", 20)]);
        for (agg, batches) in
            [(&mut whole, vec![&r1, &h1, &r2, &h2]), (&mut a, vec![&r1, &h1]), (&mut b, vec![&r2, &h2])]
        {
            for batch in batches {
                agg.observe(batch);
            }
            agg.end_batch();
        }
        a.merge(&b.partial());
        assert_eq!(a.finish(), whole.finish());
    }

    /// Containers, each with its reject rows (workcenter, reason, qty) and history rows (workcenter,
    /// qty_in).
    type Lots = Vec<(Vec<(u8, u8, i64)>, Vec<(u8, i64)>)>;

    /// The aggregation of `lots[range]` read in id batches of `batch` containers.
    fn aggregate(lots: &Lots, range: std::ops::Range<usize>, batch: usize) -> MsdAggregator {
        let mut agg = MsdAggregator::new();
        let ids: Vec<usize> = range.collect();
        for part in ids.chunks(batch.max(1)) {
            let names: Vec<String> = part.iter().map(|i| format!("C{i:04}")).collect();
            let wc = |w: u8| format!("W{w}");
            let rc = |r: u8| format!("R{r}");
            let reject_rows: Vec<(String, String, String, i64)> = part
                .iter()
                .zip(&names)
                .flat_map(|(i, c)| lots[*i].0.iter().map(move |(w, r, q)| (c.clone(), wc(*w), rc(*r), *q)))
                .collect();
            let history_rows: Vec<(String, String, i64)> = part
                .iter()
                .zip(&names)
                .flat_map(|(i, c)| lots[*i].1.iter().map(move |(w, q)| (c.clone(), wc(*w), *q)))
                .collect();
            let r: Vec<_> =
                reject_rows.iter().map(|(c, w, r, q)| (c.as_str(), w.as_str(), r.as_str(), *q)).collect();
            let h: Vec<_> = history_rows.iter().map(|(c, w, q)| (c.as_str(), w.as_str(), *q)).collect();
            agg.observe(&rejects(&r));
            agg.observe(&history(&h));
            agg.end_batch();
        }
        agg
    }

    proptest::proptest! {
        /// A job split into any contiguous shards, each read in any id batches: the merge of the shards'
        /// parts is exactly the aggregation of one run (groups, lots, rates, totals, the top-N cut).
        #[test]
        fn shards_merge_to_exactly_one_run_s_aggregation(
            lots in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..4, 0u8..3, 1i64..10), 0..3),
                    proptest::collection::vec((0u8..4, 0i64..100), 0..3),
                ),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..40, 0..4),
            batch in 1usize..6,
            shard_batch in 1usize..6,
        ) {
            let n = lots.len();
            let whole = aggregate(&lots, 0..n, batch).finish();
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
            bounds.extend([0, n]);
            bounds.sort_unstable();
            let mut merged = MsdAggregator::new();
            for w in bounds.windows(2) {
                merged.merge(&aggregate(&lots, w[0]..w[1], shard_batch).partial());
            }
            proptest::prop_assert_eq!(merged.finish(), whole);
        }
    }

    #[test]
    fn top_groups_ordering() {
        let mut agg = MsdAggregator::new();
        let rows: Vec<(String, String)> =
            (0..150).map(|i| (format!("W{:03}", i % 7), format!("R{i:03}"))).collect();
        let refs: Vec<_> = rows.iter().map(|(w, r)| ("C", w.as_str(), r.as_str(), 1)).collect();
        agg.observe(&rejects(&refs));
        let out = agg.finish();
        assert_eq!(out.group_count, 150);
        assert_eq!(out.groups.len(), TOP_GROUPS);
        assert!(out.groups.windows(2).all(|w| (w[0].workcenter.as_str(), w[0].reason_code.as_str())
            < (w[1].workcenter.as_str(), w[1].reason_code.as_str())));
    }
}
