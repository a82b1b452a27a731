//! How the client proves who it is: one [`Auth`] that every request passes through just before it is
//! sent (the [`Client`](crate::Client) has no other place that adds credentials).
//!
//! - [`Auth::ApiKey`]: header `x-api-key` (the service's `TRACE_AUTH=keys` mode, locally and in tests);
//! - [`Auth::Bearer`]: `Authorization: Bearer …` (a JWT for the API's JWT authorizer);
//! - [`Auth::SigV4`]: every request signed with AWS Signature Version 4 (the API's IAM authorizer and
//!   the stream function's IAM Function URL), credentials from the standard AWS provider chain.
//!
//! Secrets never show in `Debug` output or in errors.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::Request;

use crate::ClientError;

/// A secret string (API key, token): usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The credentials every request carries.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials (the embedded local run in `open` mode).
    #[default]
    None,
    /// An API key, sent as `x-api-key`.
    ApiKey(Secret),
    /// A bearer token (JWT), sent as `Authorization: Bearer …`.
    Bearer(Secret),
    /// AWS Signature Version 4 on every request.
    SigV4(SigV4),
}

impl Auth {
    /// An API key (`--api-key` / `TRACE_API_KEY`).
    pub fn api_key(key: impl Into<String>) -> Self {
        Auth::ApiKey(Secret::new(key))
    }

    /// A bearer token (`--token` / `TRACE_TOKEN`).
    pub fn bearer(token: impl Into<String>) -> Self {
        Auth::Bearer(Secret::new(token))
    }

    /// Adds the credentials to `request`, just before it is sent (SigV4 signs its method, URL,
    /// headers and body, so nothing may change it afterwards).
    pub async fn authorize(&self, request: &mut Request) -> Result<(), ClientError> {
        match self {
            Auth::None => Ok(()),
            Auth::ApiKey(key) => set(request, HeaderName::from_static("x-api-key"), key.expose()),
            Auth::Bearer(token) => set(request, AUTHORIZATION, &format!("Bearer {}", token.expose())),
            Auth::SigV4(signer) => signer.sign(request).await,
        }
    }
}

/// Sets a secret header (marked sensitive, so the HTTP stack never logs it).
fn set(request: &mut Request, name: HeaderName, value: &str) -> Result<(), ClientError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        ClientError::Config(format!("the {name} credential holds characters a header cannot"))
    })?;
    value.set_sensitive(true);
    request.headers_mut().insert(name, value);
    Ok(())
}

/// Credentials are fetched again when they expire within this margin.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Signs requests with SigV4: the service and region come from the host when it names them
/// (`*.execute-api.{region}.amazonaws.com` → `execute-api`, `*.lambda-url.{region}.on.aws` → `lambda`),
/// otherwise from [`with_service`](Self::with_service) and [`with_region`](Self::with_region).
#[derive(Clone)]
pub struct SigV4 {
    provider: SharedCredentialsProvider,
    region: Option<String>,
    service: Option<String>,
    /// The last credentials, kept until they are about to expire.
    cache: Arc<Mutex<Option<Credentials>>>,
}

impl fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4").field("region", &self.region).field("service", &self.service).finish()
    }
}

impl SigV4 {
    /// A signer with credentials from `provider`.
    pub fn new(provider: impl ProvideCredentials + 'static) -> Self {
        SigV4 {
            provider: SharedCredentialsProvider::new(provider),
            region: None,
            service: None,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// A signer with the standard AWS provider chain (environment, profile without SSO, web identity,
    /// container and instance roles) and its region (`AWS_REGION`, the profile).
    pub async fn from_environment() -> Result<Self, ClientError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let provider = config.credentials_provider().ok_or_else(|| {
            ClientError::Config("SigV4: the AWS configuration has no credentials provider".into())
        })?;
        let mut signer = SigV4::new(provider);
        signer.region = config.region().map(|r| r.to_string());
        Ok(signer)
    }

    /// The region to sign for when the host names none (`--region`).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The service to sign for when the host names none (`--sigv4-service`).
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The (service, region) a request to `host` is signed for.
    pub fn scope_for(&self, host: &str) -> Result<(String, String), ClientError> {
        let (service, region) = scope_of_host(host);
        let service = service.map(str::to_owned).or_else(|| self.service.clone()).ok_or_else(|| {
            ClientError::Config(format!(
                "SigV4: {host} names no AWS service (execute-api or lambda-url): give --sigv4-service"
            ))
        })?;
        let region = region.map(str::to_owned).or_else(|| self.region.clone()).ok_or_else(|| {
            ClientError::Config(format!("SigV4: {host} names no region: give --region or AWS_REGION"))
        })?;
        Ok((service, region))
    }

    /// Credentials from the cache, or from the provider when they are missing or about to expire.
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        let fresh = |c: &Credentials| c.expiry().is_none_or(|e| e > SystemTime::now() + REFRESH_MARGIN);
        if let Some(c) = self.cache.lock().map_err(|_| poisoned())?.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let credentials =
            self.provider.provide_credentials().await.map_err(|e| {
                ClientError::Config(format!("SigV4: no AWS credentials: {}", error_chain(&e)))
            })?;
        *self.cache.lock().map_err(|_| poisoned())? = Some(credentials.clone());
        Ok(credentials)
    }

    /// Signs `request` now.
    async fn sign(&self, request: &mut Request) -> Result<(), ClientError> {
        let host = request
            .url()
            .host_str()
            .ok_or_else(|| ClientError::Config(format!("SigV4: {} has no host", request.url())))?
            .to_owned();
        let (service, region) = self.scope_for(&host)?;
        let credentials = self.credentials().await?;
        sign_request(request, &credentials, &region, &service, SystemTime::now())
    }
}

fn poisoned() -> ClientError {
    ClientError::Config("SigV4: the credentials cache was poisoned by a panic".into())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The service and region an AWS endpoint's host names, where it does:
/// `{id}.execute-api.{region}.amazonaws.com` and `{id}.lambda-url.{region}.on.aws`.
pub fn scope_of_host(host: &str) -> (Option<&'static str>, Option<&str>) {
    let labels: Vec<&str> = host.split('.').collect();
    for (i, label) in labels.iter().enumerate().skip(1) {
        let service = match *label {
            "execute-api" => "execute-api",
            "lambda-url" => "lambda",
            _ => continue,
        };
        let region = labels.get(i + 1).copied().filter(|r| looks_like_region(r));
        return (Some(service), region);
    }
    (None, None)
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`: lower-case words and a number, dash-separated.
fn looks_like_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts.last().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Signs `request` with SigV4 at `time` for `service` in `region`: adds `x-amz-date`,
/// `x-amz-content-sha256` (the body's SHA-256, signed), `x-amz-security-token` when the credentials
/// have a session token (signed too), and `Authorization`.
pub fn sign_request(
    request: &mut Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), ClientError> {
    sign_with(request, credentials, region, service, time, PayloadChecksumKind::XAmzSha256)
}

/// [`sign_request`] with a choice of payload header (AWS's test vectors sign without it).
pub(crate) fn sign_with(
    request: &mut Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    checksum: PayloadChecksumKind,
) -> Result<(), ClientError> {
    let failed = |e: &dyn std::error::Error| ClientError::Config(format!("SigV4 signing failed: {e}"));
    let body: &[u8] = match request.body() {
        None => &[],
        Some(body) => body
            .as_bytes()
            .ok_or_else(|| ClientError::Config("SigV4: a streamed request body cannot be signed".into()))?,
    };
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = checksum;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let (instructions, _signature) = sign(signable, &params).map_err(|e| failed(&e))?.into_parts();
    let (headers, _params) = instructions.into_parts();
    for header in headers {
        let name = HeaderName::from_static(header.name());
        let mut value = HeaderValue::from_str(header.value()).map_err(|e| failed(&e))?;
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
#[path = "../tests/support/sigv4.rs"]
#[allow(dead_code)]
mod check;

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    fn request(method: Method, url: &str, body: Option<&str>) -> Request {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::new().request(method, url);
        if let Some(body) = body {
            builder = builder.header("content-type", "application/json").body(body.to_owned());
        }
        builder.build().unwrap()
    }

    fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        request.headers().get(name).map(|v| v.to_str().unwrap())
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn test_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    /// The credentials of AWS's SigV4 test suite.
    fn test_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    #[tokio::test]
    async fn an_api_key_goes_in_x_api_key_and_a_token_in_authorization() {
        let mut r = request(Method::GET, "http://127.0.0.1:8080/api/trace/jobs", None);
        Auth::api_key("k-123").authorize(&mut r).await.unwrap();
        assert_eq!(header(&r, "x-api-key"), Some("k-123"));
        assert_eq!(header(&r, "authorization"), None);
        assert!(r.headers()["x-api-key"].is_sensitive());

        let mut r = request(Method::GET, "http://127.0.0.1:8080/api/trace/jobs", None);
        Auth::bearer("eyJ.a.b").authorize(&mut r).await.unwrap();
        assert_eq!(header(&r, "authorization"), Some("Bearer eyJ.a.b"));
        assert_eq!(header(&r, "x-api-key"), None);
        assert!(r.headers()["authorization"].is_sensitive());

        let mut r = request(Method::GET, "http://127.0.0.1:8080/api/trace/jobs", None);
        Auth::None.authorize(&mut r).await.unwrap();
        assert!(r.headers().is_empty());

        let mut r = request(Method::GET, "http://127.0.0.1:8080/", None);
        assert!(matches!(Auth::api_key("bad\nkey").authorize(&mut r).await, Err(ClientError::Config(_))));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let signer = SigV4::new(test_credentials(Some("the-session-token"))).with_region("eu-west-1");
        for auth in [Auth::api_key("key-s3cr3t"), Auth::bearer("tok-s3cr3t"), Auth::SigV4(signer)] {
            let text = format!("{auth:?}");
            for secret in ["s3cr3t", "wJalrXUtnFEMI", "the-session-token", "AKIDEXAMPLE"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn aws_s_get_vanilla_test_vector() {
        // From the SigV4 test suite: GET / on example.amazonaws.com, service "service", us-east-1.
        let mut r = request(Method::GET, "https://example.amazonaws.com/", None);
        let credentials = test_credentials(None);
        sign_with(&mut r, &credentials, "us-east-1", "service", test_time(), PayloadChecksumKind::NoHeader)
            .unwrap();
        assert_eq!(header(&r, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            header(&r, "authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[tokio::test]
    async fn a_signed_request_has_the_host_s_scope_and_a_signature_computed_by_hand_agrees() {
        let url = "https://a1b2c3.execute-api.eu-west-1.amazonaws.com/prod/api/trace/events?x=1&a=b%20c";
        let body = r#"{"container_ids":["CID-0000001"]}"#;
        let mut r = request(Method::POST, url, Some(body));
        let signer = SigV4::new(test_credentials(Some("tok/en+="))).with_region("us-east-1");
        let (service, region) = signer.scope_for(r.url().host_str().unwrap()).unwrap();
        assert_eq!((service.as_str(), region.as_str()), ("execute-api", "eu-west-1"), "from the host");
        sign_request(&mut r, &test_credentials(Some("tok/en+=")), &region, &service, test_time()).unwrap();

        let authorization = header(&r, "authorization").unwrap();
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
                 Signature="
            ),
            "{authorization}"
        );
        assert_eq!(header(&r, "x-amz-security-token"), Some("tok/en+="));
        assert_eq!(
            header(&r, "x-amz-content-sha256"),
            Some(check::hex(&check::sha256(body.as_bytes())).as_str())
        );
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.push(("host".into(), "a1b2c3.execute-api.eu-west-1.amazonaws.com".into()));
        let seen = check::Signed {
            method: "POST",
            path: r.url().path(),
            query: r.url().query().unwrap_or(""),
            headers: &headers,
            body: body.as_bytes(),
        };
        let secret = |id: &str| (id == "AKIDEXAMPLE").then_some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let verified = check::verify(&seen, secret, None).unwrap();
        assert_eq!((verified.service.as_str(), verified.region.as_str()), ("execute-api", "eu-west-1"));

        // Any change to what was signed breaks the signature.
        let tampered = check::Signed { body: b"{}", ..seen };
        assert!(check::verify(&tampered, secret, None).is_err());
        let tampered = check::Signed { path: "/prod/api/trace/jobs", ..seen };
        assert!(check::verify(&tampered, secret, None).is_err());
        let wrong_key = |_: &str| Some("not-the-secret");
        assert!(check::verify(&seen, wrong_key, None).is_err());
    }

    #[test]
    fn service_and_region_come_from_the_host_else_from_the_settings() {
        assert_eq!(
            scope_of_host("abcdef.lambda-url.ap-southeast-2.on.aws"),
            (Some("lambda"), Some("ap-southeast-2"))
        );
        assert_eq!(
            scope_of_host("x1.execute-api.us-gov-west-1.amazonaws.com"),
            (Some("execute-api"), Some("us-gov-west-1"))
        );
        assert_eq!(scope_of_host("api.example.com"), (None, None));
        assert_eq!(scope_of_host("execute-api.example.com"), (None, None), "the id comes first");
        let bare = SigV4::new(test_credentials(None));
        assert!(matches!(bare.scope_for("127.0.0.1"), Err(ClientError::Config(_))));
        let set = bare.clone().with_region("eu-central-1").with_service("execute-api");
        assert_eq!(set.scope_for("127.0.0.1").unwrap(), ("execute-api".into(), "eu-central-1".into()));
        assert_eq!(
            set.scope_for("u1.lambda-url.us-east-2.on.aws").unwrap(),
            ("lambda".into(), "us-east-2".into()),
            "the host wins"
        );
    }

    #[tokio::test]
    async fn credentials_are_cached_until_they_are_about_to_expire() {
        use std::sync::atomic::{AtomicU32, Ordering};
        #[derive(Debug)]
        struct Counting(Arc<AtomicU32>, Duration);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                let expiry = SystemTime::now() + self.1;
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                    format!("AKID{n}"),
                    "secret",
                    None,
                    Some(expiry),
                    "counting",
                )))
            }
        }
        let calls = Arc::new(AtomicU32::new(0));
        let long = SigV4::new(Counting(calls.clone(), Duration::from_secs(3600)));
        for _ in 0..3 {
            assert_eq!(long.credentials().await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = Arc::new(AtomicU32::new(0));
        let short = SigV4::new(Counting(calls.clone(), Duration::from_secs(60)));
        short.credentials().await.unwrap();
        assert_eq!(short.credentials().await.unwrap().access_key_id(), "AKID1", "refreshed");
    }
}
