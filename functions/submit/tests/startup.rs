//! A bad setting stops start-up with one line naming the variable.

use std::process::Command;

fn start_with(var: &str, value: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_submit"))
        .env(var, value)
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .expect("run the submit binary");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    for (var, value) in [
        ("TRACE_EVENTS_CID_LIMIT", "fifty thousand"),
        ("REDIS_URL", "localhost:6379"),
        ("TRACE_JOB_TIMEOUT_SECONDS", "-1"),
        ("TRACE_HTTP_ADDR", "everywhere"),
    ] {
        let (code, stderr) = start_with(var, value);
        assert_eq!(code, Some(2), "{var}={value}: exit code; stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}={value}: expected one line, got {stderr:?}");
        assert!(stderr.contains(var), "{var}={value}: the line does not name the variable: {stderr:?}");
        assert!(
            stderr.contains("expected"),
            "{var}={value}: the line does not say what is expected: {stderr:?}"
        );
    }
}
