#![allow(clippy::unwrap_used)]
use super::*;
use crate::crypto::tor1::ClientCircuit;
use crate::handshake::fast::CreateFastClient;
use crate::relay_cell::RelayCell;
use rand::SeedableRng;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(77)
}

struct Client {
    circ: ClientCircuit,
    rng: rand::rngs::StdRng,
}

impl Client {
    fn cell(&mut self, stream: u16, msg: &RelayMsg) -> Vec<u8> {
        let mut body: RelayBody = [0; 509];
        msg.encode_to_body(StreamId(stream), &mut body, &mut self.rng)
            .unwrap();
        self.circ.encrypt_forward_originate(0, &mut body);
        body.to_vec()
    }
    fn read(&mut self, a: &Action) -> RelayCell {
        let Action::ToPrev {
            cmd: ChanCmd::Relay,
            payload,
        } = a
        else {
            panic!("{a:?}")
        };
        let mut body: RelayBody = payload[..].try_into().unwrap();
        assert_eq!(self.circ.decrypt_backward(&mut body), Some(0));
        RelayCell::parse(&body).unwrap()
    }
}

fn setup() -> (RelayCircuit, Client) {
    let mut r = rng();
    let (fc, x) = CreateFastClient::start(&mut r);
    let keys = ServerKeys {
        ntor: &[],
        rsa_id: &RsaIdentity([0; 20]),
    };
    let (circ, reply) = RelayCircuit::create(&mut r, ChanCmd::CreateFast, &x, &keys).unwrap();
    let Action::ToPrev {
        cmd: ChanCmd::CreatedFast,
        payload,
    } = reply
    else {
        panic!()
    };
    let k = fc.finish(&payload[..40]).unwrap();
    let mut circ_c = ClientCircuit::new();
    circ_c.push_hop(&k);
    (
        circ,
        Client {
            circ: circ_c,
            rng: rand::rngs::StdRng::seed_from_u64(5),
        },
    )
}

fn begin() -> RelayMsg {
    RelayMsg::Begin(Begin {
        addr: "127.0.0.1".into(),
        port: 80,
        flags: 0,
    })
}

#[test]
fn ntor_create2_and_bad_handshakes() {
    let mut r = rng();
    let onion = ntor::NtorOnionKey::generate(&mut r);
    let id = RsaIdentity([9; 20]);
    let keys = ServerKeys {
        ntor: std::slice::from_ref(&onion),
        rsa_id: &id,
    };
    let (client, skin) = ntor::NtorClient::start(&mut r, &id, &onion.public_bytes());
    let mut p = vec![0, 2, 0, skin.len() as u8];
    p.extend_from_slice(&skin);
    let (_c, reply) = RelayCircuit::create(&mut r, ChanCmd::Create2, &p, &keys).unwrap();
    let Action::ToPrev {
        cmd: ChanCmd::Created2,
        payload,
    } = reply
    else {
        panic!()
    };
    assert_eq!(&payload[..2], &[0, 64]);
    client.finish(&payload[2..66]).unwrap();
    // Unsupported type, truncated, wrong identity.
    let mut v3 = p.clone();
    v3[1] = 3;
    assert!(RelayCircuit::create(&mut r, ChanCmd::Create2, &v3, &keys).is_err());
    assert!(RelayCircuit::create(&mut r, ChanCmd::Create2, &p[..40], &keys).is_err());
    let other = ServerKeys {
        ntor: std::slice::from_ref(&onion),
        rsa_id: &RsaIdentity([1; 20]),
    };
    assert!(RelayCircuit::create(&mut r, ChanCmd::Create2, &p, &other).is_err());
    assert!(RelayCircuit::create(&mut r, ChanCmd::Create, &p, &keys).is_err());
}

#[test]
fn exit_stream_round_trip() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    let c = cl.cell(1, &begin());
    let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
    assert_eq!(
        acts,
        vec![Action::OpenStream {
            stream: StreamId(1),
            begin: Begin {
                addr: "127.0.0.1".into(),
                port: 80,
                flags: 0
            }
        }]
    );
    assert_eq!(
        circ.stream_credit(StreamId(1)),
        0,
        "no data before CONNECTED"
    );
    let acts = circ.stream_connected(&mut r, StreamId(1), Ok(Connected { addr: None }));
    assert_eq!(cl.read(&acts[0]).cmd, RelayCmd::Connected);
    assert_eq!(circ.stream_credit(StreamId(1)), 500);
    let c = cl.cell(1, &RelayMsg::Data(Bytes::from_static(b"GET /")));
    let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
    assert_eq!(
        acts,
        vec![Action::StreamWrite {
            stream: StreamId(1),
            data: Bytes::from_static(b"GET /")
        }]
    );
    let acts = circ.stream_data(&mut r, StreamId(1), &[7u8; 1000]);
    assert_eq!(acts.len(), 3, "1000 bytes are three DATA cells");
    let got: Vec<u8> = acts.iter().flat_map(|a| cl.read(a).data.to_vec()).collect();
    assert_eq!(got, vec![7u8; 1000]);
    let acts = circ.stream_ended(&mut r, StreamId(1), EndReason::Done);
    let end = cl.read(&acts[0]);
    assert_eq!(end.cmd, RelayCmd::End);
    assert_eq!(end.data[0], 6, "DONE, never 0");
    assert_eq!(circ.stream_count(), 0);
}

#[test]
fn windows_and_authenticated_sendme() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    let c = cl.cell(1, &begin());
    circ.from_prev(&mut r, ChanCmd::Relay, &c);
    let acts = circ.stream_connected(&mut r, StreamId(1), Ok(Connected { addr: None }));
    cl.read(&acts[0]);
    // Package until the stream window (500) is empty. The client reads every cell: its
    // backward cipher must stay in step.
    let mut sent = 0;
    while circ.stream_credit(StreamId(1)) > 0 {
        for a in circ.stream_data(&mut r, StreamId(1), &[0u8; 498]) {
            assert_eq!(cl.read(&a).cmd, RelayCmd::Data);
            sent += 1;
        }
    }
    assert_eq!(sent, 500);
    // Beyond the window, data waits; a stream SENDME sends it and reopens the window.
    assert!(circ.stream_data(&mut r, StreamId(1), b"x").is_empty());
    assert_eq!(circ.stream_pending(StreamId(1)), 1);
    let c = cl.cell(1, &RelayMsg::Sendme(Sendme::V0));
    let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert_eq!(cl.read(&acts[0]).data, Bytes::from_static(b"x"));
    assert_eq!(
        acts[1],
        Action::ResumeStream {
            stream: StreamId(1)
        }
    );
    assert_eq!(circ.stream_credit(StreamId(1)), 49);
    // The client sends 100 DATA cells, each written to the connection at once: the 100th
    // triggers a SENDME v1 whose digest is that cell's running digest (prop 289), and
    // every 50 written trigger a stream SENDME.
    let mut sendmes = Vec::new();
    let mut expect = None;
    for i in 1..=100 {
        let c = cl.cell(1, &RelayMsg::Data(Bytes::from_static(b"y")));
        if i == 100 {
            expect = cl.circ.last_digest_sent(0);
        }
        let mut acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
        assert!(acts.iter().any(|a| matches!(a, Action::StreamWrite { .. })));
        acts.extend(circ.stream_flushed(&mut r, StreamId(1), 1));
        for a in acts {
            if matches!(a, Action::ToPrev { .. }) {
                sendmes.push(cl.read(&a));
            }
        }
    }
    let circ_sendme: Vec<_> = sendmes.iter().filter(|c| c.stream_id.0 == 0).collect();
    assert_eq!(circ_sendme.len(), 1);
    let RelayMsg::Sendme(Sendme::V1 { digest }) =
        RelayMsg::parse(RelayCmd::Sendme, &circ_sendme[0].data).unwrap()
    else {
        panic!()
    };
    assert_eq!(Some(digest), expect);
    assert_eq!(
        sendmes.iter().filter(|c| c.stream_id.0 == 1).count(),
        2,
        "one stream SENDME per 50"
    );
    // 500 cells are outstanding on the circuit window: five circuit SENDMEs are due, a
    // sixth is a protocol violation.
    for i in 1..=6 {
        let c = cl.cell(0, &RelayMsg::Sendme(Sendme::V1 { digest: [0; 20] }));
        let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
        assert_eq!(
            acts.contains(&Action::Close),
            i == 6,
            "SENDME {i}: {acts:?}"
        );
    }
}

/// A destination that does not read: the stream window closes after 500 DATA cells with
/// no stream SENDME, a 501st is a protocol violation, and writing the data out releases
/// the SENDMEs that were held back.
#[test]
fn stream_sendmes_wait_for_the_destination() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    circ.from_prev(&mut r, ChanCmd::Relay, &cl.cell(1, &begin()));
    for a in circ.stream_connected(&mut r, StreamId(1), Ok(Connected { addr: None })) {
        if matches!(a, Action::ToPrev { .. }) {
            cl.read(&a); // CONNECTED (keeps the client's digest in step)
        }
    }
    let stream_sendmes = |acts: &[Action], cl: &mut Client| {
        acts.iter()
            .filter(|a| matches!(a, Action::ToPrev { .. }))
            .map(|a| cl.read(a))
            .filter(|c| c.stream_id.0 == 1 && c.cmd == RelayCmd::Sendme)
            .count()
    };
    let mut held = 0;
    for _ in 0..500 {
        let c = cl.cell(1, &RelayMsg::Data(Bytes::from_static(b"z")));
        let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
        assert!(!acts.contains(&Action::Close));
        held += stream_sendmes(&acts, &mut cl);
    }
    assert_eq!(held, 0, "no stream SENDME while the data is unwritten");
    let c = cl.cell(1, &RelayMsg::Data(Bytes::from_static(b"z")));
    // All but the slack written: the ten SENDMEs the window owes go out together.
    let acts = circ.stream_flushed(&mut r, StreamId(1), 500 - STREAM_FLUSH_SLACK);
    assert_eq!(stream_sendmes(&acts, &mut cl), 10);
    // The cell built before the flush is now within the window again.
    assert!(
        !circ
            .from_prev(&mut r, ChanCmd::Relay, &c)
            .contains(&Action::Close)
    );
    // And beyond a full unflushed window, DATA ends the circuit.
    let (mut circ2, mut cl2) = setup();
    circ2.from_prev(&mut r, ChanCmd::Relay, &cl2.cell(1, &begin()));
    circ2.stream_connected(&mut r, StreamId(1), Ok(Connected { addr: None }));
    for _ in 0..500 {
        let c = cl2.cell(1, &RelayMsg::Data(Bytes::from_static(b"z")));
        circ2.from_prev(&mut r, ChanCmd::Relay, &c);
    }
    let c = cl2.cell(1, &RelayMsg::Data(Bytes::from_static(b"z")));
    assert!(
        circ2
            .from_prev(&mut r, ChanCmd::Relay, &c)
            .contains(&Action::Close)
    );
}

#[test]
fn relay_early_rules_and_extend() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    let x = RelayMsg::Extend2(crate::relay_cell::msg::Extend2 {
        linkspecs: vec![LinkSpec::RsaId(RsaIdentity([3; 20]))],
        htype: 2,
        hdata: Bytes::from_static(&[1; 84]),
    });
    // EXTEND2 in a plain RELAY cell kills the circuit.
    let (mut c2, mut cl2) = setup();
    let cell = cl2.cell(0, &x);
    assert!(
        c2.from_prev(&mut r, ChanCmd::Relay, &cell)
            .contains(&Action::Close)
    );
    // In RELAY_EARLY it asks for an extend.
    let cell = cl.cell(0, &x);
    let acts = circ.from_prev(&mut r, ChanCmd::RelayEarly, &cell);
    assert!(
        matches!(&acts[..], [Action::Extend { htype: 2, .. }]),
        "{acts:?}"
    );
    // CREATED2 from the next hop becomes EXTENDED2 to the client.
    let mut created = vec![0u8, 64];
    created.extend_from_slice(&[5; 64]);
    created.resize(509, 0);
    let acts = circ.from_next(&mut r, ChanCmd::Created2, &created);
    let e = cl.read(&acts[0]);
    assert_eq!(e.cmd, RelayCmd::Extended2);
    assert_eq!(&e.data[..2], &[0, 64]);
    // Cells not for us go forward, keeping RELAY_EARLY; backward cells get our layer.
    let mut body: RelayBody = [0x42; 509];
    cl.circ.encrypt_forward_originate(0, &mut body); // garbage for hop 1, encrypted by hop 0
    let acts = circ.from_prev(&mut r, ChanCmd::RelayEarly, &body);
    assert!(
        matches!(
            acts[0],
            Action::ToNext {
                cmd: ChanCmd::RelayEarly,
                ..
            }
        ),
        "{acts:?}"
    );
    let acts = circ.from_next(&mut r, ChanCmd::Relay, &[9u8; 509]);
    assert!(matches!(
        acts[0],
        Action::ToPrev {
            cmd: ChanCmd::Relay,
            ..
        }
    ));
    // RELAY_EARLY from the next hop is a violation: DESTROY both ways.
    let acts = circ.from_next(&mut r, ChanCmd::RelayEarly, &[0u8; 509]);
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::ToPrev {
            cmd: ChanCmd::Destroy,
            ..
        }
    )));
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::ToNext {
            cmd: ChanCmd::Destroy,
            ..
        }
    )));
    assert!(circ.is_closed());
}

#[test]
fn relay_early_budget_and_garbage() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    for i in 0..9 {
        let c = cl.cell(0, &RelayMsg::Drop);
        let acts = circ.from_prev(&mut r, ChanCmd::RelayEarly, &c);
        if i < 8 {
            assert!(acts.is_empty(), "{i}: {acts:?}");
        } else {
            assert!(acts.contains(&Action::Close));
        }
    }
    // Garbage (not recognized, no next hop), and a short payload.
    let (mut c2, _) = setup();
    assert!(
        c2.from_prev(&mut r, ChanCmd::Relay, &[0x55; 509])
            .contains(&Action::Close)
    );
    let (mut c3, _) = setup();
    assert!(
        c3.from_prev(&mut r, ChanCmd::Relay, &[0; 10])
            .contains(&Action::Close)
    );
}

#[test]
fn end_waits_for_pending_data() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    let c = cl.cell(1, &begin());
    circ.from_prev(&mut r, ChanCmd::Relay, &c);
    let acts = circ.stream_connected(&mut r, StreamId(1), Ok(Connected { addr: None }));
    cl.read(&acts[0]);
    for a in circ.stream_data(&mut r, StreamId(1), &vec![1u8; 498 * 501]) {
        cl.read(&a);
    }
    assert_eq!(circ.stream_pending(StreamId(1)), 1);
    // EOF now: END must not overtake the pending cell.
    assert!(
        circ.stream_ended(&mut r, StreamId(1), EndReason::Done)
            .is_empty()
    );
    let c = cl.cell(1, &RelayMsg::Sendme(Sendme::V0));
    let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
    let cmds: Vec<RelayCmd> = acts
        .iter()
        .filter(|a| matches!(a, Action::ToPrev { .. }))
        .map(|a| cl.read(a).cmd)
        .collect();
    assert_eq!(cmds, [RelayCmd::Data, RelayCmd::End]);
    assert!(acts.contains(&Action::CloseStream {
        stream: StreamId(1)
    }));
    assert_eq!(circ.stream_count(), 0);
}

#[test]
fn begin_dir_opens_a_directory_stream() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    let c = cl.cell(3, &RelayMsg::BeginDir);
    assert_eq!(
        circ.from_prev(&mut r, ChanCmd::Relay, &c),
        vec![Action::OpenDirStream {
            stream: StreamId(3)
        }]
    );
    // Without a directory backend the worker refuses it: END NOTDIRECTORY.
    let acts = circ.stream_connected(&mut r, StreamId(3), Err(EndReason::NotDirectory));
    let end = cl.read(
        acts.iter()
            .find(|a| matches!(a, Action::ToPrev { .. }))
            .unwrap(),
    );
    assert_eq!((end.cmd, end.data[0]), (RelayCmd::End, 14));
}

/// The circuit-wide count of waiting cells (what the worker bounds read-ahead with)
/// follows each stream's: it grows past the windows, shrinks as SENDMEs send, and drops a
/// stream's share when the client ENDs it.
#[test]
fn pending_cells_count_every_stream() {
    let (mut circ, mut cl) = setup();
    let mut r = rng();
    for s in [1, 2] {
        let c = cl.cell(s, &begin());
        circ.from_prev(&mut r, ChanCmd::Relay, &c);
        let acts = circ.stream_connected(&mut r, StreamId(s), Ok(Connected { addr: None }));
        cl.read(&acts[0]);
    }
    // 600 cells on stream 1: 500 go (its window), 100 wait.
    for a in circ.stream_data(&mut r, StreamId(1), &vec![1u8; 498 * 600]) {
        cl.read(&a);
    }
    // 501 on stream 2: the circuit window (1000) lets 500 go, one waits.
    for a in circ.stream_data(&mut r, StreamId(2), &vec![2u8; 498 * 501]) {
        cl.read(&a);
    }
    assert_eq!(circ.circuit_credit(), 0);
    assert_eq!(circ.stream_pending(StreamId(1)), 100);
    assert_eq!(circ.stream_pending(StreamId(2)), 1);
    assert_eq!(circ.pending_cells(), 101);
    let c = cl.cell(1, &RelayMsg::End(End::new(EndReason::Done)));
    let acts = circ.from_prev(&mut r, ChanCmd::Relay, &c);
    assert!(acts.contains(&Action::CloseStream {
        stream: StreamId(1)
    }));
    assert_eq!(circ.pending_cells(), 1);
    // A circuit SENDME reopens the circuit window, but stream 2's own is still shut; its
    // stream SENDME sends the waiting cell.
    for (s, sendme) in [(0, Sendme::V1 { digest: [0; 20] }), (2, Sendme::V0)] {
        let c = cl.cell(s, &RelayMsg::Sendme(sendme));
        for a in circ.from_prev(&mut r, ChanCmd::Relay, &c) {
            if matches!(a, Action::ToPrev { .. }) {
                cl.read(&a);
            }
        }
        assert_eq!(
            circ.pending_cells(),
            usize::from(s == 0),
            "after SENDME on {s}"
        );
    }
}
