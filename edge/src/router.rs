//! Cells between channels and circuit workers (DESIGN.md "Data path"): each circuit is
//! pinned to one worker at creation (rendezvous hashing over the connected workers) and
//! found by table afterwards, so adding a worker never moves a live circuit.
//!
//! Invariants:
//! - A CREATE* with no connected worker, a bad circuit id, or a reused id gets DESTROY.
//! - When a worker link ends, every circuit pinned to it gets DESTROY on its channel; when
//!   a channel ends, every worker hears `ChannelClosed` for it.
//! - Extends ask the [`ChannelManager`] for one canonical channel per identity and pick a
//!   fresh circuit id of the right half (MSB set when we initiated the link).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use proto::cell::msg::DestroyReason;
use proto::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd, circ_id_ok_from_peer};
use proto::linkspec::{LinkSpec, check_extend_targets};
use proto::{CircId, RsaIdentity};
use proto_io::budget::MemBudget;
use proto_io::channel::{
    CellHandler, CellsFuture, ChanError, ChannelHandle, QueueError, link_level,
};
use proto_io::rpc;
use tokio::sync::mpsc;

use crate::chanmgr::ChannelManager;

/// Messages queued toward one worker before a channel reader waits.
const WORKER_QUEUE: usize = 128;
/// HTTP/2 flow-control window of a worker link, per stream and per connection: enough
/// for a few milliseconds of a busy link, so cells do not wait behind megabytes in
/// flight (an adaptive window grows to the bandwidth-delay product of a saturated
/// machine, and every circuit's cells queue behind it).
pub const LINK_WINDOW: u32 = 512 << 10;
/// Most cells in one gRPC message to a worker.
const WORKER_BATCH: usize = 256;
/// Random circuit ids tried on a channel before an extend fails (C tor's
/// `MAX_CIRCID_ATTEMPTS` in `get_unique_circ_id_by_chan`).
const MAX_CIRCID_ATTEMPTS: usize = 64;

struct Worker {
    url: String,
    tx: Mutex<Option<mpsc::Sender<rpc::EdgeToWorker>>>,
}

/// Why the edge itself ended a circuit.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Its queue toward a channel passed `circ_max_cell_queue_size`.
    MaxCellQueue,
    /// The process's queues passed `max_mem_in_queues` and its cells were the oldest.
    OutOfMemory,
}

/// A circuit end on one of our channels.
#[derive(Clone, Copy, Debug)]
struct Circ {
    worker: usize,
    /// We created it (an extend), rather than the peer.
    outbound: bool,
}

struct ChanEntry {
    handle: ChannelHandle,
    circuits: HashMap<u32, Circ>,
}

impl ChanEntry {
    fn insert(&mut self, circ: u32, c: Circ) {
        self.circuits.insert(circ, c);
        self.handle.set_circuits(self.circuits.len());
    }
    fn remove(&mut self, circ: u32) -> Option<Circ> {
        let c = self.circuits.remove(&circ);
        self.handle.set_circuits(self.circuits.len());
        c
    }
}

/// Routes cells between channels and workers.
pub struct Router {
    workers: Vec<Worker>,
    /// Open channels and the circuits on each; a channel's close touches only its own.
    channels: Mutex<HashMap<u64, ChanEntry>>,
    /// From a cell's arrival here to its successor's return from the worker
    /// (`edge_cluster_latency_seconds`: the latency the cluster adds, on this edge).
    cluster_latency: metrics::Histogram,
    /// Mutual TLS for the worker links; `None` under `cluster_tls.insecure_plaintext`.
    tls: Option<tonic::transport::ClientTlsConfig>,
    chanmgr: Arc<ChannelManager>,
    budget: Arc<MemBudget>,
    our_id: RsaIdentity,
    edge_id: String,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Router {
    /// A router for the worker URLs whose channel queues share `budget`; call
    /// [`Router::start`] to connect them.
    pub fn new(
        urls: &[String],
        tls: Option<tonic::transport::ClientTlsConfig>,
        chanmgr: Arc<ChannelManager>,
        budget: Arc<MemBudget>,
        our_id: RsaIdentity,
    ) -> Arc<Self> {
        Arc::new(Router {
            workers: urls
                .iter()
                .map(|u| Worker {
                    url: u.clone(),
                    tx: Mutex::new(None),
                })
                .collect(),
            channels: Mutex::new(HashMap::new()),
            cluster_latency: metrics::histogram!("edge_cluster_latency_seconds"),
            tls,
            chanmgr,
            budget,
            our_id,
            edge_id: format!("edge-{}", std::process::id()),
        })
    }

    /// Keeps a link to every worker, reconnecting with backoff, and watches the queue
    /// ceiling, until the process ends.
    pub fn start(self: &Arc<Self>) {
        for i in 0..self.workers.len() {
            let me = self.clone();
            tokio::spawn(async move { me.worker_loop(i).await });
        }
        let me = self.clone();
        tokio::spawn(async move { me.oom_loop().await });
        let budget = self.budget.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                metrics::gauge!("edge_queued_bytes").set(budget.used() as f64);
            }
        });
    }

    /// Number of workers with a live link.
    pub fn live_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| lock(&w.tx).is_some())
            .count()
    }

    fn pick_worker(&self, chan: u64, circ: u32) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| lock(&w.tx).is_some())
            .max_by_key(|(_, w)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&w.url, chan, circ).hash(&mut h);
                h.finish()
            })
            .map(|(i, _)| i)
    }

    fn worker_tx(&self, i: usize) -> Option<mpsc::Sender<rpc::EdgeToWorker>> {
        self.workers.get(i).and_then(|w| lock(&w.tx).clone())
    }

    /// Hands `msg` to worker `i` without waiting: queued now if there is room, else by a
    /// task of its own. Dropped if the link is down (its circuits go with it).
    fn tell_worker(&self, i: usize, msg: rpc::EdgeToWorker) {
        let Some(tx) = self.worker_tx(i) else { return };
        if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(msg) {
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Ends a circuit from here: DESTROY (RESOURCELIMIT) to the peer, and to the worker as
    /// if the peer had sent it, so the rest of the circuit is torn down too.
    fn kill(&self, chan: u64, circ: u32, why: Kill) {
        self.kill_all(&[(chan, circ)], why);
    }

    /// [`Router::kill`] for many circuits, with one message per worker.
    fn kill_all(&self, victims: &[(u64, u32)], why: Kill) {
        let mut per_worker: HashMap<usize, Vec<rpc::Destroy>> = HashMap::new();
        for &(chan, circ) in victims {
            let (entry, handle) = {
                let mut t = lock(&self.channels);
                let Some(ce) = t.get_mut(&chan) else { continue };
                (ce.remove(circ), ce.handle.clone())
            };
            let Some(c) = entry else { continue };
            handle.queue_destroy(CircId(circ), DestroyReason::ResourceLimit);
            per_worker
                .entry(c.worker)
                .or_default()
                .push(rpc::Destroy::new(
                    chan,
                    CircId(circ),
                    DestroyReason::ResourceLimit,
                ));
            match why {
                Kill::MaxCellQueue => {
                    // C tor counts these by the queue's direction (relay.c).
                    let kind = if c.outbound {
                        "circuit_killed_max_cell_outq"
                    } else {
                        "circuit_killed_max_cell"
                    };
                    metrics::counter!("tor_relay_dos_total", "type" => kind).increment(1);
                    tracing::debug!(
                        "circuit queue over circ_max_cell_queue_size; closing it for safety"
                    );
                }
                Kill::OutOfMemory => {
                    metrics::counter!("edge_oom_circuits_killed_total").increment(1);
                }
            }
            metrics::counter!("edge_destroys_sent_total", "reason" => DestroyReason::ResourceLimit.name())
                .increment(1);
        }
        for (w, destroys) in per_worker {
            self.tell_worker(
                w,
                rpc::EdgeToWorker {
                    destroys,
                    ..Default::default()
                },
            );
        }
    }

    /// When the channel queues cross the ceiling, ends the circuits whose oldest queued
    /// cell is oldest until 90 % of it remains (C tor's `circuits_handle_oom`).
    async fn oom_loop(self: Arc<Self>) {
        loop {
            self.budget.crossed().await;
            if !self.budget.is_over() {
                continue;
            }
            let before = self.budget.used();
            let mut oldest: Vec<(u64, u64, u32)> = {
                let t = lock(&self.channels);
                t.iter()
                    .flat_map(|(id, ce)| {
                        ce.handle
                            .oldest_cells()
                            .into_iter()
                            .map(move |(c, tick)| (tick, *id, c.0))
                    })
                    .collect()
            };
            oldest.sort_unstable();
            let mut freed = 0usize;
            let mut victims = Vec::new();
            for (_, chan, circ) in oldest {
                if self.budget.used() <= self.budget.target() {
                    break;
                }
                let handle = lock(&self.channels).get(&chan).map(|ce| ce.handle.clone());
                if let Some(h) = handle {
                    freed += h.clear_circuit(CircId(circ));
                    victims.push((chan, circ));
                }
            }
            let killed = victims.len();
            self.kill_all(&victims, Kill::OutOfMemory);
            metrics::counter!("tor_relay_load_oom_bytes_total", "subsys" => "cell")
                .increment(freed as u64);
            tracing::warn!(
                queued = before,
                ceiling = self.budget.limit(),
                killed,
                freed,
                "queued cells passed max_mem_in_queues; killed the circuits with the oldest"
            );
        }
    }

    async fn worker_loop(self: Arc<Self>, i: usize) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let url = self.workers[i].url.clone();
            match self.run_worker_link(i, &url).await {
                Ok(()) => tracing::info!(worker = %url, "worker link closed"),
                Err(e) => tracing::debug!(worker = %url, "worker link failed: {e}"),
            }
            *lock(&self.workers[i].tx) = None;
            metrics::gauge!("edge_workers_connected").set(self.live_workers() as f64);
            self.drop_worker_circuits(i);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn run_worker_link(self: &Arc<Self>, i: usize, url: &str) -> Result<(), String> {
        let unix = proto_io::unix_link::socket_path(url);
        // A Unix socket's URI only names the HTTP/2 authority.
        let uri = if unix.is_some() { "http://worker" } else { url };
        let mut endpoint = tonic::transport::Endpoint::from_shared(uri.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(LINK_WINDOW)
            .initial_connection_window_size(LINK_WINDOW);
        let chan = match unix {
            Some(path) => proto_io::unix_link::connect(path, &endpoint).await,
            None => {
                if let Some(tls) = &self.tls {
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .map_err(|e| e.to_string())?;
                }
                endpoint.connect().await
            }
        }
        .map_err(|e| e.to_string())?;
        let mut client = rpc::circuit_worker_client::CircuitWorkerClient::new(chan)
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<rpc::EdgeToWorker>(WORKER_QUEUE);
        tx.send(rpc::EdgeToWorker {
            hello: Some(rpc::EdgeHello {
                edge_id: self.edge_id.clone(),
                max_link_protocol: 5,
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        // Cells queued while the stream is busy go out together (many cells a message).
        let rx = proto_io::batch::coalesce(
            rx,
            WORKER_BATCH,
            4,
            metrics::histogram!("edge_worker_batch_cells", "direction" => "to_worker"),
        );
        let mut replies = client
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        *lock(&self.workers[i].tx) = Some(tx.clone());
        metrics::gauge!("edge_workers_connected").set(self.live_workers() as f64);
        tracing::info!(worker = %url, "worker linked");
        let sizes = metrics::histogram!("edge_worker_batch_cells", "direction" => "from_worker");
        loop {
            let msg = match replies.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            sizes.record((msg.cells.len() + msg.destroys.len()) as f64);
            self.from_worker(i, &tx, msg);
        }
    }

    /// One message from worker `i`: its cells are queued on their channels without
    /// waiting (a full circuit queue ends that circuit only), its DESTROYs end circuits,
    /// its extend requests start extends.
    fn from_worker(
        self: &Arc<Self>,
        i: usize,
        tx: &mpsc::Sender<rpc::EdgeToWorker>,
        msg: rpc::WorkerToEdge,
    ) {
        let mut overflows = Vec::new();
        {
            let t = lock(&self.channels);
            for c in msg.cells {
                let stamp = c.stamp;
                let Ok((ck, cell)) = c.into_chan() else {
                    metrics::counter!("edge_rpc_rejected_total", "part" => "cell").increment(1);
                    continue;
                };
                let Some(ce) = t.get(&ck.channel) else {
                    continue;
                };
                if !ce.circuits.contains_key(&ck.circ_id) {
                    continue; // ended here already
                }
                if stamp != 0 {
                    self.cluster_latency
                        .record(rpc::stamp_age(stamp).as_secs_f64());
                }
                if let Err(QueueError::Overflow(o)) = ce.handle.queue(cell) {
                    overflows.push((ck.channel, o.circ_id.0));
                }
            }
        }
        for (chan, circ) in overflows {
            self.kill(chan, circ, Kill::MaxCellQueue);
        }
        for d in msg.destroys {
            let Some(ck) = d.circ else { continue };
            let handle = {
                let mut t = lock(&self.channels);
                t.get_mut(&ck.channel).and_then(|ce| {
                    ce.remove(ck.circ_id)?;
                    Some(ce.handle.clone())
                })
            };
            tracing::debug!(
                channel = ck.channel,
                circ = ck.circ_id,
                known = handle.is_some(),
                "DESTROY from the worker"
            );
            if let Some(h) = handle {
                let reason = d.destroy_reason();
                metrics::counter!("edge_destroys_sent_total", "reason" => reason.name())
                    .increment(1);
                h.queue_destroy(CircId(ck.circ_id), reason);
            }
        }
        for x in msg.extend_requests {
            let me = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let (result, create2) = me.extend(i, &x).await;
                // The result goes to the worker before CREATE2 leaves, so the worker
                // knows the outbound circuit before its CREATED2 can come back.
                let _ = tx
                    .send(rpc::EdgeToWorker {
                        extend_results: vec![rpc::ExtendResult {
                            request_id: x.request_id,
                            outcome: Some(result),
                        }],
                        ..Default::default()
                    })
                    .await;
                if let Some((ch, cell)) = create2 {
                    let _ = ch.queue(cell);
                }
            });
        }
    }

    /// DESTROYs every circuit pinned to worker `i` (it died).
    fn drop_worker_circuits(&self, i: usize) {
        let mut gone: Vec<(ChannelHandle, u32)> = Vec::new();
        {
            let mut t = lock(&self.channels);
            for ce in t.values_mut() {
                let ids: Vec<u32> = ce
                    .circuits
                    .iter()
                    .filter(|(_, c)| c.worker == i)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    ce.remove(id);
                    gone.push((ce.handle.clone(), id));
                }
            }
        }
        for (h, circ) in gone {
            metrics::counter!("edge_destroys_sent_total", "reason" => DestroyReason::ResourceLimit.name())
                .increment(1);
            h.queue_destroy(CircId(circ), DestroyReason::ResourceLimit);
        }
    }

    /// Finds or opens the channel and allocates the outbound circuit; returns the result
    /// for the worker and the CREATE2 to send once the worker has it.
    async fn extend(
        &self,
        worker: usize,
        x: &rpc::ExtendRequest,
    ) -> (
        rpc::extend_result::Outcome,
        Option<(ChannelHandle, ChanCell)>,
    ) {
        use rpc::extend_result::Outcome;
        let fail = |r: DestroyReason| (Outcome::FailedReason(u32::from(u8::from(r))), None);
        let mut specs = Vec::new();
        for s in &x.link_specifiers {
            match LinkSpec::from_parts(u8::try_from(s.ls_type).unwrap_or(255), &s.body) {
                Ok(ls) => specs.push(ls),
                Err(_) => return fail(DestroyReason::Protocol),
            }
        }
        let Ok(target) = check_extend_targets(&specs) else {
            return fail(DestroyReason::Protocol);
        };
        if target.rsa_id == self.our_id {
            // Extending to ourselves is refused, as C tor does.
            return fail(DestroyReason::Protocol);
        }
        let ch = match self.chanmgr.get_or_connect(&target).await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::debug!("extend failed: {e}");
                metrics::counter!("edge_extend_failures_total").increment(1);
                return fail(DestroyReason::ConnectFailed);
            }
        };
        let circ_id = {
            let mut t = lock(&self.channels);
            if ch.is_closed() {
                // Checked under the table lock: a channel open here is either still open
                // when its `on_close` runs (which removes this entry) or seen closed.
                return fail(DestroyReason::ConnectFailed);
            }
            let ce = t.entry(ch.id).or_insert_with(|| ChanEntry {
                handle: ch.clone(),
                circuits: HashMap::new(),
            });
            let mut rng = rand::thread_rng();
            let free = (0..MAX_CIRCID_ATTEMPTS)
                .map(|_| {
                    let id = rand::Rng::r#gen::<u32>(&mut rng);
                    if ch.link_version >= 4 {
                        if ch.we_initiated {
                            id | 0x8000_0000
                        } else {
                            id & 0x7fff_ffff
                        }
                    } else {
                        id & 0xffff
                    }
                })
                .find(|id| *id != 0 && !ce.circuits.contains_key(id));
            let Some(id) = free else {
                // C tor: "No unused circIDs found on channel"; the extend fails.
                metrics::counter!("edge_extend_failures_total").increment(1);
                tracing::warn!("no unused circuit id on a channel; failing an extend");
                return fail(DestroyReason::ResourceLimit);
            };
            ce.insert(
                id,
                Circ {
                    worker,
                    outbound: true,
                },
            );
            id
        };
        let mut payload = Vec::with_capacity(CELL_PAYLOAD_LEN);
        payload.extend_from_slice(&(x.handshake_type as u16).to_be_bytes());
        payload.extend_from_slice(&(x.handshake_data.len() as u16).to_be_bytes());
        payload.extend_from_slice(&x.handshake_data);
        if payload.len() > CELL_PAYLOAD_LEN {
            if let Some(ce) = lock(&self.channels).get_mut(&ch.id) {
                ce.remove(circ_id);
            }
            return fail(DestroyReason::Protocol);
        }
        payload.resize(CELL_PAYLOAD_LEN, 0);
        metrics::counter!("edge_extends_total").increment(1);
        let cell = ChanCell {
            circ_id: CircId(circ_id),
            cmd: ChanCmd::Create2,
            payload: Bytes::from(payload),
        };
        (
            Outcome::Outbound(rpc::CircKey {
                channel: ch.id,
                circ_id,
            }),
            Some((ch, cell)),
        )
    }

    /// Where one cell from `chan` goes, decided under the channel table's lock (`t`):
    /// a circuit's cells go to the worker it is pinned to; a new circuit is pinned here.
    fn route(
        &self,
        t: &mut HashMap<u64, ChanEntry>,
        chan: &ChannelHandle,
        cell: ChanCell,
    ) -> Result<Route, ChanError> {
        let Some(cell) = link_level(cell)? else {
            return Ok(Route::Drop);
        };
        let circ = cell.circ_id.0;
        let Some(ce) = t.get_mut(&chan.id) else {
            return Ok(Route::Drop); // the channel is closing
        };
        match (cell.cmd, ce.circuits.get(&circ).copied()) {
            (ChanCmd::Create | ChanCmd::CreateFast | ChanCmd::Create2, None) => {
                let wide = chan.link_version >= 4;
                if !circ_id_ok_from_peer(cell.circ_id, wide, !chan.we_initiated) {
                    if circ == 0 {
                        return Ok(Route::Drop); // C tor ignores CREATE with id 0
                    }
                    return Ok(Route::Reply(ChanCell::destroy(
                        cell.circ_id,
                        DestroyReason::Protocol,
                    )));
                }
                let Some(w) = self.pick_worker(chan.id, circ) else {
                    metrics::counter!("edge_circuits_refused_total", "reason" => "no_worker")
                        .increment(1);
                    return Ok(Route::Reply(ChanCell::destroy(
                        cell.circ_id,
                        DestroyReason::ResourceLimit,
                    )));
                };
                ce.insert(
                    circ,
                    Circ {
                        worker: w,
                        outbound: false,
                    },
                );
                metrics::counter!("edge_circuits_created_total").increment(1);
                Ok(Route::Forward {
                    worker: w,
                    cell,
                    created: true,
                })
            }
            // A reused id: C tor drops it; destroying would kill the live circuit.
            (ChanCmd::Create | ChanCmd::CreateFast | ChanCmd::Create2, Some(_)) => Ok(Route::Drop),
            (_, Some(c)) => {
                if cell.cmd == ChanCmd::Destroy {
                    ce.remove(circ);
                    // The circuit is gone: what was queued for it is not sent.
                    chan.clear_circuit(cell.circ_id);
                }
                Ok(Route::Forward {
                    worker: c.worker,
                    cell,
                    created: false,
                })
            }
            (_, None) => Ok(Route::Drop), // unknown circuit: drop
        }
    }
}

/// What [`Router::route`] decided for one cell.
enum Route {
    /// Answer on the same channel (a refused CREATE).
    Reply(ChanCell),
    /// To the circuit's worker; `created` when this cell opened the circuit here.
    Forward {
        worker: usize,
        cell: ChanCell,
        created: bool,
    },
    /// Nothing to do.
    Drop,
}

/// One burst's cells for one worker, and the circuits the burst opened there.
struct WorkerBatch {
    worker: usize,
    msg: rpc::EdgeToWorker,
    created: Vec<u32>,
}

impl CellHandler for Router {
    /// The burst is routed under one lock of the channel table and leaves as one message
    /// per worker, in order; if a worker's link is gone, the circuits the burst opened
    /// there get DESTROY (RESOURCELIMIT).
    fn on_cells<'a>(&'a self, chan: &'a ChannelHandle, cells: Vec<ChanCell>) -> CellsFuture<'a> {
        Box::pin(async move {
            let mut replies = Vec::new();
            let mut batches: Vec<WorkerBatch> = Vec::new();
            let stamp = rpc::stamp_now();
            {
                let mut t = lock(&self.channels);
                for cell in cells {
                    let (worker, cell, created) = match self.route(&mut t, chan, cell)? {
                        Route::Reply(r) => {
                            replies.push(r);
                            continue;
                        }
                        Route::Drop => continue,
                        Route::Forward {
                            worker,
                            cell,
                            created,
                        } => (worker, cell, created),
                    };
                    let i = batches
                        .iter()
                        .position(|b| b.worker == worker)
                        .unwrap_or_else(|| {
                            batches.push(WorkerBatch {
                                worker,
                                msg: rpc::EdgeToWorker::default(),
                                created: Vec::new(),
                            });
                            batches.len() - 1
                        });
                    let b = &mut batches[i];
                    if created {
                        b.created.push(cell.circ_id.0);
                    }
                    if cell.cmd == ChanCmd::Destroy {
                        b.msg.destroys.push(rpc::Destroy::from_cell(chan.id, &cell));
                    } else {
                        let mut c = rpc::Cell::from_chan(chan.id, cell);
                        c.stamp = stamp;
                        b.msg.cells.push(c);
                    }
                }
            }
            for b in batches {
                let sent = match self.worker_tx(b.worker) {
                    Some(tx) => tx.send(b.msg).await.is_ok(),
                    None => false,
                };
                if !sent && !b.created.is_empty() {
                    let mut t = lock(&self.channels);
                    for circ in b.created {
                        if let Some(ce) = t.get_mut(&chan.id) {
                            ce.remove(circ);
                        }
                        replies.push(ChanCell::destroy(
                            CircId(circ),
                            DestroyReason::ResourceLimit,
                        ));
                    }
                }
            }
            Ok(replies)
        })
    }

    fn on_open(&self, chan: &ChannelHandle) {
        lock(&self.channels).insert(
            chan.id,
            ChanEntry {
                handle: chan.clone(),
                circuits: HashMap::new(),
            },
        );
    }

    fn on_close(&self, chan_id: u64) {
        lock(&self.channels).remove(&chan_id);
        for i in 0..self.workers.len() {
            self.tell_worker(
                i,
                rpc::EdgeToWorker {
                    closed: vec![rpc::ChannelClosed { channel: chan_id }],
                    ..Default::default()
                },
            );
        }
    }

    fn on_overflow(&self, chan: &ChannelHandle, overflow: proto::circuitmux::Overflow) {
        self.kill(chan.id, overflow.circ_id.0, Kill::MaxCellQueue);
    }
}
