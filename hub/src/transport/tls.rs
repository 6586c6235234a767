//! TLS for WAMP listeners and clients (rustls on the ring provider), and the RFC 9266
//! `tls-exporter` channel binding that WAMP-cryptosign signs into its challenge.
//!
//! - [`TlsAcceptor`]: a listener's certificate chain and key, loaded from PEM files and checked
//!   to fit together before any port opens.
//! - [`TlsClientConfig`]: which roots a client trusts (Mozilla's by default, or a given PEM
//!   certificate for private CAs and tests).
//! - [`ChannelBinding`]: the 32-byte exporter value of a TLS 1.3 connection (label
//!   `EXPORTER-Channel-Binding`, no context). Both ends compute the same value; a man in the
//!   middle terminating TLS sees a different one on each side, so a signature bound to one
//!   channel fails on the other. TLS 1.2 connections get no binding: RFC 9266 allows the
//!   exporter there only with the extended master secret, which cannot be confirmed here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// The RFC 9266 exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: no PEM private key found ({reason})")]
    NoKey { what: String, reason: String },
    #[error("{what}: invalid PEM ({reason})")]
    Pem { what: String, reason: String },
    #[error("certificate and key cannot be used: {0}")]
    Config(#[source] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

/// The crypto provider every TLS config here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM document.
pub fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The server side of TLS for one listener.
#[derive(Clone)]
pub struct TlsAcceptor(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl TlsAcceptor {
    /// Loads a certificate chain (leaf first) and its private key from PEM files.
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
        let certs = certificates_from_pem(&read(cert_file)?, &cert_file.display().to_string())?;
        let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| TlsError::NoKey {
            what: key_file.display().to_string(),
            reason: e.to_string(),
        })?;
        TlsAcceptor::new(certs, key)
    }

    /// From a parsed chain and key; fails if the key does not belong to the leaf certificate.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsAcceptor, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::Config)?;
        Ok(TlsAcceptor(tokio_rustls::TlsAcceptor::from(Arc::new(
            config,
        ))))
    }

    /// Runs the server handshake.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::server::TlsStream<S>, TlsError> {
        self.0.accept(stream).await.map_err(TlsError::Handshake)
    }
}

pub use crate::router::auth::cryptosign::ChannelBinding;

fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Option<ChannelBinding> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .ok()
        .map(ChannelBinding::new)
}

/// The channel binding of an accepted TLS 1.3 connection.
pub fn server_channel_binding<S>(s: &tokio_rustls::server::TlsStream<S>) -> Option<ChannelBinding> {
    exporter(s.get_ref().1)
}

/// The channel binding of a client TLS 1.3 connection.
pub fn client_channel_binding<S>(s: &tokio_rustls::client::TlsStream<S>) -> Option<ChannelBinding> {
    exporter(s.get_ref().1)
}

/// Which certificates a client trusts.
#[derive(Clone, Debug, Default)]
pub enum TlsRoots {
    /// Mozilla's root store (public CAs), for a cloud router with a public certificate.
    #[default]
    Mozilla,
    /// Only these certificates (a private CA, or a self-signed router certificate).
    Certificates(Vec<CertificateDer<'static>>),
}

/// The client side of TLS: which roots to trust.
#[derive(Clone, Debug, Default)]
pub struct TlsClientConfig {
    pub roots: TlsRoots,
}

impl TlsClientConfig {
    /// Trusts only the certificates in a PEM document.
    pub fn with_root_pem(pem: &[u8]) -> Result<TlsClientConfig, TlsError> {
        Ok(TlsClientConfig {
            roots: TlsRoots::Certificates(certificates_from_pem(pem, "root certificate")?),
        })
    }

    /// Trusts only the certificates in a PEM file.
    pub fn with_root_pem_file(path: &Path) -> Result<TlsClientConfig, TlsError> {
        Ok(TlsClientConfig {
            roots: TlsRoots::Certificates(certificates_from_pem(
                &read(path)?,
                &path.display().to_string(),
            )?),
        })
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            TlsRoots::Mozilla => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            TlsRoots::Certificates(certs) => {
                for c in certs {
                    store.add(c.clone()).map_err(TlsError::Config)?;
                }
            }
        }
        Ok(rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(store)
            .with_no_client_auth())
    }

    /// Runs the client handshake with `host` (a DNS name or an IP address) as the server name.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| TlsError::ServerName(host.to_owned()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.rustls_config()?));
        connector
            .connect(name, stream)
            .await
            .map_err(TlsError::Handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_refused() {
        assert!(matches!(
            certificates_from_pem(b"nothing here", "x"),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(
            TlsClientConfig::with_root_pem(
                b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
            ),
            Err(TlsError::Pem { .. }) | Err(TlsError::NoCertificate { .. })
        ));
        let missing = TlsAcceptor::from_pem_files(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        );
        assert!(matches!(missing, Err(TlsError::Read { .. })));
    }

    #[test]
    fn binding_debug_hides_the_value() {
        assert_eq!(
            format!("{:?}", ChannelBinding::new([7; 32])),
            "ChannelBinding(..)"
        );
    }
}
