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
use tokio::sync::mpsc;

use crate::chanmgr::ChannelManager;
use proto_io::channel::{CellHandler, ChanError, ChannelHandle, link_level};
use proto_io::rpc;

/// Messages queued toward one worker before a channel reader waits.
const WORKER_QUEUE: usize = 1024;
/// Most cells in one gRPC message to a worker.
const WORKER_BATCH: usize = 256;

struct Worker {
    url: String,
    tx: Mutex<Option<mpsc::Sender<rpc::EdgeToWorker>>>,
}

/// Routes cells between channels and workers.
pub struct Router {
    workers: Vec<Worker>,
    channels: Mutex<HashMap<u64, ChannelHandle>>,
    /// (channel, circuit id) -> worker index.
    circuits: Mutex<HashMap<(u64, u32), usize>>,
    chanmgr: Arc<ChannelManager>,
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

fn destroy(circ_id: CircId, reason: DestroyReason) -> ChanCell {
    let mut p = vec![0u8; CELL_PAYLOAD_LEN];
    p[0] = reason.into();
    ChanCell {
        circ_id,
        cmd: ChanCmd::Destroy,
        payload: Bytes::from(p),
    }
}

impl Router {
    /// A router for the worker URLs; call [`Router::start`] to connect them.
    pub fn new(urls: &[String], chanmgr: Arc<ChannelManager>, our_id: RsaIdentity) -> Arc<Self> {
        Arc::new(Router {
            workers: urls
                .iter()
                .map(|u| Worker {
                    url: u.clone(),
                    tx: Mutex::new(None),
                })
                .collect(),
            channels: Mutex::new(HashMap::new()),
            circuits: Mutex::new(HashMap::new()),
            chanmgr,
            our_id,
            edge_id: format!("edge-{}", std::process::id()),
        })
    }

    /// Keeps a link to every worker, reconnecting with backoff, until the process ends.
    pub fn start(self: &Arc<Self>) {
        for i in 0..self.workers.len() {
            let me = self.clone();
            tokio::spawn(async move { me.worker_loop(i).await });
        }
    }

    /// Number of workers with a live link.
    pub fn live_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| lock(&w.tx).is_some())
            .count()
    }

    fn pick_worker(
        &self,
        chan: u64,
        circ: u32,
    ) -> Option<(usize, mpsc::Sender<rpc::EdgeToWorker>)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| lock(&w.tx).clone().map(|tx| (i, w, tx)))
            .max_by_key(|(_, w, _)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&w.url, chan, circ).hash(&mut h);
                h.finish()
            })
            .map(|(i, _, tx)| (i, tx))
    }

    fn worker_tx(&self, i: usize) -> Option<mpsc::Sender<rpc::EdgeToWorker>> {
        self.workers.get(i).and_then(|w| lock(&w.tx).clone())
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
            self.drop_worker_circuits(i).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn run_worker_link(self: &Arc<Self>, i: usize, url: &str) -> Result<(), String> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let chan = endpoint.connect().await.map_err(|e| e.to_string())?;
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
        let rx = proto_io::batch::coalesce(rx, WORKER_BATCH, 4);
        let mut replies = client
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        *lock(&self.workers[i].tx) = Some(tx.clone());
        metrics::gauge!("edge_workers_connected").set(self.live_workers() as f64);
        tracing::info!(worker = %url, "worker linked");
        loop {
            let msg = match replies.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            for c in msg.cells {
                let Some(ck) = c.circ else { continue };
                let cell = ChanCell {
                    circ_id: CircId(ck.circ_id),
                    cmd: ChanCmd::from(u8::try_from(c.command).unwrap_or(0)),
                    payload: c.payload,
                };
                let ch = lock(&self.channels).get(&ck.channel).cloned();
                if let Some(ch) = ch {
                    let _ = ch.send(cell).await;
                }
            }
            for d in msg.destroys {
                let Some(ck) = d.circ else { continue };
                lock(&self.circuits).remove(&(ck.channel, ck.circ_id));
                let ch = lock(&self.channels).get(&ck.channel).cloned();
                if let Some(ch) = ch {
                    let reason = DestroyReason::from(u8::try_from(d.reason).unwrap_or(0));
                    metrics::counter!("edge_destroys_sent_total", "reason" => reason.name())
                        .increment(1);
                    let _ = ch.send(destroy(CircId(ck.circ_id), reason)).await;
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
                        let _ = ch.send(cell).await;
                    }
                });
            }
        }
    }

    /// DESTROYs every circuit pinned to worker `i` (it died).
    async fn drop_worker_circuits(&self, i: usize) {
        let gone: Vec<(u64, u32)> = {
            let mut c = lock(&self.circuits);
            let keys: Vec<_> = c
                .iter()
                .filter(|(_, w)| **w == i)
                .map(|(k, _)| *k)
                .collect();
            for k in &keys {
                c.remove(k);
            }
            keys
        };
        for (chan, circ) in gone {
            let ch = lock(&self.channels).get(&chan).cloned();
            if let Some(ch) = ch {
                metrics::counter!("edge_destroys_sent_total", "reason" => DestroyReason::ResourceLimit.name())
                    .increment(1);
                let _ = ch
                    .send(destroy(CircId(circ), DestroyReason::ResourceLimit))
                    .await;
            }
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
            let mut c = lock(&self.circuits);
            let mut id;
            loop {
                id = rand::random::<u32>();
                if ch.link_version >= 4 {
                    id = if ch.we_initiated {
                        id | 0x8000_0000
                    } else {
                        id & 0x7fff_ffff
                    };
                } else {
                    id &= 0xffff;
                }
                if id != 0 && !c.contains_key(&(ch.id, id)) {
                    break;
                }
            }
            c.insert((ch.id, id), worker);
            id
        };
        lock(&self.channels)
            .entry(ch.id)
            .or_insert_with(|| ch.clone());
        let mut payload = Vec::with_capacity(CELL_PAYLOAD_LEN);
        payload.extend_from_slice(&(x.handshake_type as u16).to_be_bytes());
        payload.extend_from_slice(&(x.handshake_data.len() as u16).to_be_bytes());
        payload.extend_from_slice(&x.handshake_data);
        if payload.len() > CELL_PAYLOAD_LEN {
            lock(&self.circuits).remove(&(ch.id, circ_id));
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

    async fn forward(&self, worker: usize, chan: u64, cell: ChanCell) -> bool {
        let Some(tx) = self.worker_tx(worker) else {
            return false;
        };
        tx.send(rpc::EdgeToWorker {
            cells: vec![rpc::Cell {
                circ: Some(rpc::CircKey {
                    channel: chan,
                    circ_id: cell.circ_id.0,
                }),
                command: u32::from(u8::from(cell.cmd)),
                payload: cell.payload,
            }],
            ..Default::default()
        })
        .await
        .is_ok()
    }
}

impl CellHandler for Router {
    fn on_cell<'a>(
        &'a self,
        chan: &'a ChannelHandle,
        cell: ChanCell,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<ChanCell>, ChanError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let Some(cell) = link_level(cell)? else {
                return Ok(None);
            };
            let key = (chan.id, cell.circ_id.0);
            let pinned = lock(&self.circuits).get(&key).copied();
            match (cell.cmd, pinned) {
                (ChanCmd::Create | ChanCmd::CreateFast | ChanCmd::Create2, None) => {
                    let wide = chan.link_version >= 4;
                    if !circ_id_ok_from_peer(cell.circ_id, wide, !chan.we_initiated) {
                        if cell.circ_id.0 == 0 {
                            return Ok(None); // C tor ignores CREATE with id 0
                        }
                        return Ok(Some(destroy(cell.circ_id, DestroyReason::Protocol)));
                    }
                    let Some((w, _)) = self.pick_worker(chan.id, cell.circ_id.0) else {
                        metrics::counter!("edge_circuits_refused_total", "reason" => "no_worker")
                            .increment(1);
                        return Ok(Some(destroy(cell.circ_id, DestroyReason::ResourceLimit)));
                    };
                    lock(&self.circuits).insert(key, w);
                    metrics::counter!("edge_circuits_created_total").increment(1);
                    if !self.forward(w, chan.id, cell.clone()).await {
                        lock(&self.circuits).remove(&key);
                        return Ok(Some(destroy(cell.circ_id, DestroyReason::ResourceLimit)));
                    }
                    Ok(None)
                }
                (ChanCmd::Create | ChanCmd::CreateFast | ChanCmd::Create2, Some(_)) => {
                    // A reused id: C tor drops it; destroying would kill the live circuit.
                    Ok(None)
                }
                (_, Some(w)) => {
                    if cell.cmd == ChanCmd::Destroy {
                        lock(&self.circuits).remove(&key);
                    }
                    self.forward(w, chan.id, cell).await;
                    Ok(None)
                }
                (_, None) => Ok(None), // unknown circuit: drop
            }
        })
    }

    fn on_open(&self, chan: &ChannelHandle) {
        lock(&self.channels).insert(chan.id, chan.clone());
    }

    fn on_close(&self, chan_id: u64) {
        lock(&self.channels).remove(&chan_id);
        lock(&self.circuits).retain(|k, _| k.0 != chan_id);
        for w in &self.workers {
            if let Some(tx) = lock(&w.tx).clone() {
                let _ = tx.try_send(rpc::EdgeToWorker {
                    closed: vec![rpc::ChannelClosed { channel: chan_id }],
                    ..Default::default()
                });
            }
        }
    }
}
