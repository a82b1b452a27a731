//! SigV4 (`Authorization: AWS4-HMAC-SHA256 …`), checked the way API Gateway's IAM authorizer does, for
//! the local stand-in of IAM: the access key is looked up in `TRACE_SIGV4_CREDENTIALS_FILE`, the
//! request as received is signed again with the `aws-sigv4` crate (same time, region and service from
//! the credential scope, same signed headers, the payload's SHA-256) and the signatures compared in
//! constant time. A request dated more than five minutes from now is refused, as AWS does.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use trace_core::config::ConfigError;
use trace_core::Principal;

use super::gateway::arn_account;

/// How far a request's `X-Amz-Date` may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The algorithm word of a SigV4 `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// One known access key.
#[derive(Clone)]
struct Secret {
    principal_arn: String,
    secret_access_key: String,
}

/// The access keys the service accepts.
#[derive(Clone, Default)]
pub struct SigV4Verifier {
    keys: HashMap<String, Secret>,
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        let (k, v) = part.split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (access_key, date, region, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != "aws4_request" || scope.next().is_some() || access_key.is_empty() {
        return None;
    }
    let signed_headers: Vec<&str> = signed?.split(';').collect();
    let signature = signature?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Authorization { access_key, date, region, service, signed_headers, signature })
}

/// `20150830T123600Z` as a time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ").ok()?.and_utc();
    let seconds = u64::try_from(t.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

impl SigV4Verifier {
    /// From the lines of a credentials file: `principal_arn access_key_id secret_access_key`; blank
    /// lines and `#` comments skipped. `Err` holds the number of the first bad line.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [arn, access_key, secret] = fields[..] else { return Err(n + 1) };
            if !arn.starts_with("arn:") || keys.contains_key(access_key) {
                return Err(n + 1);
            }
            keys.insert(
                access_key.to_owned(),
                Secret { principal_arn: arn.to_owned(), secret_access_key: secret.to_owned() },
            );
        }
        Ok(SigV4Verifier { keys })
    }

    /// Reads `TRACE_SIGV4_CREDENTIALS_FILE`; errors name the variable (never a secret).
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let bad =
            |expected| ConfigError { var: "TRACE_SIGV4_CREDENTIALS_FILE", value: path.to_owned(), expected };
        let text = std::fs::read_to_string(path).map_err(|_| bad("a readable file"))?;
        Self::parse(&text).map_err(|_| {
            bad("lines of `principal_arn access_key_id secret_access_key` (arn:…; each access key once)")
        })
    }

    /// Whether the request's `Authorization` header is a SigV4 one (then [`Self::verify`] decides).
    pub fn is_sigv4(headers: &HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(ALGORITHM))
    }

    /// The principal of a correctly signed request at `now`, or why it is refused. `path_and_query` is
    /// as received (still percent-encoded); `body` the whole payload.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Principal, String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let authorization = header("authorization").unwrap_or_default();
        let auth = parse_authorization(authorization)
            .ok_or_else(|| "the SigV4 Authorization header is malformed".to_owned())?;
        let amz_date = header("x-amz-date").ok_or_else(|| "a SigV4 request needs X-Amz-Date".to_owned())?;
        let time = parse_amz_date(amz_date).ok_or_else(|| "X-Amz-Date is malformed".to_owned())?;
        if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
            return Err("the credential scope's date is not the request's".to_owned());
        }
        let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
        if skew > MAX_SKEW {
            return Err(
                "the signature has expired or is dated in the future (more than 5 minutes off)".to_owned()
            );
        }
        if !auth.signed_headers.contains(&"host") || !auth.signed_headers.contains(&"x-amz-date") {
            return Err("a SigV4 signature must cover host and x-amz-date".to_owned());
        }
        let secret = self.keys.get(auth.access_key).ok_or_else(|| "unknown access key".to_owned())?;
        // The payload hash is always the body's own: a claimed x-amz-content-sha256 must match it.
        let body_hash = trace_core::auth::hex(&Sha256::digest(body));
        if let Some(claimed) = header("x-amz-content-sha256") {
            if !claimed.eq_ignore_ascii_case(&body_hash) {
                return Err("x-amz-content-sha256 does not match the body".to_owned());
            }
        }
        // The signed headers as received; the crate adds x-amz-date (from `time`) and the session
        // token (from the identity) itself.
        let mut signed = Vec::with_capacity(auth.signed_headers.len());
        for name in &auth.signed_headers {
            if matches!(*name, "x-amz-date" | "x-amz-security-token") {
                continue;
            }
            let values: Vec<&str> = headers.get_all(*name).iter().filter_map(|v| v.to_str().ok()).collect();
            if values.is_empty() {
                return Err(format!("signed header {name} is missing"));
            }
            for v in values {
                signed.push((*name, v));
            }
        }
        let token = header("x-amz-security-token").map(str::to_owned);
        if token.is_some() != auth.signed_headers.contains(&"x-amz-security-token") {
            return Err("x-amz-security-token must be sent and signed together".to_owned());
        }
        let identity =
            Credentials::new(auth.access_key, &secret.secret_access_key, token, None, "trace").into();
        let mut settings = SigningSettings::default();
        // Sign exactly the headers the client named (the defaults would drop e.g. user-agent).
        settings.excluded_headers = None;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(auth.region)
            .name(auth.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|_| "the SigV4 credential scope is not usable".to_owned())?;
        let request = SignableRequest::new(
            method,
            path_and_query,
            signed.into_iter(),
            SignableBody::Precomputed(body_hash),
        )
        .map_err(|_| "the request cannot be signed again (bad path or header)".to_owned())?;
        let output =
            sign(request, &params.into()).map_err(|_| "the request cannot be signed again".to_owned())?;
        let expected = output.signature();
        if verify_slices_are_equal(expected.as_bytes(), auth.signature.to_ascii_lowercase().as_bytes())
            .is_err()
        {
            return Err("the SigV4 signature does not match".to_owned());
        }
        Ok(Principal::new(&secret.principal_arn, arn_account(&secret.principal_arn)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;

    const ACCESS_KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// The `get-vanilla` case of AWS's SigV4 test suite.
    const VANILLA_SIGNATURE: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
    }

    fn vanilla_time() -> SystemTime {
        parse_amz_date("20150830T123600Z").unwrap()
    }

    fn verifier() -> SigV4Verifier {
        SigV4Verifier::parse(&format!(
            "# test credentials\narn:aws:iam::123456789012:user/example {ACCESS_KEY} {SECRET}\n"
        ))
        .unwrap()
    }

    fn vanilla_headers(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let authorization = format!(
            "{ALGORITHM} Credential={ACCESS_KEY}/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={signature}"
        );
        headers.insert("authorization", authorization.parse().unwrap());
        headers
    }

    /// The published vector, recomputed here from the SigV4 definition (canonical request, string to
    /// sign, the HMAC key chain) without the crate under test, so the test does not just trust it.
    #[test]
    fn the_get_vanilla_vector_checks_out_by_hand() {
        let canonical =
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{SECRET}").as_bytes(), "20150830");
        for part in ["us-east-1", "service", "aws4_request"] {
            key = hmac(&key, part);
        }
        assert_eq!(hex(&hmac(&key, &to_sign)), VANILLA_SIGNATURE);
    }

    #[test]
    fn the_vanilla_request_is_accepted_at_its_time_and_refused_when_expired_or_early() {
        let v = verifier();
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        let p = v.verify("GET", "/", &headers, b"", vanilla_time() + Duration::from_secs(60)).unwrap();
        assert_eq!((p.id(), p.tenant()), ("arn:aws:iam::123456789012:user/example", Some("123456789012")));
        let late = vanilla_time() + Duration::from_secs(5 * 60 + 1);
        assert!(v.verify("GET", "/", &headers, b"", late).unwrap_err().contains("expired"));
        let early = vanilla_time() - Duration::from_secs(5 * 60 + 1);
        assert!(v.verify("GET", "/", &headers, b"", early).is_err());
    }

    #[test]
    fn a_forged_signature_a_changed_request_or_an_unknown_key_is_refused() {
        let v = verifier();
        let now = vanilla_time();
        // One byte of the signature changed.
        let mut forged = VANILLA_SIGNATURE.to_owned();
        forged.replace_range(0..1, "6");
        assert!(v
            .verify("GET", "/", &vanilla_headers(&forged), b"", now)
            .unwrap_err()
            .contains("does not match"));
        // The request changed under a valid signature: path, method, body.
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        assert!(v.verify("GET", "/other", &headers, b"", now).is_err());
        assert!(v.verify("DELETE", "/", &headers, b"", now).is_err());
        assert!(v.verify("GET", "/", &headers, b"x", now).is_err());
        // Another secret for the same key id.
        let other =
            SigV4Verifier::parse(&format!("arn:aws:iam::1:user/x {ACCESS_KEY} not-the-secret")).unwrap();
        assert!(other.verify("GET", "/", &headers, b"", now).is_err());
        // An access key nobody configured.
        let unknown = SigV4Verifier::parse("arn:aws:iam::1:user/x AKIDOTHER secret").unwrap();
        assert!(unknown.verify("GET", "/", &headers, b"", now).unwrap_err().contains("unknown access key"));
    }

    #[test]
    fn a_request_signed_by_aws_sigv4_is_accepted_with_its_body_and_refused_with_another() {
        let v = verifier();
        let body = br#"{"container_ids":["CID-0000001"]}"#;
        let now = SystemTime::now();
        let identity = Credentials::new(ACCESS_KEY, SECRET, Some("session-token".into()), None, "t").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("eu-west-1")
            .name("execute-api")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let mut request = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8080/api/trace/events?x=1&a=b%20c")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .unwrap();
        let signable = SignableRequest::new(
            "POST",
            request.uri().to_string(),
            request.headers().iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let path = request.uri().path_and_query().unwrap().as_str().to_owned();
        let p = v.verify("POST", &path, request.headers(), body, now).unwrap();
        assert_eq!(p.id(), "arn:aws:iam::123456789012:user/example");
        assert!(v.verify("POST", &path, request.headers(), b"{}", now).is_err());
        let mut no_token = request.headers().clone();
        no_token.remove("x-amz-security-token");
        assert!(v.verify("POST", &path, &no_token, body, now).is_err());
    }

    #[test]
    fn malformed_headers_and_files_are_refused() {
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host")
            .is_none());
        assert!(parse_authorization("Basic abc").is_none());
        assert_eq!(SigV4Verifier::parse("arn:aws:iam::1:user/x AKID\n").err(), Some(1));
        assert_eq!(SigV4Verifier::parse("\nnot-an-arn AKID secret").err(), Some(2));
        let e = SigV4Verifier::from_file("/nonexistent/creds").err().unwrap();
        assert_eq!(e.var, "TRACE_SIGV4_CREDENTIALS_FILE");
    }
}
