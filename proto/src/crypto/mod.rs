//! Relay cryptography (tor-spec §5.2, §6.1).
//!
//! [`Tor1Keys`] is the contract between the circuit handshakes (which derive it) and the
//! tor1 relay-crypto layer (which consumes it): every handshake — CREATE_FAST's KDF-TOR,
//! ntor's and ntor v3's KDFs — ends by producing these 72 bytes.

use std::fmt;
pub mod tor1;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// The key material of one tor1 hop, in KDF output order: Df, Db, Kf, Kb (tor-spec §5.2.2).
///
/// `df`/`db` seed the forward/backward running SHA-1 digests, `kf`/`kb` are the
/// forward/backward AES-128-CTR keys. "Forward" is client→exit.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Tor1Keys {
    /// Forward digest seed.
    pub df: [u8; 20],
    /// Backward digest seed.
    pub db: [u8; 20],
    /// Forward AES-128 key.
    pub kf: [u8; 16],
    /// Backward AES-128 key.
    pub kb: [u8; 16],
}

impl Tor1Keys {
    /// Bytes of KDF output a tor1 hop consumes.
    pub const LEN: usize = 72;

    /// Splits KDF output (Df | Db | Kf | Kb) into keys; `None` unless exactly [`Self::LEN`] bytes.
    pub fn from_kdf_output(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN {
            return None;
        }
        let mut k = Tor1Keys {
            df: [0; 20],
            db: [0; 20],
            kf: [0; 16],
            kb: [0; 16],
        };
        k.df.copy_from_slice(&b[0..20]);
        k.db.copy_from_slice(&b[20..40]);
        k.kf.copy_from_slice(&b[40..56]);
        k.kb.copy_from_slice(&b[56..72]);
        Some(k)
    }
}

impl fmt::Debug for Tor1Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tor1Keys([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_order_is_df_db_kf_kb() {
        let b: Vec<u8> = (0..72).collect();
        let k = Tor1Keys::from_kdf_output(&b).unwrap();
        assert_eq!(k.df[0], 0);
        assert_eq!(k.db[0], 20);
        assert_eq!(k.kf[0], 40);
        assert_eq!(k.kb[15], 71);
        assert!(Tor1Keys::from_kdf_output(&b[..71]).is_none());
        assert_eq!(format!("{k:?}"), "Tor1Keys([redacted])");
    }
}
