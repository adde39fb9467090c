//! The relay side of one circuit as a sans-io state machine (tor-spec §5–§7): a circuit
//! worker feeds it events (cells from either side, stream events) and executes the
//! [`Action`]s it returns. Every rule of the relay role lives here, so tests assert exact
//! action lists without sockets or actors (STYLE.md, openraft's `Engine`).
//!
//! Invariants:
//! - The tor1 layer is touched once per cell, in order; a cell we cannot accept ends the
//!   circuit with [`Action::Destroy`] (and, if extended, DESTROY forward), never a panic.
//! - RELAY_EARLY: at most [`MAX_RELAY_EARLY`] arrive from the client side; one from the
//!   next hop, or an EXTEND2 in a plain RELAY cell, is a protocol violation (trap 15).
//! - Flow control (tor-spec §7.3–7.4): circuit package window 1000 (+100 per SENDME),
//!   stream windows 500 (+50). We send a circuit SENDME v1 (authenticated with the digest
//!   of the cell that triggered it, prop 289) after every 100 DATA cells delivered. A
//!   stream SENDME goes out once 50 more cells can be taken *and* the caller has written
//!   all but [`STREAM_FLUSH_SLACK`] cells of that stream's data to its connection
//!   ([`RelayCircuit::stream_flushed`]; C tor's `connection_edge_consider_sending_sendme`
//!   with `connection_outbuf_too_full`), so a destination that stops reading holds at
//!   most one stream window of data here. Only DATA cells count (tor-spec §7.4).
//! - Streams are opened by the caller after its exit policy ([`Action::OpenStream`]); the
//!   engine never names an address it did not get from a BEGIN.

use std::collections::HashMap;

use bytes::Bytes;
use rand_core::CryptoRngCore;

use crate::cell::ChanCmd;
use crate::cell::msg::DestroyReason;
use crate::crypto::tor1::RelayLayer;
use crate::handshake::{fast, ntor};
use crate::linkspec::LinkSpec;
use crate::relay_cell::msg::{Begin, Connected, End, EndReason, Extended2, RelayMsg, Sendme};
use crate::relay_cell::{RelayBody, RelayCellRef, RelayCmd};
use crate::{Error, RsaIdentity, StreamId};

#[cfg(test)]
mod tests;

/// RELAY_EARLY cells a circuit may receive from the client side.
pub const MAX_RELAY_EARLY: u8 = 8;
/// Initial circuit package/deliver window.
pub const CIRCWINDOW_START: u16 = 1000;
/// Circuit window increment per SENDME.
pub const CIRCWINDOW_INCREMENT: u16 = 100;
/// Initial stream window.
pub const STREAMWINDOW_START: u16 = 500;
/// Stream window increment per SENDME.
pub const STREAMWINDOW_INCREMENT: u16 = 50;
/// Handshake type of ntor in CREATE2.
pub const HTYPE_NTOR: u16 = 2;
/// Cells of a stream's data that may still be unwritten when its SENDME goes out (C tor:
/// an exit connection's outbuf over 10 cells' worth holds the SENDME back).
pub const STREAM_FLUSH_SLACK: u32 = 10;

/// What a circuit asks its worker to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a cell toward the client (on the circuit's inbound channel and id).
    ToPrev {
        /// RELAY, CREATED*, DESTROY.
        cmd: ChanCmd,
        /// 509-byte payload.
        payload: Bytes,
    },
    /// Send a cell toward the next hop (outbound channel and id).
    ToNext {
        /// RELAY, RELAY_EARLY, DESTROY.
        cmd: ChanCmd,
        /// 509-byte payload.
        payload: Bytes,
    },
    /// Open a channel to this target and send CREATE2 (EXTEND2).
    Extend {
        /// Where.
        linkspecs: Vec<LinkSpec>,
        /// CREATE2 HTYPE.
        htype: u16,
        /// CREATE2 HDATA.
        hdata: Bytes,
    },
    /// Connect a stream (after checking the exit policy).
    OpenStream {
        /// The stream.
        stream: StreamId,
        /// BEGIN's request.
        begin: Begin,
    },
    /// Connect a BEGIN_DIR stream to the directory backend, or answer it with
    /// `stream_connected(Err(NotDirectory))` when there is none.
    OpenDirStream {
        /// The stream.
        stream: StreamId,
    },
    /// Write stream data to its TCP connection.
    StreamWrite {
        /// The stream.
        stream: StreamId,
        /// Data.
        data: Bytes,
    },
    /// Close a stream's TCP connection (the client sent END, or the circuit ended).
    CloseStream {
        /// The stream.
        stream: StreamId,
    },
    /// A stream may be read again (its windows reopened).
    ResumeStream {
        /// The stream.
        stream: StreamId,
    },
    /// The circuit is over; forget it. DESTROY cells, if any, precede this action.
    Close,
}

/// What the circuit's onion keys are.
#[derive(Debug)]
pub struct ServerKeys<'a> {
    /// Current and previous ntor onion keys.
    pub ntor: &'a [ntor::NtorOnionKey],
    /// Our RSA identity (ntor NODEID).
    pub rsa_id: &'a RsaIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextHop {
    None,
    Pending,
    Open,
}

#[derive(Debug)]
struct Stream {
    package_window: u16,
    deliver_window: u16,
    connected: bool,
    /// Data read from the exit connection beyond the windows, sent when they reopen.
    /// Bounded by the credit the caller handed out ([`RelayCircuit::stream_credit`]).
    pending: std::collections::VecDeque<Bytes>,
    /// The exit connection ended while data was still pending: END follows the data.
    end_after_pending: Option<EndReason>,
    /// DATA cells handed to the caller ([`Action::StreamWrite`]) not yet reported written.
    unflushed: u32,
}

/// One circuit at this relay.
pub struct RelayCircuit {
    layer: RelayLayer,
    early_left: u8,
    next: NextHop,
    package_window: u16,
    deliver_window: u16,
    streams: HashMap<StreamId, Stream>,
    /// The `pending` cells of all streams together.
    pending_cells: usize,
    closed: bool,
}

impl std::fmt::Debug for RelayCircuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCircuit")
            .field("next", &self.next)
            .field("streams", &self.streams.len())
            .field("package_window", &self.package_window)
            .finish_non_exhaustive()
    }
}

fn destroy_payload(reason: DestroyReason) -> Bytes {
    crate::cell::ChanCell::destroy(crate::CircId::LINK, reason).payload
}

fn padded(data: &[u8]) -> Bytes {
    let mut p = vec![0u8; crate::cell::CELL_PAYLOAD_LEN];
    p[..data.len()].copy_from_slice(data);
    Bytes::from(p)
}

/// Maps an engine error to the DESTROY reason C tor would send.
pub fn destroy_reason(e: &Error) -> DestroyReason {
    match e {
        Error::Handshake(_) | Error::RelayCrypto(_) => DestroyReason::Protocol,
        Error::TooLarge(_) => DestroyReason::Internal,
        _ => DestroyReason::Protocol,
    }
}

impl RelayCircuit {
    /// Answers CREATE_FAST or CREATE2 (ntor): returns the circuit and the CREATED_FAST /
    /// CREATED2 cell.
    ///
    /// # Errors
    /// [`Error::Handshake`] (and friends) when the handshake fails or its type is not
    /// supported; the caller answers DESTROY.
    pub fn create(
        rng: &mut impl CryptoRngCore,
        cmd: ChanCmd,
        payload: &[u8],
        keys: &ServerKeys<'_>,
    ) -> Result<(RelayCircuit, Action), Error> {
        let mut rng = Adapter(rng);
        let (reply_cmd, reply, tor1) = match cmd {
            ChanCmd::CreateFast => {
                let x = payload
                    .get(..fast::CREATE_FAST_LEN)
                    .ok_or(Error::Truncated("CREATE_FAST"))?;
                let (reply, k) = fast::server_handshake(&mut rng, x)?;
                (ChanCmd::CreatedFast, padded(&reply), k)
            }
            ChanCmd::Create2 => {
                if payload.len() < 4 {
                    return Err(Error::Truncated("CREATE2"));
                }
                let htype = u16::from_be_bytes([payload[0], payload[1]]);
                let hlen = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
                let hdata = payload
                    .get(4..4 + hlen)
                    .ok_or(Error::Truncated("CREATE2 HDATA"))?;
                if htype != HTYPE_NTOR {
                    return Err(Error::Handshake("unsupported CREATE2 handshake type"));
                }
                let (reply, k) = ntor::server_handshake(&mut rng, keys.ntor, keys.rsa_id, hdata)?;
                let mut body = Vec::with_capacity(2 + reply.len());
                body.extend_from_slice(&(reply.len() as u16).to_be_bytes());
                body.extend_from_slice(&reply);
                (ChanCmd::Created2, padded(&body), k)
            }
            _ => {
                return Err(Error::UnexpectedCell {
                    cmd: cmd.into(),
                    state: "circuit creation",
                });
            }
        };
        let circ = RelayCircuit {
            layer: RelayLayer::new(&tor1),
            early_left: MAX_RELAY_EARLY,
            next: NextHop::None,
            package_window: CIRCWINDOW_START,
            pending_cells: 0,
            deliver_window: CIRCWINDOW_START,
            streams: HashMap::new(),
            closed: false,
        };
        Ok((
            circ,
            Action::ToPrev {
                cmd: reply_cmd,
                payload: reply,
            },
        ))
    }

    /// Number of open streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// True once the circuit has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn close(&mut self, reason: DestroyReason, prev: bool, out: &mut Vec<Action>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if prev {
            out.push(Action::ToPrev {
                cmd: ChanCmd::Destroy,
                payload: destroy_payload(reason),
            });
        }
        if self.next != NextHop::None {
            out.push(Action::ToNext {
                cmd: ChanCmd::Destroy,
                payload: destroy_payload(reason),
            });
        }
        for s in self.streams.keys() {
            out.push(Action::CloseStream { stream: *s });
        }
        self.streams.clear();
        self.pending_cells = 0;
        out.push(Action::Close);
    }

    /// Encrypts and queues a message we originate toward the client.
    fn send_back(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        msg: &RelayMsg,
        out: &mut Vec<Action>,
    ) -> Result<(), Error> {
        let mut body: RelayBody = [0u8; crate::cell::CELL_PAYLOAD_LEN];
        msg.encode_to_body(stream, &mut body, &mut Adapter(rng))?;
        self.layer.encrypt_backward_originate(&mut body);
        out.push(Action::ToPrev {
            cmd: ChanCmd::Relay,
            payload: Bytes::copy_from_slice(&body),
        });
        Ok(())
    }

    /// A cell from the client side (RELAY, RELAY_EARLY, DESTROY).
    pub fn from_prev(
        &mut self,
        rng: &mut impl CryptoRngCore,
        cmd: ChanCmd,
        payload: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match cmd {
            ChanCmd::Destroy => {
                let reason = DestroyReason::from(payload.first().copied().unwrap_or(0));
                self.close(reason, false, &mut out);
            }
            ChanCmd::Relay | ChanCmd::RelayEarly => {
                if let Err(e) = self.relay_forward(rng, cmd, payload, &mut out) {
                    self.close(destroy_reason(&e), true, &mut out);
                }
            }
            // Padding and anything else on a circuit id is ignored.
            _ => {}
        }
        out
    }

    fn relay_forward(
        &mut self,
        rng: &mut impl CryptoRngCore,
        cmd: ChanCmd,
        payload: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), Error> {
        let early = cmd == ChanCmd::RelayEarly;
        if early {
            if self.early_left == 0 {
                return Err(Error::UnexpectedCell {
                    cmd: cmd.into(),
                    state: "RELAY_EARLY budget spent",
                });
            }
            self.early_left -= 1;
        }
        let mut body: RelayBody = payload
            .try_into()
            .map_err(|_| Error::BadLength("relay cell payload"))?;
        if !self.layer.decrypt_forward(&mut body) {
            // Not for us: pass it on, keeping RELAY_EARLY as it came.
            if self.next == NextHop::Open {
                out.push(Action::ToNext {
                    cmd,
                    payload: Bytes::copy_from_slice(&body),
                });
                return Ok(());
            }
            return Err(Error::RelayCrypto(
                "unrecognized relay cell and no next hop",
            ));
        }
        let cell = RelayCellRef::parse(&body)?;
        cell.cmd.check_stream_id(cell.stream_id)?;
        let stream = cell.stream_id;
        let msg = cell.msg()?;
        match msg {
            RelayMsg::Drop => {}
            RelayMsg::Extend2(x) => {
                if !early {
                    return Err(Error::UnexpectedCell {
                        cmd: RelayCmd::Extend2.into(),
                        state: "EXTEND2 outside RELAY_EARLY",
                    });
                }
                if self.next != NextHop::None {
                    return Err(Error::UnexpectedCell {
                        cmd: RelayCmd::Extend2.into(),
                        state: "circuit already extended",
                    });
                }
                self.next = NextHop::Pending;
                out.push(Action::Extend {
                    linkspecs: x.linkspecs,
                    htype: x.htype,
                    hdata: x.hdata,
                });
            }
            RelayMsg::Truncate => {
                if self.next != NextHop::None {
                    out.push(Action::ToNext {
                        cmd: ChanCmd::Destroy,
                        payload: destroy_payload(DestroyReason::Requested),
                    });
                    self.next = NextHop::None;
                }
                self.send_back(
                    rng,
                    StreamId(0),
                    &RelayMsg::Truncated {
                        reason: DestroyReason::Requested.into(),
                    },
                    out,
                )?;
            }
            RelayMsg::Sendme(s) => {
                if stream.0 == 0 {
                    if let Sendme::Unrecognized { .. } = s {
                        return Err(Error::InvalidValue("unknown SENDME version"));
                    }
                    if self.package_window > CIRCWINDOW_START - CIRCWINDOW_INCREMENT {
                        return Err(Error::InvalidValue("unexpected circuit SENDME"));
                    }
                    self.package_window += CIRCWINDOW_INCREMENT;
                    let ids: Vec<StreamId> = self.streams.keys().copied().collect();
                    for s in ids {
                        self.flush_pending(rng, s, out)?;
                        out.push(Action::ResumeStream { stream: s });
                    }
                } else if let Some(st) = self.streams.get_mut(&stream) {
                    if st.package_window > STREAMWINDOW_START - STREAMWINDOW_INCREMENT {
                        return Err(Error::InvalidValue("unexpected stream SENDME"));
                    }
                    st.package_window += STREAMWINDOW_INCREMENT;
                    self.flush_pending(rng, stream, out)?;
                    out.push(Action::ResumeStream { stream });
                }
            }
            RelayMsg::Begin(b) => {
                if self.streams.contains_key(&stream) {
                    return Err(Error::InvalidValue("BEGIN on an open stream"));
                }
                self.streams.insert(
                    stream,
                    Stream {
                        package_window: STREAMWINDOW_START,
                        deliver_window: STREAMWINDOW_START,
                        unflushed: 0,
                        connected: false,
                        pending: std::collections::VecDeque::new(),
                        end_after_pending: None,
                    },
                );
                out.push(Action::OpenStream { stream, begin: b });
            }
            RelayMsg::BeginDir => {
                if self.streams.contains_key(&stream) {
                    return Err(Error::InvalidValue("BEGIN_DIR on an open stream"));
                }
                self.streams.insert(
                    stream,
                    Stream {
                        package_window: STREAMWINDOW_START,
                        deliver_window: STREAMWINDOW_START,
                        unflushed: 0,
                        connected: false,
                        pending: std::collections::VecDeque::new(),
                        end_after_pending: None,
                    },
                );
                out.push(Action::OpenDirStream { stream });
            }
            RelayMsg::Resolve(_) => {
                let answers = vec![(crate::relay_cell::msg::ResolvedVal::TransientError, 0)];
                self.send_back(
                    rng,
                    stream,
                    &RelayMsg::Resolved(crate::relay_cell::msg::Resolved { answers }),
                    out,
                )?;
            }
            RelayMsg::Data(d) => {
                self.deliver_window = self
                    .deliver_window
                    .checked_sub(1)
                    .ok_or(Error::InvalidValue("circuit deliver window exceeded"))?;
                if self.deliver_window <= CIRCWINDOW_START - CIRCWINDOW_INCREMENT {
                    self.deliver_window += CIRCWINDOW_INCREMENT;
                    let digest = self.layer.last_digest_received();
                    self.send_back(
                        rng,
                        StreamId(0),
                        &RelayMsg::Sendme(Sendme::V1 { digest }),
                        out,
                    )?;
                }
                let Some(st) = self.streams.get_mut(&stream) else {
                    // Data for a stream we closed: C tor drops it.
                    return Ok(());
                };
                st.deliver_window = st
                    .deliver_window
                    .checked_sub(1)
                    .ok_or(Error::InvalidValue("stream deliver window exceeded"))?;
                st.unflushed += 1;
                out.push(Action::StreamWrite { stream, data: d });
                self.consider_stream_sendme(rng, stream, out)?;
            }
            RelayMsg::End(_) if self.remove_stream(stream) => {
                out.push(Action::CloseStream { stream });
            }
            // Anything else addressed to us is ignored, as C tor does with unknown commands.
            _ => {}
        }
        Ok(())
    }

    /// A cell from the next hop (RELAY, CREATED2, DESTROY).
    pub fn from_next(
        &mut self,
        rng: &mut impl CryptoRngCore,
        cmd: ChanCmd,
        payload: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        let r = match cmd {
            ChanCmd::Relay => match <RelayBody>::try_from(payload) {
                Ok(mut body) if self.next == NextHop::Open => {
                    self.layer.encrypt_backward(&mut body);
                    out.push(Action::ToPrev {
                        cmd: ChanCmd::Relay,
                        payload: Bytes::copy_from_slice(&body),
                    });
                    Ok(())
                }
                _ => Err(Error::UnexpectedCell {
                    cmd: cmd.into(),
                    state: "relay cell from next hop",
                }),
            },
            ChanCmd::Created2 if self.next == NextHop::Pending => {
                self.next = NextHop::Open;
                let hlen = payload
                    .get(..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .unwrap_or(usize::MAX);
                match payload.get(2..2usize.saturating_add(hlen)) {
                    Some(h) => self.send_back(
                        rng,
                        StreamId(0),
                        &RelayMsg::Extended2(Extended2 {
                            hdata: Bytes::copy_from_slice(h),
                        }),
                        &mut out,
                    ),
                    None => Err(Error::Truncated("CREATED2")),
                }
            }
            ChanCmd::Destroy => {
                // The next hop is gone: tell the client with TRUNCATED, keep the circuit.
                self.next = NextHop::None;
                let reason = payload.first().copied().unwrap_or(0);
                self.send_back(rng, StreamId(0), &RelayMsg::Truncated { reason }, &mut out)
            }
            _ => Err(Error::UnexpectedCell {
                cmd: cmd.into(),
                state: "cell from next hop",
            }),
        };
        if let Err(e) = r {
            self.close(destroy_reason(&e), true, &mut out);
        }
        out
    }

    /// The extend we asked for failed before CREATE2 went out.
    pub fn extend_failed(
        &mut self,
        rng: &mut impl CryptoRngCore,
        reason: DestroyReason,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed || self.next != NextHop::Pending {
            return out;
        }
        self.next = NextHop::None;
        if self
            .send_back(
                rng,
                StreamId(0),
                &RelayMsg::Truncated {
                    reason: reason.into(),
                },
                &mut out,
            )
            .is_err()
        {
            self.close(DestroyReason::Internal, true, &mut out);
        }
        out
    }

    /// The exit connection for `stream` is up (or refused/failed with `Err(reason)`).
    pub fn stream_connected(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        result: Result<Connected, EndReason>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed || !self.streams.contains_key(&stream) {
            return vec![Action::CloseStream { stream }];
        }
        let r = match result {
            Ok(c) => {
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.connected = true;
                }
                self.send_back(rng, stream, &RelayMsg::Connected(c), &mut out)
            }
            Err(reason) => {
                self.remove_stream(stream);
                out.push(Action::CloseStream { stream });
                self.send_back(rng, stream, &RelayMsg::End(End::new(reason)), &mut out)
            }
        };
        if r.is_err() {
            self.close(DestroyReason::Internal, true, &mut out);
        }
        out
    }

    /// The caller wrote `cells` more cells of `stream`'s data to its connection; a stream
    /// SENDME follows when the window is due one and little is left unwritten.
    pub fn stream_flushed(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        cells: u32,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if let Some(st) = self.streams.get_mut(&stream) {
            st.unflushed = st.unflushed.saturating_sub(cells);
        }
        if self.consider_stream_sendme(rng, stream, &mut out).is_err() {
            self.close(DestroyReason::Internal, true, &mut out);
        }
        out
    }

    fn consider_stream_sendme(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        out: &mut Vec<Action>,
    ) -> Result<(), Error> {
        loop {
            let Some(st) = self.streams.get_mut(&stream) else {
                return Ok(());
            };
            if st.deliver_window > STREAMWINDOW_START - STREAMWINDOW_INCREMENT
                || st.unflushed > STREAM_FLUSH_SLACK
            {
                return Ok(());
            }
            st.deliver_window += STREAMWINDOW_INCREMENT;
            self.send_back(rng, stream, &RelayMsg::Sendme(Sendme::V0), out)?;
        }
    }

    /// The circuit's package window: DATA cells all its streams together may still send.
    pub fn circuit_credit(&self) -> u16 {
        if self.closed { 0 } else { self.package_window }
    }

    /// How many DATA cells `stream` may send now (0 = wait for [`Action::ResumeStream`]).
    pub fn stream_credit(&self, stream: StreamId) -> u16 {
        match self.streams.get(&stream) {
            Some(st) if st.connected && !self.closed => st.package_window.min(self.package_window),
            _ => 0,
        }
    }

    /// Data read from `stream`'s connection. It goes out in DATA cells of at most 498
    /// bytes while the windows allow; the rest waits inside the circuit until SENDMEs
    /// reopen them. The caller reads no more than [`RelayCircuit::stream_credit`] cells'
    /// worth ahead, which bounds that buffer.
    pub fn stream_data(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        data: &[u8],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(st) = self.streams.get_mut(&stream) else {
            return out;
        };
        for chunk in data.chunks(crate::relay_cell::RELAY_DATA_MAX) {
            st.pending.push_back(Bytes::copy_from_slice(chunk));
            self.pending_cells += 1;
        }
        if self.flush_pending(rng, stream, &mut out).is_err() {
            self.close(DestroyReason::Internal, true, &mut out);
        }
        out
    }

    fn flush_pending(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        out: &mut Vec<Action>,
    ) -> Result<(), Error> {
        while self.stream_credit(stream) > 0 {
            let Some(chunk) = self
                .streams
                .get_mut(&stream)
                .and_then(|st| st.pending.pop_front())
            else {
                break;
            };
            self.pending_cells -= 1;
            self.package_window -= 1;
            if let Some(st) = self.streams.get_mut(&stream) {
                st.package_window -= 1;
            }
            self.send_back(rng, stream, &RelayMsg::Data(chunk), out)?;
        }
        let done = self.streams.get(&stream).and_then(|st| {
            st.pending
                .is_empty()
                .then_some(st.end_after_pending)
                .flatten()
        });
        if let Some(reason) = done {
            self.remove_stream(stream);
            self.send_back(rng, stream, &RelayMsg::End(End::new(reason)), out)?;
            out.push(Action::CloseStream { stream });
        }
        Ok(())
    }

    /// Forgets `stream` and its waiting cells; false when there was no such stream.
    fn remove_stream(&mut self, stream: StreamId) -> bool {
        match self.streams.remove(&stream) {
            Some(st) => {
                self.pending_cells -= st.pending.len();
                true
            }
            None => false,
        }
    }

    /// Cells of all streams' data waiting for window space.
    pub fn pending_cells(&self) -> usize {
        self.pending_cells
    }

    /// Cells of `stream` data waiting for window space.
    pub fn stream_pending(&self, stream: StreamId) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.pending.len())
    }

    /// The exit connection of `stream` ended (EOF → DONE, or an error reason). Data still
    /// waiting for window space goes first; END follows it.
    pub fn stream_ended(
        &mut self,
        rng: &mut impl CryptoRngCore,
        stream: StreamId,
        reason: EndReason,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        match self.streams.get_mut(&stream) {
            None => return out,
            Some(st) if !st.pending.is_empty() => {
                st.end_after_pending = Some(reason);
                return out;
            }
            Some(_) => {}
        }
        self.remove_stream(stream);
        if self
            .send_back(rng, stream, &RelayMsg::End(End::new(reason)), &mut out)
            .is_err()
        {
            self.close(DestroyReason::Internal, true, &mut out);
        }
        out
    }

    /// The client-side channel is gone: drop everything, DESTROY forward.
    pub fn prev_channel_closed(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.close(DestroyReason::ChannelClosed, false, &mut out);
        out
    }

    /// The next hop's channel is gone: like a DESTROY from it.
    pub fn next_channel_closed(&mut self, rng: &mut impl CryptoRngCore) -> Vec<Action> {
        if self.next == NextHop::None {
            return Vec::new();
        }
        self.from_next(
            rng,
            ChanCmd::Destroy,
            &[DestroyReason::ChannelClosed.into()],
        )
    }
}

/// Bridges `CryptoRngCore` to the `RngCore + CryptoRng` bounds of the handshakes.
struct Adapter<'a, R: CryptoRngCore + ?Sized>(&'a mut R);
impl<R: CryptoRngCore + ?Sized> rand_core::RngCore for Adapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}
impl<R: CryptoRngCore + ?Sized> rand_core::CryptoRng for Adapter<'_, R> {}
