//! RSA keys as Tor uses them: the RSA-1024 identity key and the RSA-1024 TAP onion key
//! (tor-spec §0.3, §1.1).
//!
//! Invariants:
//! - Every digest of an RSA public key (fingerprint, CID/SID, v3ident) is taken over the
//!   DER of the PKCS#1 `RSAPublicKey`, never over SubjectPublicKeyInfo (INTEROP trap 2).
//! - Every RSA signature in Tor's documents and certificates is PKCS#1 v1.5 type-1 padding
//!   of the raw bytes given, with **no** ASN.1 `DigestInfo` (C tor's
//!   `RSA_private_encrypt`, INTEROP trap 3); [`RsaKeypair::sign_raw`] does exactly that.
//! - Secret keys never print: `Debug` is redacted and PEM output is `Zeroizing`.

use std::fmt;

use rand_core::CryptoRngCore;
use rsa::pkcs1::{
    DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey,
};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::{Error, Result, RsaIdentity};

/// The modulus size of Tor's identity and TAP keys.
pub const TOR_RSA_BITS: usize = 1024;
/// The public exponent C tor requires of identity keys.
pub const TOR_RSA_EXPONENT: u64 = 65537;

/// An RSA public key.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublic(RsaPublicKey);

impl RsaPublic {
    /// Parses the DER of a PKCS#1 `RSAPublicKey`.
    ///
    /// # Errors
    /// [`Error::Key`] when the DER is malformed.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        RsaPublicKey::from_pkcs1_der(der)
            .map(RsaPublic)
            .map_err(|e| Error::Key(format!("RSA public key DER: {e}")))
    }

    /// Parses a PEM `RSA PUBLIC KEY` block (as in descriptors and key files).
    ///
    /// # Errors
    /// [`Error::Key`] when the PEM or DER is malformed.
    pub fn from_pem(pem: &str) -> Result<Self> {
        RsaPublicKey::from_pkcs1_pem(pem)
            .map(RsaPublic)
            .map_err(|e| Error::Key(format!("RSA public key PEM: {e}")))
    }

    /// The DER of the PKCS#1 `RSAPublicKey`.
    pub fn to_der(&self) -> Vec<u8> {
        // Encoding a well-formed in-memory key cannot fail; an empty vector would make
        // every later digest check fail loudly rather than pass.
        self.0
            .to_pkcs1_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// PEM `RSA PUBLIC KEY`, LF line endings, 64-column base64 (dir-spec §1.2).
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// The relay identity this key names: SHA-1 of [`RsaPublic::to_der`].
    pub fn identity(&self) -> RsaIdentity {
        RsaIdentity(Sha1::digest(self.to_der()).into())
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.0.n().bits()
    }

    /// True when the public exponent is 65537.
    pub fn exponent_is_65537(&self) -> bool {
        *self.0.e() == BigUint::from(TOR_RSA_EXPONENT)
    }

    /// Checks a signature made by [`RsaKeypair::sign_raw`] over `data`.
    ///
    /// # Errors
    /// [`Error::BadSignature`] naming `what`.
    pub fn verify_raw(&self, data: &[u8], sig: &[u8], what: &'static str) -> Result<()> {
        self.0
            .verify(Pkcs1v15Sign::new_unprefixed(), data, sig)
            .map_err(|_| Error::BadSignature(what))
    }

    /// The underlying `rsa` key (for X.509 building and checking).
    pub fn as_rsa(&self) -> &RsaPublicKey {
        &self.0
    }
}

impl From<RsaPublicKey> for RsaPublic {
    fn from(k: RsaPublicKey) -> Self {
        RsaPublic(k)
    }
}

impl fmt::Debug for RsaPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublic({} bits, {})", self.bits(), self.identity())
    }
}

/// An RSA secret key (identity or TAP onion key).
#[derive(Clone)]
pub struct RsaKeypair {
    secret: RsaPrivateKey,
    public: RsaPublic,
}

impl RsaKeypair {
    /// Generates a key of `bits` bits with exponent 65537.
    ///
    /// # Errors
    /// [`Error::Key`] if generation fails (it does not for sane sizes).
    pub fn generate(rng: &mut impl CryptoRngCore, bits: usize) -> Result<Self> {
        let secret = RsaPrivateKey::new(rng, bits)
            .map_err(|e| Error::Key(format!("RSA generation: {e}")))?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: RsaPrivateKey) -> Self {
        let public = RsaPublic(secret.to_public_key());
        RsaKeypair { secret, public }
    }

    /// Parses a PEM `RSA PRIVATE KEY` (PKCS#1), the format of C tor's `secret_id_key` and
    /// `secret_onion_key`.
    ///
    /// # Errors
    /// [`Error::Key`] when the PEM or key is malformed or inconsistent.
    pub fn from_pkcs1_pem(pem: &str) -> Result<Self> {
        let secret = RsaPrivateKey::from_pkcs1_pem(pem)
            .map_err(|e| Error::Key(format!("RSA private key PEM: {e}")))?;
        secret
            .validate()
            .map_err(|e| Error::Key(format!("RSA private key: {e}")))?;
        Ok(Self::from_secret(secret))
    }

    /// PEM `RSA PRIVATE KEY` (PKCS#1), LF line endings.
    ///
    /// # Errors
    /// [`Error::Key`] if encoding fails.
    pub fn to_pkcs1_pem(&self) -> Result<Zeroizing<String>> {
        self.secret
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| Error::Key(format!("RSA private key PEM: {e}")))
    }

    /// DER of the PKCS#1 `RSAPrivateKey` (for handing a TLS key to rustls).
    ///
    /// # Errors
    /// [`Error::Key`] if encoding fails.
    pub fn to_pkcs1_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        self.secret
            .to_pkcs1_der()
            .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|e| Error::Key(format!("RSA private key DER: {e}")))
    }

    /// The public half.
    pub fn public(&self) -> &RsaPublic {
        &self.public
    }

    /// Signs `data` with PKCS#1 v1.5 type-1 padding and no `DigestInfo` (C tor's
    /// `crypto_pk_private_sign`). `data` is usually a digest the caller computed; it must
    /// be at most `bits/8 - 11` bytes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when `data` does not fit the modulus.
    pub fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.secret
            .sign(Pkcs1v15Sign::new_unprefixed(), data)
            .map_err(|_| Error::TooLarge("RSA signature input"))
    }

    /// The underlying `rsa` secret key (for X.509 building).
    pub fn as_rsa(&self) -> &RsaPrivateKey {
        &self.secret
    }
}

impl fmt::Debug for RsaKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKeypair({:?}, secret redacted)", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn key(seed: u64) -> RsaKeypair {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        RsaKeypair::generate(&mut rng, TOR_RSA_BITS).unwrap()
    }

    #[test]
    fn pem_round_trip_and_identity() {
        let k = key(1);
        let pem = k.to_pkcs1_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let k2 = RsaKeypair::from_pkcs1_pem(&pem).unwrap();
        assert_eq!(k.public(), k2.public());
        let pub_pem = k.public().to_pem();
        assert!(pub_pem.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"));
        let p = RsaPublic::from_pem(&pub_pem).unwrap();
        assert_eq!(p.identity(), k.public().identity());
        assert_eq!(p.bits(), 1024);
        assert!(p.exponent_is_65537());
        // The identity is SHA-1 over PKCS#1 DER, which starts with a SEQUENCE of n, e.
        let der = p.to_der();
        assert_eq!(der[0], 0x30);
        assert_eq!(p.identity().0, <[u8; 20]>::from(Sha1::digest(&der)));
    }

    #[test]
    fn raw_signature_has_no_digest_info() {
        let k = key(2);
        let digest = [0x5au8; 20];
        let sig = k.sign_raw(&digest).unwrap();
        assert_eq!(sig.len(), 128);
        k.public().verify_raw(&digest, &sig, "test").unwrap();
        // Recover the padded block with the public operation: 00 01 FF.. 00 || digest.
        let pk = k.public().as_rsa();
        let m = BigUint::from_bytes_be(&sig).modpow(pk.e(), pk.n());
        let block = m.to_bytes_be();
        assert_eq!(block.len(), 127, "leading 00 is dropped by BigUint");
        assert_eq!(block[0], 0x01);
        assert_eq!(
            &block[block.len() - 21..],
            &[&[0u8][..], &digest[..]].concat()[..]
        );
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(k.public().verify_raw(&digest, &bad, "test").is_err());
        assert!(k.public().verify_raw(&[0x5b; 20], &sig, "test").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(RsaPublic::from_der(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(
            RsaPublic::from_pem(
                "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
            )
            .is_err()
        );
        assert!(RsaKeypair::from_pkcs1_pem("not a key").is_err());
    }
}
