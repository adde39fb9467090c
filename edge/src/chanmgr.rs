//! Outbound channels, one per peer identity (tor-spec §2.3 "canonical connections",
//! DESIGN.md "Known pitfalls": C tor's DoS rules count connections per source IP, so an
//! edge must not open a second link to a relay it already has one with).
//!
//! Invariants:
//! - At most one connection attempt per RSA identity is in flight; concurrent callers wait
//!   for it and share its result.
//! - A channel is reused only while open and only for the identity it authenticated as.
//! - Authenticated inbound channels from relays are registered too, so an extend to a relay
//!   that already connected to us reuses its link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::RsaIdentity;
use proto::linkspec::ExtendTarget;
use tokio::net::TcpStream;
use tokio::sync::watch;

use proto_io::channel::{CellHandler, ChanError, Channel, ChannelHandle, ChannelPolicy, Peer};
use proto_io::tls::LinkState;

/// Opens and shares outbound channels.
pub struct ChannelManager {
    state: watch::Receiver<Arc<LinkState>>,
    connector: tokio_rustls::TlsConnector,
    open: Mutex<HashMap<RsaIdentity, ChannelHandle>>,
    connecting: Mutex<HashMap<RsaIdentity, Arc<tokio::sync::Mutex<()>>>>,
    connect_timeout: Duration,
    policy: ChannelPolicy,
    shutdown: watch::Receiver<bool>,
    handler: std::sync::OnceLock<Arc<dyn CellHandler>>,
}

impl std::fmt::Debug for ChannelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelManager").finish_non_exhaustive()
    }
}

impl ChannelManager {
    /// A manager that authenticates with the current [`LinkState`] and keeps its channels
    /// by `policy`.
    ///
    /// # Errors
    /// A rustls error building the client configuration (does not happen).
    pub fn new(
        state: watch::Receiver<Arc<LinkState>>,
        connect_timeout: Duration,
        policy: ChannelPolicy,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, rustls::Error> {
        Ok(ChannelManager {
            state,
            connector: tokio_rustls::TlsConnector::from(proto_io::tls::client_config()?),
            open: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            connect_timeout,
            policy,
            shutdown,
            handler: std::sync::OnceLock::new(),
        })
    }

    /// Sets what channels do with their cells (once; later calls are ignored). The edge
    /// sets its router before it accepts or opens any channel.
    pub fn set_handler(&self, handler: Arc<dyn CellHandler>) {
        let _ = self.handler.set(handler);
    }

    /// The cell handler for new channels.
    pub fn handler(&self) -> Arc<dyn CellHandler> {
        self.handler
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::new(Refuse))
    }

    fn lookup(&self, id: &RsaIdentity) -> Option<ChannelHandle> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match open.get(id) {
            Some(h) if !h.is_closed() => Some(h.clone()),
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }

    /// Registers an authenticated channel (inbound or outbound) for reuse.
    pub fn register(&self, handle: &ChannelHandle) {
        if let Peer::Relay(p) = &handle.peer {
            self.open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(p.rsa, handle.clone());
        }
    }

    /// Identities with a connect gate (in flight, or a leak).
    pub fn connecting(&self) -> usize {
        self.connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Number of open channels known to the manager.
    pub fn open_channels(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|h| !h.is_closed())
            .count()
    }

    /// Returns the open channel to `target`'s identity, or opens one (authenticating as
    /// our relay and checking the peer's RSA and, if given, Ed25519 identity).
    ///
    /// # Errors
    /// [`ChanError`] when no address is given, the connection fails or times out, or the
    /// peer is not who `target` names.
    pub async fn get_or_connect(&self, target: &ExtendTarget) -> Result<ChannelHandle, ChanError> {
        if let Some(h) = self.lookup(&target.rsa_id) {
            return Ok(h);
        }
        let gate = self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.rsa_id)
            .or_default()
            .clone();
        let _forget = ForgetGate {
            map: &self.connecting,
            id: target.rsa_id,
            gate: gate.clone(),
        };
        let _turn = gate.lock().await;
        if let Some(h) = self.lookup(&target.rsa_id) {
            return Ok(h);
        }
        let addr: SocketAddr = target
            .ipv4
            .map(SocketAddr::V4)
            .or(target.ipv6.map(SocketAddr::V6))
            .ok_or(ChanError::Unexpected {
                cmd: proto::cell::ChanCmd::Create2,
                state: "extend target without an address",
            })?;
        let r = tokio::time::timeout(self.connect_timeout, self.connect(addr, target)).await;
        let handle = match r {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                metrics::counter!("edge_channel_connect_failures_total", "reason" => e.reason())
                    .increment(1);
                return Err(e);
            }
            Err(_) => {
                metrics::counter!("edge_channel_connect_failures_total", "reason" => "timeout")
                    .increment(1);
                return Err(ChanError::Timeout("connecting to a relay"));
            }
        };
        self.register(&handle);
        Ok(handle)
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        target: &ExtendTarget,
    ) -> Result<ChannelHandle, ChanError> {
        let state = self.state.borrow().clone();
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(proto_io::tls::random_server_name(), tcp)
            .await?;
        let ch = Channel::connect(
            tls,
            &state.ctx,
            Some(target.rsa_id),
            target.ed_id,
            true,
            addr.ip(),
            self.connect_timeout,
        )
        .await?;
        metrics::counter!("edge_channels_opened_total", "direction" => "outbound", "peer" => "relay")
            .increment(1);
        let (handle, task) = ch.spawn(&self.policy, self.handler(), self.shutdown.clone());
        tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) => {
                    metrics::counter!("edge_channels_closed_total", "reason" => "done")
                        .increment(1);
                }
                Ok(Err(e)) => {
                    tracing::debug!("outbound channel closed: {e}");
                    metrics::counter!("edge_channels_closed_total", "reason" => e.reason())
                        .increment(1);
                }
                Err(_) => {}
            }
        });
        Ok(handle)
    }
}

/// Removes an identity's connect gate when the last caller that used it is done, on every
/// path (success, failure, timeout, a dropped future), so failed connects leave nothing.
struct ForgetGate<'a> {
    map: &'a Mutex<HashMap<RsaIdentity, Arc<tokio::sync::Mutex<()>>>>,
    id: RsaIdentity,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for ForgetGate<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // The map, the caller's `gate` and this guard: nobody else is waiting on it.
        if map
            .get(&self.id)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate))
            && Arc::strong_count(&self.gate) <= 3
        {
            map.remove(&self.id);
        }
    }
}

/// The handler before one is set: closes the channel on its first cell. Unreachable in the
/// edge (its router is set before the ORPort opens); it keeps `handler` total.
struct Refuse;

impl CellHandler for Refuse {
    fn on_cells<'a>(
        &'a self,
        _chan: &'a ChannelHandle,
        cells: Vec<proto::cell::ChanCell>,
    ) -> proto_io::channel::CellsFuture<'a> {
        let cmd = cells
            .first()
            .map_or(proto::cell::ChanCmd::Padding, |c| c.cmd);
        Box::pin(std::future::ready(Err(ChanError::Unexpected {
            cmd,
            state: "edge starting up",
        })))
    }
}
