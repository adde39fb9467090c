//! One Tor link (a "channel", tor-spec §2–§4) over TLS: the in-protocol handshake in both
//! roles, then the open channel's cell loop.
//!
//! Invariants:
//! - Every handshake read is bounded in time; every read is bounded in size (one cell is
//!   at most 65535 + 7 bytes; the read buffer never holds more than a few cells). An open
//!   channel has no read deadline: the open-channel driver closes it by C tor's idle rule (no circuits
//!   for a while) and its write timeout.
//! - Any protocol violation closes the channel; the reason is logged at debug and counted
//!   in `edge_channels_closed_total{reason}`. Nothing a peer sends can panic the edge.
//! - A peer counts as a relay only after its certificates (and, when it initiated, its
//!   AUTHENTICATE cell) checked out; otherwise it is a client.

mod open;

pub use open::{
    CellHandler, CellsFuture, ChannelHandle, ChannelPolicy, QueueError, READ_BURST, link_level,
};

use std::net::IpAddr;
use std::time::Duration;

use crate::unix_now as now_secs;
use bytes::{Bytes, BytesMut};
use proto::cell::msg::{ChanMsg, Netinfo};
use proto::cell::{ChanCell, ChanCmd, ChanCodec, negotiate_link_version};
use proto::link::{self, AuthInputs, LinkCerts, PeerIdentity};
use proto::{CircId, Ed25519Identity, RsaIdentity};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Link versions we speak, in VERSIONS order.
pub const OUR_VERSIONS: &[u16] = &[3, 4, 5];
/// Largest cell on the wire: 4-byte id, command, 2-byte length, 65535-byte payload.
const MAX_CELL: usize = 4 + 1 + 2 + 65535;
/// Free space a read from the link asks for: one TLS record's plaintext (16 KiB).
const READ_SPACE: usize = 16 * 1024;

/// Why a channel ended.
#[derive(Debug, thiserror::Error)]
pub enum ChanError {
    /// Socket or TLS error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer was too slow (handshake or idle timeout).
    #[error("timeout: {0}")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("closed by peer")]
    Closed,
    /// A cell that is not allowed here.
    #[error("unexpected {cmd:?} during {state}")]
    Unexpected {
        /// The command.
        cmd: ChanCmd,
        /// Where.
        state: &'static str,
    },
    /// No common link version, or a malformed VERSIONS cell.
    #[error("no common link version")]
    Versions,
    /// A malformed cell, or certificates/authentication that did not check out.
    #[error("protocol: {0}")]
    Proto(#[from] proto::Error),
    /// The peer is not the relay we meant to reach.
    #[error("peer identity does not match the expected one")]
    WrongIdentity,
    /// TLS exporter or certificate unavailable.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ChanError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ChanError::Io(_) => "io",
            ChanError::Timeout(_) => "timeout",
            ChanError::Closed => "closed",
            ChanError::Unexpected { .. } => "unexpected_cell",
            ChanError::Versions => "versions",
            ChanError::Proto(_) => "protocol",
            ChanError::WrongIdentity => "wrong_identity",
            ChanError::Tls(_) => "tls",
        }
    }
}

/// What the TLS layer must tell the link handshake.
pub trait TlsInfo {
    /// RFC 5705 exporter, 32 bytes, with a context.
    fn export(&self, label: &[u8], context: &[u8]) -> Result<[u8; 32], ChanError>;
    /// DER of the peer's certificate, if it sent one.
    fn peer_cert_der(&self) -> Option<Vec<u8>>;
}

impl<IO> TlsInfo for tokio_rustls::server::TlsStream<IO> {
    fn export(&self, label: &[u8], context: &[u8]) -> Result<[u8; 32], ChanError> {
        self.get_ref()
            .1
            .export_keying_material([0u8; 32], label, Some(context))
            .map_err(|e| ChanError::Tls(e.to_string()))
    }
    fn peer_cert_der(&self) -> Option<Vec<u8>> {
        self.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().map(|c| c.to_vec()))
    }
}

impl<IO> TlsInfo for tokio_rustls::client::TlsStream<IO> {
    fn export(&self, label: &[u8], context: &[u8]) -> Result<[u8; 32], ChanError> {
        self.get_ref()
            .1
            .export_keying_material([0u8; 32], label, Some(context))
            .map_err(|e| ChanError::Tls(e.to_string()))
    }
    fn peer_cert_der(&self) -> Option<Vec<u8>> {
        self.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().map(|c| c.to_vec()))
    }
}

/// Who is on the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An unauthenticated initiator: a client (or a relay that chose not to authenticate).
    Client,
    /// A relay whose identity we verified.
    Relay(PeerIdentity),
}

/// What the handshake needs from this edge.
#[derive(Clone, Debug)]
pub struct LinkContext {
    /// Our certificates and AUTHENTICATE key.
    pub certs: LinkCerts,
    /// Our advertised addresses (NETINFO "my addresses").
    pub my_addrs: Vec<IpAddr>,
}

impl LinkContext {
    /// A context for a fresh, throw-away relay identity at `now` (UNIX seconds) on
    /// 127.0.0.1: what tests and tools need to speak the link protocol as some relay.
    ///
    /// # Errors
    /// Key or certificate generation failed.
    pub fn ephemeral(
        rng: &mut (impl rand::RngCore + rand::CryptoRng),
        now: u64,
    ) -> Result<(proto::keys::EdgeKeys, Self), proto::Error> {
        let files = proto::keys::RelayKeys::generate(rng, now, 86400)?.to_files()?;
        let keys = proto::keys::EdgeKeys::from_files(&files)?;
        let (certs, _) = LinkCerts::generate(rng, &keys, now, 86400)?;
        let ctx = LinkContext {
            certs,
            my_addrs: vec![IpAddr::from([127, 0, 0, 1])],
        };
        Ok((keys, ctx))
    }
}

/// A framed, handshaken link.
pub struct Channel<S> {
    stream: S,
    codec: ChanCodec,
    rbuf: BytesMut,
    /// Who the peer is.
    pub peer: Peer,
    /// Negotiated link version.
    pub link_version: u16,
    /// Whether we initiated the TLS connection.
    pub we_initiated: bool,
}

impl<S> std::fmt::Debug for Channel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("link_version", &self.link_version)
            .field("we_initiated", &self.we_initiated)
            .finish_non_exhaustive()
    }
}

impl<S> Channel<S> {
    /// The stream, the framing and any bytes read past the handshake: for a caller that
    /// drives the open link itself (a test's hostile peer) instead of [`Channel::spawn`].
    pub fn into_parts(self) -> (S, ChanCodec, BytesMut) {
        (self.stream, self.codec, self.rbuf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + TlsInfo> Channel<S> {
    fn new(stream: S, we_initiated: bool) -> Self {
        Channel {
            stream,
            codec: ChanCodec::new(),
            rbuf: BytesMut::with_capacity(4096),
            peer: Peer::Client,
            link_version: 0,
            we_initiated,
        }
    }

    /// Reads one cell, waiting at most `limit`.
    ///
    /// # Errors
    /// [`ChanError::Timeout`], [`ChanError::Closed`] or I/O errors.
    pub async fn read_cell(&mut self, limit: Duration) -> Result<ChanCell, ChanError> {
        read_cell_from(&mut self.stream, &self.codec, &mut self.rbuf, Some(limit)).await
    }

    /// Encodes and sends one message; returns the framed bytes (for SLOG/CLOG).
    ///
    /// # Errors
    /// Encoding or I/O errors.
    pub async fn send(&mut self, circ_id: CircId, msg: &ChanMsg) -> Result<BytesMut, ChanError> {
        let cell = ChanCell {
            circ_id,
            cmd: msg.cmd(),
            payload: msg.encode()?,
        };
        let mut out = BytesMut::new();
        self.codec.encode(&cell, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(out)
    }

    fn framed(&self, cell: &ChanCell) -> Result<BytesMut, ChanError> {
        let mut out = BytesMut::new();
        self.codec.encode(cell, &mut out)?;
        Ok(out)
    }

    async fn flush(&mut self) -> Result<(), ChanError> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Responder handshake (tor-spec §4): wait for VERSIONS, answer VERSIONS, CERTS,
    /// AUTH_CHALLENGE and NETINFO, then accept either NETINFO (a client) or CERTS +
    /// AUTHENTICATE + NETINFO (a relay).
    ///
    /// # Errors
    /// Any [`ChanError`]; the caller closes the connection.
    pub async fn accept(
        stream: S,
        ctx: &LinkContext,
        peer_ip: IpAddr,
        limit: Duration,
    ) -> Result<Self, ChanError> {
        let deadline = tokio::time::Instant::now() + limit;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut ch = Channel::new(stream, false);
        let mut clog = Sha256::new();
        let mut slog = Sha256::new();
        // SERVER_VERSIONS_WAIT: only VERSIONS, VPADDING or AUTHORIZE.
        let versions = loop {
            let cell = ch.read_cell(left()).await?;
            clog.update(ch.framed(&cell)?);
            match ChanMsg::parse(cell.cmd, cell.payload)? {
                ChanMsg::Versions(v) => break v,
                ChanMsg::Vpadding(_) | ChanMsg::Authorize => {}
                other => {
                    return Err(ChanError::Unexpected {
                        cmd: other.cmd(),
                        state: "waiting for VERSIONS",
                    });
                }
            }
        };
        let v = negotiate_link_version(&versions).ok_or(ChanError::Versions)?;
        slog.update(
            ch.send(CircId::LINK, &ChanMsg::Versions(OUR_VERSIONS.to_vec()))
                .await?,
        );
        ch.codec.set_link_version(v);
        ch.link_version = v;
        slog.update(ch.send(CircId::LINK, &ctx.certs.responder_certs()).await?);
        let mut challenge = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
        slog.update(
            ch.send(
                CircId::LINK,
                &ChanMsg::AuthChallenge {
                    challenge,
                    methods: vec![link::AUTH_METHOD_ED25519_SHA256_RFC5705],
                },
            )
            .await?,
        );
        let slog: [u8; 32] = slog.finalize().into();
        ch.send(CircId::LINK, &netinfo(peer_ip, &ctx.my_addrs))
            .await?;
        ch.flush().await?;

        // OR_HANDSHAKING_V3: CERTS, AUTHENTICATE, NETINFO, padding.
        let mut initiator: Option<(PeerIdentity, ed25519_dalek::VerifyingKey)> = None;
        loop {
            let cell = ch.read_cell(left()).await?;
            let framed = ch.framed(&cell)?;
            match ChanMsg::parse(cell.cmd, cell.payload)? {
                ChanMsg::Padding | ChanMsg::Vpadding(_) | ChanMsg::Authorize => {
                    clog.update(framed);
                }
                ChanMsg::Certs(certs) if initiator.is_none() && ch.peer == Peer::Client => {
                    clog.update(framed);
                    initiator = Some(link::check_initiator_certs(&certs, now_secs())?);
                }
                ChanMsg::Authenticate { auth_type, body } if ch.peer == Peer::Client => {
                    let Some((peer, auth_key)) = initiator.take() else {
                        return Err(ChanError::Unexpected {
                            cmd: ChanCmd::Authenticate,
                            state: "handshake before CERTS",
                        });
                    };
                    if auth_type != link::AUTH_METHOD_ED25519_SHA256_RFC5705 {
                        return Err(
                            proto::Error::Handshake("unsupported AUTHENTICATE method").into()
                        );
                    }
                    let cid = peer.rsa_id_sha256();
                    let scert: [u8; 32] = Sha256::digest(&ctx.certs.link_cert_der).into();
                    let inputs = AuthInputs {
                        cid,
                        sid: ctx.certs.rsa_id_sha256(),
                        cid_ed: peer.ed.0,
                        sid_ed: ctx.certs.ed_identity.0,
                        slog,
                        clog: clog.clone().finalize().into(),
                        scert,
                        tlssecrets: ch.stream.export(link::TLS_EXPORTER_LABEL, &cid)?,
                    };
                    link::check_authenticator(&body, &inputs, &auth_key)?;
                    ch.peer = Peer::Relay(peer);
                }
                ChanMsg::Netinfo(n) => {
                    // A client, or an authenticated relay finishing the handshake. CERTS
                    // without AUTHENTICATE leaves the peer a client.
                    note_clock_skew(&n);
                    return Ok(ch);
                }
                other => {
                    return Err(ChanError::Unexpected {
                        cmd: other.cmd(),
                        state: "responder handshake",
                    });
                }
            }
        }
    }

    /// Initiator handshake: VERSIONS, then check the responder's CERTS against its TLS
    /// certificate and, if `authenticate`, answer its AUTH_CHALLENGE with CERTS and
    /// AUTHENTICATE before NETINFO. `expected` is the identity we meant to reach.
    ///
    /// # Errors
    /// Any [`ChanError`]; [`ChanError::WrongIdentity`] when the peer is someone else.
    pub async fn connect(
        stream: S,
        ctx: &LinkContext,
        expected_rsa: Option<RsaIdentity>,
        expected_ed: Option<Ed25519Identity>,
        authenticate: bool,
        peer_ip: IpAddr,
        limit: Duration,
    ) -> Result<Self, ChanError> {
        let deadline = tokio::time::Instant::now() + limit;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut ch = Channel::new(stream, true);
        let mut clog = Sha256::new();
        let mut slog = Sha256::new();
        clog.update(
            ch.send(CircId::LINK, &ChanMsg::Versions(OUR_VERSIONS.to_vec()))
                .await?,
        );
        ch.flush().await?;
        let cell = ch.read_cell(left()).await?;
        slog.update(ch.framed(&cell)?);
        let ChanMsg::Versions(theirs) = ChanMsg::parse(cell.cmd, cell.payload)? else {
            return Err(ChanError::Versions);
        };
        let v = negotiate_link_version(&theirs).ok_or(ChanError::Versions)?;
        ch.codec.set_link_version(v);
        ch.link_version = v;
        let tls_der = ch
            .stream
            .peer_cert_der()
            .ok_or_else(|| ChanError::Tls("responder sent no certificate".into()))?;
        let tls_sha: [u8; 32] = Sha256::digest(&tls_der).into();
        let mut peer: Option<PeerIdentity> = None;
        let mut challenge_seen = false;
        loop {
            let cell = ch.read_cell(left()).await?;
            let framed = ch.framed(&cell)?;
            match ChanMsg::parse(cell.cmd, cell.payload)? {
                ChanMsg::Padding | ChanMsg::Vpadding(_) | ChanMsg::Authorize => {
                    if !challenge_seen {
                        slog.update(framed);
                    }
                }
                ChanMsg::Certs(certs) if peer.is_none() => {
                    slog.update(framed);
                    let p = link::check_responder_certs(&certs, &tls_sha, now_secs())?;
                    if expected_rsa.is_some_and(|r| r != p.rsa)
                        || expected_ed.is_some_and(|e| e != p.ed)
                    {
                        return Err(ChanError::WrongIdentity);
                    }
                    peer = Some(p);
                }
                ChanMsg::AuthChallenge { methods, .. } if peer.is_some() && !challenge_seen => {
                    slog.update(framed);
                    challenge_seen = true;
                    if !methods.contains(&link::AUTH_METHOD_ED25519_SHA256_RFC5705) {
                        return Err(proto::Error::Handshake(
                            "responder offers no usable auth method",
                        )
                        .into());
                    }
                }
                ChanMsg::Netinfo(n) => {
                    note_clock_skew(&n);
                    let Some(p) = peer.take() else {
                        return Err(ChanError::Unexpected {
                            cmd: ChanCmd::Netinfo,
                            state: "NETINFO before CERTS",
                        });
                    };
                    if authenticate && challenge_seen {
                        clog.update(ch.send(CircId::LINK, &ctx.certs.initiator_certs()).await?);
                        let cid = ctx.certs.rsa_id_sha256();
                        let inputs = AuthInputs {
                            cid,
                            sid: p.rsa_id_sha256(),
                            cid_ed: ctx.certs.ed_identity.0,
                            sid_ed: p.ed.0,
                            slog: slog.clone().finalize().into(),
                            clog: clog.clone().finalize().into(),
                            scert: tls_sha,
                            tlssecrets: ch.stream.export(link::TLS_EXPORTER_LABEL, &cid)?,
                        };
                        let mut rnd = [0u8; 24];
                        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
                        let body = link::build_authenticator(&inputs, &rnd, &ctx.certs.auth_key);
                        ch.send(
                            CircId::LINK,
                            &ChanMsg::Authenticate {
                                auth_type: link::AUTH_METHOD_ED25519_SHA256_RFC5705,
                                body: Bytes::from(body),
                            },
                        )
                        .await?;
                    }
                    ch.send(CircId::LINK, &netinfo(peer_ip, &ctx.my_addrs))
                        .await?;
                    ch.flush().await?;
                    ch.peer = Peer::Relay(p);
                    return Ok(ch);
                }
                other => {
                    return Err(ChanError::Unexpected {
                        cmd: other.cmd(),
                        state: "initiator handshake",
                    });
                }
            }
        }
    }
}

/// Reads framed cells from one direction of a link.
struct CellReader<R> {
    r: R,
    codec: ChanCodec,
    rbuf: BytesMut,
}

impl<R: AsyncRead + Unpin> CellReader<R> {
    /// The next cell, however long it takes (an open channel has no read deadline).
    async fn read_cell(&mut self) -> Result<ChanCell, ChanError> {
        read_cell_from(&mut self.r, &self.codec, &mut self.rbuf, None).await
    }

    /// The next cell if a whole one is buffered already (no I/O).
    fn buffered_cell(&mut self) -> Result<Option<ChanCell>, ChanError> {
        Ok(self.codec.decode(&mut self.rbuf)?)
    }
}

async fn read_cell_from<R: AsyncRead + Unpin>(
    r: &mut R,
    codec: &ChanCodec,
    rbuf: &mut BytesMut,
    limit: Option<Duration>,
) -> Result<ChanCell, ChanError> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        if let Some(cell) = codec.decode(rbuf)? {
            return Ok(cell);
        }
        if rbuf.len() > MAX_CELL {
            // Cannot happen with a correct decoder; refuse rather than grow.
            return Err(proto::Error::TooLarge("cell").into());
        }
        // Room for a whole TLS record's worth of cells, so one read can bring a burst.
        rbuf.reserve(READ_SPACE);
        let read = match deadline {
            Some(d) => tokio::time::timeout_at(d, r.read_buf(rbuf))
                .await
                .map_err(|_| ChanError::Timeout("waiting for a cell"))?,
            None => r.read_buf(rbuf).await,
        };
        let n = match read {
            Ok(n) => n,
            // Tor peers routinely close without a TLS close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(ChanError::Closed);
        }
    }
}

/// Tolerates any clock skew, as C tor does, but counts (and logs at debug) peers whose
/// NETINFO time is more than an hour off ours. Clients send 0, which is not skew.
fn note_clock_skew(n: &Netinfo) {
    if n.timestamp == 0 {
        return;
    }
    let skew = i64::from(n.timestamp) - i64::try_from(now_secs()).unwrap_or(i64::MAX);
    if skew.abs() > 3600 {
        metrics::counter!("edge_peer_clock_skew_total").increment(1);
        tracing::debug!(
            skew_secs = skew,
            "peer clock differs from ours by over an hour"
        );
    }
}

fn netinfo(peer_ip: IpAddr, my_addrs: &[IpAddr]) -> ChanMsg {
    let ts = u32::try_from(now_secs()).unwrap_or(u32::MAX);
    ChanMsg::Netinfo(Netinfo {
        timestamp: ts,
        other_addr: peer_ip,
        my_addrs: my_addrs.to_vec(),
    })
}
