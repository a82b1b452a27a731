//! Fuzz targets, with proptest (they run on stable, in CI): request bodies, result-page query
//! parameters, queue messages, NDJSON stream lines and stored checkpoints. Each target checks that
//! hostile input never panics and that what is accepted keeps its invariants.
//!
//! In CI each target runs one round (2,000 cases). For a long run, `TRACE_FUZZ_SECONDS` is how long
//! each keeps going (rounds of fresh random cases); the figures are printed:
//! `TRACE_FUZZ_SECONDS=600 cargo test --release -p trace-core --test fuzz -- --nocapture --test-threads 4`.

use std::fmt::Debug;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use trace_core::checkpoint::Checkpoint;
use trace_core::message::ShardMessage;
use trace_core::ndjson::{chunk_lines, records_lines_len, write_records_lines, StreamLine};
use trace_core::paging::{PageQuery, MAX_PAGE};
use trace_core::{Domain, TraceRequest};

/// Runs `check` on cases of `strategy`, rounds of 2,000 until `TRACE_FUZZ_SECONDS` have passed (one
/// round when unset); panics with the smallest failing case.
fn fuzz<S>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    const ROUND: u32 = 2_000;
    let seconds: u64 = std::env::var("TRACE_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let mut runner =
            TestRunner::new(Config { cases: ROUND, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("{name}: {e}");
        }
        cases += u64::from(ROUND);
        if started.elapsed().as_secs() >= seconds {
            break;
        }
    }
    println!("fuzz {name}: {cases} cases in {:.0} s, no failure", started.elapsed().as_secs_f64());
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        prop_oneof![Just(""), Just(" "), Just("GA25010001-A01"), Just("history"), Just("mid_section_defect")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Text that looks like an id: real ones, spaces, control characters, long ones.
fn id_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        (0u32..200).prop_map(|n| Value::from(format!("GA{n:08}"))),
        (0usize..100).prop_map(|n| Value::from("x".repeat(n))),
        Just(Value::from(" \t GA1 \n")),
        Just(Value::from("a\u{0007}b")),
        json_value(),
    ]
}

/// A request body: bytes, or a JSON object with the request's fields (values of any shape).
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let fields = (
        prop::option::of(prop_oneof![
            prop::collection::vec(id_text(), 0..40).prop_map(Value::Array),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            prop::collection::vec(
                prop_oneof![
                    Just(Value::from("history")),
                    Just(Value::from("holds")),
                    Just(Value::from("upstream_history")),
                    any::<String>().prop_map(Value::from)
                ],
                0..10
            )
            .prop_map(Value::Array),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            Just(Value::from("query_tool")),
            Just(Value::from("mid_section_defect")),
            json_value()
        ]),
        prop::option::of(json_value()),
    )
        .prop_map(|(ids, domains, profile, params)| {
            let mut body = serde_json::Map::new();
            for (k, v) in
                [("container_ids", ids), ("domains", domains), ("profile", profile), ("params", params)]
            {
                if let Some(v) = v {
                    body.insert(k.to_owned(), v);
                }
            }
            serde_json::to_vec(&body).unwrap_or_default()
        });
    prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..512), 4 => fields]
}

#[test]
fn fuzz_request_bodies() {
    fuzz("request bodies", request_body(), |body| {
        if let Ok(r) = TraceRequest::parse(&body, 1 << 20) {
            prop_assert!(!r.ids.is_empty());
            let mut seen = std::collections::HashSet::new();
            for id in &r.ids {
                let s = id.as_str();
                prop_assert!(!s.is_empty() && s.chars().count() <= 64 && s.trim() == s);
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert!(seen.insert(s.to_owned()), "a repeated id: {s:?}");
            }
            prop_assert!(!r.domains.is_empty());
            let unique: std::collections::HashSet<_> = r.domains.iter().collect();
            prop_assert_eq!(unique.len(), r.domains.len());
        }
        Ok(())
    });
}

/// A query parameter as a caller may send it.
fn parameter() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        any::<String>(),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..6000).prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("+5".to_owned()),
        Just(" 5".to_owned()),
        Just("holds".to_owned()),
    ])
}

#[test]
fn fuzz_query_parameters() {
    let chunks = prop::collection::vec(prop_oneof![0u64..30_000, Just(u64::MAX), any::<u64>()], 0..12);
    fuzz(
        "query parameters",
        (parameter(), parameter(), parameter(), chunks, any::<u64>()),
        |(d, o, l, chunks, total)| {
            let Ok(q) = PageQuery::parse(d.as_deref(), o.as_deref(), l.as_deref()) else { return Ok(()) };
            prop_assert!(q.limit >= 1 && q.limit <= MAX_PAGE);
            let slices = q.covering(&chunks, total);
            let taken: u128 = slices.iter().map(|s| u128::from(s.take)).sum();
            prop_assert!(taken <= q.limit as u128);
            for pair in slices.windows(2) {
                prop_assert!(pair[0].chunk < pair[1].chunk);
            }
            for s in &slices {
                prop_assert!(u128::from(s.skip) + u128::from(s.take) <= u128::from(chunks[s.chunk]));
            }
            // With consistent counts, the page is exactly what the domain holds from the offset.
            let sum: u128 = chunks.iter().map(|c| u128::from(*c)).sum();
            if let Ok(sum) = u64::try_from(sum) {
                let slices = q.covering(&chunks, sum);
                let taken: u64 = slices.iter().map(|s| s.take).sum();
                prop_assert_eq!(taken, sum.saturating_sub(q.offset).min(q.limit as u64));
            }
            Ok(())
        },
    );
}

/// A queue message body: any text, or a message with fields of any value.
fn message_body() -> impl Strategy<Value = String> {
    let good = ShardMessage::whole(
        trace_core::JobId::new(),
        trace_core::Profile::QueryTool,
        vec![Domain::Holds],
        10,
    );
    let fields = prop::collection::vec(
        (
            prop_oneof![
                Just("job_id"),
                Just("shard"),
                Just("shards"),
                Just("ids_from"),
                Just("ids_to"),
                Just("profile"),
                Just("domains"),
                Just("continuation")
            ],
            prop_oneof![json_value(), any::<u64>().prop_map(Value::from), any::<u32>().prop_map(Value::from)],
        ),
        0..6,
    )
    .prop_map(move |changes| {
        let mut v = serde_json::to_value(&good).unwrap_or_default();
        for (k, value) in changes {
            v[k] = value;
        }
        v.to_string()
    });
    prop_oneof![1 => any::<String>(), 4 => fields]
}

#[test]
fn fuzz_queue_messages() {
    fuzz("queue messages", message_body(), |body| {
        if let Ok(m) = ShardMessage::parse(&body) {
            prop_assert!(m.shards >= 1 && m.shard < m.shards && m.ids_from <= m.ids_to);
            prop_assert_eq!(ShardMessage::parse(&m.to_body()).ok(), Some(m));
        }
        Ok(())
    });
}

/// A stored chunk: any bytes, or records (JSON objects, one a line).
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let records = prop::collection::vec(
        prop::collection::vec((any::<String>(), json_value()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        0..30,
    )
    .prop_map(|records| {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(&serde_json::to_vec(&r).unwrap_or_default());
            out.push(b'\n');
        }
        out
    });
    prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..300), 3 => records]
}

#[test]
fn fuzz_ndjson_lines() {
    let edge = || prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()];
    let cases = (chunk(), prop_oneof![0u64..8, edge()], prop_oneof![0u64..100, edge()]);
    fuzz("ndjson lines", cases, |(chunk, batch_size, first_batch)| {
        let mut out = Vec::new();
        let (records, lines) =
            write_records_lines(&mut out, Domain::History, first_batch, &chunk, batch_size);
        prop_assert_eq!(lines, chunk_lines(records, batch_size));
        prop_assert_eq!(out.iter().filter(|b| **b == b'\n').count() as u64, lines);
        // Any line of the stream parses or is refused, never panics.
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let _ = serde_json::from_slice::<StreamLine>(line);
        }
        let _ = serde_json::from_slice::<StreamLine>(&chunk);
        // Records as stored (JSON, newline-terminated): the lines carry them all, in order, and the
        // size known before the first byte is the size written.
        let valid = chunk.is_empty()
            || (chunk.ends_with(b"\n")
                && chunk[..chunk.len() - 1]
                    .split(|b| *b == b'\n')
                    .all(|l| serde_json::from_slice::<Value>(l).is_ok()));
        if valid {
            let expected =
                records_lines_len(Domain::History, first_batch, records, chunk.len() as u64, batch_size);
            prop_assert_eq!(expected, out.len() as u64);
            let mut back = Vec::new();
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value =
                    serde_json::from_slice(line).map_err(|e| TestCaseError::fail(e.to_string()))?;
                back.extend(v["data"].as_array().cloned().unwrap_or_default());
            }
            let stored: Vec<Value> = chunk
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap_or_default())
                .collect();
            prop_assert_eq!(back, stored);
        }
        Ok(())
    });
}

#[test]
fn fuzz_stored_checkpoints() {
    fuzz("stored checkpoints", prop::collection::vec(any::<u8>(), 0..600), |bytes| {
        let _ = Checkpoint::decode(&bytes);
        // Garbage followed by a valid header line.
        let mut framed = bytes.clone();
        framed.push(b'\n');
        framed.extend_from_slice(br#"{"job_id":"7d5f2d1e-8d3f-4a37-9d2a-5b8c3c1a9e10","shard":0,"ids_from":0,"ids_to":10,"ids_done":0,"id_batch_size":5,"chunk_records":3,"encoding":"gzip","domains":[{"domain":"holds","chunks":[],"open":{"records":1,"bytes":4,"crc32":0,"stored_bytes":9}}],"ran_for_ms":0,"attempt":1,"saved_at":"2026-12-01T00:00:00Z"}"#);
        let _ = Checkpoint::decode(&framed);
        Ok(())
    });
}
