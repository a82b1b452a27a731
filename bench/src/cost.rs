//! The AWS cost of one job at us-east-1 list prices, from the counts a run measured.
//!
//! Only what a job adds is counted: Lambda requests and GB-seconds per function (billed per ms, arm64),
//! API Gateway HTTP API requests, S3 requests and storage for the result's lifetime, SQS requests and
//! Redis commands (ElastiCache Serverless ECPUs, one per command of ≤ 1 KB). Fixed monthly costs (the
//! cache's minimum storage, RDS, the queues' idle polling by Lambda) are not per job and are left out;
//! data transfer to the internet is shown apart (none when the reader is in the region).

use serde_json::{json, Value};

/// List prices, us-east-1 (2026).
pub mod price {
    /// Lambda, arm64, per GB-second.
    pub const LAMBDA_GB_S: f64 = 0.000_013_333_4;
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// API Gateway HTTP API, per request (first 300 million a month).
    pub const API_REQUEST: f64 = 1.00 / 1e6;
    /// S3 Standard PUT, COPY, POST, LIST, per request.
    pub const S3_PUT: f64 = 0.005 / 1e3;
    /// S3 Standard GET and others, per request.
    pub const S3_GET: f64 = 0.0004 / 1e3;
    /// S3 Standard storage, per GB-month (30 days).
    pub const S3_GB_MONTH: f64 = 0.023;
    /// SQS standard queue, per request (64 KB chunk).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// ElastiCache Serverless for Valkey, per ECPU.
    pub const REDIS_ECPU: f64 = 0.0023 / 1e6;
    /// Data transfer out to the internet, per GB (first 10 TB a month).
    pub const TRANSFER_OUT_GB: f64 = 0.09;
}

/// One function's share of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocations {
    /// The function.
    pub function: &'static str,
    /// Its memory (MB) in `template.yaml`.
    pub memory_mb: u64,
    /// Invocations for the job.
    pub count: u64,
    /// Billed milliseconds of all of them (each rounded up to the ms).
    pub billed_ms: u64,
}

impl Invocations {
    fn gb_seconds(&self) -> f64 {
        self.memory_mb as f64 / 1024.0 * self.billed_ms as f64 / 1e3
    }
}

/// What one job used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCounts {
    /// Per function.
    pub lambda: Vec<Invocations>,
    /// HTTP API requests (submit, status polls, the chunk list).
    pub api_requests: u64,
    /// Object writes (input, chunks, manifest).
    pub s3_puts: u64,
    /// Object reads.
    pub s3_gets: u64,
    /// Bytes kept in S3 for the job's lifetime.
    pub stored_bytes: u64,
    /// That lifetime in seconds (`TRACE_JOB_TTL_SECONDS`; the bucket's lifecycle rule deletes after it).
    pub stored_seconds: u64,
    /// SQS requests (send, receive, visibility extensions, delete).
    pub sqs_requests: u64,
    /// Redis commands.
    pub redis_commands: u64,
    /// Bytes the reader downloads.
    pub transfer_bytes: u64,
}

/// The cost of `c` in US dollars, item by item, with the total (transfer to the internet apart).
pub fn dollars(c: &JobCounts) -> Value {
    let lambda: Vec<Value> = c
        .lambda
        .iter()
        .map(|i| {
            let usd = i.gb_seconds() * price::LAMBDA_GB_S + i.count as f64 * price::LAMBDA_REQUEST;
            json!({ "function": i.function, "memory_mb": i.memory_mb, "invocations": i.count,
                    "gb_s": i.gb_seconds(), "usd": usd })
        })
        .collect();
    let lambda_usd: f64 = lambda.iter().filter_map(|l| l["usd"].as_f64()).sum();
    let gb = c.stored_bytes as f64 / 1e9;
    let items = [
        ("lambda", lambda_usd),
        ("api_gateway", c.api_requests as f64 * price::API_REQUEST),
        ("s3_put", c.s3_puts as f64 * price::S3_PUT),
        ("s3_get", c.s3_gets as f64 * price::S3_GET),
        ("s3_storage", gb * price::S3_GB_MONTH * c.stored_seconds as f64 / (30.0 * 86_400.0)),
        ("sqs", c.sqs_requests as f64 * price::SQS_REQUEST),
        ("redis", c.redis_commands as f64 * price::REDIS_ECPU),
    ];
    let total: f64 = items.iter().map(|(_, usd)| usd).sum();
    let mut out = json!({
        "total_usd": total, "lambda_functions": lambda,
        "counts": { "api_requests": c.api_requests, "s3_puts": c.s3_puts, "s3_gets": c.s3_gets,
                    "stored_mb": gb * 1e3, "stored_hours": c.stored_seconds as f64 / 3600.0,
                    "sqs_requests": c.sqs_requests, "redis_commands": c.redis_commands },
        "transfer_out_usd_if_internet": c.transfer_bytes as f64 / 1e9 * price::TRANSFER_OUT_GB,
    });
    for (name, usd) in items {
        out[format!("{name}_usd")] = json!(usd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_s_cost_adds_up_its_items() {
        let counts = JobCounts {
            lambda: vec![Invocations { function: "worker", memory_mb: 2048, count: 1, billed_ms: 10_000 }],
            api_requests: 1_000_000,
            s3_puts: 1000,
            s3_gets: 1000,
            stored_bytes: 1_000_000_000,
            stored_seconds: 30 * 86_400,
            sqs_requests: 1_000_000,
            redis_commands: 1_000_000,
            transfer_bytes: 2_000_000_000,
        };
        let usd = dollars(&counts);
        let lambda = 20.0 * price::LAMBDA_GB_S + price::LAMBDA_REQUEST;
        let expected = lambda + 1.0 + 0.005 + 0.0004 + 0.023 + 0.40 + 0.0023;
        assert!((usd["total_usd"].as_f64().unwrap() - expected).abs() < 1e-9, "{usd}");
        assert!((usd["lambda_functions"][0]["gb_s"].as_f64().unwrap() - 20.0).abs() < 1e-9);
        assert!((usd["transfer_out_usd_if_internet"].as_f64().unwrap() - 0.18).abs() < 1e-9);
    }
}
