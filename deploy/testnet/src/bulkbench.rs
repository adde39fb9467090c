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
//! with CPU per MB, read/write system calls per MB and context switches per MB of the
//! relay under test (all its processes and threads, from /proc/PID/{stat,io,task}) and the
//! ratios ours / C tor, plus the mean batch sizes of our cluster (its `*_cells`
//! histograms: cells per edge↔worker message and per TLS write). Run it from a release build:
//! `cargo run --release -p testnet --bin bulkbench`. To measure an older build beside this
//! one, point `TORNET_BIN_DIR` at a copy of its `edge`, `circuit-worker` and `dirauth`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sha2::{Digest, Sha256};
use tornet::ours::{ClusterSpec, relay_keygen, start_cluster};
use tornet::procstat::{Counters, batch_histograms};
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
    /// An environment override for our processes, `NAME=VALUE` (repeatable), e.g.
    /// `CIRCUIT_WORKER__IO_THREADS=2`.
    #[arg(long = "env", value_parser = tornet::ours::parse_env_override)]
    env: Vec<(String, String)>,
    /// Link our edge and workers over Unix sockets (`grpc.unix_listen`) instead of mutual
    /// TLS over loopback TCP.
    #[arg(long)]
    unix_links: bool,
    /// Records a `perf` profile (software clock, DWARF call graphs) of our processes
    /// during each of our transfers, into DIR/<position>-<round>.data.
    #[arg(long, value_name = "DIR")]
    perf: Option<std::path::PathBuf>,
}

struct Sample {
    mb_per_s: f64,
    cpu_per_mb: f64,
    syscalls_per_mb: f64,
    ctx_per_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `perf record` attached to `pids`, writing DIR/<position>-<round>.data, until
/// [`stop_perf`]; a [`tornet::Process`], so an early error cannot leave it running.
fn start_perf(
    dir: &std::path::Path,
    label: &str,
    round: usize,
    pids: &[u32],
) -> Result<(tornet::Process, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let pos = label.split(':').next().unwrap_or("ours");
    let out = dir.join(format!("{pos}-{round}.data"));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut cmd = std::process::Command::new("perf");
    cmd.args(["record", "-q", "-e", "cpu-clock", "-F", "1000"])
        .args(["--call-graph", "dwarf,8192", "-p", &pids.join(","), "-o"])
        .arg(&out);
    let perf = tornet::Process::spawn("perf", cmd, &dir.join("perf.log"))?;
    // perf needs a moment to attach before the transfer starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok((perf, out))
}

/// Stops a [`start_perf`] recording: perf writes its data on SIGTERM (and exits by
/// re-raising it, so its exit status says nothing); the file must be there afterwards.
fn stop_perf((mut perf, out): (tornet::Process, std::path::PathBuf)) -> Result<()> {
    perf.terminate(Duration::from_secs(60));
    if !out.is_file() {
        bail!("perf wrote no {}", out.display());
    }
    Ok(())
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
    spec.extra_env.extend(cli.env.iter().cloned());
    spec.unix_links = cli.unix_links;
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
        (
            "exit: ours",
            [g.clone(), m.clone(), fp.clone()],
            ours_pids.clone(),
        ),
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
            let ours = pids == &ours_pids;
            let hist0 = if ours {
                batch_histograms(&cluster.metrics_ports)
            } else {
                Vec::new()
            };
            let profile = match (&cli.perf, ours) {
                (Some(dir), true) => Some(start_perf(dir, label, round, pids)?),
                _ => None,
            };
            let c0 = Counters::read(pids);
            let t = Instant::now();
            let got = fetch_via_socks(socks, http, n, Duration::from_secs(600));
            let secs = t.elapsed().as_secs_f64();
            let c = Counters::read(pids).minus(c0);
            if let Some(p) = profile {
                stop_perf(p)?;
            }
            let got = got?;
            if Sha256::digest(&got) != want {
                bail!("{label}: the transfer's SHA-256 does not match");
            }
            let mb = cli.mb as f64;
            println!(
                "round {round}: {label:<14} {:7.2} MB/s  {:6.2} CPU ms/MB  {:7.0} syscalls/MB  {:6.0} ctx switches/MB",
                mb / secs,
                c.cpu * 1000.0 / mb,
                c.syscalls / mb,
                c.ctx_switches / mb,
            );
            if ours {
                for ((series, s1, n1), (_, s0, n0)) in
                    batch_histograms(&cluster.metrics_ports).iter().zip(
                        hist0
                            .iter()
                            .chain(std::iter::repeat(&(String::new(), 0.0, 0.0))),
                    )
                {
                    if n1 > n0 {
                        println!(
                            "    {series}: {:.0} batches, {:.1} cells each",
                            n1 - n0,
                            (s1 - s0) / (n1 - n0)
                        );
                    }
                }
            }
            samples[k].push(Sample {
                mb_per_s: mb / secs,
                cpu_per_mb: c.cpu * 1000.0 / mb,
                syscalls_per_mb: c.syscalls / mb,
                ctx_per_mb: c.ctx_switches / mb,
            });
        }
    }
    println!(
        "\nmedians over {} rounds of {} MB ({} workers in our cluster):",
        cli.rounds, cli.mb, spec.workers
    );
    println!(
        "{:<14} {:>9} {:>10} {:>12} {:>14}",
        "relay", "MB/s", "CPU ms/MB", "syscalls/MB", "ctx switch/MB"
    );
    let med: Vec<[f64; 4]> = samples
        .iter()
        .map(|s| {
            [
                median(s.iter().map(|x| x.mb_per_s).collect()),
                median(s.iter().map(|x| x.cpu_per_mb).collect()),
                median(s.iter().map(|x| x.syscalls_per_mb).collect()),
                median(s.iter().map(|x| x.ctx_per_mb).collect()),
            ]
        })
        .collect();
    for ((label, _, _), m) in configs.iter().zip(&med) {
        println!(
            "{label:<14} {:>9.2} {:>10.2} {:>12.0} {:>14.0}",
            m[0], m[1], m[2], m[3]
        );
    }
    for (pos, ours, theirs) in [("middle", 0, 1), ("exit", 2, 3)] {
        let r = |i: usize| med[ours][i] / med[theirs][i];
        println!(
            "{pos}: ours/C tor: throughput {:.2}, CPU per MB {:.2}, syscalls per MB {:.2}, \
             context switches per MB {:.2}",
            r(0),
            r(1),
            r(2),
            r(3)
        );
    }
    drop(cluster);
    Ok(())
}
