//! The harness itself: three C tor authorities with reachability testing on and two C tor
//! relays reach a consensus listing all five as Running and Valid, and dropping the network
//! leaves no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tornet::{NetConfig, TorNet};

#[test]
fn three_authorities_and_two_relays_vote_everyone_running() {
    let start = Instant::now();
    let net = TorNet::start(&NetConfig {
        relays: 2,
        ..NetConfig::default()
    })
    .unwrap();
    let pids: Vec<u32> = net
        .authorities
        .iter()
        .chain(&net.relays)
        .map(|n| n.process.pid().unwrap())
        .collect();
    let all: Vec<String> = net
        .authorities
        .iter()
        .chain(&net.relays)
        .map(|n| n.fingerprint.clone())
        .collect();
    let c = net
        .wait_for_consensus(Duration::from_secs(180), |c| {
            all.iter().all(|fp| {
                c.router(fp)
                    .is_some_and(|r| r.has("Running") && r.has("Valid"))
            })
        })
        .unwrap();
    eprintln!(
        "consensus with {} routers, all Running+Valid, after {:?}",
        c.routers.len(),
        start.elapsed()
    );
    // The ControlPort client works: every authority comes to know the relay's status
    // (each fetches the consensus on its own schedule, so wait, bounded).
    for auth in &net.authorities {
        let mut ctl = auth.control().unwrap();
        let key = format!("ns/id/{}", net.relays[0].fingerprint);
        let ns = tornet::wait_for(
            &key,
            Duration::from_secs(60),
            Duration::from_millis(500),
            // Until an authority's consensus lists the relay, tor answers with an empty
            // value rather than an error; that is "not yet", not an answer.
            || ctl.getinfo(&key).ok().filter(|ns| !ns.trim().is_empty()),
        )
        .unwrap();
        assert!(ns.starts_with("r relay0 "), "{ns}");
    }
    drop(net);
    for pid in pids {
        assert!(
            !tornet::process::pid_alive(pid),
            "pid {pid} survived the network"
        );
    }
}
