//! `testnet`: brings up a private Tor network on this machine, all on 127.0.0.1 — by
//! default three of our directory authorities and two of our relay clusters (edges +
//! circuit workers), optionally C tor relays beside them — waits for its first consensus,
//! verifies it by fetching a file through it with an unmodified C tor client, prints where
//! everything is, and tears it all down on Ctrl-C or `testnet down`.
//!
//! Invariants: every process it starts is recorded by PID in `<dir>/pids` and killed on
//! exit (including by `down` from another shell); every wait is bounded; logs stay in
//! `<dir>` after teardown.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};
use tests::ours::{ClusterSpec, RelayCluster, relay_keygen, start_cluster};
use tests::{NetConfig, TorNet, wait_for};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "testnet",
    version,
    about = "A private Tor network of our authorities and relays on 127.0.0.1"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the network and keep it running until Ctrl-C (or `testnet down`).
    Up(UpArgs),
    /// Stop a network started by `up` in another shell.
    Down(DirArg),
    /// Show where a running network's ports and logs are.
    Status(DirArg),
}

#[derive(Debug, Args)]
struct DirArg {
    /// The network's directory.
    #[arg(long, default_value = "tornet")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The network's directory (logs, keys, state); emptied first.
    #[arg(long, default_value = "tornet")]
    dir: PathBuf,
    /// Our directory authorities.
    #[arg(long, default_value_t = 3)]
    authorities: usize,
    /// Our relay clusters (one relay identity each).
    #[arg(long, default_value_t = 2)]
    relays: usize,
    /// Circuit workers per relay cluster.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// C tor relays (non-exit) beside ours.
    #[arg(long, default_value_t = 0)]
    c_relays: usize,
    /// C tor exit relays beside ours.
    #[arg(long, default_value_t = 0)]
    c_exits: usize,
    /// Exit policy of our relays (comma-separated Tor lines). As in chutney's networks,
    /// the default lets clients of this network reach any address they ask for.
    #[arg(long, default_value = "accept *:*")]
    exit_policy: String,
    /// Seconds between consensuses.
    #[arg(long, default_value_t = 10)]
    interval: u32,
    /// Skip the client fetch that verifies the network.
    #[arg(long)]
    no_verify: bool,
    /// Exit after verifying instead of running until Ctrl-C (for scripts and CI).
    #[arg(long)]
    exit_after_verify: bool,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Up(a) => up(&a),
        Cmd::Down(d) => down(&d.dir),
        Cmd::Status(d) => {
            let s = std::fs::read_to_string(d.dir.join("status")).with_context(|| {
                format!(
                    "no network in {} (start one with `testnet up`)",
                    d.dir.display()
                )
            })?;
            print!("{s}");
            Ok(())
        }
    }
}

fn say(msg: &str) {
    println!("testnet: {msg}");
    let _ = std::io::stdout().flush();
}

fn have_tor() -> bool {
    std::process::Command::new("tor")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn up(a: &UpArgs) -> Result<()> {
    let pid_file = a.dir.join("pids");
    if let Ok(p) = std::fs::read_to_string(&pid_file)
        && let Some(pid) = p
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|x| x.parse::<u32>().ok())
        && tests::process::pid_alive(pid)
    {
        bail!(
            "a network is already up in {} (pid {pid}); run `testnet down` first",
            a.dir.display()
        );
    }
    if a.authorities == 0 {
        bail!("a network needs at least one authority");
    }
    let tor = have_tor();
    if (a.c_relays + a.c_exits > 0 || !a.no_verify) && !tor {
        bail!(
            "C tor relays and the verify step need Debian's `tor` (apt-get install -y tor); \
             pass --no-verify to run without it"
        );
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir)?;
    let dir = std::fs::canonicalize(&a.dir)?;
    let t0 = Instant::now();
    say("building edge, circuit-worker and dirauth");
    tests::build_our_binaries()?;
    say(&format!("starting {} authorities", a.authorities));
    let mut net = TorNet::start(&NetConfig {
        our_authorities: a.authorities,
        relays: a.c_relays,
        exits: a.c_exits,
        reachability_testing: true,
        voting_interval_secs: a.interval,
        root: Some(dir.clone()),
        ..NetConfig::default()
    })?;
    let policy: Vec<String> = a
        .exit_policy
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let mut clusters: Vec<(String, RelayCluster)> = Vec::new();
    for i in 0..a.relays {
        let name = format!("relay{i}");
        let keys = dir.join(format!("{name}-keys"));
        let fp = relay_keygen(&keys)?;
        let mut spec = ClusterSpec::new(&name, &keys, net.authority_dir_addrs());
        spec.workers = a.workers.max(1);
        spec.exit_policy = policy.clone();
        spec.dir_backend = Some(net.authority_dir_addrs()[i % a.authorities]);
        clusters.push((fp, start_cluster(&dir, &spec)?));
    }
    write_pids(&pid_file, &net, &clusters)?;
    say(&format!(
        "{} processes up after {:.0?}; waiting for a consensus listing every relay as Running",
        net.pids().len() + clusters.iter().map(|c| c.1.procs.len()).sum::<usize>(),
        t0.elapsed()
    ));
    let mut fps: Vec<String> = net.ours.iter().map(|x| x.fingerprint.clone()).collect();
    fps.extend(net.relays.iter().map(|r| r.fingerprint.clone()));
    fps.extend(clusters.iter().map(|c| c.0.clone()));
    let consensus = net
        .wait_for_consensus(Duration::from_secs(240), |c| {
            fps.iter()
                .all(|f| c.router(f).is_some_and(|r| r.has("Running")))
        })
        .map_err(|e| anyhow::anyhow!("{e}\nlogs:\n{}", net.log_tails(15)))?;
    say(&format!(
        "consensus with {} relays after {:.0?}",
        consensus.routers.len(),
        t0.elapsed()
    ));
    let mut socks = None;
    if !a.no_verify {
        let client = net.add_client(&[])?;
        write_pids(&pid_file, &net, &clusters)?;
        say("verifying: a C tor client bootstraps and fetches 1 MB through the network");
        wait_for(
            "the client to bootstrap",
            Duration::from_secs(120),
            Duration::from_secs(1),
            || {
                net.clients[client]
                    .control()
                    .ok()?
                    .getinfo("status/bootstrap-phase")
                    .ok()
                    .filter(|p| p.contains("PROGRESS=100"))
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}\nlogs:\n{}", net.log_tails(15)))?;
        let http = tests::traffic::start_http_server()?;
        let addr = net.socks_addr(client).context("client has no SOCKS port")?;
        let n = 1 << 20;
        let got = wait_for(
            "a fetch through the network",
            Duration::from_secs(60),
            Duration::from_secs(2),
            || tests::traffic::fetch_via_socks(addr, http, n, Duration::from_secs(30)).ok(),
        )?;
        if Sha256::digest(&got) != Sha256::digest(tests::traffic::body(n)) {
            bail!("verify: the fetched file's SHA-256 does not match");
        }
        say(&format!(
            "verified: 1 MB fetched with a matching SHA-256 after {:.0?}",
            t0.elapsed()
        ));
        socks = Some(addr);
    }
    let status = status_text(&net, &clusters, socks, &dir);
    std::fs::write(dir.join("status"), &status)?;
    std::fs::write(
        dir.join("torrc-dirauthorities"),
        net.dir_authority_lines().join("\n") + "\n",
    )?;
    print!("{status}");
    if a.exit_after_verify {
        say("--exit-after-verify: tearing down");
    } else {
        say("running; Ctrl-C or `testnet down` stops it");
        wait_for_signal_or_death(&mut net, &mut clusters);
    }
    drop(clusters);
    drop(net);
    // Kept under another name: what ran, for anyone checking that it all stopped.
    let _ = std::fs::rename(&pid_file, dir.join("pids.stopped"));
    say(&format!("stopped; logs stay in {}", dir.display()));
    Ok(())
}

fn write_pids(path: &Path, net: &TorNet, clusters: &[(String, RelayCluster)]) -> Result<()> {
    let mut s = format!("testnet {}\n", std::process::id());
    for (name, pid) in net.pids() {
        let _ = writeln!(s, "{name} {pid}");
    }
    for (_, c) in clusters {
        for p in &c.procs {
            if let Some(pid) = p.pid() {
                let _ = writeln!(s, "{} {pid}", p.name());
            }
        }
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn status_text(
    net: &TorNet,
    clusters: &[(String, RelayCluster)],
    socks: Option<std::net::SocketAddr>,
    dir: &Path,
) -> String {
    let mut s = String::from("\n== private Tor network (all on 127.0.0.1) ==\n");
    if let Some(a) = socks {
        let _ = writeln!(
            s,
            "SOCKS proxy (C tor client): {a}   e.g. curl --socks5-hostname {a} http://127.0.0.1:PORT/"
        );
    }
    let _ = writeln!(s, "\nauthorities:");
    for a in &net.ours {
        let m = a
            .cluster
            .as_ref()
            .map(|c| c.metrics_ports.clone())
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<8} DirPort 127.0.0.1:{}  ORPort 127.0.0.1:{}  metrics: dirauth :{} edge/worker :{:?}\n           logs {}",
            a.nickname,
            a.dir_port,
            a.or_port,
            a.metrics_port,
            m,
            a.data_dir.display()
        );
    }
    let _ = writeln!(s, "\nour relays:");
    for (fp, c) in clusters {
        let _ = writeln!(
            s,
            "  {:<8} ${fp}  ORPort 127.0.0.1:{}  metrics :{:?}",
            c.name, c.or_port, c.metrics_ports
        );
    }
    if !net.relays.is_empty() {
        let _ = writeln!(s, "\nC tor relays:");
        for r in &net.relays {
            let _ = writeln!(
                s,
                "  {:<8} ${}  ORPort 127.0.0.1:{}  logs {}",
                r.nickname,
                r.fingerprint,
                r.or_port,
                r.data_dir.display()
            );
        }
    }
    let _ = writeln!(
        s,
        "\nconsensus: curl http://127.0.0.1:{}/tor/status-vote/current/consensus\n\
         your own tor: add the lines of {}/torrc-dirauthorities and TestingTorNetwork 1\n\
         stop: testnet down --dir {}\n",
        net.ours.first().map_or(0, |a| a.dir_port),
        dir.display(),
        dir.display()
    );
    s
}

fn wait_for_signal_or_death(net: &mut TorNet, clusters: &mut [(String, RelayCluster)]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        let mut reported = std::collections::HashSet::new();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            for (_, c) in clusters.iter_mut() {
                for p in &mut c.procs {
                    if !p.is_running() && reported.insert(p.name().to_owned()) {
                        say(&format!(
                            "{} exited; see {}",
                            p.name(),
                            p.log_path().display()
                        ));
                    }
                }
            }
            for a in &mut net.ours {
                if let Some(p) = &mut a.dirauth
                    && !p.is_running()
                    && reported.insert(p.name().to_owned())
                {
                    say(&format!(
                        "{} exited; see {}",
                        p.name(),
                        p.log_path().display()
                    ));
                }
            }
        }
    });
}

fn down(dir: &Path) -> Result<()> {
    let pid_file = dir.join("pids");
    let text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("no network up in {}", dir.display()))?;
    let pids: Vec<(String, u32)> = text
        .lines()
        .filter_map(|l| {
            let (n, p) = l.split_once(' ')?;
            Some((n.to_owned(), p.parse().ok()?))
        })
        .collect();
    let signal = |sig: &str, pid: u32| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    };
    // The launcher first: it tears the rest down itself.
    if let Some((_, launcher)) = pids.first().filter(|(n, _)| n == "testnet")
        && tests::process::pid_alive(*launcher)
    {
        signal("-TERM", *launcher);
        let _ = wait_for(
            "the launcher to stop",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (!tests::process::pid_alive(*launcher)).then_some(()),
        );
    }
    let mut killed = 0;
    for (_, pid) in pids.iter().skip(1) {
        if tests::process::pid_alive(*pid) {
            signal("-KILL", *pid);
            killed += 1;
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    say(&format!(
        "network in {} stopped{}",
        dir.display(),
        if killed > 0 {
            format!(" ({killed} leftover processes killed)")
        } else {
            String::new()
        }
    ));
    Ok(())
}
