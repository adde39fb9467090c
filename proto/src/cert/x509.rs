//! The X.509 certificates of Tor's link handshake (tor-spec §4.2): the self-signed RSA-1024
//! identity certificate (CERTS type 2) and the link certificate (CERTS type 1, also the TLS
//! certificate) that the identity key signs.
//!
//! C tor checks little of these (INTEROP A.1, A.4): the type-2 key must be exactly
//! 1024-bit RSA with exponent 65537, the certificate must verify under its own key, and it
//! must be valid within a slop of 30 days before `notBefore` and 2 days after `notAfter`.
//! Names are random `www.<random>.net` host names, as C tor makes them; nobody checks them.
//!
//! Invariants: a [`X509Cert`] keeps the exact DER it was parsed from (CERTS carries it and
//! SCERT/type-5 digests are over it); signatures are SHA-256 (or, on input, SHA-1) with
//! RSA PKCS#1 v1.5.

use std::str::FromStr;
use std::time::Duration;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use rand_core::CryptoRngCore;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::keys::{RsaKeypair, RsaPublic, TOR_RSA_BITS};
use crate::{Error, Result};

/// Accept a certificate whose `notBefore` is up to this far in the future (C tor's
/// `TOR_X509_FUTURE_SLOP`).
pub const FUTURE_SLOP_SECS: u64 = 30 * 24 * 3600;
/// Accept a certificate whose `notAfter` is up to this far in the past (C tor's
/// `TOR_X509_PAST_SLOP`).
pub const PAST_SLOP_SECS: u64 = 2 * 24 * 3600;

const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// What a new certificate should say.
#[derive(Clone, Debug)]
pub struct X509Params {
    /// `notBefore`, seconds since the epoch.
    pub not_before_secs: u64,
    /// `notAfter`, seconds since the epoch.
    pub not_after_secs: u64,
}

impl X509Params {
    /// Validity like C tor's: starting a random time up to `lifetime` ago plus two days'
    /// slack (so peers with slow clocks accept it), lasting `lifetime`.
    pub fn tor_style(rng: &mut impl CryptoRngCore, now_secs: u64, lifetime_secs: u64) -> Self {
        let back = rng.next_u64() % lifetime_secs.max(1);
        let start = now_secs.saturating_sub(back).saturating_add(2 * 24 * 3600);
        let start = start.min(now_secs); // never in the future
        // Round to whole days so the value does not leak our exact clock.
        let start = start - start % (24 * 3600);
        X509Params {
            not_before_secs: start,
            not_after_secs: start + lifetime_secs,
        }
    }
}

/// A random host name `www.<8..20 base32 chars>.net`, as C tor puts in certificate names.
pub fn random_hostname(rng: &mut impl CryptoRngCore) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let len = 8 + (rng.next_u32() % 13) as usize;
    let label: String = (0..len)
        .map(|_| char::from(ALPHABET[(rng.next_u32() % 32) as usize]))
        .collect();
    format!("www.{label}.net")
}

fn cn_name(host: &str) -> Result<Name> {
    Name::from_str(&format!("CN={host}")).map_err(|e| Error::Key(format!("X.509 name: {e}")))
}

fn time(secs: u64) -> Result<Time> {
    Time::try_from(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .map_err(|e| Error::Key(format!("X.509 time: {e}")))
}

/// Signs a certificate for `subject` (an SPKI in DER) with `signer`, SHA-256 with RSA.
/// `issuer_host` and `subject_host` name the two sides; pass the same for self-signed.
///
/// # Errors
/// [`Error::Key`] when the key or names cannot be encoded.
pub fn sign_cert(
    rng: &mut impl CryptoRngCore,
    subject_spki_der: &[u8],
    subject_host: &str,
    issuer_host: &str,
    signer: &RsaKeypair,
    params: &X509Params,
) -> Result<Vec<u8>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(subject_spki_der)
        .map_err(|e| Error::Key(format!("SPKI: {e}")))?;
    let mut serial = [0u8; 8];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive INTEGER
    serial[0] |= 0x01; // and no leading zero byte
    let serial =
        SerialNumber::new(&serial).map_err(|e| Error::Key(format!("X.509 serial: {e}")))?;
    let validity = Validity {
        not_before: time(params.not_before_secs)?,
        not_after: time(params.not_after_secs)?,
    };
    let signing_key = rsa::pkcs1v15::SigningKey::<Sha256>::new(signer.as_rsa().clone());
    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(cn_name(issuer_host)?),
        },
        serial,
        validity,
        cn_name(subject_host)?,
        spki,
        &signing_key,
    )
    .map_err(|e| Error::Key(format!("X.509 builder: {e}")))?;
    // One extension makes this a v3 certificate: C tor does not care, but webpki (arti's
    // rustls backend) refuses v1 certificates.
    builder
        .add_extension(&KeyUsage(
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment | KeyUsages::KeyCertSign,
        ))
        .map_err(|e| Error::Key(format!("X.509 extension: {e}")))?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| Error::Key(format!("X.509 signing: {e}")))?;
    cert.to_der()
        .map_err(|e| Error::Key(format!("X.509 encoding: {e}")))
}

/// The DER SubjectPublicKeyInfo of an RSA public key.
///
/// # Errors
/// [`Error::Key`] if encoding fails.
pub fn rsa_spki_der(key: &RsaPublicKey) -> Result<Vec<u8>> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| Error::Key(format!("SPKI encoding: {e}")))
}

/// Creates the self-signed identity certificate (CERTS type 2) for `identity`.
///
/// # Errors
/// [`Error::Key`] when encoding fails.
pub fn create_identity_cert(
    rng: &mut impl CryptoRngCore,
    identity: &RsaKeypair,
    params: &X509Params,
) -> Result<Vec<u8>> {
    let host = random_hostname(rng);
    let spki = rsa_spki_der(identity.public().as_rsa())?;
    sign_cert(rng, &spki, &host, &host, identity, params)
}

/// A parsed X.509 certificate, with the fields Tor cares about.
#[derive(Clone, Debug)]
pub struct X509Cert {
    der: Vec<u8>,
    tbs_der: Vec<u8>,
    sig_alg: ObjectIdentifier,
    signature: Vec<u8>,
    /// The subject key, when it is RSA.
    pub rsa_key: Option<RsaPublic>,
    /// `notBefore`, seconds since the epoch.
    pub not_before_secs: u64,
    /// `notAfter`, seconds since the epoch.
    pub not_after_secs: u64,
}

impl X509Cert {
    /// Parses DER. Only the structure is checked here.
    ///
    /// # Errors
    /// [`Error::BadCert`] when it is not a well-formed certificate.
    pub fn parse(der: &[u8]) -> Result<Self> {
        let cert = Certificate::from_der(der).map_err(|_| Error::BadCert("malformed X.509"))?;
        let tbs = &cert.tbs_certificate;
        let tbs_der = tbs
            .to_der()
            .map_err(|_| Error::BadCert("malformed X.509 TBS"))?;
        let spki = &tbs.subject_public_key_info;
        let rsa_key = if spki.algorithm.oid == OID_RSA_ENCRYPTION {
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or(Error::BadCert("X.509 key bit string"))?;
            Some(RsaPublic::from(
                RsaPublicKey::from_pkcs1_der(bits).map_err(|_| Error::BadCert("X.509 RSA key"))?,
            ))
        } else {
            None
        };
        let signature = cert
            .signature
            .as_bytes()
            .ok_or(Error::BadCert("X.509 signature bit string"))?
            .to_vec();
        Ok(X509Cert {
            der: der.to_vec(),
            tbs_der,
            sig_alg: cert.signature_algorithm.oid,
            signature,
            rsa_key,
            not_before_secs: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after_secs: tbs.validity.not_after.to_unix_duration().as_secs(),
        })
    }

    /// The exact DER.
    pub fn as_der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the DER (what a type-5 certificate and AUTHENTICATE's SCERT name).
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }

    /// Checks the signature with `key` (RSA PKCS#1 v1.5, SHA-256 or SHA-1).
    ///
    /// # Errors
    /// [`Error::BadCert`] for another algorithm, [`Error::BadSignature`] on mismatch.
    pub fn check_signed_by(&self, key: &RsaPublic) -> Result<()> {
        let ok = if self.sig_alg == OID_SHA256_WITH_RSA {
            key.as_rsa().verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(&self.tbs_der),
                &self.signature,
            )
        } else if self.sig_alg == OID_SHA1_WITH_RSA {
            key.as_rsa().verify(
                Pkcs1v15Sign::new::<Sha1>(),
                &Sha1::digest(&self.tbs_der),
                &self.signature,
            )
        } else {
            return Err(Error::BadCert("X.509 signature algorithm"));
        };
        ok.map_err(|_| Error::BadSignature("X.509 certificate"))
    }

    /// Checks the validity period against `now` with C tor's slop.
    ///
    /// # Errors
    /// [`Error::Expired`] when outside it.
    pub fn check_validity(&self, now_secs: u64) -> Result<()> {
        if self.not_before_secs > now_secs.saturating_add(FUTURE_SLOP_SECS) {
            return Err(Error::Expired("X.509 certificate not yet valid"));
        }
        if self.not_after_secs.saturating_add(PAST_SLOP_SECS) < now_secs {
            return Err(Error::Expired("X.509 certificate"));
        }
        Ok(())
    }
}

/// Checks a CERTS type-2 certificate as C tor does: RSA-1024 with e = 65537, self-signed,
/// within its validity. Returns the identity key.
///
/// # Errors
/// [`Error::BadCert`], [`Error::BadSignature`] or [`Error::Expired`].
pub fn check_identity_cert(der: &[u8], now_secs: u64) -> Result<(X509Cert, RsaPublic)> {
    let cert = X509Cert::parse(der)?;
    let key = cert
        .rsa_key
        .clone()
        .ok_or(Error::BadCert("identity certificate key is not RSA"))?;
    if key.bits() != TOR_RSA_BITS || !key.exponent_is_65537() {
        return Err(Error::BadCert("identity key is not RSA-1024 with e=65537"));
    }
    cert.check_signed_by(&key)?;
    cert.check_validity(now_secs)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const NOW: u64 = 1_790_000_000;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(9)
    }

    #[test]
    fn identity_cert_checks_out() {
        let mut r = rng();
        let id = RsaKeypair::generate(&mut r, 1024).unwrap();
        let p = X509Params::tor_style(&mut r, NOW, 365 * 24 * 3600);
        assert!(p.not_before_secs <= NOW && p.not_after_secs > NOW);
        let der = create_identity_cert(&mut r, &id, &p).unwrap();
        let (cert, key) = check_identity_cert(&der, NOW).unwrap();
        assert_eq!(&key, id.public());
        let parsed = Certificate::from_der(&der).unwrap();
        assert_eq!(parsed.tbs_certificate.version, x509_cert::Version::V3);
        assert_eq!(cert.as_der(), &der[..]);
        // Expired beyond the slop, and not yet valid beyond it.
        assert!(check_identity_cert(&der, p.not_after_secs + PAST_SLOP_SECS + 1).is_err());
        assert!(check_identity_cert(&der, p.not_after_secs + PAST_SLOP_SECS - 1).is_ok());
        assert!(check_identity_cert(&der, p.not_before_secs - FUTURE_SLOP_SECS - 1).is_err());
    }

    #[test]
    fn identity_cert_refuses_wrong_signer_and_size() {
        let mut r = rng();
        let id = RsaKeypair::generate(&mut r, 1024).unwrap();
        let other = RsaKeypair::generate(&mut r, 1024).unwrap();
        let p = X509Params::tor_style(&mut r, NOW, 365 * 24 * 3600);
        // Subject key `id`, signed by `other`: not self-signed.
        let spki = rsa_spki_der(id.public().as_rsa()).unwrap();
        let der = sign_cert(&mut r, &spki, "www.a.net", "www.b.net", &other, &p).unwrap();
        assert_eq!(
            check_identity_cert(&der, NOW).unwrap_err(),
            Error::BadSignature("X.509 certificate")
        );
        X509Cert::parse(&der)
            .unwrap()
            .check_signed_by(other.public())
            .unwrap();
        // A self-signed 2048-bit key is not an identity key.
        let big = RsaKeypair::generate(&mut r, 2048).unwrap();
        let der = create_identity_cert(&mut r, &big, &p).unwrap();
        assert!(matches!(
            check_identity_cert(&der, NOW),
            Err(Error::BadCert(_))
        ));
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut r = rng();
        let id = RsaKeypair::generate(&mut r, 1024).unwrap();
        let p = X509Params::tor_style(&mut r, NOW, 3600 * 24);
        let der = create_identity_cert(&mut r, &id, &p).unwrap();
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(check_identity_cert(&der[..cut], NOW).is_err());
        }
        let mut flipped = der.clone();
        let i = flipped.len() - 5;
        flipped[i] ^= 0x40;
        assert!(check_identity_cert(&flipped, NOW).is_err());
        assert!(X509Cert::parse(b"\x30\x80garbage").is_err());
    }
}
