//! Tor's Ed25519 certificates (cert-spec §2.1–§2.2), as carried in CERTS cells (types 4,
//! 5 and 6) and in server descriptors.
//!
//! Layout: `VERSION=01 | CERT_TYPE | EXPIRATION_DATE (u32, hours since the epoch) |
//! CERT_KEY_TYPE | CERTIFIED_KEY[32] | N_EXTENSIONS | EXT* | SIGNATURE[64]`. Each
//! extension is `ExtLength u16 | ExtType | ExtFlags | ExtData`. The signature covers
//! every byte before it, with no prefix.
//!
//! Invariants:
//! - A parsed [`Ed25519Cert`] keeps its exact wire bytes, so the signature is checked over
//!   what was received.
//! - An unknown extension carrying the AFFECTS_VALIDATION flag makes the certificate
//!   unusable. [`Ed25519Cert::parse`] refuses it.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::keys::Ed25519Signer;

use crate::{Error, Result};

/// Certificate types (cert-spec §A.1).
pub mod cert_type {
    /// Ed25519 identity key certifies the Ed25519 signing key (CERTS type 4).
    pub const IDENTITY_V_SIGNING: u8 = 0x04;
    /// Signing key certifies the SHA-256 of the TLS link certificate (CERTS type 5).
    pub const SIGNING_V_TLS_CERT: u8 = 0x05;
    /// Signing key certifies the link authentication key (CERTS type 6).
    pub const SIGNING_V_LINK_AUTH: u8 = 0x06;
    /// The ntor onion key's derived Ed25519 key certifies the identity key
    /// (`ntor-onion-key-crosscert` in descriptors).
    pub const NTOR_CC_IDENTITY: u8 = 0x0A;
}

/// Extension type: the Ed25519 key that signed this certificate (cert-spec §2.2.1).
pub const EXT_SIGNED_WITH_ED25519_KEY: u8 = 0x04;
/// Extension flag: the certificate is invalid if this extension is not understood.
pub const EXT_FLAG_AFFECTS_VALIDATION: u8 = 0x01;

/// Length of everything but the extensions and signature.
const FIXED_HEAD: usize = 1 + 1 + 4 + 1 + 32 + 1;
const SIG_LEN: usize = 64;

/// What a certificate certifies (CERT_KEY_TYPE and CERTIFIED_KEY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertifiedKey {
    /// Key type 01: an Ed25519 public key.
    Ed25519([u8; 32]),
    /// Key type 03: the SHA-256 digest of an X.509 certificate (the TLS link cert).
    Sha256OfX509([u8; 32]),
    /// Any other key type.
    Unrecognized {
        /// CERT_KEY_TYPE.
        key_type: u8,
        /// CERTIFIED_KEY.
        key: [u8; 32],
    },
}

impl CertifiedKey {
    fn key_type(&self) -> u8 {
        match self {
            CertifiedKey::Ed25519(_) => 0x01,
            CertifiedKey::Sha256OfX509(_) => 0x03,
            CertifiedKey::Unrecognized { key_type, .. } => *key_type,
        }
    }

    fn key(&self) -> &[u8; 32] {
        match self {
            CertifiedKey::Ed25519(k) | CertifiedKey::Sha256OfX509(k) => k,
            CertifiedKey::Unrecognized { key, .. } => key,
        }
    }
}

/// One certificate extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertExt {
    /// Type 04: the signing key, so the certificate can be checked on its own.
    SignedWithEd25519Key([u8; 32]),
    /// An extension we do not interpret (and that does not affect validation).
    Unrecognized {
        /// ExtType.
        ext_type: u8,
        /// ExtFlags.
        flags: u8,
        /// ExtData.
        data: Vec<u8>,
    },
}

/// A parsed (or freshly signed) Ed25519 certificate. Its signature has not been checked
/// yet unless it was made by [`Ed25519Cert::sign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519Cert {
    /// CERT_TYPE (see [`cert_type`]).
    pub cert_type: u8,
    /// Expiry, in hours since the epoch.
    pub expiration_hours: u32,
    /// What is certified.
    pub certified: CertifiedKey,
    /// Extensions, in wire order.
    pub extensions: Vec<CertExt>,
    /// The exact wire bytes, signature included.
    encoded: Vec<u8>,
}

impl Ed25519Cert {
    /// Builds and signs a certificate with `signer`. When `include_signing_key` is true
    /// the signed-with-ed25519-key extension names the signer (C tor requires it on
    /// type-4 certificates).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when an extension exceeds 65535 bytes or there are more than
    /// 255 of them.
    pub fn sign(
        cert_type: u8,
        expiration_hours: u32,
        certified: CertifiedKey,
        include_signing_key: bool,
        extra: Vec<CertExt>,
        signer: &impl Ed25519Signer,
    ) -> Result<Self> {
        let mut extensions = Vec::new();
        if include_signing_key {
            extensions.push(CertExt::SignedWithEd25519Key(
                Ed25519Signer::verifying_key(signer).to_bytes(),
            ));
        }
        extensions.extend(extra);
        let mut out = Vec::with_capacity(FIXED_HEAD + 36 + SIG_LEN);
        out.push(0x01);
        out.push(cert_type);
        out.extend_from_slice(&expiration_hours.to_be_bytes());
        out.push(certified.key_type());
        out.extend_from_slice(certified.key());
        out.push(u8::try_from(extensions.len()).map_err(|_| Error::TooLarge("extensions"))?);
        for ext in &extensions {
            let (ty, flags, data): (u8, u8, &[u8]) = match ext {
                CertExt::SignedWithEd25519Key(k) => (EXT_SIGNED_WITH_ED25519_KEY, 0, k),
                CertExt::Unrecognized {
                    ext_type,
                    flags,
                    data,
                } => (*ext_type, *flags, data),
            };
            let len = u16::try_from(data.len()).map_err(|_| Error::TooLarge("extension"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.push(ty);
            out.push(flags);
            out.extend_from_slice(data);
        }
        let sig = signer.sign_msg(&out);
        out.extend_from_slice(&sig.to_bytes());
        Ok(Ed25519Cert {
            cert_type,
            expiration_hours,
            certified,
            extensions,
            encoded: out,
        })
    }

    /// Parses a certificate without checking its signature or expiry.
    ///
    /// # Errors
    /// [`Error::Truncated`] / [`Error::TrailingBytes`] on framing errors,
    /// [`Error::BadCert`] for an unknown version, a malformed signed-with extension, or an
    /// unknown extension that affects validation.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < FIXED_HEAD + SIG_LEN {
            return Err(Error::Truncated("ed25519 certificate"));
        }
        if bytes[0] != 0x01 {
            return Err(Error::BadCert("unknown ed25519 certificate version"));
        }
        let cert_type = bytes[1];
        let expiration_hours = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[7..39]);
        let certified = match bytes[6] {
            0x01 => CertifiedKey::Ed25519(key),
            0x03 => CertifiedKey::Sha256OfX509(key),
            key_type => CertifiedKey::Unrecognized { key_type, key },
        };
        let n_ext = bytes[39];
        let body_end = bytes.len() - SIG_LEN;
        let mut pos = FIXED_HEAD;
        let mut extensions = Vec::with_capacity(usize::from(n_ext));
        for _ in 0..n_ext {
            if body_end - pos < 4 {
                return Err(Error::Truncated("certificate extension header"));
            }
            let len = usize::from(u16::from_be_bytes([bytes[pos], bytes[pos + 1]]));
            let (ext_type, flags) = (bytes[pos + 2], bytes[pos + 3]);
            pos += 4;
            if body_end - pos < len {
                return Err(Error::Truncated("certificate extension"));
            }
            let data = &bytes[pos..pos + len];
            pos += len;
            extensions.push(match ext_type {
                EXT_SIGNED_WITH_ED25519_KEY => {
                    let k: [u8; 32] = data
                        .try_into()
                        .map_err(|_| Error::BadCert("signed-with-ed25519-key is not 32 bytes"))?;
                    CertExt::SignedWithEd25519Key(k)
                }
                _ if flags & EXT_FLAG_AFFECTS_VALIDATION != 0 => {
                    return Err(Error::BadCert("unknown extension affects validation"));
                }
                _ => CertExt::Unrecognized {
                    ext_type,
                    flags,
                    data: data.to_vec(),
                },
            });
        }
        if pos != body_end {
            return Err(Error::TrailingBytes("certificate extensions"));
        }
        Ok(Ed25519Cert {
            cert_type,
            expiration_hours,
            certified,
            extensions,
            encoded: bytes.to_vec(),
        })
    }

    /// The exact wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The key named by the signed-with-ed25519-key extension, if present.
    pub fn signing_key(&self) -> Option<[u8; 32]> {
        self.extensions.iter().find_map(|e| match e {
            CertExt::SignedWithEd25519Key(k) => Some(*k),
            CertExt::Unrecognized { .. } => None,
        })
    }

    /// Checks the signature with `key`, or with the key in the signed-with extension when
    /// `key` is `None`. When both are present they must agree.
    ///
    /// # Errors
    /// [`Error::BadCert`] when no key is known or the keys disagree,
    /// [`Error::BadSignature`] when the signature does not verify.
    pub fn check_signature(&self, key: Option<&VerifyingKey>) -> Result<()> {
        let embedded = self.signing_key();
        let key = match (key, embedded) {
            (Some(k), Some(e)) if k.to_bytes() != e => {
                return Err(Error::BadCert(
                    "signed-with key differs from the expected key",
                ));
            }
            (Some(k), _) => *k,
            (None, Some(e)) => VerifyingKey::from_bytes(&e)
                .map_err(|_| Error::BadCert("signed-with key is not a valid point"))?,
            (None, None) => return Err(Error::BadCert("no signing key to check against")),
        };
        let split = self.encoded.len() - SIG_LEN;
        let sig_bytes: [u8; SIG_LEN] = self.encoded[split..]
            .try_into()
            .map_err(|_| Error::Truncated("signature"))?;
        key.verify(&self.encoded[..split], &Signature::from_bytes(&sig_bytes))
            .map_err(|_| Error::BadSignature("ed25519 certificate"))
    }

    /// Checks that the certificate has not expired at `now` (seconds since the epoch).
    ///
    /// # Errors
    /// [`Error::Expired`].
    pub fn check_expiry(&self, now_secs: u64) -> Result<()> {
        if u64::from(self.expiration_hours) * 3600 < now_secs {
            return Err(Error::Expired("ed25519 certificate"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn sign_parse_verify() {
        let id = key(1);
        let signing = key(2);
        let c = Ed25519Cert::sign(
            cert_type::IDENTITY_V_SIGNING,
            500_000,
            CertifiedKey::Ed25519(signing.verifying_key().to_bytes()),
            true,
            vec![],
            &id,
        )
        .unwrap();
        let p = Ed25519Cert::parse(c.as_bytes()).unwrap();
        assert_eq!(p, c);
        p.check_signature(None).unwrap();
        p.check_signature(Some(&id.verifying_key())).unwrap();
        assert!(p.check_signature(Some(&signing.verifying_key())).is_err());
        p.check_expiry(500_000 * 3600).unwrap();
        assert!(p.check_expiry(500_000 * 3600 + 1).is_err());
    }

    #[test]
    fn every_flipped_bit_fails_or_is_refused() {
        let c = Ed25519Cert::sign(
            5,
            1,
            CertifiedKey::Sha256OfX509([7; 32]),
            true,
            vec![],
            &key(3),
        )
        .unwrap();
        let bytes = c.as_bytes().to_vec();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            if let Ok(p) = Ed25519Cert::parse(&b) {
                assert!(
                    p.check_signature(Some(&key(3).verifying_key())).is_err(),
                    "flip at byte {i} still verified"
                );
            }
        }
    }

    #[test]
    fn unknown_critical_extension_is_refused() {
        let crit = CertExt::Unrecognized {
            ext_type: 9,
            flags: 1,
            data: vec![1, 2],
        };
        let c = Ed25519Cert::sign(
            4,
            1,
            CertifiedKey::Ed25519([1; 32]),
            false,
            vec![crit],
            &key(4),
        )
        .unwrap();
        assert!(Ed25519Cert::parse(c.as_bytes()).is_err());
        let benign = CertExt::Unrecognized {
            ext_type: 9,
            flags: 0,
            data: vec![1, 2],
        };
        let c = Ed25519Cert::sign(
            4,
            1,
            CertifiedKey::Ed25519([1; 32]),
            false,
            vec![benign],
            &key(4),
        )
        .unwrap();
        assert_eq!(Ed25519Cert::parse(c.as_bytes()).unwrap(), c);
    }

    proptest! {
        #[test]
        fn round_trip(ty in any::<u8>(), exp in any::<u32>(), kt in any::<u8>(), k in any::<[u8; 32]>(),
                      with_key in any::<bool>(), ext in proptest::collection::vec((5u8..255, proptest::collection::vec(any::<u8>(), 0..40)), 0..3)) {
            let certified = match kt % 3 { 0 => CertifiedKey::Ed25519(k), 1 => CertifiedKey::Sha256OfX509(k), _ => CertifiedKey::Unrecognized { key_type: 7, key: k } };
            let extra = ext.into_iter().map(|(ext_type, data)| CertExt::Unrecognized { ext_type, flags: 0, data }).collect();
            let c = Ed25519Cert::sign(ty, exp, certified, with_key, extra, &key(5)).unwrap();
            let p = Ed25519Cert::parse(c.as_bytes()).unwrap();
            prop_assert_eq!(&p, &c);
            prop_assert!(p.check_signature(Some(&key(5).verifying_key())).is_ok());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(c) = Ed25519Cert::parse(&bytes) {
                let _ = c.check_signature(None);
            }
        }
    }
}
