//! CREATE_FAST / CREATED_FAST (tor-spec §5.1.5) with KDF-TOR (tor-spec §5.2.1).
//!
//! The client sends `X` (20 random bytes); the relay answers `Y | KH` (20 + 20 bytes), where
//! `KDF-TOR(X | Y)` yields, in this order, `KH[20] | Df[20] | Db[20] | Kf[16] | Kb[16]`
//! (INTEROP Trap 8: KH comes *first* here, unlike ntor). The client accepts the reply only if
//! `KH` matches, compared in constant time.
//!
//! CREATE_FAST gives no authentication of the relay beyond what the TLS link already gives;
//! it is only for the first hop, and never inside EXTEND2 (INTEROP §B.1).

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::exact;
use super::kdf::kdf_tor;
use crate::crypto::Tor1Keys;
use crate::{Error, Result};

/// Length of a CREATE_FAST handshake body (`X`).
pub const CREATE_FAST_LEN: usize = 20;
/// Length of a CREATED_FAST handshake body (`Y | KH`).
pub const CREATED_FAST_LEN: usize = 40;

/// KDF-TOR output consumed by CREATE_FAST: KH then the tor1 keys.
const KDF_LEN: usize = 20 + Tor1Keys::LEN;

/// Derives `(KH, keys)` from `X | Y`.
fn derive(x: &[u8; 20], y: &[u8; 20]) -> Result<([u8; 20], Tor1Keys)> {
    let mut k0 = Zeroizing::new([0u8; 40]);
    k0[..20].copy_from_slice(x);
    k0[20..].copy_from_slice(y);
    let mut out = Zeroizing::new([0u8; KDF_LEN]);
    kdf_tor(&k0[..], &mut out[..])?;
    let mut kh = [0u8; 20];
    kh.copy_from_slice(&out[..20]);
    let keys = Tor1Keys::from_kdf_output(&out[20..]).ok_or(Error::Handshake("key length"))?;
    Ok((kh, keys))
}

/// The client's state between sending CREATE_FAST and receiving CREATED_FAST: the secret `X`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CreateFastClient {
    x: [u8; CREATE_FAST_LEN],
}

impl CreateFastClient {
    /// Starts a handshake: returns the state and the CREATE_FAST body `X`.
    pub fn start(rng: &mut (impl RngCore + CryptoRng)) -> (Self, [u8; CREATE_FAST_LEN]) {
        let mut x = [0u8; CREATE_FAST_LEN];
        rng.fill_bytes(&mut x);
        let out = Self::start_with_x(x);
        x.zeroize();
        out
    }

    /// Like [`start`](Self::start) with an explicit `X`; for replaying test vectors only.
    pub fn start_with_x(x: [u8; CREATE_FAST_LEN]) -> (Self, [u8; CREATE_FAST_LEN]) {
        (CreateFastClient { x }, x)
    }

    /// Checks the CREATED_FAST body `Y | KH` and returns the hop's keys.
    ///
    /// Errors: [`Error::Truncated`] / [`Error::TrailingBytes`] unless exactly 40 bytes; [`Error::Handshake`] if KH is wrong.
    pub fn finish(self, reply: &[u8]) -> Result<Tor1Keys> {
        let reply: &[u8; CREATED_FAST_LEN] = exact(reply, "CREATED_FAST body")?;
        let mut y = [0u8; 20];
        y.copy_from_slice(&reply[..20]);
        let (kh, keys) = derive(&self.x, &y)?;
        if bool::from(kh.ct_eq(&reply[20..])) {
            Ok(keys)
        } else {
            Err(Error::Handshake("CREATED_FAST KH mismatch"))
        }
    }
}

impl std::fmt::Debug for CreateFastClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateFastClient([redacted])")
    }
}

/// Relay side: answers a CREATE_FAST body `X` with `Y | KH` and the hop's keys.
///
/// Errors with [`Error::Truncated`] / [`Error::TrailingBytes`] unless `create_fast` is exactly
/// 20 bytes.
pub fn server_handshake(
    rng: &mut (impl RngCore + CryptoRng),
    create_fast: &[u8],
) -> Result<([u8; CREATED_FAST_LEN], Tor1Keys)> {
    let mut y = Zeroizing::new([0u8; 20]);
    rng.fill_bytes(&mut y[..]);
    server_handshake_with_y(*y, create_fast)
}

/// Like [`server_handshake`] with an explicit `Y`; for replaying test vectors only.
pub fn server_handshake_with_y(
    y: [u8; 20],
    create_fast: &[u8],
) -> Result<([u8; CREATED_FAST_LEN], Tor1Keys)> {
    let x: &[u8; CREATE_FAST_LEN] = exact(create_fast, "CREATE_FAST body")?;
    let (kh, keys) = derive(x, &y)?;
    let mut reply = [0u8; CREATED_FAST_LEN];
    reply[..20].copy_from_slice(&y);
    reply[20..].copy_from_slice(&kh);
    Ok((reply, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn round_trip() {
        let (client, x) = CreateFastClient::start(&mut OsRng);
        let (reply, skeys) = server_handshake(&mut OsRng, &x).unwrap();
        let ckeys = client.finish(&reply).unwrap();
        assert_eq!(ckeys, skeys);
    }

    #[test]
    fn tampered_reply_fails() {
        let (client, x) = CreateFastClient::start(&mut OsRng);
        let (reply, _) = server_handshake(&mut OsRng, &x).unwrap();
        for i in [0, 19, 20, 39] {
            let mut bad = reply;
            bad[i] ^= 1;
            assert_eq!(
                client.clone().finish(&bad),
                Err(Error::Handshake("CREATED_FAST KH mismatch"))
            );
        }
        assert!(client.clone().finish(&reply[..39]).is_err());
        let mut long = reply.to_vec();
        long.push(0);
        assert!(client.finish(&long).is_err());
    }

    #[test]
    fn server_rejects_wrong_length() {
        assert!(server_handshake(&mut OsRng, &[0u8; 19]).is_err());
        assert!(server_handshake(&mut OsRng, &[0u8; 21]).is_err());
        assert!(server_handshake(&mut OsRng, &[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let s = server_handshake(&mut OsRng, &b);
            proptest::prop_assert_eq!(s.is_ok(), b.len() == CREATE_FAST_LEN);
            let (c, _) = CreateFastClient::start(&mut OsRng);
            // A random reply has a 2^-160 chance of a valid KH.
            proptest::prop_assert!(c.finish(&b).is_err());
        }
    }

    #[test]
    fn kh_comes_first() {
        // KDF-TOR(X|Y) = KH | Df | Db | Kf | Kb.
        let x = [1u8; 20];
        let y = [2u8; 20];
        let (reply, keys) = server_handshake_with_y(y, &x).unwrap();
        let mut k0 = [0u8; 40];
        k0[..20].copy_from_slice(&x);
        k0[20..].copy_from_slice(&y);
        let mut raw = [0u8; 92];
        kdf_tor(&k0, &mut raw).unwrap();
        assert_eq!(&reply[20..], &raw[..20]);
        assert_eq!(&keys.df, &raw[20..40]);
        assert_eq!(&keys.kb, &raw[76..92]);
        assert_eq!(
            format!("{:?}", CreateFastClient::start_with_x(x).0),
            "CreateFastClient([redacted])"
        );
    }
}
