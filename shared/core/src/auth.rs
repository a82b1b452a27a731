//! Who is calling: the [`Principal`] an authenticated request acts as.
//!
//! In AWS the API Gateway authorizer (IAM or JWT) or the Function URL's IAM check authenticates the
//! caller and the function reads the principal from the request context; locally the service checks
//! API keys, JWTs and SigV4 signatures itself and ends with the same principal. Jobs record their
//! owner's [`Principal::id`]; rate limits and Redis key names use [`Principal::hash`], never the id.

use sha2::{Digest, Sha256};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: String,
    tenant: Option<String>,
    admin: bool,
}

impl Principal {
    /// The principal `id` (an IAM ARN, `jwt:{issuer}#{sub}`, `key:{name}`, or [`Principal::LOCAL`]),
    /// of `tenant` when the authorizer names one. Not an admin.
    pub fn new(id: impl Into<String>, tenant: Option<String>) -> Self {
        Principal { id: id.into(), tenant, admin: false }
    }

    /// The id of the one principal of the open (unauthenticated, embedded local) mode.
    pub const LOCAL: &'static str = "local";

    /// The open mode's principal.
    pub fn local() -> Self {
        Principal::new(Principal::LOCAL, None)
    }

    /// This principal, an admin (sees every job) when `admin`.
    pub fn with_admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }

    /// Its id, as recorded as a job's owner.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its tenant, when the authorizer gives one.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether it may see every job.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether it may see a job owned by `owner`: its own, or any when it is an admin.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || self.id == owner
    }

    /// A stable, non-reversible name of the principal for key names and logs: the first 128 bits of the
    /// SHA-256 of its id, in hex.
    pub fn hash(&self) -> String {
        hash_id(&self.id)
    }
}

/// [`Principal::hash`] of the principal whose id is `id`.
pub fn hash_id(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes())[..16])
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `TRACE_API_KEYS` entry of the API key `key` of `name`: `name=sha256hex` (only the hash is
/// configured; [`crate::config::parse_sha256_hex`] reads it back).
pub fn api_key_entry(name: &str, key: &str) -> String {
    format!("{name}={}", hex(&Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_sees_its_own_jobs_and_an_admin_sees_all() {
        let alice = Principal::new("key:alice", None);
        assert!(alice.may_see("key:alice"));
        assert!(!alice.may_see("key:bob"));
        assert!(Principal::new("key:root", None).with_admin(true).may_see("key:bob"));
    }

    #[test]
    fn the_hash_is_stable_hex_and_hides_the_id() {
        let p = Principal::new("arn:aws:iam::123456789012:user/alice", Some("123456789012".into()));
        assert_eq!(p.hash().len(), 32);
        assert!(p.hash().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p.hash(), hash_id("arn:aws:iam::123456789012:user/alice"));
        assert_ne!(p.hash(), hash_id("arn:aws:iam::123456789012:user/bob"));
        assert!(!p.hash().contains("alice"));
    }
}
