//! Secrets at run time: the `SecretStore` contract on Secrets Manager (the emulator) and in memory, and
//! a function started with `DATABASE_SECRET_ARN` and no `DATABASE_URL` answers from the seeded database.

use std::collections::HashMap;

use trace_adapters::secrets::{MemorySecrets, SecretsManager};
use trace_core::Domain;
use trace_integration::contract::secrets as contract;
use trace_integration::system::{Options, System};
use trace_integration::{database, pg_pool, required, sdk, seeded_ids, unique};

/// Creates `value` as a new secret in the emulator; its ARN.
async fn create_secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let out = client
        .create_secret()
        .name(unique("trace-secret"))
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create a secret in {}: {e:?}", trace_integration::emulator()));
    out.arn.expect("an ARN")
}

#[tokio::test]
async fn secret_store_contract_in_memory() {
    let store = MemorySecrets::new(contract::seeded());
    contract::reads_back(&store, str::to_owned).await;
    contract::missing_is_an_error(&store, "no-such-secret").await;
}

#[tokio::test]
async fn secret_store_contract_on_secrets_manager() {
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    let mut arns = HashMap::new();
    for (name, value) in contract::seeded() {
        arns.insert(name, create_secret(&client, value).await);
    }
    let store = SecretsManager::new(client);
    contract::reads_back(&store, |name| arns[name].clone()).await;
    contract::missing_is_an_error(&store, &unique("no-such-secret")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_reads_its_database_from_the_secret() {
    // The database of the stack as an RDS credentials secret (the JSON shape; its URL is built by the
    // function), so the function has no DATABASE_URL at all.
    let url = required("DATABASE_URL");
    let pg: deadpool_postgres::tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let host = match &pg.get_hosts()[0] {
        deadpool_postgres::tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        other => panic!("the test database must be reached over TCP: {other:?}"),
    };
    let password = pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let secret = serde_json::json!({
        "engine": "postgres",
        "host": host,
        "port": pg.get_ports().first().copied().unwrap_or(5432),
        "dbname": pg.get_dbname().unwrap_or("postgres"),
        "username": pg.get_user().unwrap_or("postgres"),
        "password": password,
    });
    let client = aws_sdk_secretsmanager::Client::new(&sdk().await);
    let arn = create_secret(&client, &secret.to_string()).await;

    // The test's HTTP client (reqwest, rustls without a built-in provider) needs the workspace's one.
    trace_adapters::tls::install_provider();
    let system = System::start(Options {
        env: vec![("DATABASE_URL", String::new()), ("DATABASE_SECRET_ARN", arn.clone())],
        no_workers: true,
        ..Default::default()
    })
    .await;

    // A seeded container: its holds as the database has them. One past the seeded ones: none in the
    // database, though the embedded dataset (the fallback without a database) has rows for it.
    let seeded = trace_dataset::container_id(1);
    let beyond_index = seeded_ids() + 1;
    let beyond = trace_dataset::container_id(beyond_index);
    let mut embedded = trace_core::record::RowBatch::with_capacity(Domain::History, 64);
    trace_dataset::push_rows(Domain::History, beyond_index, &mut embedded);
    assert!(embedded.rows().next().is_some(), "the embedded dataset has rows for {beyond}");

    let (status, answer) = system
        .submit(
            &serde_json::json!({ "container_ids": [seeded.clone(), beyond.clone()], "domains": ["history"] }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let data = answer["results"]["history"]["data"].as_array().expect("history records");
    let expected = database::count(&pg_pool(), Domain::History, std::slice::from_ref(&seeded)).await;
    assert!(expected > 0, "{seeded} is seeded");
    assert_eq!(data.len() as u64, expected, "the answer holds the database's rows");
    assert!(
        data.iter().all(|r| r["container_id"] == seeded.as_str()),
        "{beyond} has rows in the answer: the function used the embedded dataset, not the database"
    );
}

#[test]
fn a_bad_database_url_never_shows_its_password() {
    // Start-up with a URL the driver refuses: the error on stderr names the problem, not the password.
    let out = std::process::Command::new(trace_integration::system::binary("submit"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://trace:hunter2@db.example:notaport/trace")
        .env("TRACE_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .expect("run submit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "submit started with a bad DATABASE_URL: {stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("postgres"), "the error says what failed: {stderr}");

    // A URL of the wrong scheme: refused by the configuration, named, redacted.
    let out = std::process::Command::new(trace_integration::system::binary("submit"))
        .env_clear()
        .env("DATABASE_URL", "mysql://trace:hunter2@db.example/trace")
        .output()
        .expect("run submit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL") && !stderr.contains("hunter2"), "{stderr}");
}
