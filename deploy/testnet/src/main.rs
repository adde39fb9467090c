//! `testnet`: brings up a private Tor network on this machine, all on 127.0.0.1 — by
//! default three of our directory authorities and two of our relay clusters (edges +
//! circuit workers), optionally C tor relays beside them — waits for its first consensus,
//! verifies it by fetching a file through it with an unmodified client (C tor when `tor`
//! is on PATH, else arti embedded here: see [`verify`]), prints where everything is
//! ([`status`]), and tears it all down on Ctrl-C or `testnet down`.
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
use status::{Network, Node, Phases, display_name};
use tornet::ours::{ClusterSpec, RelayCluster, RelayIds, relay_keygen_ids, start_cluster};
use tornet::{NetConfig, TorNet, wait_for};
use verify::{ARTI_VERSION, Verifier};

mod status;
mod verify;

/// Where the network's files go unless `--dir` says otherwise.
const DEFAULT_DIR: &str = "tornet";

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
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The network's directory (logs, keys, state); emptied first.
    #[arg(long, default_value = DEFAULT_DIR)]
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
    /// The client that verifies: C tor when `tor` is on PATH, else the embedded arti.
    #[arg(long, value_enum, default_value = "auto")]
    verify_with: Verifier,
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
                    "no network in {} (start one with `cargo run -p testnet -- up`)",
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

/// The command that stops this network, in the form the start command was typed: `cargo
/// run [--release] -p testnet -- down` when started through cargo, else this binary's
/// path; `--dir` when it is not the default.
fn stop_command(dir_arg: &Path) -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("testnet"));
    let through_cargo = std::env::var_os("CARGO").is_some()
        && std::env::var("CARGO_PKG_NAME").is_ok_and(|n| n == "testnet");
    let mut cmd = if through_cargo {
        let release = exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "release");
        format!(
            "cargo run{} -p testnet -- down",
            if release { " --release" } else { "" }
        )
    } else {
        let argv0 = std::env::args()
            .next()
            .unwrap_or_else(|| exe.display().to_string());
        format!("{argv0} down")
    };
    if dir_arg != Path::new(DEFAULT_DIR) {
        let _ = write!(cmd, " --dir {}", dir_arg.display());
    }
    cmd
}

fn up(a: &UpArgs) -> Result<()> {
    let pid_file = a.dir.join("pids");
    let stop = stop_command(&a.dir);
    if let Ok(p) = std::fs::read_to_string(&pid_file)
        && let Some(pid) = p
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|x| x.parse::<u32>().ok())
        && tornet::process::pid_alive(pid)
    {
        bail!(
            "a network is already up in {} (pid {pid}); run `{stop}` first",
            a.dir.display()
        );
    }
    if a.authorities == 0 {
        bail!("a network needs at least one authority");
    }
    // "C tor 0.4.9.11" when `tor` is on PATH.
    let c_tor = tornet::ours::tor_version().map(|v| format!("C tor {v}"));
    let tor = c_tor.is_some();
    if a.c_relays + a.c_exits > 0 && !tor {
        bail!("C tor relays need Debian's `tor` (apt-get install -y tor)");
    }
    let verifier = a.verify_with.resolve(tor);
    if !a.no_verify && verifier == Verifier::Tor && !tor {
        bail!("--verify-with tor needs Debian's `tor` (apt-get install -y tor)");
    }
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir)?;
    let dir = std::fs::canonicalize(&a.dir)?;
    let mut phases = Phases::default();
    let t0 = Instant::now();
    let mut lap = Instant::now();
    say("building edge, circuit-worker and dirauth");
    tornet::build_our_binaries()?;
    phases.build = lap.elapsed();
    lap = Instant::now();
    say(&format!("starting {} authorities", a.authorities));
    let mut net = TorNet::start(&NetConfig {
        our_authorities: a.authorities,
        relays: a.c_relays,
        exits: a.c_exits,
        reachability_testing: true,
        voting_interval_secs: a.interval,
        root: Some(dir.clone()),
        nickname_prefixes: ("ours".into(), "c".into()),
        ..NetConfig::default()
    })?;
    let policy: Vec<String> = a
        .exit_policy
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let mut clusters: Vec<(RelayIds, RelayCluster)> = Vec::new();
    for i in 0..a.relays {
        let name = format!("oursrelay{i}");
        let keys = dir.join(format!("{name}-keys"));
        let ids = relay_keygen_ids(&keys)?;
        let mut spec = ClusterSpec::new(&name, &keys, net.authority_dir_addrs());
        spec.workers = a.workers.max(1);
        spec.exit_policy = policy.clone();
        spec.dir_backend = Some(net.authority_dir_addrs()[i % a.authorities]);
        clusters.push((ids, start_cluster(&dir, &spec)?));
    }
    write_pids(&pid_file, &net, &clusters)?;
    phases.start = lap.elapsed();
    lap = Instant::now();
    say(&format!(
        "{} processes up after {:.0?}; waiting for a consensus listing every relay as Running",
        net.pids().len() + clusters.iter().map(|c| c.1.procs.len()).sum::<usize>(),
        t0.elapsed()
    ));
    let mut fps: Vec<String> = net.ours.iter().map(|x| x.fingerprint.clone()).collect();
    fps.extend(net.relays.iter().map(|r| r.fingerprint.clone()));
    fps.extend(clusters.iter().map(|c| c.0.fingerprint.clone()));
    let all_running = |c: &tornet::Consensus| {
        fps.iter()
            .all(|f| c.router(f).is_some_and(|r| r.has("Running")))
    };
    let consensus = net
        .wait_for_consensus(Duration::from_secs(240), all_running)
        .map_err(|e| anyhow::anyhow!("{e}\nlogs:\n{}", net.log_tails(15)))?;
    phases.consensus = lap.elapsed();
    lap = Instant::now();
    say(&format!(
        "consensus with {} relays after {:.0?}",
        consensus.routers.len(),
        t0.elapsed()
    ));
    let c_tor_label = c_tor.as_deref().unwrap_or("C tor");
    let socks_port = tornet::free_port();
    let describe = |net: &TorNet, consensus: &tornet::Consensus| {
        let mut n = describe(
            net,
            &clusters,
            &policy,
            a.workers.max(1),
            consensus,
            c_tor_label,
        );
        n.dir = dir.clone();
        n.stop_command = stop.clone();
        n.suggested_socks_port = socks_port;
        n
    };
    let mut network = describe(&net, &consensus);
    std::fs::write(dir.join("arti.toml"), network.arti_toml())?;
    std::fs::write(dir.join("torrc"), network.torrc())?;
    if !a.no_verify {
        let http = tornet::traffic::start_http_server()?;
        let n = 1 << 20;
        let client = match verifier {
            Verifier::Tor => {
                say("verifying: a C tor client bootstraps and fetches 1 MB through the network");
                verify::with_c_tor(&mut net, http, n)?;
                write_pids(&pid_file, &net, &clusters)?;
                c_tor_label.to_owned()
            }
            Verifier::Arti | Verifier::Auto => {
                say(&format!(
                    "verifying: the embedded arti client ({ARTI_VERSION}) bootstraps from {}/arti.toml and fetches 1 MB",
                    dir.display()
                ));
                std::fs::create_dir_all(dir.join("arti"))?;
                verify::with_arti(&network.arti_toml(), http, n, &dir.join("arti/arti.log"))?;
                format!("embedded {ARTI_VERSION}")
            }
        };
        let took = lap.elapsed();
        say(&format!(
            "verified: 1 MB fetched with a matching SHA-256 by {client} after {:.0?}",
            t0.elapsed()
        ));
        phases.verified = Some((client, took));
    }
    // The flags as they are now (a consensus that lists every relay Running, as the one
    // above did), and the C tor client (if it verified) as SOCKS proxy.
    let latest = net
        .wait_for_consensus(Duration::from_secs(60), all_running)
        .unwrap_or(consensus);
    network = describe(&net, &latest);
    network.phases = phases;
    let status = network.render();
    std::fs::write(dir.join("status"), &status)?;
    std::fs::write(
        dir.join("torrc-dirauthorities"),
        net.dir_authority_lines().join("\n") + "\n",
    )?;
    print!("{status}");
    if a.exit_after_verify {
        say("--exit-after-verify: tearing down");
    } else {
        say(&format!(
            "running; Ctrl-C or `{}` stops it",
            network.stop_command
        ));
        wait_for_signal_or_death(&mut net, &mut clusters);
    }
    drop(clusters);
    drop(net);
    // Kept under another name: what ran, for anyone checking that it all stopped.
    let _ = std::fs::rename(&pid_file, dir.join("pids.stopped"));
    say(&format!("stopped; logs stay in {}", dir.display()));
    Ok(())
}

fn write_pids(path: &Path, net: &TorNet, clusters: &[(RelayIds, RelayCluster)]) -> Result<()> {
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

/// The status picture of the network, flags taken from `consensus`; `c_tor` names what
/// runs the C tor nodes. The caller fills in the directory, stop command and SOCKS port.
fn describe(
    net: &TorNet,
    clusters: &[(RelayIds, RelayCluster)],
    policy: &[String],
    workers: usize,
    consensus: &tornet::Consensus,
    c_tor: &str,
) -> Network {
    let flags = |fp: &str| consensus.router(fp).map(|r| r.flags.clone());
    let mut nodes = Vec::new();
    for a in &net.ours {
        let mut metrics = vec![("dirauth".to_owned(), a.metrics_port)];
        let mut logs = vec![a.data_dir.join("dirauth.log")];
        if let Some(c) = &a.cluster {
            metrics.extend(cluster_metrics(c));
            logs.extend(c.procs.iter().map(|p| p.log_path().to_owned()));
        }
        nodes.push(Node {
            name: display_name(&a.nickname),
            nickname: a.nickname.clone(),
            kind: "ours: dirauth + 1 edge + 1 worker".into(),
            role: "authority",
            fingerprint: a.fingerprint.clone(),
            ed25519: Some(a.ed25519.clone()),
            or_port: Some(a.or_port),
            dir_port: Some(a.dir_port),
            v3ident: Some(a.v3ident.clone()),
            metrics,
            logs,
            flags: flags(&a.fingerprint),
            ..Node::default()
        });
    }
    let exit = !policy.iter().all(|l| l.trim() == "reject *:*");
    for (ids, c) in clusters {
        nodes.push(Node {
            name: display_name(&c.name),
            nickname: c.name.clone(),
            kind: format!(
                "ours: {} edge{} + {workers} worker{}",
                c.edge_ports.len(),
                if c.edge_ports.len() == 1 { "" } else { "s" },
                if workers == 1 { "" } else { "s" }
            ),
            role: if exit { "exit" } else { "middle" },
            fingerprint: ids.fingerprint.clone(),
            ed25519: Some(ids.ed25519.clone()),
            or_port: Some(c.or_port),
            metrics: cluster_metrics(c),
            logs: c.procs.iter().map(|p| p.log_path().to_owned()).collect(),
            flags: flags(&ids.fingerprint),
            ..Node::default()
        });
    }
    for r in &net.relays {
        nodes.push(Node {
            name: display_name(&r.nickname),
            nickname: r.nickname.clone(),
            kind: c_tor.to_owned(),
            role: if r.role == tornet::Role::Exit {
                "exit"
            } else {
                "middle"
            },
            fingerprint: r.fingerprint.clone(),
            ed25519: r.ed25519(),
            or_port: Some(r.or_port),
            logs: vec![r.data_dir.join("notice.log")],
            flags: flags(&r.fingerprint),
            ..Node::default()
        });
    }
    for c in &net.clients {
        nodes.push(Node {
            name: display_name(&c.nickname),
            nickname: c.nickname.clone(),
            kind: c_tor.to_owned(),
            role: "client",
            socks_port: c.socks_port,
            logs: vec![c.data_dir.join("notice.log")],
            ..Node::default()
        });
    }
    Network {
        nodes,
        dir_authority_lines: net.dir_authority_lines().to_vec(),
        consensus_valid_after: consensus
            .text
            .lines()
            .find_map(|l| l.strip_prefix("valid-after "))
            .unwrap_or("(none yet)")
            .to_owned(),
        ..Network::default()
    }
}

/// `(process, port)` of a cluster's metrics endpoints: edges first, then workers, as
/// [`RelayCluster::metrics_ports`] lists them.
fn cluster_metrics(c: &RelayCluster) -> Vec<(String, u16)> {
    let edges = c.edge_ports.len();
    c.metrics_ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i < edges {
                (format!("edge{i}"), *p)
            } else {
                (format!("worker{}", i - edges), *p)
            }
        })
        .collect()
}

fn wait_for_signal_or_death(net: &mut TorNet, clusters: &mut [(RelayIds, RelayCluster)]) {
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
        && tornet::process::pid_alive(*launcher)
    {
        signal("-TERM", *launcher);
        let _ = wait_for(
            "the launcher to stop",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || (!tornet::process::pid_alive(*launcher)).then_some(()),
        );
    }
    let mut killed = 0;
    for (_, pid) in pids.iter().skip(1) {
        if tornet::process::pid_alive(*pid) {
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
