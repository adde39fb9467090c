//! Channel cells, tor-spec §3 (framing) and §4–§5 (link and circuit-level messages).
//!
//! - [`ChanCmd`]: the command byte.
//! - [`ChanCell`]: one framed cell with its raw payload.
//! - [`ChanCodec`]: streaming framing for link protocol 3, 4 and 5.
//! - [`msg`]: the typed messages.
//!
//! Framing invariants (INTEROP.md §A.2, Trap 11):
//! - VERSIONS is always framed with a 2-byte circuit id, in both directions, even after
//!   negotiation.
//! - Every other cell uses 2-byte ids on link 3 and 4-byte ids from link 4 on.
//! - Fixed-size cells carry exactly [`CELL_PAYLOAD_LEN`] bytes. Variable-length cells
//!   (VERSIONS and commands ≥ 128) carry a u16 length, so one cell is at most 64 KiB and a
//!   decoder never buffers more than that for one cell.

pub mod msg;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{CircId, Error, Result};

/// Length of a fixed-size cell's payload (tor-spec §3): every relay cell body is this long.
pub const CELL_PAYLOAD_LEN: usize = 509;

/// Link protocol versions we speak (INTEROP.md §A.3: 0.4.9 knows exactly 3, 4 and 5).
pub const SUPPORTED_LINK_VERSIONS: [u16; 3] = [3, 4, 5];

/// A channel cell command (tor-spec §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ChanCmd {
    Padding,
    Create,
    Created,
    Relay,
    Destroy,
    CreateFast,
    CreatedFast,
    Versions,
    Netinfo,
    RelayEarly,
    Create2,
    Created2,
    PaddingNegotiate,
    Vpadding,
    Certs,
    AuthChallenge,
    Authenticate,
    Authorize,
    /// A command this implementation does not know; kept so the caller can decide.
    Unrecognized(u8),
}

impl ChanCmd {
    /// The command's name in tor-spec, lower case (bounded: for metric labels and logs).
    pub fn name(self) -> &'static str {
        use ChanCmd::*;
        match self {
            Padding => "padding",
            Create => "create",
            Created => "created",
            Relay => "relay",
            Destroy => "destroy",
            CreateFast => "create_fast",
            CreatedFast => "created_fast",
            Versions => "versions",
            Netinfo => "netinfo",
            RelayEarly => "relay_early",
            Create2 => "create2",
            Created2 => "created2",
            PaddingNegotiate => "padding_negotiate",
            Vpadding => "vpadding",
            Certs => "certs",
            AuthChallenge => "auth_challenge",
            Authenticate => "authenticate",
            Authorize => "authorize",
            Unrecognized(_) => "unrecognized",
        }
    }
}

impl From<u8> for ChanCmd {
    fn from(b: u8) -> Self {
        use ChanCmd::*;
        match b {
            0 => Padding,
            1 => Create,
            2 => Created,
            3 => Relay,
            4 => Destroy,
            5 => CreateFast,
            6 => CreatedFast,
            7 => Versions,
            8 => Netinfo,
            9 => RelayEarly,
            10 => Create2,
            11 => Created2,
            12 => PaddingNegotiate,
            128 => Vpadding,
            129 => Certs,
            130 => AuthChallenge,
            131 => Authenticate,
            132 => Authorize,
            other => Unrecognized(other),
        }
    }
}

impl From<ChanCmd> for u8 {
    fn from(c: ChanCmd) -> u8 {
        use ChanCmd::*;
        match c {
            Padding => 0,
            Create => 1,
            Created => 2,
            Relay => 3,
            Destroy => 4,
            CreateFast => 5,
            CreatedFast => 6,
            Versions => 7,
            Netinfo => 8,
            RelayEarly => 9,
            Create2 => 10,
            Created2 => 11,
            PaddingNegotiate => 12,
            Vpadding => 128,
            Certs => 129,
            AuthChallenge => 130,
            Authenticate => 131,
            Authorize => 132,
            Unrecognized(b) => b,
        }
    }
}

impl ChanCmd {
    /// True for variable-length cells: VERSIONS and every command ≥ 128 (tor-spec §3).
    pub fn is_var_len(self) -> bool {
        let b = u8::from(self);
        b == 7 || b >= 128
    }
}

/// One channel cell: circuit id, command and raw payload (no copy of the wire bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChanCell {
    /// The circuit; [`CircId::LINK`] for link-level cells.
    pub circ_id: CircId,
    /// The command.
    pub cmd: ChanCmd,
    /// The payload: exactly [`CELL_PAYLOAD_LEN`] bytes for fixed-size cells.
    pub payload: Bytes,
}

impl ChanCell {
    /// DESTROY for `circ_id` with `reason` (tor-spec §5.4): the reason byte, zero-padded.
    pub fn destroy(circ_id: CircId, reason: msg::DestroyReason) -> Self {
        let mut p = vec![0u8; CELL_PAYLOAD_LEN];
        p[0] = reason.into();
        ChanCell {
            circ_id,
            cmd: ChanCmd::Destroy,
            payload: Bytes::from(p),
        }
    }
}

/// Streaming framing of channel cells for one link (tor-spec §3).
///
/// Starts un-negotiated (2-byte circuit ids, as the VERSIONS exchange requires); call
/// [`ChanCodec::set_link_version`] once both VERSIONS cells have crossed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChanCodec {
    link_version: Option<u16>,
}

impl ChanCodec {
    /// A codec before version negotiation.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec for an already negotiated link version.
    pub fn with_link_version(v: u16) -> Self {
        ChanCodec {
            link_version: Some(v),
        }
    }

    /// Records the negotiated link version (from then on ids are 4 bytes if `v >= 4`).
    pub fn set_link_version(&mut self, v: u16) {
        self.link_version = Some(v);
    }

    /// The negotiated link version, if any.
    pub fn link_version(&self) -> Option<u16> {
        self.link_version
    }

    /// Width in bytes of the circuit id of a cell with command `cmd`.
    fn circ_id_len(&self, cmd: ChanCmd) -> usize {
        match self.link_version {
            Some(v) if v >= 4 && cmd != ChanCmd::Versions => 4,
            _ => 2,
        }
    }

    /// Decodes one cell from the front of `buf`, or returns `Ok(None)` when more bytes are
    /// needed. Decode one cell at a time during the handshake: the peer's CERTS can follow
    /// its VERSIONS in the same read, and must be framed with the version that VERSIONS
    /// negotiates. Consumes exactly the bytes of the returned cell; the payload shares `buf`'s
    /// allocation.
    ///
    /// # Errors
    /// None today: every byte sequence is some cell; command checks belong to the caller.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<ChanCell>> {
        // The command byte sits after the circuit id, whose width can depend on it only
        // for VERSIONS, and VERSIONS is only ever sent with 2-byte ids before negotiation
        // or as a stray later cell. A negotiated wide link reads a 4-byte id first.
        let wide = matches!(self.link_version, Some(v) if v >= 4);
        let id_len = if wide { 4 } else { 2 };
        if buf.len() < id_len + 1 {
            return Ok(None);
        }
        let cmd = ChanCmd::from(buf[id_len]);
        let header = if cmd.is_var_len() {
            id_len + 3
        } else {
            id_len + 1
        };
        if buf.len() < header {
            return Ok(None);
        }
        let payload_len = if cmd.is_var_len() {
            usize::from(u16::from_be_bytes([buf[id_len + 1], buf[id_len + 2]]))
        } else {
            CELL_PAYLOAD_LEN
        };
        if buf.len() < header + payload_len {
            return Ok(None);
        }
        let mut cell = buf.split_to(header + payload_len);
        let circ_id = if wide {
            CircId(cell.get_u32())
        } else {
            CircId(u32::from(cell.get_u16()))
        };
        cell.advance(header - id_len);
        Ok(Some(ChanCell {
            circ_id,
            cmd,
            payload: cell.freeze(),
        }))
    }

    /// Appends `cell`, framed for this link, to `out`.
    ///
    /// # Errors
    /// [`Error::BadLength`] when a fixed-size payload is not exactly 509 bytes or a
    /// variable-length payload exceeds 65535; [`Error::InvalidValue`] when the circuit id
    /// does not fit the link's id width.
    pub fn encode(&self, cell: &ChanCell, out: &mut BytesMut) -> Result<()> {
        let id_len = self.circ_id_len(cell.cmd);
        if id_len == 2 && cell.circ_id.0 > 0xffff {
            return Err(Error::InvalidValue("circuit id wider than 2 bytes"));
        }
        if cell.cmd.is_var_len() {
            let len = u16::try_from(cell.payload.len())
                .map_err(|_| Error::BadLength("variable-length cell over 65535 bytes"))?;
            out.reserve(id_len + 3 + cell.payload.len());
            put_circ_id(out, cell.circ_id, id_len);
            out.put_u8(cell.cmd.into());
            out.put_u16(len);
        } else {
            if cell.payload.len() != CELL_PAYLOAD_LEN {
                return Err(Error::BadLength(
                    "fixed-size cell payload must be 509 bytes",
                ));
            }
            out.reserve(id_len + 1 + CELL_PAYLOAD_LEN);
            put_circ_id(out, cell.circ_id, id_len);
            out.put_u8(cell.cmd.into());
        }
        out.extend_from_slice(&cell.payload);
        Ok(())
    }
}

fn put_circ_id(out: &mut BytesMut, id: CircId, len: usize) {
    if len == 4 {
        out.put_u32(id.0);
    } else {
        // Checked by the caller: the id fits in 16 bits.
        out.put_u16(id.0 as u16);
    }
}

/// The highest link version both sides support, from the peer's VERSIONS list
/// (tor-spec §4.1). Versions 1 and 2 are never chosen.
pub fn negotiate_link_version(peer: &[u16]) -> Option<u16> {
    peer.iter()
        .copied()
        .filter(|v| SUPPORTED_LINK_VERSIONS.contains(v))
        .max()
}

/// Whether a circuit id received from the peer in a CREATE* cell is acceptable on a link
/// with `wide` (4-byte) ids (tor-spec §5.1.1, INTEROP.md §A.7): never zero, and on link
/// version ≥ 4 the connection initiator's ids have the MSB set and the responder's clear.
/// On link 3 the rule depends on identity keys, so only zero is refused.
pub fn circ_id_ok_from_peer(id: CircId, wide: bool, peer_is_initiator: bool) -> bool {
    if id.0 == 0 {
        return false;
    }
    if !wide {
        return true;
    }
    id.msb_set(true) == peer_is_initiator
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell(circ: u32, cmd: u8, payload: Vec<u8>) -> ChanCell {
        ChanCell {
            circ_id: CircId(circ),
            cmd: ChanCmd::from(cmd),
            payload: payload.into(),
        }
    }

    #[test]
    fn versions_always_has_two_byte_circ_id() {
        let versions = cell(0, 7, vec![0, 3, 0, 4, 0, 5]);
        for codec in [ChanCodec::new(), ChanCodec::with_link_version(5)] {
            let mut out = BytesMut::new();
            codec.encode(&versions, &mut out).unwrap();
            assert_eq!(&out[..], &[0, 0, 7, 0, 6, 0, 3, 0, 4, 0, 5]);
        }
        assert_eq!(negotiate_link_version(&[3, 4, 5]), Some(5));
        assert_eq!(negotiate_link_version(&[1, 2, 3]), Some(3));
        assert_eq!(negotiate_link_version(&[1, 2, 6]), None);
    }

    #[test]
    fn fixed_cell_widths_per_link_version() {
        let c = cell(0x8000_0001, 3, vec![0xab; 509]);
        let mut out = BytesMut::new();
        ChanCodec::with_link_version(4)
            .encode(&c, &mut out)
            .unwrap();
        assert_eq!(out.len(), 514);
        assert_eq!(&out[..5], &[0x80, 0, 0, 1, 3]);
        let mut out3 = BytesMut::new();
        assert!(
            ChanCodec::with_link_version(3)
                .encode(&c, &mut out3)
                .is_err()
        );
        let c3 = cell(0x8001, 3, vec![0xab; 509]);
        ChanCodec::with_link_version(3)
            .encode(&c3, &mut out3)
            .unwrap();
        assert_eq!(out3.len(), 512);
    }

    #[test]
    fn short_fixed_payload_is_refused() {
        let mut out = BytesMut::new();
        let c = cell(1, 3, vec![0; 508]);
        assert!(
            ChanCodec::with_link_version(5)
                .encode(&c, &mut out)
                .is_err()
        );
        assert!(out.is_empty());
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut out = BytesMut::new();
        let codec = ChanCodec::with_link_version(5);
        codec.encode(&cell(5, 129, vec![1; 300]), &mut out).unwrap();
        let full = out.clone();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(codec.decode(&mut part).unwrap(), None);
            assert_eq!(part.len(), cut, "nothing consumed from a partial cell");
        }
    }

    #[test]
    fn circ_id_rules() {
        assert!(!circ_id_ok_from_peer(CircId(0), true, true));
        assert!(circ_id_ok_from_peer(CircId(0x8000_0001), true, true));
        assert!(!circ_id_ok_from_peer(CircId(0x0000_0001), true, true));
        assert!(circ_id_ok_from_peer(CircId(1), true, false));
        assert!(circ_id_ok_from_peer(CircId(1), false, true));
    }

    fn arb_cell(wide: bool) -> impl Strategy<Value = ChanCell> {
        let max_id = if wide { u32::MAX } else { 0xffff };
        (
            0..=max_id,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(move |(id, cmd, mut payload)| {
                let mut cmd = ChanCmd::from(cmd);
                // After negotiation VERSIONS never appears on a wide link; a stray one is
                // read with a 4-byte id and refused by the handshake state, not the codec.
                if wide && cmd == ChanCmd::Versions {
                    cmd = ChanCmd::Vpadding;
                }
                let id = if cmd == ChanCmd::Versions {
                    id & 0xffff
                } else {
                    id
                };
                if !cmd.is_var_len() {
                    payload.resize(CELL_PAYLOAD_LEN, 0);
                }
                ChanCell {
                    circ_id: CircId(id),
                    cmd,
                    payload: payload.into(),
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip_link4_and_5(cells in proptest::collection::vec(arb_cell(true), 1..8), v in 4u16..=5) {
            let codec = ChanCodec::with_link_version(v);
            let mut buf = BytesMut::new();
            for c in &cells { codec.encode(c, &mut buf).unwrap(); }
            for c in &cells {
                prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(c.clone()));
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn round_trip_link3_and_unnegotiated(cells in proptest::collection::vec(arb_cell(false), 1..8), negotiated in any::<bool>()) {
            let codec = if negotiated { ChanCodec::with_link_version(3) } else { ChanCodec::new() };
            let mut buf = BytesMut::new();
            for c in &cells { codec.encode(c, &mut buf).unwrap(); }
            for c in &cells {
                prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(c.clone()));
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000), v in 0u16..6) {
            let codec = if v < 3 { ChanCodec::new() } else { ChanCodec::with_link_version(v) };
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..2000 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
