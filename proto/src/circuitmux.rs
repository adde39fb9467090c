//! The outbound cell queue of one channel (C tor's circuitmux): one FIFO per circuit,
//! served round-robin, plus a queue of pending DESTROYs kept as (circuit id, reason).
//!
//! Invariants:
//! - Pushing never blocks and never grows a circuit's queue past the cap: the cell that
//!   would exceed it empties that circuit's queue instead and reports
//!   [`Overflow`], and the caller ends the circuit (C tor's `circ_max_cell_queue_size`,
//!   `append_cell_to_circuit_queue`, which closes with RESOURCELIMIT).
//! - A DESTROY drops the circuit's queued cells (C tor clears a closing circuit's queues
//!   before it sends DESTROY) and takes a few bytes, never a full cell, until written.
//! - Every queued cell carries the tick it was queued at, so a memory-pressure handler can
//!   end the circuits whose oldest cell is oldest (C tor's `circuits_handle_oom`).
//! - [`CircuitMux::queued_bytes`] is exactly the wire size of what is queued.
//!
//! Sans-io: the caller supplies ticks (any monotonic count, e.g. milliseconds) and writes
//! what [`CircuitMux::pop_batch`] hands out.

use std::collections::{HashMap, VecDeque};

use crate::CircId;
use crate::cell::msg::DestroyReason;
use crate::cell::{CELL_PAYLOAD_LEN, ChanCell, ChanCmd};

/// C tor's default for the `circ_max_cell_queue_size` consensus parameter (relay.c:
/// `RELAY_CIRC_CELL_QUEUE_SIZE_DEFAULT`, 50 × the minimum of 50).
pub const DEFAULT_MAX_CIRCUIT_QUEUE: usize = 2500;
/// The smallest cap C tor accepts for `circ_max_cell_queue_size`.
pub const MIN_MAX_CIRCUIT_QUEUE: usize = 50;
/// Bytes a queued DESTROY is accounted as until it becomes a cell on the wire.
const DESTROY_COST: usize = 8;

/// Wire size a queued cell is counted as (circuit id, command, payload; link v4+).
pub fn cell_cost(cell: &ChanCell) -> usize {
    4 + 1 + cell.payload.len().max(CELL_PAYLOAD_LEN)
}

/// A circuit's queue reached the cap; its cells were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// The circuit.
    pub circ_id: CircId,
    /// Bytes freed by dropping its queue (the refused cell was never queued).
    pub freed: usize,
}

#[derive(Debug)]
struct CircQueue {
    cells: VecDeque<(u64, ChanCell)>,
    /// Which entry of the round-robin list is this queue's (older entries for the same
    /// circuit, left by [`CircuitMux::clear`], are skipped), so clearing is O(its cells).
    generation: u64,
}

/// The outbound queues of one channel.
#[derive(Debug)]
pub struct CircuitMux {
    cap: usize,
    destroys: VecDeque<(CircId, DestroyReason)>,
    /// Link-level cells (circuit id 0: PADDING keepalives), sent before circuit cells.
    link: VecDeque<ChanCell>,
    circuits: HashMap<CircId, CircQueue>,
    /// Circuits with queued cells, in service order, with their queue's generation.
    active: VecDeque<(CircId, u64)>,
    next_generation: u64,
    bytes: usize,
    cells: usize,
}

impl CircuitMux {
    /// An empty mux whose circuits may queue at most `cap` cells each (at least
    /// [`MIN_MAX_CIRCUIT_QUEUE`]).
    pub fn new(cap: usize) -> Self {
        CircuitMux {
            cap: cap.max(MIN_MAX_CIRCUIT_QUEUE),
            destroys: VecDeque::new(),
            link: VecDeque::new(),
            circuits: HashMap::new(),
            active: VecDeque::new(),
            next_generation: 0,
            bytes: 0,
            cells: 0,
        }
    }

    /// Queues `cell` (queued at tick `now`). A DESTROY goes through
    /// [`CircuitMux::push_destroy`].
    ///
    /// # Errors
    /// [`Overflow`] when the circuit already holds `cap` cells: its queue is dropped and
    /// the caller must end the circuit.
    pub fn push(&mut self, cell: ChanCell, now: u64) -> Result<(), Overflow> {
        if cell.cmd == ChanCmd::Destroy {
            let reason = DestroyReason::from(cell.payload.first().copied().unwrap_or(0));
            self.push_destroy(cell.circ_id, reason);
            return Ok(());
        }
        let cost = cell_cost(&cell);
        if cell.circ_id == CircId::LINK {
            self.link.push_back(cell);
            self.bytes += cost;
            self.cells += 1;
            return Ok(());
        }
        let circ_id = cell.circ_id;
        let q = match self.circuits.entry(circ_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.next_generation += 1;
                self.active.push_back((circ_id, self.next_generation));
                e.insert(CircQueue {
                    cells: VecDeque::new(),
                    generation: self.next_generation,
                })
            }
        };
        if q.cells.len() >= self.cap {
            let freed = self.clear(circ_id);
            return Err(Overflow { circ_id, freed });
        }
        q.cells.push_back((now, cell));
        self.bytes += cost;
        self.cells += 1;
        Ok(())
    }

    /// Queues a DESTROY for `circ_id`, dropping its queued cells.
    pub fn push_destroy(&mut self, circ_id: CircId, reason: DestroyReason) {
        self.clear(circ_id);
        self.destroys.push_back((circ_id, reason));
        self.bytes += DESTROY_COST;
    }

    /// Drops every cell queued for `circ_id`; returns the bytes freed.
    pub fn clear(&mut self, circ_id: CircId) -> usize {
        let Some(q) = self.circuits.remove(&circ_id) else {
            return 0;
        };
        let freed: usize = q.cells.iter().map(|(_, c)| cell_cost(c)).sum();
        self.bytes -= freed;
        self.cells -= q.cells.len();
        freed
    }

    /// Moves queued cells into `out` until about `max_bytes` are taken: DESTROYs first,
    /// then link cells, then one cell per active circuit in turn. Returns the bytes taken.
    pub fn pop_batch(&mut self, max_bytes: usize, out: &mut Vec<ChanCell>) -> usize {
        let mut taken = 0;
        while taken < max_bytes {
            let Some((circ_id, reason)) = self.destroys.pop_front() else {
                break;
            };
            out.push(ChanCell::destroy(circ_id, reason));
            self.bytes -= DESTROY_COST;
            taken += DESTROY_COST;
        }
        while taken < max_bytes {
            let Some(cell) = self.link.pop_front() else {
                break;
            };
            let cost = cell_cost(&cell);
            self.bytes -= cost;
            self.cells -= 1;
            taken += cost;
            out.push(cell);
        }
        while taken < max_bytes {
            let Some((circ_id, generation)) = self.active.pop_front() else {
                break;
            };
            let Some(q) = self.circuits.get_mut(&circ_id) else {
                continue;
            };
            if q.generation != generation {
                continue; // an entry from before the queue was cleared
            }
            let Some((_, cell)) = q.cells.pop_front() else {
                self.circuits.remove(&circ_id);
                continue;
            };
            let cost = cell_cost(&cell);
            self.bytes -= cost;
            self.cells -= 1;
            taken += cost;
            out.push(cell);
            if q.cells.is_empty() {
                // Forget idle circuits' entries so the map holds only circuits with cells.
                self.circuits.remove(&circ_id);
            } else {
                self.active.push_back((circ_id, generation));
            }
        }
        taken
    }

    /// Bytes queued (wire size of cells, a few bytes per DESTROY).
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Cells queued (DESTROYs not counted).
    pub fn queued_cells(&self) -> usize {
        self.cells
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Each circuit with queued cells, with the tick of its oldest cell.
    pub fn oldest(&self) -> impl Iterator<Item = (CircId, u64)> + '_ {
        self.circuits
            .iter()
            .filter_map(|(id, q)| q.cells.front().map(|(t, _)| (*id, *t)))
    }

    /// Cells queued for one circuit.
    pub fn circuit_len(&self, circ_id: CircId) -> usize {
        self.circuits.get(&circ_id).map_or(0, |q| q.cells.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn relay(circ: u32, tag: u8) -> ChanCell {
        let mut p = vec![0u8; CELL_PAYLOAD_LEN];
        p[0] = tag;
        ChanCell {
            circ_id: CircId(circ),
            cmd: ChanCmd::Relay,
            payload: p.into(),
        }
    }

    #[test]
    fn circuits_are_served_in_turn_and_in_order() {
        let mut m = CircuitMux::new(100);
        for i in 0..3 {
            m.push(relay(1, i), 0).unwrap();
        }
        m.push(relay(2, 10), 0).unwrap();
        let mut out = Vec::new();
        m.pop_batch(usize::MAX, &mut out);
        let got: Vec<(u32, u8)> = out.iter().map(|c| (c.circ_id.0, c.payload[0])).collect();
        assert_eq!(got, vec![(1, 0), (2, 10), (1, 1), (1, 2)]);
        assert!(m.is_empty());
        assert_eq!(m.queued_cells(), 0);
    }

    #[test]
    fn a_full_circuit_overflows_alone() {
        let mut m = CircuitMux::new(MIN_MAX_CIRCUIT_QUEUE);
        m.push(relay(7, 0), 0).unwrap();
        for i in 0..MIN_MAX_CIRCUIT_QUEUE {
            m.push(relay(1, i as u8), 1).unwrap();
        }
        let err = m.push(relay(1, 0), 2).unwrap_err();
        assert_eq!(err.circ_id, CircId(1));
        assert_eq!(err.freed, MIN_MAX_CIRCUIT_QUEUE * 514);
        assert_eq!(m.circuit_len(CircId(1)), 0);
        assert_eq!(m.circuit_len(CircId(7)), 1);
        assert_eq!(m.queued_bytes(), 514);
    }

    #[test]
    fn a_cleared_circuit_that_queues_again_gets_one_turn() {
        let mut m = CircuitMux::new(100);
        m.push(relay(1, 0), 0).unwrap();
        m.clear(CircId(1));
        m.push(relay(1, 1), 0).unwrap();
        m.push(relay(1, 2), 0).unwrap();
        m.push(relay(2, 9), 0).unwrap();
        let mut out = Vec::new();
        m.pop_batch(usize::MAX, &mut out);
        let got: Vec<(u32, u8)> = out.iter().map(|c| (c.circ_id.0, c.payload[0])).collect();
        assert_eq!(got, vec![(1, 1), (2, 9), (1, 2)]);
    }

    #[test]
    fn destroy_drops_the_queue_and_goes_first() {
        let mut m = CircuitMux::new(100);
        m.push(relay(1, 0), 0).unwrap();
        m.push(relay(2, 0), 0).unwrap();
        m.push_destroy(CircId(1), DestroyReason::ResourceLimit);
        let mut out = Vec::new();
        m.pop_batch(usize::MAX, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].cmd, ChanCmd::Destroy);
        assert_eq!(out[0].circ_id, CircId(1));
        assert_eq!(out[0].payload[0], u8::from(DestroyReason::ResourceLimit));
        assert_eq!(out[1].circ_id, CircId(2));
        assert_eq!(m.queued_bytes(), 0);
    }

    #[test]
    fn oldest_names_each_circuits_first_tick_and_batches_stop_near_the_limit() {
        let mut m = CircuitMux::new(100);
        m.push(relay(1, 0), 5).unwrap();
        m.push(relay(1, 1), 9).unwrap();
        m.push(relay(2, 0), 7).unwrap();
        let mut o: Vec<_> = m.oldest().collect();
        o.sort();
        assert_eq!(o, vec![(CircId(1), 5), (CircId(2), 7)]);
        let mut out = Vec::new();
        assert_eq!(m.pop_batch(1, &mut out), 514);
        assert_eq!(out.len(), 1);
        assert_eq!(m.queued_cells(), 2);
    }
}
