//! Batching on the edge↔worker stream (DESIGN.md "Data path": many cells per gRPC
//! message). Producers queue one message per cell; [`coalesce`] merges whatever is queued
//! when the stream is ready for its next message, so a busy link carries large batches and
//! an idle one adds no delay.
//!
//! Invariant: only messages that carry nothing but cells are merged, and only with their
//! neighbours in the queue, so the order of cells is kept and every other item (hellos,
//! destroys, extend requests and results, channel events) keeps its place relative to the
//! cells around it — an extend result still arrives before the CREATED2 it announces.

use tokio::sync::mpsc;

use crate::rpc;

/// A stream message that may carry cells.
pub trait CellBatch: Send + 'static {
    /// True when the message carries cells and nothing else.
    fn cells_only(&self) -> bool;
    /// How many cells it carries.
    fn cell_count(&self) -> usize;
    /// Appends `other`'s cells (both must be cells-only).
    fn absorb(&mut self, other: Self);
}

impl CellBatch for rpc::EdgeToWorker {
    fn cells_only(&self) -> bool {
        self.hello.is_none()
            && self.channels.is_empty()
            && self.closed.is_empty()
            && self.destroys.is_empty()
            && self.extend_results.is_empty()
    }
    fn cell_count(&self) -> usize {
        self.cells.len()
    }
    fn absorb(&mut self, other: Self) {
        self.cells.extend(other.cells);
    }
}

impl CellBatch for rpc::WorkerToEdge {
    fn cells_only(&self) -> bool {
        self.destroys.is_empty() && self.extend_requests.is_empty()
    }
    fn cell_count(&self) -> usize {
        self.cells.len()
    }
    fn absorb(&mut self, other: Self) {
        self.cells.extend(other.cells);
    }
}

/// Reads `rx` and forwards its messages, merging runs of cells-only messages into batches
/// of at most `max_cells` cells, into the returned receiver (capacity `depth`); `sizes`
/// records each batch's cell count. The task ends when either side is closed.
pub fn coalesce<M: CellBatch>(
    mut rx: mpsc::Receiver<M>,
    max_cells: usize,
    depth: usize,
    sizes: metrics::Histogram,
) -> mpsc::Receiver<M> {
    let (tx, out) = mpsc::channel(depth.max(1));
    tokio::spawn(async move {
        let mut held: Option<M> = None;
        loop {
            let first = match held.take() {
                Some(m) => m,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            let mut batch = first;
            if batch.cells_only() {
                while batch.cell_count() < max_cells {
                    match rx.try_recv() {
                        Ok(m)
                            if m.cells_only()
                                && batch.cell_count() + m.cell_count() <= max_cells =>
                        {
                            batch.absorb(m)
                        }
                        Ok(m) => {
                            held = Some(m);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            sizes.record(batch.cell_count() as f64);
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(n: u32) -> rpc::EdgeToWorker {
        rpc::EdgeToWorker {
            cells: vec![rpc::Cell {
                circ: Some(rpc::CircKey {
                    channel: 1,
                    circ_id: n,
                }),
                command: 3,
                payload: bytes::Bytes::new(),
                stamp: 0,
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn merges_runs_of_cells_and_keeps_order() {
        let (tx, rx) = mpsc::channel(64);
        for i in 0..5 {
            tx.send(cell(i)).await.unwrap_or_default();
        }
        tx.send(rpc::EdgeToWorker {
            extend_results: vec![rpc::ExtendResult::default()],
            ..Default::default()
        })
        .await
        .unwrap_or_default();
        for i in 5..8 {
            tx.send(cell(i)).await.unwrap_or_default();
        }
        drop(tx);
        let mut out = coalesce(rx, 4, 8, metrics::Histogram::noop());
        let mut got = Vec::new();
        while let Some(m) = out.recv().await {
            got.push(m);
        }
        let ids = |m: &rpc::EdgeToWorker| {
            m.cells
                .iter()
                .filter_map(|c| c.circ.map(|k| k.circ_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(got.len(), 4);
        assert_eq!(ids(&got[0]), [0, 1, 2, 3]);
        assert_eq!(ids(&got[1]), [4]);
        assert!(!got[2].extend_results.is_empty() && got[2].cells.is_empty());
        assert_eq!(ids(&got[3]), [5, 6, 7]);
    }
}
