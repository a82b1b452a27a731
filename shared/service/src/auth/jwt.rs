//! Bearer JWTs checked the way API Gateway's JWT authorizer checks them: the signature with the
//! configured public key (ES256 or RS256, chosen by the key, never by the token), `iss`, `aud`,
//! `exp` and `nbf` (with a minute of leeway for clock skew), and a `sub`.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use trace_core::config::ConfigError;
use trace_core::Principal;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// Checks bearer tokens of one issuer and audience against one public key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    issuer: String,
    tenant_claim: Option<String>,
}

impl JwtVerifier {
    /// From the PEM of the signer's public key: an EC P-256 key means ES256, an RSA key RS256.
    pub fn from_pem(
        pem: &[u8],
        issuer: &str,
        audience: &str,
        tenant_claim: Option<String>,
    ) -> Result<Self, &'static str> {
        let (key, algorithm) = match DecodingKey::from_ec_pem(pem) {
            Ok(key) => (key, Algorithm::ES256),
            Err(_) => match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(_) => return Err("a PEM public key, EC P-256 (ES256) or RSA (RS256)"),
            },
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(JwtVerifier { key, validation, issuer: issuer.to_owned(), tenant_claim })
    }

    /// Reads `TRACE_JWT_PUBLIC_KEY_FILE`; errors name the variable.
    pub fn from_file(
        path: &str,
        issuer: &str,
        audience: &str,
        tenant_claim: Option<String>,
    ) -> Result<Self, ConfigError> {
        let bad =
            |expected| ConfigError { var: "TRACE_JWT_PUBLIC_KEY_FILE", value: path.to_owned(), expected };
        let pem = std::fs::read(path).map_err(|_| bad("a readable PEM file"))?;
        Self::from_pem(&pem, issuer, audience, tenant_claim).map_err(bad)
    }

    /// The principal `jwt:{iss}#{sub}` of a valid token, or why it is refused (in words, no secret).
    pub fn principal(&self, token: &str) -> Result<Principal, String> {
        let data =
            jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(token, &self.key, &self.validation)
                .map_err(|e| format!("the bearer token is not valid: {}", describe(&e)))?;
        let claims = data.claims;
        let subject = claims.get("sub").and_then(|s| s.as_str()).filter(|s| !s.is_empty());
        let subject = subject.ok_or_else(|| "the bearer token has no subject (sub)".to_owned())?;
        let tenant = self
            .tenant_claim
            .as_deref()
            .and_then(|c| claims.get(c))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(Principal::new(format!("jwt:{}#{subject}", self.issuer), tenant))
    }
}

/// What was wrong with a token, in words a caller can act on.
fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "wrong algorithm",
        ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.test";
    const AUDIENCE: &str = "trace-api";

    /// A fresh P-256 key pair: (the signer's PKCS#8 key, the PEM of its public key).
    fn key_pair() -> (EncodingKey, String) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let public = pair.public_key().as_der().unwrap();
        let body = STANDARD.encode(public.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
        (EncodingKey::from_ec_der(pkcs8.as_ref()), pem)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn token(key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-7", "exp": now() + 600, "nbf": now() - 10, "org": "plant-3"})
    }

    #[test]
    fn a_valid_token_names_issuer_and_subject_and_its_tenant() {
        let (key, pem) = key_pair();
        let v = JwtVerifier::from_pem(pem.as_bytes(), ISSUER, AUDIENCE, Some("org".into())).unwrap();
        let p = v.principal(&token(&key, claims())).unwrap();
        assert_eq!((p.id(), p.tenant()), ("jwt:https://idp.example.test#user-7", Some("plant-3")));
    }

    #[test]
    fn expired_wrong_issuer_wrong_audience_wrong_key_and_alg_none_are_refused() {
        let (key, pem) = key_pair();
        let v = JwtVerifier::from_pem(pem.as_bytes(), ISSUER, AUDIENCE, None).unwrap();
        let with = |field: &str, value: serde_json::Value| {
            let mut c = claims();
            c[field] = value;
            token(&key, c)
        };
        let expired = with("exp", json!(now() - LEEWAY_SECONDS as i64 - 5));
        assert!(v.principal(&expired).unwrap_err().contains("expired"));
        assert!(v.principal(&with("iss", json!("https://evil.test"))).unwrap_err().contains("issuer"));
        assert!(v.principal(&with("aud", json!("other-api"))).unwrap_err().contains("audience"));
        assert!(v.principal(&with("nbf", json!(now() + 3600))).is_err());
        let mut no_sub = claims();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert!(v.principal(&token(&key, no_sub)).is_err());
        let (other_key, _) = key_pair();
        assert!(v.principal(&token(&other_key, claims())).unwrap_err().contains("signature"));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert!(v.principal(&none).is_err());
        // A valid token with one byte of its signature changed.
        let good = token(&key, claims());
        let mut forged = good.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(v.principal(std::str::from_utf8(&forged).unwrap()).is_err());
        assert!(v.principal("not.a.jwt").is_err());
    }

    #[test]
    fn an_unusable_key_file_names_the_variable() {
        let e = JwtVerifier::from_file("/nonexistent/key.pem", ISSUER, AUDIENCE, None).err().unwrap();
        assert_eq!(e.var, "TRACE_JWT_PUBLIC_KEY_FILE");
        assert!(JwtVerifier::from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            ISSUER,
            AUDIENCE,
            None
        )
        .is_err());
    }
}
