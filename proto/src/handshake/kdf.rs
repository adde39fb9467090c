//! Key derivation functions of the circuit handshakes.
//!
//! - [`kdf_tor`]: KDF-TOR, tor-spec §5.2.1 (CREATE_FAST): `K = H(K0|[00]) | H(K0|[01]) | …`
//!   with H = SHA-1.
//! - [`kdf_rfc5869`]: KDF-RFC5869, tor-spec §5.2.2: HKDF-SHA256 (RFC 5869) used by ntor with
//!   salt [`NTOR_T_KEY`] and info [`NTOR_M_EXPAND`] (see [`ntor_kdf`]).
//! - [`ShakeKdf`]: the ntor v3 KDF of proposal 332 §A.1: `KDF(s, t) = SHAKE-256(ENCAP(t) | s)`,
//!   where `ENCAP(s) = u64be(len(s)) | s` ([`encap_len`]).
//!
//! Invariants: output lengths are bounded by what each construction can produce (KDF-TOR:
//! 256 SHA-1 blocks; HKDF: 255 SHA-256 blocks); asking for more is an error, never a panic
//! and never a silently short output.

use digest::{ExtendableOutput, Update, XofReader};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::{Error, Result};

/// ntor's PROTOID (tor-spec §5.1.4).
pub const NTOR_PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
/// ntor's `t_key`: the HKDF salt (`PROTOID | ":key_extract"`).
pub const NTOR_T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
/// ntor's `m_expand`: the HKDF info (`PROTOID | ":key_expand"`).
pub const NTOR_M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";

/// Most bytes KDF-TOR can produce: the counter is one byte (C tor: `DIGEST_LEN * 256`).
pub const KDF_TOR_MAX: usize = 20 * 256;
/// Most bytes HKDF-SHA256 can produce (RFC 5869 §2.3: `255 * HashLen`).
pub const KDF_RFC5869_MAX: usize = 32 * 255;

/// KDF-TOR (tor-spec §5.2.1): fills `out` with `SHA1(k0|00) | SHA1(k0|01) | …`.
///
/// Errors with [`Error::TooLarge`] if `out` is longer than [`KDF_TOR_MAX`].
pub fn kdf_tor(k0: &[u8], out: &mut [u8]) -> Result<()> {
    if out.len() > KDF_TOR_MAX {
        return Err(Error::TooLarge("KDF-TOR output"));
    }
    for (i, chunk) in out.chunks_mut(20).enumerate() {
        let mut h = Sha1::new();
        Digest::update(&mut h, k0);
        // i < 256 by the length check above.
        Digest::update(&mut h, [i as u8]);
        let block = h.finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

/// KDF-RFC5869 (tor-spec §5.2.2): HKDF-SHA256 with the given salt and info, filling `out`.
///
/// Errors with [`Error::TooLarge`] if `out` is longer than [`KDF_RFC5869_MAX`].
pub fn kdf_rfc5869(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .map_err(|_| Error::TooLarge("KDF-RFC5869 output"))
}

/// ntor's key expansion: HKDF-SHA256 with salt `t_key` and info `m_expand` (tor-spec §5.1.4).
pub fn ntor_kdf(secret_input: &[u8], out: &mut [u8]) -> Result<()> {
    kdf_rfc5869(secret_input, NTOR_T_KEY, NTOR_M_EXPAND, out)
}

/// The 8-byte prefix of `ENCAP(s)` for a string of `len` bytes: `u64` big-endian (prop 332).
pub fn encap_len(len: usize) -> [u8; 8] {
    (len as u64).to_be_bytes()
}

/// The ntor v3 KDF (prop 332 §A.1): `SHAKE-256(ENCAP(tweak) | s)`, read as a stream.
///
/// `s` is given as parts that are concatenated, so callers need not build it in one buffer.
pub struct ShakeKdf {
    reader: sha3::Shake256Reader,
}

impl ShakeKdf {
    /// Starts the keystream `KDF(parts[0] | parts[1] | …, tweak)`.
    pub fn new(tweak: &[u8], parts: &[&[u8]]) -> Self {
        let mut h = sha3::Shake256::default();
        h.update(&encap_len(tweak.len()));
        h.update(tweak);
        for p in parts {
            h.update(p);
        }
        ShakeKdf {
            reader: h.finalize_xof(),
        }
    }

    /// Reads the next `out.len()` bytes of keystream.
    pub fn squeeze(&mut self, out: &mut [u8]) {
        self.reader.read(out);
    }
}

impl std::fmt::Debug for ShakeKdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShakeKdf([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_tor_is_counter_mode_sha1() {
        // Block i is SHA1(k0 | i): check the second block directly.
        let mut out = [0u8; 45];
        kdf_tor(b"abc", &mut out).unwrap();
        let b1 = Sha1::new()
            .chain_update(b"abc")
            .chain_update([1u8])
            .finalize();
        assert_eq!(&out[20..40], &b1[..]);
        let b2 = Sha1::new()
            .chain_update(b"abc")
            .chain_update([2u8])
            .finalize();
        assert_eq!(&out[40..45], &b2[..5]);
    }

    #[test]
    fn kdf_tor_length_limit() {
        let mut ok = vec![0u8; KDF_TOR_MAX];
        assert!(kdf_tor(b"x", &mut ok).is_ok());
        let mut too_long = vec![0u8; KDF_TOR_MAX + 1];
        assert_eq!(
            kdf_tor(b"x", &mut too_long),
            Err(Error::TooLarge("KDF-TOR output"))
        );
    }

    #[test]
    fn hkdf_length_limit() {
        let mut ok = vec![0u8; KDF_RFC5869_MAX];
        assert!(ntor_kdf(b"x", &mut ok).is_ok());
        let mut too_long = vec![0u8; KDF_RFC5869_MAX + 1];
        assert!(ntor_kdf(b"x", &mut too_long).is_err());
    }

    #[test]
    fn shake_kdf_parts_concatenate_and_stream() {
        let mut a = ShakeKdf::new(b"t", &[b"hello ", b"world"]);
        let mut b = ShakeKdf::new(b"t", &[b"hello world"]);
        let mut whole = [0u8; 64];
        b.squeeze(&mut whole);
        let mut first = [0u8; 10];
        let mut rest = [0u8; 54];
        a.squeeze(&mut first);
        a.squeeze(&mut rest);
        assert_eq!(&whole[..10], &first);
        assert_eq!(&whole[10..], &rest);
        // The tweak is length-prefixed, so moving bytes between tweak and input changes output.
        let mut c = ShakeKdf::new(b"th", &[b"ello world"]);
        let mut other = [0u8; 64];
        c.squeeze(&mut other);
        assert_ne!(whole, other);
        assert_eq!(encap_len(5), [0, 0, 0, 0, 0, 0, 0, 5]);
    }
}
