//! Authentication: who is calling, before any handler runs or any limit is counted.
//!
//! One model for local and AWS (`TRACE_AUTH`): in `gateway` mode the API Gateway / Function URL
//! authorizer has already checked the caller and the principal is read from the request context
//! ([`gateway`]); in `keys` mode the service checks API keys ([`keys`]), bearer JWTs ([`jwt`]) and SigV4
//! signatures ([`sigv4`]) itself; `open` (the embedded local run only) makes every request
//! [`Principal::local`]. Every mode ends with a [`Principal`] in the request's extensions, marked admin
//! when `TRACE_ADMIN_PRINCIPALS` names it. A request without valid credentials is answered 401
//! `UNAUTHORIZED` here and never reaches a handler, a rate limit or a backend.

pub mod gateway;
pub mod jwt;
pub mod keys;
pub mod sigv4;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use trace_core::config::{AuthMode, ConfigError};
use trace_core::{Config, Principal, TraceError};

use crate::http::ApiError;
use crate::App;

pub use jwt::JwtVerifier;
pub use keys::ApiKeys;
pub use sigv4::SigV4Verifier;

/// The API key header.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Checks a request's credentials and names its principal. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    keys: ApiKeys,
    jwt: Option<JwtVerifier>,
    sigv4: Option<SigV4Verifier>,
    admins: HashSet<String>,
    tenant_claim: Option<String>,
    max_body_bytes: usize,
    /// `WWW-Authenticate` of a 401: the schemes this service accepts.
    challenge: HeaderValue,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("mode", &self.inner.mode).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From the configuration, reading the JWT key and SigV4 credentials files. Errors name the
    /// variable. Open mode logs a warning; keys mode without any credential configured too.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let auth = &config.auth;
        let jwt = match (&auth.jwt_public_key_file, &auth.jwt_issuer, &auth.jwt_audience) {
            (Some(file), Some(issuer), Some(audience)) if auth.mode == AuthMode::Keys => {
                Some(JwtVerifier::from_file(file, issuer, audience, auth.jwt_tenant_claim.clone())?)
            }
            _ => None,
        };
        let sigv4 = match &auth.sigv4_credentials_file {
            Some(file) if auth.mode == AuthMode::Keys => Some(SigV4Verifier::from_file(file)?),
            _ => None,
        };
        let keys = ApiKeys::new(auth.api_keys.clone());
        match auth.mode {
            AuthMode::Open => tracing::warn!(
                "TRACE_AUTH=open: no authentication, every request acts as principal \"local\"; only for the \
                 embedded local run"
            ),
            AuthMode::Keys if keys.is_empty() && jwt.is_none() && sigv4.is_none() => tracing::warn!(
                "TRACE_AUTH=keys with no TRACE_API_KEYS, JWT or SigV4 credentials: every request is refused (401)"
            ),
            mode => tracing::info!(?mode, api_keys = auth.api_keys.len(), jwt = jwt.is_some(), sigv4 = sigv4.is_some(), "authentication"),
        }
        let mut challenges = Vec::new();
        if auth.mode == AuthMode::Keys {
            challenges.push(format!("ApiKey header=\"{API_KEY_HEADER}\""));
            if jwt.is_some() {
                challenges.push("Bearer realm=\"trace\"".to_owned());
            }
            if sigv4.is_some() {
                challenges.push(sigv4::ALGORITHM.to_owned());
            }
        } else {
            challenges.push(sigv4::ALGORITHM.to_owned());
        }
        let challenge =
            HeaderValue::from_str(&challenges.join(", ")).unwrap_or(HeaderValue::from_static("ApiKey"));
        Ok(Authenticator {
            inner: Arc::new(Inner {
                mode: auth.mode,
                keys,
                jwt,
                sigv4,
                admins: auth.admin_principals.iter().cloned().collect(),
                tenant_claim: auth.jwt_tenant_claim.clone(),
                max_body_bytes: config.limits.max_body_bytes,
                challenge,
            }),
        })
    }

    /// One that refuses every request: what a process gets when its authentication settings cannot
    /// be used and it was not stopped at start-up (fail closed).
    pub fn refuse_all() -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                mode: AuthMode::Keys,
                keys: ApiKeys::default(),
                jwt: None,
                sigv4: None,
                admins: HashSet::new(),
                tenant_claim: None,
                max_body_bytes: 0,
                challenge: HeaderValue::from_static("ApiKey"),
            }),
        }
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// The caller of `request`, or a 401 (a SigV4 request's body is read to check its hash, and put
    /// back). Returns the request to pass on.
    pub async fn authenticate(&self, request: Request) -> Result<(Principal, Request), TraceError> {
        let inner = &self.inner;
        let (principal, request) = match inner.mode {
            AuthMode::Open => (Principal::local(), request),
            AuthMode::Gateway => {
                let context = request.extensions().get::<RequestContext>();
                match gateway::principal(context, inner.tenant_claim.as_deref()) {
                    Some(p) => (p, request),
                    None => return Err(unauthorized("no authorizer identity in the request context")),
                }
            }
            AuthMode::Keys => self.check_keys(request).await?,
        };
        let admin = inner.admins.contains(principal.id());
        Ok((principal.with_admin(admin), request))
    }

    async fn check_keys(&self, request: Request) -> Result<(Principal, Request), TraceError> {
        let inner = &self.inner;
        let headers = request.headers();
        if let Some(key) = headers.get(API_KEY_HEADER) {
            let key = key.to_str().unwrap_or_default();
            return match inner.keys.principal(key) {
                Some(p) => Ok((p, request)),
                None => Err(unauthorized("the API key is not valid")),
            };
        }
        let authorization =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if let Some(token) = authorization.strip_prefix("Bearer ").map(str::trim) {
            let jwt =
                inner.jwt.as_ref().ok_or_else(|| unauthorized("bearer tokens are not accepted here"))?;
            return jwt.principal(token).map(|p| (p, request)).map_err(unauthorized);
        }
        if SigV4Verifier::is_sigv4(headers) {
            let sigv4 =
                inner.sigv4.as_ref().ok_or_else(|| unauthorized("SigV4 signatures are not accepted here"))?;
            // The payload is part of the signature: read it (bounded like submit's) and put it back.
            let (parts, body) = request.into_parts();
            let limit = inner.max_body_bytes;
            let bytes = axum::body::to_bytes(body, limit.saturating_add(1))
                .await
                .map_err(|_| TraceError::PayloadTooLarge { bytes: limit.saturating_add(1), limit })?;
            let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let principal = sigv4
                .verify(parts.method.as_str(), path, &parts.headers, &bytes, SystemTime::now())
                .map_err(unauthorized)?;
            return Ok((principal, Request::from_parts(parts, Body::from(bytes))));
        }
        Err(unauthorized("send an API key (x-api-key), a bearer token or a SigV4 signature"))
    }
}

fn unauthorized(reason: impl Into<String>) -> TraceError {
    TraceError::Unauthorized(reason.into())
}

/// The layer before every route but `/health`: the principal into the request's extensions, or 401.
pub async fn layer(State(app): State<App>, request: Request, next: Next) -> Response {
    match app.auth.authenticate(request).await {
        Ok((principal, mut request)) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            let unauthorized = matches!(e, TraceError::Unauthorized(_));
            if unauthorized {
                tracing::info!(reason = %e, "request refused: not authenticated");
            }
            let mut response = ApiError(e).into_response();
            if unauthorized {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, app.auth.inner.challenge.clone());
            }
            response
        }
    }
}

/// The principal the layer found. Handlers behind [`layer`] always have one; elsewhere (a handler
/// called without the layer) there is none and the request is refused.
pub fn principal_of(request: &Request) -> Result<Principal, TraceError> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| unauthorized("no authenticated caller"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::{Extension, Router};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use trace_adapters::runtime::{Backends, BackendsFromConfig};

    async fn app(vars: &[(&str, &str)]) -> App {
        let config = Config::from_lookup(|name| match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(v.to_string()),
            None => (name == "TRACE_LOCAL_DIR")
                .then(|| std::env::temp_dir().join("trace-auth-test").display().to_string()),
        })
        .unwrap();
        let backends = Backends::from_config(&config).await.unwrap();
        App::try_new(config, backends).unwrap()
    }

    /// A route that answers the principal the layer found: `id|tenant|admin`.
    fn who(app: App) -> Router {
        Router::new()
            .route(
                "/who",
                get(|Extension(p): Extension<Principal>| async move {
                    format!("{}|{}|{}", p.id(), p.tenant().unwrap_or("-"), p.is_admin())
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), layer))
            .with_state(app)
    }

    async fn call(router: &Router, request: Request) -> (u16, String, Option<String>) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let challenge =
            response.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), challenge)
    }

    fn get_who() -> axum::http::request::Builder {
        Request::builder().uri("/who")
    }

    #[tokio::test]
    async fn keys_mode_names_the_key_s_principal_and_refuses_missing_or_junk_keys() {
        let entries = format!(
            "{},{}",
            trace_core::auth::api_key_entry("alice", "k-alice"),
            trace_core::auth::api_key_entry("ops", "k-ops")
        );
        let router = who(app(&[("TRACE_API_KEYS", &entries), ("TRACE_ADMIN_PRINCIPALS", "key:ops")]).await);
        let with_key = |k: &str| get_who().header(API_KEY_HEADER, k).body(Body::empty()).unwrap();
        assert_eq!(call(&router, with_key("k-alice")).await.1, "key:alice|-|false");
        assert_eq!(call(&router, with_key("k-ops")).await.1, "key:ops|-|true");
        for request in [with_key("k-mallory"), with_key(""), get_who().body(Body::empty()).unwrap()] {
            let (status, body, challenge) = call(&router, request).await;
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
            assert!(challenge.unwrap().contains("x-api-key"));
        }
        // Headers of the gateway mode mean nothing here.
        let bearer = get_who().header("authorization", "Bearer abc").body(Body::empty()).unwrap();
        assert_eq!(call(&router, bearer).await.0, 401);
    }

    #[tokio::test]
    async fn gateway_mode_reads_the_authorizer_context_and_never_headers() {
        let app = app(&[("TRACE_AUTH", "gateway"), ("TRACE_JWT_TENANT_CLAIM", "org")]).await;
        let router = who(app);
        let context = |authorizer: serde_json::Value| {
            let ctx = serde_json::json!({
                "accountId": "123456789012", "apiId": "a", "requestId": "r", "routeKey": "$default",
                "stage": "$default", "timeEpoch": 0, "authorizer": authorizer,
                "http": {"method": "GET", "path": "/who", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1", "userAgent": "t"}
            });
            RequestContext::ApiGatewayV2(serde_json::from_value(ctx).unwrap())
        };
        let iam = context(serde_json::json!({"iam": {"accountId": "123456789012",
            "userArn": "arn:aws:iam::123456789012:user/alice"}}));
        let request = get_who().extension(iam).body(Body::empty()).unwrap();
        assert_eq!(call(&router, request).await.1, "arn:aws:iam::123456789012:user/alice|123456789012|false");
        let jwt =
            context(serde_json::json!({"jwt": {"claims": {"iss": "https://idp", "sub": "u1", "org": "p7"}}}));
        let request = get_who().extension(jwt).body(Body::empty()).unwrap();
        assert_eq!(call(&router, request).await.1, "jwt:https://idp#u1|p7|false");
        // No context: 401, whatever the headers say.
        let request = get_who().header(API_KEY_HEADER, "anything").body(Body::empty()).unwrap();
        assert_eq!(call(&router, request).await.0, 401);
    }

    #[tokio::test]
    async fn open_mode_is_the_local_principal() {
        let router = who(app(&[("TRACE_AUTH", "open")]).await);
        assert_eq!(call(&router, get_who().body(Body::empty()).unwrap()).await.1, "local|-|false");
    }

    #[tokio::test]
    async fn sigv4_in_keys_mode_reads_the_body_and_passes_it_on() {
        use aws_credential_types::Credentials;
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let dir = std::env::temp_dir().join(format!("trace-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("sigv4");
        std::fs::write(&creds, "arn:aws:iam::111122223333:role/dash AKIDLOCAL s3cr3t\n").unwrap();
        let app = app(&[("TRACE_SIGV4_CREDENTIALS_FILE", creds.to_str().unwrap())]).await;
        let router = Router::new()
            .route(
                "/echo",
                axum::routing::post(
                    |Extension(p): Extension<Principal>, body: axum::body::Bytes| async move {
                        format!("{}|{}", p.id(), String::from_utf8_lossy(&body))
                    },
                ),
            )
            .route_layer(axum::middleware::from_fn_with_state(app.clone(), layer))
            .with_state(app);
        let signed = |body: &'static [u8], sent: &'static [u8]| {
            let identity = Credentials::new("AKIDLOCAL", "s3cr3t", None, None, "t").into();
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("execute-api")
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let mut request = Request::builder()
                .method("POST")
                .uri("/echo")
                .header("host", "localhost:1")
                .body(())
                .unwrap();
            let signable = SignableRequest::new(
                "POST",
                "/echo",
                [("host", "localhost:1")].into_iter(),
                SignableBody::Bytes(body),
            )
            .unwrap();
            sign(signable, &params).unwrap().into_parts().0.apply_to_request_http1x(&mut request);
            request.map(|()| Body::from(sent))
        };
        assert_eq!(
            call(&router, signed(b"hello", b"hello")).await.1,
            "arn:aws:iam::111122223333:role/dash|hello"
        );
        assert_eq!(call(&router, signed(b"hello", b"hellO")).await.0, 401);
    }

    #[tokio::test]
    async fn open_mode_is_refused_in_lambda_and_bad_files_name_their_variable() {
        let e = Config::from_lookup(|n| match n {
            "TRACE_AUTH" => Some("open".into()),
            "AWS_LAMBDA_RUNTIME_API" => Some("127.0.0.1:9001".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.var, "TRACE_AUTH");
        let config =
            Config::from_lookup(|n| (n == "TRACE_SIGV4_CREDENTIALS_FILE").then(|| "/nonexistent".into()))
                .unwrap();
        assert_eq!(Authenticator::from_config(&config).unwrap_err().var, "TRACE_SIGV4_CREDENTIALS_FILE");
    }
}
