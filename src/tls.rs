//! TLS listeners: turns a listener's `certfile`/`keyfile`/`cafile` into a rustls server
//! configuration at startup, and accepts TLS connections with a deadline.
//!
//! Everything that can be wrong with the files (missing, unreadable, not PEM, a key that
//! does not belong to the certificate, a CA file without certificates) is found here,
//! before any listener is bound, and reported naming the listener key and the file, so a
//! broker never starts half-secured.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Listener, TlsVersion};
use crate::log_limit::LogLimit;

/// The crypto provider is named explicitly: with more than one rustls backend compiled
/// into a program (a dependency may enable another), rustls cannot pick a default.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS acceptor for `listener`, or `None` for a plain listener. `at` names the listener
/// in messages (e.g. `config.toml: listener[2]`).
pub fn acceptor(listener: &Listener, at: &str) -> Result<Option<TlsAcceptor>, ConfigError> {
    let (Some(certfile), Some(keyfile)) = (&listener.certfile, &listener.keyfile) else {
        return Ok(None);
    };
    let fail = |key: &str, path: &Path, why: String| {
        ConfigError(format!(
            "{at}.{key} = {:?}: {why}",
            path.display().to_string()
        ))
    };

    let chain = read_certificates(certfile).map_err(|e| fail("certfile", certfile, e))?;
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| {
        fail(
            "keyfile",
            keyfile,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;

    let versions: &[&rustls::SupportedProtocolVersion] =
        match listener.tls_version.unwrap_or_default() {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError(format!("{at}.tls_version: {e}")))?;

    let builder = match &listener.cafile {
        Some(cafile) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(cafile).map_err(|e| fail("cafile", cafile, e))? {
                roots.add(cert).map_err(|e| {
                    fail(
                        "cafile",
                        cafile,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            // With a CA but without require_certificate, a certificate is checked when the
            // client offers one, and clients without one are still let in (as Mosquitto).
            let verifier = if listener.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| fail("cafile", cafile, format!("cannot verify clients: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // rustls checks here that the key belongs to the certificate.
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        fail(
            "keyfile",
            keyfile,
            format!("does not fit certfile {}: {e}", certfile.display()),
        )
    })?;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Every certificate in a PEM file; an empty file is an error.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    // Read first: the PEM iterator's error for a missing file does not say "not found".
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// Runs the TLS handshake on an accepted connection, giving up after `timeout`. Failures
/// (plaintext MQTT on the TLS port, garbage, an untrusted or expired client certificate,
/// a client that stalls) are logged once and cost nothing else.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "tls_failed", %peer, cause = failure_cause(&e), suppressed, "TLS handshake failed: {e}");
            }
            None
        }
        Err(_) => {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "tls_timeout", %peer, suppressed, "TLS handshake not finished within {timeout:?}, closing");
            }
            None
        }
    }
}

/// Why a TLS handshake failed, as a stable name for the log line's `cause` field: what
/// was wrong with the client's certificate when rustls says so, else whether TLS or the
/// socket failed.
fn failure_cause(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "certificate_expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(_) => "tls",
        None => "io",
    }
}

/// The Common Name of the verified client certificate, for `use_identity_as_username`.
pub fn peer_common_name(stream: &TlsStream<TcpStream>) -> Option<String> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
