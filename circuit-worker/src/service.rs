//! The worker side of the edge↔worker gRPC stream (`proto/io/rpc.proto`): one `Link` per
//! edge. Incoming batches are split per shard (by rendezvous on the circuit key for new
//! circuits, by the link's [`Routes`] for outbound circuits of extends) and handed to the
//! shard actors without waiting for them to be handled: each batch holds one of the link's
//! [`IN_FLIGHT`] slots until its shard has handled it, so the link's reader decodes the
//! next message while the shards work, and a busy shard still pushes back on its edge.
//!
//! Invariants: a circuit's cells reach one shard, in order (one reader per link puts them
//! in the shards' mailboxes in arrival order); a message that breaks the rpc
//! invariants (a link cell, an unknown command, a cell without a key) is counted and
//! dropped, never handed on; when the link ends every shard drops that link's circuits
//! (DESTROYing their other sides).

use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::Addr;
use proto::cell::ChanCell;
use proto_io::rpc;
use proto_io::rpc::circuit_worker_server::CircuitWorker;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::shard::{FromEdge, Link, Routes, Shard};

/// Messages queued toward one edge before a shard has to wait.
pub const EDGE_QUEUE: usize = 128;
/// Batches of one link handed to shards and not yet handled.
pub const IN_FLIGHT: usize = 4;

/// The tonic service.
#[derive(Debug)]
pub struct WorkerService {
    shards: Vec<Addr<Shard>>,
    next_link: AtomicU64,
}

impl WorkerService {
    /// A service over `shards`.
    pub fn new(shards: Vec<Addr<Shard>>) -> Self {
        WorkerService {
            shards,
            next_link: AtomicU64::new(1),
        }
    }
}

/// The shard of a new circuit: a hash of (link, channel, circuit id).
pub fn shard_for(link: u64, channel: u64, circ_id: u32, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (link, channel, circ_id).hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

/// Counts a part of an edge's message that breaks the rpc invariants (dropped).
fn rejected(what: &'static str) {
    metrics::counter!("worker_rpc_rejected_total", "part" => what).increment(1);
}

type LinkStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<rpc::WorkerToEdge, Status>> + Send>>;

#[tonic::async_trait]
impl CircuitWorker for WorkerService {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<rpc::EdgeToWorker>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut incoming = request.into_inner();
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let shards = self.shards.clone();
        let (tx, rx) = mpsc::channel::<rpc::WorkerToEdge>(EDGE_QUEUE);
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        metrics::gauge!("worker_edge_links").increment(1.0);
        tokio::spawn(async move {
            let link = Link {
                id,
                tx,
                routes: Arc::new(Routes::default()),
            };
            let sizes = metrics::histogram!("worker_edge_batch_cells", "direction" => "from_edge");
            loop {
                let msg = match incoming.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                sizes.record((msg.cells.len() + msg.destroys.len()) as f64);
                if let Some(h) = &msg.hello {
                    tracing::info!(edge = %h.edge_id, link = id, "edge linked");
                }
                for result in msg.extend_results {
                    let shard = usize::try_from(Shard::shard_of_request(result.request_id))
                        .unwrap_or(usize::MAX);
                    let Some(addr) = shards.get(shard) else {
                        rejected("extend_result");
                        continue;
                    };
                    // Awaited: the shard has routed the new outbound circuit before any
                    // of its cells below are looked up.
                    let _ = addr
                        .send(FromEdge::ExtendResult {
                            link: link.clone(),
                            result,
                        })
                        .await;
                }
                // DESTROYs from the edge are cells like any other for the circuit engine.
                let cells: Vec<(rpc::CircKey, ChanCell, u32)> = msg
                    .cells
                    .into_iter()
                    .map(|c| {
                        let stamp = c.stamp;
                        c.into_chan().map(|(k, cell)| (k, cell, stamp))
                    })
                    .chain(
                        msg.destroys
                            .into_iter()
                            .map(|d| d.into_chan().map(|(k, cell)| (k, cell, 0))),
                    )
                    .filter_map(|c| c.map_err(|_| rejected("cell")).ok())
                    .collect();
                let routed = link.routes.lookup(cells.iter().map(|(k, _, _)| k));
                let mut per_shard: Vec<Vec<(u64, ChanCell, u32)>> = vec![Vec::new(); shards.len()];
                for ((key, cell, stamp), route) in cells.into_iter().zip(routed) {
                    let s = route
                        .unwrap_or_else(|| shard_for(id, key.channel, key.circ_id, shards.len()));
                    if let Some(v) = per_shard.get_mut(s) {
                        v.push((key.channel, cell, stamp));
                    }
                }
                for (s, cells) in per_shard.into_iter().enumerate() {
                    if cells.is_empty() {
                        continue;
                    }
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break; // never closed
                    };
                    // `do_send` ignores the mailbox's capacity; the slots bound it instead.
                    shards[s].do_send(FromEdge::Cells {
                        link: link.clone(),
                        cells,
                        slot,
                    });
                }
                for c in msg.closed {
                    link.routes.drop_channel(c.channel);
                    for s in &shards {
                        let _ = s
                            .send(FromEdge::ChannelClosed {
                                link: id,
                                channel: c.channel,
                            })
                            .await;
                    }
                }
            }
            for s in &shards {
                let _ = s.send(FromEdge::LinkGone { link: id }).await;
            }
            metrics::gauge!("worker_edge_links").decrement(1.0);
            tracing::info!(link = id, "edge link closed");
        });
        // Cells queued while the stream is busy go out together (many cells a message).
        let out = ReceiverStream::new(proto_io::batch::coalesce(
            rx,
            256,
            4,
            metrics::histogram!("worker_edge_batch_cells", "direction" => "to_edge"),
        ));
        let out = tokio_stream::StreamExt::map(out, Ok);
        Ok(Response::new(Box::pin(out) as LinkStream))
    }
}
