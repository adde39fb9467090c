//! Oracle: ntor v3 extension lists (CREATE2 / CREATED2 messages) against arti's `tor-cell`
//! (`CircRequestExt`, `CircResponseExt`). What we encode, arti decodes and re-encodes to the
//! same bytes; what arti encodes, we parse to the matching values. arti writes extensions in
//! ascending type order while our encoder keeps the caller's order, so lists here are sorted.

use proptest::prelude::*;
use proto::handshake::ntor_v3::{CircExtension, encode_extensions, parse_extensions};
use tor_cell::relaycell::extend::{CcRequest, CcResponse, CircRequestExt, CircResponseExt};

fn arti_request_bytes(exts: &[CircRequestExt]) -> Vec<u8> {
    let mut out = Vec::new();
    CircRequestExt::write_many_onto(exts, &mut out).expect("arti encodes");
    out
}

fn arti_response_bytes(exts: &[CircResponseExt]) -> Vec<u8> {
    let mut out = Vec::new();
    CircResponseExt::write_many_onto(exts, &mut out).expect("arti encodes");
    out
}

#[test]
fn cc_request_matches_arti() {
    let ours = encode_extensions(&[CircExtension::CcRequest]).unwrap();
    let theirs = arti_request_bytes(&[CircRequestExt::CcRequest(CcRequest::default())]);
    assert_eq!(ours, theirs);
    let decoded = CircRequestExt::decode(&ours).unwrap();
    assert!(matches!(decoded.as_slice(), [CircRequestExt::CcRequest(_)]));
}

#[test]
fn cc_response_matches_arti() {
    for inc in [0u8, 31, 255] {
        let ours = encode_extensions(&[CircExtension::CcResponse { sendme_inc: inc }]).unwrap();
        let theirs = arti_response_bytes(&[CircResponseExt::CcResponse(CcResponse::new(inc))]);
        assert_eq!(ours, theirs);
        match CircResponseExt::decode(&ours).unwrap().as_slice() {
            [CircResponseExt::CcResponse(r)] => assert_eq!(r.sendme_inc(), inc),
            other => panic!("arti decoded {other:?}"),
        }
    }
}

#[test]
fn empty_server_message_is_00_for_both() {
    assert_eq!(encode_extensions(&[]).unwrap(), arti_response_bytes(&[]));
    assert!(CircResponseExt::decode(&[]).is_err());
    assert!(parse_extensions(&[]).is_err());
}

fn any_ext() -> impl Strategy<Value = CircExtension> {
    prop_oneof![
        Just(CircExtension::CcRequest),
        any::<u8>().prop_map(|sendme_inc| CircExtension::CcResponse { sendme_inc }),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(CircExtension::SubprotoRequest),
        (4u8.., proptest::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(ty, body)| CircExtension::Unrecognized { ty, body }),
    ]
}

proptest! {
    /// arti reads any of our server messages (unknown types kept as unrecognized) and writes
    /// the same bytes back; its CC responses are the ones we encoded.
    #[test]
    fn response_lists_agree_with_arti(mut ours in proptest::collection::vec(any_ext(), 0..8)) {
        // arti always writes extensions in ascending type order (stable); so do our callers.
        ours.sort_by_key(CircExtension::ty);
        let our_bytes = encode_extensions(&ours).unwrap();
        let decoded = CircResponseExt::decode(&our_bytes).unwrap();
        prop_assert_eq!(decoded.len(), ours.len());
        for (a, o) in decoded.iter().zip(&ours) {
            match (a, o) {
                (CircResponseExt::CcResponse(r), CircExtension::CcResponse { sendme_inc }) => {
                    prop_assert_eq!(r.sendme_inc(), *sendme_inc);
                }
                (CircResponseExt::Unrecognized(_), o) => {
                    let is_cc_response = matches!(o, CircExtension::CcResponse { .. });
                    prop_assert!(!is_cc_response, "arti missed a CC response");
                }
                (a, o) => prop_assert!(false, "arti {:?} vs ours {:?}", a, o),
            }
        }
        prop_assert_eq!(arti_response_bytes(&decoded), our_bytes.clone());
        prop_assert_eq!(parse_extensions(&our_bytes).unwrap(), ours);
    }

    /// Client messages: CC requests and unknown types survive arti's decode/encode unchanged,
    /// and arti's own CC request lists parse as ours.
    #[test]
    fn request_lists_agree_with_arti(
        unknown in proptest::collection::vec((4u8.., proptest::collection::vec(any::<u8>(), 0..60)), 0..4),
        n_cc in 0usize..3,
    ) {
        let mut ours = vec![CircExtension::CcRequest; n_cc];
        ours.extend(unknown.into_iter().map(|(ty, body)| CircExtension::Unrecognized { ty, body }));
        ours.sort_by_key(CircExtension::ty);
        let our_bytes = encode_extensions(&ours).unwrap();
        let decoded = CircRequestExt::decode(&our_bytes).unwrap();
        prop_assert_eq!(decoded.len(), ours.len());
        for (a, o) in decoded.iter().zip(&ours) {
            let same_kind = matches!(
                (a, o),
                (CircRequestExt::CcRequest(_), CircExtension::CcRequest)
                    | (CircRequestExt::Unrecognized(_), CircExtension::Unrecognized { .. })
            );
            prop_assert!(same_kind, "arti {:?} vs ours {:?}", a, o);
        }
        prop_assert_eq!(arti_request_bytes(&decoded), our_bytes);

        let theirs = vec![CircRequestExt::CcRequest(CcRequest::default()); n_cc];
        prop_assert_eq!(
            parse_extensions(&arti_request_bytes(&theirs)).unwrap(),
            vec![CircExtension::CcRequest; n_cc]
        );
    }
}
