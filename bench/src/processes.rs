//! The processes of a measurement, read and steered through `/proc` and util-linux: a child process
//! killed on drop with its peak RSS, the service stack's processes by group, CPU seconds, the time a
//! process waited for a CPU, and pinning (`taskset`) and scheduling class (`chrt`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

/// A child process of the benchmark, killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Peak resident set size so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of the local service stack, by group: the stack's PostgreSQL, the emulator and Redis.
pub fn stack_processes() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|p| p.chars().all(|c| c.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(comm) = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c) else {
            continue;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let group = if comm == "postgres" {
            "postgres"
        } else if comm.starts_with("redis-server") {
            "redis"
        } else if cmdline.contains("localstack") || cmdline.contains("moto_server") {
            "emulator"
        } else {
            continue;
        };
        out.push((group, pid.to_owned()));
    }
    out
}

/// CPU seconds used so far by process `pid` (or `self`); with `reaped`, also by its children that
/// ended and were waited for (PostgreSQL's backends of closed connections, counted by the postmaster).
fn cpu_seconds(pid: &str, reaped: bool) -> Option<f64> {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick = *TICK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if reaped {
        ticks += field(13)? + field(14)?;
    }
    Some(ticks / tick)
}

/// CPU seconds used so far by groups of processes: the stack's PostgreSQL (its ended backends
/// included), emulator and Redis, this process, and the given child pids (summed per name).
pub fn cpu_snapshot(children: &[(&'static str, u32)]) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for (group, pid) in stack_processes() {
        if let Some(secs) = cpu_seconds(&pid, group == "postgres") {
            *out.entry(group).or_insert(0.0) += secs;
        }
    }
    if let Some(secs) = cpu_seconds("self", false) {
        out.insert("bench", secs);
    }
    for (name, pid) in children {
        if let Some(secs) = cpu_seconds(&pid.to_string(), false) {
            *out.entry(name).or_insert(0.0) += secs;
        }
    }
    out
}

/// Runs `program args… pid` for each of `pids` (quietly); returns how many failed.
fn run_for_each(program: &str, args: &[&str], pids: &[String]) -> usize {
    pids.iter()
        .filter(|pid| {
            !Command::new(program)
                .args(args)
                .arg(pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// Pins processes (every thread) to the CPUs in `cpus` (a `taskset` list such as `0` or `0-3`); says
/// so when it cannot.
pub fn pin(pids: &[String], cpus: &str) {
    let failed = run_for_each("taskset", &["--all-tasks", "--cpu-list", "-p", cpus], pids);
    if failed > 0 {
        eprintln!("warning: could not pin {failed} of {} processes to CPUs {cpus}", pids.len());
    }
}

/// Puts processes (every thread) in the real-time class, `SCHED_FIFO` priority 10 with reset-on-fork
/// (what they start later runs in the normal class), or back in the normal class. Needs
/// `CAP_SYS_NICE` (root); says so and returns false when it cannot.
pub fn realtime(pids: &[String], on: bool) -> bool {
    let args: &[&str] = if on {
        &["--all-tasks", "--pid", "--fifo", "--reset-on-fork", "10"]
    } else {
        &["--all-tasks", "--pid", "--other", "0"]
    };
    let failed = run_for_each("chrt", args, pids);
    if failed > 0 {
        let class = if on { "the real-time class (needs CAP_SYS_NICE)" } else { "the normal class" };
        eprintln!("warning: could not put {failed} of {} processes in {class}", pids.len());
    }
    failed == 0
}

/// Nanoseconds the threads of process `pid` have spent runnable but waiting for a CPU
/// (`/proc/<pid>/task/*/schedstat`, second field).
pub fn run_delay_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// CPU seconds per group between two snapshots, to the hundredth.
pub fn cpu_delta(before: &BTreeMap<&'static str, f64>, after: &BTreeMap<&'static str, f64>) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in after {
        out.insert(
            k.to_string(),
            json!(((v - before.get(k).copied().unwrap_or(0.0)) * 100.0).round() / 100.0),
        );
    }
    Value::Object(out)
}
