//! Relay cells, tor-spec §6 (and §5.1.2 EXTEND2, §5.4 TRUNCATED, §7.3–7.4 SENDME,
//! proposal 289 authenticated SENDME).
//!
//! Layers, from the bytes up:
//! - [`body`]: the 509-byte plaintext body (`Command | Recognized | StreamID | Digest |
//!   Length | Data | Padding`), written and read in place without allocation. The tor1
//!   crypto layer (`crate::crypto`) fills and checks the Digest field.
//! - [`cmd`]: [`RelayCmd`] numbers (C tor's, with XOFF = 43 and XON = 44) and which
//!   commands address a stream (nonzero StreamID) or the circuit (zero).
//! - [`msg`]: [`RelayMsg`], the typed Data of BEGIN … RESOLVED, SENDME v0/v1, EXTEND2,
//!   EXTENDED2, TRUNCATE(D), DROP; unknown or unmodelled commands are kept verbatim.
//!
//! Invariants: nothing here panics on network input; parsers return [`crate::Error`] on
//! truncated, oversized or contradictory data; everything `encode` writes parses back to
//! an equal value (property-tested, and cross-checked against arti's tor-cell in
//! `tests/arti_relay_cell.rs`).

pub mod body;
pub mod cmd;
pub mod msg;
pub(crate) mod wire;

pub use body::{
    RELAY_DATA_MAX, RELAY_HEADER_LEN, RelayBody, RelayCell, RelayCellRef, digest,
    encode_header_in_place, encode_header_into, recognized, set_digest,
};
pub use cmd::{RelayCmd, StreamIdReq};
pub use msg::{
    BEGIN_FLAG_IPV4_NOT_OK, BEGIN_FLAG_IPV6_OK, BEGIN_FLAG_IPV6_PREFERRED, Begin, Connected, End,
    EndReason, Extend2, Extended2, RelayMsg, Resolve, Resolved, ResolvedVal, Sendme, TTL_ABSENT,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CELL_PAYLOAD_LEN;
    use crate::error::Error;
    use crate::ids::{Ed25519Identity, RsaIdentity, StreamId};
    use crate::linkspec::LinkSpec;
    use crate::linkspec::tests::arb_linkspec;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn parse(cmd: RelayCmd, b: &[u8]) -> crate::Result<RelayMsg> {
        RelayMsg::parse(cmd, b)
    }

    fn enc(m: &RelayMsg) -> Vec<u8> {
        m.encode().expect("encodes").to_vec()
    }

    #[test]
    fn begin_wire_forms() {
        let m = parse(RelayCmd::Begin, b"www.example.com:443\0").expect("parses");
        assert_eq!(
            m,
            RelayMsg::Begin(Begin {
                addr: "www.example.com".into(),
                port: 443,
                flags: 0
            })
        );
        assert_eq!(enc(&m), b"www.example.com:443\0");

        let m = parse(RelayCmd::Begin, b"[2001:db8::1]:80\0\0\0\0\x05").expect("parses");
        let want = RelayMsg::Begin(Begin {
            addr: "2001:db8::1".into(),
            port: 80,
            flags: BEGIN_FLAG_IPV6_OK | BEGIN_FLAG_IPV6_PREFERRED,
        });
        assert_eq!(m, want);
        assert_eq!(enc(&want), b"[2001:db8::1]:80\0\0\0\0\x05");

        // Fewer than 4 bytes after the NUL: no flags (C tor's begin_cell_parse).
        let m = parse(RelayCmd::Begin, b"a.b:80\0\x42\x43\x44").expect("parses");
        assert!(matches!(m, RelayMsg::Begin(Begin { flags: 0, .. })));
    }

    #[test]
    fn begin_rejects_garbage() {
        for bad in [
            &b"a.b:80"[..],       // no NUL
            b"a.b:0\0",           // port 0
            b"a.b:65536\0",       // port too big
            b"a.b:100000\0",      // port too long
            b"a.b:xyz\0",         // not a number
            b"a.b:+80\0",         // sign
            b"a.b\0",             // no port
            b":80\0",             // no address
            b"[::1:80\0",         // unclosed bracket
            b"[::1]80\0",         // no colon after bracket
            b"::1:80\0",          // bare IPv6
            b"\xc3\xa9.com:80\0", // not ASCII
            b"",
        ] {
            assert!(parse(RelayCmd::Begin, bad).is_err(), "{bad:?}");
        }
        let bad_port = RelayMsg::Begin(Begin {
            addr: "x".into(),
            port: 0,
            flags: 0,
        });
        assert!(bad_port.encode().is_err());
        let bad_addr = RelayMsg::Begin(Begin {
            addr: "a\0b".into(),
            port: 1,
            flags: 0,
        });
        assert!(bad_addr.encode().is_err());
    }

    #[test]
    fn connected_forms() {
        assert_eq!(
            parse(RelayCmd::Connected, b"").expect("empty ok"),
            RelayMsg::Connected(Connected { addr: None })
        );
        let v4 = parse(RelayCmd::Connected, &[10, 0, 0, 1, 0, 0, 1, 0]).expect("v4");
        assert_eq!(
            v4,
            RelayMsg::Connected(Connected {
                addr: Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 256))
            })
        );
        // Truncated TTL is accepted, as in C tor.
        assert_eq!(
            parse(RelayCmd::Connected, &[17, 18, 19, 20, 21]).expect("v4"),
            RelayMsg::Connected(Connected {
                addr: Some((IpAddr::V4(Ipv4Addr::new(17, 18, 19, 20)), TTL_ABSENT))
            })
        );
        let mut v6 = vec![0, 0, 0, 0, 6];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0, 0, 0, 9]);
        let m = parse(RelayCmd::Connected, &v6).expect("v6");
        assert_eq!(
            m,
            RelayMsg::Connected(Connected {
                addr: Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 9))
            })
        );
        assert_eq!(enc(&m), v6);
        // Truncated IPv6 form, wrong type, short IPv4.
        assert!(parse(RelayCmd::Connected, &v6[..24]).is_err());
        v6[4] = 4;
        assert!(parse(RelayCmd::Connected, &v6).is_err());
        assert!(parse(RelayCmd::Connected, &[1, 2, 3]).is_err());
        let unspec = RelayMsg::Connected(Connected {
            addr: Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1)),
        });
        assert!(unspec.encode().is_err());
    }

    #[test]
    fn end_forms() {
        assert_eq!(
            parse(RelayCmd::End, b"").expect("empty"),
            RelayMsg::End(End::new(EndReason::Misc))
        );
        let done = RelayMsg::End(End::new(EndReason::Done));
        assert_eq!(enc(&done), [6], "reason byte always present");
        // Reason 0 is not success.
        assert_eq!(
            parse(RelayCmd::End, &[0]).expect("parses"),
            RelayMsg::End(End::new(EndReason::Unrecognized(0)))
        );
        assert_eq!(EndReason::from(15), EndReason::Unrecognized(15));
        for n in 1..=14u8 {
            assert!(!matches!(EndReason::from(n), EndReason::Unrecognized(_)));
        }
        let ep = parse(RelayCmd::End, &[4, 1, 2, 3, 4, 0, 0, 0, 60]).expect("parses");
        assert_eq!(
            ep,
            RelayMsg::End(End {
                reason: EndReason::ExitPolicy,
                addr: Some((IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 60))
            })
        );
        // Address of a wrong length is ignored, not an error.
        assert_eq!(
            parse(RelayCmd::End, &[4, 1, 2, 3]).expect("parses"),
            RelayMsg::End(End::new(EndReason::ExitPolicy))
        );
        let bad = RelayMsg::End(End {
            reason: EndReason::Done,
            addr: Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 1)),
        });
        assert!(bad.encode().is_err());
    }

    #[test]
    fn sendme_forms() {
        assert_eq!(
            parse(RelayCmd::Sendme, b"").expect("v0"),
            RelayMsg::Sendme(Sendme::V0)
        );
        assert_eq!(
            parse(RelayCmd::Sendme, &[0, 0, 0]).expect("v0"),
            RelayMsg::Sendme(Sendme::V0)
        );
        let mut v1 = vec![1, 0, 20];
        v1.extend(1..=20u8);
        let m = parse(RelayCmd::Sendme, &v1).expect("v1");
        let mut d = [0u8; 20];
        d.iter_mut().zip(1..=20u8).for_each(|(x, v)| *x = v);
        assert_eq!(m, RelayMsg::Sendme(Sendme::V1 { digest: d }));
        assert_eq!(enc(&m), v1);
        // DATA_LEN must be exactly 20 (C tor on tor1 circuits).
        let mut long = vec![1, 0, 21];
        long.extend([0; 21]);
        assert_eq!(
            parse(RelayCmd::Sendme, &long),
            Err(Error::BadLength("SENDME v1 DATA_LEN must be 20"))
        );
        assert!(parse(RelayCmd::Sendme, &[1, 0, 19]).is_err());
        assert!(parse(RelayCmd::Sendme, &v1[..22]).is_err());
        assert!(parse(RelayCmd::Sendme, &[1]).is_err());
        assert_eq!(
            parse(RelayCmd::Sendme, &[7, 1, 2]).expect("kept"),
            RelayMsg::Sendme(Sendme::Unrecognized {
                version: 7,
                body: Bytes::from_static(&[1, 2])
            })
        );
    }

    #[test]
    fn extend2_forms() {
        let e = Extend2 {
            linkspecs: vec![
                LinkSpec::OrPortV4("1.2.3.4:9001".parse().expect("addr")),
                LinkSpec::RsaId(RsaIdentity([3; 20])),
                LinkSpec::Ed25519Id(Ed25519Identity([4; 32])),
            ],
            htype: 2,
            hdata: vec![9; 84].into(),
        };
        let b = enc(&RelayMsg::Extend2(e.clone()));
        assert_eq!(b.len(), 1 + 8 + 22 + 34 + 4 + 84);
        assert_eq!(&b[65..69], &[0, 2, 0, 84]);
        assert_eq!(
            parse(RelayCmd::Extend2, &b).expect("parses"),
            RelayMsg::Extend2(e)
        );
        // HLEN larger than what is there.
        let mut short = b.clone();
        short[68] = 85;
        assert_eq!(
            parse(RelayCmd::Extend2, &short),
            Err(Error::Truncated("EXTEND2 HDATA"))
        );
        for cut in 0..b.len() {
            assert!(parse(RelayCmd::Extend2, &b[..cut]).is_err(), "cut {cut}");
        }
        // Too much handshake to fit a cell.
        let huge = RelayMsg::Extend2(Extend2 {
            linkspecs: vec![],
            htype: 3,
            hdata: vec![0; 494].into(),
        });
        assert!(huge.encode().is_err());
    }

    #[test]
    fn extended2_truncated_resolve() {
        let m = parse(RelayCmd::Extended2, &[0, 2, 7, 8]).expect("parses");
        assert_eq!(
            m,
            RelayMsg::Extended2(Extended2 {
                hdata: Bytes::from_static(&[7, 8])
            })
        );
        assert!(parse(RelayCmd::Extended2, &[0, 3, 7, 8]).is_err());
        assert!(parse(RelayCmd::Extended2, &[0]).is_err());
        assert_eq!(
            parse(RelayCmd::Truncated, &[8]).expect("parses"),
            RelayMsg::Truncated { reason: 8 }
        );
        assert!(parse(RelayCmd::Truncated, &[]).is_err());
        assert_eq!(
            parse(RelayCmd::Resolve, b"example.org\0").expect("parses"),
            RelayMsg::Resolve(Resolve {
                hostname: "example.org".into()
            })
        );
        assert!(parse(RelayCmd::Resolve, b"example.org").is_err());
        assert!(parse(RelayCmd::Data, b"").is_err());
        assert!(RelayMsg::Data(Bytes::new()).encode().is_err());
        assert_eq!(parse(RelayCmd::BeginDir, &[0; 9]), Ok(RelayMsg::BeginDir));
        assert_eq!(parse(RelayCmd::Drop, &[1; 9]), Ok(RelayMsg::Drop));
    }

    #[test]
    fn resolved_forms() {
        let mut b = vec![4, 4, 1, 2, 3, 4, 0, 0, 0, 10];
        b.extend([6, 16]);
        b.extend(Ipv6Addr::LOCALHOST.octets());
        b.extend([0, 0, 0, 11]);
        b.extend([0, 3, b'a', b'.', b'b', 0, 0, 0, 12]);
        b.extend([0xf0, 5, b'E', b'r', b'r', b'o', b'r', 0, 0, 0, 13]);
        let m = parse(RelayCmd::Resolved, &b).expect("parses");
        assert_eq!(
            m,
            RelayMsg::Resolved(Resolved {
                answers: vec![
                    (ResolvedVal::Ipv4(Ipv4Addr::new(1, 2, 3, 4)), 10),
                    (ResolvedVal::Ipv6(Ipv6Addr::LOCALHOST), 11),
                    (ResolvedVal::Hostname(Bytes::from_static(b"a.b")), 12),
                    (ResolvedVal::TransientError, 13),
                ]
            })
        );
        // IPv4 answer of the wrong length; missing TTL; value past the end.
        assert!(parse(RelayCmd::Resolved, &[4, 3, 1, 2, 3, 0, 0, 0, 1]).is_err());
        assert!(parse(RelayCmd::Resolved, &[4, 4, 1, 2, 3, 4, 0]).is_err());
        assert!(parse(RelayCmd::Resolved, &[0, 9, b'a']).is_err());
    }

    #[test]
    fn unrecognized_commands_are_kept() {
        let m = parse(RelayCmd::from(200), &[1, 2, 3]).expect("kept");
        assert_eq!(
            m,
            RelayMsg::Unrecognized {
                cmd: RelayCmd::Unrecognized(200),
                body: Bytes::from_static(&[1, 2, 3])
            }
        );
        assert_eq!(enc(&m), [1, 2, 3]);
        assert!(matches!(
            parse(RelayCmd::Xon, &[0]).expect("kept"),
            RelayMsg::Unrecognized {
                cmd: RelayCmd::Xon,
                ..
            }
        ));
        let lying = RelayMsg::Unrecognized {
            cmd: RelayCmd::Data,
            body: Bytes::from_static(b"x"),
        };
        assert!(lying.encode().is_err());
    }

    #[test]
    fn encode_to_body_checks_stream_id_and_size() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut body = [0u8; CELL_PAYLOAD_LEN];
        let data = RelayMsg::Data(Bytes::from_static(b"hi"));
        assert!(
            data.encode_to_body(StreamId(0), &mut body, &mut rng)
                .is_err()
        );
        data.encode_to_body(StreamId(5), &mut body, &mut rng)
            .expect("ok");
        let c = RelayCellRef::parse(&body).expect("parses");
        assert_eq!(
            (c.cmd, c.stream_id, c.data),
            (RelayCmd::Data, StreamId(5), &b"hi"[..])
        );
        assert_eq!(c.msg().expect("msg"), data);
        let ext = RelayMsg::Extended2(Extended2 {
            hdata: Bytes::new(),
        });
        assert!(
            ext.encode_to_body(StreamId(5), &mut body, &mut rng)
                .is_err()
        );
        let full = RelayMsg::Data(vec![7; RELAY_DATA_MAX].into());
        full.encode_to_body(StreamId(5), &mut body, &mut rng)
            .expect("498 fits");
        let over = RelayMsg::Data(vec![7; RELAY_DATA_MAX + 1].into());
        assert!(
            over.encode_to_body(StreamId(5), &mut body, &mut rng)
                .is_err()
        );
        assert!(over.encode().is_err());
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    fn arb_host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9.-]{1,60}",
            any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string()),
            any::<[u8; 16]>().prop_map(|a| Ipv6Addr::from(a).to_string()),
        ]
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
    }

    fn arb_resolved_val() -> impl Strategy<Value = ResolvedVal> {
        prop_oneof![
            arb_bytes(40).prop_map(ResolvedVal::Hostname),
            any::<[u8; 4]>().prop_map(|a| ResolvedVal::Ipv4(a.into())),
            any::<[u8; 16]>().prop_map(|a| ResolvedVal::Ipv6(a.into())),
            Just(ResolvedVal::TransientError),
            Just(ResolvedVal::NontransientError),
            (any::<u8>(), arb_bytes(20))
                .prop_filter("unknown type", |(t, _)| ![0, 4, 6, 0xf0, 0xf1].contains(t))
                .prop_map(|(rtype, value)| ResolvedVal::Unrecognized { rtype, value }),
        ]
    }

    pub(crate) fn arb_msg() -> impl Strategy<Value = RelayMsg> {
        prop_oneof![
            (arb_host(), 1u16.., any::<u32>())
                .prop_map(|(addr, port, flags)| RelayMsg::Begin(Begin { addr, port, flags })),
            Just(RelayMsg::BeginDir),
            proptest::option::of((arb_ip(), any::<u32>()))
                .prop_filter("0.0.0.0 is not encodable", |a| {
                    !matches!(a, Some((IpAddr::V4(v4), _)) if v4.is_unspecified())
                })
                .prop_map(|addr| RelayMsg::Connected(Connected { addr })),
            proptest::collection::vec(any::<u8>(), 1..=RELAY_DATA_MAX)
                .prop_map(|d| RelayMsg::Data(d.into())),
            (any::<u8>(), proptest::option::of((arb_ip(), any::<u32>()))).prop_map(|(r, a)| {
                let reason = EndReason::from(r);
                let addr = if reason == EndReason::ExitPolicy {
                    a
                } else {
                    None
                };
                RelayMsg::End(End { reason, addr })
            }),
            Just(RelayMsg::Sendme(Sendme::V0)),
            any::<[u8; 20]>().prop_map(|digest| RelayMsg::Sendme(Sendme::V1 { digest })),
            (2u8.., arb_bytes(100)).prop_map(|(version, body)| RelayMsg::Sendme(
                Sendme::Unrecognized { version, body }
            )),
            (
                proptest::collection::vec(arb_linkspec(), 0..6),
                any::<u16>(),
                arb_bytes(200)
            )
                .prop_map(|(linkspecs, htype, hdata)| RelayMsg::Extend2(Extend2 {
                    linkspecs,
                    htype,
                    hdata
                })),
            arb_bytes(496).prop_map(|hdata| RelayMsg::Extended2(Extended2 { hdata })),
            Just(RelayMsg::Truncate),
            any::<u8>().prop_map(|reason| RelayMsg::Truncated { reason }),
            Just(RelayMsg::Drop),
            "[a-z0-9.-]{0,100}".prop_map(|hostname| RelayMsg::Resolve(Resolve { hostname })),
            proptest::collection::vec((arb_resolved_val(), any::<u32>()), 0..8)
                .prop_map(|answers| RelayMsg::Resolved(Resolved { answers })),
            (any::<u8>(), arb_bytes(100))
                .prop_map(|(c, body)| (RelayCmd::from(c), body))
                .prop_filter("unmodelled command", |(c, _)| !msg_is_modelled(*c))
                .prop_map(|(cmd, body)| RelayMsg::Unrecognized { cmd, body }),
        ]
    }

    fn msg_is_modelled(cmd: RelayCmd) -> bool {
        !matches!(
            RelayMsg::parse(cmd, b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            Ok(RelayMsg::Unrecognized { .. })
        )
    }

    fn stream_for(cmd: RelayCmd, sid: u16) -> StreamId {
        match cmd.stream_id_req() {
            StreamIdReq::Zero => StreamId(0),
            StreamIdReq::Nonzero => StreamId(sid.max(1)),
            StreamIdReq::Any => StreamId(sid),
        }
    }

    proptest! {
        #[test]
        fn msg_round_trip(m in arb_msg()) {
            let b = m.encode().expect("valid messages encode");
            prop_assert!(b.len() <= RELAY_DATA_MAX);
            prop_assert_eq!(RelayMsg::parse(m.cmd(), &b).expect("parses"), m);
        }

        #[test]
        fn cell_round_trip(m in arb_msg(), sid in any::<u16>(), seed in any::<u64>()) {
            let mut body = [0u8; CELL_PAYLOAD_LEN];
            let sid = stream_for(m.cmd(), sid);
            m.encode_to_body(sid, &mut body, &mut StdRng::seed_from_u64(seed)).expect("fits");
            let c = RelayCellRef::parse(&body).expect("parses");
            prop_assert_eq!(c.cmd, m.cmd());
            prop_assert_eq!(c.stream_id, sid);
            prop_assert_eq!(c.msg().expect("msg"), m);
        }

        #[test]
        fn msg_never_panics(cmd in any::<u8>(),
                            b in proptest::collection::vec(any::<u8>(), 0..=RELAY_DATA_MAX)) {
            if let Ok(m) = RelayMsg::parse(cmd.into(), &b) {
                // Whatever parses re-encodes to something that parses to the same value.
                if let Ok(again) = m.encode() {
                    prop_assert_eq!(RelayMsg::parse(cmd.into(), &again).expect("reparses"), m);
                }
            }
        }
    }
}
