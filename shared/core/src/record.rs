//! Records: one row of a domain, as produced by an event source and written to result chunks.
//!
//! A [`RowBatch`] is what a source hands over per fetch: at most `DB_SLOW_FETCHMANY_SIZE` rows of one
//! domain, stored flat (one `Vec<Value>` with a stride of the domain's column count) so that a batch is
//! one allocation plus its strings. Rendering to JSON happens here, once, straight into the chunk buffer.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

use crate::domain::Domain;

/// One cell of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Integer.
    Int(i64),
    /// Decimal quantity.
    Float(f64),
    /// Text.
    Text(String),
    /// Instant.
    Time(DateTime<Utc>),
}

impl Value {
    /// The text, if this is a text cell.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer cell.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// Appends this value as JSON.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            Value::Float(v) if v.is_finite() => {
                let _ = write!(out, "{v}");
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Text(s) => write_json_str(out, s),
            Value::Time(t) => {
                out.push(b'"');
                write_time(out, t);
                out.push(b'"');
            }
        }
    }
}

/// Appends `t` exactly as `t.to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it
/// (`2025-01-01T00:00:05Z`, `…05.250Z`, `…05.000001Z`), without the per-value `String` and
/// formatting machinery: it is the hottest part of rendering a record.
fn write_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let (date, time) = (t.date_naive(), t.time());
    let (year, nanos) = (date.year(), time.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Years that are not four digits, and leap seconds: chrono's own rendering.
        let _ = write!(out, "{}", t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, date.month());
    put(8, 2, date.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    out.extend_from_slice(&text);
    let (digits, mut fraction) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    if digits > 0 {
        let mut buf = *b".000000000";
        for i in (1..=digits).rev() {
            buf[i] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        out.extend_from_slice(&buf[..=digits]);
    }
    out.push(b'Z');
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is correct and fast; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Counts rows alive in [`RowBatch`]es (current and peak), so tests can prove how many rows a
/// source holds at once without timing anything.
#[derive(Debug, Default)]
pub struct RowGauge {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl RowGauge {
    /// A gauge at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Rows alive now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// Most rows alive at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn add(&self, n: usize) {
        let now = self.current.fetch_add(n, Ordering::SeqCst) + n;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn sub(&self, n: usize) {
        self.current.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Rows of one batch counted on a gauge until the batch is dropped.
#[derive(Debug)]
struct Held {
    gauge: Arc<RowGauge>,
    rows: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.sub(self.rows);
    }
}

/// Up to one fetch of rows of one domain.
#[derive(Debug)]
pub struct RowBatch {
    domain: Domain,
    cells: Vec<Value>,
    held: Option<Held>,
}

impl Clone for RowBatch {
    fn clone(&self) -> Self {
        let mut copy = RowBatch { domain: self.domain, cells: self.cells.clone(), held: None };
        if let Some(h) = &self.held {
            copy.count_on(h.gauge.clone());
        }
        copy
    }
}

impl PartialEq for RowBatch {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain && self.cells == other.cells
    }
}

impl RowBatch {
    /// An empty batch with room for `rows` rows.
    pub fn with_capacity(domain: Domain, rows: usize) -> Self {
        RowBatch { domain, cells: Vec::with_capacity(rows * domain.columns().len()), held: None }
    }

    /// Counts this batch's rows (as they are now) on `gauge` until it is dropped.
    pub fn count_on(&mut self, gauge: Arc<RowGauge>) {
        let rows = self.len();
        gauge.add(rows);
        self.held = Some(Held { gauge, rows });
    }

    /// Appends a copy of row `index` of `other` (same domain).
    pub fn push_row_from(&mut self, other: &RowBatch, index: usize) {
        assert_eq!(self.domain, other.domain, "rows of another domain");
        let w = self.width();
        self.cells.extend_from_slice(&other.cells[index * w..(index + 1) * w]);
    }

    /// The domain of every row in the batch.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// Appends one row; `row` must have exactly the domain's column count.
    ///
    /// # Panics
    /// On a row of the wrong width: that is a bug in the source, not bad input.
    pub fn push_row(&mut self, row: impl IntoIterator<Item = Value>) {
        let before = self.cells.len();
        self.cells.extend(row);
        assert_eq!(
            self.cells.len() - before,
            self.width(),
            "row of the wrong width for domain {}",
            self.domain
        );
    }

    fn width(&self) -> usize {
        self.domain.columns().len()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.cells.len() / self.width()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The rows, each a slice in the domain's column order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[Value]> {
        self.cells.chunks_exact(self.width())
    }

    /// Appends row `index` as one JSON object (no newline).
    pub fn write_row_json(&self, index: usize, out: &mut Vec<u8>) {
        let w = self.width();
        write_record_json(self.domain, &self.cells[index * w..(index + 1) * w], out);
    }
}

/// Appends one record of `domain` as a JSON object, fields in column order.
pub fn write_record_json(domain: Domain, row: &[Value], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (column, value)) in domain.columns().iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(column.name.as_bytes());
        out.extend_from_slice(b"\":");
        value.write_json(out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_a_record_as_json() {
        let mut batch = RowBatch::with_capacity(Domain::Holds, 1);
        batch.push_row([
            Value::Text("CID-\"1\"".into()),
            Value::Int(2),
            Value::Text("HR-03".into()),
            Value::Time(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 5).unwrap()),
            Value::Null,
        ]);
        let mut out = Vec::new();
        batch.write_row_json(0, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"container_id":"CID-\"1\"","seq":2,"hold_reason":"HR-03","hold_at":"2025-01-01T00:00:05Z","release_at":null}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["seq"], 2);
    }

    #[test]
    fn times_render_as_chrono_rfc3339_auto_si() {
        let check = |t: DateTime<Utc>| {
            let mut out = Vec::new();
            write_time(&mut out, &t);
            assert_eq!(String::from_utf8(out).unwrap(), t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        };
        // A spread of instants from year 0 to 9999, each with every sub-second shape.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let (first, last) = (-62_167_219_200_i64, 253_402_300_799_i64);
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let secs = first + (x >> 11) as i64 % (last - first + 1);
            for nanos in [0, 250_000_000, 1_000, 123_456_000, 7, 999_999_999] {
                check(DateTime::from_timestamp(secs, nanos).unwrap());
            }
        }
        // Edges: the first and last four-digit instants, the epoch, a leap day, outside four digits.
        for secs in [first, last, 0, 951_782_400, first - 1, last + 1, -100_000_000_000] {
            check(DateTime::from_timestamp(secs, 0).unwrap());
            check(DateTime::from_timestamp(secs, 10_000_000).unwrap());
        }
        // A leap second.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap()
            .and_utc();
        check(leap);
    }

    #[test]
    fn integers_render_in_full() {
        let mut out = Vec::new();
        for v in [0, -1, 42, i64::MIN, i64::MAX] {
            out.clear();
            Value::Int(v).write_json(&mut out);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), v.to_string());
        }
    }

    #[test]
    fn floats_render_shortest() {
        let mut out = Vec::new();
        Value::Float(123.45).write_json(&mut out);
        Value::Float(f64::NAN).write_json(&mut out);
        assert_eq!(out, b"123.45null");
    }

    #[test]
    fn gauge_counts_rows_until_dropped() {
        let gauge = RowGauge::new();
        let mut a = RowBatch::with_capacity(Domain::Holds, 2);
        for _ in 0..2 {
            a.push_row([Value::Null, Value::Null, Value::Null, Value::Null, Value::Null]);
        }
        a.count_on(gauge.clone());
        let b = a.clone();
        assert_eq!((gauge.current(), gauge.peak()), (4, 4));
        drop(a);
        drop(b);
        assert_eq!((gauge.current(), gauge.peak()), (0, 4));
    }

    #[test]
    #[should_panic(expected = "wrong width")]
    fn a_short_row_is_a_bug() {
        RowBatch::with_capacity(Domain::Holds, 1).push_row([Value::Null]);
    }
}
