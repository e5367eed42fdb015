//! TLS of a node: the certificate its listener presents (`--tls-cert`, `--tls-key`, PEM)
//! and the CA it trusts when it calls other nodes or a command calls a node
//! (`--tls-ca`, PEM). rustls with the ring provider; TLS 1.2 and 1.3.
//!
//! This module only loads and builds configurations; the listener that uses them is
//! `http_server.rs`, the clients are the router's (`hektor-query`) and `client.rs`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The server side: a rustls configuration from a PEM certificate chain and key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate chain in {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    // ring, as reqwest's rustls uses: rustls now prefers aws-lc-rs (post-quantum key
    // exchange), which would add aws-lc's C build to every fresh machine's first build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS key does not match the certificate, or is of an unsupported kind")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates in a PEM file, for HTTP clients to trust.
pub fn trusted(ca: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM certificate bundle", ca.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", ca.display());
    }
    Ok(certs)
}
