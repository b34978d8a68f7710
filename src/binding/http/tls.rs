//! TLS for the HTTP binding (rustls, aws-lc-rs provider): the PEM files of `[http.tls]`
//! and the server configuration built from them (the handshake itself runs per connection
//! in `serve.rs`).
//!
//! [`load`] reads and checks the files once, when the CSE is built, before any port is
//! bound: a missing file or a key that does not fit its certificate stops the start with an
//! error naming the key. The client side (trusted CAs, verification) lives in `client.rs`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;

use crate::config::{ConfigError, TlsConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// What `[http.tls]` names, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Serve HTTPS with this, when enabled.
    pub server: Option<ServerTls>,
    /// Extra CAs trusted for HTTPS peers (`ca_file`).
    pub roots: Vec<CertificateDer<'static>>,
    /// Verify HTTPS peers' certificates (false only for tests).
    pub verify: bool,
}

/// Read the files `[http.tls]` names; an error names the key of the file at fault.
pub fn load(config: &TlsConfig) -> Result<Tls, ConfigError> {
    let server = match &config.server {
        Some(files) => {
            let chain = load_certificates(&files.cert_file)
                .map_err(|reason| ConfigError::invalid("http.tls.cert_file", reason))?;
            let key = load_private_key(&files.key_file)
                .map_err(|reason| ConfigError::invalid("http.tls.key_file", reason))?;
            Some(ServerTls::new(chain, key).map_err(|reason| ConfigError::invalid("http.tls.key_file", reason))?)
        }
        None => None,
    };
    let roots = match &config.ca_file {
        Some(path) => load_certificates(path).map_err(|reason| ConfigError::invalid("http.tls.ca_file", reason))?,
        None => Vec::new(),
    };
    Ok(Tls { server, roots, verify: config.verify })
}

/// The certificates of a PEM file (a chain: leaf first; or a CA bundle).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not a PEM certificate file: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        rustls_pki_types::pem::Error::Io(error) => format!("cannot read {}: {error}", path.display()),
        rustls_pki_types::pem::Error::NoItemsFound => format!("{} holds no PEM private key", path.display()),
        error => format!("{} is not a PEM private key file: {error}", path.display()),
    })
}

/// The crypto provider of every TLS configuration this CSE builds.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A checked server TLS configuration: certificate chain and private key. Its `Debug`
/// shows no key material.
#[derive(Clone)]
pub struct ServerTls(Arc<rustls::ServerConfig>);

impl ServerTls {
    /// Check that `key` belongs to the first certificate of `chain`; the reason otherwise.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<ServerTls, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| format!("the key does not fit the certificate: {error}"))?;
        // The HTTP server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls(Arc::new(config)))
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.clone())
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, TlsFiles};

    fn key_of(result: Result<Tls, ConfigError>) -> String {
        result.expect_err("refused").key().unwrap_or_default().to_string()
    }

    #[test]
    fn the_files_are_read_and_the_key_must_fit_the_certificate() {
        let mut config = Settings::default().validate().expect("defaults").http.tls;
        let files = |cert: &str, key: &str| Some(TlsFiles { cert_file: cert.into(), key_file: key.into() });
        config.server = files("/nonexistent/cert.pem", "/nonexistent/key.pem");
        assert_eq!(key_of(load(&config)), "http.tls.cert_file");
        config.server = None;
        config.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(key_of(load(&config)), "http.tls.ca_file");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = write("cert.pem", &first.cert.pem());
        let key = write("key.pem", &first.signing_key.serialize_pem());
        let other_key = write("other.pem", &second.signing_key.serialize_pem());
        config.ca_file = None;
        config.server = files(&cert, &other_key);
        assert_eq!(key_of(load(&config)), "http.tls.key_file");
        config.server = files(&key, &key);
        assert_eq!(key_of(load(&config)), "http.tls.cert_file");
        config.server = files(&cert, &key);
        assert!(load(&config).expect("valid").server.is_some());
    }
}
