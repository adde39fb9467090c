//! Oracle: arti's tor-cert / tor-llcrypto against our key material and certificates.
//!
//! - type-7 RSA→Ed25519 crosscerts: arti checks ours (signature, expiry, subject) and we
//!   check arti's;
//! - the type-2 identity X.509 cert: we accept arti's `create_legacy_rsa_id_cert`;
//! - the ntor-onion-key crosscert key derivation: our derived Ed25519 key and sign bit equal
//!   arti's `convert_curve25519_to_ed25519_private`, and arti's public conversion yields the
//!   key that verifies our crosscert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use proto::Ed25519Identity;
use proto::cert::ed25519::Ed25519Cert;
use proto::cert::onion_crosscert;
use proto::cert::rsa_crosscert::RsaCrosscert;
use proto::cert::x509;
use proto::handshake::ntor::NtorOnionKey;
use proto::keys::RsaKeypair;
use rand::SeedableRng;
use tor_checkable::{ExternallySigned, SelfSigned, Timebound};

const NOW: u64 = 1_790_000_000;

fn rsa_key(seed: u64) -> RsaKeypair {
    RsaKeypair::generate(&mut rand::rngs::StdRng::seed_from_u64(seed), 1024).unwrap()
}

fn arti_pub(k: &RsaKeypair) -> tor_llcrypto::pk::rsa::PublicKey {
    tor_llcrypto::pk::rsa::PublicKey::from_der(&k.public().to_der()).unwrap()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn arti_accepts_our_rsa_crosscert() {
    let k = rsa_key(1);
    let ed = Ed25519Identity([0x42; 32]);
    let exp_hours = (NOW / 3600 + 24) as u32;
    let ours = RsaCrosscert::sign(&k, ed, exp_hours).unwrap();
    let checked = tor_cert::rsa::RsaCrosscert::decode(ours.as_bytes())
        .unwrap()
        .check_signature(&arti_pub(&k))
        .unwrap();
    checked.check_valid_at(&at(NOW)).unwrap();
    assert!(
        checked
            .check_valid_at(&at(u64::from(exp_hours) * 3600 + 1))
            .is_err()
    );
    let cert = checked.dangerously_assume_timely();
    assert!(cert.subject_key_matches(&tor_llcrypto::pk::ed25519::Ed25519Identity::new(ed.0)));
    assert_eq!(
        cert.expiry(),
        at(u64::from(exp_hours) * 3600),
        "expiry hours are read the same way"
    );
    // arti refuses it under another RSA key.
    assert!(
        tor_cert::rsa::RsaCrosscert::decode(ours.as_bytes())
            .unwrap()
            .check_signature(&arti_pub(&rsa_key(2)))
            .is_err()
    );
}

#[test]
fn we_accept_arti_rsa_crosscert() {
    let k = rsa_key(3);
    let arti_kp = tor_llcrypto::pk::rsa::KeyPair::from_der(
        rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(k.as_rsa())
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let ed = tor_llcrypto::pk::ed25519::Ed25519Identity::new([7; 32]);
    let theirs =
        tor_cert::rsa::EncodedRsaCrosscert::encode_and_sign(&arti_kp, &ed, at(NOW + 7200)).unwrap();
    let bytes: &[u8] = theirs.as_ref();
    let parsed = RsaCrosscert::parse(bytes).unwrap();
    assert_eq!(parsed.ed_identity, Ed25519Identity([7; 32]));
    parsed.check(k.public(), NOW).unwrap();
    assert!(parsed.check(rsa_key(4).public(), NOW).is_err());
    assert!(parsed.check(k.public(), NOW + 3 * 3600).is_err(), "expired");
}

#[test]
fn we_accept_arti_identity_x509() {
    let k = rsa_key(5);
    let arti_kp = tor_llcrypto::pk::rsa::KeyPair::from_der(
        rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(k.as_rsa())
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let der = tor_cert::x509::create_legacy_rsa_id_cert(
        &mut tor_llcrypto::rng::CautiousRng,
        at(NOW),
        "www.example.net",
        &arti_kp,
    );
    let der = der.unwrap();
    let (_, key) = x509::check_identity_cert(&der, NOW).unwrap();
    assert_eq!(&key, k.public());
    // Our own cert for the same key carries the same key and identity.
    let ours = x509::create_identity_cert(
        &mut rand::rngs::StdRng::seed_from_u64(6),
        &k,
        &x509::X509Params::tor_style(&mut rand::rngs::StdRng::seed_from_u64(7), NOW, 86400 * 365),
    )
    .unwrap();
    let (_, key2) = x509::check_identity_cert(&ours, NOW).unwrap();
    assert_eq!(key2.identity(), k.public().identity());
}

#[test]
fn ntor_crosscert_key_matches_arti_derivation() {
    let mut r = rand::rngs::StdRng::seed_from_u64(8);
    for _ in 0..16 {
        let onion = NtorOnionKey::generate(&mut r);
        let (ours, bit) = onion_crosscert::ntor_derived_keypair(&onion);
        let secret = tor_llcrypto::pk::curve25519::StaticSecret::from(*onion.secret_bytes());
        let (theirs, their_bit) =
            tor_llcrypto::pk::keymanip::convert_curve25519_to_ed25519_private(&secret).unwrap();
        assert_eq!(bit, their_bit);
        // Same nonce prefix; same scalar (arti keeps it reduced mod l, we keep C tor's
        // clamped bytes).
        let (t, o) = (theirs.to_secret_key_bytes(), **ours.expanded_bytes());
        assert_eq!(t[32..], o[32..]);
        let reduced =
            curve25519_dalek::Scalar::from_bytes_mod_order(o[..32].try_into().unwrap()).to_bytes();
        assert_eq!(t[..32], reduced);
        assert_eq!(theirs.public().to_bytes(), ours.public().to_bytes());

        // arti's public conversion gives the key our crosscert verifies under.
        let ed = Ed25519Identity([1; 32]);
        let (cert, bit) =
            onion_crosscert::ntor_crosscert_sign(&onion, &ed, (NOW / 3600) as u32 + 10).unwrap();
        let pk = tor_llcrypto::pk::keymanip::convert_curve25519_to_ed25519_public(
            &tor_llcrypto::pk::curve25519::PublicKey::from(onion.public_bytes()),
            bit,
        )
        .unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.to_bytes()).unwrap();
        Ed25519Cert::parse(cert.as_bytes())
            .unwrap()
            .check_signature(Some(&vk))
            .unwrap();
        // And arti's tor-cert parses it as a type-0x0A cert for our identity.
        let k = tor_cert::Ed25519Cert::decode(cert.as_bytes()).unwrap();
        let k = k
            .should_be_signed_with(&tor_llcrypto::pk::ed25519::Ed25519Identity::new(
                pk.to_bytes(),
            ))
            .unwrap();
        let k = k.check_signature().unwrap().dangerously_assume_timely();
        assert_eq!(k.cert_type(), tor_cert::CertType::NTOR_CC_IDENTITY);
    }
}
