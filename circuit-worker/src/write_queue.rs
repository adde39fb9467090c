//! The data waiting to be written to one exit or directory stream's destination.
//!
//! Invariants:
//! - A queue holds at most [`WriteQueue::CHUNKS`] chunks (one stream window of DATA
//!   cells and some slack for optimistic data); a push beyond it is refused.
//! - Every byte queued, or taken by the writer and not yet written, is on the worker's
//!   [`MemBudget`]; the queue hands back what it holds when it goes away, whoever drops
//!   it last (the shard or the writer task).
//! - [`WriteQueue::oldest`] is the budget tick of the oldest byte not yet written, so the
//!   memory-pressure handler can end the circuits whose data has waited longest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use proto_io::budget::MemBudget;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(u64, Bytes)>,
    /// Bytes queued or in the writer's hands.
    bytes: usize,
    /// Tick of the oldest chunk the writer took and has not reported written.
    in_flight: Option<u64>,
    /// No more data will be pushed.
    closed: bool,
}

/// A bounded queue toward one destination (see the module docs).
#[derive(Debug)]
pub struct WriteQueue {
    state: Mutex<State>,
    ready: Notify,
    budget: Arc<MemBudget>,
}

impl WriteQueue {
    /// Most chunks queued at once.
    pub const CHUNKS: usize = proto::circuit::STREAMWINDOW_START as usize + 16;

    /// An empty queue accounted on `budget`.
    pub fn new(budget: Arc<MemBudget>) -> Arc<Self> {
        Arc::new(WriteQueue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            budget,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `data`; false (nothing queued) when the queue is full or closed.
    pub fn push(&self, data: Bytes) -> bool {
        let mut s = self.lock();
        if s.closed || s.queue.len() >= Self::CHUNKS {
            return false;
        }
        let before = s.bytes;
        s.bytes += data.len();
        s.queue.push_back((self.budget.tick(), data));
        self.budget.adjust(before, s.bytes);
        drop(s);
        self.ready.notify_one();
        true
    }

    /// No more data comes: the writer writes what is queued and then finishes.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Moves up to `max` chunks into `batch`, waiting for at least one; false once the
    /// queue is closed and empty. The chunks stay on the budget until [`Self::written`].
    pub async fn take(&self, max: usize, batch: &mut Vec<Bytes>) -> bool {
        loop {
            {
                let mut s = self.lock();
                if let Some(&(tick, _)) = s.queue.front() {
                    s.in_flight.get_or_insert(tick);
                    let n = max.min(s.queue.len());
                    batch.extend(s.queue.drain(..n).map(|(_, b)| b));
                    return true;
                }
                if s.closed {
                    return false;
                }
            }
            // A push between the check and here leaves a permit, so this cannot miss it.
            self.ready.notified().await;
        }
    }

    /// The writer wrote `bytes` of what it took (everything it took so far).
    pub fn written(&self, bytes: usize) {
        let mut s = self.lock();
        let before = s.bytes;
        s.bytes = s.bytes.saturating_sub(bytes);
        s.in_flight = None;
        self.budget.adjust(before, s.bytes);
    }

    /// The tick of the oldest byte not yet written and the bytes held, if any.
    pub fn oldest(&self) -> Option<(u64, usize)> {
        let s = self.lock();
        let tick = s.in_flight.or_else(|| s.queue.front().map(|(t, _)| *t))?;
        Some((tick, s.bytes))
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        let s = self.lock();
        self.budget.adjust(s.bytes, 0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn bounded_accounted_and_handed_back() {
        let budget = MemBudget::new(1 << 20);
        let q = WriteQueue::new(budget.clone());
        for _ in 0..WriteQueue::CHUNKS {
            assert!(q.push(Bytes::from_static(&[0; 498])));
        }
        assert!(!q.push(Bytes::from_static(&[0; 498])), "beyond CHUNKS");
        assert_eq!(budget.used(), WriteQueue::CHUNKS * 498);
        let (first, held) = q.oldest().unwrap();
        assert_eq!(held, budget.used());

        let mut batch = Vec::new();
        assert!(q.take(32, &mut batch).await);
        assert_eq!(batch.len(), 32);
        // Taken but not written: still held, still the oldest.
        assert_eq!(q.oldest().unwrap().0, first);
        assert_eq!(budget.used(), WriteQueue::CHUNKS * 498);
        q.written(32 * 498);
        assert_eq!(budget.used(), (WriteQueue::CHUNKS - 32) * 498);

        // Closed: what is queued still comes out, then the end.
        q.close();
        assert!(!q.push(Bytes::from_static(b"late")));
        batch.clear();
        assert!(q.take(usize::MAX, &mut batch).await);
        assert!(!q.take(1, &mut batch).await);

        // Dropped with data unwritten: the budget gets it all back.
        let q2 = WriteQueue::new(budget.clone());
        q2.push(Bytes::from_static(&[1; 100]));
        drop(q);
        drop(q2);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_on_push_and_on_close() {
        let q = WriteQueue::new(MemBudget::new(1 << 20));
        let q2 = q.clone();
        let writer = tokio::spawn(async move {
            let mut got = Vec::new();
            while q2.take(8, &mut got).await {}
            got
        });
        tokio::task::yield_now().await;
        q.push(Bytes::from_static(b"a"));
        q.push(Bytes::from_static(b"b"));
        q.close();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }
}
