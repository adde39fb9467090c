//! Ed25519 keys in C tor's *expanded* form (tor-spec §0.3, cert-spec §2).
//!
//! C tor stores an Ed25519 secret key as 64 bytes: the clamped scalar `a` then the
//! 32-byte nonce prefix (`SHA-512(seed)` with the low half clamped, or, for keys derived
//! from a curve25519 onion key, a different derivation). The seed is not kept, so a key
//! loaded from a C tor key directory can only sign through the expanded form; this type
//! always does.
//!
//! Invariants: the stored 64 bytes are exactly what C tor would write to
//! `ed25519_*_secret_key`; the public key is always `a·B` of the stored scalar; `Debug`
//! never prints the secret.

use std::fmt;

use curve25519_dalek::scalar::clamp_integer;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::Ed25519Identity;

/// Something that makes Ed25519 signatures: a plain [`SigningKey`] or an
/// [`Ed25519Keypair`]. Certificates and descriptors sign through this.
pub trait Ed25519Signer {
    /// The public key that checks this signer's signatures.
    fn verifying_key(&self) -> VerifyingKey;
    /// Signs `msg` (pure Ed25519, no prehash, no context).
    fn sign_msg(&self, msg: &[u8]) -> Signature;
}

impl Ed25519Signer for SigningKey {
    fn verifying_key(&self) -> VerifyingKey {
        SigningKey::verifying_key(self)
    }
    fn sign_msg(&self, msg: &[u8]) -> Signature {
        ed25519_dalek::Signer::sign(self, msg)
    }
}

/// An Ed25519 key pair held as C tor's 64-byte expanded secret.
pub struct Ed25519Keypair {
    expanded: Zeroizing<[u8; 64]>,
    secret: ExpandedSecretKey,
    public: VerifyingKey,
}

impl Ed25519Keypair {
    /// A fresh key from 32 random seed bytes.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        Self::from_seed(&seed)
    }

    /// The key RFC 8032 derives from `seed` (same public key as `SigningKey::from_bytes`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut expanded = Zeroizing::new([0u8; 64]);
        expanded.copy_from_slice(&Sha512::digest(seed));
        let mut low = [0u8; 32];
        low.copy_from_slice(&expanded[..32]);
        expanded[..32].copy_from_slice(&clamp_integer(low));
        Self::from_expanded(&expanded)
    }

    /// A key from its 64-byte expanded form (clamped scalar, then nonce prefix), as read
    /// from a C tor `ed25519v1-secret` file.
    pub fn from_expanded(bytes: &[u8; 64]) -> Self {
        let secret = ExpandedSecretKey::from_bytes(bytes);
        let public = VerifyingKey::from(&secret);
        Ed25519Keypair {
            expanded: Zeroizing::new(*bytes),
            secret,
            public,
        }
    }

    /// The 64-byte expanded secret, for writing a key file.
    pub fn expanded_bytes(&self) -> &Zeroizing<[u8; 64]> {
        &self.expanded
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.public
    }

    /// The public key as an identity (meaningful for the master identity key).
    pub fn identity(&self) -> Ed25519Identity {
        Ed25519Identity(self.public.to_bytes())
    }
}

impl Clone for Ed25519Keypair {
    fn clone(&self) -> Self {
        Self::from_expanded(&self.expanded)
    }
}

impl Ed25519Signer for Ed25519Keypair {
    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }
    fn sign_msg(&self, msg: &[u8]) -> Signature {
        raw_sign::<Sha512>(&self.secret, msg, &self.public)
    }
}

impl fmt::Debug for Ed25519Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Keypair({}, secret redacted)", self.identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn seed_form_matches_dalek() {
        let seed = [7u8; 32];
        let ours = Ed25519Keypair::from_seed(&seed);
        let theirs = SigningKey::from_bytes(&seed);
        assert_eq!(ours.public(), theirs.verifying_key());
        // Deterministic Ed25519: the same key signs the same message identically.
        assert_eq!(ours.sign_msg(b"abc"), theirs.sign_msg(b"abc"));
    }

    #[test]
    fn expanded_round_trip_signs_verifiably() {
        let k = Ed25519Keypair::generate(&mut rand::thread_rng());
        let k2 = Ed25519Keypair::from_expanded(k.expanded_bytes());
        assert_eq!(k.public(), k2.public());
        let sig = k2.sign_msg(b"hello");
        k.public().verify(b"hello", &sig).unwrap();
        assert!(k.public().verify(b"hellO", &sig).is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(&k.expanded_bytes()[..8])));
    }
}
