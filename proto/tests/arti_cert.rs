//! Oracle: our Ed25519 certificates against arti's tor-cert 0.47, in both directions.
//! The certs are the type-4 identity→signing cert with its signed-with extension, as C tor
//! requires in CERTS, and the type-5 signing→TLS-cert-digest cert.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use proto::cert::ed25519::{CertifiedKey, Ed25519Cert, cert_type};
use tor_checkable::{SelfSigned, Timebound};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_764_000_000)
}

#[test]
fn arti_accepts_our_type4_and_type5() {
    let id = SigningKey::from_bytes(&[1; 32]);
    let signing = SigningKey::from_bytes(&[2; 32]);
    let exp_hours = 1_764_000_000 / 3600 + 24 * 30;

    let ours = Ed25519Cert::sign(
        cert_type::IDENTITY_V_SIGNING,
        exp_hours,
        CertifiedKey::Ed25519(signing.verifying_key().to_bytes()),
        true,
        vec![],
        &id,
    )
    .unwrap();
    let cert = tor_cert::Ed25519Cert::decode(ours.as_bytes())
        .unwrap()
        .should_have_signing_key()
        .unwrap()
        .check_signature()
        .unwrap()
        .if_valid_at(&now())
        .unwrap();
    assert_eq!(cert.cert_type(), tor_cert::CertType::IDENTITY_V_SIGNING);
    assert_eq!(
        cert.signing_key().unwrap().as_bytes(),
        &id.verifying_key().to_bytes()
    );
    assert_eq!(
        cert.subject_key().as_ed25519().unwrap().as_bytes(),
        &signing.verifying_key().to_bytes()
    );
    assert_eq!(
        cert.expiry(),
        UNIX_EPOCH + Duration::from_secs(u64::from(exp_hours) * 3600)
    );

    // A type-5 cert signed without the extension: arti checks it against the known key.
    let link = Ed25519Cert::sign(
        cert_type::SIGNING_V_TLS_CERT,
        exp_hours,
        CertifiedKey::Sha256OfX509([9; 32]),
        false,
        vec![],
        &signing,
    )
    .unwrap();
    let signer =
        tor_llcrypto::pk::ed25519::Ed25519Identity::from(signing.verifying_key().to_bytes());
    let cert = tor_cert::Ed25519Cert::decode(link.as_bytes())
        .unwrap()
        .should_be_signed_with(&signer)
        .unwrap()
        .check_signature()
        .unwrap()
        .if_valid_at(&now())
        .unwrap();
    assert_eq!(
        cert.subject_key(),
        &tor_cert::CertifiedKey::X509Sha256Digest([9; 32])
    );

    // A flipped signature bit is refused by arti too.
    let mut bad = ours.as_bytes().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(
        tor_cert::Ed25519Cert::decode(&bad)
            .unwrap()
            .should_have_signing_key()
            .unwrap()
            .check_signature()
            .is_err()
    );
}

#[test]
fn we_accept_arti_certs() {
    let id = tor_llcrypto::pk::ed25519::Keypair::from_bytes(&[3; 32]);
    let subject = tor_llcrypto::pk::ed25519::Ed25519Identity::from([4u8; 32]);
    let exp = now() + Duration::from_secs(7 * 24 * 3600);
    let encoded = tor_cert::Ed25519Cert::builder()
        .cert_type(tor_cert::CertType::IDENTITY_V_SIGNING)
        .cert_key(tor_cert::CertifiedKey::Ed25519(subject))
        .expiration(exp)
        .signing_key(tor_llcrypto::pk::ed25519::Ed25519Identity::from(
            id.verifying_key(),
        ))
        .encode_and_sign(&id)
        .unwrap();
    let bytes: &[u8] = encoded.as_ref();
    let ours = Ed25519Cert::parse(bytes).unwrap();
    assert_eq!(ours.cert_type, cert_type::IDENTITY_V_SIGNING);
    assert_eq!(ours.certified, CertifiedKey::Ed25519([4; 32]));
    assert_eq!(ours.signing_key(), Some(id.verifying_key().to_bytes()));
    ours.check_signature(None).unwrap();
    ours.check_expiry(1_764_000_000).unwrap();
    assert!(ours.check_expiry(1_764_000_000 + 8 * 24 * 3600).is_err());
    assert_eq!(ours.as_bytes(), bytes);
}
