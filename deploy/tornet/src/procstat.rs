//! Per-process counters for benchmarks, read from /proc: CPU time, read/write system
//! calls and context switches (summed over processes and threads), and the batch-size
//! histograms our processes export. Counts per MB from these are steadier than wall time
//! on a shared machine.

use std::time::Duration;

/// utime + stime of `pid` in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Whole-process counters of a set of processes, summed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// utime + stime, seconds.
    pub cpu: f64,
    /// read and write system calls (`syscr` + `syscw` of /proc/PID/io: reads, writes,
    /// sends, receives; epoll and futex calls are not counted).
    pub syscalls: f64,
    /// Voluntary and involuntary context switches of every thread.
    pub ctx_switches: f64,
    /// Seconds every thread spent runnable but waiting for a CPU (the second field of
    /// /proc/PID/task/TID/schedstat).
    pub run_delay: f64,
}

impl Counters {
    /// The counters of `pids` now (processes that are gone count 0).
    pub fn read(pids: &[u32]) -> Counters {
        let mut c = Counters::default();
        for &pid in pids {
            c.cpu += cpu_secs(pid);
            if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
                c.syscalls += io
                    .lines()
                    .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                    .sum::<f64>();
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Ok(st) = std::fs::read_to_string(t.path().join("status")) {
                    c.ctx_switches += st
                        .lines()
                        .filter(|l| l.contains("ctxt_switches:"))
                        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                        .sum::<f64>();
                }
                if let Ok(st) = std::fs::read_to_string(t.path().join("schedstat")) {
                    c.run_delay += st
                        .split_whitespace()
                        .nth(1)
                        .and_then(|ns| ns.parse::<f64>().ok())
                        .map_or(0.0, |ns| ns / 1e9);
                }
            }
        }
        c
    }

    /// `self` − `o`.
    pub fn minus(self, o: Counters) -> Counters {
        Counters {
            cpu: self.cpu - o.cpu,
            syscalls: self.syscalls - o.syscalls,
            ctx_switches: self.ctx_switches - o.ctx_switches,
            run_delay: self.run_delay - o.run_delay,
        }
    }
}

/// The batch-size histograms of our processes (`*_cells`), as (series, sum, count).
pub fn batch_histograms(ports: &[u16]) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for &p in ports {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], p));
        let Ok((200, body)) = crate::http::get(addr, "/metrics", Duration::from_secs(5)) else {
            continue;
        };
        for l in String::from_utf8_lossy(&body).lines() {
            let Some((series, v)) = l.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            let (name, is_sum) = if let Some(n) = series
                .split('{')
                .next()
                .and_then(|n| n.strip_suffix("_cells_sum"))
            {
                (n, true)
            } else if let Some(n) = series
                .split('{')
                .next()
                .and_then(|n| n.strip_suffix("_cells_count"))
            {
                (n, false)
            } else {
                continue;
            };
            let labels = series
                .split_once('{')
                .map_or("", |(_, l)| l.trim_end_matches('}'));
            let key = format!("{name}{{{labels}}}");
            let i = match out.iter().position(|(k, _, _)| *k == key) {
                Some(i) => i,
                None => {
                    out.push((key, 0.0, 0.0));
                    out.len() - 1
                }
            };
            if is_sum {
                out[i].1 += v;
            } else {
                out[i].2 += v;
            }
        }
    }
    out
}

/// Resident memory of `pid` in bytes (`VmRSS` of /proc/PID/status); `None` when the
/// process is gone or the file unreadable.
pub fn rss(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
}
