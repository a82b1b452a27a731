//! The `SecretStore` contract: a stored secret reads back byte for byte (a URL, an RDS credentials JSON
//! with characters URLs reserve), and a missing one is an error that shows no secret's value.

use trace_core::ports::SecretStore;

/// The secrets every implementation is given before the suite runs: `(name, value)`.
pub fn seeded() -> Vec<(&'static str, &'static str)> {
    vec![
        ("url", "postgres://trace:contract-hunter2@db.example:5432/trace?sslmode=verify-full"),
        (
            "rds",
            r#"{"engine":"postgres","host":"db.example","port":5432,"dbname":"trace","username":"trace","password":"p@ss:w/rd?#% contract-hunter3"}"#,
        ),
    ]
}

/// Every seeded secret reads back exactly; `id_of(name)` is the id the implementation gave it (an ARN
/// for Secrets Manager).
pub async fn reads_back(store: &dyn SecretStore, id_of: impl Fn(&str) -> String) {
    for (name, value) in seeded() {
        let read = store.secret_string(&id_of(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read, value, "{name}");
    }
}

/// A secret that does not exist is an error naming no value.
pub async fn missing_is_an_error(store: &dyn SecretStore, missing_id: &str) {
    let e = store.secret_string(missing_id).await.expect_err("a missing secret must be an error");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("contract-hunter"), "{text}");
}
