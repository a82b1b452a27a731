//! TLS for Redis and PostgreSQL: one stack (rustls with the aws-lc-rs provider, the AWS SDK's own),
//! CA bundles read and checked at start-up, and handshake failures told in words that name the
//! variable to fix.
//!
//! Never logs or returns a URL: only variable names, file paths and host names.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A CA bundle or TLS set-up that cannot be used; the text names the variable.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The file cannot be read.
    #[error("{var}={path}: cannot read the CA bundle: {source}")]
    Unreadable {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{var}={path}: not a PEM CA bundle (no -----BEGIN CERTIFICATE----- block in it)")]
    NoCertificate {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: String,
    },
    /// A PEM block is not a usable CA certificate.
    #[error("{var}={path}: certificate {index} of the bundle is not a valid CA certificate: {reason}")]
    BadCertificate {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: String,
        /// 1-based position in the bundle.
        index: usize,
        /// Why.
        reason: String,
    },
    /// No CA file and the system's roots cannot be loaded.
    #[error("no CA bundle in {var} and the system's root certificates cannot be loaded: {reason}")]
    NoSystemRoots {
        /// The variable that would name a bundle.
        var: &'static str,
        /// Why.
        reason: String,
    },
    /// The TLS configuration cannot be built.
    #[error("TLS set-up failed: {0}")]
    Config(#[from] rustls::Error),
}

/// A server's certificate was refused during the TLS handshake: which server, why, and which CAs
/// were trusted (naming the variable that sets them).
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake with {service} at {host} failed: {refusal}; trusted: {trust}")]
pub struct TlsRefused {
    /// `Redis` or `PostgreSQL`.
    pub service: &'static str,
    /// The host connected to.
    pub host: String,
    /// What the certificate failed ([`certificate_refusal`]).
    pub refusal: String,
    /// The CAs trusted.
    pub trust: String,
}

impl TlsRefused {
    /// A refusal by `service` at `host`, the CAs from `ca_file` (named by `var`) or the system roots.
    pub fn new(
        service: &'static str,
        host: String,
        refusal: String,
        var: &'static str,
        ca_file: Option<&str>,
    ) -> Self {
        let trust = match ca_file {
            Some(path) => format!("the CAs of {var}={path}"),
            None => format!("the system roots ({var} is unset)"),
        };
        TlsRefused { service, host, refusal, trust }
    }
}

/// Makes aws-lc-rs the process's rustls provider (the redis crate builds its TLS configuration with
/// the process default). Harmless when one is installed already.
pub fn install_provider() {
    let _ = aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(aws_lc_rs::default_provider()))
}

/// A CA bundle read from the file named by variable `var`: its PEM text (as the redis crate takes
/// it) and its certificates as trust anchors, checked now so that a bad file stops start-up.
#[derive(Clone)]
pub struct CaBundle {
    /// The variable that named the file.
    pub var: &'static str,
    /// The file.
    pub path: String,
    /// The file's PEM text.
    pub pem: Vec<u8>,
    /// The trust anchors.
    pub roots: RootCertStore,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("var", &self.var)
            .field("path", &self.path)
            .field("certificates", &self.roots.len())
            .finish()
    }
}

impl CaBundle {
    /// Reads and checks the bundle at `path`, named by variable `var`.
    pub fn read(var: &'static str, path: &str) -> Result<CaBundle, TlsSetupError> {
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::Unreadable {
            var,
            path: path.to_owned(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let bad = |reason: String| TlsSetupError::BadCertificate {
                var,
                path: path.to_owned(),
                index: i + 1,
                reason,
            };
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsSetupError::NoCertificate { var, path: path.to_owned() });
        }
        Ok(CaBundle { var, path: path.to_owned(), pem, roots })
    }
}

/// The system's root certificates (for a server whose certificate chains to a public CA).
fn system_roots(var: &'static str) -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = found.errors.first().map(|e| e.to_string()).unwrap_or_else(|| "none found".to_owned());
        return Err(TlsSetupError::NoSystemRoots { var, reason });
    }
    Ok(roots)
}

/// A client configuration that checks the server's certificate against `ca` (the system roots when
/// `None`, `var` naming the variable that would set a bundle) and the host name.
pub fn verifying_config(ca: Option<&CaBundle>, var: &'static str) -> Result<ClientConfig, TlsSetupError> {
    let roots = match ca {
        Some(bundle) => bundle.roots.clone(),
        None => system_roots(var)?,
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that encrypts but accepts any server certificate (`sslmode=require`): it
/// protects against eavesdropping, not against an impostor. Handshake signatures are still checked,
/// so the server must hold the key of the certificate it shows.
pub fn unverified_config() -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let verifier = AnyServerCertificate { provider: provider.clone() };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts every certificate (see [`unverified_config`]).
#[derive(Debug)]
struct AnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A refused server certificate, found in an error's chain (or, for libraries that flatten their
/// errors into text, in its words): what the certificate failed, in words.
pub fn certificate_refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref())
        });
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error {
            return Some(describe(cert));
        }
        next = e.source();
    }
    let text = error.to_string();
    if text.contains("UnknownIssuer") {
        Some(describe(&CertificateError::UnknownIssuer))
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        Some(describe(&CertificateError::NotValidForName))
    } else if text.contains("invalid peer certificate") {
        Some(format!("the server's certificate was refused ({text})"))
    } else {
        None
    }
}

fn describe(error: &CertificateError) -> String {
    match error {
        CertificateError::UnknownIssuer => {
            "the server's certificate does not chain to a trusted CA (unknown issuer)".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host connected to".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired".to_owned()
        }
        other => format!("the server's certificate was refused ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("trace-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn a_missing_or_non_pem_bundle_names_the_variable() {
        let e = CaBundle::read("DATABASE_CA_FILE", "/nonexistent/ca.pem").unwrap_err();
        assert!(matches!(e, TlsSetupError::Unreadable { .. }), "{e}");
        assert!(e.to_string().starts_with("DATABASE_CA_FILE=/nonexistent/ca.pem: cannot read"), "{e}");

        let path = temp("text", "hello, not a certificate\n");
        let e = CaBundle::read("REDIS_TLS_CA_FILE", &path).unwrap_err();
        assert!(matches!(e, TlsSetupError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().starts_with("REDIS_TLS_CA_FILE="), "{e}");

        let path = temp("garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = CaBundle::read("REDIS_TLS_CA_FILE", &path).unwrap_err();
        assert!(matches!(e, TlsSetupError::BadCertificate { index: 1, .. }), "{e}");
    }

    #[test]
    fn refusals_are_found_in_the_chain_and_in_words() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(certificate_refusal(&io).unwrap().contains("does not chain"));
        let flat = std::io::Error::other("invalid peer certificate: NotValidForName");
        assert!(certificate_refusal(&flat).unwrap().contains("does not name the host"));
        assert_eq!(certificate_refusal(&std::io::Error::other("connection refused")), None);
    }

    #[test]
    fn both_configurations_build_with_the_aws_lc_rs_provider() {
        install_provider();
        unverified_config().unwrap();
        // The system roots may be absent in a minimal container: then the error names the variable.
        match verifying_config(None, "DATABASE_CA_FILE") {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("DATABASE_CA_FILE"), "{e}"),
        }
    }
}
