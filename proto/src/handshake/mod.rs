//! Circuit handshakes (tor-spec §5.1.4–§5.1.5, §5.2; proposal 332).
//!
//! - [`fast`]: CREATE_FAST / CREATED_FAST with KDF-TOR (first hop only, never in EXTEND2).
//! - [`ntor`]: ntor, CREATE2 HTYPE [`HTYPE_NTOR`].
//! - [`ntor_v3`]: ntor v3, CREATE2 HTYPE [`HTYPE_NTOR_V3`], with its encrypted extension
//!   messages.
//! - [`kdf`]: KDF-TOR, KDF-RFC5869 and ntor v3's SHAKE-256 KDF.
//!
//! Every handshake ends in a [`crate::crypto::Tor1Keys`]. Randomness is an argument; each
//! entry point that draws an ephemeral key has a `*_with_*` twin that takes it explicitly, used
//! only to replay test vectors. Invariants: no function here panics on peer input; every
//! secret comparison is constant time; every secret buffer is zeroized when dropped.

pub mod fast;
pub mod kdf;
pub mod ntor;
pub mod ntor_v3;

pub use fast::CreateFastClient;
pub use ntor::{NtorClient, NtorOnionKey};
pub use ntor_v3::{CircExtension, NtorV3Client, NtorV3PendingReply};

use crate::{Error, Result};

/// CREATE2 HTYPE of TAP: obsolete, never accepted (INTEROP §B.1).
pub const HTYPE_TAP: u16 = 0;
/// CREATE2 HTYPE of ntor.
pub const HTYPE_NTOR: u16 = 2;
/// CREATE2 HTYPE of ntor v3.
pub const HTYPE_NTOR_V3: u16 = 3;

/// True for the CREATE2 handshake types a relay accepts (ntor and ntor v3; not TAP).
pub fn htype_accepted(htype: u16) -> bool {
    matches!(htype, HTYPE_NTOR | HTYPE_NTOR_V3)
}

/// Views `b` as exactly `N` bytes: [`Error::Truncated`] if shorter, [`Error::TrailingBytes`] if
/// longer.
pub(crate) fn exact<'a, const N: usize>(b: &'a [u8], what: &'static str) -> Result<&'a [u8; N]> {
    if b.len() < N {
        return Err(Error::Truncated(what));
    }
    b.try_into().map_err(|_| Error::TrailingBytes(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htypes() {
        assert!(!htype_accepted(HTYPE_TAP));
        assert!(!htype_accepted(1));
        assert!(htype_accepted(HTYPE_NTOR));
        assert!(htype_accepted(HTYPE_NTOR_V3));
    }

    #[test]
    fn exact_lengths() {
        assert_eq!(exact::<2>(&[1, 2], "t"), Ok(&[1, 2]));
        assert_eq!(exact::<2>(&[1], "t"), Err(Error::Truncated("t")));
        assert_eq!(exact::<2>(&[1, 2, 3], "t"), Err(Error::TrailingBytes("t")));
    }
}
