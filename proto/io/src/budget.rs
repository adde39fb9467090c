//! The process-wide ceiling on queued bytes (C tor's MaxMemInQueues): every queue that a
//! peer can fill (channel cell queues in the edge, exit write buffers in the worker) adds
//! what it holds here and takes it off when written or dropped. Crossing the ceiling
//! wakes the process's memory-pressure handler, which ends the circuits whose oldest
//! queued data is oldest until usage is back under [`OOM_TARGET`] of the ceiling
//! (`circuits_handle_oom` in C tor's circuitlist.c).
//!
//! Invariants:
//! - `used` is the sum of what the queues report; a queue that goes away hands back all
//!   it held.
//! - Adding never blocks; only the handler acts on pressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// Fraction of the ceiling the memory-pressure handler frees down to (C tor keeps 90 %).
pub const OOM_TARGET: f64 = 0.9;
/// The smallest ceiling C tor accepts on a relay.
pub const MIN_MAX_MEM_IN_QUEUES: u64 = 64 << 20;

/// C tor's default MaxMemInQueues for a machine with `total_ram` bytes (config.c
/// `compute_real_max_mem_in_queues`): 40 % of RAM from 8 GiB up, 75 % below, kept between
/// 256 MiB and 8 GiB; 8 GiB when the RAM size is unknown.
pub fn default_max_mem_in_queues(total_ram: Option<u64>) -> u64 {
    const GIB: u64 = 1 << 30;
    let Some(ram) = total_ram else {
        return 8 * GIB;
    };
    let v = if ram >= 8 * GIB {
        ram / 10 * 4
    } else {
        ram / 4 * 3
    };
    v.clamp(256 << 20, 8 * GIB)
}

/// Total RAM from `/proc/meminfo`, if readable.
pub fn total_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The configured ceiling: `configured` bytes, or C tor's default for this machine when 0.
/// C tor raises relay values below [`MIN_MAX_MEM_IN_QUEUES`] to it; we take them (test
/// networks want small ceilings) and warn.
pub fn max_mem_in_queues(configured: u64) -> u64 {
    if configured == 0 {
        return default_max_mem_in_queues(total_ram());
    }
    if configured < MIN_MAX_MEM_IN_QUEUES {
        tracing::warn!(
            bytes = configured,
            "max_mem_in_queues is below 64 MiB, the least C tor accepts on a relay"
        );
    }
    configured
}

/// The shared account of queued bytes.
#[derive(Debug)]
pub struct MemBudget {
    used: AtomicUsize,
    limit: usize,
    over: Notify,
    start: Instant,
}

impl MemBudget {
    /// A budget with a ceiling of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemBudget {
            used: AtomicUsize::new(0),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            over: Notify::new(),
            start: Instant::now(),
        })
    }

    /// Moves the account from `before` to `after` bytes for one queue.
    pub fn adjust(&self, before: usize, after: usize) {
        if after > before {
            let used = self.used.fetch_add(after - before, Ordering::Relaxed) + (after - before);
            if used > self.limit {
                self.over.notify_one();
            }
        } else if before > after {
            self.used.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Bytes queued now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The ceiling.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether usage is above the ceiling.
    pub fn is_over(&self) -> bool {
        self.used() > self.limit
    }

    /// What the handler frees down to.
    pub fn target(&self) -> usize {
        (self.limit as f64 * OOM_TARGET) as usize
    }

    /// Waits until usage crossed the ceiling (returns at once if it did since the last
    /// call).
    pub async fn crossed(&self) {
        self.over.notified().await;
    }

    /// Milliseconds since the budget was made: the tick queues stamp their data with.
    pub fn tick(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn default_sizing_follows_c_tor() {
        const GIB: u64 = 1 << 30;
        assert_eq!(default_max_mem_in_queues(None), 8 * GIB);
        assert_eq!(default_max_mem_in_queues(Some(24 * GIB)), 8 * GIB);
        assert_eq!(default_max_mem_in_queues(Some(16 * GIB)), 16 * GIB / 10 * 4);
        assert_eq!(default_max_mem_in_queues(Some(4 * GIB)), 3 * GIB);
        assert_eq!(default_max_mem_in_queues(Some(256 << 20)), 256 << 20);
        assert_eq!(max_mem_in_queues(1 << 20), 1 << 20);
        assert!(max_mem_in_queues(0) >= 256 << 20);
    }

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24595060 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_595_060 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
    }

    #[tokio::test]
    async fn crossing_the_ceiling_wakes_the_handler() {
        let b = MemBudget::new(1000);
        b.adjust(0, 600);
        assert!(!b.is_over());
        b.adjust(600, 1200);
        assert!(b.is_over());
        tokio::time::timeout(std::time::Duration::from_secs(5), b.crossed())
            .await
            .unwrap();
        b.adjust(1200, 100);
        assert_eq!(b.used(), 100);
        assert_eq!(b.target(), 900);
    }
}
