//! Link specifiers, tor-spec §5.1.2: how an EXTEND2 cell names the next hop.
//!
//! Wire format of a list: `NSPEC u8 | NSPEC × [LSTYPE u8 | LSLEN u8 | LSPEC[LSLEN]]`.
//! Known types: 0 = IPv4 ORPort (4-byte address + 2-byte port), 1 = IPv6 ORPort (16 + 2),
//! 2 = legacy RSA identity (20), 3 = Ed25519 identity (32).
//!
//! Invariants:
//! - a known LSTYPE with the wrong LSLEN is an error, never silently reinterpreted;
//! - unknown LSTYPEs are kept as [`LinkSpec::Unrecognized`] (the spec says to ignore them,
//!   which is the caller's decision, not the parser's), and `Unrecognized` never holds a
//!   known type, so every value has exactly one encoding;
//! - parsing yields `SocketAddrV6` values with `flowinfo` and `scope_id` zero; encoding
//!   ignores those two fields (they do not exist on the wire).
//!
//! Semantic checks that C tor applies to an EXTEND2 request (an RSA id and an address
//! are required, duplicate identities are invalid) live in [`check_extend_targets`].

use crate::error::{Error, Result};
use crate::ids::{Ed25519Identity, RsaIdentity};
use crate::relay_cell::wire::{Put, Reader};
use bytes::{Bytes, BytesMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// LSTYPE of an IPv4 ORPort link specifier.
pub const LS_ORPORT_V4: u8 = 0;
/// LSTYPE of an IPv6 ORPort link specifier.
pub const LS_ORPORT_V6: u8 = 1;
/// LSTYPE of a legacy (RSA, SHA-1) identity link specifier.
pub const LS_RSA_ID: u8 = 2;
/// LSTYPE of an Ed25519 identity link specifier.
pub const LS_ED25519_ID: u8 = 3;

/// One link specifier (tor-spec §5.1.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkSpec {
    /// Type 0: an IPv4 ORPort.
    OrPortV4(SocketAddrV4),
    /// Type 1: an IPv6 ORPort (`flowinfo` and `scope_id` are not on the wire).
    OrPortV6(SocketAddrV6),
    /// Type 2: the relay's legacy RSA identity (SHA-1 of its identity key).
    RsaId(RsaIdentity),
    /// Type 3: the relay's Ed25519 master identity key.
    Ed25519Id(Ed25519Identity),
    /// Any other type, kept verbatim. `ls_type` is never 0–3.
    Unrecognized {
        /// The LSTYPE byte.
        ls_type: u8,
        /// The LSPEC bytes (at most 255).
        body: Bytes,
    },
}

impl From<SocketAddr> for LinkSpec {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(a) => LinkSpec::OrPortV4(a),
            SocketAddr::V6(a) => LinkSpec::OrPortV6(SocketAddrV6::new(*a.ip(), a.port(), 0, 0)),
        }
    }
}

impl From<RsaIdentity> for LinkSpec {
    fn from(id: RsaIdentity) -> Self {
        LinkSpec::RsaId(id)
    }
}

impl From<Ed25519Identity> for LinkSpec {
    fn from(id: Ed25519Identity) -> Self {
        LinkSpec::Ed25519Id(id)
    }
}

impl LinkSpec {
    /// The LSTYPE byte this specifier is encoded with.
    pub fn ls_type(&self) -> u8 {
        match self {
            LinkSpec::OrPortV4(_) => LS_ORPORT_V4,
            LinkSpec::OrPortV6(_) => LS_ORPORT_V6,
            LinkSpec::RsaId(_) => LS_RSA_ID,
            LinkSpec::Ed25519Id(_) => LS_ED25519_ID,
            LinkSpec::Unrecognized { ls_type, .. } => *ls_type,
        }
    }

    /// The ORPort address, if this is an address specifier.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            LinkSpec::OrPortV4(a) => Some(SocketAddr::V4(*a)),
            LinkSpec::OrPortV6(a) => Some(SocketAddr::V6(*a)),
            _ => None,
        }
    }

    /// Builds a specifier from its type and body. Known types must have their exact length.
    pub fn from_parts(ls_type: u8, body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let ls = match ls_type {
            LS_ORPORT_V4 => {
                expect_len(body, 6)?;
                let ip = Ipv4Addr::from(r.take_array::<4>("IPv4 link specifier")?);
                LinkSpec::OrPortV4(SocketAddrV4::new(ip, r.u16("IPv4 link specifier")?))
            }
            LS_ORPORT_V6 => {
                expect_len(body, 18)?;
                let ip = Ipv6Addr::from(r.take_array::<16>("IPv6 link specifier")?);
                LinkSpec::OrPortV6(SocketAddrV6::new(ip, r.u16("IPv6 link specifier")?, 0, 0))
            }
            LS_RSA_ID => {
                expect_len(body, 20)?;
                LinkSpec::RsaId(RsaIdentity(r.take_array("RSA id link specifier")?))
            }
            LS_ED25519_ID => {
                expect_len(body, 32)?;
                LinkSpec::Ed25519Id(Ed25519Identity(r.take_array("Ed25519 link specifier")?))
            }
            other => LinkSpec::Unrecognized {
                ls_type: other,
                body: Bytes::copy_from_slice(body),
            },
        };
        Ok(ls)
    }

    /// Reads one `LSTYPE | LSLEN | LSPEC` from the front of `r`.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let ls_type = r.u8("link specifier type")?;
        let len = r.u8("link specifier length")?;
        let body = r.take(usize::from(len), "link specifier body")?;
        Self::from_parts(ls_type, body)
    }

    /// Parses exactly one `LSTYPE | LSLEN | LSPEC`; trailing bytes are an error.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let ls = Self::read(&mut r)?;
        if !r.is_empty() {
            return Err(Error::TrailingBytes("link specifier"));
        }
        Ok(ls)
    }

    /// Writes `LSTYPE | LSLEN | LSPEC`.
    pub(crate) fn write(&self, w: &mut impl Put) -> Result<()> {
        match self {
            LinkSpec::OrPortV4(a) => {
                w.put(&[LS_ORPORT_V4, 6])?;
                w.put(&a.ip().octets())?;
                w.put_u16(a.port())
            }
            LinkSpec::OrPortV6(a) => {
                w.put(&[LS_ORPORT_V6, 18])?;
                w.put(&a.ip().octets())?;
                w.put_u16(a.port())
            }
            LinkSpec::RsaId(id) => {
                w.put(&[LS_RSA_ID, 20])?;
                w.put(&id.0)
            }
            LinkSpec::Ed25519Id(id) => {
                w.put(&[LS_ED25519_ID, 32])?;
                w.put(&id.0)
            }
            LinkSpec::Unrecognized { ls_type, body } => {
                if *ls_type <= LS_ED25519_ID {
                    return Err(Error::InvalidValue(
                        "Unrecognized link specifier of a known type",
                    ));
                }
                let len =
                    u8::try_from(body.len()).map_err(|_| Error::TooLarge("link specifier body"))?;
                w.put(&[*ls_type, len])?;
                w.put(body)
            }
        }
    }

    /// Appends `LSTYPE | LSLEN | LSPEC` to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        self.write(out)
    }
}

fn expect_len(body: &[u8], n: usize) -> Result<()> {
    if body.len() == n {
        Ok(())
    } else {
        Err(Error::BadLength("link specifier of a known type"))
    }
}

/// Reads `NSPEC | NSPEC × spec` from the front of `r`.
pub(crate) fn read_list(r: &mut Reader<'_>) -> Result<Vec<LinkSpec>> {
    let n = r.u8("NSPEC")?;
    // Each spec is at least 2 bytes, so a bogus NSPEC cannot make us reserve much.
    let mut out = Vec::with_capacity(usize::from(n).min(r.remaining() / 2));
    for _ in 0..n {
        out.push(LinkSpec::read(r)?);
    }
    Ok(out)
}

/// Writes `NSPEC | specs`; more than 255 specifiers is [`Error::TooLarge`].
pub(crate) fn write_list(specs: &[LinkSpec], w: &mut impl Put) -> Result<()> {
    let n =
        u8::try_from(specs.len()).map_err(|_| Error::TooLarge("more than 255 link specifiers"))?;
    w.put_u8(n)?;
    specs.iter().try_for_each(|ls| ls.write(w))
}

/// Parses a link-specifier list (`NSPEC` then the specifiers) from the front of `b`.
/// Returns the list and how many bytes it took, so callers can go on with what follows
/// (in EXTEND2, the handshake).
pub fn parse_list(b: &[u8]) -> Result<(Vec<LinkSpec>, usize)> {
    let mut r = Reader::new(b);
    let list = read_list(&mut r)?;
    Ok((list, b.len() - r.remaining()))
}

/// Appends a link-specifier list (`NSPEC` then the specifiers) to `out`.
pub fn encode_list(specs: &[LinkSpec], out: &mut BytesMut) -> Result<()> {
    write_list(specs, out)
}

/// What an EXTEND2 request's link specifiers say about the target, after the checks C tor
/// applies (`extend_cell_from_extend2_cell_body`, INTEROP §B.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendTarget {
    /// The first IPv4 ORPort given, if any.
    pub ipv4: Option<SocketAddrV4>,
    /// The first IPv6 ORPort given, if any.
    pub ipv6: Option<SocketAddrV6>,
    /// The legacy identity (required).
    pub rsa_id: RsaIdentity,
    /// The Ed25519 identity, if given.
    pub ed_id: Option<Ed25519Identity>,
}

/// Applies the EXTEND2 rules: an RSA id and at least one address are required, a second
/// RSA or Ed25519 id makes the request invalid, a second address of a family is ignored,
/// and unknown types are ignored.
pub fn check_extend_targets(specs: &[LinkSpec]) -> Result<ExtendTarget> {
    let (mut ipv4, mut ipv6, mut rsa_id, mut ed_id) = (None, None, None, None);
    for ls in specs {
        match ls {
            LinkSpec::OrPortV4(a) => {
                ipv4.get_or_insert(*a);
            }
            LinkSpec::OrPortV6(a) => {
                ipv6.get_or_insert(*a);
            }
            LinkSpec::RsaId(id) => {
                if rsa_id.replace(*id).is_some() {
                    return Err(Error::InvalidValue("duplicate RSA id link specifier"));
                }
            }
            LinkSpec::Ed25519Id(id) => {
                if ed_id.replace(*id).is_some() {
                    return Err(Error::InvalidValue("duplicate Ed25519 id link specifier"));
                }
            }
            LinkSpec::Unrecognized { .. } => {}
        }
    }
    let rsa_id = rsa_id.ok_or(Error::InvalidValue("EXTEND2 without an RSA id"))?;
    if ipv4.is_none() && ipv6.is_none() {
        return Err(Error::InvalidValue("EXTEND2 without an address"));
    }
    Ok(ExtendTarget {
        ipv4,
        ipv6,
        rsa_id,
        ed_id,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_linkspec() -> impl Strategy<Value = LinkSpec> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(a, p)| LinkSpec::OrPortV4(SocketAddrV4::new(a.into(), p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(a, p)| LinkSpec::OrPortV6(SocketAddrV6::new(a.into(), p, 0, 0))),
            any::<[u8; 20]>().prop_map(|b| LinkSpec::RsaId(RsaIdentity(b))),
            any::<[u8; 32]>().prop_map(|b| LinkSpec::Ed25519Id(Ed25519Identity(b))),
            (4u8..=255, proptest::collection::vec(any::<u8>(), 0..=40)).prop_map(|(t, b)| {
                LinkSpec::Unrecognized {
                    ls_type: t,
                    body: b.into(),
                }
            }),
        ]
    }

    fn enc(specs: &[LinkSpec]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_list(specs, &mut out).expect("encodes");
        out.to_vec()
    }

    #[test]
    fn known_encoding() {
        let specs = [
            LinkSpec::OrPortV4("127.0.0.1:9001".parse().expect("addr")),
            LinkSpec::RsaId(RsaIdentity([0xaa; 20])),
            LinkSpec::OrPortV6("[::1]:443".parse().expect("addr")),
        ];
        let mut want = vec![3, 0, 6, 127, 0, 0, 1, 0x23, 0x29, 2, 20];
        want.extend([0xaa; 20]);
        want.extend([1, 18]);
        want.extend(Ipv6Addr::LOCALHOST.octets());
        want.extend([0x01, 0xbb]);
        assert_eq!(enc(&specs), want);
        let (back, used) = parse_list(&want).expect("parses");
        assert_eq!(used, want.len());
        assert_eq!(back, specs);
    }

    #[test]
    fn wrong_length_of_known_type_is_rejected() {
        for (t, good) in [(0u8, 6usize), (1, 18), (2, 20), (3, 32)] {
            for len in [0, good - 1, good + 1] {
                let mut b = vec![t, len as u8];
                b.resize(2 + len, 7);
                assert_eq!(
                    LinkSpec::parse(&b),
                    Err(Error::BadLength("link specifier of a known type")),
                    "type {t} len {len}"
                );
            }
        }
    }

    #[test]
    fn truncated_lists_are_rejected() {
        let full = enc(&[
            LinkSpec::RsaId(RsaIdentity([1; 20])),
            LinkSpec::Ed25519Id(Ed25519Identity([2; 32])),
        ]);
        for cut in 0..full.len() {
            assert!(parse_list(&full[..cut]).is_err(), "cut at {cut}");
        }
        // NSPEC promising more specifiers than present.
        assert!(parse_list(&[5, 2, 20]).is_err());
    }

    #[test]
    fn unrecognized_of_known_type_refuses_to_encode() {
        let bad = LinkSpec::Unrecognized {
            ls_type: 2,
            body: Bytes::from_static(&[0; 20]),
        };
        assert!(bad.encode(&mut BytesMut::new()).is_err());
        let big = LinkSpec::Unrecognized {
            ls_type: 9,
            body: vec![0; 256].into(),
        };
        assert_eq!(
            big.encode(&mut BytesMut::new()),
            Err(Error::TooLarge("link specifier body"))
        );
    }

    #[test]
    fn extend_target_rules() {
        let v4 = LinkSpec::OrPortV4("10.0.0.1:1".parse().expect("addr"));
        let v4b = LinkSpec::OrPortV4("10.0.0.2:2".parse().expect("addr"));
        let rsa = LinkSpec::RsaId(RsaIdentity([1; 20]));
        let ed = LinkSpec::Ed25519Id(Ed25519Identity([2; 32]));
        let unk = LinkSpec::Unrecognized {
            ls_type: 77,
            body: Bytes::new(),
        };
        let t = check_extend_targets(&[v4.clone(), rsa.clone(), unk, v4b.clone(), ed.clone()])
            .expect("valid");
        assert_eq!(t.ipv4, Some("10.0.0.1:1".parse().expect("addr")));
        assert_eq!(t.ed_id, Some(Ed25519Identity([2; 32])));
        assert!(check_extend_targets(std::slice::from_ref(&rsa)).is_err());
        assert!(check_extend_targets(std::slice::from_ref(&v4)).is_err());
        assert!(check_extend_targets(&[v4.clone(), rsa.clone(), rsa.clone()]).is_err());
        assert!(check_extend_targets(&[v4, rsa, ed.clone(), ed]).is_err());
    }

    proptest! {
        #[test]
        fn list_round_trip(specs in proptest::collection::vec(arb_linkspec(), 0..12)) {
            let bytes = enc(&specs);
            let (back, used) = parse_list(&bytes).expect("parses");
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, specs);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok((list, used)) = parse_list(&b) {
                // Whatever parsed re-encodes to exactly the bytes it came from.
                prop_assert_eq!(enc(&list), &b[..used]);
            }
            let _ = LinkSpec::parse(&b);
        }
    }
}
