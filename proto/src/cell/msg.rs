//! Typed channel messages (tor-spec §4 link handshake, §5 circuit management, §7.2 and
//! padding-spec §2.5 PADDING_NEGOTIATE).
//!
//! [`ChanMsg::parse`] takes a command and payload and never panics. Fixed-size payloads are
//! read from the front and their zero padding is ignored. [`ChanMsg::encode`] produces a
//! payload that [`super::ChanCodec`] can frame: fixed-size messages are zero-padded to 509
//! bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use super::{CELL_PAYLOAD_LEN, ChanCmd};
use crate::{Error, Result};

/// Why a circuit was destroyed (tor-spec §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum DestroyReason {
    None,
    Protocol,
    Internal,
    Requested,
    Hibernating,
    ResourceLimit,
    ConnectFailed,
    OrIdentity,
    ChannelClosed,
    Finished,
    Timeout,
    Destroyed,
    NoSuchService,
    /// A reason this implementation does not know.
    Unrecognized(u8),
}

impl DestroyReason {
    /// The reason's name in tor-spec §5.4, lower case (bounded: for metric labels).
    pub fn name(self) -> &'static str {
        use DestroyReason::*;
        match self {
            None => "none",
            Protocol => "protocol",
            Internal => "internal",
            Requested => "requested",
            Hibernating => "hibernating",
            ResourceLimit => "resourcelimit",
            ConnectFailed => "connectfailed",
            OrIdentity => "or_identity",
            ChannelClosed => "channel_closed",
            Finished => "finished",
            Timeout => "timeout",
            Destroyed => "destroyed",
            NoSuchService => "nosuchservice",
            Unrecognized(_) => "unrecognized",
        }
    }
}

impl From<u8> for DestroyReason {
    fn from(b: u8) -> Self {
        use DestroyReason::*;
        match b {
            0 => None,
            1 => Protocol,
            2 => Internal,
            3 => Requested,
            4 => Hibernating,
            5 => ResourceLimit,
            6 => ConnectFailed,
            7 => OrIdentity,
            8 => ChannelClosed,
            9 => Finished,
            10 => Timeout,
            11 => Destroyed,
            12 => NoSuchService,
            other => Unrecognized(other),
        }
    }
}

impl From<DestroyReason> for u8 {
    fn from(r: DestroyReason) -> u8 {
        use DestroyReason::*;
        match r {
            None => 0,
            Protocol => 1,
            Internal => 2,
            Requested => 3,
            Hibernating => 4,
            ResourceLimit => 5,
            ConnectFailed => 6,
            OrIdentity => 7,
            ChannelClosed => 8,
            Finished => 9,
            Timeout => 10,
            Destroyed => 11,
            NoSuchService => 12,
            Unrecognized(b) => b,
        }
    }
}

/// PADDING_NEGOTIATE's command byte (padding-spec §2.5).
pub const PADDING_NEGOTIATE_STOP: u8 = 1;
/// PADDING_NEGOTIATE's command byte (padding-spec §2.5).
pub const PADDING_NEGOTIATE_START: u8 = 2;

/// A channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChanMsg {
    /// Link padding (fixed-size, ignored).
    Padding,
    /// Variable-length padding of the given length (ignored).
    Vpadding(u16),
    /// Supported link protocol versions (tor-spec §4.1).
    Versions(Vec<u16>),
    /// Certificates as (type, body), in order (tor-spec §4.2). Types are unique.
    Certs(Vec<(u8, Bytes)>),
    /// The responder's challenge and the authentication methods it accepts (§4.3).
    AuthChallenge {
        /// 32 random bytes.
        challenge: [u8; 32],
        /// Accepted methods; 0.4.9 offers only 3.
        methods: Vec<u16>,
    },
    /// The initiator's authentication (§4.4).
    Authenticate {
        /// Method (3 = Ed25519-SHA256-RFC5705).
        auth_type: u16,
        /// The authenticator.
        body: Bytes,
    },
    /// Reserved (ignored).
    Authorize,
    /// Time and addresses (tor-spec §4.5).
    Netinfo(Netinfo),
    /// CREATE_FAST's 20 bytes of key material from the client (§5.1.4).
    CreateFast {
        /// X.
        x: [u8; 20],
    },
    /// CREATED_FAST (§5.1.4).
    CreatedFast {
        /// Y.
        y: [u8; 20],
        /// The derivative key KH, proving the relay knows X.
        kh: [u8; 20],
    },
    /// CREATE2 (§5.1): handshake type and client handshake data.
    Create2 {
        /// HTYPE.
        htype: u16,
        /// HDATA.
        hdata: Bytes,
    },
    /// CREATED2 (§5.1): server handshake data.
    Created2 {
        /// HDATA.
        hdata: Bytes,
    },
    /// Legacy TAP CREATE: kept opaque so the receiver can answer DESTROY.
    Create(Bytes),
    /// Legacy TAP CREATED.
    Created(Bytes),
    /// A RELAY cell's 509-byte body.
    Relay(Bytes),
    /// A RELAY_EARLY cell's 509-byte body.
    RelayEarly(Bytes),
    /// DESTROY with its reason.
    Destroy(DestroyReason),
    /// PADDING_NEGOTIATE (link v5).
    PaddingNegotiate {
        /// Version; 0 is the only one defined.
        version: u8,
        /// [`PADDING_NEGOTIATE_START`] or [`PADDING_NEGOTIATE_STOP`].
        command: u8,
        /// Low end of the inactivity timeout range, ms.
        ito_low_ms: u16,
        /// High end, ms.
        ito_high_ms: u16,
    },
    /// A command we do not understand.
    Unrecognized {
        /// The command byte.
        cmd: u8,
        /// Its payload.
        payload: Bytes,
    },
}

/// NETINFO's contents (tor-spec §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netinfo {
    /// Seconds since the epoch; clients send 0.
    pub timestamp: u32,
    /// The sender's view of the receiver's address.
    pub other_addr: IpAddr,
    /// The sender's own addresses. Malformed entries are skipped on parse.
    pub my_addrs: Vec<IpAddr>,
}

fn take<'a>(b: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8]> {
    if b.len() < n {
        return Err(Error::Truncated(what));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u8(b: &mut &[u8], what: &'static str) -> Result<u8> {
    Ok(take(b, 1, what)?[0])
}

fn take_u16(b: &mut &[u8], what: &'static str) -> Result<u16> {
    let s = take(b, 2, what)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn take_array<const N: usize>(b: &mut &[u8], what: &'static str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(b, N, what)?);
    Ok(out)
}

/// Reads one NETINFO address: `Ok(Some)` for IPv4/IPv6 of the right length, `Ok(None)` for
/// a well-framed entry of another kind.
fn take_addr(b: &mut &[u8]) -> Result<Option<IpAddr>> {
    let atype = take_u8(b, "netinfo address type")?;
    let alen = take_u8(b, "netinfo address length")?;
    let aval = take(b, usize::from(alen), "netinfo address")?;
    Ok(match (atype, aval.len()) {
        (4, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            aval[0], aval[1], aval[2], aval[3],
        ))),
        (6, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(aval);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    })
}

fn put_addr(out: &mut BytesMut, a: &IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out.put_slice(&[4, 4]);
            out.put_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.put_slice(&[6, 16]);
            out.put_slice(&v6.octets());
        }
    }
}

impl ChanMsg {
    /// The command this message is sent with.
    pub fn cmd(&self) -> ChanCmd {
        use ChanMsg::*;
        match self {
            Padding => ChanCmd::Padding,
            Vpadding(_) => ChanCmd::Vpadding,
            Versions(_) => ChanCmd::Versions,
            Certs(_) => ChanCmd::Certs,
            AuthChallenge { .. } => ChanCmd::AuthChallenge,
            Authenticate { .. } => ChanCmd::Authenticate,
            Authorize => ChanCmd::Authorize,
            Netinfo(_) => ChanCmd::Netinfo,
            CreateFast { .. } => ChanCmd::CreateFast,
            CreatedFast { .. } => ChanCmd::CreatedFast,
            Create2 { .. } => ChanCmd::Create2,
            Created2 { .. } => ChanCmd::Created2,
            Create(_) => ChanCmd::Create,
            Created(_) => ChanCmd::Created,
            Relay(_) => ChanCmd::Relay,
            RelayEarly(_) => ChanCmd::RelayEarly,
            Destroy(_) => ChanCmd::Destroy,
            PaddingNegotiate { .. } => ChanCmd::PaddingNegotiate,
            Unrecognized { cmd, .. } => ChanCmd::from(*cmd),
        }
    }

    /// Parses the payload of a cell with command `cmd`.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the payload is too short for its fields,
    /// [`Error::BadLength`] for odd-length VERSIONS or a fixed-size payload that is not
    /// exactly 509 bytes, [`Error::InvalidValue`] for duplicate CERTS types or a NETINFO
    /// OTHERADDR that is not IPv4/IPv6 (C tor closes the link on that too).
    pub fn parse(cmd: ChanCmd, payload: Bytes) -> Result<Self> {
        if !cmd.is_var_len() && payload.len() != CELL_PAYLOAD_LEN {
            return Err(Error::BadLength(
                "fixed-size cell payload must be 509 bytes",
            ));
        }
        let mut b: &[u8] = &payload;
        let msg = match cmd {
            ChanCmd::Padding => ChanMsg::Padding,
            ChanCmd::Vpadding => ChanMsg::Vpadding(
                u16::try_from(payload.len()).map_err(|_| Error::BadLength("vpadding"))?,
            ),
            ChanCmd::Authorize => ChanMsg::Authorize,
            ChanCmd::Versions => {
                if !b.len().is_multiple_of(2) {
                    return Err(Error::BadLength("VERSIONS payload of odd length"));
                }
                ChanMsg::Versions(
                    b.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            ChanCmd::Certs => {
                let n = take_u8(&mut b, "CERTS count")?;
                let mut certs: Vec<(u8, Bytes)> = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let ty = take_u8(&mut b, "cert type")?;
                    let len = usize::from(take_u16(&mut b, "cert length")?);
                    let start = payload.len() - b.len();
                    take(&mut b, len, "cert body")?;
                    if certs.iter().any(|(t, _)| *t == ty) {
                        return Err(Error::InvalidValue("duplicate certificate type in CERTS"));
                    }
                    certs.push((ty, payload.slice(start..start + len)));
                }
                if !b.is_empty() {
                    return Err(Error::TrailingBytes("CERTS"));
                }
                ChanMsg::Certs(certs)
            }
            ChanCmd::AuthChallenge => {
                let challenge = take_array::<32>(&mut b, "AUTH_CHALLENGE challenge")?;
                let n = take_u16(&mut b, "AUTH_CHALLENGE method count")?;
                let mut methods = Vec::new();
                for _ in 0..n {
                    methods.push(take_u16(&mut b, "AUTH_CHALLENGE method")?);
                }
                ChanMsg::AuthChallenge { challenge, methods }
            }
            ChanCmd::Authenticate => {
                let auth_type = take_u16(&mut b, "AUTHENTICATE type")?;
                let len = usize::from(take_u16(&mut b, "AUTHENTICATE length")?);
                let start = payload.len() - b.len();
                take(&mut b, len, "AUTHENTICATE body")?;
                ChanMsg::Authenticate {
                    auth_type,
                    body: payload.slice(start..start + len),
                }
            }
            ChanCmd::Netinfo => {
                let timestamp = u32::from_be_bytes(take_array::<4>(&mut b, "NETINFO time")?);
                let other_addr = take_addr(&mut b)?
                    .ok_or(Error::InvalidValue("NETINFO OTHERADDR is not IPv4 or IPv6"))?;
                let n = take_u8(&mut b, "NETINFO address count")?;
                let mut my_addrs = Vec::new();
                for _ in 0..n {
                    match take_addr(&mut b) {
                        Ok(Some(a)) => my_addrs.push(a),
                        Ok(None) => {}
                        // A truncated trailing entry: keep what was read, as C tor does.
                        Err(_) => break,
                    }
                }
                ChanMsg::Netinfo(Netinfo {
                    timestamp,
                    other_addr,
                    my_addrs,
                })
            }
            ChanCmd::CreateFast => ChanMsg::CreateFast {
                x: take_array(&mut b, "CREATE_FAST")?,
            },
            ChanCmd::CreatedFast => ChanMsg::CreatedFast {
                y: take_array(&mut b, "CREATED_FAST Y")?,
                kh: take_array(&mut b, "CREATED_FAST KH")?,
            },
            ChanCmd::Create2 => {
                let htype = take_u16(&mut b, "CREATE2 HTYPE")?;
                let hlen = usize::from(take_u16(&mut b, "CREATE2 HLEN")?);
                take(&mut b, hlen, "CREATE2 HDATA")?;
                ChanMsg::Create2 {
                    htype,
                    hdata: payload.slice(4..4 + hlen),
                }
            }
            ChanCmd::Created2 => {
                let hlen = usize::from(take_u16(&mut b, "CREATED2 HLEN")?);
                take(&mut b, hlen, "CREATED2 HDATA")?;
                ChanMsg::Created2 {
                    hdata: payload.slice(2..2 + hlen),
                }
            }
            ChanCmd::Create => ChanMsg::Create(payload),
            ChanCmd::Created => ChanMsg::Created(payload),
            ChanCmd::Relay => ChanMsg::Relay(payload),
            ChanCmd::RelayEarly => ChanMsg::RelayEarly(payload),
            ChanCmd::Destroy => ChanMsg::Destroy(DestroyReason::from(take_u8(&mut b, "DESTROY")?)),
            ChanCmd::PaddingNegotiate => ChanMsg::PaddingNegotiate {
                version: take_u8(&mut b, "PADDING_NEGOTIATE version")?,
                command: take_u8(&mut b, "PADDING_NEGOTIATE command")?,
                ito_low_ms: take_u16(&mut b, "PADDING_NEGOTIATE low")?,
                ito_high_ms: take_u16(&mut b, "PADDING_NEGOTIATE high")?,
            },
            ChanCmd::Unrecognized(cmd) => ChanMsg::Unrecognized { cmd, payload },
        };
        Ok(msg)
    }

    /// Encodes the payload (zero-padded to 509 bytes for fixed-size commands).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the contents do not fit the cell: a fixed-size body over
    /// 509 bytes, more than 255 certificates, a certificate over 65535 bytes.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = BytesMut::with_capacity(CELL_PAYLOAD_LEN);
        match self {
            ChanMsg::Padding | ChanMsg::Authorize => {}
            ChanMsg::Vpadding(n) => out.put_bytes(0, usize::from(*n)),
            ChanMsg::Versions(vs) => vs.iter().for_each(|v| out.put_u16(*v)),
            ChanMsg::Certs(certs) => {
                out.put_u8(u8::try_from(certs.len()).map_err(|_| Error::TooLarge("CERTS count"))?);
                for (ty, body) in certs {
                    out.put_u8(*ty);
                    out.put_u16(
                        u16::try_from(body.len()).map_err(|_| Error::TooLarge("certificate"))?,
                    );
                    out.put_slice(body);
                }
            }
            ChanMsg::AuthChallenge { challenge, methods } => {
                out.put_slice(challenge);
                out.put_u16(u16::try_from(methods.len()).map_err(|_| Error::TooLarge("methods"))?);
                methods.iter().for_each(|m| out.put_u16(*m));
            }
            ChanMsg::Authenticate { auth_type, body } => {
                out.put_u16(*auth_type);
                out.put_u16(
                    u16::try_from(body.len()).map_err(|_| Error::TooLarge("authenticator"))?,
                );
                out.put_slice(body);
            }
            ChanMsg::Netinfo(n) => {
                out.put_u32(n.timestamp);
                put_addr(&mut out, &n.other_addr);
                out.put_u8(u8::try_from(n.my_addrs.len()).map_err(|_| Error::TooLarge("NETINFO"))?);
                n.my_addrs.iter().for_each(|a| put_addr(&mut out, a));
            }
            ChanMsg::CreateFast { x } => out.put_slice(x),
            ChanMsg::CreatedFast { y, kh } => {
                out.put_slice(y);
                out.put_slice(kh);
            }
            ChanMsg::Create2 { htype, hdata } => {
                out.put_u16(*htype);
                out.put_u16(u16::try_from(hdata.len()).map_err(|_| Error::TooLarge("CREATE2"))?);
                out.put_slice(hdata);
            }
            ChanMsg::Created2 { hdata } => {
                out.put_u16(u16::try_from(hdata.len()).map_err(|_| Error::TooLarge("CREATED2"))?);
                out.put_slice(hdata);
            }
            ChanMsg::Create(b)
            | ChanMsg::Created(b)
            | ChanMsg::Relay(b)
            | ChanMsg::RelayEarly(b) => out.put_slice(b),
            ChanMsg::Destroy(r) => out.put_u8((*r).into()),
            ChanMsg::PaddingNegotiate {
                version,
                command,
                ito_low_ms,
                ito_high_ms,
            } => {
                out.put_u8(*version);
                out.put_u8(*command);
                out.put_u16(*ito_low_ms);
                out.put_u16(*ito_high_ms);
            }
            ChanMsg::Unrecognized { payload, .. } => out.put_slice(payload),
        }
        if !self.cmd().is_var_len() {
            if out.len() > CELL_PAYLOAD_LEN {
                return Err(Error::TooLarge("fixed-size cell body"));
            }
            out.resize(CELL_PAYLOAD_LEN, 0);
        } else if out.len() > usize::from(u16::MAX) {
            return Err(Error::TooLarge("variable-length cell body"));
        }
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(m: &ChanMsg) -> ChanMsg {
        ChanMsg::parse(m.cmd(), m.encode().unwrap()).unwrap()
    }

    #[test]
    fn netinfo_bad_other_addr_is_refused() {
        let mut p = vec![0u8; 509];
        p[4] = 5; // ATYPE hostname
        p[5] = 4;
        assert!(ChanMsg::parse(ChanCmd::Netinfo, p.into()).is_err());
    }

    #[test]
    fn netinfo_skips_bad_myaddr_and_accepts_zero_time() {
        let mut p = vec![0u8; 509];
        p[4..10].copy_from_slice(&[4, 4, 127, 0, 0, 1]);
        p[10] = 2;
        p[11..14].copy_from_slice(&[4, 1, 9]); // IPv4 with length 1: skipped
        p[14..20].copy_from_slice(&[4, 4, 10, 0, 0, 2]);
        let m = ChanMsg::parse(ChanCmd::Netinfo, p.into()).unwrap();
        assert_eq!(
            m,
            ChanMsg::Netinfo(Netinfo {
                timestamp: 0,
                other_addr: "127.0.0.1".parse().unwrap(),
                my_addrs: vec!["10.0.0.2".parse().unwrap()],
            })
        );
    }

    #[test]
    fn certs_duplicates_and_truncation_are_refused() {
        let dup = ChanMsg::Certs(vec![
            (4, Bytes::from_static(b"a")),
            (4, Bytes::from_static(b"b")),
        ]);
        assert!(ChanMsg::parse(ChanCmd::Certs, dup.encode().unwrap()).is_err());
        let ok = ChanMsg::Certs(vec![(4, Bytes::from_static(b"abc"))])
            .encode()
            .unwrap();
        assert!(ChanMsg::parse(ChanCmd::Certs, ok.slice(..ok.len() - 1)).is_err());
    }

    #[test]
    fn create2_hlen_beyond_body_is_refused() {
        let mut p = vec![0u8; 509];
        p[0..4].copy_from_slice(&[0, 2, 0x02, 0x00]); // HLEN 512 > 505
        assert!(ChanMsg::parse(ChanCmd::Create2, p.into()).is_err());
    }

    #[test]
    fn odd_versions_is_refused() {
        assert!(ChanMsg::parse(ChanCmd::Versions, Bytes::from_static(&[0, 3, 0])).is_err());
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_msg() -> impl Strategy<Value = ChanMsg> {
        prop_oneof![
            Just(ChanMsg::Padding),
            any::<u16>().prop_map(|n| ChanMsg::Vpadding(n % 2000)),
            proptest::collection::vec(any::<u16>(), 0..10).prop_map(ChanMsg::Versions),
            proptest::collection::btree_map(any::<u8>(), arb_bytes(200), 0..6)
                .prop_map(|m| ChanMsg::Certs(m.into_iter().collect())),
            (
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u16>(), 0..4)
            )
                .prop_map(|(challenge, methods)| ChanMsg::AuthChallenge { challenge, methods }),
            (any::<u16>(), arb_bytes(400))
                .prop_map(|(auth_type, body)| ChanMsg::Authenticate { auth_type, body }),
            (
                any::<u32>(),
                arb_addr(),
                proptest::collection::vec(arb_addr(), 0..5)
            )
                .prop_map(|(timestamp, other_addr, my_addrs)| ChanMsg::Netinfo(
                    Netinfo {
                        timestamp,
                        other_addr,
                        my_addrs
                    }
                )),
            any::<[u8; 20]>().prop_map(|x| ChanMsg::CreateFast { x }),
            (any::<[u8; 20]>(), any::<[u8; 20]>())
                .prop_map(|(y, kh)| ChanMsg::CreatedFast { y, kh }),
            (any::<u16>(), arb_bytes(505))
                .prop_map(|(htype, hdata)| ChanMsg::Create2 { htype, hdata }),
            arb_bytes(507).prop_map(|hdata| ChanMsg::Created2 { hdata }),
            any::<u8>().prop_map(|r| ChanMsg::Destroy(DestroyReason::from(r))),
            (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()).prop_map(
                |(version, command, ito_low_ms, ito_high_ms)| {
                    ChanMsg::PaddingNegotiate {
                        version,
                        command,
                        ito_low_ms,
                        ito_high_ms,
                    }
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in arb_msg()) {
            prop_assert_eq!(round_trip(&m), m);
        }

        #[test]
        fn relay_bodies_are_kept_whole(body in proptest::collection::vec(any::<u8>(), 509)) {
            let m = ChanMsg::Relay(body.into());
            prop_assert_eq!(round_trip(&m), m);
        }

        #[test]
        fn parse_never_panics(cmd in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = ChanMsg::parse(ChanCmd::from(cmd), payload.into());
        }
    }
}
