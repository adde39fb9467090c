//! `bulkbench`: bulk-transfer throughput and CPU per MB of our relay cluster beside a C tor
//! relay in the same position of a circuit, measured in one run on this machine.
//!
//! A private network of three C tor authorities, C tor relays G (guard), M (middle) and X
//! (exit), and our cluster R. Two positions are compared:
//! - middle: client → G → **R** → X against client → G → **M** → X;
//! - exit: client → G → M → **R** against client → G → M → **X**.
//!
//! Each transfer fetches `--mb` megabytes from a local HTTP server through a C tor client's
//! SOCKS port; the configurations alternate `--rounds` times and the medians are reported,
//! with CPU seconds per MB of the relay under test (all its processes, from
//! /proc/PID/stat) and the ratio ours / C tor. Run it from a release build:
//! `cargo run --release -p testnet --bin bulkbench`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sha2::{Digest, Sha256};
use tornet::ours::{ClusterSpec, relay_keygen, start_cluster};
use tornet::traffic::{body, fetch_via_socks, start_http_server};
use tornet::{NetConfig, TorNet, wait_for};

#[derive(Debug, Parser)]
#[command(
    name = "bulkbench",
    about = "Bulk throughput and CPU/MB: our relay beside a C tor relay"
)]
struct Cli {
    /// Megabytes per transfer.
    #[arg(long, default_value_t = 50)]
    mb: usize,
    /// Transfers per configuration (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Circuit workers in our cluster.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32) -> f64 {
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

struct Sample {
    mb_per_s: f64,
    cpu_per_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let http = start_http_server()?;
    println!("bulkbench: building our binaries");
    tornet::build_our_binaries()?;
    let mut net = TorNet::start(&NetConfig {
        relays: 2,
        exits: 1,
        ..NetConfig::default()
    })?;
    let keys = net.scratch_dir("bench-keys")?;
    let fp = relay_keygen(&keys)?;
    let mut spec = ClusterSpec::new("rustbench", &keys, net.authority_dir_addrs());
    spec.workers = cli.workers.max(1);
    spec.exit_policy = vec!["accept *:*".into()];
    let cluster = start_cluster(&net.scratch_dir("clusters")?, &spec)?;
    let g = net.relays[0].fingerprint.clone();
    let m = net.relays[1].fingerprint.clone();
    let x = net.relays[2].fingerprint.clone();
    net.wait_for_consensus(Duration::from_secs(240), |c| {
        [&fp, &g, &m, &x]
            .iter()
            .all(|f| c.router(f).is_some_and(|r| r.has("Running")))
    })?;
    let ours_pids: Vec<u32> = cluster
        .procs
        .iter()
        .filter_map(tornet::Process::pid)
        .collect();
    let m_pid = net.relays[1]
        .process
        .pid()
        .context("C middle not running")?;
    let x_pid = net.relays[2].process.pid().context("C exit not running")?;
    // (label, path, pids of the relay under test)
    let configs = [
        (
            "middle: ours",
            [g.clone(), fp.clone(), x.clone()],
            ours_pids.clone(),
        ),
        (
            "middle: C tor",
            [g.clone(), m.clone(), x.clone()],
            vec![m_pid],
        ),
        ("exit: ours", [g.clone(), m.clone(), fp.clone()], ours_pids),
        (
            "exit: C tor",
            [g.clone(), m.clone(), x.clone()],
            vec![x_pid],
        ),
    ];
    let mut clients = Vec::new();
    for (_, [e, mid, ex], _) in &configs {
        clients.push(net.add_client(&[
            format!("EntryNodes ${e}"),
            format!("MiddleNodes ${mid}"),
            format!("ExitNodes ${ex}"),
            "StrictNodes 1".into(),
        ])?);
    }
    for (i, c) in clients.iter().enumerate() {
        let socks = net.socks_addr(*c).context("no SOCKS port")?;
        wait_for(
            &format!("client {i} to work"),
            Duration::from_secs(300),
            Duration::from_secs(2),
            || fetch_via_socks(socks, http, 10_000, Duration::from_secs(20)).ok(),
        )?;
    }
    let n = cli.mb << 20;
    let want = Sha256::digest(body(n));
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..cli.rounds {
        for (k, (label, _, pids)) in configs.iter().enumerate() {
            let socks = net.socks_addr(clients[k]).context("no SOCKS port")?;
            let cpu0: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
            let t = Instant::now();
            let got = fetch_via_socks(socks, http, n, Duration::from_secs(600))?;
            let secs = t.elapsed().as_secs_f64();
            let cpu = pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0;
            if Sha256::digest(&got) != want {
                bail!("{label}: the transfer's SHA-256 does not match");
            }
            let mb = cli.mb as f64;
            println!(
                "round {round}: {label:<14} {:7.2} MB/s  {:6.4} CPU s/MB",
                mb / secs,
                cpu / mb
            );
            samples[k].push(Sample {
                mb_per_s: mb / secs,
                cpu_per_mb: cpu / mb,
            });
        }
    }
    println!(
        "\nmedians over {} rounds of {} MB ({} workers in our cluster):",
        cli.rounds, cli.mb, spec.workers
    );
    println!("{:<14} {:>9} {:>12}", "relay", "MB/s", "CPU s/MB");
    let med: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(s.iter().map(|x| x.mb_per_s).collect()),
                median(s.iter().map(|x| x.cpu_per_mb).collect()),
            )
        })
        .collect();
    for ((label, _, _), (t, c)) in configs.iter().zip(&med) {
        println!("{label:<14} {t:>9.2} {c:>12.4}");
    }
    for (pos, ours, theirs) in [("middle", 0, 1), ("exit", 2, 3)] {
        println!(
            "{pos}: throughput ours/C tor = {:.2}, CPU per MB ours/C tor = {:.2}",
            med[ours].0 / med[theirs].0,
            med[ours].1 / med[theirs].1
        );
    }
    drop(cluster);
    Ok(())
}
