//! Identifier newtypes shared by every layer (tor-spec §0.3, §5.1.1, §6.2).
//!
//! Invariants: a [`CircId`] is never zero on the wire (zero means "no circuit" and is only
//! used by link-level cells); a [`StreamId`] of zero addresses the circuit itself.

use std::fmt;

/// A circuit id on one channel: 2 bytes on link protocol 3, 4 bytes on 4 and later.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CircId(pub u32);

impl CircId {
    /// The circuit id used by link-level cells (VERSIONS, CERTS, NETINFO, …).
    pub const LINK: CircId = CircId(0);

    /// True when the most significant bit is set (the initiator's half of the id space
    /// for link protocol ≥ 4, tor-spec §5.1.1). `wide` says whether ids are 4 bytes.
    pub fn msb_set(self, wide: bool) -> bool {
        if wide {
            self.0 & 0x8000_0000 != 0
        } else {
            self.0 & 0x8000 != 0
        }
    }
}

impl fmt::Debug for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CircId({:#x})", self.0)
    }
}

impl fmt::Display for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A stream id within a circuit; zero addresses the circuit (tor-spec §6.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct StreamId(pub u16);

/// A relay's legacy identity: SHA-1 of the DER PKCS#1 `RSAPublicKey` of its RSA-1024
/// identity key (tor-spec §0.3). Displayed as 40 upper-case hex digits (the fingerprint).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RsaIdentity(pub [u8; 20]);

impl RsaIdentity {
    /// Parses exactly 20 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(RsaIdentity)
    }
    /// The fingerprint as 40 upper-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Debug for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaIdentity(${})", self.to_hex())
    }
}

impl fmt::Display for RsaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_hex())
    }
}

/// A relay's Ed25519 master identity public key (cert-spec §2, tor-spec §0.3).
/// Displayed as unpadded base64 (43 characters), as in directory documents.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ed25519Identity(pub [u8; 32]);

impl Ed25519Identity {
    /// Parses exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Ed25519Identity)
    }
    /// Unpadded base64, as used by `master-key-ed25519` and `id ed25519`.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for Ed25519Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Identity({})", self.to_base64())
    }
}

impl fmt::Display for Ed25519Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circid_msb() {
        assert!(CircId(0x8000_0001).msb_set(true));
        assert!(!CircId(0x8001).msb_set(true));
        assert!(CircId(0x8001).msb_set(false));
    }

    #[test]
    fn identity_display() {
        let id = RsaIdentity([0xab; 20]);
        assert_eq!(id.to_string(), format!("${}", "AB".repeat(20)));
        assert_eq!(Ed25519Identity([0; 32]).to_base64().len(), 43);
    }
}
