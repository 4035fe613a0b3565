//! The TCP listener's TLS policy: rustls (ring), TLS 1.3 and 1.2 with ECDHE + AEAD suites
//! only, HTTP/2 by ALPN, and a client certificate required and verified against the CA.

use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use zeroize::Zeroizing;

/// PEM inputs of the TLS listener, as read from the files the config names.
pub struct TlsMaterial {
    /// The server certificate, followed by its intermediates.
    pub cert_chain: Vec<u8>,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Zeroizing<Vec<u8>>,
    /// The CA certificate(s) that issue client certificates.
    pub client_ca: Vec<u8>,
    /// Optional certificate revocation lists of that CA.
    pub client_crl: Option<Vec<u8>>,
}

/// What is wrong with the TLS material; each variant names its input.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    ClientCa(String),
    #[error("{0}")]
    ClientCrl(String),
}

/// The suites offered, strongest first: TLS 1.3's three AEAD suites, then TLS 1.2 with
/// ECDHE key exchange and AES-GCM or ChaCha20-Poly1305 only (no CBC, no RSA key
/// exchange, no static DH: rustls implements none of those).
pub fn cipher_suites() -> Vec<tokio_rustls::rustls::SupportedCipherSuite> {
    use ring::cipher_suite::*;
    vec![
        TLS13_AES_256_GCM_SHA384,
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: cipher_suites(),
        ..ring::default_provider()
    })
}

/// The rustls server configuration of the TCP listener.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.cert_chain)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert("holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&m.key)
        .map_err(|e| TlsError::Key(format!("no PEM private key: {e}")))?;

    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&m.client_ca)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::ClientCa(format!("not PEM certificates: {e}")))?;
    if cas.is_empty() {
        return Err(TlsError::ClientCa("holds no PEM certificate".into()));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| TlsError::ClientCa(format!("not a usable CA certificate: {e}")))?;
    }
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &m.client_crl {
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_slice_iter(crl)
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::ClientCrl(format!("not a PEM CRL: {e}")))?;
        if crls.is_empty() {
            return Err(TlsError::ClientCrl("holds no PEM CRL".into()));
        }
        verifier = verifier.with_crls(crls);
    }
    // No allow_unauthenticated(): a client without a valid certificate fails the handshake.
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::ClientCa(format!("cannot build the client verifier: {e}")))?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError::Cert(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Key(format!(
                "does not match the certificate or is unusable: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Our suite order (strongest first) wins over the client's.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The XKS proxy's HTTPS listener with mutual TLS: the TCP listener's client verification
/// (certificates chained to `client_ca`), over HTTP/1.1.
pub fn https_mtls_server_config(
    cert_chain: &[u8],
    key: &[u8],
    client_ca: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = server_config(&TlsMaterial {
        cert_chain: cert_chain.to_vec(),
        key: Zeroizing::new(key.to_vec()),
        client_ca: client_ca.to_vec(),
        client_crl: None,
    })?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls configuration of the AWS endpoint's HTTPS listener: the same versions and
/// suites, HTTP/1.1, and no client certificate (its callers prove themselves with SigV4).
pub fn https_server_config(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert("holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| TlsError::Key(format!("no PEM private key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError::Cert(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Key(format!(
                "does not match the certificate or is unusable: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
