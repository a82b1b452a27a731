//! What a hostile request body costs to parse: the peak of heap memory `TraceRequest::parse` holds,
//! measured by a counting allocator, for 8 MiB bodies (`TRACE_MAX_BODY_BYTES`) built to be expensive.
//! Each must stay within 10x its size (it was ~55x: 450 MB for an 8 MiB body of tiny
//! ids). The figures are printed (`cargo test -p trace-core --test hostile_memory -- --nocapture`).

use std::sync::Mutex;

use peak_alloc::PeakAlloc;
use trace_core::TraceRequest;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// One measurement at a time (the counters are global).
static SERIAL: Mutex<()> = Mutex::new(());

const BODY: usize = 8 * 1024 * 1024;

/// Builds a body of `{"<field>":[` + repeated elements + `]}` up to 8 MiB (`prefix` goes first).
fn body(prefix: &str, field: &str, mut element: impl FnMut(usize) -> String) -> Vec<u8> {
    let mut out = format!("{{{prefix}\"{field}\":[").into_bytes();
    let mut i = 0;
    while out.len() < BODY - 64 {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(element(i).as_bytes());
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

/// The peak heap bytes parsing `body` held above what was held before, and the outcome.
fn peak_of(body: &[u8]) -> (usize, Result<TraceRequest, trace_core::TraceError>) {
    let base = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let parsed = TraceRequest::parse(body, BODY);
    (ALLOCATOR.peak_usage().saturating_sub(base), parsed)
}

/// A base-36 id of `i` (unique, 1 to 5 characters for the ids an 8 MiB body holds).
fn short_id(mut i: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(digits[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    format!("\"{}\"", String::from_utf8(s).unwrap())
}

#[test]
fn hostile_bodies_cost_a_small_multiple_of_their_size() {
    let _one = SERIAL.lock().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unique tiny ids", body("", "container_ids", short_id)),
        ("one tiny id repeated", body("", "container_ids", |_| "\"a\"".to_owned())),
        ("numbers instead of ids", body("", "container_ids", |_| "1".to_owned())),
        ("empty objects instead of ids", body("", "container_ids", |_| "{}".to_owned())),
        ("a domain repeated", body("\"container_ids\":[\"a\"],", "domains", |_| "\"history\"".to_owned())),
        ("a huge params array", {
            let mut b = body("\"container_ids\":[\"a\"],\"params\":{", "y", |_| "0".to_owned());
            b.extend_from_slice(b"}");
            b
        }),
    ];
    for (name, body) in cases {
        let (peak, parsed) = peak_of(&body);
        let ratio = peak as f64 / body.len() as f64;
        let outcome = match &parsed {
            Ok(r) => format!("{} ids", r.ids.len()),
            Err(e) => format!("refused: {}", e.code()),
        };
        println!(
            "{name:>30}: {:>5.1} MiB body, peak {:>6.1} MiB = {ratio:>4.1}x ({outcome})",
            body.len() as f64 / 1048576.0,
            peak as f64 / 1048576.0
        );
        assert!(
            ratio <= 10.0,
            "{name}: parsing held {peak} bytes for a {} byte body ({ratio:.1}x)",
            body.len()
        );
    }
}
