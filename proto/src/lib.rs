//! `proto`: Tor's wire protocol as a sans-io library.
//!
//! Everything here takes bytes (plus injected time and randomness) and returns bytes,
//! keys or events. No sockets, no clocks, no global RNG: the binaries (`edge`,
//! `circuit-worker`, `dirauth`) own I/O and call into this crate, and tests replay the
//! specification's and C tor's vectors by injecting keys and clocks.
//!
//! Module map (names follow the Tor specifications so a reader can grep them):
//! - [`cell`]: channel cells, tor-spec §3–§4 (framing for link versions 3–5, VERSIONS,
//!   CERTS, AUTH_CHALLENGE, AUTHENTICATE, NETINFO, CREATE*, DESTROY, PADDING_NEGOTIATE).
//! - [`relay_cell`]: relay cells and messages, tor-spec §6 (BEGIN … RESOLVED, SENDME, EXTEND2).
//! - [`link`]: the link handshake's CERTS checks and AUTHENTICATE (tor-spec §4).
//! - [`netdoc`]: directory documents (dir-spec): descriptors, microdescriptors, votes,
//!   consensuses, authority certificates, exit policies.
//! - [`linkspec`]: link specifiers, tor-spec §5.1.2.
//! - [`cert`]: certificates (cert-spec): Ed25519 certs, the RSA identity X.509 cert, the
//!   RSA→Ed25519 crosscert, the descriptor's onion-key crosscerts.
//! - [`keys`]: RSA and Ed25519 key types and the relay identity bundle (C tor's key files).
//! - [`circuit`]: the relay side of a circuit as a sans-io engine (events in, actions out).
//! - [`circuitmux`]: a channel's outbound cell queues, one per circuit, capped and served
//!   in turn.
//! - [`handshake`]: circuit handshakes: CREATE_FAST (KDF-TOR), ntor, ntor v3.
//! - [`crypto`]: the tor1 relay-crypto layer (tor-spec §5.2, §6.1).
//!
//! The I/O the binaries share (config, telemetry, signals, key files, the gRPC schema and
//! the tokio link driver) is the sibling crate `proto-io` (`proto/io`); this crate's
//! normal dependencies hold no async runtime, socket or HTTP code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cell;
pub mod cert;
pub mod circuit;
pub mod circuitmux;
pub mod crypto;
pub mod error;
pub mod handshake;
pub mod ids;
pub mod keys;
pub mod link;
pub mod linkspec;
pub mod netdoc;
pub mod relay_cell;

pub use error::{Error, Result};
pub use ids::{CircId, Ed25519Identity, RsaIdentity, StreamId};
