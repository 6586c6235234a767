//! A throwaway certificate authority and a server certificate for `localhost` and `127.0.0.1`,
//! written as PEM files into a temporary directory, for TLS tests on both Rust and Python peers.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files for one test: a CA certificate (to trust) and a server chain and key (to serve).
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    /// The CA certificate clients trust.
    pub ca_file: PathBuf,
    pub ca_pem: String,
    /// The server certificate (signed by the CA).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
}

impl TestCerts {
    /// Generates a fresh CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Brume test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");

        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let ca_pem = ca.pem();
        TestCerts {
            ca_file: write("ca.pem", &ca_pem),
            cert_file: write("server.pem", &cert.pem()),
            key_file: write("server.key", &key.serialize_pem()),
            ca_pem,
            dir,
        }
    }

    /// A client TLS config trusting only this CA.
    pub fn client_config(&self) -> hub::transport::tls::TlsClientConfig {
        hub::transport::tls::TlsClientConfig::with_root_pem(self.ca_pem.as_bytes())
            .expect("CA parses")
    }

    /// The listener's `[listeners.tls]` section.
    pub fn section(&self) -> hub::config::TlsSection {
        hub::config::TlsSection {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}
