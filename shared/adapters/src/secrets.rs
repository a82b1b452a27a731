//! Secrets read at start-up: the [`SecretStore`] port over AWS Secrets Manager ([`SecretsManager`]) and
//! in memory ([`MemorySecrets`], for tests), and the database URL a secret describes
//! ([`database_url`]).
//!
//! The database's password is never in the functions' environment (where anyone allowed to read the
//! function's configuration sees it): `DATABASE_SECRET_ARN` names the secret, and the functions that
//! read the database fetch it once when they start.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Deserialize;
use trace_core::ports::{BackendError, SecretStore};

/// The variable that names the database's secret (in every error about it).
pub const DATABASE_SECRET_VAR: &str = "DATABASE_SECRET_ARN";

/// AWS Secrets Manager.
#[derive(Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    /// Over a configured client.
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretsManager { client }
    }

    /// A client from the shared SDK configuration (`AWS_ENDPOINT_URL` for an emulator).
    pub fn from_sdk(config: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_secretsmanager::Client::new(config))
    }
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn secret_string(&self, id: &str) -> Result<String, BackendError> {
        // The SDK's errors name the secret's id and the service's reason, never the value.
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| BackendError::new("secretsmanager", "GetSecretValue", e.into_service_error()))?;
        out.secret_string.ok_or_else(|| {
            BackendError::new(
                "secretsmanager",
                "GetSecretValue",
                "the secret has no string value (binary secret)",
            )
        })
    }
}

/// Secrets held in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct MemorySecrets {
    secrets: HashMap<String, String>,
}

impl MemorySecrets {
    /// With the given `(id, value)` pairs.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        MemorySecrets { secrets: secrets.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn secret_string(&self, id: &str) -> Result<String, BackendError> {
        self.secrets
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::new("memory-secrets", "GetSecretValue", format!("no secret {id}")))
    }
}

/// Why a secret's value is not a database URL. The messages describe the shape expected, never the
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretShapeError {
    /// Neither a URL nor JSON.
    #[error("the secret is neither a postgres:// URL nor JSON with username, password and host")]
    Unknown,
    /// JSON without the keys a URL needs.
    #[error("the secret's JSON lacks {0} (expected username, password, host; port and dbname optional)")]
    Missing(&'static str),
    /// JSON of another database engine.
    #[error("the secret is for engine {0:?}, not PostgreSQL")]
    Engine(String),
}

/// The JSON Amazon RDS keeps in a database credentials secret.
#[derive(Deserialize)]
struct RdsSecret {
    username: Option<String>,
    password: Option<String>,
    host: Option<String>,
    #[serde(default)]
    port: Option<Port>,
    dbname: Option<String>,
    engine: Option<String>,
}

/// RDS writes the port as a number; people write it as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

/// The database URL a secret's value describes: the value itself when it is a `postgres://` URL, else
/// the URL built from an RDS credentials secret's JSON (`username`, `password`, `host`, `port` (5432),
/// `dbname` (postgres), `engine` if given must be PostgreSQL), with user, password and database name
/// percent-encoded.
pub fn database_url(secret: &str) -> Result<String, SecretShapeError> {
    let secret = secret.trim();
    if secret.starts_with("postgres://") || secret.starts_with("postgresql://") {
        return Ok(secret.to_owned());
    }
    let rds: RdsSecret = serde_json::from_str(secret).map_err(|_| SecretShapeError::Unknown)?;
    if let Some(engine) = rds.engine.as_deref() {
        if !matches!(engine, "postgres" | "postgresql" | "aurora-postgresql") {
            return Err(SecretShapeError::Engine(engine.to_owned()));
        }
    }
    let username = rds.username.filter(|s| !s.is_empty()).ok_or(SecretShapeError::Missing("username"))?;
    let password = rds.password.ok_or(SecretShapeError::Missing("password"))?;
    let host = rds.host.filter(|s| !s.is_empty()).ok_or(SecretShapeError::Missing("host"))?;
    let port = match rds.port {
        None => 5432,
        Some(Port::Number(n)) => n,
        Some(Port::Text(t)) => t.trim().parse().map_err(|_| SecretShapeError::Missing("port (a number)"))?,
    };
    let dbname = rds.dbname.filter(|s| !s.is_empty()).unwrap_or_else(|| "postgres".to_owned());
    Ok(format!(
        "postgres://{}:{}@{host}:{port}/{}",
        percent_encoded(&username),
        percent_encoded(&password),
        percent_encoded(&dbname)
    ))
}

/// `text` with every byte but the URL's unreserved characters (RFC 3986: letters, digits, `-._~`)
/// percent-encoded: safe in the user, password and path of a URL.
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the database URL from the secret `id` (the value of `DATABASE_SECRET_ARN`). Errors name the
/// variable and the secret's id, never its value.
pub async fn read_database_url(store: &dyn SecretStore, id: &str) -> Result<String, BackendError> {
    let value = store.secret_string(id).await?;
    database_url(&value).map_err(|e| BackendError::new("secretsmanager", "read DATABASE_SECRET_ARN", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_secret_is_the_url() {
        let url = "postgres://trace:s3cret@db.example:5432/trace?sslmode=verify-full";
        assert_eq!(database_url(&format!(" {url}\n")).unwrap(), url);
    }

    #[test]
    fn an_rds_secret_becomes_a_url_with_its_password_encoded() {
        let secret = r#"{"username":"trace","password":"p@ss:w/rd?#%","engine":"postgres","host":"db.abc.eu-west-1.rds.amazonaws.com","port":5432,"dbname":"trace","dbInstanceIdentifier":"db"}"#;
        let url = database_url(secret).unwrap();
        assert_eq!(
            url,
            "postgres://trace:p%40ss%3Aw%2Frd%3F%23%25@db.abc.eu-west-1.rds.amazonaws.com:5432/trace"
        );
        // tokio-postgres reads it back to the same password.
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"p@ss:w/rd?#%"[..]));
        assert_eq!(config.get_user(), Some("trace"));
        assert_eq!(config.get_dbname(), Some("trace"));
        // A port as text, no dbname.
        let url = database_url(r#"{"username":"u","password":"p","host":"h","port":"6543"}"#).unwrap();
        assert_eq!(url, "postgres://u:p@h:6543/postgres");
    }

    #[test]
    fn a_wrong_shape_says_what_is_missing_without_the_secret() {
        for (secret, expected) in [
            ("hunter2", SecretShapeError::Unknown),
            ("mysql://u:hunter2@h/db", SecretShapeError::Unknown),
            (r#"{"username":"u","password":"hunter2"}"#, SecretShapeError::Missing("host")),
            (r#"{"password":"hunter2","host":"h"}"#, SecretShapeError::Missing("username")),
            (
                r#"{"username":"u","password":"hunter2","host":"h","engine":"mysql"}"#,
                SecretShapeError::Engine("mysql".into()),
            ),
        ] {
            let e = database_url(secret).unwrap_err();
            assert_eq!(e, expected, "{secret}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[tokio::test]
    async fn reading_names_the_variable_and_never_the_value() {
        let store = MemorySecrets::new([("db", "hunter2-not-a-url")]);
        let e = read_database_url(&store, "db").await.unwrap_err().to_string();
        assert!(e.contains("DATABASE_SECRET_ARN") && !e.contains("hunter2"), "{e}");
        let store = MemorySecrets::new([("db", "postgres://u:p@h/d")]);
        assert_eq!(read_database_url(&store, "db").await.unwrap(), "postgres://u:p@h/d");
    }
}
