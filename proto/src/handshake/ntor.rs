//! The ntor handshake, CREATE2 HTYPE 2 (tor-spec §5.1.4 "The ntor handshake"; keys by
//! KDF-RFC5869, tor-spec §5.2.2).
//!
//! Client onionskin (84 bytes): `NODEID[20] | KEYID[32] | CLIENT_PK[32]`, where NODEID is the
//! relay's RSA identity digest and KEYID its curve25519 onion key `B`. Reply (64 bytes):
//! `SERVER_PK[32] | AUTH[32]`.
//!
//! ```text
//! secret_input = EXP(X,y) | EXP(X,b) | ID | B | X | Y | PROTOID
//! verify       = H(secret_input, t_verify)
//! auth_input   = verify | ID | B | Y | X | PROTOID | "Server"
//! AUTH         = H(auth_input, t_mac)
//! keys         = HKDF-SHA256(secret_input, salt = t_key, info = m_expand)
//! ```
//! with `H(x, t) = HMAC-SHA256(key = t, msg = x)` (INTEROP Trap 8). The key stream is
//! `Df | Db | Kf | Kb | KH`; [`Tor1Keys`] takes its first 72 bytes.
//!
//! Invariants: the relay selects among its onion keys (current and previous) in constant
//! time and, if KEYID is unknown, computes the whole reply with a stand-in key before failing,
//! so timing does not say whether KEYID was recognised. All-zero Diffie-Hellman outputs and a
//! wrong AUTH are folded into one constant-time verdict.

use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use super::exact;
use super::kdf::{NTOR_PROTOID, ntor_kdf};
use crate::crypto::Tor1Keys;
use crate::{Error, Result, RsaIdentity};

/// Length of the client's onionskin (CREATE2 HDATA).
pub const NTOR_ONIONSKIN_LEN: usize = 84;
/// Length of the relay's reply (CREATED2 HDATA).
pub const NTOR_REPLY_LEN: usize = 64;

const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:verify";
const SERVER_STR: &[u8] = b"Server";
const SECRET_INPUT_LEN: usize = 32 * 2 + 20 + 32 * 3 + NTOR_PROTOID.len();

/// A relay's curve25519 onion key ("ntor-onion-key"), shared by ntor and ntor v3.
///
/// The secret zeroizes on drop (x25519-dalek's `StaticSecret`) and `Debug` prints only the
/// public half.
#[derive(Clone)]
pub struct NtorOnionKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl NtorOnionKey {
    /// Generates a fresh onion key. The secret is stored clamped, as C tor stores it, so
    /// key files and the derived crosscert key match C tor's byte for byte.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        Self::from_secret_bytes(curve25519_dalek::scalar::clamp_integer(*secret))
    }

    /// Rebuilds an onion key from its 32 secret bytes (as stored in a key file).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(secret))
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        NtorOnionKey { secret, public }
    }

    /// The secret bytes, for writing a key file.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key `B`, as published in `ntor-onion-key` and sent as KEYID.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl std::fmt::Debug for NtorOnionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NtorOnionKey {{ public: {}, secret: [redacted] }}",
            hex::encode(self.public.as_bytes())
        )
    }
}

/// Picks the key whose public half equals `keyid` without branching on which one (or whether
/// any) matched. Returns the chosen key (the first one as a stand-in if none matched) and
/// whether one matched. `None` only if `keys` is empty.
pub(crate) fn select_onion_key<'a>(
    keys: &'a [NtorOnionKey],
    keyid: &[u8],
) -> Option<(&'a NtorOnionKey, Choice)> {
    let mut idx = 0u64;
    let mut found = Choice::from(0);
    for (i, k) in keys.iter().enumerate() {
        let hit = k.public.as_bytes().ct_eq(keyid);
        idx.conditional_assign(&(i as u64), hit & !found);
        found |= hit;
    }
    let k = keys.get(usize::try_from(idx).ok()?)?;
    Some((k, found))
}

/// True (as a `Choice`) when a Diffie-Hellman output is all zeros (a degenerate peer key).
pub(crate) fn is_zero(s: &SharedSecret) -> Choice {
    s.as_bytes().ct_eq(&[0u8; 32])
}

/// `H(x, t) = HMAC-SHA256(key = t, message = x)`.
fn h(x: &[u8], t: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(t) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    m.update(x);
    m.finalize().into_bytes().into()
}

/// The shared computation: from the two DH outputs and the public values, AUTH and keys.
fn derive(
    first_dh: &[u8; 32],
    second_dh: &[u8; 32],
    id: &RsaIdentity,
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
) -> Result<([u8; 32], Tor1Keys)> {
    let mut si = Zeroizing::new(Vec::with_capacity(SECRET_INPUT_LEN));
    for part in [&first_dh[..], second_dh, &id.0, b, x, y, NTOR_PROTOID] {
        si.extend_from_slice(part);
    }
    let verify = Zeroizing::new(h(&si, T_VERIFY));
    let mut ai = Zeroizing::new(Vec::with_capacity(32 + 20 + 32 * 3 + 30));
    for part in [&verify[..], &id.0, b, y, x, NTOR_PROTOID, SERVER_STR] {
        ai.extend_from_slice(part);
    }
    let auth = h(&ai, T_MAC);
    let mut out = Zeroizing::new([0u8; Tor1Keys::LEN]);
    ntor_kdf(&si, &mut out[..])?;
    let keys = Tor1Keys::from_kdf_output(&out[..]).ok_or(Error::Handshake("key length"))?;
    Ok((auth, keys))
}

/// The client's state between sending the onionskin and receiving the reply.
pub struct NtorClient {
    x: StaticSecret,
    x_pub: [u8; 32],
    id: RsaIdentity,
    b: [u8; 32],
}

impl NtorClient {
    /// Starts a handshake with the relay whose RSA identity is `id` and whose onion key is
    /// `onion_key` (`B`). Returns the state and the 84-byte onionskin.
    pub fn start(
        rng: &mut (impl RngCore + CryptoRng),
        id: &RsaIdentity,
        onion_key: &[u8; 32],
    ) -> (Self, [u8; NTOR_ONIONSKIN_LEN]) {
        Self::start_with_key(StaticSecret::random_from_rng(rng), id, onion_key)
    }

    /// Like [`start`](Self::start) with an explicit ephemeral `x`; for replaying test vectors.
    pub fn start_with_key(
        x: StaticSecret,
        id: &RsaIdentity,
        onion_key: &[u8; 32],
    ) -> (Self, [u8; NTOR_ONIONSKIN_LEN]) {
        let x_pub = PublicKey::from(&x).to_bytes();
        let mut skin = [0u8; NTOR_ONIONSKIN_LEN];
        skin[..20].copy_from_slice(&id.0);
        skin[20..52].copy_from_slice(onion_key);
        skin[52..].copy_from_slice(&x_pub);
        let st = NtorClient {
            x,
            x_pub,
            id: *id,
            b: *onion_key,
        };
        (st, skin)
    }

    /// Checks the relay's 64-byte reply and returns the hop's keys.
    ///
    /// Errors: [`Error::Truncated`] / [`Error::TrailingBytes`] for a wrong length;
    /// [`Error::Handshake`] for a wrong AUTH or a degenerate key.
    pub fn finish(self, reply: &[u8]) -> Result<Tor1Keys> {
        let reply: &[u8; NTOR_REPLY_LEN] = exact(reply, "ntor reply")?;
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let yx = self.x.diffie_hellman(&PublicKey::from(y));
        let bx = self.x.diffie_hellman(&PublicKey::from(self.b));
        let bad = is_zero(&yx) | is_zero(&bx);
        let (auth, keys) = derive(
            yx.as_bytes(),
            bx.as_bytes(),
            &self.id,
            &self.b,
            &self.x_pub,
            &y,
        )?;
        let good = auth.ct_eq(&reply[32..]) & !bad;
        if bool::from(good) {
            Ok(keys)
        } else {
            Err(Error::Handshake("ntor AUTH mismatch"))
        }
    }
}

impl std::fmt::Debug for NtorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorClient")
            .field("id", &self.id)
            .field("x", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Relay side: answers a client's 84-byte onionskin.
///
/// `keys` are our onion keys, current and previous; the onionskin's KEYID selects one.
/// `my_id` is our RSA identity, which NODEID must equal. Returns the 64-byte reply and keys.
///
/// Errors: [`Error::Truncated`] / [`Error::TrailingBytes`] for a wrong length;
/// [`Error::Handshake`] for a wrong NODEID, an unknown KEYID, a degenerate client key, or an
/// empty `keys`.
pub fn server_handshake(
    rng: &mut (impl RngCore + CryptoRng),
    keys: &[NtorOnionKey],
    my_id: &RsaIdentity,
    onionskin: &[u8],
) -> Result<([u8; NTOR_REPLY_LEN], Tor1Keys)> {
    server_handshake_with_key(StaticSecret::random_from_rng(rng), keys, my_id, onionskin)
}

/// Like [`server_handshake`] with an explicit ephemeral `y`; for replaying test vectors.
pub fn server_handshake_with_key(
    y: StaticSecret,
    keys: &[NtorOnionKey],
    my_id: &RsaIdentity,
    onionskin: &[u8],
) -> Result<([u8; NTOR_REPLY_LEN], Tor1Keys)> {
    let skin: &[u8; NTOR_ONIONSKIN_LEN] = exact(onionskin, "ntor onionskin")?;
    // NODEID is public: the client put it there in clear, so an early exit leaks nothing.
    if skin[..20] != my_id.0 {
        return Err(Error::Handshake("ntor NODEID is not ours"));
    }
    let (key, found) =
        select_onion_key(keys, &skin[20..52]).ok_or(Error::Handshake("no onion keys"))?;
    let mut x = [0u8; 32];
    x.copy_from_slice(&skin[52..]);
    let x_pk = PublicKey::from(x);
    let y_pub = PublicKey::from(&y).to_bytes();
    let xy = y.diffie_hellman(&x_pk);
    let xb = key.secret().diffie_hellman(&x_pk);
    let bad = is_zero(&xy) | is_zero(&xb) | !found;
    let (auth, tor1) = derive(
        xy.as_bytes(),
        xb.as_bytes(),
        my_id,
        &key.public_bytes(),
        &x,
        &y_pub,
    )?;
    if bool::from(bad) {
        return Err(Error::Handshake("ntor: unknown KEYID or degenerate key"));
    }
    let mut reply = [0u8; NTOR_REPLY_LEN];
    reply[..32].copy_from_slice(&y_pub);
    reply[32..].copy_from_slice(&auth);
    Ok((reply, tor1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn setup() -> (Vec<NtorOnionKey>, RsaIdentity) {
        let keys = vec![
            NtorOnionKey::generate(&mut OsRng),
            NtorOnionKey::generate(&mut OsRng),
        ];
        (keys, RsaIdentity([7; 20]))
    }

    #[test]
    fn round_trip_with_current_and_previous_key() {
        let (keys, id) = setup();
        for k in &keys {
            let (client, skin) = NtorClient::start(&mut OsRng, &id, &k.public_bytes());
            let (reply, skeys) = server_handshake(&mut OsRng, &keys, &id, &skin).unwrap();
            assert_eq!(client.finish(&reply).unwrap(), skeys);
        }
    }

    #[test]
    fn tampered_reply_fails() {
        let (keys, id) = setup();
        let (client, skin) = NtorClient::start(&mut OsRng, &id, &keys[0].public_bytes());
        let (reply, _) = server_handshake(&mut OsRng, &keys, &id, &skin).unwrap();
        let x = client.x.clone();
        for i in [0, 31, 32, 63] {
            let mut bad = reply;
            bad[i] ^= 0x80;
            let c = NtorClient::start_with_key(x.clone(), &id, &keys[0].public_bytes()).0;
            assert!(
                matches!(c.finish(&bad), Err(Error::Handshake(_))),
                "byte {i}"
            );
        }
        let c = NtorClient::start_with_key(x, &id, &keys[0].public_bytes()).0;
        assert!(matches!(c.finish(&reply[..63]), Err(Error::Truncated(_))));
    }

    #[test]
    fn server_rejects_bad_onionskins() {
        let (keys, id) = setup();
        let (_, skin) = NtorClient::start(&mut OsRng, &id, &keys[0].public_bytes());
        // Wrong NODEID.
        let other = RsaIdentity([8; 20]);
        assert!(server_handshake(&mut OsRng, &keys, &other, &skin).is_err());
        // Unknown KEYID.
        let mut bad = skin;
        bad[20] ^= 1;
        assert!(matches!(
            server_handshake(&mut OsRng, &keys, &id, &bad),
            Err(Error::Handshake(_))
        ));
        // All-zero client key (a low-order point gives a zero shared secret).
        let mut zero = skin;
        zero[52..].fill(0);
        assert!(matches!(
            server_handshake(&mut OsRng, &keys, &id, &zero),
            Err(Error::Handshake(_))
        ));
        // Lengths.
        assert!(server_handshake(&mut OsRng, &keys, &id, &skin[..83]).is_err());
        let mut long = skin.to_vec();
        long.push(0);
        assert!(server_handshake(&mut OsRng, &keys, &id, &long).is_err());
        // No keys at all.
        assert!(server_handshake(&mut OsRng, &[], &id, &skin).is_err());
    }

    #[test]
    fn client_wrong_onion_key_fails() {
        let (keys, id) = setup();
        // The client believes B is keys[1] but the relay only has keys[0].
        let (client, skin) = NtorClient::start(&mut OsRng, &id, &keys[1].public_bytes());
        assert!(server_handshake(&mut OsRng, &keys[..1], &id, &skin).is_err());
        // Even if a relay answered with another key, AUTH would not verify.
        let mut forged = skin;
        forged[20..52].copy_from_slice(&keys[0].public_bytes());
        let (reply, _) = server_handshake(&mut OsRng, &keys, &id, &forged).unwrap();
        assert!(client.finish(&reply).is_err());
    }

    proptest::proptest! {
        #[test]
        fn server_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            // Our NODEID followed by arbitrary bytes: every length and key value is exercised.
            let keys = [NtorOnionKey::from_secret_bytes([3; 32])];
            let id = RsaIdentity([7; 20]);
            let skin = [&id.0[..], &tail].concat();
            let r = server_handshake(&mut OsRng, &keys, &id, &skin);
            proptest::prop_assert!(r.is_err() || (tail.len() == 64 && tail[..32] == keys[0].public_bytes()));
        }

        #[test]
        fn client_never_panics(reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let (c, _) = NtorClient::start(&mut OsRng, &RsaIdentity([7; 20]), &[9; 32]);
            proptest::prop_assert!(c.finish(&reply).is_err());
        }
    }

    #[test]
    fn debug_redacts_secret() {
        let k = NtorOnionKey::from_secret_bytes([0x42; 32]);
        let s = format!("{k:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains(&hex::encode([0x42; 32])));
        assert_eq!(*k.secret_bytes(), [0x42; 32]);
    }
}
