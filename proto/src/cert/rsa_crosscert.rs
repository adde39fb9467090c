//! The RSA→Ed25519 cross-certificate (cert-spec §2.3; CERTS type 7): the RSA-1024 identity
//! key vouches for the Ed25519 master identity key.
//!
//! Layout: `ED25519_KEY[32] | EXPIRATION_DATE (u32, hours) | SIGLEN u8 | SIGNATURE`, where
//! `SIGNATURE = RSA-sign-no-DigestInfo(SHA256("Tor TLS RSA/Ed25519 cross-certificate" |
//! ED25519_KEY | EXPIRATION_DATE))`.
//!
//! Invariant: a parsed [`RsaCrosscert`] keeps its exact bytes; the signature is checked over
//! the received key and expiry.

use sha2::{Digest, Sha256};

use crate::keys::{RsaKeypair, RsaPublic};
use crate::{Ed25519Identity, Error, Result};

const PREFIX: &[u8] = b"Tor TLS RSA/Ed25519 cross-certificate";

/// A parsed or freshly signed type-7 cross-certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaCrosscert {
    /// The certified Ed25519 identity.
    pub ed_identity: Ed25519Identity,
    /// Expiry in hours since the epoch.
    pub expiration_hours: u32,
    signature: Vec<u8>,
    encoded: Vec<u8>,
}

fn digest(ed: &Ed25519Identity, expiration_hours: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PREFIX);
    h.update(ed.0);
    h.update(expiration_hours.to_be_bytes());
    h.finalize().into()
}

impl RsaCrosscert {
    /// Signs a cross-certificate for `ed_identity` with the RSA identity key.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the key is too small to sign a SHA-256 digest.
    pub fn sign(
        identity: &RsaKeypair,
        ed_identity: Ed25519Identity,
        expiration_hours: u32,
    ) -> Result<Self> {
        let signature = identity.sign_raw(&digest(&ed_identity, expiration_hours))?;
        let siglen = u8::try_from(signature.len()).map_err(|_| Error::TooLarge("crosscert"))?;
        let mut encoded = Vec::with_capacity(37 + signature.len());
        encoded.extend_from_slice(&ed_identity.0);
        encoded.extend_from_slice(&expiration_hours.to_be_bytes());
        encoded.push(siglen);
        encoded.extend_from_slice(&signature);
        Ok(RsaCrosscert {
            ed_identity,
            expiration_hours,
            signature,
            encoded,
        })
    }

    /// Parses the wire form without checking it.
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::TrailingBytes`].
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 37 {
            return Err(Error::Truncated("RSA crosscert"));
        }
        let ed_identity = Ed25519Identity(
            b[..32]
                .try_into()
                .map_err(|_| Error::Truncated("RSA crosscert"))?,
        );
        let expiration_hours = u32::from_be_bytes([b[32], b[33], b[34], b[35]]);
        let siglen = usize::from(b[36]);
        let rest = &b[37..];
        if rest.len() < siglen {
            return Err(Error::Truncated("RSA crosscert signature"));
        }
        if rest.len() > siglen {
            return Err(Error::TrailingBytes("RSA crosscert"));
        }
        Ok(RsaCrosscert {
            ed_identity,
            expiration_hours,
            signature: rest.to_vec(),
            encoded: b.to_vec(),
        })
    }

    /// The exact wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Checks the signature against the RSA identity key and the expiry against `now`.
    ///
    /// # Errors
    /// [`Error::BadSignature`] or [`Error::Expired`].
    pub fn check(&self, identity: &RsaPublic, now_secs: u64) -> Result<()> {
        identity.verify_raw(
            &digest(&self.ed_identity, self.expiration_hours),
            &self.signature,
            "RSA->Ed25519 crosscert",
        )?;
        if u64::from(self.expiration_hours) * 3600 < now_secs {
            return Err(Error::Expired("RSA->Ed25519 crosscert"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn key() -> RsaKeypair {
        RsaKeypair::generate(&mut rand::rngs::StdRng::seed_from_u64(3), 1024).unwrap()
    }

    #[test]
    fn sign_parse_check() {
        let k = key();
        let ed = Ed25519Identity([9; 32]);
        let c = RsaCrosscert::sign(&k, ed, 500_000).unwrap();
        assert_eq!(c.as_bytes().len(), 32 + 4 + 1 + 128);
        let p = RsaCrosscert::parse(c.as_bytes()).unwrap();
        assert_eq!(p, c);
        p.check(k.public(), 500_000 * 3600).unwrap();
        assert_eq!(
            p.check(k.public(), 500_000 * 3600 + 1),
            Err(Error::Expired("RSA->Ed25519 crosscert"))
        );
        let other = RsaKeypair::generate(&mut rand::rngs::StdRng::seed_from_u64(4), 1024).unwrap();
        assert!(matches!(
            p.check(other.public(), 0),
            Err(Error::BadSignature(_))
        ));
        // Changing the certified key or the expiry breaks the signature.
        let mut b = c.as_bytes().to_vec();
        b[0] ^= 1;
        assert!(
            RsaCrosscert::parse(&b)
                .unwrap()
                .check(k.public(), 0)
                .is_err()
        );
        let mut b = c.as_bytes().to_vec();
        b[35] ^= 1;
        assert!(
            RsaCrosscert::parse(&b)
                .unwrap()
                .check(k.public(), 0)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RsaCrosscert::parse(&b);
        }
    }
}
