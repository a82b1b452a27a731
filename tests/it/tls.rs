//! TLS at start-up, as a function starts (`Backends::from_config` on a configuration): the stack's
//! CA is accepted; a wrong CA, a bundle that is missing or not PEM, or a host name the certificate
//! does not carry stops start-up with an error naming the variable to fix. And `sslmode`'s meaning,
//! seen from the server (`pg_stat_ssl`).

use std::collections::HashMap;

use trace_adapters::runtime::{Backends, BackendsFromConfig};
use trace_adapters::source::postgres::{pool_with, PgTlsOptions};
use trace_core::config::{Config, SslMode};
use trace_integration::{pg_connection_is_encrypted, required, unique};

fn config(pairs: &[(&str, String)]) -> Config {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Config::from_lookup(|k| map.get(k).cloned()).expect("valid configuration")
}

/// Start-up's error text with this configuration; panics when start-up succeeds.
async fn start_up_error(pairs: &[(&str, String)]) -> String {
    match Backends::from_config(&config(pairs)).await {
        Ok(_) => panic!("start-up succeeded with {:?}", pairs.iter().map(|(k, _)| k).collect::<Vec<_>>()),
        Err(e) => {
            eprintln!("start-up error: {e}");
            e.to_string()
        }
    }
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is missing from the error: {text}");
    }
}

/// A file that exists but holds no certificate.
fn not_pem() -> String {
    let path = std::env::temp_dir().join(unique("not-a-ca"));
    std::fs::write(&path, "this is not a certificate\n").expect("write");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn redis_over_tls_with_the_stack_ca_starts() {
    let ca = required("TRACE_TEST_CA_FILE");
    let backends = Backends::from_config(&config(&[
        ("REDIS_URL", required("TRACE_TEST_REDIS_TLS_URL")),
        ("REDIS_TLS_CA_FILE", ca),
    ]))
    .await
    .expect("start-up over TLS");
    let verdict = backends.limiter.hit(&unique("caller")).await.expect("a command over TLS");
    assert!(matches!(verdict, trace_core::ports::RateVerdict::Allowed), "{verdict:?}");
}

#[tokio::test]
async fn a_wrong_redis_ca_stops_start_up_naming_the_variable() {
    let other = required("TRACE_TEST_OTHER_CA_FILE");
    let e = start_up_error(&[
        ("REDIS_URL", required("TRACE_TEST_REDIS_TLS_URL")),
        ("REDIS_TLS_CA_FILE", other.clone()),
    ])
    .await;
    assert_contains(&e, &["Redis", &format!("REDIS_TLS_CA_FILE={other}"), "does not chain to a trusted CA"]);
}

#[tokio::test]
async fn redis_with_the_system_roots_refuses_the_private_ca() {
    let e = start_up_error(&[("REDIS_URL", required("TRACE_TEST_REDIS_TLS_URL"))]).await;
    assert_contains(&e, &["REDIS_TLS_CA_FILE is unset", "does not chain to a trusted CA"]);
}

#[tokio::test]
async fn rediss_to_a_host_the_certificate_does_not_name_is_refused() {
    let e = start_up_error(&[
        ("REDIS_URL", required("TRACE_TEST_REDIS_TLS_WRONG_HOST_URL")),
        ("REDIS_TLS_CA_FILE", required("TRACE_TEST_CA_FILE")),
    ])
    .await;
    assert_contains(&e, &["127.0.0.2", "does not name the host"]);
}

#[tokio::test]
async fn a_redis_ca_file_missing_or_not_pem_stops_start_up_naming_the_variable() {
    let url = required("TRACE_TEST_REDIS_TLS_URL");
    let e =
        start_up_error(&[("REDIS_URL", url.clone()), ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem".into())])
            .await;
    assert_contains(&e, &["REDIS_TLS_CA_FILE=/nonexistent/ca.pem", "cannot read"]);
    let file = not_pem();
    let e = start_up_error(&[("REDIS_URL", url), ("REDIS_TLS_CA_FILE", file.clone())]).await;
    assert_contains(&e, &[&format!("REDIS_TLS_CA_FILE={file}"), "not a PEM CA bundle"]);
}

#[tokio::test]
async fn postgres_verify_full_with_the_stack_ca_starts() {
    Backends::from_config(&config(&[
        ("DATABASE_URL", required("TRACE_TEST_DATABASE_TLS_URL")),
        ("DATABASE_CA_FILE", required("TRACE_TEST_CA_FILE")),
    ]))
    .await
    .expect("start-up with verify-full");
}

#[tokio::test]
async fn a_wrong_postgres_ca_stops_start_up_naming_the_variable() {
    let other = required("TRACE_TEST_OTHER_CA_FILE");
    let e = start_up_error(&[
        ("DATABASE_URL", required("TRACE_TEST_DATABASE_TLS_URL")),
        ("DATABASE_CA_FILE", other.clone()),
    ])
    .await;
    assert_contains(
        &e,
        &["PostgreSQL", &format!("DATABASE_CA_FILE={other}"), "does not chain to a trusted CA"],
    );
    // The variable set instead of the URL's sslmode=, on the plain URL (127.0.0.1 is in the certificate too).
    let e = start_up_error(&[
        ("DATABASE_URL", required("DATABASE_URL")),
        ("DATABASE_SSLMODE", "verify-full".into()),
        ("DATABASE_CA_FILE", other.clone()),
    ])
    .await;
    assert_contains(&e, &[&format!("DATABASE_CA_FILE={other}"), "does not chain to a trusted CA"]);
}

#[tokio::test]
async fn a_postgres_ca_file_missing_or_not_pem_stops_start_up_naming_the_variable() {
    let url = required("TRACE_TEST_DATABASE_TLS_URL");
    let e =
        start_up_error(&[("DATABASE_URL", url.clone()), ("DATABASE_CA_FILE", "/nonexistent/rds.pem".into())])
            .await;
    assert_contains(&e, &["DATABASE_CA_FILE=/nonexistent/rds.pem", "cannot read"]);
    let file = not_pem();
    let e = start_up_error(&[("DATABASE_URL", url), ("DATABASE_CA_FILE", file.clone())]).await;
    assert_contains(&e, &[&format!("DATABASE_CA_FILE={file}"), "not a PEM CA bundle"]);
}

#[tokio::test]
async fn an_sslmode_in_the_url_that_means_nothing_definite_stops_start_up() {
    let url = format!("{}?sslmode=prefer", required("DATABASE_URL"));
    let e = start_up_error(&[("DATABASE_URL", url)]).await;
    assert_contains(&e, &["DATABASE_URL", "sslmode=\"prefer\"", "disable, require or verify-full"]);
}

/// What each mode means, from the server's side: `disable` is plain, `require` is encrypted whatever
/// the certificate (the other CA is configured and not used), `verify-full` is encrypted and checked.
#[tokio::test]
async fn sslmodes_as_the_server_sees_them() {
    let url = required("DATABASE_URL");
    let modes = [
        (SslMode::Disable, None, false),
        (SslMode::Require, Some(required("TRACE_TEST_OTHER_CA_FILE")), true),
        (SslMode::VerifyFull, Some(required("TRACE_TEST_CA_FILE")), true),
    ];
    for (mode, ca_file, encrypted) in modes {
        let pool = pool_with(&url, 1, &PgTlsOptions { sslmode: Some(mode), ca_file }).expect("pool");
        assert_eq!(pg_connection_is_encrypted(&pool).await, encrypted, "{mode:?}");
    }
    // The URL's own sslmode= when the variable is unset: verify-full is parsed (tokio-postgres cannot).
    let pool = pool_with(
        &required("TRACE_TEST_DATABASE_TLS_URL"),
        1,
        &PgTlsOptions { sslmode: None, ca_file: Some(required("TRACE_TEST_CA_FILE")) },
    )
    .expect("pool");
    assert!(pg_connection_is_encrypted(&pool).await);
}
