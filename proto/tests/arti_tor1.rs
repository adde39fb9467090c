//! Oracle: our tor1 relay crypto against arti's independent implementation (tor-proto 0.47,
//! feature `bench`), over 3-hop onion stacks in both directions and many consecutive cells.
//!
//! Both sides start from the same 72 bytes of key material (Df | Db | Kf | Kb). arti's seed
//! also carries a 20-byte circuit-binding key, which the relay cell crypto does not use.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use proto::crypto::Tor1Keys;
use proto::crypto::tor1::{ClientCircuit, RelayBody, RelayLayer};
use tor_proto::bench_utils::{
    BENCH_CHAN_CMD, ClientLayer, CryptInit, InboundClientLayer, InboundRelayLayer,
    OutboundClientLayer, OutboundRelayLayer, RelayCellBody, RelayLayer as _, tor1,
};

type ArtiTor1 = tor1::CryptStatePair<tor_llcrypto::cipher::aes::Aes128Ctr, tor_llcrypto::d::Sha1>;

const HOPS: usize = 3;
const CELLS: usize = 120;

fn seed(hop: usize) -> Vec<u8> {
    (0..72u8)
        .map(|i| i.wrapping_mul(13).wrapping_add(hop as u8 * 71 + 5))
        .collect()
}

fn arti_state(hop: usize) -> ArtiTor1 {
    let mut s = seed(hop);
    s.extend_from_slice(&[0u8; 20]); // circuit binding key
    ArtiTor1::initialize(&s).unwrap()
}

fn our_keys(hop: usize) -> Tor1Keys {
    Tor1Keys::from_kdf_output(&seed(hop)).unwrap()
}

/// A plaintext DATA cell whose contents vary with `n`.
fn plaintext(n: usize) -> RelayBody {
    let mut b = [0u8; 509];
    b[0] = 2;
    b[3..5].copy_from_slice(&(n as u16 + 1).to_be_bytes());
    b[9..11].copy_from_slice(&498u16.to_be_bytes());
    for (i, x) in b[11..].iter_mut().enumerate() {
        *x = (i * 7 + n * 3) as u8;
    }
    b
}

fn to_arti(b: RelayBody) -> RelayCellBody {
    Box::new(b).into()
}

fn from_arti(c: RelayCellBody) -> RelayBody {
    let b: Box<[u8; 509]> = c.into();
    *b
}

#[test]
fn arti_client_to_our_relays_and_back() {
    let mut arti_out = Vec::new();
    let mut arti_in = Vec::new();
    for hop in 0..HOPS {
        let (o, i, _) = arti_state(hop).split_client_layer();
        arti_out.push(o);
        arti_in.push(i);
    }
    let mut ours: Vec<RelayLayer> = (0..HOPS).map(|h| RelayLayer::new(&our_keys(h))).collect();

    for n in 0..CELLS {
        let target = n % HOPS;
        // Forward: arti encrypts for `target`; our relays peel until one recognises it.
        let mut cell = to_arti(plaintext(n));
        let tag = arti_out[target].originate_for(BENCH_CHAN_CMD, &mut cell);
        for layer in arti_out[..target].iter_mut().rev() {
            layer.encrypt_outbound(BENCH_CHAN_CMD, &mut cell);
        }
        let mut body = from_arti(cell);
        let hit = ours.iter_mut().position(|r| r.decrypt_forward(&mut body));
        assert_eq!(hit, Some(target), "cell {n}");
        assert_eq!(body[9..], plaintext(n)[9..]);
        assert_eq!(ours[target].last_digest_received()[..], tag.as_ref()[..]);

        // Backward: our relay originates; arti's client finds the hop.
        let mut body = plaintext(n + 1000);
        ours[target].encrypt_backward_originate(&mut body);
        for r in ours[..target].iter_mut().rev() {
            r.encrypt_backward(&mut body);
        }
        let mut cell = to_arti(body);
        let mut found = None;
        for (hop, layer) in arti_in.iter_mut().enumerate() {
            if let Some(tag) = layer.decrypt_inbound(BENCH_CHAN_CMD, &mut cell) {
                found = Some((hop, tag));
                break;
            }
        }
        let (hop, tag) = found.expect("arti recognised no hop");
        assert_eq!(hop, target, "cell {n}");
        assert_eq!(from_arti(cell)[9..], plaintext(n + 1000)[9..]);
        assert_eq!(ours[target].last_digest_sent()[..], tag.as_ref()[..]);
    }
}

#[test]
fn our_client_to_arti_relays_and_back() {
    let mut arti_fwd = Vec::new();
    let mut arti_back = Vec::new();
    for hop in 0..HOPS {
        let (f, b, _) = arti_state(hop).split_relay_layer();
        arti_fwd.push(f);
        arti_back.push(b);
    }
    let mut client = ClientCircuit::new();
    for hop in 0..HOPS {
        client.push_hop(&our_keys(hop));
    }

    for n in 0..CELLS {
        let target = (n * 2 + 1) % HOPS;
        let mut body = plaintext(n);
        assert!(client.encrypt_forward_originate(target, &mut body));
        let mut cell = to_arti(body);
        let mut found = None;
        for (hop, layer) in arti_fwd.iter_mut().enumerate() {
            if let Some(tag) = layer.decrypt_outbound(BENCH_CHAN_CMD, &mut cell) {
                found = Some((hop, tag));
                break;
            }
        }
        let (hop, tag) = found.expect("no arti relay recognised the cell");
        assert_eq!(hop, target, "cell {n}");
        assert_eq!(from_arti(cell)[9..], plaintext(n)[9..]);
        assert_eq!(
            client.last_digest_sent(target).unwrap()[..],
            tag.as_ref()[..]
        );

        let mut cell = to_arti(plaintext(n + 500));
        let tag = arti_back[target].originate(BENCH_CHAN_CMD, &mut cell);
        for layer in arti_back[..target].iter_mut().rev() {
            layer.encrypt_inbound(BENCH_CHAN_CMD, &mut cell);
        }
        let mut body = from_arti(cell);
        assert_eq!(client.decrypt_backward(&mut body), Some(target), "cell {n}");
        assert_eq!(body[9..], plaintext(n + 500)[9..]);
        assert_eq!(
            client.last_digest_received(target).unwrap()[..],
            tag.as_ref()[..]
        );
    }
}
