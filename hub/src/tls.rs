//! HTTPS: the certificate chain and private key from PEM files, and ALPN for HTTP/2.

use std::{
    error::Error,
    fmt, fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// The ALPN protocols the hub offers over TLS, preferred first: HTTP/2 (`h2`), then HTTP/1.1.
/// Browsers speak HTTP/2 only over TLS, and only when ALPN selects it ([RFC 9113 §3.2]).
///
/// ```
/// assert_eq!(tower_sse_hub::ALPN, [&b"h2"[..], b"http/1.1"]);
/// ```
///
/// [RFC 9113 §3.2]: https://www.rfc-editor.org/rfc/rfc9113#section-3.2
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS configuration for [`Server::tls`](super::Server::tls): the certificate chain in
/// `cert` (PEM, the server's certificate first), the private key in `key` (PEM: PKCS #8,
/// PKCS #1 or SEC1), TLS 1.2 and 1.3 with rustls's `ring` provider, ALPN [`ALPN`].
///
/// # Errors
///
/// A file can't be read, holds no certificate (or no key), or the key doesn't go with the
/// certificate. The error names the file.
///
/// ```
/// use std::path::Path;
///
/// let err = tower_sse_hub::tls_config(Path::new("/nonexistent.pem"), Path::new("key.pem"))
///     .unwrap_err();
/// assert!(err.to_string().starts_with("certificate /nonexistent.pem: "), "{err}");
/// ```
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certificate = |source: Box<dyn Error + Send + Sync>| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let private_key = |source: Box<dyn Error + Send + Sync>| TlsError::Key {
        path: key.to_owned(),
        source,
    };
    let pem = fs::read(cert).map_err(|err| certificate(err.into()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| certificate(err.into()))?;
    if chain.is_empty() {
        return Err(certificate("no PEM certificate in it".into()));
    }
    let pem = fs::read(key).map_err(|err| private_key(err.into()))?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            private_key("no PEM private key in it".into())
        }
        err => private_key(err.into()),
    })?;
    // rustls 0.23.48 deprecates the `ring` provider (it has no post-quantum key exchange);
    // `aws-lc-rs`, which has, needs cmake and nasm to build, which a `cargo install` on a plain
    // machine may not have. Classic ECDHE is what browsers negotiate with `ring` today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private)
        })
        .map_err(|source| TlsError::Refused {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Why [`tls_config`] failed; it names the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file can't be read, or holds no PEM certificate.
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The key file can't be read, or holds no PEM private key.
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: Box<dyn Error + Send + Sync>,
    },
    /// rustls refused the pair: the key doesn't go with the certificate, or is of a kind it
    /// doesn't support.
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificate { path, source } => {
                write!(f, "certificate {}: {source}", path.display())
            }
            TlsError::Key { path, source } => write!(f, "private key {}: {source}", path.display()),
            TlsError::Refused { cert, key, source } => write!(
                f,
                "certificate {} with private key {}: {source}",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl Error for TlsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TlsError::Certificate { source, .. } | TlsError::Key { source, .. } => Some(&**source),
            TlsError::Refused { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{TlsError, tls_config};

    /// A folder of its own under the system's temporary folder, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("tower-sse-tls-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn loads_a_pair_and_offers_h2_then_http1() {
        let dir = Dir::new("pair");
        let (cert, key) = self_signed();
        let config = tls_config(&dir.file("cert.pem", &cert), &dir.file("key.pem", &key)).unwrap();
        assert_eq!(config.alpn_protocols, [&b"h2"[..], b"http/1.1"]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = Dir::new("errors");
        let (cert, key) = self_signed();
        let (cert_file, key_file) = (dir.file("cert.pem", &cert), dir.file("key.pem", &key));
        let missing = dir.0.join("missing.pem");
        let err = |cert: &PathBuf, key: &PathBuf| tls_config(cert, key).unwrap_err().to_string();

        let expected = format!("certificate {}: ", missing.display());
        assert!(err(&missing, &key_file).starts_with(&expected));
        let expected = format!("private key {}: ", missing.display());
        assert!(err(&cert_file, &missing).starts_with(&expected));
        // Swapped: no certificate in the key file, no key in the certificate file.
        let expected = format!(
            "certificate {}: no PEM certificate in it",
            key_file.display()
        );
        assert_eq!(err(&key_file, &key_file), expected);
        let expected = format!(
            "private key {}: no PEM private key in it",
            cert_file.display()
        );
        assert_eq!(err(&cert_file, &cert_file), expected);
        let garbled = dir.file("garbled.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
        assert!(
            err(&garbled, &key_file).starts_with(&format!("certificate {}: ", garbled.display()))
        );

        // A key of another certificate.
        let other = dir.file("other.pem", &self_signed().1);
        let refused = tls_config(&cert_file, &other).unwrap_err();
        assert!(matches!(refused, TlsError::Refused { .. }), "{refused:?}");
        let expected = format!(
            "certificate {} with private key {}: ",
            cert_file.display(),
            other.display()
        );
        assert!(refused.to_string().starts_with(&expected), "{refused}");
    }
}
