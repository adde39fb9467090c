#![allow(clippy::unwrap_used)]
use super::*;
use crate::keys::{EdgeKeys, RelayKeys};
use rand::SeedableRng;

const NOW: u64 = 1_790_000_000;

fn edge_keys(seed: u64) -> EdgeKeys {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let keys = RelayKeys::generate(&mut r, NOW, 30 * 86400).unwrap();
    let files = keys.to_files().unwrap();
    EdgeKeys::from_files(&files).unwrap()
}

fn certs_of(msg: ChanMsg) -> Vec<(u8, Bytes)> {
    match msg {
        ChanMsg::Certs(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn responder_certs_check_out_for_the_right_tls_cert_only() {
    let keys = edge_keys(1);
    let mut r = rand::rngs::StdRng::seed_from_u64(2);
    let (lc, _tls) = LinkCerts::generate(&mut r, &keys, NOW, 86400).unwrap();
    let certs = certs_of(lc.responder_certs());
    assert_eq!(
        certs.iter().map(|c| c.0).collect::<Vec<_>>(),
        [1, 2, 4, 5, 7]
    );
    let tls_digest: [u8; 32] = Sha256::digest(&lc.link_cert_der).into();
    let peer = check_responder_certs(&certs, &tls_digest, NOW).unwrap();
    assert_eq!(peer.rsa, keys.rsa_identity());
    assert_eq!(peer.ed, keys.ed_identity);
    assert!(check_responder_certs(&certs, &[0; 32], NOW).is_err());
    // The link cert is signed by the identity key.
    let link = x509::X509Cert::parse(&lc.link_cert_der).unwrap();
    link.check_signed_by(keys.identity.public()).unwrap();
    assert_eq!(link.rsa_key.unwrap().bits(), 2048);
    // Expired later.
    let late = u64::from(lc.tls_cert_cert.expiration_hours) * 3600 + 1;
    assert!(matches!(
        check_responder_certs(&certs, &tls_digest, late),
        Err(Error::Expired(_))
    ));
}

#[test]
fn missing_or_foreign_certs_are_refused() {
    let keys = edge_keys(3);
    let other = edge_keys(4);
    let mut r = rand::rngs::StdRng::seed_from_u64(5);
    let (lc, _) = LinkCerts::generate(&mut r, &keys, NOW, 86400).unwrap();
    let (lc2, _) = LinkCerts::generate(&mut r, &other, NOW, 86400).unwrap();
    let certs = certs_of(lc.initiator_certs());
    for ty in [2, 4, 6, 7] {
        let without: Vec<_> = certs.iter().filter(|c| c.0 != ty).cloned().collect();
        assert!(
            matches!(check_initiator_certs(&without, NOW), Err(Error::BadCert(_))),
            "type {ty}"
        );
    }
    // Another relay's crosscert (type 7) in our chain.
    let other_certs = certs_of(lc2.initiator_certs());
    let mixed: Vec<_> = certs
        .iter()
        .map(|c| {
            if c.0 == 7 {
                other_certs.iter().find(|o| o.0 == 7).unwrap().clone()
            } else {
                c.clone()
            }
        })
        .collect();
    assert!(check_initiator_certs(&mixed, NOW).is_err());
    // A type-4 cert without the signed-with extension.
    let bare = Ed25519Cert::sign(
        cert_type::IDENTITY_V_SIGNING,
        lc.signing_cert.expiration_hours,
        lc.signing_cert.certified,
        false,
        vec![],
        &keys.signing, // any key: the missing extension is refused first
    )
    .unwrap();
    let no_ext: Vec<_> = certs
        .iter()
        .map(|c| {
            if c.0 == 4 {
                (4, Bytes::copy_from_slice(bare.as_bytes()))
            } else {
                c.clone()
            }
        })
        .collect();
    assert!(check_initiator_certs(&no_ext, NOW).is_err());
}

#[test]
fn authenticate_round_trip_and_tampering() {
    let init = edge_keys(6);
    let resp = edge_keys(7);
    let mut r = rand::rngs::StdRng::seed_from_u64(8);
    let (ic, _) = LinkCerts::generate(&mut r, &init, NOW, 86400).unwrap();
    let (rc, _) = LinkCerts::generate(&mut r, &resp, NOW, 86400).unwrap();
    let (peer, auth_key) = check_initiator_certs(&certs_of(ic.initiator_certs()), NOW).unwrap();
    let inputs = AuthInputs {
        cid: ic.rsa_id_sha256(),
        sid: rc.rsa_id_sha256(),
        cid_ed: init.ed_identity.0,
        sid_ed: resp.ed_identity.0,
        slog: [1; 32],
        clog: [2; 32],
        scert: Sha256::digest(&rc.link_cert_der).into(),
        tlssecrets: [3; 32],
    };
    assert_eq!(peer.rsa_id_sha256(), inputs.cid);
    let body = build_authenticator(&inputs, &[9; 24], &ic.auth_key);
    assert_eq!(body.len(), AUTHENTICATOR_LEN);
    assert_eq!(&body[..8], b"AUTH0003");
    check_authenticator(&body, &inputs, &auth_key).unwrap();
    // Each covered field matters.
    for i in [8, 40, 72, 104, 136, 168, 200, 232, 270, 300] {
        let mut b = body.clone();
        b[i] ^= 1;
        assert!(
            check_authenticator(&b, &inputs, &auth_key).is_err(),
            "byte {i}"
        );
    }
    let mut other = inputs.clone();
    other.tlssecrets = [4; 32];
    assert!(check_authenticator(&body, &other, &auth_key).is_err());
    assert!(check_authenticator(&body[..351], &inputs, &auth_key).is_err());
}
