//! Certificates (cert-spec, tor-spec §4.2):
//! - [`ed25519`]: Tor's Ed25519 certificates (CERTS types 4, 5, 6; descriptors);
//! - [`x509`]: the RSA identity X.509 certificate (type 2) and the link certificate
//!   (type 1 / TLS);
//! - [`rsa_crosscert`]: the RSA→Ed25519 cross-certificate (type 7);
//! - [`onion_crosscert`]: the descriptor's TAP and ntor onion-key cross-certificates.

pub mod ed25519;
pub mod onion_crosscert;
pub mod rsa_crosscert;
pub mod x509;
