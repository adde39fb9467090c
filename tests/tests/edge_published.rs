//! Issue #3, "done when" 1: three C tor 0.4.9 authorities with reachability testing on
//! (`AssumeReachable 0`) and two C tor relays, plus our relay served by **two edge
//! processes behind one advertised ORPort** (a round-robin TCP balancer on 127.0.0.1). The
//! authorities vote our relay Running and Valid, and serve back our descriptor byte for
//! byte as uploaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tornet::ours::start_balancer;
use tornet::{NetConfig, Process, TorNet, free_port, http, our_binary, wait_for};

#[test]
fn authorities_vote_our_edge_fleet_running_and_serve_our_descriptor() {
    let start = Instant::now();
    let edge_bin = our_binary("edge").unwrap();
    let net = TorNet::start(&NetConfig {
        relays: 2,
        ..NetConfig::default()
    })
    .unwrap();
    let keys = net.scratch_dir("edge-keys").unwrap();
    let out = Command::new(&edge_bin)
        .args(["keygen", "--keys-dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_owned))
        .unwrap();

    let lb: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let edges: Vec<(SocketAddr, SocketAddr)> = (0..2)
        .map(|_| {
            (
                SocketAddr::from(([127, 0, 0, 1], free_port())),
                SocketAddr::from(([127, 0, 0, 1], free_port())),
            )
        })
        .collect();
    let desc_path = net.scratch_dir("edge0").unwrap().join("descriptor");
    let authorities: Vec<String> = net
        .authority_dir_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut procs: Vec<Process> = Vec::new();
    for (i, (orport, metrics)) in edges.iter().enumerate() {
        let dir = net.scratch_dir(&format!("edge{i}")).unwrap();
        let mut cmd = Command::new(&edge_bin);
        cmd.arg("run")
            .env_clear()
            .env("EDGE__KEYS_DIR", &keys)
            .env("EDGE__NICKNAME", "rustedge")
            .env("EDGE__ORPORT__LISTEN", orport.to_string())
            .env("EDGE__ORPORT__ADVERTISED_ADDRESS", lb.to_string())
            .env("EDGE__METRICS__LISTEN", metrics.to_string())
            .env("EDGE__DIRECTORY__AUTHORITIES", authorities.join(","))
            .env("EDGE__DIRECTORY__RETRY_SECS", "2")
            // One edge of the fleet publishes; the other only serves.
            .env(
                "EDGE__DIRECTORY__PUBLISH",
                if i == 0 { "true" } else { "false" },
            )
            .env("EDGE__LOG__FILTER", "info,edge=debug");
        if i == 0 {
            cmd.env("EDGE__DIRECTORY__DESCRIPTOR_PATH", &desc_path);
        }
        procs.push(Process::spawn(&format!("edge{i}"), cmd, &dir.join("edge.log")).unwrap());
    }
    let connections = start_balancer(lb, edges.iter().map(|e| e.0).collect()).unwrap();

    let show_logs = |procs: &Vec<Process>| {
        for p in procs {
            eprintln!(
                "===== {} =====\n{}",
                p.name(),
                tornet::tail(p.log_path(), 40)
            );
        }
    };
    let consensus = net.wait_for_consensus(Duration::from_secs(240), |c| {
        c.router(&fp)
            .is_some_and(|r| r.has("Running") && r.has("Valid"))
    });
    if consensus.is_err() {
        show_logs(&procs);
    }
    let consensus = consensus.unwrap();
    let ours = consensus.router(&fp).unwrap();
    eprintln!(
        "our relay {} listed with flags {:?} after {:?}; balancer saw {} connections",
        ours.nickname,
        ours.flags,
        start.elapsed(),
        connections.load(Ordering::SeqCst)
    );
    assert_eq!(ours.nickname, "rustedge");

    // Every authority serves our descriptor exactly as uploaded.
    let uploaded = std::fs::read(&desc_path).unwrap();
    assert!(uploaded.starts_with(b"router rustedge 127.0.0.1 "));
    for auth in &net.authorities {
        let addr = auth.dir_addr().unwrap();
        let served = wait_for(
            "our descriptor from an authority",
            Duration::from_secs(30),
            Duration::from_millis(500),
            || match http::get(
                addr,
                &format!("/tor/server/fp/{fp}"),
                Duration::from_secs(5),
            ) {
                Ok((200, body)) => Some(body),
                _ => None,
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&uploaded),
            "authority {} serves a different descriptor",
            auth.nickname
        );
    }
    // The consensus names the descriptor we uploaded.
    let digest = {
        use sha1::Digest as _;
        let text = String::from_utf8(uploaded.clone()).unwrap();
        let end = text.find("\nrouter-signature\n").unwrap() + "\nrouter-signature\n".len();
        hex::encode_upper(sha1::Sha1::digest(&text.as_bytes()[..end]))
    };
    assert_eq!(ours.descriptor_digest, digest);

    // Both edges of the fleet served authenticated relay links (the authorities'
    // reachability tests, spread by the balancer).
    for (i, (_, metrics)) in edges.iter().enumerate() {
        // A scrape of a loaded machine can be slow (a failed one reads as 0): ask again.
        let served = tornet::wait_for(
            &format!("edge{i} to have served an authenticated relay link"),
            Duration::from_secs(20),
            Duration::from_millis(500),
            || {
                (http::metric(
                    *metrics,
                    "edge_channels_opened_total{direction=\"inbound\",peer=\"relay\"}",
                ) >= 1.0)
                    .then_some(())
            },
        );
        if served.is_err() {
            show_logs(&procs);
        }
        served.unwrap();
    }
    for mut p in procs {
        assert!(
            p.terminate(Duration::from_secs(10)),
            "{} did not exit cleanly",
            p.name()
        );
    }
}
