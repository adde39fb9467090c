//! The tor1 relay-crypto layer: AES-128-CTR plus running SHA-1 digests
//! (tor-spec §5.2.2 key setup, §6.1 relay cells, §6.4.1 "Routing relay cells").
//!
//! Each hop holds two [`Direction`]s (forward = client→exit, backward = exit→client).
//! A direction is one AES-128-CTR stream (zero IV) and one running SHA-1 seeded with Df or
//! Db.
//!
//! Invariants:
//! - The cipher and digest state live as long as the circuit: they are never reset per cell.
//! - The digest absorbs each cell that this hop originates or recognises, all 509 bytes
//!   with the 4-byte digest field zeroed. A cell that is only relayed through never touches
//!   the digest.
//! - A cell whose `recognized` field decrypts to zero but whose digest does not match is a
//!   false positive. The digest state is left exactly as it was, because it is only
//!   committed after a match.
//! - Nothing here allocates: every operation works in place on a `&mut [u8; 509]`.

use std::fmt;

use aes::cipher::{KeyIvInit, StreamCipher};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::Tor1Keys;

pub use crate::relay_cell::body::RelayBody;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Offsets of the relay-header fields that the crypto layer reads (tor-spec §6.1).
const RECOGNIZED: std::ops::Range<usize> = 1..3;
const DIGEST: std::ops::Range<usize> = 5..9;

/// One direction of one hop: a cipher stream and a running digest.
#[derive(Clone)]
struct Direction {
    cipher: Aes128Ctr,
    digest: Sha1,
    /// Full SHA-1 value after the last cell this direction originated or recognised:
    /// the value an authenticated SENDME (proposal 289) echoes.
    last: [u8; 20],
}

impl Direction {
    fn new(key: &[u8; 16], seed: &[u8; 20]) -> Self {
        let mut digest = Sha1::new();
        digest.update(seed);
        Direction {
            cipher: Aes128Ctr::new(key.into(), &[0u8; 16].into()),
            digest,
            last: [0; 20],
        }
    }

    fn apply(&mut self, body: &mut RelayBody) {
        self.cipher.apply_keystream(body);
    }

    /// Absorbs a plaintext cell we originate and writes its digest field.
    fn set_digest(&mut self, body: &mut RelayBody) {
        body[DIGEST].fill(0);
        self.digest.update(&body[..]);
        self.last = self.digest.clone().finalize().into();
        body[DIGEST].copy_from_slice(&self.last[..4]);
    }

    /// True when a decrypted cell is addressed to this hop. The digest state advances only
    /// then.
    fn is_recognized(&mut self, body: &RelayBody) -> bool {
        if body[RECOGNIZED] != [0, 0] {
            return false;
        }
        let mut candidate = self.digest.clone();
        candidate.update(&body[..DIGEST.start]);
        candidate.update([0u8; 4]);
        candidate.update(&body[DIGEST.end..]);
        let value: [u8; 20] = candidate.clone().finalize().into();
        if bool::from(value[..4].ct_eq(&body[DIGEST])) {
            self.digest = candidate;
            self.last = value;
            true
        } else {
            false
        }
    }
}

/// The relay's side of one hop.
#[derive(Clone)]
pub struct RelayLayer {
    forward: Direction,
    backward: Direction,
}

impl RelayLayer {
    /// Sets up the hop from the handshake's key material.
    pub fn new(keys: &Tor1Keys) -> Self {
        RelayLayer {
            forward: Direction::new(&keys.kf, &keys.df),
            backward: Direction::new(&keys.kb, &keys.db),
        }
    }

    /// Peels this hop's layer off a cell travelling away from the client. Returns true
    /// when the cell is for this hop. Otherwise it must be sent on to the next hop, and no
    /// digest state has changed.
    pub fn decrypt_forward(&mut self, body: &mut RelayBody) -> bool {
        self.forward.apply(body);
        self.forward.is_recognized(body)
    }

    /// Originates a cell toward the client: fills in the digest field of the plaintext
    /// `body` (whose header the caller wrote) and encrypts it.
    pub fn encrypt_backward_originate(&mut self, body: &mut RelayBody) {
        self.backward.set_digest(body);
        self.backward.apply(body);
    }

    /// Adds this hop's layer to a cell that came from further along the circuit.
    pub fn encrypt_backward(&mut self, body: &mut RelayBody) {
        self.backward.apply(body);
    }

    /// SHA-1 value after the last cell this hop recognised (what an authenticated SENDME
    /// sent to us must echo, proposal 289).
    pub fn last_digest_received(&self) -> [u8; 20] {
        self.forward.last
    }

    /// SHA-1 value after the last cell this hop originated (what the client's SENDME v1
    /// must echo back to us).
    pub fn last_digest_sent(&self) -> [u8; 20] {
        self.backward.last
    }
}

impl fmt::Debug for RelayLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayLayer([redacted])")
    }
}

/// The client's view of one hop.
#[derive(Clone)]
pub struct ClientLayer {
    forward: Direction,
    backward: Direction,
}

impl ClientLayer {
    /// Sets up the hop from the handshake's key material (the same bytes the relay has).
    pub fn new(keys: &Tor1Keys) -> Self {
        ClientLayer {
            forward: Direction::new(&keys.kf, &keys.df),
            backward: Direction::new(&keys.kb, &keys.db),
        }
    }
}

impl fmt::Debug for ClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientLayer([redacted])")
    }
}

/// The client side of a whole circuit: one [`ClientLayer`] per hop, first hop first.
/// Tests and load tools need it to drive our relay the way a Tor client does.
#[derive(Clone, Debug, Default)]
pub struct ClientCircuit {
    hops: Vec<ClientLayer>,
}

impl ClientCircuit {
    /// An empty circuit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a hop (after CREATED or EXTENDED).
    pub fn push_hop(&mut self, keys: &Tor1Keys) {
        self.hops.push(ClientLayer::new(keys));
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// True when the circuit has no hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Sends a plaintext cell to hop `hop` (0 = first): sets the digest with that hop's
    /// forward digest, then encrypts with hops `hop`, …, 0.
    ///
    /// Returns `false`, without touching `body`, when there is no such hop.
    pub fn encrypt_forward_originate(&mut self, hop: usize, body: &mut RelayBody) -> bool {
        let Some(target) = self.hops.get_mut(hop) else {
            return false;
        };
        target.forward.set_digest(body);
        for layer in self.hops[..=hop].iter_mut().rev() {
            layer.forward.apply(body);
        }
        true
    }

    /// Peels layers off a cell arriving from the circuit, first hop first, until one hop
    /// recognises it. Returns that hop, or `None` when none does (a protocol violation:
    /// the circuit must be torn down).
    pub fn decrypt_backward(&mut self, body: &mut RelayBody) -> Option<usize> {
        for (i, layer) in self.hops.iter_mut().enumerate() {
            layer.backward.apply(body);
            if layer.backward.is_recognized(body) {
                return Some(i);
            }
        }
        None
    }

    /// SHA-1 value after the last cell sent to `hop` (the value that hop's SENDME v1 echoes).
    pub fn last_digest_sent(&self, hop: usize) -> Option<[u8; 20]> {
        self.hops.get(hop).map(|h| h.forward.last)
    }

    /// SHA-1 value after the last cell recognised from `hop`.
    pub fn last_digest_received(&self, hop: usize) -> Option<[u8; 20]> {
        self.hops.get(hop).map(|h| h.backward.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::CELL_PAYLOAD_LEN;
    use proptest::prelude::*;

    fn keys(n: u8) -> Tor1Keys {
        let seed: Vec<u8> = (0..72u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(n))
            .collect();
        Tor1Keys::from_kdf_output(&seed).unwrap()
    }

    fn circuit(n: usize) -> (ClientCircuit, Vec<RelayLayer>) {
        let mut c = ClientCircuit::new();
        let mut relays = Vec::new();
        for i in 0..n {
            let k = keys(i as u8 * 31);
            c.push_hop(&k);
            relays.push(RelayLayer::new(&k));
        }
        (c, relays)
    }

    fn plaintext(tag: u8) -> RelayBody {
        let mut b = [0u8; CELL_PAYLOAD_LEN];
        b[0] = 2; // DATA
        b[3..5].copy_from_slice(&[0, 1]);
        b[9..11].copy_from_slice(&[0, 3]);
        b[11..14].copy_from_slice(&[tag, tag, tag]);
        b
    }

    /// Sends a cell from the client to `target`; returns the hop that recognised it.
    fn forward(
        c: &mut ClientCircuit,
        relays: &mut [RelayLayer],
        target: usize,
        body: &mut RelayBody,
    ) -> Option<usize> {
        assert!(c.encrypt_forward_originate(target, body));
        relays
            .iter_mut()
            .position(|relay| relay.decrypt_forward(body))
    }

    /// Originates a cell at hop `from` and carries it back to the client.
    fn backward(
        c: &mut ClientCircuit,
        relays: &mut [RelayLayer],
        from: usize,
        body: &mut RelayBody,
    ) -> Option<usize> {
        relays[from].encrypt_backward_originate(body);
        for relay in relays[..from].iter_mut().rev() {
            relay.encrypt_backward(body);
        }
        c.decrypt_backward(body)
    }

    #[test]
    fn three_hops_both_directions_over_many_cells() {
        let (mut c, mut relays) = circuit(3);
        for i in 0..300usize {
            let target = i % 3;
            let mut body = plaintext(i as u8);
            let want = body;
            assert_eq!(
                forward(&mut c, &mut relays, target, &mut body),
                Some(target)
            );
            // The recognised plaintext equals what was sent, except the digest field.
            assert_eq!(body[..5], want[..5]);
            assert_eq!(body[9..], want[9..]);
            assert_eq!(
                relays[target].last_digest_received(),
                c.last_digest_sent(target).unwrap()
            );

            let mut back = plaintext(!(i as u8));
            let want = back;
            assert_eq!(
                backward(&mut c, &mut relays, target, &mut back),
                Some(target)
            );
            assert_eq!(back[9..], want[9..]);
            assert_eq!(
                relays[target].last_digest_sent(),
                c.last_digest_received(target).unwrap()
            );
        }
    }

    #[test]
    fn tampered_cell_is_not_recognized() {
        let (mut c, mut relays) = circuit(1);
        let mut body = plaintext(1);
        c.encrypt_forward_originate(0, &mut body);
        body[100] ^= 1;
        assert!(!relays[0].decrypt_forward(&mut body));
    }

    #[test]
    fn false_positive_leaves_digest_untouched() {
        // A cell whose recognized field decrypts to zero but whose digest is wrong must
        // not advance the digest; otherwise the next genuine cell would fail to verify.
        let (mut c, mut relays) = circuit(1);
        let mut fake = plaintext(9);
        fake[DIGEST].copy_from_slice(&[1, 2, 3, 4]);
        c.hops[0].forward.apply(&mut fake); // encrypted, but no digest was computed
        assert!(!relays[0].decrypt_forward(&mut fake));
        assert_eq!(
            fake[RECOGNIZED],
            [0, 0],
            "the test cell must be a false positive"
        );

        let mut body = plaintext(10);
        assert_eq!(forward(&mut c, &mut relays, 0, &mut body), Some(0));
    }

    #[test]
    fn unknown_hop_is_refused() {
        let (mut c, _) = circuit(2);
        let mut body = plaintext(0);
        let before = body;
        assert!(!c.encrypt_forward_originate(2, &mut body));
        assert_eq!(body, before);
    }

    #[test]
    fn debug_redacts() {
        let (c, relays) = circuit(1);
        assert_eq!(format!("{:?}", relays[0]), "RelayLayer([redacted])");
        assert!(format!("{c:?}").contains("redacted"));
    }

    proptest! {
        #[test]
        fn random_bodies_round_trip(data in proptest::collection::vec(any::<u8>(), 498), hop in 0usize..3) {
            let (mut c, mut relays) = circuit(3);
            let mut body = [0u8; CELL_PAYLOAD_LEN];
            body[0] = 2;
            body[11..].copy_from_slice(&data);
            let want = body;
            prop_assert_eq!(forward(&mut c, &mut relays, hop, &mut body), Some(hop));
            prop_assert_eq!(&body[11..], &want[11..]);
            let mut back = want;
            prop_assert_eq!(backward(&mut c, &mut relays, hop, &mut back), Some(hop));
            prop_assert_eq!(&back[11..], &want[11..]);
        }
    }
}
