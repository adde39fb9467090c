//! Oracle: our channel-cell framing and messages against arti's tor-cell 0.47.
//!
//! For each message, arti and we build the same values independently. At link version 5
//! the framed cells must be byte-identical. Each side must then decode the other's bytes,
//! and we must get back exactly the values we started from.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use bytes::{Bytes, BytesMut};
use proto::CircId;
use proto::cell::msg::{ChanMsg, DestroyReason, Netinfo};
use proto::cell::{ChanCell, ChanCodec};
use tor_cell::chancell::codec::ChannelCodec;
use tor_cell::chancell::msg as arti;
use tor_cell::chancell::{AnyChanCell, ChanCell as ArtiCell};

const LINK: u16 = 5;

fn arti_bytes(circ: u32, m: impl Into<arti::AnyChanMsg>) -> BytesMut {
    let mut out = BytesMut::new();
    let cell: AnyChanCell = ArtiCell::new(tor_cell::chancell::CircId::new(circ), m.into());
    ChannelCodec::new(LINK).write_cell(cell, &mut out).unwrap();
    out
}

fn our_bytes(circ: u32, m: &ChanMsg) -> BytesMut {
    let mut out = BytesMut::new();
    let cell = ChanCell {
        circ_id: CircId(circ),
        cmd: m.cmd(),
        payload: m.encode().unwrap(),
    };
    ChanCodec::with_link_version(LINK)
        .encode(&cell, &mut out)
        .unwrap();
    out
}

/// Asserts byte equality and that each implementation decodes the other's encoding.
fn check(circ: u32, ours: ChanMsg, theirs: impl Into<arti::AnyChanMsg>) {
    let a = arti_bytes(circ, theirs);
    let o = our_bytes(circ, &ours);
    assert_eq!(a, o, "encodings differ for {ours:?}");

    let mut buf = a.clone();
    let cell = ChanCodec::with_link_version(LINK)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    assert_eq!(cell.circ_id, CircId(circ));
    assert_eq!(ChanMsg::parse(cell.cmd, cell.payload).unwrap(), ours);

    let mut buf = o;
    let (decoded, _) = ChannelCodec::new(LINK)
        .decode_cell::<arti::AnyChanMsg>(&mut buf)
        .unwrap()
        .unwrap();
    // Re-encoding arti's parse of our bytes gives our bytes back.
    assert_eq!(arti_bytes(circ, decoded.into_circid_and_msg().1), a);
}

#[test]
fn link_handshake_cells_match_arti() {
    let mut certs = arti::Certs::new_empty();
    certs.push_cert_body(4u8.into(), vec![1u8; 140]);
    certs.push_cert_body(5u8.into(), vec![2u8; 140]);
    certs.push_cert_body(7u8.into(), vec![3u8; 200]);
    check(
        0,
        ChanMsg::Certs(vec![
            (4, Bytes::from(vec![1u8; 140])),
            (5, Bytes::from(vec![2u8; 140])),
            (7, Bytes::from(vec![3u8; 200])),
        ]),
        certs,
    );

    check(
        0,
        ChanMsg::AuthChallenge {
            challenge: [9; 32],
            methods: vec![3],
        },
        arti::AuthChallenge::new([9u8; 32], vec![3u16]),
    );
    check(
        0,
        ChanMsg::Authenticate {
            auth_type: 3,
            body: Bytes::from(vec![4u8; 352]),
        },
        arti::Authenticate::new(3, vec![4u8; 352]),
    );

    let relay_addr = "127.0.0.1".parse().unwrap();
    let peer = "127.0.0.2".parse().unwrap();
    check(
        0,
        ChanMsg::Netinfo(Netinfo {
            timestamp: 1_764_000_000,
            other_addr: peer,
            my_addrs: vec![relay_addr],
        }),
        arti::Netinfo::from_relay(1_764_000_000, Some(peer), vec![relay_addr]),
    );
    check(
        0,
        ChanMsg::PaddingNegotiate {
            version: 0,
            command: 1,
            ito_low_ms: 0,
            ito_high_ms: 0,
        },
        arti::PaddingNegotiate::stop(),
    );
}

#[test]
fn circuit_cells_match_arti() {
    let id = 0x8000_0042;
    check(
        id,
        ChanMsg::CreateFast { x: [7; 20] },
        arti::CreateFast::new(vec![7u8; 20]),
    );
    let mut yk = vec![1u8; 20];
    yk.extend_from_slice(&[2u8; 20]);
    check(
        id,
        ChanMsg::CreatedFast {
            y: [1; 20],
            kh: [2; 20],
        },
        arti::CreatedFast::new(yk),
    );
    check(
        id,
        ChanMsg::Create2 {
            htype: 2,
            hdata: Bytes::from(vec![5u8; 84]),
        },
        arti::Create2::new(2u16.into(), vec![5u8; 84]),
    );
    check(
        id,
        ChanMsg::Created2 {
            hdata: Bytes::from(vec![6u8; 64]),
        },
        arti::Created2::new(vec![6u8; 64]),
    );
    check(
        id,
        ChanMsg::Destroy(DestroyReason::Finished),
        arti::Destroy::new(9u8.into()),
    );
    let body: Vec<u8> = (0..509).map(|i| i as u8).collect();
    check(
        id,
        ChanMsg::Relay(Bytes::from(body.clone())),
        arti::Relay::new(body),
    );
}
