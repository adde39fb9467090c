//! `loadbench`: many concurrent circuits through one relay, our cluster (with 1, 2 and 4
//! workers) beside a C tor relay in the same circuit position, in one run on this machine.
//!
//! A private network of three C tor authorities, C tor relays G (guard), M (middle) and X
//! (exit), and one cluster of ours per worker count (one edge each). For each relay under
//! test a C tor client opens `--circuits` streams at once, each on its own circuit
//! (SOCKS isolation) G → relay → X, each fetching `--kb` KiB from a local HTTP server.
//! Reported per relay: aggregate MB/s, CPU ms per MB, read/write syscalls and context
//! switches per MB (all processes and threads of the relay), circuits built per second
//! (streams whose first byte arrived, per second of the run), p50/p99 time to first byte,
//! and for ours the p50/p99 of the latency the cluster adds (edge → worker → edge, the
//! edge's `edge_cluster_latency_seconds`), and the round trips of a one-byte echo on a
//! circuit of its own, alone and beside the load, whose difference from C tor's is the
//! latency our relay adds compared with C tor's. Rounds alternate between the relays;
//! medians are printed with the ratios ours / C tor.
//!
//! Run it from a release build: `cargo run --release -p testnet --bin loadbench`. To
//! measure an older build beside this one, point `TORNET_BIN_DIR` at a copy of its `edge`,
//! `circuit-worker` and `dirauth`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tornet::ours::{ClusterSpec, RelayCluster, relay_keygen, start_cluster};
use tornet::procstat::Counters;
use tornet::traffic::{body, fetch_via_socks, socks_connect, start_echo_server, start_http_server};
use tornet::{NetConfig, TorNet, wait_for};

#[derive(Debug, Parser)]
#[command(
    name = "loadbench",
    about = "Concurrent circuits through our relay beside a C tor relay"
)]
struct Cli {
    /// Concurrent circuits (one stream each).
    #[arg(long, default_value_t = 64)]
    circuits: usize,
    /// KiB fetched per stream.
    #[arg(long, default_value_t = 512)]
    kb: usize,
    /// Rounds per relay (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker counts of our clusters, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// An environment override for our processes, `NAME=VALUE` (repeatable), e.g.
    /// `CIRCUIT_WORKER__IO_THREADS=2`.
    #[arg(long = "env", value_parser = tornet::ours::parse_env_override)]
    env: Vec<(String, String)>,
    /// Link our edge and workers over Unix sockets (`grpc.unix_listen`) instead of mutual
    /// TLS over loopback TCP.
    #[arg(long)]
    unix_links: bool,
}

/// One stream's timings: time to first byte, and whether the body was complete and right.
struct Stream {
    ttfb: Duration,
    ok: bool,
}

fn one_stream(socks: SocketAddr, http: SocketAddr, user: &str, n: usize) -> Option<Stream> {
    let t = Instant::now();
    let mut s = socks_connect(socks, http, Some(user)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(300))).ok()?;
    write!(s, "GET /bytes/{n} HTTP/1.0\r\nHost: {http}\r\n\r\n").ok()?;
    let mut buf = vec![0u8; 64 << 10];
    let mut got = Vec::with_capacity(n + 256);
    let k = s.read(&mut buf).ok()?;
    let ttfb = t.elapsed();
    got.extend_from_slice(&buf[..k]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(_) => return Some(Stream { ttfb, ok: false }),
        }
    }
    let ok = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_some_and(|h| got[h + 4..] == body(n)[..]);
    Some(Stream { ttfb, ok })
}

/// Round trips of one byte on an echo stream of its own circuit through `socks`, every
/// 20 ms until `stop` (at most 3000), in seconds, sorted.
fn echo_rtts(
    socks: SocketAddr,
    echo: SocketAddr,
    user: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<f64> {
    let mut out = Vec::new();
    let Ok(mut s) = socks_connect(socks, echo, Some(user)) else {
        return out;
    };
    let _ = s.set_nodelay(true);
    let mut b = [0u8; 1];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && out.len() < 3000 {
        let t = Instant::now();
        if s.write_all(b"p").is_err() || s.read_exact(&mut b).is_err() {
            break;
        }
        out.push(t.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(20));
    }
    out.sort_by(f64::total_cmp);
    out
}

/// `q`-quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// The cumulative buckets of histogram `name` at the process with `/metrics` on `port`,
/// as (upper bound, count).
fn buckets(port: u16, name: &str) -> Vec<(f64, f64)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok((200, body)) = tornet::http::get(addr, "/metrics", Duration::from_secs(5)) else {
        return Vec::new();
    };
    let prefix = format!("{name}_bucket{{le=\"");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

/// The `q`-quantile's bucket bound from two scrapes of cumulative buckets.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let c0 = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - c0)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return f64::NAN;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// One relay under test.
struct Relay {
    label: String,
    pids: Vec<u32>,
    socks: SocketAddr,
    /// Our edge's metrics port (for the added latency), if ours.
    edge_metrics: Option<u16>,
}

#[derive(Default)]
struct Sample {
    mb_per_s: f64,
    cpu_ms_per_mb: f64,
    syscalls_per_mb: f64,
    ctx_per_mb: f64,
    /// Mean time a thread of the relay waited for a CPU each time it was scheduled.
    run_wait_ms: f64,
    circuits_per_s: f64,
    ttfb_p50: f64,
    ttfb_p99: f64,
    added_p50: f64,
    added_p99: f64,
    /// One-byte echo round trips through the relay, alone and beside the load.
    idle_rtt_p50: f64,
    idle_rtt_p99: f64,
    load_rtt_p50: f64,
    load_rtt_p99: f64,
}

fn run_round(
    cli: &Cli,
    r: &Relay,
    http: SocketAddr,
    echo: SocketAddr,
    round: usize,
) -> Result<Sample> {
    let n = cli.kb << 10;
    // Round trips alone (50 pings, about a second), then beside the load.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle = {
        let stop = stop.clone();
        let socks = r.socks;
        let user = format!("r{round}idle");
        std::thread::spawn(move || {
            let t = std::thread::spawn({
                let stop = stop.clone();
                move || echo_rtts(socks, echo, &user, &stop)
            });
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            t.join().unwrap_or_default()
        })
        .join()
        .unwrap_or_default()
    };
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let loaded = {
        let (stop, socks, user) = (stop.clone(), r.socks, format!("r{round}load"));
        std::thread::spawn(move || echo_rtts(socks, echo, &user, &stop))
    };
    let lat0 = r
        .edge_metrics
        .map(|p| buckets(p, "edge_cluster_latency_seconds"))
        .unwrap_or_default();
    let c0 = Counters::read(&r.pids);
    let t = Instant::now();
    let streams: Vec<_> = (0..cli.circuits)
        .map(|i| {
            let (socks, user) = (r.socks, format!("r{round}c{i}"));
            std::thread::spawn(move || one_stream(socks, http, &user, n))
        })
        .collect();
    let mut ttfb = Vec::new();
    let mut failed = 0;
    for s in streams {
        match s.join().ok().flatten() {
            Some(s) if s.ok => ttfb.push(s.ttfb.as_secs_f64()),
            _ => failed += 1,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let c = Counters::read(&r.pids).minus(c0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let loaded = loaded.join().unwrap_or_default();
    if failed > 0 {
        bail!("{}: {failed} of {} streams failed", r.label, cli.circuits);
    }
    ttfb.sort_by(f64::total_cmp);
    let mb = (cli.circuits * n) as f64 / f64::from(1 << 20);
    let (added_p50, added_p99) = match r.edge_metrics {
        Some(p) => {
            let lat1 = buckets(p, "edge_cluster_latency_seconds");
            (
                bucket_quantile(&lat0, &lat1, 0.5),
                bucket_quantile(&lat0, &lat1, 0.99),
            )
        }
        None => (f64::NAN, f64::NAN),
    };
    let s = Sample {
        mb_per_s: mb / secs,
        cpu_ms_per_mb: c.cpu * 1000.0 / mb,
        syscalls_per_mb: c.syscalls / mb,
        ctx_per_mb: c.ctx_switches / mb,
        run_wait_ms: c.run_delay * 1000.0 / c.ctx_switches.max(1.0),
        circuits_per_s: cli.circuits as f64 / ttfb.last().copied().unwrap_or(secs),
        ttfb_p50: quantile(&ttfb, 0.5),
        ttfb_p99: quantile(&ttfb, 0.99),
        added_p50,
        added_p99,
        idle_rtt_p50: quantile(&idle, 0.5),
        idle_rtt_p99: quantile(&idle, 0.99),
        load_rtt_p50: quantile(&loaded, 0.5),
        load_rtt_p99: quantile(&loaded, 0.99),
    };
    println!(
        "round {round}: {:<16} {:6.2} MB/s {:6.2} CPU ms/MB {:6.0} syscalls/MB {:6.0} ctxsw/MB \
         (run-queue wait {:.2} ms each) {:5.1} circ/s TTFB p50 {:.3}s p99 {:.3}s added p50 ≤{} p99 ≤{} echo RTT alone \
         p50 {} p99 {}, beside the load p50 {} p99 {}",
        r.label,
        s.mb_per_s,
        s.cpu_ms_per_mb,
        s.syscalls_per_mb,
        s.ctx_per_mb,
        s.run_wait_ms,
        s.circuits_per_s,
        s.ttfb_p50,
        s.ttfb_p99,
        ms(s.added_p50),
        ms(s.added_p99),
        ms(s.idle_rtt_p50),
        ms(s.idle_rtt_p99),
        ms(s.load_rtt_p50),
        ms(s.load_rtt_p99),
    );
    Ok(s)
}

fn ms(secs: f64) -> String {
    if secs.is_nan() {
        "-".into()
    } else {
        format!("{:.2}ms", secs * 1000.0)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let http = start_http_server()?;
    let echo = start_echo_server()?;
    println!("loadbench: building our binaries");
    tornet::build_our_binaries()?;
    let mut net = TorNet::start(&NetConfig {
        relays: 2,
        exits: 1,
        ..NetConfig::default()
    })?;
    let (g, m, x) = (
        net.relays[0].fingerprint.clone(),
        net.relays[1].fingerprint.clone(),
        net.relays[2].fingerprint.clone(),
    );
    let mut ours: Vec<(usize, String, RelayCluster)> = Vec::new();
    for &w in &cli.workers {
        let name = format!("rustload{w}");
        let keys = net.scratch_dir(&format!("{name}-keys"))?;
        let fp = relay_keygen(&keys)?;
        let mut spec = ClusterSpec::new(&name, &keys, net.authority_dir_addrs());
        spec.workers = w.max(1);
        spec.extra_env.extend(cli.env.iter().cloned());
        spec.unix_links = cli.unix_links;
        let cluster = start_cluster(&net.scratch_dir("clusters")?, &spec)?;
        ours.push((w, fp, cluster));
    }
    let all: Vec<String> = [g.clone(), m.clone(), x.clone()]
        .into_iter()
        .chain(ours.iter().map(|(_, fp, _)| fp.clone()))
        .collect();
    net.wait_for_consensus(Duration::from_secs(240), |c| {
        all.iter()
            .all(|f| c.router(f).is_some_and(|r| r.has("Running")))
    })?;
    let mut relays = Vec::new();
    let mut paths = vec![(
        "C tor".to_owned(),
        m.clone(),
        vec![
            net.relays[1]
                .process
                .pid()
                .context("C middle not running")?,
        ],
        None,
    )];
    for (w, fp, cluster) in &ours {
        paths.push((
            format!("ours, {w} worker{}", if *w == 1 { "" } else { "s" }),
            fp.clone(),
            cluster
                .procs
                .iter()
                .filter_map(tornet::Process::pid)
                .collect(),
            Some(cluster.metrics_ports[0]),
        ));
    }
    for (label, middle, pids, edge_metrics) in paths {
        let client = net.add_client(&[
            format!("EntryNodes ${g}"),
            format!("MiddleNodes ${middle}"),
            format!("ExitNodes ${x}"),
            "StrictNodes 1".into(),
        ])?;
        let socks = net.socks_addr(client).context("no SOCKS port")?;
        relays.push(Relay {
            label,
            pids,
            socks,
            edge_metrics,
        });
    }
    for r in &relays {
        wait_for(
            &format!("{} to carry a first fetch", r.label),
            Duration::from_secs(300),
            Duration::from_secs(2),
            || fetch_via_socks(r.socks, http, 10_000, Duration::from_secs(20)).ok(),
        )?;
    }
    let mut samples: Vec<Vec<Sample>> = relays.iter().map(|_| Vec::new()).collect();
    for round in 0..cli.rounds {
        for (k, r) in relays.iter().enumerate() {
            samples[k].push(run_round(&cli, r, http, echo, round)?);
        }
    }
    println!(
        "\nmedians over {} rounds of {} circuits × {} KiB, middle position:",
        cli.rounds, cli.circuits, cli.kb
    );
    println!(
        "{:<16} {:>7} {:>10} {:>11} {:>8} {:>7} {:>9} {:>9} {:>10} {:>10}",
        "relay",
        "MB/s",
        "CPU ms/MB",
        "syscalls/MB",
        "ctxsw/MB",
        "circ/s",
        "TTFB p50",
        "TTFB p99",
        "added p50",
        "added p99"
    );
    let med: Vec<Sample> = samples
        .iter()
        .map(|s| {
            let m = |f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
            Sample {
                mb_per_s: m(|x| x.mb_per_s),
                cpu_ms_per_mb: m(|x| x.cpu_ms_per_mb),
                syscalls_per_mb: m(|x| x.syscalls_per_mb),
                ctx_per_mb: m(|x| x.ctx_per_mb),
                run_wait_ms: m(|x| x.run_wait_ms),
                circuits_per_s: m(|x| x.circuits_per_s),
                ttfb_p50: m(|x| x.ttfb_p50),
                ttfb_p99: m(|x| x.ttfb_p99),
                added_p50: m(|x| x.added_p50),
                added_p99: m(|x| x.added_p99),
                idle_rtt_p50: m(|x| x.idle_rtt_p50),
                idle_rtt_p99: m(|x| x.idle_rtt_p99),
                load_rtt_p50: m(|x| x.load_rtt_p50),
                load_rtt_p99: m(|x| x.load_rtt_p99),
            }
        })
        .collect();
    for (r, s) in relays.iter().zip(&med) {
        println!(
            "{:<16} {:>7.2} {:>10.2} {:>11.0} {:>8.0} {:>7.1} {:>8.3}s {:>8.3}s {:>10} {:>10}",
            r.label,
            s.mb_per_s,
            s.cpu_ms_per_mb,
            s.syscalls_per_mb,
            s.ctx_per_mb,
            s.circuits_per_s,
            s.ttfb_p50,
            s.ttfb_p99,
            ms(s.added_p50),
            ms(s.added_p99)
        );
    }
    println!(
        "\none-byte echo round trips (circuit G → relay → X):\n{:<16} {:>10} {:>10} {:>12} {:>12}",
        "relay", "alone p50", "alone p99", "loaded p50", "loaded p99"
    );
    for (r, s) in relays.iter().zip(&med) {
        println!(
            "{:<16} {:>10} {:>10} {:>12} {:>12}",
            r.label,
            ms(s.idle_rtt_p50),
            ms(s.idle_rtt_p99),
            ms(s.load_rtt_p50),
            ms(s.load_rtt_p99)
        );
    }
    let c = &med[0];
    for (r, s) in relays.iter().zip(&med).skip(1) {
        println!(
            "{}: ours/C tor: MB/s {:.2}, CPU per MB {:.2}, syscalls per MB {:.2}, context \
             switches per MB {:.2}, TTFB p99 {:.2}; echo RTT minus C tor's: alone p50 {} \
             p99 {}, loaded p50 {} p99 {}",
            r.label,
            s.mb_per_s / c.mb_per_s,
            s.cpu_ms_per_mb / c.cpu_ms_per_mb,
            s.syscalls_per_mb / c.syscalls_per_mb,
            s.ctx_per_mb / c.ctx_per_mb,
            s.ttfb_p99 / c.ttfb_p99,
            ms(s.idle_rtt_p50 - c.idle_rtt_p50),
            ms(s.idle_rtt_p99 - c.idle_rtt_p99),
            ms(s.load_rtt_p50 - c.load_rtt_p50),
            ms(s.load_rtt_p99 - c.load_rtt_p99),
        );
    }
    drop(ours);
    Ok(())
}
