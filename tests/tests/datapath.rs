//! Issue #4 (in progress): an unmodified C tor client fetches files through our relay
//! (edge + circuit workers) as its exit, with matching SHA-256.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::traffic::{body, fetch_via_socks, start_http_server};
use tests::{NetConfig, Process, TorNet, free_port, our_binary, wait_for};

struct Cluster {
    procs: Vec<Process>,
}

fn keygen(dir: &std::path::Path) -> String {
    let out = Command::new(our_binary("edge").unwrap())
        .args(["keygen", "--keys-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_owned))
        .unwrap()
}

/// One relay identity served by `workers` circuit workers and one edge.
fn start_cluster(
    net: &TorNet,
    keys: &std::path::Path,
    name: &str,
    workers: usize,
    exit_policy: &str,
) -> Cluster {
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for w in 0..workers {
        let dir = net.scratch_dir(&format!("{name}-worker{w}")).unwrap();
        let grpc = free_port();
        urls.push(format!("http://127.0.0.1:{grpc}"));
        let mut cmd = Command::new(our_binary("circuit-worker").unwrap());
        cmd.arg("run")
            .env_clear()
            .env("CIRCUIT_WORKER__KEYS_DIR", keys)
            .env("CIRCUIT_WORKER__SHARDS", "2")
            .env("CIRCUIT_WORKER__GRPC__LISTEN", format!("127.0.0.1:{grpc}"))
            .env(
                "CIRCUIT_WORKER__METRICS__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("CIRCUIT_WORKER__EXIT_POLICY", exit_policy)
            .env("CIRCUIT_WORKER__EXIT_POLICY_REJECT_PRIVATE", "false")
            .env(
                "CIRCUIT_WORKER__DIR_BACKEND",
                net.authority_dir_addrs()[0].to_string(),
            )
            .env("CIRCUIT_WORKER__LOG__FILTER", "info,circuit_worker=debug");
        procs.push(
            Process::spawn(&format!("{name}-worker{w}"), cmd, &dir.join("worker.log")).unwrap(),
        );
    }
    let dir = net.scratch_dir(&format!("{name}-edge")).unwrap();
    let orport = free_port();
    let authorities: Vec<String> = net
        .authority_dir_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut cmd = Command::new(our_binary("edge").unwrap());
    cmd.arg("run")
        .env_clear()
        .env("EDGE__KEYS_DIR", keys)
        .env("EDGE__NICKNAME", name)
        .env("EDGE__WORKERS", urls.join(","))
        .env("EDGE__ORPORT__LISTEN", format!("127.0.0.1:{orport}"))
        .env(
            "EDGE__METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("EDGE__DIRECTORY__AUTHORITIES", authorities.join(","))
        .env("EDGE__DIRECTORY__RETRY_SECS", "2")
        .env("EDGE__DIRECTORY__EXIT_POLICY", exit_policy)
        .env("EDGE__DIRECTORY__EXIT_POLICY_REJECT_PRIVATE", "false")
        .env("EDGE__DIRECTORY__TUNNELLED_DIR_SERVER", "true")
        .env("EDGE__LOG__FILTER", "info,edge=debug");
    procs.push(Process::spawn(&format!("{name}-edge"), cmd, &dir.join("edge.log")).unwrap());
    Cluster { procs }
}

fn show_logs(c: &Cluster) {
    for p in &c.procs {
        eprintln!(
            "===== {} =====\n{}",
            p.name(),
            tests::tail(p.log_path(), 30)
        );
    }
}

fn fetch_checked(
    net: &TorNet,
    client: usize,
    http: SocketAddr,
    sizes: &[usize],
    what: &str,
    cluster: &Cluster,
) {
    let socks = net.socks_addr(client).unwrap();
    let start = Instant::now();
    let first = wait_for(
        &format!("a first fetch with our relay as {what}"),
        Duration::from_secs(120),
        Duration::from_secs(2),
        || fetch_via_socks(socks, http, 10_000, Duration::from_secs(20)).ok(),
    );
    if first.is_err() {
        show_logs(cluster);
    }
    assert_eq!(first.unwrap(), body(10_000));
    eprintln!("{what}: first fetch after {:?}", start.elapsed());
    for &n in sizes {
        let t = Instant::now();
        let got = fetch_via_socks(socks, http, n, Duration::from_secs(120));
        if got.is_err() {
            show_logs(cluster);
        }
        let got = got.unwrap();
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(body(n)),
            "{what}: {n} bytes"
        );
        eprintln!("{what}: {n} bytes in {:?}", t.elapsed());
    }
}

/// Our relay (one edge, two workers) as exit, as middle and as guard of C tor clients'
/// circuits, in one network of three C tor authorities, two C tor relays and a C tor exit.
/// As guard it also serves the client's directory fetches over BEGIN_DIR (relayed to an
/// authority's DirPort): C tor only picks guards that are directory caches (trap 23).
#[test]
fn c_tor_clients_fetch_through_our_relay_as_exit_middle_and_guard() {
    let http = start_http_server().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("keys");
    let fp = keygen(&keys);
    let mut net = TorNet::start(&NetConfig {
        relays: 2,
        exits: 1,
        ..NetConfig::default()
    })
    .unwrap();
    let cluster = start_cluster(&net, &keys, "rustrelay", 2, "accept *:*");
    let (c_guard, c_exit) = (
        net.relays[0].fingerprint.clone(),
        net.relays[2].fingerprint.clone(),
    );
    let listed = net.wait_for_consensus(Duration::from_secs(180), |c| {
        [&fp, &c_guard, &c_exit].iter().all(|f| {
            c.router(f)
                .is_some_and(|r| r.has("Running") && r.has("Valid"))
        })
    });
    if listed.is_err() {
        show_logs(&cluster);
    }
    let consensus = listed.unwrap();
    eprintln!(
        "our flags: {:?}",
        consensus.router(&fp).map(|r| r.flags.clone())
    );
    let sizes = [1, 498, 100_000, 5 << 20];
    let exit = net
        .add_client(&[format!("ExitNodes ${fp}"), "StrictNodes 1".into()])
        .unwrap();
    fetch_checked(&net, exit, http, &sizes, "exit", &cluster);
    let middle = net
        .add_client(&[
            format!("EntryNodes ${c_guard}"),
            format!("MiddleNodes ${fp}"),
            format!("ExitNodes ${c_exit}"),
            "StrictNodes 1".into(),
        ])
        .unwrap();
    fetch_checked(&net, middle, http, &sizes, "middle", &cluster);
    let guard = net
        .add_client(&[
            format!("EntryNodes ${fp}"),
            format!("ExitNodes ${c_exit}"),
            "StrictNodes 1".into(),
        ])
        .unwrap();
    fetch_checked(&net, guard, http, &sizes, "guard", &cluster);
}
