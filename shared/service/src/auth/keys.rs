//! API keys (`x-api-key`): the key's SHA-256 compared, in constant time, with each configured hash.
//! Only hashes are configured, so a leaked configuration leaks no key.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use sha2::{Digest, Sha256};
use trace_core::Principal;

/// The configured keys: (name, SHA-256 of the key).
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    /// Over `TRACE_API_KEYS`' entries.
    pub fn new(keys: Vec<(String, [u8; 32])>) -> Self {
        ApiKeys { keys }
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal `key:{name}` of the key, or `None`. Every configured hash is compared (no early
    /// exit), each in constant time, so timing tells nothing about which byte or entry differed.
    pub fn principal(&self, key: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (name, expected) in &self.keys {
            if verify_slices_are_equal(&hash, expected).is_ok() && found.is_none() {
                found = Some(name);
            }
        }
        found.map(|name| Principal::new(format!("key:{name}"), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[(&str, &str)]) -> ApiKeys {
        let config =
            entries.iter().map(|(n, k)| trace_core::auth::api_key_entry(n, k)).collect::<Vec<_>>().join(",");
        let c = trace_core::Config::from_lookup(|v| (v == "TRACE_API_KEYS").then(|| config.clone())).unwrap();
        ApiKeys::new(c.auth.api_keys)
    }

    #[test]
    fn a_configured_key_names_its_principal_and_others_are_refused() {
        let keys = keys(&[("alice", "k-alice-123"), ("bob", "k-bob-456")]);
        assert_eq!(keys.principal("k-alice-123").unwrap().id(), "key:alice");
        assert_eq!(keys.principal("k-bob-456").unwrap().id(), "key:bob");
        assert!(keys.principal("k-alice-124").is_none());
        assert!(keys.principal("").is_none());
        // The hash itself is not a key.
        let hash = trace_core::auth::api_key_entry("x", "k-alice-123").split_once('=').unwrap().1.to_owned();
        assert!(keys.principal(&hash).is_none());
        assert!(ApiKeys::default().principal("k-alice-123").is_none());
    }
}
