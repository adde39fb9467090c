//! A shard: one actix actor (on its own arbiter thread) that owns a share of the circuits
//! and runs [`proto::circuit::RelayCircuit`] for each, executing its actions: cells back to
//! edges, extend requests, exit streams (DESIGN.md "Data path").
//!
//! Invariants:
//! - A circuit lives in exactly one shard; every cell of it reaches that shard in order
//!   (the link handler routes by key), and the shard handles one message at a time.
//! - The shard is the only writer of its outbound circuits' [`Routes`] entries: it adds one
//!   when an extend succeeds and removes it when the outbound circuit ends (DESTROY either
//!   way, TRUNCATE, the circuit's close, the channel's close), so the tables hold live
//!   circuits only.
//! - Every circuit end (inbound and outbound) is indexed by its (link, channel), so a
//!   channel's close costs that channel's circuits, not the shard's.
//! - An extend result counts only on the link its request went out on and only while the
//!   circuit that asked waits for it; any other result with an outbound circuit gets that
//!   circuit DESTROYed, so no orphan is left at the edge.
//! - Output to an edge goes through a bounded queue awaited inside the handler
//!   (`AtomicResponse`), so a slow edge slows its shards instead of growing memory.
//! - Exit connections are opened only after the exit policy allows the address, and read
//!   only as far as the circuit's windows allow (a semaphore of DATA-cell credits).
//! - Data toward a destination waits in a bounded queue ([`WriteQueue`]) on the worker's
//!   memory budget, whose ceiling ends the circuits with the oldest waiting data
//!   ([`oom_loop`]); the writer reports what it wrote
//!   ([`RelayCircuit::stream_flushed`]), and only then do stream SENDMEs let the client
//!   send more, so a destination that stops reading holds one stream window here. The
//!   writer ends with its stream (after flushing, on END) or at once (circuit gone).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use proto::cell::msg::DestroyReason;
use proto::cell::{ChanCell, ChanCmd};
use proto::circuit::{Action, RelayCircuit, ServerKeys};
use proto::keys::WorkerKeys;
use proto::netdoc::policy::ExitPolicy;
use proto::relay_cell::msg::{Begin, Connected, EndReason};
use proto::{CircId, StreamId};
use proto_io::budget::MemBudget;
use proto_io::rpc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::write_queue::WriteQueue;

/// (link id, channel, circuit id): a circuit end as one edge link names it.
pub type Key = (u64, u64, u32);

/// The queue toward one edge link.
pub type EdgeTx = mpsc::Sender<rpc::WorkerToEdge>;

/// Which shard owns each outbound circuit of one link (the ones extends created), by
/// channel so that a channel's close drops its entries at once. Read by the link's reader
/// for every batch; written only by the owning shards.
#[derive(Debug, Default)]
pub struct Routes {
    by_channel: Mutex<HashMap<u64, HashMap<u32, usize>>>,
}

impl Routes {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HashMap<u32, usize>>> {
        self.by_channel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, channel: u64, circ: u32, shard: usize) {
        self.table().entry(channel).or_default().insert(circ, shard);
    }

    fn remove(&self, channel: u64, circ: u32) {
        let mut t = self.table();
        if let Some(m) = t.get_mut(&channel) {
            m.remove(&circ);
            if m.is_empty() {
                t.remove(&channel);
            }
        }
    }

    /// Forgets a closed channel's entries.
    pub fn drop_channel(&self, channel: u64) {
        self.table().remove(&channel);
    }

    /// The owning shard of each key that names an outbound circuit (one lock for all).
    pub fn lookup<'a>(&self, keys: impl Iterator<Item = &'a rpc::CircKey>) -> Vec<Option<usize>> {
        let t = self.table();
        keys.map(|k| t.get(&k.channel).and_then(|m| m.get(&k.circ_id)).copied())
            .collect()
    }
}

/// One edge link as a shard sees it: its id, its queue and its outbound routes.
#[derive(Clone, Debug)]
pub struct Link {
    /// The link's id (unique within the process).
    pub id: u64,
    /// Its queue toward the edge.
    pub tx: EdgeTx,
    /// Its outbound routes.
    pub routes: Arc<Routes>,
}

/// Worker-wide settings every shard needs.
#[derive(Debug)]
pub struct ShardConfig {
    /// Onion keys and identities.
    pub keys: WorkerKeys,
    /// Exit policy (also published by the edges).
    pub policy: ExitPolicy,
    /// Exit connect timeout.
    pub connect_timeout: Duration,
    /// A stream whose destination takes no data for this long ends (END TIMEOUT).
    pub stream_write_timeout: Duration,
    /// Where BEGIN_DIR streams go (a directory server's DirPort), if anywhere.
    pub dir_backend: Option<String>,
    /// The worker's ceiling on data queued toward destinations (`max_mem_in_queues`).
    pub budget: Arc<MemBudget>,
}

/// Input from an edge link.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum FromEdge {
    /// Cells for circuits of this shard, in order (DESTROYs among them).
    Cells {
        /// The link.
        link: Link,
        /// The cells, each with the edge's channel and its stamp ([`rpc::Cell::stamp`]).
        cells: Vec<(u64, ChanCell, u32)>,
        /// One of the link's in-flight slots, given back when the shard has handled the
        /// cells and queued what they produced toward the edges.
        slot: tokio::sync::OwnedSemaphorePermit,
    },
    /// An extend this shard asked for finished.
    ExtendResult {
        /// The link the result came on.
        link: Link,
        /// The result.
        result: rpc::ExtendResult,
    },
    /// A channel of the link is gone.
    ChannelClosed {
        /// The link.
        link: u64,
        /// The channel.
        channel: u64,
    },
    /// The whole link is gone.
    LinkGone {
        /// The link.
        link: u64,
    },
}

#[derive(Message)]
#[rtype(result = "()")]
enum StreamEvent {
    Connected {
        key: Key,
        stream: StreamId,
        /// A BEGIN_DIR stream (its CONNECTED names no address).
        dir: bool,
        result: Result<(tokio::net::TcpStream, SocketAddr), EndReason>,
    },
    Data {
        key: Key,
        stream: StreamId,
        data: Bytes,
    },
    Ended {
        key: Key,
        stream: StreamId,
        reason: EndReason,
    },
    /// The writer put `cells` more DATA cells' worth on the destination's connection.
    Flushed {
        key: Key,
        stream: StreamId,
        cells: u32,
    },
}

struct StreamIo {
    /// Data toward the destination. It fills from BEGIN on: C tor sends optimistic data
    /// right behind BEGIN and BEGIN_DIR, written once the connection is up.
    write: Arc<WriteQueue>,
    credit: Arc<Semaphore>,
    granted: usize,
    reader: Option<tokio::task::JoinHandle<()>>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

struct Entry {
    circ: RelayCircuit,
    prev: Link,
    /// The outbound end, once an extend succeeded: its key and link.
    next: Option<(Key, Link)>,
    /// The extend request this circuit waits for.
    extend: Option<u64>,
    streams: HashMap<StreamId, StreamIo>,
    /// The streams' `granted` credits together.
    granted: usize,
}

/// The shard actor.
pub struct Shard {
    index: u64,
    cfg: Arc<ShardConfig>,
    circuits: HashMap<Key, Entry>,
    /// Outbound key -> inbound key.
    outbound: HashMap<Key, Key>,
    /// (link, channel) -> the circuit ends (inbound and outbound keys) on it.
    by_channel: HashMap<(u64, u64), HashSet<Key>>,
    /// Extend request id -> inbound key.
    extends: HashMap<u64, Key>,
    next_request: u64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("circuits", &self.circuits.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// A shard with index `index` (encoded in its extend request ids).
    pub fn new(index: u64, cfg: Arc<ShardConfig>) -> Self {
        Shard {
            index,
            cfg,
            circuits: HashMap::new(),
            outbound: HashMap::new(),
            by_channel: HashMap::new(),
            extends: HashMap::new(),
            next_request: 0,
        }
    }

    /// The shard that issued an extend request id.
    pub fn shard_of_request(request_id: u64) -> u64 {
        request_id >> 48
    }
}

impl Actor for Shard {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        // Each message is a batch of up to 256 cells: a short mailbox keeps the cells
        // waiting for a shard (and their latency) small; the link reader waits instead.
        ctx.set_mailbox_capacity(16);
    }
}

/// Outgoing messages gathered while handling one input, sent in order afterwards.
#[derive(Default)]
struct Out {
    msgs: Vec<(EdgeTx, rpc::WorkerToEdge)>,
    /// The link and stamp of the cell being handled: cells this produces toward the same
    /// link carry its stamp back (link ids start at 1, so the default matches none).
    stamp: (u64, u32),
}

impl Out {
    fn push_cell(&mut self, tx: &EdgeTx, key: Key, cmd: ChanCmd, payload: Bytes) {
        let cell = ChanCell {
            circ_id: CircId(key.2),
            cmd,
            payload,
        };
        let msg = if cmd == ChanCmd::Destroy {
            rpc::WorkerToEdge {
                destroys: vec![rpc::Destroy::from_cell(key.1, &cell)],
                ..Default::default()
            }
        } else {
            let mut c = rpc::Cell::from_chan(key.1, cell);
            if key.0 == self.stamp.0 {
                c.stamp = self.stamp.1;
            }
            rpc::WorkerToEdge {
                cells: vec![c],
                ..Default::default()
            }
        };
        // Merge into the previous message to the same link when possible (batching).
        if let Some((last_tx, last)) = self.msgs.last_mut()
            && last_tx.same_channel(tx)
            && last.extend_requests.is_empty()
        {
            last.cells.extend(msg.cells);
            last.destroys.extend(msg.destroys);
            return;
        }
        self.msgs.push((tx.clone(), msg));
    }

    fn push_destroy(&mut self, tx: &EdgeTx, key: Key, reason: DestroyReason) {
        let d = ChanCell::destroy(CircId(key.2), reason);
        self.push_cell(tx, key, d.cmd, d.payload);
    }
}

/// Most DATA cells' worth read from an exit or directory stream at once.
const READ_CELLS: usize = 32;

/// Moves one circuit between the `worker_circuits` states ("open": no next hop yet,
/// "extended": an outbound circuit exists).
fn state_change(was_extended: bool, now_extended: bool) {
    let name = |x: bool| if x { "extended" } else { "open" };
    if was_extended != now_extended {
        metrics::gauge!("worker_circuits", "state" => name(was_extended)).decrement(1.0);
        metrics::gauge!("worker_circuits", "state" => name(now_extended)).increment(1.0);
    }
}

async fn sends(out: Out) {
    for (tx, msg) in out.msgs {
        // A closed link means the edge is gone; its circuits are dropped by LinkGone.
        let _ = tx.send(msg).await;
    }
}

impl Shard {
    fn key_side(&self, key: &Key) -> Option<(Key, bool)> {
        if self.circuits.contains_key(key) {
            Some((*key, true))
        } else {
            self.outbound.get(key).map(|k| (*k, false))
        }
    }

    fn index(&mut self, k: Key) {
        self.by_channel.entry((k.0, k.1)).or_default().insert(k);
    }

    fn unindex(&mut self, k: &Key) {
        if let Some(set) = self.by_channel.get_mut(&(k.0, k.1)) {
            set.remove(k);
            if set.is_empty() {
                self.by_channel.remove(&(k.0, k.1));
            }
        }
    }

    /// Forgets the outbound end of `inbound` (it ended, or is being DESTROYed).
    fn drop_next(&mut self, inbound: Key) {
        let Some((nk, nl)) = self.circuits.get_mut(&inbound).and_then(|e| e.next.take()) else {
            return;
        };
        self.outbound.remove(&nk);
        self.unindex(&nk);
        nl.routes.remove(nk.1, nk.2);
        state_change(true, false);
    }

    /// A circuit end on a channel that closed: the engine hears which side went.
    fn end_gone(&mut self, k: Key, out: &mut Out, ctx: &mut Context<Self>) {
        let mut rng = rand::rngs::OsRng;
        if let Some(e) = self.circuits.get_mut(&k) {
            let acts = e.circ.prev_channel_closed();
            self.apply(k, acts, out, ctx);
        } else if let Some(inbound) = self.outbound.get(&k).copied() {
            self.drop_next(inbound);
            let acts = self
                .circuits
                .get_mut(&inbound)
                .map(|e| e.circ.next_channel_closed(&mut rng))
                .unwrap_or_default();
            self.apply(inbound, acts, out, ctx);
        }
    }

    /// Every circuit end on `link`'s `channel`.
    fn channel_closed(&mut self, link: u64, channel: u64, out: &mut Out, ctx: &mut Context<Self>) {
        for k in self.by_channel.remove(&(link, channel)).unwrap_or_default() {
            self.end_gone(k, out, ctx);
        }
    }

    fn on_cell(
        &mut self,
        link: &Link,
        channel: u64,
        cell: ChanCell,
        out: &mut Out,
        ctx: &mut Context<Self>,
    ) {
        let key = (link.id, channel, cell.circ_id.0);
        let cmd = cell.cmd;
        let mut rng = rand::rngs::OsRng;
        match self.key_side(&key) {
            None => {
                if !matches!(
                    cmd,
                    ChanCmd::Create | ChanCmd::CreateFast | ChanCmd::Create2
                ) {
                    return; // unknown circuit: drop, as C tor does
                }
                let all_keys: Vec<_> = std::iter::once(self.cfg.keys.ntor.clone())
                    .chain(self.cfg.keys.ntor_previous.clone())
                    .collect();
                let keys = ServerKeys {
                    ntor: &all_keys,
                    rsa_id: &self.cfg.keys.rsa_identity,
                };
                let start = std::time::Instant::now();
                match RelayCircuit::create(&mut rng, cmd, &cell.payload, &keys) {
                    Ok((circ, reply)) => {
                        metrics::histogram!("worker_circuit_create_seconds")
                            .record(start.elapsed().as_secs_f64());
                        metrics::counter!("worker_circuits_created_total").increment(1);
                        metrics::gauge!("worker_circuits", "state" => "open").increment(1.0);
                        self.circuits.insert(
                            key,
                            Entry {
                                circ,
                                prev: link.clone(),
                                next: None,
                                extend: None,
                                streams: HashMap::new(),
                                granted: 0,
                            },
                        );
                        self.index(key);
                        self.apply(key, vec![reply], out, ctx);
                    }
                    Err(e) => {
                        metrics::counter!("worker_circuit_create_failures_total").increment(1);
                        tracing::debug!("circuit creation refused: {e}");
                        out.push_destroy(&link.tx, key, proto::circuit::destroy_reason(&e));
                    }
                }
            }
            Some((inbound, from_prev)) => {
                let Some(e) = self.circuits.get_mut(&inbound) else {
                    return;
                };
                let actions = if from_prev {
                    e.circ.from_prev(&mut rng, cmd, &cell.payload)
                } else {
                    e.circ.from_next(&mut rng, cmd, &cell.payload)
                };
                if !from_prev && cmd == ChanCmd::Destroy {
                    self.drop_next(inbound); // the outbound circuit is gone
                }
                metrics::counter!(
                    "worker_cells_total",
                    "direction" => if from_prev { "forward" } else { "backward" },
                    "command" => cmd.name()
                )
                .increment(1);
                self.apply(inbound, actions, out, ctx);
            }
        }
    }

    /// The outcome of an extend, as `link` reports it.
    fn extend_result(
        &mut self,
        link: &Link,
        result: rpc::ExtendResult,
        out: &mut Out,
        ctx: &mut Context<Self>,
    ) {
        // The outbound circuit's key, or why the extend failed.
        let outcome = match result.outcome {
            Some(rpc::extend_result::Outcome::Outbound(ck)) => {
                Ok((link.id, ck.channel, ck.circ_id))
            }
            Some(rpc::extend_result::Outcome::FailedReason(r)) => {
                Err(DestroyReason::from(u8::try_from(r).unwrap_or(0)))
            }
            None => Err(DestroyReason::Internal),
        };
        let waiting = self
            .extends
            .get(&result.request_id)
            .copied()
            .filter(|k| k.0 == link.id)
            .filter(|k| {
                self.circuits
                    .get(k)
                    .is_some_and(|e| e.extend == Some(result.request_id))
            });
        let Some(inbound) = waiting else {
            // Stale (the circuit ended meanwhile) or not this link's request: an
            // outbound circuit made for it has no one to carry, so it goes at once.
            metrics::counter!("worker_extend_results_unmatched_total").increment(1);
            if let Ok(nk) = outcome {
                out.push_destroy(&link.tx, nk, DestroyReason::Finished);
            }
            return;
        };
        self.extends.remove(&result.request_id);
        let Some(e) = self.circuits.get_mut(&inbound) else {
            return;
        };
        e.extend = None;
        match outcome {
            Ok(nk) => {
                if e.next.is_some() {
                    // The engine asks for one extend at a time, so this is a bug.
                    tracing::warn!("extend result for a circuit that has a next hop");
                    return;
                }
                e.next = Some((nk, link.clone()));
                state_change(false, true);
                self.outbound.insert(nk, inbound);
                self.index(nk);
                link.routes.insert(nk.1, nk.2, self.index as usize);
            }
            Err(reason) => {
                metrics::counter!("worker_extend_failures_total").increment(1);
                let acts = e.circ.extend_failed(&mut rand::rngs::OsRng, reason);
                self.apply(inbound, acts, out, ctx);
            }
        }
    }

    /// Ends circuit `key` here: its outbound end, pending extend, index entries and streams.
    fn close(&mut self, key: Key) {
        self.drop_next(key);
        let Some(mut e) = self.circuits.remove(&key) else {
            return;
        };
        metrics::gauge!("worker_circuits", "state" => "open").decrement(1.0);
        tracing::debug!(?key, streams = e.streams.len(), "circuit closed");
        self.unindex(&key);
        if let Some(id) = e.extend.take() {
            self.extends.remove(&id);
        }
        for (_, mut io) in e.streams.drain() {
            if let Some(r) = io.reader.take() {
                r.abort();
            }
            if let Some(w) = io.writer.take() {
                w.abort(); // the circuit is gone: nothing more is owed
            }
            metrics::gauge!("worker_streams").decrement(1.0);
        }
    }

    fn apply(&mut self, key: Key, actions: Vec<Action>, out: &mut Out, ctx: &mut Context<Self>) {
        for a in actions {
            let Some(e) = self.circuits.get_mut(&key) else {
                return;
            };
            match a {
                Action::ToPrev { cmd, payload } => out.push_cell(&e.prev.tx, key, cmd, payload),
                Action::ToNext { cmd, payload } => {
                    if let Some((nk, nl)) = &e.next {
                        out.push_cell(&nl.tx, *nk, cmd, payload);
                    }
                    if cmd == ChanCmd::Destroy {
                        self.drop_next(key); // TRUNCATE, or the circuit's close
                    }
                }
                Action::Extend {
                    linkspecs,
                    htype,
                    hdata,
                } => {
                    let request_id = (self.index << 48) | (self.next_request & 0xffff_ffff_ffff);
                    self.next_request += 1;
                    self.extends.insert(request_id, key);
                    e.extend = Some(request_id);
                    let mut specs = Vec::new();
                    for ls in linkspecs {
                        let mut b = bytes::BytesMut::new();
                        if ls.encode(&mut b).is_ok() && b.len() >= 2 {
                            specs.push(rpc::LinkSpecifier {
                                ls_type: u32::from(b[0]),
                                body: b.split_off(2).freeze(),
                            });
                        }
                    }
                    out.msgs.push((
                        e.prev.tx.clone(),
                        rpc::WorkerToEdge {
                            extend_requests: vec![rpc::ExtendRequest {
                                request_id,
                                link_specifiers: specs,
                                handshake_type: u32::from(htype),
                                handshake_data: hdata,
                                inbound: Some(rpc::CircKey::new(key.1, CircId(key.2))),
                            }],
                            ..Default::default()
                        },
                    ));
                }
                Action::OpenStream { stream, begin } => {
                    self.open_stream(key, stream, Some(begin), ctx)
                }
                Action::OpenDirStream { stream } => self.open_stream(key, stream, None, ctx),
                Action::StreamWrite { stream, data } => {
                    metrics::counter!("worker_exit_bytes_total", "direction" => "written")
                        .increment(data.len() as u64);
                    if let Some(io) = e.streams.get_mut(&stream)
                        && !io.write.push(data)
                    {
                        // Beyond the stream window: the engine refuses that first, so
                        // this is a destination gone or a bug.
                        ctx.address().do_send(StreamEvent::Ended {
                            key,
                            stream,
                            reason: EndReason::ResourceLimit,
                        });
                    }
                }
                Action::CloseStream { stream } => {
                    if let Some(mut io) = e.streams.remove(&stream) {
                        tracing::debug!(?key, stream = stream.0, "stream closed");
                        // The writer flushes what it holds (bounded by its timeout), then
                        // shuts the connection down.
                        io.write.close();
                        if let Some(r) = io.reader.take() {
                            r.abort();
                        }
                        metrics::gauge!("worker_streams").decrement(1.0);
                        e.granted -= io.granted;
                        grant_all(e);
                    }
                }
                Action::ResumeStream { stream } => grant(e, stream),
                Action::Close => {
                    self.close(key);
                    return;
                }
            }
        }
    }

    /// Opens an exit stream (`Some(begin)`) or a BEGIN_DIR stream (`None`).
    fn open_stream(
        &mut self,
        key: Key,
        stream: StreamId,
        begin: Option<Begin>,
        ctx: &mut Context<Self>,
    ) {
        let cfg = self.cfg.clone();
        let me = ctx.address();
        if let Some(e) = self.circuits.get_mut(&key) {
            e.streams.insert(
                stream,
                StreamIo {
                    write: WriteQueue::new(self.cfg.budget.clone()),
                    credit: Arc::new(Semaphore::new(0)),
                    granted: 0,
                    reader: None,
                    writer: None,
                },
            );
            metrics::gauge!("worker_streams").increment(1.0);
            tracing::debug!(?key, stream = stream.0, "stream opening");
        }
        actix::spawn(async move {
            let dir = begin.is_none();
            let result = match &begin {
                Some(b) => connect(&cfg, b).await,
                None => connect_dir(&cfg).await,
            };
            me.do_send(StreamEvent::Connected {
                key,
                stream,
                dir,
                result,
            });
        });
    }
}

async fn connect(
    cfg: &ShardConfig,
    begin: &Begin,
) -> Result<(tokio::net::TcpStream, SocketAddr), EndReason> {
    let addrs: Vec<IpAddr> = match begin.addr.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::time::timeout(
            cfg.connect_timeout,
            tokio::net::lookup_host((begin.addr.as_str(), begin.port)),
        )
        .await
        .map_err(|_| EndReason::Timeout)?
        .map_err(|_| EndReason::ResolveFailed)?
        .map(|a| a.ip())
        .collect(),
    };
    let ip = addrs
        .into_iter()
        .find(IpAddr::is_ipv4)
        .ok_or(EndReason::ResolveFailed)?;
    if !cfg.policy.allows(ip, begin.port) {
        metrics::counter!("worker_streams_refused_total", "reason" => "exit_policy").increment(1);
        return Err(EndReason::ExitPolicy);
    }
    let addr = SocketAddr::new(ip, begin.port);
    let tcp = tokio::time::timeout(cfg.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| EndReason::Timeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => EndReason::ConnectRefused,
            _ => EndReason::NoRoute,
        })?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, addr))
}

async fn connect_dir(cfg: &ShardConfig) -> Result<(tokio::net::TcpStream, SocketAddr), EndReason> {
    let Some(backend) = &cfg.dir_backend else {
        return Err(EndReason::NotDirectory);
    };
    let tcp = tokio::time::timeout(
        cfg.connect_timeout,
        tokio::net::TcpStream::connect(backend.as_str()),
    )
    .await
    .map_err(|_| EndReason::Timeout)?
    .map_err(|_| EndReason::ConnectRefused)?;
    let addr = tcp.peer_addr().map_err(|_| EndReason::Internal)?;
    metrics::counter!("worker_dir_streams_total").increment(1);
    Ok((tcp, addr))
}

/// Writes a stream's queued data to its destination, telling the shard after each batch
/// how many cells went out; ends the stream when the destination takes nothing for
/// `limit` or fails. Shuts the connection down once the stream's sender is gone.
async fn write_stream(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    queue: Arc<WriteQueue>,
    shard: Addr<Shard>,
    key: Key,
    stream: StreamId,
    limit: Duration,
) {
    let mut batch = Vec::new();
    while queue.take(READ_CELLS, &mut batch).await {
        let cells = batch.len() as u32;
        let mut bytes = 0;
        for b in batch.drain(..) {
            bytes += b.len();
            let reason = match tokio::time::timeout(limit, wr.write_all(&b)).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => EndReason::ConnReset,
                Err(_) => {
                    metrics::counter!("worker_streams_write_timeouts_total").increment(1);
                    EndReason::Timeout
                }
            };
            shard.do_send(StreamEvent::Ended {
                key,
                stream,
                reason,
            });
            return;
        }
        queue.written(bytes);
        shard.do_send(StreamEvent::Flushed { key, stream, cells });
    }
    let _ = tokio::time::timeout(limit, wr.shutdown()).await;
}

/// Hands the stream's reader as many DATA-cell credits as the windows allow now. What all
/// the circuit's streams may read ahead together (credits handed out plus cells read but
/// not yet sent) stays within the circuit's package window, so a circuit buffers at most
/// one circuit window however many streams it opens.
fn grant(e: &mut Entry, stream: StreamId) {
    let ahead = e.granted + e.circ.pending_cells();
    let circuit_room = usize::from(e.circ.circuit_credit()).saturating_sub(ahead);
    let credit = usize::from(e.circ.stream_credit(stream));
    let pending = e.circ.stream_pending(stream);
    if let Some(io) = e.streams.get_mut(&stream) {
        let room = credit
            .saturating_sub(pending + io.granted)
            .min(circuit_room);
        if room > 0 {
            io.credit.add_permits(room);
            io.granted += room;
            e.granted += room;
        }
    }
}

/// [`grant`] for every stream of the circuit: after a stream ended, the read-ahead it
/// held is free for the others (no SENDME may come to wake them).
fn grant_all(e: &mut Entry) {
    let ids: Vec<StreamId> = e.streams.keys().copied().collect();
    for s in ids {
        grant(e, s);
    }
}

impl Handler<FromEdge> for Shard {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: FromEdge, ctx: &mut Self::Context) -> Self::Result {
        let mut out = Out::default();
        let mut slot = None;
        match msg {
            FromEdge::Cells {
                link,
                cells,
                slot: s,
            } => {
                for (channel, c, stamp) in cells {
                    out.stamp = (link.id, stamp);
                    self.on_cell(&link, channel, c, &mut out, ctx);
                }
                slot = Some(s);
            }
            FromEdge::ExtendResult { link, result } => {
                self.extend_result(&link, result, &mut out, ctx);
            }
            FromEdge::ChannelClosed { link, channel } => {
                self.channel_closed(link, channel, &mut out, ctx);
            }
            FromEdge::LinkGone { link } => {
                let channels: Vec<u64> = self
                    .by_channel
                    .keys()
                    .filter(|k| k.0 == link)
                    .map(|k| k.1)
                    .collect();
                for channel in channels {
                    self.channel_closed(link, channel, &mut out, ctx);
                }
            }
        }
        AtomicResponse::new(Box::pin(
            async move {
                sends(out).await;
                drop(slot);
            }
            .into_actor(self),
        ))
    }
}

impl Handler<StreamEvent> for Shard {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: StreamEvent, ctx: &mut Self::Context) -> Self::Result {
        let mut out = Out::default();
        let mut rng = rand::rngs::OsRng;
        match msg {
            StreamEvent::Connected {
                key,
                stream,
                dir,
                result,
            } => {
                let me = ctx.address();
                let acts = match self.circuits.get_mut(&key) {
                    None => Vec::new(), // circuit gone; the socket drops here
                    Some(e) => match result {
                        Ok((tcp, addr)) => {
                            metrics::counter!("worker_streams_opened_total").increment(1);
                            let acts = e.circ.stream_connected(
                                &mut rng,
                                stream,
                                // BEGIN_DIR's CONNECTED names no address (tor-spec §6.2.1).
                                Ok(Connected {
                                    addr: (!dir).then_some((addr.ip(), 300)),
                                }),
                            );
                            if let Some(io) = e.streams.get_mut(&stream) {
                                let (mut rd, wr) = tcp.into_split();
                                io.writer = Some(actix::spawn(write_stream(
                                    wr,
                                    io.write.clone(),
                                    me.clone(),
                                    key,
                                    stream,
                                    self.cfg.stream_write_timeout,
                                )));
                                let credit = io.credit.clone();
                                io.reader = Some(actix::spawn(async move {
                                    // Up to READ_CELLS cells a read, as the stream's credit allows:
                                    // one syscall and one actor message per batch, not per cell.
                                    const MAX: usize = proto::relay_cell::RELAY_DATA_MAX;
                                    let mut buf = vec![0u8; MAX * READ_CELLS];
                                    loop {
                                        let Ok(permit) = credit.acquire().await else {
                                            break;
                                        };
                                        permit.forget();
                                        let mut k = 1;
                                        while k < READ_CELLS {
                                            match credit.try_acquire() {
                                                Ok(p) => {
                                                    p.forget();
                                                    k += 1;
                                                }
                                                Err(_) => break,
                                            }
                                        }
                                        match rd.read(&mut buf[..k * MAX]).await {
                                            Ok(0) => {
                                                me.do_send(StreamEvent::Ended {
                                                    key,
                                                    stream,
                                                    reason: EndReason::Done,
                                                });
                                                break;
                                            }
                                            Ok(n) => {
                                                let used = n.div_ceil(MAX);
                                                if used < k {
                                                    credit.add_permits(k - used);
                                                }
                                                metrics::counter!("worker_exit_bytes_total", "direction" => "read").increment(n as u64);
                                                if me
                                                    .send(StreamEvent::Data {
                                                        key,
                                                        stream,
                                                        data: Bytes::copy_from_slice(&buf[..n]),
                                                    })
                                                    .await
                                                    .is_err()
                                                {
                                                    break;
                                                }
                                            }
                                            Err(_) => {
                                                me.do_send(StreamEvent::Ended {
                                                    key,
                                                    stream,
                                                    reason: EndReason::ConnReset,
                                                });
                                                break;
                                            }
                                        }
                                    }
                                }));
                            }
                            acts
                        }
                        Err(reason) => e.circ.stream_connected(&mut rng, stream, Err(reason)),
                    },
                };
                self.apply(key, acts, &mut out, ctx);
                if let Some(e) = self.circuits.get_mut(&key) {
                    grant(e, stream);
                }
            }
            StreamEvent::Data { key, stream, data } => {
                let acts = match self.circuits.get_mut(&key) {
                    Some(e) => {
                        if let Some(io) = e.streams.get_mut(&stream) {
                            let cells = data
                                .len()
                                .div_ceil(proto::relay_cell::RELAY_DATA_MAX)
                                .max(1);
                            let used = cells.min(io.granted);
                            io.granted -= used;
                            e.granted -= used;
                        }
                        e.circ.stream_data(&mut rng, stream, &data)
                    }
                    None => Vec::new(),
                };
                self.apply(key, acts, &mut out, ctx);
            }
            StreamEvent::Flushed { key, stream, cells } => {
                let acts = match self.circuits.get_mut(&key) {
                    Some(e) if e.streams.contains_key(&stream) => {
                        e.circ.stream_flushed(&mut rng, stream, cells)
                    }
                    _ => Vec::new(),
                };
                self.apply(key, acts, &mut out, ctx);
            }
            StreamEvent::Ended {
                key,
                stream,
                reason,
            } => {
                let acts = match self.circuits.get_mut(&key) {
                    Some(e) => {
                        let mut a = e.circ.stream_ended(&mut rng, stream, reason);
                        a.push(Action::CloseStream { stream });
                        a
                    }
                    None => Vec::new(),
                };
                self.apply(key, acts, &mut out, ctx);
            }
        }
        AtomicResponse::new(Box::pin(sends(out).into_actor(self)))
    }
}

/// Memory pressure: the shard's circuits with data waiting for a destination, as
/// (tick of the oldest byte, bytes held, circuit).
#[derive(Message, Debug)]
#[rtype(result = "Vec<(u64, usize, Key)>")]
pub struct OomScan;

impl Handler<OomScan> for Shard {
    type Result = MessageResult<OomScan>;
    fn handle(&mut self, _: OomScan, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.circuits
                .iter()
                .filter_map(|(k, e)| {
                    let (tick, bytes) = e
                        .streams
                        .values()
                        .filter_map(|io| io.write.oldest())
                        .fold((u64::MAX, 0), |(t, b), (t2, b2)| (t.min(t2), b + b2));
                    (bytes > 0).then_some((tick, bytes, *k))
                })
                .collect(),
        )
    }
}

/// Memory pressure: end these circuits (DESTROY RESOURCELIMIT both ways), as C tor's
/// `circuits_handle_oom` does with the circuits whose queued data is oldest.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct OomKill(pub Vec<Key>);

impl Handler<OomKill> for Shard {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: OomKill, _: &mut Self::Context) -> Self::Result {
        let mut out = Out::default();
        for key in msg.0 {
            let Some(e) = self.circuits.get(&key) else {
                continue;
            };
            out.push_destroy(&e.prev.tx, key, DestroyReason::ResourceLimit);
            if let Some((nk, nl)) = &e.next {
                out.push_destroy(&nl.tx, *nk, DestroyReason::ResourceLimit);
            }
            metrics::counter!("worker_oom_circuits_killed_total").increment(1);
            tracing::debug!(?key, "circuit killed at the ceiling");
            self.close(key);
        }
        AtomicResponse::new(Box::pin(sends(out).into_actor(self)))
    }
}

/// Watches `budget` for the whole worker: when the data queued toward destinations passes
/// the ceiling, ends the circuits (on any shard) whose oldest queued byte is oldest until
/// usage is under [`proto_io::budget::OOM_TARGET`] of it. Runs until the shards are gone.
pub async fn oom_loop(budget: Arc<MemBudget>, shards: Vec<Addr<Shard>>) {
    loop {
        // Woken by the crossing, and once a second in case usage is still over after the
        // last round (what was killed frees its queues when its tasks have stopped).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), budget.crossed()).await;
        if !budget.is_over() {
            continue;
        }
        let before = budget.used();
        tracing::debug!(queued = before, "over the ceiling: scanning the shards");
        let mut held = Vec::new();
        for (i, s) in shards.iter().enumerate() {
            match s.send(OomScan).await {
                Ok(v) => held.extend(v.into_iter().map(|(t, b, k)| (t, b, i, k))),
                Err(_) => return, // the actix system stopped
            }
        }
        held.sort_unstable_by_key(|h| h.0);
        // What the circuits' queues hold; the rest of `before` is in queues whose stream
        // has ended and whose writer is still flushing (bounded by its timeout).
        let attributed: usize = held.iter().map(|h| h.1).sum();
        let mut victims: Vec<Vec<Key>> = vec![Vec::new(); shards.len()];
        let mut freed = 0usize;
        for (_, bytes, shard, key) in held {
            if before.saturating_sub(freed) <= budget.target() {
                break;
            }
            freed += bytes;
            victims[shard].push(key);
        }
        let killed: usize = victims.iter().map(Vec::len).sum();
        for (s, keys) in shards.iter().zip(victims) {
            if !keys.is_empty() && s.send(OomKill(keys)).await.is_err() {
                return;
            }
        }
        if killed == 0 {
            // All of it is in streams already ended and still flushing (bounded by their
            // write timeout); checked again in a second.
            tracing::debug!(
                queued = before,
                attributed,
                "over the ceiling, nothing to end"
            );
            continue;
        }
        metrics::counter!("tor_relay_load_oom_bytes_total", "subsys" => "cell")
            .increment(freed as u64);
        tracing::warn!(
            queued = before,
            attributed,
            ceiling = budget.limit(),
            killed,
            freed,
            "data queued toward destinations passed max_mem_in_queues; killed the circuits \
             with the oldest"
        );
    }
}
