//! TLS for Tor links (INTEROP A.1): rustls with the ring provider, TLS 1.2 and 1.3.
//!
//! - As responder we present the per-process link certificate (RSA-2048, signed by the
//!   relay's RSA identity) and never ask for a client certificate, as C tor does.
//! - As initiator we accept any certificate: identity is proven in-protocol by the CERTS
//!   cell (the type-5 certificate names the SHA-256 of this TLS certificate). We still check
//!   the TLS handshake signatures against the presented certificate's key, which is what
//!   binds that certificate to this connection.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::channel::LinkContext;

/// The rustls crypto provider of every Tor link.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server configuration for the ORPort.
///
/// # Errors
/// A rustls error if the key does not match the certificate or is unusable.
pub fn server_config(
    link_cert_der: &[u8],
    tls_key_pkcs1_der: &[u8],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(link_cert_der.to_vec())],
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(tls_key_pkcs1_der.to_vec())),
        )?;
    Ok(Arc::new(cfg))
}

/// Client configuration for outbound links (no client certificate).
///
/// # Errors
/// A rustls error if the protocol versions are unsupported (they are not).
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = accept_any_verifier();
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The Tor link certificate verifier: any certificate, but valid handshake signatures.
pub fn accept_any_verifier() -> Arc<dyn ServerCertVerifier> {
    Arc::new(TorLinkVerifier {
        algs: provider().signature_verification_algorithms,
    })
}

/// A server name to put in SNI: a random `www.<x>.com`, as C tor sends; nobody checks it.
pub fn random_server_name() -> ServerName<'static> {
    use rand::Rng;
    let label: String = (0..12)
        .map(|_| char::from(b'a' + rand::thread_rng().gen_range(0..26u8)))
        .collect();
    ServerName::try_from(format!("www.{label}.com"))
        .unwrap_or_else(|_| ServerName::try_from("www.example.com").expect("static name is valid"))
}

#[derive(Debug)]
struct TorLinkVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for TorLinkVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Identity is checked in-protocol against the CERTS cell (tor-spec §4.2).
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What a new connection is served with: the TLS acceptor and the link certificates that
/// match it. Replaced as a whole when the link certificate rotates, so a connection never
/// sees a TLS certificate from one generation and CERTS from another.
#[derive(Clone)]
pub struct LinkState {
    /// TLS acceptor presenting the current link certificate.
    pub tls: TlsAcceptor,
    /// The matching certificates.
    pub ctx: Arc<LinkContext>,
}

impl std::fmt::Debug for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkState").finish_non_exhaustive()
    }
}
