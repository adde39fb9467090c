//! Baseline for data-path tests: a C tor client fetches through an all-C-tor network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tornet::traffic::{body, fetch_via_socks, start_http_server};
use tornet::{NetConfig, TorNet, wait_for};

#[test]
fn c_tor_client_fetches_through_c_tor_network() {
    let http = start_http_server().unwrap();
    let net = TorNet::start(&NetConfig {
        relays: 2,
        exits: 1,
        clients: 1,
        ..NetConfig::default()
    })
    .unwrap();
    let socks = std::net::SocketAddr::from(([127, 0, 0, 1], net.clients[0].socks_port.unwrap()));
    let start = Instant::now();
    let got = wait_for(
        "a fetch through the network",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || fetch_via_socks(socks, http, 100_000, Duration::from_secs(30)).ok(),
    )
    .unwrap();
    eprintln!("first fetch after {:?}", start.elapsed());
    assert_eq!(Sha256::digest(&got), Sha256::digest(body(100_000)));
}
