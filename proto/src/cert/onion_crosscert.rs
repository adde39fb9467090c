//! The two descriptor cross-certificates that prove a relay holds its onion keys
//! (dir-spec §2.1.1, INTEROP D.1):
//!
//! - `onion-key-crosscert`: the TAP RSA-1024 onion key signs, PKCS#1 v1.5 with no
//!   DigestInfo and **no hashing**, the 52 bytes `SHA1(RSA identity DER) | Ed25519 identity`.
//! - `ntor-onion-key-crosscert <sign bit>`: an Ed25519 certificate of type 0x0A that
//!   certifies the Ed25519 identity, signed by an Ed25519 key derived from the curve25519
//!   ntor onion key: scalar = the clamped curve25519 secret, nonce prefix =
//!   `SHA512(secret | "Derive high part of ed25519 key from curve25519 key\0")[..32]`
//!   (the NUL is hashed). The sign bit of the derived public key is published beside it,
//!   because a curve25519 public key does not determine it.

use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::clamp_integer;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::cert::ed25519::{CertifiedKey, Ed25519Cert, cert_type};
use crate::handshake::ntor::NtorOnionKey;
use crate::keys::{Ed25519Keypair, RsaKeypair, RsaPublic};
use crate::{Ed25519Identity, Error, Result, RsaIdentity};

const DERIVE_STRING: &[u8] = b"Derive high part of ed25519 key from curve25519 key\0";

fn tap_signed_data(rsa_id: &RsaIdentity, ed_id: &Ed25519Identity) -> [u8; 52] {
    let mut d = [0u8; 52];
    d[..20].copy_from_slice(&rsa_id.0);
    d[20..].copy_from_slice(&ed_id.0);
    d
}

/// Signs `onion-key-crosscert` with the TAP key.
///
/// # Errors
/// [`Error::TooLarge`] if the TAP key is too small.
pub fn tap_crosscert_sign(
    tap: &RsaKeypair,
    rsa_id: &RsaIdentity,
    ed_id: &Ed25519Identity,
) -> Result<Vec<u8>> {
    tap.sign_raw(&tap_signed_data(rsa_id, ed_id))
}

/// Checks `onion-key-crosscert`.
///
/// # Errors
/// [`Error::BadSignature`].
pub fn tap_crosscert_check(
    tap: &RsaPublic,
    sig: &[u8],
    rsa_id: &RsaIdentity,
    ed_id: &Ed25519Identity,
) -> Result<()> {
    tap.verify_raw(&tap_signed_data(rsa_id, ed_id), sig, "onion-key-crosscert")
}

/// The Ed25519 key pair derived from an ntor onion key, and its sign bit.
pub fn ntor_derived_keypair(onion: &NtorOnionKey) -> (Ed25519Keypair, u8) {
    let secret = clamp_integer(*onion.secret_bytes());
    let mut expanded = Zeroizing::new([0u8; 64]);
    expanded[..32].copy_from_slice(&secret);
    let mut h = Sha512::new();
    h.update(secret);
    h.update(DERIVE_STRING);
    expanded[32..].copy_from_slice(&h.finalize()[..32]);
    let kp = Ed25519Keypair::from_expanded(&expanded);
    let sign_bit = kp.public().to_bytes()[31] >> 7;
    (kp, sign_bit)
}

/// Signs `ntor-onion-key-crosscert`: returns the type-0x0A certificate and the sign bit.
///
/// # Errors
/// Only if certificate encoding fails (it does not).
pub fn ntor_crosscert_sign(
    onion: &NtorOnionKey,
    ed_id: &Ed25519Identity,
    expiration_hours: u32,
) -> Result<(Ed25519Cert, u8)> {
    let (kp, sign_bit) = ntor_derived_keypair(onion);
    let cert = Ed25519Cert::sign(
        cert_type::NTOR_CC_IDENTITY,
        expiration_hours,
        CertifiedKey::Ed25519(ed_id.0),
        false,
        vec![],
        &kp,
    )?;
    Ok((cert, sign_bit))
}

/// The Ed25519 public key that must have signed an ntor crosscert, rebuilt from the
/// curve25519 public key and the published sign bit.
///
/// # Errors
/// [`Error::BadCert`] when the point does not convert.
pub fn ntor_crosscert_key(onion_public: &[u8; 32], sign_bit: u8) -> Result<VerifyingKey> {
    let ed = MontgomeryPoint(*onion_public)
        .to_edwards(sign_bit & 1)
        .ok_or(Error::BadCert("ntor onion key has no Ed25519 form"))?;
    VerifyingKey::from_bytes(&ed.compress().to_bytes())
        .map_err(|_| Error::BadCert("ntor onion key has no Ed25519 form"))
}

/// Checks `ntor-onion-key-crosscert` as a directory authority does: type 0x0A, certifies
/// `ed_id`, signed by the key derived from `onion_public` with `sign_bit`, not expired.
///
/// # Errors
/// [`Error::BadCert`], [`Error::BadSignature`] or [`Error::Expired`].
pub fn ntor_crosscert_check(
    cert: &Ed25519Cert,
    onion_public: &[u8; 32],
    sign_bit: u8,
    ed_id: &Ed25519Identity,
    now_secs: u64,
) -> Result<()> {
    if cert.cert_type != cert_type::NTOR_CC_IDENTITY {
        return Err(Error::BadCert("ntor crosscert has the wrong type"));
    }
    if cert.certified != CertifiedKey::Ed25519(ed_id.0) {
        return Err(Error::BadCert("ntor crosscert certifies another identity"));
    }
    cert.check_signature(Some(&ntor_crosscert_key(onion_public, sign_bit)?))?;
    cert.check_expiry(now_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ntor_crosscert_round_trip() {
        let mut r = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..8 {
            let onion = NtorOnionKey::generate(&mut r);
            let ed = Ed25519Identity([3; 32]);
            let (cert, bit) = ntor_crosscert_sign(&onion, &ed, 600_000).unwrap();
            let parsed = Ed25519Cert::parse(cert.as_bytes()).unwrap();
            ntor_crosscert_check(&parsed, &onion.public_bytes(), bit, &ed, 0).unwrap();
            // The wrong sign bit names another key.
            assert!(ntor_crosscert_check(&parsed, &onion.public_bytes(), bit ^ 1, &ed, 0).is_err());
            assert!(
                ntor_crosscert_check(
                    &parsed,
                    &onion.public_bytes(),
                    bit,
                    &Ed25519Identity([4; 32]),
                    0
                )
                .is_err()
            );
            assert_eq!(
                ntor_crosscert_check(&parsed, &onion.public_bytes(), bit, &ed, 600_000 * 3600 + 1),
                Err(Error::Expired("ed25519 certificate"))
            );
        }
    }

    #[test]
    fn derived_public_key_is_the_birational_image() {
        // The derived Ed25519 key's Montgomery form is the curve25519 public key.
        let mut r = rand::rngs::StdRng::seed_from_u64(6);
        let onion = NtorOnionKey::generate(&mut r);
        let (kp, bit) = ntor_derived_keypair(&onion);
        let mont = kp.public().to_montgomery().to_bytes();
        assert_eq!(mont, onion.public_bytes());
        assert_eq!(
            ntor_crosscert_key(&onion.public_bytes(), bit).unwrap(),
            kp.public()
        );
    }

    #[test]
    fn tap_crosscert() {
        let mut r = rand::rngs::StdRng::seed_from_u64(7);
        let tap = RsaKeypair::generate(&mut r, 1024).unwrap();
        let rsa_id = RsaIdentity([1; 20]);
        let ed = Ed25519Identity([2; 32]);
        let sig = tap_crosscert_sign(&tap, &rsa_id, &ed).unwrap();
        tap_crosscert_check(tap.public(), &sig, &rsa_id, &ed).unwrap();
        assert!(tap_crosscert_check(tap.public(), &sig, &RsaIdentity([0; 20]), &ed).is_err());
    }
}
