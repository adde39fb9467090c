//! The in-protocol link handshake (tor-spec §4, INTEROP A.4–A.5), sans-io: which
//! certificates each side sends in CERTS, how each side checks the other's, and the
//! AUTHENTICATE cell's Ed25519-SHA256-RFC5705 authenticator (method 3).
//!
//! The caller (the edge) owns TLS and sockets: it hands in the peer's TLS certificate
//! digest, the RFC 5705 exporter output and the running digests of the cells each side sent.
//!
//! Invariants:
//! - A peer is authenticated only by [`check_responder_certs`] (we initiated) or by
//!   [`check_initiator_certs`] followed by [`check_authenticate`] (they initiated). Any
//!   other peer is a client.
//! - Certificate checks follow C tor's `or_handshake_certs_check_both`: type 4 must carry
//!   the signed-with extension naming the identity, type 2 must be RSA-1024 self-signed,
//!   type 7 must bind the two identities, and nothing may be expired.

use bytes::Bytes;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::cell::msg::ChanMsg;
use crate::cert::ed25519::{CertifiedKey, Ed25519Cert, cert_type};
use crate::cert::rsa_crosscert::RsaCrosscert;
use crate::cert::x509;
use crate::keys::{Ed25519Keypair, Ed25519Signer, RsaPublic};
use crate::{Ed25519Identity, Error, Result, RsaIdentity};

/// CERTS cell certificate types (tor-spec §4.2).
pub mod certs_type {
    /// X.509 link certificate (the TLS certificate), signed by the RSA identity.
    pub const RSA_LINK: u8 = 1;
    /// Self-signed RSA-1024 identity X.509 certificate.
    pub const RSA_ID: u8 = 2;
    /// X.509 RSA AUTHENTICATE certificate (legacy; not sent).
    pub const RSA_AUTH: u8 = 3;
    /// Ed25519 identity → signing key.
    pub const ED_ID_SIGNING: u8 = 4;
    /// Ed25519 signing key → SHA-256 of the TLS certificate.
    pub const ED_SIGNING_TLS: u8 = 5;
    /// Ed25519 signing key → AUTHENTICATE key.
    pub const ED_SIGNING_AUTH: u8 = 6;
    /// RSA identity → Ed25519 identity crosscert.
    pub const RSA_ED_CROSSCERT: u8 = 7;
}

/// The only AUTHENTICATE method C tor 0.4.9 uses: Ed25519-SHA256-RFC5705.
pub const AUTH_METHOD_ED25519_SHA256_RFC5705: u16 = 3;
/// RFC 5705 exporter label of method 3.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003";
/// Length of a method-3 authenticator: 288 signed bytes + 64-byte signature.
pub const AUTHENTICATOR_LEN: usize = 352;
const AUTH_TYPE_TAG: &[u8; 8] = b"AUTH0003";
/// Size of the per-process TLS link key (C tor's `RSA_LINK_KEY_BITS`): rustls and OpenSSL
/// security levels refuse smaller RSA keys.
pub const TLS_LINK_KEY_BITS: usize = 2048;

/// Our certificates for one edge process: the relay's identity certificates plus the
/// per-process TLS link certificate and authentication key.
#[derive(Clone, Debug)]
pub struct LinkCerts {
    /// Type 1: the TLS certificate DER (signed by the RSA identity).
    pub link_cert_der: Vec<u8>,
    /// Type 2: the identity certificate DER.
    pub identity_cert_der: Vec<u8>,
    /// Type 4.
    pub signing_cert: Ed25519Cert,
    /// Type 5: signing key → SHA-256(link cert).
    pub tls_cert_cert: Ed25519Cert,
    /// Type 6: signing key → `auth_key`.
    pub auth_cert: Ed25519Cert,
    /// Type 7.
    pub rsa_crosscert: RsaCrosscert,
    /// The key that signs AUTHENTICATE cells.
    pub auth_key: Ed25519Keypair,
    /// Our RSA identity public key (for CID/SID).
    pub rsa_identity: RsaPublic,
    /// Our Ed25519 identity.
    pub ed_identity: Ed25519Identity,
}

impl LinkCerts {
    /// Makes the type-5 and type-6 certificates for a TLS certificate and a fresh auth key,
    /// both valid until `expiration_hours`.
    ///
    /// # Errors
    /// Only if encoding fails.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        link_cert_der: Vec<u8>,
        identity_cert_der: Vec<u8>,
        signing_cert: Ed25519Cert,
        rsa_crosscert: RsaCrosscert,
        signing_key: &Ed25519Keypair,
        auth_key: Ed25519Keypair,
        rsa_identity: RsaPublic,
        ed_identity: Ed25519Identity,
        expiration_hours: u32,
    ) -> Result<Self> {
        let tls_digest: [u8; 32] = Sha256::digest(&link_cert_der).into();
        let tls_cert_cert = Ed25519Cert::sign(
            cert_type::SIGNING_V_TLS_CERT,
            expiration_hours,
            CertifiedKey::Sha256OfX509(tls_digest),
            false,
            vec![],
            signing_key,
        )?;
        let auth_cert = Ed25519Cert::sign(
            cert_type::SIGNING_V_LINK_AUTH,
            expiration_hours,
            CertifiedKey::Ed25519(auth_key.public().to_bytes()),
            false,
            vec![],
            signing_key,
        )?;
        Ok(LinkCerts {
            link_cert_der,
            identity_cert_der,
            signing_cert,
            tls_cert_cert,
            auth_cert,
            rsa_crosscert,
            auth_key,
            rsa_identity,
            ed_identity,
        })
    }

    /// Makes a fresh per-process link identity from the relay's keys: an RSA-2048 TLS key,
    /// its X.509 certificate signed by the RSA identity (CERTS type 1, and the certificate
    /// TLS presents), a fresh AUTHENTICATE key, and their type-5/6 certificates, valid for
    /// `lifetime_secs` from `now` (capped by the signing certificate's own expiry).
    /// Returns the certificates and the TLS secret key.
    ///
    /// # Errors
    /// [`Error::Key`] if key generation or encoding fails.
    pub fn generate(
        rng: &mut impl rand_core::CryptoRngCore,
        keys: &crate::keys::EdgeKeys,
        now: u64,
        lifetime_secs: u64,
    ) -> Result<(Self, crate::keys::RsaKeypair)> {
        let tls_key = crate::keys::RsaKeypair::generate(rng, TLS_LINK_KEY_BITS)?;
        let params = x509::X509Params::tor_style(rng, now, lifetime_secs);
        let spki = x509::rsa_spki_der(tls_key.public().as_rsa())?;
        let subject = x509::random_hostname(rng);
        let issuer = x509::random_hostname(rng);
        let link_cert_der =
            x509::sign_cert(rng, &spki, &subject, &issuer, &keys.identity, &params)?;
        let expiry = u32::try_from((now + lifetime_secs) / 3600)
            .unwrap_or(u32::MAX)
            .min(keys.signing_cert.expiration_hours);
        let certs = LinkCerts::new(
            link_cert_der,
            keys.identity_cert.clone(),
            keys.signing_cert.clone(),
            keys.rsa_crosscert.clone(),
            &keys.signing,
            Ed25519Keypair::generate(rng),
            keys.identity.public().clone(),
            keys.ed_identity,
            expiry,
        )?;
        Ok((certs, tls_key))
    }

    /// The CERTS cell a responder sends: types 1, 2, 4, 5, 7 (as C tor does).
    pub fn responder_certs(&self) -> ChanMsg {
        ChanMsg::Certs(vec![
            (
                certs_type::RSA_LINK,
                Bytes::from(self.link_cert_der.clone()),
            ),
            (
                certs_type::RSA_ID,
                Bytes::from(self.identity_cert_der.clone()),
            ),
            (
                certs_type::ED_ID_SIGNING,
                Bytes::copy_from_slice(self.signing_cert.as_bytes()),
            ),
            (
                certs_type::ED_SIGNING_TLS,
                Bytes::copy_from_slice(self.tls_cert_cert.as_bytes()),
            ),
            (
                certs_type::RSA_ED_CROSSCERT,
                Bytes::copy_from_slice(self.rsa_crosscert.as_bytes()),
            ),
        ])
    }

    /// The CERTS cell an authenticating initiator sends: types 2, 4, 6, 7.
    pub fn initiator_certs(&self) -> ChanMsg {
        ChanMsg::Certs(vec![
            (
                certs_type::RSA_ID,
                Bytes::from(self.identity_cert_der.clone()),
            ),
            (
                certs_type::ED_ID_SIGNING,
                Bytes::copy_from_slice(self.signing_cert.as_bytes()),
            ),
            (
                certs_type::ED_SIGNING_AUTH,
                Bytes::copy_from_slice(self.auth_cert.as_bytes()),
            ),
            (
                certs_type::RSA_ED_CROSSCERT,
                Bytes::copy_from_slice(self.rsa_crosscert.as_bytes()),
            ),
        ])
    }

    /// SHA-256 of our RSA identity key's PKCS#1 DER (CID when we initiate, SID otherwise).
    pub fn rsa_id_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.rsa_identity.to_der()).into()
    }
}

/// A peer whose identity certificates checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Its RSA identity key.
    pub rsa_key: RsaPublic,
    /// Its RSA identity (fingerprint).
    pub rsa: RsaIdentity,
    /// Its Ed25519 identity.
    pub ed: Ed25519Identity,
}

impl PeerIdentity {
    /// SHA-256 of the RSA identity key's PKCS#1 DER (the CID/SID of AUTHENTICATE).
    pub fn rsa_id_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.rsa_key.to_der()).into()
    }
}

fn find(certs: &[(u8, Bytes)], ty: u8) -> Result<&[u8]> {
    certs
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, b)| &b[..])
        .ok_or(Error::BadCert(match ty {
            certs_type::RSA_ID => "CERTS lacks the RSA identity certificate (type 2)",
            certs_type::ED_ID_SIGNING => "CERTS lacks the Ed25519 signing certificate (type 4)",
            certs_type::ED_SIGNING_TLS => "CERTS lacks the TLS link certificate (type 5)",
            certs_type::ED_SIGNING_AUTH => "CERTS lacks the authentication certificate (type 6)",
            _ => "CERTS lacks the RSA->Ed25519 crosscert (type 7)",
        }))
}

/// Checks types 2, 7 and 4 and returns the identities and the signing key.
fn check_identity_chain(certs: &[(u8, Bytes)], now: u64) -> Result<(PeerIdentity, VerifyingKey)> {
    let (_, rsa_key) = x509::check_identity_cert(find(certs, certs_type::RSA_ID)?, now)?;
    let cc = RsaCrosscert::parse(find(certs, certs_type::RSA_ED_CROSSCERT)?)?;
    cc.check(&rsa_key, now)?;
    let ed = cc.ed_identity;
    let id_key = VerifyingKey::from_bytes(&ed.0)
        .map_err(|_| Error::BadCert("Ed25519 identity is not a valid point"))?;
    let signing = Ed25519Cert::parse(find(certs, certs_type::ED_ID_SIGNING)?)?;
    if signing.cert_type != cert_type::IDENTITY_V_SIGNING {
        return Err(Error::BadCert("type-4 certificate has the wrong CERT_TYPE"));
    }
    if signing.signing_key() != Some(ed.0) {
        return Err(Error::BadCert(
            "type-4 certificate is not signed by the Ed25519 identity",
        ));
    }
    signing.check_signature(Some(&id_key))?;
    signing.check_expiry(now)?;
    let CertifiedKey::Ed25519(sk) = signing.certified else {
        return Err(Error::BadCert(
            "type-4 certificate does not certify an Ed25519 key",
        ));
    };
    let signing_key = VerifyingKey::from_bytes(&sk)
        .map_err(|_| Error::BadCert("signing key is not a valid point"))?;
    let rsa = rsa_key.identity();
    Ok((PeerIdentity { rsa_key, rsa, ed }, signing_key))
}

fn check_signed_by_signing_key(
    certs: &[(u8, Bytes)],
    ty: u8,
    want_type: u8,
    signing_key: &VerifyingKey,
    now: u64,
) -> Result<Ed25519Cert> {
    let c = Ed25519Cert::parse(find(certs, ty)?)?;
    if c.cert_type != want_type {
        return Err(Error::BadCert("link certificate has the wrong CERT_TYPE"));
    }
    c.check_signature(Some(signing_key))?;
    c.check_expiry(now)?;
    Ok(c)
}

/// Initiator side: checks a responder's CERTS (types 2, 4, 5, 7) against the SHA-256 of the
/// TLS certificate it presented.
///
/// # Errors
/// [`Error::BadCert`], [`Error::BadSignature`] or [`Error::Expired`].
pub fn check_responder_certs(
    certs: &[(u8, Bytes)],
    peer_tls_cert_sha256: &[u8; 32],
    now: u64,
) -> Result<PeerIdentity> {
    let (peer, signing_key) = check_identity_chain(certs, now)?;
    let tls = check_signed_by_signing_key(
        certs,
        certs_type::ED_SIGNING_TLS,
        cert_type::SIGNING_V_TLS_CERT,
        &signing_key,
        now,
    )?;
    match tls.certified {
        CertifiedKey::Sha256OfX509(d) if &d == peer_tls_cert_sha256 => Ok(peer),
        _ => Err(Error::BadCert(
            "type-5 certificate does not match the TLS certificate",
        )),
    }
}

/// Responder side: checks an authenticating initiator's CERTS (types 2, 4, 6, 7) and
/// returns its identities and the key that must sign its AUTHENTICATE.
///
/// # Errors
/// [`Error::BadCert`], [`Error::BadSignature`] or [`Error::Expired`].
pub fn check_initiator_certs(
    certs: &[(u8, Bytes)],
    now: u64,
) -> Result<(PeerIdentity, VerifyingKey)> {
    let (peer, signing_key) = check_identity_chain(certs, now)?;
    let auth = check_signed_by_signing_key(
        certs,
        certs_type::ED_SIGNING_AUTH,
        cert_type::SIGNING_V_LINK_AUTH,
        &signing_key,
        now,
    )?;
    let CertifiedKey::Ed25519(k) = auth.certified else {
        return Err(Error::BadCert(
            "type-6 certificate does not certify an Ed25519 key",
        ));
    };
    let auth_key = VerifyingKey::from_bytes(&k)
        .map_err(|_| Error::BadCert("auth key is not a valid point"))?;
    Ok((peer, auth_key))
}

/// Everything an authenticator covers except the random bytes and the signature
/// (tor-spec §4.4.2; INTEROP A.5 for C tor's exact inputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInputs {
    /// SHA-256 of the initiator's RSA identity key DER.
    pub cid: [u8; 32],
    /// SHA-256 of the responder's RSA identity key DER.
    pub sid: [u8; 32],
    /// The initiator's Ed25519 identity.
    pub cid_ed: [u8; 32],
    /// The responder's Ed25519 identity.
    pub sid_ed: [u8; 32],
    /// SHA-256 of every cell the responder sent (VERSIONS, CERTS, AUTH_CHALLENGE), framed.
    pub slog: [u8; 32],
    /// SHA-256 of every cell the initiator sent before AUTHENTICATE, framed.
    pub clog: [u8; 32],
    /// SHA-256 of the responder's TLS certificate DER.
    pub scert: [u8; 32],
    /// RFC 5705 exporter output: label [`TLS_EXPORTER_LABEL`], context = `cid`, 32 bytes.
    pub tlssecrets: [u8; 32],
}

impl AuthInputs {
    fn signed_prefix(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(AUTHENTICATOR_LEN);
        v.extend_from_slice(AUTH_TYPE_TAG);
        for part in [
            &self.cid,
            &self.sid,
            &self.cid_ed,
            &self.sid_ed,
            &self.slog,
            &self.clog,
            &self.scert,
            &self.tlssecrets,
        ] {
            v.extend_from_slice(part);
        }
        v
    }
}

/// Builds the AUTHENTICATE cell's authenticator (method 3), signed with `auth_key`.
pub fn build_authenticator(
    inputs: &AuthInputs,
    rand: &[u8; 24],
    auth_key: &Ed25519Keypair,
) -> Vec<u8> {
    let mut v = inputs.signed_prefix();
    v.extend_from_slice(rand);
    let sig = auth_key.sign_msg(&v);
    v.extend_from_slice(&sig.to_bytes());
    v
}

/// Checks an authenticator as C tor's responder does: exact length, every field before
/// RAND equal to what we computed, and the signature by the type-6 key.
///
/// # Errors
/// [`Error::BadLength`], [`Error::Handshake`] or [`Error::BadSignature`].
pub fn check_authenticator(
    body: &[u8],
    expected: &AuthInputs,
    auth_key: &VerifyingKey,
) -> Result<()> {
    if body.len() != AUTHENTICATOR_LEN {
        return Err(Error::BadLength("AUTHENTICATE authenticator"));
    }
    let prefix = expected.signed_prefix();
    if body[..prefix.len()] != prefix[..] {
        return Err(Error::Handshake(
            "AUTHENTICATE fields do not match this connection",
        ));
    }
    let sig: [u8; 64] = body[288..]
        .try_into()
        .map_err(|_| Error::BadLength("AUTHENTICATE signature"))?;
    auth_key
        .verify(&body[..288], &Signature::from_bytes(&sig))
        .map_err(|_| Error::BadSignature("AUTHENTICATE"))
}

#[cfg(test)]
mod tests;
