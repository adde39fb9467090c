//! Oracle test: our relay cells (tor-spec §6, v0/"tor1" body layout) against arti's
//! tor-cell 0.47, an independent implementation.
//!
//! For each message kind, in both directions:
//! - the 509-byte body we encode, arti decodes to the same values (checked through arti's
//!   getters where it has them, and always by re-encoding arti's message and comparing the
//!   bytes with ours);
//! - the body arti encodes, we parse to the value we expect;
//! - the two bodies agree byte for byte up to the random padding (header, data, and the
//!   4 zero bytes that start the padding).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use proto::cell::CELL_PAYLOAD_LEN;
use proto::ids::{Ed25519Identity, RsaIdentity, StreamId};
use proto::linkspec::LinkSpec;
use proto::relay_cell::{
    Begin, Connected, End, EndReason, Extend2, Extended2, RELAY_HEADER_LEN, RelayCellRef, RelayCmd,
    RelayMsg, Resolve, Resolved, ResolvedVal, Sendme,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use tor_cell::chancell::msg::{DestroyReason, HandshakeType};
use tor_cell::relaycell::msg::{self as am, AnyRelayMsg};
use tor_cell::relaycell::{
    AnyRelayMsgOuter, RelayCellFormat, RelayMsg as ArtiRelayMsg, StreamId as ArtiStreamId,
};
use tor_linkspec::{EncodedLinkSpec, LinkSpec as ArtiLinkSpec, LinkSpecType};
use tor_llcrypto::rng::CautiousRng;

/// Our full body for `m` on stream `sid`.
fn our_body(m: &RelayMsg, sid: u16) -> [u8; CELL_PAYLOAD_LEN] {
    let mut body = [0u8; CELL_PAYLOAD_LEN];
    m.encode_to_body(
        StreamId(sid),
        &mut body,
        &mut StdRng::seed_from_u64(u64::from(sid)),
    )
    .unwrap();
    body
}

/// arti's full body for `m` on stream `sid`.
fn arti_body(m: AnyRelayMsg, sid: u16) -> [u8; CELL_PAYLOAD_LEN] {
    let outer = AnyRelayMsgOuter::new(ArtiStreamId::new(sid), m);
    *outer.encode(RelayCellFormat::V0, &mut CautiousRng).unwrap()
}

/// arti's message encoding (the Data part only).
fn arti_msg_bytes(m: AnyRelayMsg) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode_onto(&mut v).unwrap();
    v
}

/// arti decodes our body; returns arti's stream id and message.
fn arti_decodes(body: [u8; CELL_PAYLOAD_LEN]) -> (u16, AnyRelayMsg) {
    let outer = AnyRelayMsgOuter::decode_singleton(RelayCellFormat::V0, Box::new(body)).unwrap();
    let (sid, msg) = outer.into_streamid_and_msg();
    (ArtiStreamId::get_or_zero(sid), msg)
}

/// The core two-way check; returns arti's decoding of our body for extra assertions.
fn check(ours: &RelayMsg, arti: AnyRelayMsg, sid: u16) -> AnyRelayMsg {
    let our_data = ours.encode().unwrap();
    assert_eq!(
        u8::from(ours.cmd()),
        u8::from(ArtiRelayMsg::cmd(&arti)),
        "same command"
    );

    // Same bytes up to the random padding.
    let a = arti_body(arti.clone(), sid);
    let o = our_body(ours, sid);
    let fixed = (RELAY_HEADER_LEN + our_data.len() + 4).min(CELL_PAYLOAD_LEN);
    assert_eq!(&o[..fixed], &a[..fixed], "bodies differ for {ours:?}");

    // arti's body parses in ours to the same value.
    let c = RelayCellRef::parse(&a).unwrap();
    assert_eq!(c.cmd, ours.cmd());
    assert_eq!(c.stream_id, StreamId(sid));
    assert_eq!(&c.msg().unwrap(), ours);

    // Our body parses in arti; arti re-encodes the message to exactly our bytes.
    let (asid, amsg) = arti_decodes(o);
    assert_eq!(asid, sid);
    assert_eq!(arti_msg_bytes(amsg.clone()), our_data.to_vec());
    amsg
}

fn arti_ls(ls: &LinkSpec) -> EncodedLinkSpec {
    match ls {
        LinkSpec::OrPortV4(a) => ArtiLinkSpec::OrPort(IpAddr::V4(*a.ip()), a.port())
            .encode()
            .unwrap(),
        LinkSpec::OrPortV6(a) => ArtiLinkSpec::OrPort(IpAddr::V6(*a.ip()), a.port())
            .encode()
            .unwrap(),
        LinkSpec::RsaId(id) => ArtiLinkSpec::RsaId(id.0.into()).encode().unwrap(),
        LinkSpec::Ed25519Id(id) => ArtiLinkSpec::Ed25519Id(id.0.into()).encode().unwrap(),
        LinkSpec::Unrecognized { ls_type, body } => {
            EncodedLinkSpec::new(LinkSpecType::from(*ls_type), body.to_vec())
        }
    }
}

#[test]
fn begin() {
    let ours = RelayMsg::Begin(Begin {
        addr: "www.torproject.org".into(),
        port: 443,
        flags: 0,
    });
    let arti = am::Begin::new("www.torproject.org", 443, 0).unwrap();
    match check(&ours, arti.into(), 7) {
        AnyRelayMsg::Begin(b) => {
            assert_eq!(b.addr(), b"www.torproject.org");
            assert_eq!(b.port(), 443);
            assert_eq!(b.flags().bits(), 0);
        }
        other => panic!("{other:?}"),
    }
    let ours = RelayMsg::Begin(Begin {
        addr: "2001:db8::7".into(),
        port: 80,
        flags: 0b101,
    });
    let arti = am::Begin::new("2001:db8::7", 80, am::IpVersionPreference::Ipv6Preferred).unwrap();
    match check(&ours, arti.into(), 0xffff) {
        AnyRelayMsg::Begin(b) => {
            assert_eq!(b.addr(), b"2001:db8::7");
            assert_eq!(b.flags().bits(), 0b101);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn begin_dir_drop_truncate() {
    check(&RelayMsg::BeginDir, am::BeginDir::default().into(), 3);
    check(&RelayMsg::Drop, am::Drop::default().into(), 0);
    check(&RelayMsg::Truncate, am::Truncate::default().into(), 0);
}

#[test]
fn connected() {
    check(
        &RelayMsg::Connected(Connected { addr: None }),
        am::Connected::new_empty().into(),
        9,
    );
    let v4 = IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34));
    check(
        &RelayMsg::Connected(Connected {
            addr: Some((v4, 3600)),
        }),
        am::Connected::new_with_addr(v4, 3600).into(),
        9,
    );
    let v6 = IpAddr::V6("2606:2800:220:1::248".parse::<Ipv6Addr>().unwrap());
    check(
        &RelayMsg::Connected(Connected {
            addr: Some((v6, 60)),
        }),
        am::Connected::new_with_addr(v6, 60).into(),
        9,
    );
}

#[test]
fn data() {
    for len in [1usize, 100, 498] {
        let d: Vec<u8> = (0..len).map(|i| i as u8).collect();
        match check(
            &RelayMsg::Data(d.clone().into()),
            am::Data::new(&d).unwrap().into(),
            1,
        ) {
            AnyRelayMsg::Data(x) => assert_eq!(x.as_ref(), &d[..]),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn end() {
    for r in [1u8, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 200] {
        match check(
            &RelayMsg::End(End::new(EndReason::from(r))),
            am::End::new_with_reason(r.into()).into(),
            4,
        ) {
            AnyRelayMsg::End(e) => assert_eq!(u8::from(e.reason()), r),
            other => panic!("{other:?}"),
        }
    }
    for (addr, ttl) in [
        (IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 300u32),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), u32::MAX),
    ] {
        check(
            &RelayMsg::End(End {
                reason: EndReason::ExitPolicy,
                addr: Some((addr, ttl)),
            }),
            am::End::new_exitpolicy(addr, ttl).into(),
            4,
        );
    }
}

#[test]
fn sendme_v0_v1() {
    // Circuit-level and stream-level v0.
    check(
        &RelayMsg::Sendme(Sendme::V0),
        am::Sendme::new_empty().into(),
        0,
    );
    check(
        &RelayMsg::Sendme(Sendme::V0),
        am::Sendme::new_empty().into(),
        12,
    );
    let digest: [u8; 20] = core::array::from_fn(|i| (i as u8).wrapping_mul(37));
    match check(
        &RelayMsg::Sendme(Sendme::V1 { digest }),
        am::Sendme::new_tag(digest).into(),
        0,
    ) {
        AnyRelayMsg::Sendme(s) => {
            assert_eq!(s.into_sendme_tag().unwrap().as_ref(), &digest[..]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extend2_with_v4_rsa_ed_v6() {
    let specs = vec![
        LinkSpec::OrPortV4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 9001)),
        LinkSpec::RsaId(RsaIdentity([0x42; 20])),
        LinkSpec::Ed25519Id(Ed25519Identity([0x17; 32])),
        LinkSpec::OrPortV6(SocketAddrV6::new(
            "2001:db8::9".parse().unwrap(),
            9002,
            0,
            0,
        )),
        LinkSpec::Unrecognized {
            ls_type: 99,
            body: Bytes::from_static(b"future"),
        },
    ];
    let hdata: Vec<u8> = (0..84u8).collect();
    let ours = RelayMsg::Extend2(Extend2 {
        linkspecs: specs.clone(),
        htype: 2,
        hdata: hdata.clone().into(),
    });
    let arti = am::Extend2::new(
        specs.iter().map(arti_ls).collect(),
        HandshakeType::from(2u16),
        hdata.clone(),
    );
    match check(&ours, arti.into(), 0) {
        AnyRelayMsg::Extend2(e) => {
            assert_eq!(u16::from(e.handshake_type()), 2);
            assert_eq!(e.handshake(), &hdata[..]);
            let parsed: Vec<ArtiLinkSpec> =
                e.linkspecs().iter().map(|l| l.parse().unwrap()).collect();
            assert_eq!(
                &parsed[..4],
                &[
                    ArtiLinkSpec::OrPort(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 9001),
                    ArtiLinkSpec::RsaId([0x42; 20].into()),
                    ArtiLinkSpec::Ed25519Id([0x17; 32].into()),
                    ArtiLinkSpec::OrPort(IpAddr::V6("2001:db8::9".parse().unwrap()), 9002),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extended2_truncated() {
    let hdata: Vec<u8> = (0..64u8).rev().collect();
    match check(
        &RelayMsg::Extended2(Extended2 {
            hdata: hdata.clone().into(),
        }),
        am::Extended2::new(hdata.clone()).into(),
        0,
    ) {
        AnyRelayMsg::Extended2(e) => assert_eq!(e.into_body(), hdata),
        other => panic!("{other:?}"),
    }
    for reason in [0u8, 1, 8, 11] {
        match check(
            &RelayMsg::Truncated { reason },
            am::Truncated::new(DestroyReason::from(reason)).into(),
            0,
        ) {
            AnyRelayMsg::Truncated(t) => assert_eq!(u8::from(t.reason()), reason),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn resolve_resolved() {
    match check(
        &RelayMsg::Resolve(Resolve {
            hostname: "example.com".into(),
        }),
        am::Resolve::new("example.com").into(),
        5,
    ) {
        AnyRelayMsg::Resolve(r) => assert_eq!(r.query(), b"example.com"),
        other => panic!("{other:?}"),
    }
    let rev = am::Resolve::new_reverse(&IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
    check(
        &RelayMsg::Resolve(Resolve {
            hostname: "4.3.2.1.in-addr.arpa".into(),
        }),
        rev.into(),
        5,
    );

    let ours = RelayMsg::Resolved(Resolved {
        answers: vec![
            (ResolvedVal::Ipv4(Ipv4Addr::new(1, 2, 3, 4)), 60),
            (ResolvedVal::Ipv6(Ipv6Addr::LOCALHOST), 61),
            (ResolvedVal::Hostname(Bytes::from_static(b"a.example")), 62),
        ],
    });
    let mut arti = am::Resolved::new_empty();
    arti.add_answer(
        am::ResolvedVal::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
        60,
    );
    arti.add_answer(am::ResolvedVal::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 61);
    arti.add_answer(am::ResolvedVal::Hostname(b"a.example".to_vec()), 62);
    match check(&ours, arti.into(), 5) {
        AnyRelayMsg::Resolved(r) => assert_eq!(r.into_answers().len(), 3),
        other => panic!("{other:?}"),
    }
    for transient in [true, false] {
        let val = if transient {
            ResolvedVal::TransientError
        } else {
            ResolvedVal::NontransientError
        };
        check(
            &RelayMsg::Resolved(Resolved {
                answers: vec![(val, 5)],
            }),
            am::Resolved::new_err(transient, 5).into(),
            5,
        );
    }
}

#[test]
fn command_numbers_agree() {
    for b in 0..=255u8 {
        let ours = RelayCmd::from(b);
        let theirs = tor_cell::relaycell::RelayCmd::from(b);
        // Where arti names a command, we name it too and with the same number.
        if theirs.is_recognized() {
            assert!(ours.name().is_some(), "{b}: arti knows {theirs}");
            let arti_name = theirs.to_string();
            let our_name = ours.name().unwrap();
            assert_eq!(our_name.strip_prefix("RELAY_").unwrap(), arti_name, "{b}");
        }
        // Stream-id rules agree where arti has one. arti leaves PADDING_NEGOTIATE(D) (41, 42)
        // unconstrained; we require StreamID 0 for them, as C tor sends them
        // (circuitpadding.c uses relay_send_command_from_edge with stream 0).
        if b == 41 || b == 42 {
            assert!(ours.is_circuit_cmd());
            continue;
        }
        let sid_ok_zero = ours.check_stream_id(StreamId(0)).is_ok();
        let sid_ok_nonzero = ours.check_stream_id(StreamId(1)).is_ok();
        assert_eq!(sid_ok_zero, theirs.accepts_streamid_val(None), "{b} zero");
        assert_eq!(
            sid_ok_nonzero,
            theirs.accepts_streamid_val(ArtiStreamId::new(1)),
            "{b} nonzero"
        );
    }
}

/// Mirrors one of our messages in arti's types (for the property test below).
fn to_arti(m: &RelayMsg) -> AnyRelayMsg {
    match m {
        RelayMsg::Begin(b) => am::Begin::new(&b.addr, b.port, b.flags).unwrap().into(),
        RelayMsg::Data(d) => am::Data::new(d).unwrap().into(),
        RelayMsg::End(e) => match e.addr {
            Some((a, ttl)) => am::End::new_exitpolicy(a, ttl).into(),
            None => am::End::new_with_reason(u8::from(e.reason).into()).into(),
        },
        RelayMsg::Connected(c) => match c.addr {
            Some((a, ttl)) => am::Connected::new_with_addr(a, ttl).into(),
            None => am::Connected::new_empty().into(),
        },
        RelayMsg::Sendme(Sendme::V1 { digest }) => am::Sendme::new_tag(*digest).into(),
        RelayMsg::Sendme(_) => am::Sendme::new_empty().into(),
        RelayMsg::Extend2(e) => am::Extend2::new(
            e.linkspecs.iter().map(arti_ls).collect(),
            e.htype.into(),
            e.hdata.to_vec(),
        )
        .into(),
        RelayMsg::Extended2(e) => am::Extended2::new(e.hdata.to_vec()).into(),
        RelayMsg::Resolve(r) => am::Resolve::new(&r.hostname).into(),
        other => panic!("not mirrored: {other:?}"),
    }
}

fn arb_linkspec() -> impl Strategy<Value = LinkSpec> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| LinkSpec::OrPortV4(SocketAddrV4::new(a.into(), p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| LinkSpec::OrPortV6(SocketAddrV6::new(
            a.into(),
            p,
            0,
            0
        ))),
        any::<[u8; 20]>().prop_map(|b| LinkSpec::RsaId(RsaIdentity(b))),
        any::<[u8; 32]>().prop_map(|b| LinkSpec::Ed25519Id(Ed25519Identity(b))),
        (4u8.., proptest::collection::vec(any::<u8>(), 0..30)).prop_map(|(t, b)| {
            LinkSpec::Unrecognized {
                ls_type: t,
                body: b.into(),
            }
        }),
    ]
}

fn arb_msg() -> impl Strategy<Value = RelayMsg> {
    let ip = prop_oneof![
        any::<[u8; 4]>()
            .prop_filter("0.0.0.0", |a| *a != [0; 4])
            .prop_map(|a| IpAddr::V4(a.into())),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
    ];
    prop_oneof![
        // arti lower-cases hosts and keeps only the three defined flag bits.
        ("[a-z0-9.-]{1,60}", 1u16.., 0u32..8)
            .prop_map(|(addr, port, flags)| RelayMsg::Begin(Begin { addr, port, flags })),
        proptest::collection::vec(any::<u8>(), 1..=498).prop_map(|d| RelayMsg::Data(d.into())),
        (1u8..=255)
            .prop_filter("not EXITPOLICY", |r| *r != 4)
            .prop_map(|r| RelayMsg::End(End::new(EndReason::from(r)))),
        (ip.clone(), any::<u32>()).prop_map(|a| RelayMsg::End(End {
            reason: EndReason::ExitPolicy,
            addr: Some(a)
        })),
        proptest::option::of((ip, any::<u32>()))
            .prop_map(|addr| RelayMsg::Connected(Connected { addr })),
        Just(RelayMsg::Sendme(Sendme::V0)),
        any::<[u8; 20]>().prop_map(|digest| RelayMsg::Sendme(Sendme::V1 { digest })),
        (
            proptest::collection::vec(arb_linkspec(), 0..5),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(linkspecs, htype, hdata)| RelayMsg::Extend2(Extend2 {
                linkspecs,
                htype,
                hdata: hdata.into()
            })),
        proptest::collection::vec(any::<u8>(), 0..=496)
            .prop_map(|h| RelayMsg::Extended2(Extended2 { hdata: h.into() })),
        "[a-z0-9.-]{0,80}".prop_map(|hostname| RelayMsg::Resolve(Resolve { hostname })),
    ]
}

proptest! {
    #[test]
    fn random_messages_agree_with_arti(m in arb_msg(), sid in 1u16..) {
        let sid = if m.cmd().is_circuit_cmd() { 0 } else { sid };
        check(&m, to_arti(&m), sid);
    }
}
