//! Relay commands, tor-spec §6.1 (numbers as in C tor's `or.h`, INTEROP §C.1).
//!
//! Invariant: [`RelayCmd::Unrecognized`] never holds a number that has a named variant;
//! build values with `RelayCmd::from(u8)` so that each byte has exactly one `RelayCmd`.
//! XOFF is 43 and XON is 44 as in C tor (the 2023 tor-spec copy has them swapped).

use crate::error::{Error, Result};
use crate::ids::StreamId;

macro_rules! relay_cmds {
    ($($(#[$m:meta])* $name:ident = $val:expr, $spec:literal;)*) => {
        /// A relay command (the first byte of a relay cell body).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RelayCmd {
            $($(#[$m])* $name,)*
            /// A command number this crate does not name (never one that it does).
            Unrecognized(u8),
        }

        impl From<u8> for RelayCmd {
            fn from(v: u8) -> Self {
                match v {
                    $($val => RelayCmd::$name,)*
                    other => RelayCmd::Unrecognized(other),
                }
            }
        }

        impl From<RelayCmd> for u8 {
            fn from(c: RelayCmd) -> u8 {
                match c {
                    $(RelayCmd::$name => $val,)*
                    RelayCmd::Unrecognized(v) => v,
                }
            }
        }

        impl RelayCmd {
            /// The spec's name, e.g. `"RELAY_BEGIN"`, or `None` for an unrecognized command.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(RelayCmd::$name => Some($spec),)*
                    RelayCmd::Unrecognized(_) => None,
                }
            }
        }
    };
}

relay_cmds! {
    /// Open a stream to host:port (exit).
    Begin = 1, "RELAY_BEGIN";
    /// Stream data.
    Data = 2, "RELAY_DATA";
    /// Close a stream.
    End = 3, "RELAY_END";
    /// Reply to BEGIN / BEGIN_DIR.
    Connected = 4, "RELAY_CONNECTED";
    /// Flow-control window increment (circuit-level with stream 0, stream-level otherwise).
    Sendme = 5, "RELAY_SENDME";
    /// Obsolete TAP extend.
    Extend = 6, "RELAY_EXTEND";
    /// Obsolete TAP extended.
    Extended = 7, "RELAY_EXTENDED";
    /// Tear down the circuit beyond this hop.
    Truncate = 8, "RELAY_TRUNCATE";
    /// The circuit beyond this hop was torn down.
    Truncated = 9, "RELAY_TRUNCATED";
    /// Long-range padding, dropped by the receiver.
    Drop = 10, "RELAY_DROP";
    /// Resolve a hostname.
    Resolve = 11, "RELAY_RESOLVE";
    /// Answer to RESOLVE.
    Resolved = 12, "RELAY_RESOLVED";
    /// Open a directory stream to this relay.
    BeginDir = 13, "RELAY_BEGIN_DIR";
    /// Extend the circuit (CREATE2-style handshake).
    Extend2 = 14, "RELAY_EXTEND2";
    /// Reply to EXTEND2.
    Extended2 = 15, "RELAY_EXTENDED2";
    /// UDP (prop 339, not deployed).
    ConnectUdp = 16, "RELAY_CONNECT_UDP";
    /// UDP (prop 339, not deployed).
    ConnectedUdp = 17, "RELAY_CONNECTED_UDP";
    /// UDP (prop 339, not deployed).
    Datagram = 18, "RELAY_DATAGRAM";
    /// Conflux (prop 329).
    ConfluxLink = 19, "RELAY_CONFLUX_LINK";
    /// Conflux (prop 329).
    ConfluxLinked = 20, "RELAY_CONFLUX_LINKED";
    /// Conflux (prop 329).
    ConfluxLinkedAck = 21, "RELAY_CONFLUX_LINKED_ACK";
    /// Conflux (prop 329).
    ConfluxSwitch = 22, "RELAY_CONFLUX_SWITCH";
    /// Onion services (rend-spec-v3).
    EstablishIntro = 32, "RELAY_ESTABLISH_INTRO";
    /// Onion services (rend-spec-v3).
    EstablishRendezvous = 33, "RELAY_ESTABLISH_RENDEZVOUS";
    /// Onion services (rend-spec-v3).
    Introduce1 = 34, "RELAY_INTRODUCE1";
    /// Onion services (rend-spec-v3).
    Introduce2 = 35, "RELAY_INTRODUCE2";
    /// Onion services (rend-spec-v3).
    Rendezvous1 = 36, "RELAY_RENDEZVOUS1";
    /// Onion services (rend-spec-v3).
    Rendezvous2 = 37, "RELAY_RENDEZVOUS2";
    /// Onion services (rend-spec-v3).
    IntroEstablished = 38, "RELAY_INTRO_ESTABLISHED";
    /// Onion services (rend-spec-v3).
    RendezvousEstablished = 39, "RELAY_RENDEZVOUS_ESTABLISHED";
    /// Onion services (rend-spec-v3).
    IntroduceAck = 40, "RELAY_INTRODUCE_ACK";
    /// Circuit padding negotiation (padding-spec §3).
    PaddingNegotiate = 41, "RELAY_PADDING_NEGOTIATE";
    /// Circuit padding negotiation reply (padding-spec §3).
    PaddingNegotiated = 42, "RELAY_PADDING_NEGOTIATED";
    /// Stream flow control, prop 324 (43 in C tor).
    Xoff = 43, "RELAY_XOFF";
    /// Stream flow control, prop 324 (44 in C tor).
    Xon = 44, "RELAY_XON";
}

/// What a command requires of the StreamID field (tor-spec §6.1 "[control]" marks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamIdReq {
    /// A stream command: the StreamID must be nonzero.
    Nonzero,
    /// A circuit ("control") command: the StreamID must be zero.
    Zero,
    /// Either is allowed: SENDME (zero = circuit-level, nonzero = stream-level), and
    /// commands we do not know.
    Any,
}

impl RelayCmd {
    /// Whether this command addresses a stream (nonzero StreamID) or the circuit (zero).
    pub fn stream_id_req(self) -> StreamIdReq {
        use RelayCmd::*;
        match self {
            Begin | Data | End | Connected | Resolve | Resolved | BeginDir | ConnectUdp
            | ConnectedUdp | Datagram | Xoff | Xon => StreamIdReq::Nonzero,
            Extend
            | Extended
            | Truncate
            | Truncated
            | Drop
            | Extend2
            | Extended2
            | ConfluxLink
            | ConfluxLinked
            | ConfluxLinkedAck
            | ConfluxSwitch
            | EstablishIntro
            | EstablishRendezvous
            | Introduce1
            | Introduce2
            | Rendezvous1
            | Rendezvous2
            | IntroEstablished
            | RendezvousEstablished
            | IntroduceAck
            | PaddingNegotiate
            | PaddingNegotiated => StreamIdReq::Zero,
            Sendme | Unrecognized(_) => StreamIdReq::Any,
        }
    }

    /// True for commands that need a nonzero StreamID.
    pub fn is_stream_cmd(self) -> bool {
        self.stream_id_req() == StreamIdReq::Nonzero
    }

    /// True for circuit-level ("control") commands, whose StreamID must be zero.
    pub fn is_circuit_cmd(self) -> bool {
        self.stream_id_req() == StreamIdReq::Zero
    }

    /// Checks a StreamID against [`RelayCmd::stream_id_req`]; a mismatch is a protocol
    /// violation ([`Error::InvalidValue`]).
    pub fn check_stream_id(self, id: StreamId) -> Result<()> {
        match (self.stream_id_req(), id.0) {
            (StreamIdReq::Nonzero, 0) => Err(Error::InvalidValue("stream command with StreamID 0")),
            (StreamIdReq::Zero, n) if n != 0 => {
                Err(Error::InvalidValue("circuit command with nonzero StreamID"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for RelayCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "RELAY_UNRECOGNIZED({})", u8::from(*self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_names_are_canonical() {
        for b in 0..=255u8 {
            let c = RelayCmd::from(b);
            assert_eq!(u8::from(c), b);
            if let RelayCmd::Unrecognized(v) = c {
                assert_eq!(v, b);
                assert!(c.name().is_none());
            }
        }
    }

    #[test]
    fn numbers_match_c_tor() {
        let expect = [
            (1, RelayCmd::Begin),
            (2, RelayCmd::Data),
            (3, RelayCmd::End),
            (4, RelayCmd::Connected),
            (5, RelayCmd::Sendme),
            (6, RelayCmd::Extend),
            (7, RelayCmd::Extended),
            (8, RelayCmd::Truncate),
            (9, RelayCmd::Truncated),
            (10, RelayCmd::Drop),
            (11, RelayCmd::Resolve),
            (12, RelayCmd::Resolved),
            (13, RelayCmd::BeginDir),
            (14, RelayCmd::Extend2),
            (15, RelayCmd::Extended2),
            (19, RelayCmd::ConfluxLink),
            (22, RelayCmd::ConfluxSwitch),
            (32, RelayCmd::EstablishIntro),
            (40, RelayCmd::IntroduceAck),
            (41, RelayCmd::PaddingNegotiate),
            (42, RelayCmd::PaddingNegotiated),
            (43, RelayCmd::Xoff),
            (44, RelayCmd::Xon),
        ];
        for (n, c) in expect {
            assert_eq!(RelayCmd::from(n), c, "{n}");
        }
        assert_eq!(RelayCmd::from(0), RelayCmd::Unrecognized(0));
        assert_eq!(RelayCmd::from(45), RelayCmd::Unrecognized(45));
        assert_eq!(RelayCmd::Xoff.to_string(), "RELAY_XOFF");
        assert_eq!(RelayCmd::from(200).to_string(), "RELAY_UNRECOGNIZED(200)");
    }

    #[test]
    fn stream_id_rules() {
        assert!(RelayCmd::Begin.check_stream_id(StreamId(0)).is_err());
        assert!(RelayCmd::Begin.check_stream_id(StreamId(7)).is_ok());
        assert!(RelayCmd::Resolve.check_stream_id(StreamId(0)).is_err());
        assert!(RelayCmd::Xon.check_stream_id(StreamId(0)).is_err());
        assert!(RelayCmd::Extend2.check_stream_id(StreamId(1)).is_err());
        assert!(RelayCmd::Extend2.check_stream_id(StreamId(0)).is_ok());
        assert!(RelayCmd::Drop.check_stream_id(StreamId(3)).is_err());
        assert!(RelayCmd::Truncated.check_stream_id(StreamId(3)).is_err());
        assert!(RelayCmd::Sendme.check_stream_id(StreamId(0)).is_ok());
        assert!(RelayCmd::Sendme.check_stream_id(StreamId(9)).is_ok());
        assert!(RelayCmd::from(99).check_stream_id(StreamId(9)).is_ok());
        assert!(RelayCmd::Data.is_stream_cmd() && RelayCmd::Extended2.is_circuit_cmd());
    }
}
