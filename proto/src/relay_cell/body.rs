//! The plaintext relay cell body, tor-spec §6.1 ("tor1"/v0 layout):
//!
//! ```text
//! Command u8 | Recognized u16 | StreamID u16 | Digest [4] | Length u16 | Data [Length] | Padding
//! 0            1                3              5            9            11
//! ```
//!
//! Everything here works in place on a `[u8; 509]` without allocating (the per-cell hot
//! path). Invariants:
//! - [`encode_header_into`] always writes Recognized = 0 and Digest = 0; the tor1 crypto
//!   layer computes and fills the digest afterwards ([`set_digest`]).
//! - Padding is 4 zero bytes after the data, then random bytes (or all zeros when fewer
//!   than 4 bytes remain), as tor-spec §6.1 and proposal 289 ask, so that the SENDME v1
//!   digest covers unpredictable bytes. Parsing never looks at the padding.
//! - A parsed Length is at most [`RELAY_DATA_MAX`] (498).

use super::cmd::RelayCmd;
use crate::cell::CELL_PAYLOAD_LEN;
use crate::error::{Error, Result};
use crate::ids::StreamId;
use bytes::Bytes;
use rand_core::{CryptoRng, RngCore};
use std::ops::Range;

/// A relay cell body: the 509-byte payload of a RELAY or RELAY_EARLY cell.
pub type RelayBody = [u8; CELL_PAYLOAD_LEN];

/// Offset of the Command byte.
pub const CMD_OFFSET: usize = 0;
/// Byte range of the Recognized field.
pub const RECOGNIZED_RANGE: Range<usize> = 1..3;
/// Byte range of the StreamID field.
pub const STREAM_ID_RANGE: Range<usize> = 3..5;
/// Byte range of the Digest field.
pub const DIGEST_RANGE: Range<usize> = 5..9;
/// Byte range of the Length field.
pub const LENGTH_RANGE: Range<usize> = 9..11;
/// Size of the relay header; Data starts here.
pub const RELAY_HEADER_LEN: usize = 11;
/// Most data bytes one relay cell carries (509 - 11).
pub const RELAY_DATA_MAX: usize = CELL_PAYLOAD_LEN - RELAY_HEADER_LEN;
/// Zero bytes between the data and the random padding (tor-spec §6.1).
const ZERO_PAD_LEN: usize = 4;

/// Writes the relay header for `data` already placed at `body[11..11 + len]`, with
/// Recognized = 0 and Digest = 0, and fills the padding. `len > 498` is an error.
pub fn encode_header_in_place<R: RngCore + CryptoRng>(
    body: &mut RelayBody,
    cmd: RelayCmd,
    stream_id: StreamId,
    len: usize,
    rng: &mut R,
) -> Result<()> {
    if len > RELAY_DATA_MAX {
        return Err(Error::TooLarge("relay cell data longer than 498 bytes"));
    }
    body[CMD_OFFSET] = cmd.into();
    body[RECOGNIZED_RANGE].fill(0);
    body[STREAM_ID_RANGE].copy_from_slice(&stream_id.0.to_be_bytes());
    body[DIGEST_RANGE].fill(0);
    // `len <= 498` fits a u16.
    body[LENGTH_RANGE].copy_from_slice(&(len as u16).to_be_bytes());
    let pad_start = RELAY_HEADER_LEN + len;
    let random_start = (pad_start + ZERO_PAD_LEN).min(CELL_PAYLOAD_LEN);
    body[pad_start..random_start].fill(0);
    rng.fill_bytes(&mut body[random_start..]);
    Ok(())
}

/// Copies `data` into the body and writes the header and padding
/// (see [`encode_header_in_place`]). `data.len() > 498` is an error.
pub fn encode_header_into<R: RngCore + CryptoRng>(
    body: &mut RelayBody,
    cmd: RelayCmd,
    stream_id: StreamId,
    data: &[u8],
    rng: &mut R,
) -> Result<()> {
    let dst = body
        .get_mut(RELAY_HEADER_LEN..RELAY_HEADER_LEN + data.len())
        .ok_or(Error::TooLarge("relay cell data longer than 498 bytes"))?;
    dst.copy_from_slice(data);
    encode_header_in_place(body, cmd, stream_id, data.len(), rng)
}

/// The Recognized field (zero when the cell may be for this hop).
pub fn recognized(body: &RelayBody) -> u16 {
    u16::from_be_bytes([
        body[RECOGNIZED_RANGE.start],
        body[RECOGNIZED_RANGE.start + 1],
    ])
}

/// The 4-byte Digest field.
pub fn digest(body: &RelayBody) -> [u8; 4] {
    let mut d = [0u8; 4];
    d.copy_from_slice(&body[DIGEST_RANGE]);
    d
}

/// Overwrites the 4-byte Digest field.
pub fn set_digest(body: &mut RelayBody, d: [u8; 4]) {
    body[DIGEST_RANGE].copy_from_slice(&d);
}

/// A parsed view of a decrypted relay cell body; `data` borrows from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayCellRef<'a> {
    /// The relay command.
    pub cmd: RelayCmd,
    /// The stream (0 = the circuit itself).
    pub stream_id: StreamId,
    /// The Length-delimited data (padding excluded).
    pub data: &'a [u8],
}

impl<'a> RelayCellRef<'a> {
    /// Reads the header of a decrypted body that the crypto layer recognized.
    /// Recognized and Digest are not checked here (that is the crypto layer's job);
    /// Length > 498 is [`Error::BadLength`].
    pub fn parse(body: &'a RelayBody) -> Result<Self> {
        let len = usize::from(u16::from_be_bytes([
            body[LENGTH_RANGE.start],
            body[LENGTH_RANGE.start + 1],
        ]));
        if len > RELAY_DATA_MAX {
            return Err(Error::BadLength("relay cell Length > 498"));
        }
        Ok(RelayCellRef {
            cmd: RelayCmd::from(body[CMD_OFFSET]),
            stream_id: StreamId(u16::from_be_bytes([
                body[STREAM_ID_RANGE.start],
                body[STREAM_ID_RANGE.start + 1],
            ])),
            data: &body[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len],
        })
    }

    /// Copies the data out into an owned [`RelayCell`].
    pub fn to_owned(&self) -> RelayCell {
        RelayCell {
            cmd: self.cmd,
            stream_id: self.stream_id,
            data: Bytes::copy_from_slice(self.data),
        }
    }

    /// Parses the data as the typed message for `cmd` (see [`super::RelayMsg::parse`]).
    pub fn msg(&self) -> Result<super::RelayMsg> {
        super::RelayMsg::parse(self.cmd, self.data)
    }
}

/// An owned relay cell: command, stream and data (no crypto fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCell {
    /// The relay command.
    pub cmd: RelayCmd,
    /// The stream (0 = the circuit itself).
    pub stream_id: StreamId,
    /// The data, at most 498 bytes.
    pub data: Bytes,
}

impl RelayCell {
    /// Parses a decrypted body (see [`RelayCellRef::parse`]).
    pub fn parse(body: &RelayBody) -> Result<Self> {
        RelayCellRef::parse(body).map(|c| c.to_owned())
    }

    /// Writes this cell into `body` with Recognized = 0, Digest = 0 and padding.
    pub fn encode_into<R: RngCore + CryptoRng>(
        &self,
        body: &mut RelayBody,
        rng: &mut R,
    ) -> Result<()> {
        encode_header_into(body, self.cmd, self.stream_id, &self.data, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn header_layout() {
        let mut body = [0xffu8; CELL_PAYLOAD_LEN];
        encode_header_into(
            &mut body,
            RelayCmd::Data,
            StreamId(0x1234),
            b"hello",
            &mut rng(),
        )
        .expect("fits");
        assert_eq!(
            &body[..16],
            &[
                2, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'
            ]
        );
        assert_eq!(&body[16..20], &[0, 0, 0, 0], "4 zero bytes after the data");
        assert!(body[20..].iter().any(|&b| b != 0), "then random padding");
        assert_eq!(recognized(&body), 0);
        assert_eq!(digest(&body), [0; 4]);
        set_digest(&mut body, [1, 2, 3, 4]);
        assert_eq!(&body[5..9], &[1, 2, 3, 4]);
        let c = RelayCellRef::parse(&body).expect("parses");
        assert_eq!(c.cmd, RelayCmd::Data);
        assert_eq!(c.stream_id, StreamId(0x1234));
        assert_eq!(c.data, b"hello");
    }

    #[test]
    fn padding_is_random_not_constant() {
        let mut a = [0u8; CELL_PAYLOAD_LEN];
        let mut b = [0u8; CELL_PAYLOAD_LEN];
        let mut r = rng();
        encode_header_into(&mut a, RelayCmd::Drop, StreamId(0), &[], &mut r).expect("fits");
        encode_header_into(&mut b, RelayCmd::Drop, StreamId(0), &[], &mut r).expect("fits");
        assert_eq!(&a[11..15], &[0; 4]);
        assert_ne!(&a[15..], &b[15..]);
    }

    #[test]
    fn short_padding_is_all_zero() {
        for len in RELAY_DATA_MAX - 4..=RELAY_DATA_MAX {
            let mut body = [0xeeu8; CELL_PAYLOAD_LEN];
            let data = vec![1u8; len];
            encode_header_into(&mut body, RelayCmd::Data, StreamId(1), &data, &mut rng())
                .expect("fits");
            assert!(body[11 + len..].iter().all(|&b| b == 0), "len {len}");
            assert_eq!(RelayCellRef::parse(&body).expect("parses").data, &data[..]);
        }
    }

    #[test]
    fn oversized_is_rejected() {
        let mut body = [0u8; CELL_PAYLOAD_LEN];
        assert!(
            encode_header_into(
                &mut body,
                RelayCmd::Data,
                StreamId(1),
                &[0; 499],
                &mut rng()
            )
            .is_err()
        );
        assert!(
            encode_header_in_place(&mut body, RelayCmd::Data, StreamId(1), 499, &mut rng())
                .is_err()
        );
        body[LENGTH_RANGE].copy_from_slice(&499u16.to_be_bytes());
        assert_eq!(
            RelayCellRef::parse(&body),
            Err(Error::BadLength("relay cell Length > 498"))
        );
        body[LENGTH_RANGE].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(RelayCell::parse(&body).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(cmd in any::<u8>(), sid in any::<u16>(),
                      data in proptest::collection::vec(any::<u8>(), 0..=RELAY_DATA_MAX),
                      seed in any::<u64>()) {
            let cell = RelayCell { cmd: cmd.into(), stream_id: StreamId(sid), data: data.into() };
            let mut body = [0u8; CELL_PAYLOAD_LEN];
            cell.encode_into(&mut body, &mut StdRng::seed_from_u64(seed)).expect("fits");
            prop_assert_eq!(recognized(&body), 0);
            prop_assert_eq!(digest(&body), [0; 4]);
            prop_assert_eq!(RelayCell::parse(&body).expect("parses"), cell);
        }

        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), CELL_PAYLOAD_LEN)) {
            let mut b = [0u8; CELL_PAYLOAD_LEN];
            b.copy_from_slice(&body);
            if let Ok(c) = RelayCellRef::parse(&b) {
                prop_assert!(c.data.len() <= RELAY_DATA_MAX);
                let _ = c.msg();
            }
        }
    }
}
