//! Typed relay messages: the Data part of a relay cell, tor-spec §5.1.2, §5.4, §6.2–6.4,
//! §7.3–7.4 and proposal 289 (authenticated SENDME).
//!
//! Invariants:
//! - `parse` never panics and never reads past the Length-delimited data; truncated or
//!   contradictory fields are errors. Trailing bytes after a complete message are ignored
//!   where C tor ignores them (BEGIN after FLAGS, EXTEND2/EXTENDED2 after HDATA, SENDME
//!   v1 after the digest, TRUNCATED after the reason, END after its fields).
//! - `encode` either writes a message that `parse` turns back into an equal value, or
//!   returns an error; it never writes something ambiguous (e.g. CONNECTED 0.0.0.0).
//! - An END always carries its reason byte, and reason 0 is never success
//!   (it stays [`EndReason::Unrecognized`]`(0)`), INTEROP trap 29.
//! - SENDME v1 must have DATA_LEN exactly 20, as C tor requires on tor1 circuits
//!   (INTEROP trap 14; the spec's "≥ 20" is looser).

use super::body::{RELAY_DATA_MAX, RELAY_HEADER_LEN, RelayBody, encode_header_in_place};
use super::cmd::RelayCmd;
use super::wire::{Put, Reader, SliceWriter};
use crate::error::{Error, Result};
use crate::ids::StreamId;
use crate::linkspec::{self, LinkSpec};
use bytes::{Bytes, BytesMut};
use rand_core::{CryptoRng, RngCore};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// BEGIN flag bit 1: IPv6 is acceptable (tor-spec §6.2).
pub const BEGIN_FLAG_IPV6_OK: u32 = 1 << 0;
/// BEGIN flag bit 2: IPv4 is not acceptable.
pub const BEGIN_FLAG_IPV4_NOT_OK: u32 = 1 << 1;
/// BEGIN flag bit 3: prefer IPv6 when both families resolve.
pub const BEGIN_FLAG_IPV6_PREFERRED: u32 = 1 << 2;

/// TTL meaning "absent" (tor-spec §6.3: an absent TTL is treated as 0xffffffff).
pub const TTL_ABSENT: u32 = u32::MAX;

macro_rules! end_reasons {
    ($($(#[$m:meta])* $name:ident = $val:expr;)*) => {
        /// Why a stream was closed (RELAY_END reason, tor-spec §6.3).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EndReason {
            $($(#[$m])* $name,)*
            /// Any other value (receivers must accept these). Never a named value; 0 and
            /// 15 (no longer valid in 0.4.9) land here.
            Unrecognized(u8),
        }
        impl From<u8> for EndReason {
            fn from(v: u8) -> Self {
                match v {
                    $($val => EndReason::$name,)*
                    other => EndReason::Unrecognized(other),
                }
            }
        }
        impl From<EndReason> for u8 {
            fn from(r: EndReason) -> u8 {
                match r {
                    $(EndReason::$name => $val,)*
                    EndReason::Unrecognized(v) => v,
                }
            }
        }
    };
}

end_reasons! {
    /// Catch-all.
    Misc = 1;
    /// Hostname lookup failed.
    ResolveFailed = 2;
    /// The remote host refused the connection.
    ConnectRefused = 3;
    /// The exit policy refuses this address or port.
    ExitPolicy = 4;
    /// The circuit is being destroyed.
    Destroy = 5;
    /// The connection was closed normally.
    Done = 6;
    /// Connecting timed out.
    Timeout = 7;
    /// No route to the destination.
    NoRoute = 8;
    /// The relay is hibernating.
    Hibernating = 9;
    /// Internal error at the relay.
    Internal = 10;
    /// The relay lacks resources.
    ResourceLimit = 11;
    /// The connection was reset.
    ConnReset = 12;
    /// Tor protocol violation.
    TorProtocol = 13;
    /// BEGIN_DIR sent to a relay that is not a directory.
    NotDirectory = 14;
}

/// RELAY_BEGIN: `ADDRESS ":" PORT NUL [FLAGS u32]` (tor-spec §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// Hostname, dotted-quad IPv4, or IPv6 (without the brackets used on the wire).
    /// Non-empty ASCII without NUL, `[` or `]`.
    pub addr: String,
    /// Target port, 1–65535.
    pub port: u16,
    /// FLAGS bits (`BEGIN_FLAG_*`); 0 is encoded by omitting the field, as C tor does.
    pub flags: u32,
}

/// RELAY_CONNECTED (tor-spec §6.2). `addr` is `None` for the empty body (BEGIN_DIR replies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    /// The address connected to and its TTL in seconds ([`TTL_ABSENT`] when the IPv4
    /// form was sent without one).
    pub addr: Option<(IpAddr, u32)>,
}

/// RELAY_END (tor-spec §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Why the stream closed.
    pub reason: EndReason,
    /// For [`EndReason::ExitPolicy`] only: the refused address and its TTL.
    pub addr: Option<(IpAddr, u32)>,
}

impl End {
    /// An END with just a reason.
    pub fn new(reason: EndReason) -> Self {
        End { reason, addr: None }
    }
}

/// RELAY_SENDME body (tor-spec §7.3.1, proposal 289).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sendme {
    /// Version 0 or an empty body (also what every stream-level SENDME is).
    V0,
    /// Version 1: the 20-byte running digest of the DATA cell that triggered it.
    V1 {
        /// The digest (DATA_LEN is exactly 20).
        digest: [u8; 20],
    },
    /// A version this crate does not know (≥ 2); the spec says to close the circuit,
    /// which the caller decides.
    Unrecognized {
        /// The VERSION byte (never 0 or 1).
        version: u8,
        /// Everything after the VERSION byte.
        body: Bytes,
    },
}

/// RELAY_EXTEND2 (tor-spec §5.1.2): `NSPEC | specs | HTYPE u16 | HLEN u16 | HDATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extend2 {
    /// Where to extend to (see [`linkspec::check_extend_targets`]).
    pub linkspecs: Vec<LinkSpec>,
    /// Handshake type (2 = ntor, 3 = ntor v3).
    pub htype: u16,
    /// The client's handshake data.
    pub hdata: Bytes,
}

/// RELAY_EXTENDED2 (tor-spec §5.1.2): `HLEN u16 | HDATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extended2 {
    /// The server's handshake reply.
    pub hdata: Bytes,
}

/// RELAY_RESOLVE (tor-spec §6.4): `hostname NUL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolve {
    /// The name to look up (or an in-addr.arpa name); no NUL inside.
    pub hostname: String,
}

/// One answer in a RELAY_RESOLVED (tor-spec §6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedVal {
    /// Type 0x00: a hostname (not NUL-terminated, at most 255 bytes).
    Hostname(Bytes),
    /// Type 0x04.
    Ipv4(Ipv4Addr),
    /// Type 0x06.
    Ipv6(Ipv6Addr),
    /// Type 0xF0 (the value is ignored and encoded empty).
    TransientError,
    /// Type 0xF1 (the value is ignored and encoded empty).
    NontransientError,
    /// Another type, kept verbatim; `rtype` is never one of the above.
    Unrecognized {
        /// The type byte.
        rtype: u8,
        /// The value (at most 255 bytes).
        value: Bytes,
    },
}

const RES_HOSTNAME: u8 = 0x00;
const RES_IPV4: u8 = 0x04;
const RES_IPV6: u8 = 0x06;
const RES_ERR_TRANSIENT: u8 = 0xF0;
const RES_ERR_NONTRANSIENT: u8 = 0xF1;

/// RELAY_RESOLVED (tor-spec §6.4): a sequence of `type u8 | len u8 | value | TTL u32`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The answers with their TTLs, in wire order.
    pub answers: Vec<(ResolvedVal, u32)>,
}

/// A typed relay message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayMsg {
    /// RELAY_BEGIN.
    Begin(Begin),
    /// RELAY_BEGIN_DIR (body ignored on receipt, empty when sent).
    BeginDir,
    /// RELAY_CONNECTED.
    Connected(Connected),
    /// RELAY_DATA: 1–498 bytes.
    Data(Bytes),
    /// RELAY_END.
    End(End),
    /// RELAY_SENDME.
    Sendme(Sendme),
    /// RELAY_EXTEND2.
    Extend2(Extend2),
    /// RELAY_EXTENDED2.
    Extended2(Extended2),
    /// RELAY_TRUNCATE (body ignored on receipt, empty when sent).
    Truncate,
    /// RELAY_TRUNCATED: one DESTROY-style reason byte (tor-spec §5.4).
    Truncated {
        /// The DESTROY reason code.
        reason: u8,
    },
    /// RELAY_DROP (body ignored on receipt, empty when sent).
    Drop,
    /// RELAY_RESOLVE.
    Resolve(Resolve),
    /// RELAY_RESOLVED.
    Resolved(Resolved),
    /// Any command not modelled above (EXTEND, conflux, onion services, padding,
    /// XON/XOFF, unknown numbers), body kept verbatim. `cmd` is never a modelled one.
    Unrecognized {
        /// The command.
        cmd: RelayCmd,
        /// The data, verbatim.
        body: Bytes,
    },
}

fn is_modelled(cmd: RelayCmd) -> bool {
    use RelayCmd::*;
    matches!(
        cmd,
        Begin
            | BeginDir
            | Connected
            | Data
            | End
            | Sendme
            | Extend2
            | Extended2
            | Truncate
            | Truncated
            | Drop
            | Resolve
            | Resolved
    )
}

impl RelayMsg {
    /// The relay command this message is sent with.
    pub fn cmd(&self) -> RelayCmd {
        match self {
            RelayMsg::Begin(_) => RelayCmd::Begin,
            RelayMsg::BeginDir => RelayCmd::BeginDir,
            RelayMsg::Connected(_) => RelayCmd::Connected,
            RelayMsg::Data(_) => RelayCmd::Data,
            RelayMsg::End(_) => RelayCmd::End,
            RelayMsg::Sendme(_) => RelayCmd::Sendme,
            RelayMsg::Extend2(_) => RelayCmd::Extend2,
            RelayMsg::Extended2(_) => RelayCmd::Extended2,
            RelayMsg::Truncate => RelayCmd::Truncate,
            RelayMsg::Truncated { .. } => RelayCmd::Truncated,
            RelayMsg::Drop => RelayCmd::Drop,
            RelayMsg::Resolve(_) => RelayCmd::Resolve,
            RelayMsg::Resolved(_) => RelayCmd::Resolved,
            RelayMsg::Unrecognized { cmd, .. } => *cmd,
        }
    }

    /// Parses the Length-delimited data of a relay cell carrying `cmd`.
    pub fn parse(cmd: RelayCmd, data: &[u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        Ok(match cmd {
            RelayCmd::Begin => RelayMsg::Begin(parse_begin(&mut r)?),
            RelayCmd::BeginDir => RelayMsg::BeginDir,
            RelayCmd::Connected => RelayMsg::Connected(parse_connected(&mut r)?),
            RelayCmd::Data => {
                if data.is_empty() {
                    return Err(Error::InvalidValue("empty RELAY_DATA"));
                }
                RelayMsg::Data(Bytes::copy_from_slice(data))
            }
            RelayCmd::End => RelayMsg::End(parse_end(&mut r)?),
            RelayCmd::Sendme => RelayMsg::Sendme(parse_sendme(&mut r)?),
            RelayCmd::Extend2 => {
                let linkspecs = linkspec::read_list(&mut r)?;
                let htype = r.u16("EXTEND2 HTYPE")?;
                let hlen = r.u16("EXTEND2 HLEN")?;
                let hdata = r.take(usize::from(hlen), "EXTEND2 HDATA")?;
                RelayMsg::Extend2(Extend2 {
                    linkspecs,
                    htype,
                    hdata: Bytes::copy_from_slice(hdata),
                })
            }
            RelayCmd::Extended2 => {
                let hlen = r.u16("EXTENDED2 HLEN")?;
                let hdata = r.take(usize::from(hlen), "EXTENDED2 HDATA")?;
                RelayMsg::Extended2(Extended2 {
                    hdata: Bytes::copy_from_slice(hdata),
                })
            }
            RelayCmd::Truncate => RelayMsg::Truncate,
            RelayCmd::Truncated => RelayMsg::Truncated {
                reason: r.u8("TRUNCATED reason")?,
            },
            RelayCmd::Drop => RelayMsg::Drop,
            RelayCmd::Resolve => {
                let name = r.take_until(0, "RESOLVE hostname NUL")?;
                let hostname = std::str::from_utf8(name)
                    .map_err(|_| Error::InvalidValue("RESOLVE hostname not UTF-8"))?;
                RelayMsg::Resolve(Resolve {
                    hostname: hostname.to_owned(),
                })
            }
            RelayCmd::Resolved => RelayMsg::Resolved(parse_resolved(&mut r)?),
            other => RelayMsg::Unrecognized {
                cmd: other,
                body: Bytes::copy_from_slice(data),
            },
        })
    }

    fn write(&self, w: &mut impl Put) -> Result<()> {
        match self {
            RelayMsg::Begin(b) => write_begin(b, w),
            RelayMsg::BeginDir | RelayMsg::Truncate | RelayMsg::Drop => Ok(()),
            RelayMsg::Connected(c) => match c.addr {
                None => Ok(()),
                Some((IpAddr::V4(a), ttl)) => {
                    if a.is_unspecified() {
                        return Err(Error::InvalidValue("CONNECTED to 0.0.0.0 is ambiguous"));
                    }
                    w.put(&a.octets())?;
                    w.put_u32(ttl)
                }
                Some((IpAddr::V6(a), ttl)) => {
                    w.put(&[0, 0, 0, 0, 6])?;
                    w.put(&a.octets())?;
                    w.put_u32(ttl)
                }
            },
            RelayMsg::Data(d) => {
                if d.is_empty() {
                    return Err(Error::InvalidValue("empty RELAY_DATA"));
                }
                w.put(d)
            }
            RelayMsg::End(e) => {
                w.put_u8(e.reason.into())?;
                match (e.reason, e.addr) {
                    (_, None) => Ok(()),
                    (EndReason::ExitPolicy, Some((addr, ttl))) => {
                        match addr {
                            IpAddr::V4(a) => w.put(&a.octets())?,
                            IpAddr::V6(a) => w.put(&a.octets())?,
                        }
                        w.put_u32(ttl)
                    }
                    (_, Some(_)) => Err(Error::InvalidValue("END address without EXITPOLICY")),
                }
            }
            RelayMsg::Sendme(s) => match s {
                Sendme::V0 => Ok(()),
                Sendme::V1 { digest } => {
                    w.put(&[1, 0, 20])?;
                    w.put(digest)
                }
                Sendme::Unrecognized { version, body } => {
                    if *version <= 1 {
                        return Err(Error::InvalidValue(
                            "Unrecognized SENDME of a known version",
                        ));
                    }
                    w.put_u8(*version)?;
                    w.put(body)
                }
            },
            RelayMsg::Extend2(e) => {
                linkspec::write_list(&e.linkspecs, w)?;
                w.put_u16(e.htype)?;
                put_u16_len(w, &e.hdata, "EXTEND2 HDATA")
            }
            RelayMsg::Extended2(e) => put_u16_len(w, &e.hdata, "EXTENDED2 HDATA"),
            RelayMsg::Truncated { reason } => w.put_u8(*reason),
            RelayMsg::Resolve(q) => {
                if q.hostname.as_bytes().contains(&0) {
                    return Err(Error::InvalidValue("NUL in RESOLVE hostname"));
                }
                w.put(q.hostname.as_bytes())?;
                w.put_u8(0)
            }
            RelayMsg::Resolved(res) => res.answers.iter().try_for_each(|(val, ttl)| {
                write_resolved_val(val, w)?;
                w.put_u32(*ttl)
            }),
            RelayMsg::Unrecognized { cmd, body } => {
                if is_modelled(*cmd) {
                    return Err(Error::InvalidValue(
                        "Unrecognized message with a modelled command",
                    ));
                }
                w.put(body)
            }
        }
    }

    /// Appends the encoded data (not the relay header) to `out`. Fails if the message is
    /// invalid or longer than the 498 bytes a relay cell carries.
    pub fn encode_onto(&self, out: &mut BytesMut) -> Result<()> {
        let mut buf = [0u8; RELAY_DATA_MAX];
        let mut w = SliceWriter::new(&mut buf);
        self.write(&mut w)?;
        let n = w.written();
        out.extend_from_slice(&buf[..n]);
        Ok(())
    }

    /// The encoded data (not the relay header) as `Bytes`.
    pub fn encode(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.encode_onto(&mut out)?;
        Ok(out.freeze())
    }

    /// Writes this message as a complete plaintext relay cell body, in place and without
    /// allocating: header with Recognized = 0 and Digest = 0, data, padding. The StreamID
    /// must suit the command ([`RelayCmd::check_stream_id`]).
    pub fn encode_to_body<R: RngCore + CryptoRng>(
        &self,
        stream_id: StreamId,
        body: &mut RelayBody,
        rng: &mut R,
    ) -> Result<()> {
        let cmd = self.cmd();
        cmd.check_stream_id(stream_id)?;
        let mut w = SliceWriter::new(&mut body[RELAY_HEADER_LEN..]);
        self.write(&mut w)?;
        let n = w.written();
        encode_header_in_place(body, cmd, stream_id, n, rng)
    }
}

fn put_u16_len(w: &mut impl Put, data: &[u8], what: &'static str) -> Result<()> {
    let n = u16::try_from(data.len()).map_err(|_| Error::TooLarge(what))?;
    w.put_u16(n)?;
    w.put(data)
}

fn parse_begin(r: &mut Reader<'_>) -> Result<Begin> {
    let addrport = r.take_until(0, "BEGIN ADDRPORT NUL")?;
    let (addr, port) = if let Some(rest) = addrport.strip_prefix(b"[") {
        let close = rest
            .iter()
            .position(|&b| b == b']')
            .ok_or(Error::InvalidValue("BEGIN IPv6 address without ']'"))?;
        let after = &rest[close + 1..];
        let port = after
            .strip_prefix(b":")
            .ok_or(Error::InvalidValue("BEGIN without ':' before the port"))?;
        (&rest[..close], port)
    } else {
        let colon = addrport
            .iter()
            .position(|&b| b == b':')
            .ok_or(Error::InvalidValue("BEGIN without ':' before the port"))?;
        (&addrport[..colon], &addrport[colon + 1..])
    };
    if addr.is_empty() || !addr.is_ascii() || addr.iter().any(|&b| b == b'[' || b == b']') {
        return Err(Error::InvalidValue("BEGIN address"));
    }
    let port = parse_port(port)?;
    let flags = if r.remaining() >= 4 {
        r.u32("BEGIN flags")?
    } else {
        0
    };
    Ok(Begin {
        // ASCII was checked above, so this is valid UTF-8.
        addr: String::from_utf8_lossy(addr).into_owned(),
        port,
        flags,
    })
}

fn parse_port(p: &[u8]) -> Result<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(Error::InvalidValue("BEGIN port"));
    }
    let v = p
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    match u16::try_from(v) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Error::InvalidValue("BEGIN port out of 1-65535")),
    }
}

fn write_begin(b: &Begin, w: &mut impl Put) -> Result<()> {
    let a = b.addr.as_bytes();
    if a.is_empty() || !a.is_ascii() || a.iter().any(|&c| matches!(c, 0 | b'[' | b']')) {
        return Err(Error::InvalidValue("BEGIN address"));
    }
    if b.port == 0 {
        return Err(Error::InvalidValue("BEGIN port 0"));
    }
    if a.contains(&b':') {
        w.put_u8(b'[')?;
        w.put(a)?;
        w.put_u8(b']')?;
    } else {
        w.put(a)?;
    }
    w.put_u8(b':')?;
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut p = b.port;
    while p > 0 {
        digits[n] = b'0' + (p % 10) as u8;
        p /= 10;
        n += 1;
    }
    digits[..n].reverse();
    w.put(&digits[..n])?;
    w.put_u8(0)?;
    if b.flags != 0 {
        w.put_u32(b.flags)?;
    }
    Ok(())
}

fn parse_connected(r: &mut Reader<'_>) -> Result<Connected> {
    if r.is_empty() {
        return Ok(Connected { addr: None });
    }
    let v4 = r.take_array::<4>("CONNECTED address")?;
    let addr = if v4 != [0; 4] {
        // C tor accepts a missing TTL here (connected_cell_parse).
        let ttl = if r.remaining() >= 4 {
            r.u32("CONNECTED TTL")?
        } else {
            TTL_ABSENT
        };
        (IpAddr::V4(v4.into()), ttl)
    } else {
        if r.u8("CONNECTED address type")? != 6 {
            return Err(Error::InvalidValue("CONNECTED address type is not 6"));
        }
        let a = Ipv6Addr::from(r.take_array::<16>("CONNECTED IPv6 address")?);
        (IpAddr::V6(a), r.u32("CONNECTED TTL")?)
    };
    Ok(Connected { addr: Some(addr) })
}

fn parse_end(r: &mut Reader<'_>) -> Result<End> {
    if r.is_empty() {
        // tor-spec §6.3: treat an empty END as REASON_MISC.
        return Ok(End::new(EndReason::Misc));
    }
    let reason = EndReason::from(r.u8("END reason")?);
    if reason != EndReason::ExitPolicy {
        return Ok(End::new(reason));
    }
    // "If the address is absent or is the wrong length, the RELAY_END message should be
    // processed anyway" (tor-spec §6.3).
    let addr = match r.remaining() {
        4 | 8 => IpAddr::V4(r.take_array::<4>("END address")?.into()),
        16 | 20 => IpAddr::V6(r.take_array::<16>("END address")?.into()),
        _ => return Ok(End::new(reason)),
    };
    let ttl = if r.remaining() == 4 {
        r.u32("END TTL")?
    } else {
        TTL_ABSENT
    };
    Ok(End {
        reason,
        addr: Some((addr, ttl)),
    })
}

fn parse_sendme(r: &mut Reader<'_>) -> Result<Sendme> {
    if r.is_empty() {
        return Ok(Sendme::V0);
    }
    match r.u8("SENDME version")? {
        0 => Ok(Sendme::V0),
        1 => {
            let len = r.u16("SENDME DATA_LEN")?;
            if len != 20 {
                return Err(Error::BadLength("SENDME v1 DATA_LEN must be 20"));
            }
            Ok(Sendme::V1 {
                digest: r.take_array("SENDME v1 digest")?,
            })
        }
        version => Ok(Sendme::Unrecognized {
            version,
            body: Bytes::copy_from_slice(r.rest()),
        }),
    }
}

fn parse_resolved(r: &mut Reader<'_>) -> Result<Resolved> {
    let mut answers = Vec::new();
    while !r.is_empty() {
        let rtype = r.u8("RESOLVED type")?;
        let len = usize::from(r.u8("RESOLVED length")?);
        let value = r.take(len, "RESOLVED value")?;
        let val = match rtype {
            RES_HOSTNAME => ResolvedVal::Hostname(Bytes::copy_from_slice(value)),
            RES_IPV4 => ResolvedVal::Ipv4(Ipv4Addr::from(
                <[u8; 4]>::try_from(value).map_err(|_| Error::BadLength("RESOLVED IPv4"))?,
            )),
            RES_IPV6 => ResolvedVal::Ipv6(Ipv6Addr::from(
                <[u8; 16]>::try_from(value).map_err(|_| Error::BadLength("RESOLVED IPv6"))?,
            )),
            RES_ERR_TRANSIENT => ResolvedVal::TransientError,
            RES_ERR_NONTRANSIENT => ResolvedVal::NontransientError,
            other => ResolvedVal::Unrecognized {
                rtype: other,
                value: Bytes::copy_from_slice(value),
            },
        };
        answers.push((val, r.u32("RESOLVED TTL")?));
    }
    Ok(Resolved { answers })
}

fn write_resolved_val(v: &ResolvedVal, w: &mut impl Put) -> Result<()> {
    let (rtype, value): (u8, &[u8]) = match v {
        ResolvedVal::Hostname(h) => (RES_HOSTNAME, h),
        ResolvedVal::Ipv4(a) => return w.put(&[RES_IPV4, 4]).and_then(|_| w.put(&a.octets())),
        ResolvedVal::Ipv6(a) => return w.put(&[RES_IPV6, 16]).and_then(|_| w.put(&a.octets())),
        ResolvedVal::TransientError => (RES_ERR_TRANSIENT, &[]),
        ResolvedVal::NontransientError => (RES_ERR_NONTRANSIENT, &[]),
        ResolvedVal::Unrecognized { rtype, value } => {
            if matches!(
                *rtype,
                RES_HOSTNAME | RES_IPV4 | RES_IPV6 | RES_ERR_TRANSIENT | RES_ERR_NONTRANSIENT
            ) {
                return Err(Error::InvalidValue(
                    "Unrecognized RESOLVED answer of a known type",
                ));
            }
            (*rtype, value)
        }
    };
    let len = u8::try_from(value.len()).map_err(|_| Error::TooLarge("RESOLVED value"))?;
    w.put(&[rtype, len])?;
    w.put(value)
}
