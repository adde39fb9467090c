//! The ntor v3 handshake, CREATE2 HTYPE 3 (proposal 332, instantiated per §A.1–§A.2), and the
//! extension list carried in its encrypted messages (tor-spec "CREATE2 extensions",
//! proposal 324 §10.3 for congestion control).
//!
//! ```text
//! ENCAP(s)         = u64be(len(s)) | s
//! H(s, t)          = SHA3-256(ENCAP(t) | s)
//! MAC(k, m, t)     = SHA3-256(ENCAP(t) | ENCAP(k) | m)
//! KDF(s, t)        = SHAKE-256(ENCAP(t) | s)
//! ENC(k, m)        = AES-256-CTR(k, IV = 0, m)
//!
//! client onionskin = ID[32] | B[32] | X[32] | ENC(ENC_K1, CM) | MAC[32]
//!   (ENC_K1, MAC_K1) = KDF(Bx | ID | X | B | PROTOID | ENCAP(VER), t_msgkdf)
//!   MAC            = MAC(MAC_K1, ID | B | X | ENC(CM), t_msgmac)
//! server reply     = Y[32] | AUTH[32] | ENC(ENC_KEY, SM)
//!   secret_input   = Xy | Xb | ID | B | X | Y | PROTOID | ENCAP(VER)
//!   key_seed       = H(secret_input, t_key_seed);  verify = H(secret_input, t_verify)
//!   ENC_KEY | KEYSTREAM = KDF(key_seed, t_final)
//!   AUTH           = H(verify | ID | B | Y | X | MAC | ENCAP(ENC(SM)) | PROTOID | "Server", t_auth)
//! ```
//!
//! `ID` is the relay's Ed25519 identity; for circuit extension `VER` is
//! [`NTOR3_CIRC_VERIFICATION`] (`"circuit extend"`, C tor `onion_crypto.c`). The first 32 bytes
//! of the final KDF are the server-message key; the [`Tor1Keys`] (`Df|Db|Kf|Kb`, then KH) come
//! after them (INTEROP Trap 9).
//!
//! The relay learns the client's message before it chooses its own: [`server_handshake`]
//! returns the decrypted message and a [`NtorV3PendingReply`], whose `reply` takes the server
//! message. For circuits, the server message is an encoded extension list and is therefore at
//! least `00`; `reply` refuses an empty one.
//!
//! Invariants: identity, onion-key lookup (constant time, stand-in key on a miss), MAC/AUTH
//! comparisons and zero-DH checks are folded into one verdict before anything is returned, and
//! the client message is released only when that verdict is good.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand_core::{CryptoRng, RngCore};
use sha3::{Digest, Sha3_256};
use subtle::{Choice, ConstantTimeEq};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::{ShakeKdf, encap_len};
use super::ntor::{NtorOnionKey, is_zero, select_onion_key};
use crate::crypto::Tor1Keys;
use crate::{Ed25519Identity, Error, Result};

/// ntor v3's PROTOID (prop 332 §A.2).
pub const NTOR3_PROTOID: &[u8] = b"ntor3-curve25519-sha3_256-1";
/// The verification string C tor and arti use for circuit extension handshakes.
pub const NTOR3_CIRC_VERIFICATION: &[u8] = b"circuit extend";

const T_MSGKDF: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_phase1";
const T_MSGMAC: &[u8] = b"ntor3-curve25519-sha3_256-1:msg_mac";
const T_KEY_SEED: &[u8] = b"ntor3-curve25519-sha3_256-1:key_seed";
const T_VERIFY: &[u8] = b"ntor3-curve25519-sha3_256-1:verify";
const T_FINAL: &[u8] = b"ntor3-curve25519-sha3_256-1:kdf_final";
const T_AUTH: &[u8] = b"ntor3-curve25519-sha3_256-1:auth_final";

/// Tweak for the final KDF (`t_final`), exposed so tests can check the raw key stream.
pub const NTOR3_T_FINAL: &[u8] = T_FINAL;

/// Fixed part of the client onionskin: `ID | B | X | MAC`.
pub const NTOR3_ONIONSKIN_OVERHEAD: usize = 32 * 4;
/// Fixed part of the server reply: `Y | AUTH`.
pub const NTOR3_REPLY_OVERHEAD: usize = 32 * 2;

/// A SHA3-256 hash whose input starts with `ENCAP(tweak)`.
fn tweaked_sha3(tweak: &[u8]) -> Sha3_256 {
    let mut d = Sha3_256::new();
    d.update(encap_len(tweak.len()));
    d.update(tweak);
    d
}

/// `ENC(k, m)` = `DEC(k, m)`: AES-256-CTR with a zero IV, in place.
fn aes256_ctr(key: &[u8; 32], buf: &mut [u8]) {
    let mut c = ctr::Ctr128BE::<Aes256>::new(key.into(), &[0u8; 16].into());
    c.apply_keystream(buf);
}

/// Phase-1 keys `(ENC_K1, MAC_K1)` from `Bx` (= `Xb`).
fn phase1_keys(
    bx: &[u8; 32],
    id: &Ed25519Identity,
    x: &[u8; 32],
    b: &[u8; 32],
    ver: &[u8],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut kdf = ShakeKdf::new(
        T_MSGKDF,
        &[bx, &id.0, x, b, NTOR3_PROTOID, &encap_len(ver.len()), ver],
    );
    let mut enc = Zeroizing::new([0u8; 32]);
    let mut mac = Zeroizing::new([0u8; 32]);
    kdf.squeeze(&mut enc[..]);
    kdf.squeeze(&mut mac[..]);
    (enc, mac)
}

/// `MAC(mac_key, ID | B | X | msg, t_msgmac)`.
fn msg_mac(
    mac_key: &[u8; 32],
    id: &Ed25519Identity,
    b: &[u8; 32],
    x: &[u8; 32],
    msg: &[u8],
) -> [u8; 32] {
    let mut d = tweaked_sha3(T_MSGMAC);
    d.update(encap_len(mac_key.len()));
    d.update(mac_key);
    d.update(id.0);
    d.update(b);
    d.update(x);
    d.update(msg);
    d.finalize().into()
}

/// What both DH outputs yield: the server-message key, the hop's keys, and `verify` (input to
/// AUTH, which also needs the encrypted server message).
struct Final {
    enc_key: Zeroizing<[u8; 32]>,
    keys: Tor1Keys,
    verify: Zeroizing<[u8; 32]>,
}

/// Public values of one handshake, shared by both sides' final computation.
struct Transcript<'a> {
    id: &'a Ed25519Identity,
    b: &'a [u8; 32],
    x: &'a [u8; 32],
    y: &'a [u8; 32],
    mac: &'a [u8; 32],
    ver: &'a [u8],
}

impl Transcript<'_> {
    fn finalize(&self, xy: &[u8; 32], xb: &[u8; 32]) -> Result<Final> {
        let ver_len = encap_len(self.ver.len());
        let parts: [&[u8]; 9] = [
            xy,
            xb,
            &self.id.0,
            self.b,
            self.x,
            self.y,
            NTOR3_PROTOID,
            &ver_len,
            self.ver,
        ];
        let mut ks = tweaked_sha3(T_KEY_SEED);
        let mut v = tweaked_sha3(T_VERIFY);
        for p in parts {
            ks.update(p);
            v.update(p);
        }
        let key_seed = Zeroizing::new(<[u8; 32]>::from(ks.finalize()));
        let verify = Zeroizing::new(<[u8; 32]>::from(v.finalize()));
        let mut kdf = ShakeKdf::new(T_FINAL, &[&key_seed[..]]);
        let mut enc_key = Zeroizing::new([0u8; 32]);
        kdf.squeeze(&mut enc_key[..]);
        let mut raw = Zeroizing::new([0u8; Tor1Keys::LEN]);
        kdf.squeeze(&mut raw[..]);
        let keys = Tor1Keys::from_kdf_output(&raw[..]).ok_or(Error::Handshake("key length"))?;
        Ok(Final {
            enc_key,
            keys,
            verify,
        })
    }

    fn auth(&self, verify: &[u8; 32], encrypted_sm: &[u8]) -> [u8; 32] {
        let mut d = tweaked_sha3(T_AUTH);
        d.update(verify);
        d.update(self.id.0);
        d.update(self.b);
        d.update(self.y);
        d.update(self.x);
        d.update(self.mac);
        d.update(encap_len(encrypted_sm.len()));
        d.update(encrypted_sm);
        d.update(NTOR3_PROTOID);
        d.update(b"Server");
        d.finalize().into()
    }
}

/// The client's state between sending the onionskin and receiving the reply.
pub struct NtorV3Client {
    x: StaticSecret,
    x_pub: [u8; 32],
    id: Ed25519Identity,
    b: [u8; 32],
    bx: Zeroizing<[u8; 32]>,
    mac: [u8; 32],
    ver: Vec<u8>,
}

impl NtorV3Client {
    /// Starts a circuit handshake with the relay whose Ed25519 identity is `id` and whose onion
    /// key is `onion_key`, carrying `client_msg` (an encoded extension list, see
    /// [`encode_extensions`]). Returns the state and the onionskin.
    ///
    /// Errors with [`Error::Handshake`] if `onion_key` is degenerate.
    pub fn start(
        rng: &mut (impl RngCore + CryptoRng),
        id: &Ed25519Identity,
        onion_key: &[u8; 32],
        client_msg: &[u8],
    ) -> Result<(Self, Vec<u8>)> {
        Self::start_with_key(
            StaticSecret::random_from_rng(rng),
            id,
            onion_key,
            client_msg,
            NTOR3_CIRC_VERIFICATION,
        )
    }

    /// Like [`start`](Self::start) with an explicit ephemeral `x` and verification string; for
    /// replaying test vectors.
    pub fn start_with_key(
        x: StaticSecret,
        id: &Ed25519Identity,
        onion_key: &[u8; 32],
        client_msg: &[u8],
        verification: &[u8],
    ) -> Result<(Self, Vec<u8>)> {
        let x_pub = PublicKey::from(&x).to_bytes();
        let bx_ss = x.diffie_hellman(&PublicKey::from(*onion_key));
        if bool::from(is_zero(&bx_ss)) {
            return Err(Error::Handshake("ntor v3: degenerate onion key"));
        }
        let bx = Zeroizing::new(bx_ss.to_bytes());
        let (enc_k1, mac_k1) = phase1_keys(&bx, id, &x_pub, onion_key, verification);

        let mut skin = Vec::with_capacity(NTOR3_ONIONSKIN_OVERHEAD + client_msg.len());
        skin.extend_from_slice(&id.0);
        skin.extend_from_slice(onion_key);
        skin.extend_from_slice(&x_pub);
        let msg_start = skin.len();
        skin.extend_from_slice(client_msg);
        aes256_ctr(&enc_k1, &mut skin[msg_start..]);
        let mac = msg_mac(&mac_k1, id, onion_key, &x_pub, &skin[msg_start..]);
        skin.extend_from_slice(&mac);

        let st = NtorV3Client {
            x,
            x_pub,
            id: *id,
            b: *onion_key,
            bx,
            mac,
            ver: verification.to_vec(),
        };
        Ok((st, skin))
    }

    /// Checks the relay's reply; returns the decrypted server message and the hop's keys.
    ///
    /// Errors: [`Error::Truncated`] if shorter than `Y | AUTH`; [`Error::Handshake`] for a wrong
    /// AUTH or a degenerate `Y`. The server message is returned raw: for circuits, parse it
    /// with [`parse_extensions`] (an empty one is malformed).
    pub fn finish(self, reply: &[u8]) -> Result<(Vec<u8>, Tor1Keys)> {
        if reply.len() < NTOR3_REPLY_OVERHEAD {
            return Err(Error::Truncated("ntor v3 reply"));
        }
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let auth = &reply[32..64];
        let encrypted_sm = &reply[64..];

        let yx = self.x.diffie_hellman(&PublicKey::from(y));
        let bad = is_zero(&yx);
        let t = Transcript {
            id: &self.id,
            b: &self.b,
            x: &self.x_pub,
            y: &y,
            mac: &self.mac,
            ver: &self.ver,
        };
        let fin = t.finalize(yx.as_bytes(), &self.bx)?;
        let expected = t.auth(&fin.verify, encrypted_sm);
        let good = expected.ct_eq(auth) & !bad;
        if !bool::from(good) {
            return Err(Error::Handshake("ntor v3 AUTH mismatch"));
        }
        let mut sm = encrypted_sm.to_vec();
        aes256_ctr(&fin.enc_key, &mut sm);
        Ok((sm, fin.keys))
    }
}

impl std::fmt::Debug for NtorV3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorV3Client")
            .field("id", &self.id)
            .field("x", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The relay's state after accepting a client onionskin, waiting for its server message.
pub struct NtorV3PendingReply {
    my_id: Ed25519Identity,
    b: [u8; 32],
    x: [u8; 32],
    xb: Zeroizing<[u8; 32]>,
    mac: [u8; 32],
    ver: Vec<u8>,
}

/// Relay side, first half: checks a client onionskin against our identity and onion keys
/// (current and previous; KEYID selects one) and decrypts the client's message.
///
/// Returns the client message (for circuits, an extension list: see [`parse_extensions`]) and
/// the pending reply, to be completed with [`NtorV3PendingReply::reply`].
///
/// Errors: [`Error::Truncated`] if shorter than 128 bytes; [`Error::Handshake`] for a wrong
/// NODEID, unknown KEYID, degenerate client key, bad MAC, or empty `keys`.
pub fn server_handshake(
    keys: &[NtorOnionKey],
    my_id: &Ed25519Identity,
    onionskin: &[u8],
) -> Result<(Vec<u8>, NtorV3PendingReply)> {
    server_handshake_with_verification(keys, my_id, onionskin, NTOR3_CIRC_VERIFICATION)
}

/// Like [`server_handshake`] with an explicit verification string; for replaying test vectors.
pub fn server_handshake_with_verification(
    keys: &[NtorOnionKey],
    my_id: &Ed25519Identity,
    onionskin: &[u8],
    verification: &[u8],
) -> Result<(Vec<u8>, NtorV3PendingReply)> {
    if onionskin.len() < NTOR3_ONIONSKIN_OVERHEAD {
        return Err(Error::Truncated("ntor v3 onionskin"));
    }
    let wanted_id = &onionskin[..32];
    let keyid = &onionskin[32..64];
    let mut x = [0u8; 32];
    x.copy_from_slice(&onionskin[64..96]);
    let mac_at = onionskin.len() - 32;
    let encrypted_cm = &onionskin[96..mac_at];
    let mac = &onionskin[mac_at..];

    let (key, found) = select_onion_key(keys, keyid).ok_or(Error::Handshake("no onion keys"))?;
    let b = key.public_bytes();
    let xb_ss = key.secret().diffie_hellman(&PublicKey::from(x));
    let mut problems: Choice = !found | !wanted_id.ct_eq(&my_id.0) | is_zero(&xb_ss);
    let xb = Zeroizing::new(xb_ss.to_bytes());
    let (enc_k1, mac_k1) = phase1_keys(&xb, my_id, &x, &b, verification);
    let expected = msg_mac(&mac_k1, my_id, &b, &x, encrypted_cm);
    problems |= !expected.ct_eq(mac);
    if bool::from(problems) {
        return Err(Error::Handshake("ntor v3 onionskin rejected"));
    }
    let mut cm = encrypted_cm.to_vec();
    aes256_ctr(&enc_k1, &mut cm);
    let mut mac_arr = [0u8; 32];
    mac_arr.copy_from_slice(mac);
    let pending = NtorV3PendingReply {
        my_id: *my_id,
        b,
        x,
        xb,
        mac: mac_arr,
        ver: verification.to_vec(),
    };
    Ok((cm, pending))
}

impl NtorV3PendingReply {
    /// Completes the handshake with `server_msg` (an encoded extension list, at least `00`).
    /// Returns the reply bytes (CREATED2 HDATA) and the hop's keys.
    ///
    /// Errors with [`Error::InvalidValue`] for an empty `server_msg` (C tor clients cannot parse
    /// it), [`Error::Handshake`] if the client's key is degenerate.
    pub fn reply(
        self,
        rng: &mut (impl RngCore + CryptoRng),
        server_msg: &[u8],
    ) -> Result<(Vec<u8>, Tor1Keys)> {
        self.reply_with_key(StaticSecret::random_from_rng(rng), server_msg)
    }

    /// Like [`reply`](Self::reply) with an explicit ephemeral `y`; for replaying test vectors.
    pub fn reply_with_key(self, y: StaticSecret, server_msg: &[u8]) -> Result<(Vec<u8>, Tor1Keys)> {
        if server_msg.is_empty() {
            return Err(Error::InvalidValue(
                "ntor v3 server message must not be empty",
            ));
        }
        let y_pub = PublicKey::from(&y).to_bytes();
        let xy = y.diffie_hellman(&PublicKey::from(self.x));
        if bool::from(is_zero(&xy)) {
            return Err(Error::Handshake("ntor v3: degenerate client key"));
        }
        let t = Transcript {
            id: &self.my_id,
            b: &self.b,
            x: &self.x,
            y: &y_pub,
            mac: &self.mac,
            ver: &self.ver,
        };
        let fin = t.finalize(xy.as_bytes(), &self.xb)?;
        let mut reply = Vec::with_capacity(NTOR3_REPLY_OVERHEAD + server_msg.len());
        reply.extend_from_slice(&y_pub);
        reply.extend_from_slice(&[0u8; 32]);
        reply.extend_from_slice(server_msg);
        aes256_ctr(&fin.enc_key, &mut reply[64..]);
        let auth = t.auth(&fin.verify, &reply[64..]);
        reply[32..64].copy_from_slice(&auth);
        Ok((reply, fin.keys))
    }
}

impl std::fmt::Debug for NtorV3PendingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtorV3PendingReply")
            .field("my_id", &self.my_id)
            .field("xb", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Extension type: congestion control request (client → relay, empty body; prop 324 §10.3).
pub const EXT_CC_REQUEST: u8 = 1;
/// Extension type: congestion control response (relay → client, body `sendme_inc u8`).
pub const EXT_CC_RESPONSE: u8 = 2;
/// Extension type: subprotocol request (client → relay, body `[protocol_id u8, version u8]*`).
pub const EXT_SUBPROTO_REQUEST: u8 = 3;

/// One extension in an ntor v3 client or server message (`type u8 | len u8 | body`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CircExtension {
    /// Type 1: the client asks for congestion control.
    CcRequest,
    /// Type 2: the relay accepts congestion control with this SENDME increment.
    CcResponse {
        /// The relay's `cc_sendme_inc`.
        sendme_inc: u8,
    },
    /// Type 3: the client requests these subprotocol versions (raw body: sorted
    /// `[protocol_id, version]` pairs). A relay that does not support one must fail.
    SubprotoRequest(Vec<u8>),
    /// Any other type; ignored by the protocol but kept so re-encoding is faithful.
    Unrecognized {
        /// The type byte.
        ty: u8,
        /// The body.
        body: Vec<u8>,
    },
}

impl CircExtension {
    /// The type byte of this extension.
    pub fn ty(&self) -> u8 {
        match self {
            CircExtension::CcRequest => EXT_CC_REQUEST,
            CircExtension::CcResponse { .. } => EXT_CC_RESPONSE,
            CircExtension::SubprotoRequest(_) => EXT_SUBPROTO_REQUEST,
            CircExtension::Unrecognized { ty, .. } => *ty,
        }
    }
}

/// Encodes `N u8 | N × [type u8 | len u8 | body]`. An empty list encodes as `00`.
///
/// Extensions are written in the given order; prop 332 §A.2 says they SHOULD be in ascending
/// type order (as C tor and arti send them), which is the caller's job.
///
/// Errors with [`Error::TooLarge`] for more than 255 extensions or a body over 255 bytes, and
/// [`Error::InvalidValue`] for an `Unrecognized` whose type is one of the known ones.
pub fn encode_extensions(exts: &[CircExtension]) -> Result<Vec<u8>> {
    let n = u8::try_from(exts.len()).map_err(|_| Error::TooLarge("extension count"))?;
    let mut out = vec![n];
    for e in exts {
        let sendme;
        let body: &[u8] = match e {
            CircExtension::CcRequest => &[],
            CircExtension::CcResponse { sendme_inc } => {
                sendme = [*sendme_inc];
                &sendme
            }
            CircExtension::SubprotoRequest(b) => b,
            CircExtension::Unrecognized { ty, body } => {
                if (EXT_CC_REQUEST..=EXT_SUBPROTO_REQUEST).contains(ty) {
                    return Err(Error::InvalidValue(
                        "Unrecognized extension with a known type",
                    ));
                }
                body
            }
        };
        let len = u8::try_from(body.len()).map_err(|_| Error::TooLarge("extension body"))?;
        out.push(e.ty());
        out.push(len);
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// Parses an extension list, in order and with duplicates kept (the protocol uses the first
/// occurrence of a type; see [`first_of_type`]).
///
/// Errors: [`Error::Truncated`] for an empty input or a list that ends early;
/// [`Error::TrailingBytes`] for bytes after the last extension; [`Error::InvalidValue`] for a
/// known type with a malformed body (CC request with a body, CC response not 1 byte).
pub fn parse_extensions(mut b: &[u8]) -> Result<Vec<CircExtension>> {
    let (&n, rest) = b.split_first().ok_or(Error::Truncated("extension count"))?;
    b = rest;
    let mut out = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let [ty, len, rest @ ..] = b else {
            return Err(Error::Truncated("extension header"));
        };
        let len = usize::from(*len);
        if rest.len() < len {
            return Err(Error::Truncated("extension body"));
        }
        let (body, rest) = rest.split_at(len);
        b = rest;
        out.push(match *ty {
            EXT_CC_REQUEST if body.is_empty() => CircExtension::CcRequest,
            EXT_CC_REQUEST => return Err(Error::InvalidValue("CC request with a body")),
            EXT_CC_RESPONSE => match body {
                [sendme_inc] => CircExtension::CcResponse {
                    sendme_inc: *sendme_inc,
                },
                _ => return Err(Error::InvalidValue("CC response body length")),
            },
            EXT_SUBPROTO_REQUEST => CircExtension::SubprotoRequest(body.to_vec()),
            ty => CircExtension::Unrecognized {
                ty,
                body: body.to_vec(),
            },
        });
    }
    if !b.is_empty() {
        return Err(Error::TrailingBytes("extension list"));
    }
    Ok(out)
}

/// The first extension of type `ty`, which is the one that counts (prop 332 §A.2).
pub fn first_of_type(exts: &[CircExtension], ty: u8) -> Option<&CircExtension> {
    exts.iter().find(|e| e.ty() == ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::OsRng;

    fn setup() -> (Vec<NtorOnionKey>, Ed25519Identity) {
        let keys = vec![
            NtorOnionKey::generate(&mut OsRng),
            NtorOnionKey::generate(&mut OsRng),
        ];
        (keys, Ed25519Identity([9; 32]))
    }

    #[test]
    fn round_trip_carries_messages() {
        let (keys, id) = setup();
        for k in &keys {
            let cm = encode_extensions(&[CircExtension::CcRequest]).unwrap();
            let (client, skin) =
                NtorV3Client::start(&mut OsRng, &id, &k.public_bytes(), &cm).unwrap();
            assert_eq!(skin.len(), NTOR3_ONIONSKIN_OVERHEAD + cm.len());
            let (got_cm, pending) = server_handshake(&keys, &id, &skin).unwrap();
            assert_eq!(
                parse_extensions(&got_cm).unwrap(),
                vec![CircExtension::CcRequest]
            );
            let sm = encode_extensions(&[CircExtension::CcResponse { sendme_inc: 31 }]).unwrap();
            let (reply, skeys) = pending.reply(&mut OsRng, &sm).unwrap();
            let (got_sm, ckeys) = client.finish(&reply).unwrap();
            assert_eq!(got_sm, sm);
            assert_eq!(ckeys, skeys);
        }
    }

    #[test]
    fn empty_server_message_refused() {
        let (keys, id) = setup();
        let (_, skin) =
            NtorV3Client::start(&mut OsRng, &id, &keys[0].public_bytes(), &[0]).unwrap();
        let (_, pending) = server_handshake(&keys, &id, &skin).unwrap();
        assert!(matches!(
            pending.reply(&mut OsRng, &[]),
            Err(Error::InvalidValue(_))
        ));
        assert_eq!(encode_extensions(&[]).unwrap(), vec![0]);
    }

    #[test]
    fn server_rejects_tampering() {
        let (keys, id) = setup();
        let (_, skin) =
            NtorV3Client::start(&mut OsRng, &id, &keys[0].public_bytes(), &[1, 1, 0]).unwrap();
        // Every byte matters: ID, KEYID, X, encrypted message, MAC.
        for i in [0, 31, 32, 63, 64, 95, 96, 98, skin.len() - 1] {
            let mut bad = skin.clone();
            bad[i] ^= 4;
            assert!(
                matches!(server_handshake(&keys, &id, &bad), Err(Error::Handshake(_))),
                "byte {i}"
            );
        }
        // Wrong verification string.
        assert!(server_handshake_with_verification(&keys, &id, &skin, b"other").is_err());
        // Wrong identity.
        assert!(server_handshake(&keys, &Ed25519Identity([1; 32]), &skin).is_err());
        // Truncated.
        assert!(matches!(
            server_handshake(&keys, &id, &skin[..127]),
            Err(Error::Truncated(_))
        ));
        assert!(server_handshake(&[], &id, &skin).is_err());
    }

    #[test]
    fn client_rejects_tampering() {
        let (keys, id) = setup();
        let x = StaticSecret::random_from_rng(OsRng);
        let b = keys[1].public_bytes();
        let start = || {
            NtorV3Client::start_with_key(x.clone(), &id, &b, &[0], NTOR3_CIRC_VERIFICATION).unwrap()
        };
        let (_, skin) = start();
        let (_, pending) = server_handshake(&keys, &id, &skin).unwrap();
        let (reply, _) = pending.reply(&mut OsRng, &[0]).unwrap();
        for i in 0..reply.len() {
            let mut bad = reply.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(start().0.finish(&bad), Err(Error::Handshake(_))),
                "byte {i}"
            );
        }
        assert!(matches!(
            start().0.finish(&reply[..63]),
            Err(Error::Truncated(_))
        ));
        assert!(start().0.finish(&reply).is_ok());
    }

    #[test]
    fn degenerate_keys_rejected() {
        let (keys, id) = setup();
        assert!(NtorV3Client::start(&mut OsRng, &id, &[0u8; 32], &[0]).is_err());
        let (_, mut skin) =
            NtorV3Client::start(&mut OsRng, &id, &keys[0].public_bytes(), &[0]).unwrap();
        skin[64..96].fill(0);
        assert!(server_handshake(&keys, &id, &skin).is_err());
    }

    #[test]
    fn extension_errors() {
        assert_eq!(
            parse_extensions(&[]),
            Err(Error::Truncated("extension count"))
        );
        assert!(matches!(parse_extensions(&[1]), Err(Error::Truncated(_))));
        assert!(matches!(
            parse_extensions(&[1, 5]),
            Err(Error::Truncated(_))
        ));
        assert!(matches!(
            parse_extensions(&[1, 5, 2, 0]),
            Err(Error::Truncated(_))
        ));
        assert!(matches!(
            parse_extensions(&[0, 0]),
            Err(Error::TrailingBytes(_))
        ));
        assert!(matches!(
            parse_extensions(&[1, 1, 1, 0]),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            parse_extensions(&[1, 2, 0]),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            parse_extensions(&[1, 2, 2, 1, 1]),
            Err(Error::InvalidValue(_))
        ));
        let big = vec![CircExtension::CcRequest; 256];
        assert!(matches!(encode_extensions(&big), Err(Error::TooLarge(_))));
        let body = CircExtension::SubprotoRequest(vec![0; 256]);
        assert!(matches!(
            encode_extensions(&[body]),
            Err(Error::TooLarge(_))
        ));
        let fake = CircExtension::Unrecognized {
            ty: 2,
            body: vec![],
        };
        assert!(encode_extensions(&[fake]).is_err());
    }

    #[test]
    fn extension_known_bytes() {
        // C tor's CC request message and a typical CC response (sendme_inc = 31).
        assert_eq!(
            encode_extensions(&[CircExtension::CcRequest]).unwrap(),
            [1, 1, 0]
        );
        let exts = parse_extensions(&[2, 2, 1, 31, 9, 2, 0xab, 0xcd]).unwrap();
        assert_eq!(
            exts,
            vec![
                CircExtension::CcResponse { sendme_inc: 31 },
                CircExtension::Unrecognized {
                    ty: 9,
                    body: vec![0xab, 0xcd]
                }
            ]
        );
        let dup = parse_extensions(&[2, 2, 1, 31, 2, 1, 30]).unwrap();
        assert_eq!(
            first_of_type(&dup, EXT_CC_RESPONSE),
            Some(&CircExtension::CcResponse { sendme_inc: 31 })
        );
    }

    fn ext_strategy() -> impl Strategy<Value = CircExtension> {
        prop_oneof![
            Just(CircExtension::CcRequest),
            any::<u8>().prop_map(|sendme_inc| CircExtension::CcResponse { sendme_inc }),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(CircExtension::SubprotoRequest),
            (4u8.., proptest::collection::vec(any::<u8>(), 0..255))
                .prop_map(|(ty, body)| CircExtension::Unrecognized { ty, body }),
            (Just(0u8), proptest::collection::vec(any::<u8>(), 0..10))
                .prop_map(|(ty, body)| CircExtension::Unrecognized { ty, body }),
        ]
    }

    proptest! {
        #[test]
        fn extensions_round_trip(exts in proptest::collection::vec(ext_strategy(), 0..12)) {
            let enc = encode_extensions(&exts).unwrap();
            prop_assert_eq!(parse_extensions(&enc).unwrap(), exts);
        }

        #[test]
        fn extensions_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(exts) = parse_extensions(&b) {
                // Whatever parses re-encodes to the same bytes (the format is canonical).
                prop_assert_eq!(encode_extensions(&exts).unwrap(), b);
            }
        }

        #[test]
        fn server_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = vec![NtorOnionKey::from_secret_bytes([3; 32])];
            prop_assert!(server_handshake(&keys, &Ed25519Identity([0; 32]), &b).is_err());
        }

        #[test]
        fn client_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let onion = NtorOnionKey::from_secret_bytes([3; 32]).public_bytes();
            let (c, _) = NtorV3Client::start_with_key(
                StaticSecret::from([5; 32]), &Ed25519Identity([0; 32]), &onion, &[0],
                NTOR3_CIRC_VERIFICATION).unwrap();
            prop_assert!(c.finish(&b).is_err());
        }
    }
}
