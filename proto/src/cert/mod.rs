//! Certificates (cert-spec). So far: Tor's Ed25519 certificates ([`ed25519`]), which carry
//! the identity → signing → link/auth key chain in CERTS cells and descriptors.
//! The RSA identity X.509 certificate (type 2) and the RSA→Ed25519 cross-certificate
//! (type 7) follow with the key bundle.

pub mod ed25519;
