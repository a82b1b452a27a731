//! The table the benchmark prints (Markdown, stdout): one row per figure, from the JSON it writes.

use serde_json::{Map, Value};

use crate::status_load::Placement;
use crate::system::Trace;
use crate::{Args, Part};

/// The worker's memory target (peak RSS, MiB), of the 114,000-id jobs and the MSD jobs.
const WORKER_PEAK_RSS_TARGET_MIB: f64 = 64.0;

/// A figure for the table: whole numbers from 100 up, two decimals below.
fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => v.to_string(),
    }
}

/// The figures of a run, by measurement.
struct Figures<'a>(&'a Map<String, Value>);

impl Figures<'_> {
    /// Field `field` of measurement `key` (null when absent).
    fn get(&self, key: &str, field: &str) -> Value {
        self.0.get(key).map(|v| v[field].clone()).unwrap_or(Value::Null)
    }

    /// Field `field` of measurement `key` as a number (NaN when absent).
    fn num(&self, key: &str, field: &str) -> f64 {
        self.get(key, field).as_f64().unwrap_or(f64::NAN)
    }

    /// Every run's time of measurement `key`, in round order.
    fn runs(&self, key: &str) -> String {
        self.get(key, "runs_seconds")
            .as_array()
            .map(|a| a.iter().map(f).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }

    /// The highest peak RSS of the runs of `key` (its only run's when there is one).
    fn peak(&self, key: &str) -> Value {
        match self.get(key, "max_peak_rss_mib") {
            Value::Null => self.get(key, "peak_rss_mib"),
            v => v,
        }
    }

    /// CPU seconds of each process group during measurement `key`.
    fn cpu(&self, key: &str) -> String {
        self.get(key, "cpu_s")
            .as_object()
            .map(|m| m.iter().map(|(p, s)| format!("{p} {}", f(s))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }
}

/// Prints the table of the figures `r` of the parts `a` ran.
pub fn print_table(r: &Map<String, Value>, a: &Args) {
    let r = Figures(r);
    println!("\n| measure | figure |\n|---|---|");
    println!("| dataset rows ({} ids) | {} |", a.ids, r.get("dataset", "rows")["total"]);
    if a.runs(Part::Worker) {
        for n in [a.small, a.ids] {
            worker_rows(&r, n);
        }
        let small = r.peak(&format!("worker_{}", a.small)).as_f64().unwrap_or(f64::NAN);
        let big = r.peak(&format!("worker_{}", a.ids)).as_f64().unwrap_or(f64::NAN);
        println!("| worker peak RSS {} vs {} ids | {:.2}× |", a.ids, a.small, big / small);
    }
    if a.runs(Part::Stream) {
        let s = format!("stream_{}", a.ids);
        println!(
            "| stream, {} ids | first byte {} ms, {} MB/s, peak RSS {} MiB |",
            a.ids,
            f(&r.get(&s, "first_byte_ms")),
            f(&r.get(&s, "mb_per_s")),
            f(&r.get(&s, "peak_rss_mib"))
        );
    }
    if a.runs(Part::Status) {
        status_rows(&r, a.ids);
    }
    if a.runs(Part::Sync) {
        for k in ["sync_20000_5", "sync_20000_1"] {
            println!(
                "| submit, 20000 ids, {} | HTTP {}, {} ms, peak RSS {} MiB |",
                r.get(k, "domains"),
                r.get(k, "http_status"),
                f(&r.get(k, "latency_ms")),
                f(&r.get(k, "peak_rss_mib"))
            );
        }
    }
    if a.runs(Part::Scale) {
        let key = format!("scale_{}", a.ids);
        let measured = &r.get(&key, "model")["measured"];
        println!(
            "| scale: the network model, measured (database query round trip; 20 MB answer) | direct {} ms, {} MB/s; through the model {} ms, {} MB/s |",
            f(&measured["direct"]["query_round_trip_ms"]),
            f(&measured["direct"]["bulk_mb_per_s"]),
            f(&measured["proxied"]["query_round_trip_ms"]),
            f(&measured["proxied"]["bulk_mb_per_s"]),
        );
        let runs = r.get(&key, "runs");
        for run in runs.as_array().into_iter().flatten() {
            println!(
                "| scale, {} ids, {} workers (2 ms round trips, 50 MB/s a connection) | {} s, {}× one worker, {} rows/s, peak RSS per worker ≤ {} MiB (target {WORKER_PEAK_RSS_TARGET_MIB}) |",
                a.ids,
                run["workers"],
                f(&run["seconds"]),
                f(&run["speed_up"]),
                f(&run["rows_per_s"]),
                f(&run["max_peak_rss_mib"]),
            );
        }
    }
    if a.runs(Part::Msd) {
        for trace in Trace::MSD {
            msd_row(&r, &trace, a.ids);
        }
    }
    if a.runs(Part::Codecs) {
        codec_rows(&r);
    }
    if a.runs(Part::E2e) {
        for design in ["now", "seed"] {
            e2e_rows(&r, &format!("e2e_{design}_{}", a.ids));
        }
    }
}

/// The job's cost goal at us-east-1 list prices (issue 15).
const JOB_COST_TARGET_USD: f64 = 0.002;
/// The goal for submit → last record at the client through the chunk URLs, 114,000 ids (issue 15).
const CHUNK_URLS_TARGET_S: f64 = 15.0;

/// The rows of one design's end-to-end run: each reader's wait and the job's cost.
fn e2e_rows(r: &Figures, key: &str) {
    let Some(run) = r.0.get(key) else { return };
    let design = format!(
        "{} design ({} records per chunk, {}; {} objects written, {} MB stored of {} MB NDJSON)",
        run["design"].as_str().unwrap_or_default(),
        run["chunk_records"],
        run["encoding"].as_str().unwrap_or_default(),
        run["object_writes"],
        f(&run["stored_mb"]),
        f(&run["ndjson_mb"]),
    );
    println!(
        "| {design}: submit → finished at the client (polling every 0.5 s) | {} s (worker run {} s, submit {} ms) |",
        f(&run["wait"]["finished_at_client_s"]),
        f(&run["wait"]["worker_run_s"]),
        f(&run["wait"]["submit_ms"]),
    );
    for (reader, what) in [
        ("chunk_urls", "through the chunk URLs, 4 at once"),
        ("stream", "through the stream, Lambda's limits modelled (6 MB, then 2 MB/s, ≤ 200 MiB)"),
        ("pages", "through result pages at the rate limit (60 a minute)"),
    ] {
        let Some(x) = run["readers"].get(reader) else { continue };
        let total = x["submit_to_last_record_s"].as_f64();
        let usd = x["cost"]["total_usd"].as_f64();
        let verdict = |ok: bool| if ok { "✓" } else { "✗" };
        let wait = match (reader, total) {
            (_, None) => format!(
                "not possible: {} ({} bytes on the wire)",
                if x["read"]["http_status"] == 200 {
                    "over Lambda's 200 MiB cap".to_owned()
                } else {
                    format!("refused {}", x["read"]["refused"])
                },
                x["read"]["wire_bytes"]
            ),
            ("chunk_urls", Some(t)) => format!(
                "**{t:.1} s** (target ≤ {CHUNK_URLS_TARGET_S} s {})",
                verdict(t <= CHUNK_URLS_TARGET_S)
            ),
            (_, Some(t)) => format!("{t:.1} s"),
        };
        let cost = match usd {
            Some(usd) => format!(
                "**${usd:.5}** a job (target ≤ ${JOB_COST_TARGET_USD} {}): Lambda ${:.5}, S3 PUT ${:.5}, GET ${:.6}, storage ${:.6}, API ${:.6}, SQS ${:.7}, Redis ${:.7}; transfer to the internet ${:.4} apart",
                verdict(usd <= JOB_COST_TARGET_USD),
                x["cost"]["lambda_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["s3_put_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["s3_get_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["s3_storage_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["api_gateway_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["sqs_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["redis_usd"].as_f64().unwrap_or(f64::NAN),
                x["cost"]["transfer_out_usd_if_internet"].as_f64().unwrap_or(f64::NAN),
            ),
            None => "—".to_owned(),
        };
        println!("| {design}: submit → last record {what} | {wait}; {cost} |");
    }
}

/// The rows of the chunk encodings compared.
fn codec_rows(r: &Figures) {
    let Some(c) = r.0.get("codecs") else { return };
    for codec in c["codecs"].as_array().into_iter().flatten() {
        println!(
            "| chunk encoding {} ({} MB NDJSON of {} ids, chunks of {} records) | ratio {}, writer {} ms CPU per MB ({} MB/s), reader {} MB/s{} |",
            codec["codec"].as_str().unwrap_or_default(),
            f(&c["ndjson_mb"]),
            c["ids"],
            c["chunk_records"],
            f(&codec["ratio"]),
            f(&codec["encode_ms_per_mb"]),
            f(&codec["encode_mb_per_s"]),
            f(&codec["decode_mb_per_s"]),
            if codec["round_trip_ok"] == true { "" } else { " (ROUND TRIP FAILED)" },
        );
    }
}

/// The row of the MSD job `trace` at `n` ids, against the worker's memory target.
fn msd_row(r: &Figures, trace: &Trace, n: u64) {
    let key = format!("{}_{n}", trace.name);
    let peak = r.num(&key, "peak_rss_mib");
    let verdict = if peak <= WORKER_PEAK_RSS_TARGET_MIB { "✓" } else { "✗" };
    println!(
        "| worker, MSD {} ({}), {n} ids | {} s, {} records/s, {} records, {} MB NDJSON ({} MB stored), {} object writes, aggregation {} bytes, peak RSS {} MiB (target ≤ {WORKER_PEAK_RSS_TARGET_MIB} MiB {verdict}); CPU s {} |",
        trace.name.trim_start_matches("msd_"),
        trace.domain_names(" + "),
        f(&r.get(&key, "seconds")),
        f(&r.get(&key, "records_per_s")),
        r.get(&key, "records"),
        f(&r.get(&key, "ndjson_mb")),
        f(&r.get(&key, "stored_mb")),
        r.get(&key, "object_store_writes"),
        r.get(&key, "aggregation_bytes"),
        f(&r.get(&key, "peak_rss_mib")),
        r.cpu(&key),
    );
}

/// The rows of the floor and worker rounds at `n` ids.
fn worker_rows(r: &Figures, n: u64) {
    let (floor, worker) = (format!("floor_{n}"), format!("worker_{n}"));
    println!(
        "| floor read, {n} ids | {} s ({} rows/s; runs {} s) |",
        f(&r.get(&floor, "seconds")),
        f(&r.get(&floor, "rows_per_s")),
        r.runs(&floor)
    );
    println!(
        "| worker, {n} ids | {} s, {} records/s, {} MB NDJSON at {} MB/s ({} MB stored), {} object writes, peak RSS {} MiB (highest of the runs; runs {} s) |",
        f(&r.get(&worker, "seconds")),
        f(&r.get(&worker, "records_per_s")),
        f(&r.get(&worker, "ndjson_mb")),
        f(&r.get(&worker, "ndjson_mb_per_s")),
        f(&r.get(&worker, "stored_mb")),
        r.get(&worker, "object_store_writes"),
        f(&r.peak(&worker)),
        r.runs(&worker),
    );
    println!("| worker run CPU s, {n} ids | {} |", r.cpu(&worker));
    let ratio = r.num(&worker, "seconds") / r.num(&floor, "seconds");
    let rounds = r
        .get(&format!("ratio_{n}"), "rounds")
        .as_array()
        .map(|a| a.iter().map(|r| format!("{:.2}", r.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>())
        .unwrap_or_default()
        .join(", ");
    println!(
        "| worker / floor, {n} ids | median of the rounds' ratios {:.2}× (rounds {rounds}); ratio of the medians {ratio:.2}× |",
        r.num(&format!("ratio_{n}"), "median_of_rounds")
    );
}

/// The rows of status under load, with no job and during an `ids`-id job in each placement.
fn status_rows(r: &Figures, ids: u64) {
    let figures = |key: &str| {
        format!(
            "p50 {} ms, p99 {} ms, {} requests, {} errors; status process waited {} ms per request for a CPU",
            f(&r.get(key, "p50_ms")),
            f(&r.get(key, "p99_ms")),
            r.get(key, "requests"),
            r.get(key, "errors"),
            f(&r.get(key, "status_cpu_wait_ms_per_request"))
        )
    };
    println!("| status at 200 req/s, no job running | {} |", figures("status_no_job"));
    for placement in Placement::ALL {
        let key = placement.key();
        let not_applied = match placement {
            Placement::Shared => false,
            Placement::SharedRealtime => r.get(key, "realtime") != Value::Bool(true),
            Placement::Isolated => r.get(key, "isolated") != Value::Bool(true),
        };
        let note = if not_applied { " (NOT APPLIED: see the warnings)" } else { "" };
        println!(
            "| status at 200 req/s during a {ids}-id job, {}{note} | {} |",
            placement.describe(),
            figures(key)
        );
    }
}
