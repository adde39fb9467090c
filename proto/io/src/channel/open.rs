//! An open channel: a reader task that hands each cell to a [`CellHandler`], and a writer
//! that drains the channel's [`CircuitMux`] (one capped queue per circuit, served in
//! turn). Queuing never waits, so whoever feeds a channel (a worker link carrying many
//! circuits) is never held up by one peer that stops reading.
//!
//! Liveness follows C tor (mainloop.c `run_connection_housekeeping`,
//! channelpadding.c `channelpadding_get_channel_idle_timeout`):
//! - a PADDING cell goes out when nothing was written for the keepalive period (300 s);
//! - a channel is closed once it has had no circuits for its idle timeout, drawn per
//!   channel (clients and unauthenticated peers: 180–270 s; relays: 45–75 min); a channel
//!   with circuits stays open however quiet it is;
//! - a channel whose queued cells make no write progress for the write timeout (C tor:
//!   10 × the keepalive period) is closed as stuck.
//!
//! Invariants:
//! - Every byte a channel queues is counted in the process's [`MemBudget`] until it is
//!   written or the channel ends; a closed channel queues nothing.
//! - The handler learns of the channel before its first cell ([`CellHandler::on_open`]) and
//!   of its end exactly once ([`CellHandler::on_close`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use proto::CircId;
use proto::cell::msg::DestroyReason;
use proto::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd};
use proto::circuitmux::{CircuitMux, Overflow};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::{CellReader, ChanError, Channel, Peer, TlsInfo};
use crate::budget::MemBudget;

/// Most bytes one write hands to TLS.
const WRITE_BATCH: usize = 32 * 1024;

/// How an open channel is kept and bounded.
#[derive(Clone, Debug)]
pub struct ChannelPolicy {
    /// A PADDING cell goes out after this long without a write (C tor's KeepalivePeriod).
    pub keepalive: Duration,
    /// Base idle timeout of channels to clients and unauthenticated peers: closed after
    /// this plus up to half again with no circuits.
    pub client_idle: Duration,
    /// Base idle timeout of channels to relays: closed after 0.75× to 1.25× this with no
    /// circuits.
    pub relay_idle: Duration,
    /// Queued cells with no write progress for this long close the channel.
    pub write_timeout: Duration,
    /// Most cells one circuit may queue (C tor's `circ_max_cell_queue_size`).
    pub max_circuit_queue: usize,
    /// The process's queue ceiling.
    pub budget: Arc<MemBudget>,
}

impl ChannelPolicy {
    /// C tor's defaults (keepalive 300 s, idle 180 s / 60 min, stuck after 50 min, 2500
    /// cells a circuit) under `budget`.
    pub fn c_tor_defaults(budget: Arc<MemBudget>) -> Self {
        ChannelPolicy {
            keepalive: Duration::from_secs(300),
            client_idle: Duration::from_secs(180),
            relay_idle: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(3000),
            max_circuit_queue: proto::circuitmux::DEFAULT_MAX_CIRCUIT_QUEUE,
            budget,
        }
    }

    /// The idle timeout for one channel, to a relay or not, with C tor's random spread
    /// (channelpadding.c `channelpadding_get_channel_idle_timeout`).
    fn idle_timeout(&self, relay: bool, rng: &mut impl Rng) -> Duration {
        if relay {
            let base = self.relay_idle.as_millis() as u64;
            Duration::from_millis(base * 3 / 4 + rng.gen_range(0..=base / 2))
        } else {
            let base = self.client_idle.as_millis() as u64;
            Duration::from_millis(base + rng.gen_range(0..=base / 2))
        }
    }
}

/// Why a cell was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The channel has ended.
    Closed,
    /// The circuit's queue was full; its cells were dropped and the circuit must end.
    Overflow(Overflow),
}

/// What [`CellHandler::on_cells`] returns: the cells to queue back on the channel.
pub type CellsFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<ChanCell>, ChanError>> + Send + 'a>,
>;

/// Most cells handed to [`CellHandler::on_cells`] at once (a burst already read).
pub const READ_BURST: usize = 64;

/// What an open channel does with its cells.
pub trait CellHandler: Send + Sync + 'static {
    /// Handles a burst of cells read from `chan` together (in order, at most
    /// [`READ_BURST`]), so that per-burst work (locks, messages to workers) is paid once a
    /// burst, not once a cell. Returns cells to queue back on the same channel. An error
    /// closes the channel.
    fn on_cells<'a>(&'a self, chan: &'a ChannelHandle, cells: Vec<ChanCell>) -> CellsFuture<'a>;
    /// The channel is open (called before its first cell).
    fn on_open(&self, _chan: &ChannelHandle) {}
    /// The channel has ended.
    fn on_close(&self, _chan_id: u64) {}
    /// A circuit's queue on `chan` overflowed while answering a cell; the handler ends the
    /// circuit. The default only queues DESTROY (RESOURCELIMIT).
    fn on_overflow(&self, chan: &ChannelHandle, overflow: Overflow) {
        chan.queue_destroy(overflow.circ_id, DestroyReason::ResourceLimit);
    }
}

/// Link-level rules for a cell on an open channel: `Ok(None)` to ignore it, `Err` to close
/// the channel; otherwise the cell is circuit traffic and comes back as `Ok(Some)`.
pub fn link_level(cell: ChanCell) -> Result<Option<ChanCell>, ChanError> {
    match cell.cmd {
        ChanCmd::Padding | ChanCmd::Vpadding | ChanCmd::Authorize | ChanCmd::PaddingNegotiate => {
            Ok(None)
        }
        ChanCmd::Create
        | ChanCmd::CreateFast
        | ChanCmd::Create2
        | ChanCmd::Relay
        | ChanCmd::RelayEarly
        | ChanCmd::Destroy
        | ChanCmd::Created
        | ChanCmd::CreatedFast
        | ChanCmd::Created2 => Ok(Some(cell)),
        ChanCmd::Unrecognized(_) => Ok(None),
        other => Err(ChanError::Unexpected {
            cmd: other,
            state: "open channel",
        }),
    }
}

fn next_channel_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by a channel's handles and its tasks.
#[derive(Debug)]
struct Shared {
    mux: Mutex<CircuitMux>,
    /// Set (under the mux lock) when the channel ended; nothing is queued after.
    closed: AtomicBool,
    wake: Notify,
    ended: Notify,
    budget: Arc<MemBudget>,
    /// Circuits the handler has on this channel, and the tick it last had any.
    circuits: AtomicUsize,
    last_had_circuits: AtomicU64,
}

/// A handle on an open channel: queue cells, learn whether it closed. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChannelHandle {
    /// Process-unique channel id.
    pub id: u64,
    /// Who is on the other end.
    pub peer: Peer,
    /// Negotiated link version.
    pub link_version: u16,
    /// Whether we initiated this link (then our circuit ids have the MSB set).
    pub we_initiated: bool,
    shared: Arc<Shared>,
}

impl ChannelHandle {
    /// Queues a cell behind its circuit's earlier cells. Never waits.
    ///
    /// # Errors
    /// [`QueueError::Closed`] when the channel has ended; [`QueueError::Overflow`] when the
    /// circuit already had its cap of cells queued (they were dropped: end the circuit).
    pub fn queue(&self, cell: ChanCell) -> Result<(), QueueError> {
        let sh = &self.shared;
        let tick = sh.budget.tick();
        let mut mux = lock(&sh.mux);
        if sh.closed.load(Ordering::Relaxed) {
            return Err(QueueError::Closed);
        }
        let before = mux.queued_bytes();
        let r = mux.push(cell, tick);
        sh.budget.adjust(before, mux.queued_bytes());
        drop(mux);
        match r {
            Ok(()) => {
                sh.wake.notify_one();
                Ok(())
            }
            Err(o) => Err(QueueError::Overflow(o)),
        }
    }

    /// Queues DESTROY for `circ_id` (dropping its queued cells). Ignored once closed.
    pub fn queue_destroy(&self, circ_id: CircId, reason: DestroyReason) {
        let sh = &self.shared;
        let mut mux = lock(&sh.mux);
        if sh.closed.load(Ordering::Relaxed) {
            return;
        }
        let before = mux.queued_bytes();
        mux.push_destroy(circ_id, reason);
        sh.budget.adjust(before, mux.queued_bytes());
        drop(mux);
        sh.wake.notify_one();
    }

    /// Drops `circ_id`'s queued cells without sending anything; returns the bytes freed.
    pub fn clear_circuit(&self, circ_id: CircId) -> usize {
        let sh = &self.shared;
        let mut mux = lock(&sh.mux);
        let before = mux.queued_bytes();
        let freed = mux.clear(circ_id);
        sh.budget.adjust(before, mux.queued_bytes());
        freed
    }

    /// Each circuit with queued cells and the budget tick of its oldest cell.
    pub fn oldest_cells(&self) -> Vec<(CircId, u64)> {
        lock(&self.shared.mux).oldest().collect()
    }

    /// Bytes queued on this channel.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.shared.mux).queued_bytes()
    }

    /// Tells the channel how many circuits it carries (the idle rule closes a channel
    /// only after it has had none for its idle timeout).
    pub fn set_circuits(&self, n: usize) {
        let sh = &self.shared;
        let was = sh.circuits.swap(n, Ordering::Relaxed);
        if n == 0 && was != 0 {
            sh.last_had_circuits
                .store(sh.budget.tick(), Ordering::Relaxed);
        }
    }

    /// True once the channel has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Waits until the channel ends.
    pub async fn closed(&self) {
        loop {
            let ended = self.shared.ended.notified();
            if self.is_closed() {
                return;
            }
            ended.await;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + TlsInfo + Send + 'static> Channel<S> {
    /// Hands the open channel to a reader and a writer task and returns a handle for
    /// queuing cells on it. Every cell goes to `handler`, whose reply (if any) is queued
    /// on the same channel. The channel ends when the handler returns an error, the peer
    /// closes, the idle or write timeout of `policy` passes, or `shutdown` turns true;
    /// the join handle yields why.
    pub fn spawn(
        self,
        policy: &ChannelPolicy,
        handler: Arc<dyn CellHandler>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> (
        ChannelHandle,
        tokio::task::JoinHandle<Result<(), ChanError>>,
    ) {
        let (r, mut w) = tokio::io::split(self.stream);
        let mut reader = CellReader {
            r,
            codec: self.codec,
            rbuf: self.rbuf,
        };
        let budget = policy.budget.clone();
        let shared = Arc::new(Shared {
            mux: Mutex::new(CircuitMux::new(policy.max_circuit_queue)),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            ended: Notify::new(),
            budget: budget.clone(),
            circuits: AtomicUsize::new(0),
            last_had_circuits: AtomicU64::new(budget.tick()),
        });
        let handle = ChannelHandle {
            id: next_channel_id(),
            peer: self.peer,
            link_version: self.link_version,
            we_initiated: self.we_initiated,
            shared: shared.clone(),
        };
        let relay = matches!(handle.peer, Peer::Relay(_));
        let idle = policy.idle_timeout(relay, &mut rand::thread_rng());
        let peer_kind = if relay { "relay" } else { "client" };
        let (keepalive, write_timeout) = (policy.keepalive, policy.write_timeout);
        handler.on_open(&handle);
        let me = handle.clone();
        let codec = self.codec;
        let task = tokio::spawn(async move {
            let writer = async {
                let mut out = BytesMut::new();
                let mut cells = Vec::new();
                let mut last_write = tokio::time::Instant::now();
                // Housekeeping runs at least this often (C tor: once a second).
                let tick = Duration::from_secs(1).min(keepalive).min(idle);
                let sizes = metrics::histogram!("edge_channel_write_cells");
                loop {
                    let woke = shared.wake.notified();
                    cells.clear();
                    {
                        let mut mux = lock(&shared.mux);
                        let before = mux.queued_bytes();
                        mux.pop_batch(WRITE_BATCH, &mut cells);
                        shared.budget.adjust(before, mux.queued_bytes());
                    }
                    if cells.is_empty() {
                        let now = tokio::time::Instant::now();
                        if now.duration_since(last_write) >= keepalive {
                            // Keepalive (C tor: a link-level PADDING cell).
                            cells.push(ChanCell {
                                circ_id: CircId::LINK,
                                cmd: ChanCmd::Padding,
                                payload: vec![0u8; CELL_PAYLOAD_LEN].into(),
                            });
                            metrics::counter!("edge_keepalives_sent_total").increment(1);
                        } else {
                            if shared.circuits.load(Ordering::Relaxed) == 0 {
                                let since = shared.last_had_circuits.load(Ordering::Relaxed);
                                let quiet = shared.budget.tick().saturating_sub(since);
                                if Duration::from_millis(quiet) >= idle {
                                    metrics::counter!("edge_channels_idle_closed_total", "peer" => peer_kind)
                                        .increment(1);
                                    return Ok::<(), ChanError>(());
                                }
                            }
                            let _ = tokio::time::timeout(tick, woke).await;
                            continue;
                        }
                    }
                    sizes.record(cells.len() as f64);
                    for c in &cells {
                        if c.cmd == ChanCmd::Destroy {
                            tracing::debug!(chan = me.id, circ = c.circ_id.0, "DESTROY written");
                        }
                        codec.encode(c, &mut out)?;
                    }
                    let write = async {
                        w.write_all(&out).await?;
                        w.flush().await
                    };
                    match tokio::time::timeout(write_timeout, write).await {
                        Ok(r) => r?,
                        Err(_) => return Err(ChanError::Timeout("writes made no progress")),
                    }
                    out.clear();
                    last_write = tokio::time::Instant::now();
                }
            };
            let reader_loop = async {
                let received = metrics::counter!("edge_cells_received_total");
                loop {
                    let first = match reader.read_cell().await {
                        Ok(c) => c,
                        Err(ChanError::Closed) => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    // Every whole cell that one read brought in goes to the handler together.
                    let mut cells = Vec::with_capacity(8);
                    cells.push(first);
                    while cells.len() < READ_BURST {
                        match reader.buffered_cell()? {
                            Some(c) => cells.push(c),
                            None => break,
                        }
                    }
                    received.increment(cells.len() as u64);
                    for reply in handler.on_cells(&me, cells).await? {
                        match me.queue(reply) {
                            Ok(()) => {}
                            Err(QueueError::Closed) => return Ok(()),
                            Err(QueueError::Overflow(o)) => handler.on_overflow(&me, o),
                        }
                    }
                }
            };
            let r = tokio::select! {
                r = reader_loop => r,
                r = writer => r,
                _ = shutdown.changed() => Ok(()),
            };
            {
                let mut mux = lock(&shared.mux);
                shared.closed.store(true, Ordering::Relaxed);
                shared.budget.adjust(mux.queued_bytes(), 0);
                *mux = CircuitMux::new(0);
            }
            shared.ended.notify_waiters();
            handler.on_close(me.id);
            r
        });
        (handle, task)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn idle_timeouts_spread_as_c_tor() {
        let p = ChannelPolicy::c_tor_defaults(MemBudget::new(1 << 20));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..2000 {
            let r = p.idle_timeout(true, &mut rng);
            assert!(r >= Duration::from_secs(45 * 60) && r <= Duration::from_secs(75 * 60));
            lo = lo.min(r);
            hi = hi.max(r);
            let c = p.idle_timeout(false, &mut rng);
            assert!(
                c >= Duration::from_secs(180) && c <= Duration::from_secs(270),
                "{c:?}"
            );
        }
        // The spread is used, not a fixed value.
        assert!(lo < Duration::from_secs(47 * 60) && hi > Duration::from_secs(73 * 60));
    }
}
