//! The window a backfill run covers: `[end - length, end)`, `end` a multiple of the length counted
//! from the Unix epoch.

use std::ops::Range;
use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// A backfill window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First instant in the window.
    pub start: DateTime<Utc>,
    /// First instant after it.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window of `length` whose end is `at` truncated to a multiple of `length` (counted from the
    /// Unix epoch): the last whole window before `at`.
    pub fn ending_at(at: DateTime<Utc>, length: Duration) -> Window {
        let length = length.as_secs().clamp(1, i64::MAX as u64) as i64;
        let end = at.timestamp().div_euclid(length) * length;
        let instant = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(at);
        Window { start: instant(end.saturating_sub(length)), end: instant(end) }
    }

    /// The window an EventBridge event asks for: the one ending at its `time` (at `now` when it has none).
    pub fn of_event(event: &EventBridgeEvent, length: Duration, now: DateTime<Utc>) -> Window {
        Window::ending_at(event.time.unwrap_or(now), length)
    }

    /// `start/end`, both RFC 3339 in seconds: the window's part of marker keys.
    pub fn key(&self) -> String {
        format!("{}/{}", rfc3339(self.start), rfc3339(self.end))
    }

    /// Whether `at` is in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.range().contains(&at)
    }

    /// `start..end`.
    pub fn range(&self) -> Range<DateTime<Utc>> {
        self.start..self.end
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", rfc3339(self.start), rfc3339(self.end))
    }
}

/// RFC 3339 in whole seconds, `Z` for UTC.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A UTC instant, for the backfill's tests.
    pub(in crate::backfill) fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn a_window_ends_at_the_time_truncated_to_its_length() {
        let hour = Duration::from_secs(3600);
        let w = Window::ending_at(at(2026, 3, 12, 9, 20, 0), hour);
        assert_eq!((w.start, w.end), (at(2026, 3, 12, 8, 0, 0), at(2026, 3, 12, 9, 0, 0)));
        assert_eq!(w.key(), "2026-03-12T08:00:00Z/2026-03-12T09:00:00Z");
        // On a boundary, the window that just ended.
        let w = Window::ending_at(at(2026, 3, 12, 9, 0, 0), hour);
        assert_eq!(w.end, at(2026, 3, 12, 9, 0, 0));
        // Every firing time within one period names the same window.
        let day = Duration::from_secs(86_400);
        for t in [at(2025, 1, 2, 0, 0, 0), at(2025, 1, 2, 0, 0, 1), at(2025, 1, 2, 23, 59, 59)] {
            assert_eq!(Window::ending_at(t, day).to_string(), "[2025-01-01T00:00:00Z, 2025-01-02T00:00:00Z)");
        }
        assert!(w.contains(w.start) && !w.contains(w.end));
    }

    #[test]
    fn the_scheduled_event_names_its_window() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/backfill-schedule.json"
        ))
        .expect("events/backfill-schedule.json");
        let event: EventBridgeEvent = serde_json::from_str(&text).expect("an EventBridge event");
        assert_eq!(event.detail_type, "Scheduled Event");
        let w = Window::of_event(&event, Duration::from_secs(3600), Utc::now());
        assert_eq!(w.end, Window::ending_at(event.time.unwrap(), Duration::from_secs(3600)).end);
        assert!(w.end <= event.time.unwrap() && event.time.unwrap() - w.end < chrono::Duration::hours(1));
    }
}
