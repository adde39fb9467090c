//! Issue #10, "done when" 3: channel liveness as C tor does it. A C tor guard → our
//! middle → C tor exit circuit carries a TCP echo stream that is left idle, and
//! 1. with C tor's own timings (KeepalivePeriod 300 s, our client idle timeout 180 s),
//!    an idle time longer than the old 180 s limit leaves it echoing;
//! 2. with the keepalive shortened on both sides (C tor's KeepalivePeriod and ours, 20 s)
//!    and our idle timeouts shortened (relays 40 s, clients 20 s), an idle time of several
//!    keepalive periods and idle timeouts: our edge sends PADDING keepalives (so its
//!    channels really were quiet), closes none of them, and the stream still echoes;
//! 3. client channels close on C tor's schedule: one that never had a circuit 1× to 1.5×
//!    the idle timeout after it opened, one whose circuits outlived that timeout as long
//!    after they ended (keepalives, and no close, while they lived).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proto::CircId;
use proto::cell::ChanCmd;
use proto::cell::msg::{ChanMsg, DestroyReason};
use tornet::ours::{ClusterSpec, RelayCluster, relay_keygen, start_cluster};
use tornet::traffic::socks_connect;
use tornet::{NetConfig, TorNet, http, wait_for};

/// KeepalivePeriod for step 2, on the C relays and the client and on our edge.
const KEEPALIVE: u64 = 20;
/// Our edge's idle timeouts for step 2 (channels with no circuits only).
const RELAY_IDLE: u64 = 40;
const CLIENT_IDLE: u64 = 20;

fn metric(port: u16, needle: &str) -> f64 {
    http::metric(SocketAddr::from(([127, 0, 0, 1], port)), needle)
}

/// Sends `msg` and expects it back.
fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).is_ok() && back == msg
}

/// Starts our middle relay cluster (one edge, one worker) with `env`, and a C tor client
/// whose circuits are C guard → it → C exit, and waits for an echo stream that works.
fn middle_network(
    relay_extra: &[&str],
    env: &[(&str, String)],
    echo: SocketAddr,
) -> (TorNet, RelayCluster, usize, TcpStream) {
    let mut net = TorNet::start(&NetConfig {
        relays: 2,
        exits: 1,
        relay_extra: relay_extra.iter().map(|s| (*s).to_owned()).collect(),
        client_extra: relay_extra.iter().map(|s| (*s).to_owned()).collect(),
        ..NetConfig::default()
    })
    .unwrap();
    let keys = net.scratch_dir("middle-keys").unwrap();
    let fp = relay_keygen(&keys).unwrap();
    let mut spec = ClusterSpec::new("rustmiddle", &keys, net.authority_dir_addrs());
    spec.workers = 1;
    spec.extra_env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let root = net.scratch_dir("clusters").unwrap();
    let cluster = start_cluster(&root, &spec).unwrap();
    let (guard, exit) = (
        net.relays[0].fingerprint.clone(),
        net.relays[2].fingerprint.clone(),
    );
    let listed = net.wait_for_consensus(Duration::from_secs(180), |c| {
        [&fp, &guard, &exit].iter().all(|f| {
            c.router(f)
                .is_some_and(|r| r.has("Running") && r.has("Valid"))
        })
    });
    if listed.is_err() {
        eprintln!("{}", cluster.logs(30));
    }
    listed.unwrap();
    let client = net
        .add_client(&[
            format!("EntryNodes ${guard}"),
            format!("MiddleNodes ${fp}"),
            format!("ExitNodes ${exit}"),
            "StrictNodes 1".into(),
        ])
        .unwrap();
    let socks = net.socks_addr(client).unwrap();
    let stream = wait_for(
        "an echo stream through our middle",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            let mut s = socks_connect(socks, echo, None).ok()?;
            echoes(&mut s, b"hello").then_some(s)
        },
    );
    if stream.is_err() {
        eprintln!("{}", cluster.logs(30));
    }
    (net, cluster, client, stream.unwrap())
}

#[test]
fn idle_circuits_keep_their_channels_with_c_tor_timings() {
    let echo = tornet::traffic::start_echo_server().unwrap();
    let (_net, cluster, _, mut s) = middle_network(&[], &[], echo);
    let edge = cluster.metrics_ports[0];
    let closed0 = metric(edge, "edge_channels_idle_closed_total");
    let cells0 = metric(edge, "edge_cells_received_total");
    // Longer than the old limit (180 s), shorter than the keepalive (300 s).
    std::thread::sleep(Duration::from_secs(200));
    eprintln!(
        "our edge received {} cells on all its channels in the 200 s",
        metric(edge, "edge_cells_received_total") - cells0
    );
    assert!(
        echoes(&mut s, b"after 200 s"),
        "no echo after 200 s idle:\n{}",
        cluster.logs(30)
    );
    assert_eq!(
        metric(edge, "edge_channels_idle_closed_total"),
        closed0,
        "a channel was closed as idle"
    );
}

#[test]
fn keepalives_keep_idle_channels_and_circuitless_ones_close_on_schedule() {
    let echo = tornet::traffic::start_echo_server().unwrap();
    let keepalive = format!("KeepalivePeriod {KEEPALIVE}");
    let (net, cluster, _, mut s) = middle_network(
        &[&keepalive],
        &[
            ("EDGE__ORPORT__KEEPALIVE_SECS", KEEPALIVE.to_string()),
            ("EDGE__ORPORT__IDLE_TIMEOUT_SECS", CLIENT_IDLE.to_string()),
            (
                "EDGE__ORPORT__RELAY_IDLE_TIMEOUT_SECS",
                RELAY_IDLE.to_string(),
            ),
        ],
        echo,
    );
    let edge = cluster.metrics_ports[0];
    let idle_closed = || metric(edge, "edge_channels_idle_closed_total{peer=\"relay\"}");
    let closed0 = idle_closed();
    let keepalives0 = metric(edge, "edge_keepalives_sent_total");

    // 2. Idle for 1.25× the longest idle timeout and a few keepalive periods more.
    let idle = Duration::from_secs(RELAY_IDLE * 5 / 4 + 3 * KEEPALIVE);
    std::thread::sleep(idle);
    let keepalives = metric(edge, "edge_keepalives_sent_total") - keepalives0;
    eprintln!("{keepalives} keepalives from our edge in {idle:?}");
    assert!(
        keepalives >= 2.0,
        "our edge sent {keepalives} keepalives: its channels were not idle"
    );
    assert_eq!(
        idle_closed(),
        closed0,
        "a channel with a circuit was closed as idle"
    );
    assert!(
        echoes(&mut s, b"after the idle time"),
        "no echo after {idle:?} idle:\n{}",
        cluster.logs(30)
    );

    // 3. C relays keep circuits of their own through any relay of the network (build-time
    //    measurement and the like), so whether the channels above ever lose their last
    //    circuit is up to them. Client channels we open ourselves have a known history:
    //    one that never carries a circuit, and one whose only circuit lives past the idle
    //    timeout and then ends.
    drop(s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let idle = Duration::from_secs(CLIENT_IDLE);
        let never = tornet::link::client_channel(cluster.or_port).await.unwrap();
        let mut with = tornet::link::client_channel(cluster.or_port).await.unwrap();
        let opened = Instant::now();
        let circ = CircId(0x8000_0001);
        with.send(circ, &ChanMsg::CreateFast { x: [7; 20] })
            .await
            .unwrap();
        let reply = with.read_cell(Duration::from_secs(10)).await.unwrap();
        assert_eq!(reply.cmd, ChanCmd::CreatedFast, "{reply:?}");
        let closed_after = |mut ch: proto_io::channel::Channel<tornet::link::ClientTls>,
                            until: Duration| async move {
            // Every cell until the close is a PADDING keepalive.
            let mut keepalives = 0;
            loop {
                match ch.read_cell(until).await {
                    Ok(c) if c.cmd == ChanCmd::Padding => keepalives += 1,
                    Ok(c) => panic!("unexpected {c:?}"),
                    Err(_) => return keepalives,
                }
            }
        };
        // The channel without circuits closes after 1× to 1.5× the idle timeout.
        let keepalives = closed_after(never, idle * 3).await;
        let took = opened.elapsed();
        eprintln!("a circuit-less client channel closed after {took:?} ({keepalives} keepalives)");
        assert!(
            took >= idle.saturating_sub(Duration::from_secs(1))
                && took <= idle * 3 / 2 + Duration::from_secs(5),
            "closed after {took:?}; idle timeout {idle:?}"
        );
        // The one with a circuit is still open, and still answers; then its circuit ends.
        with.send(CircId(0x8000_0002), &ChanMsg::CreateFast { x: [8; 20] })
            .await
            .unwrap();
        // Keepalives may come first: the channel was quiet for a keepalive period.
        let mut reply = with.read_cell(Duration::from_secs(10)).await.unwrap();
        let mut keepalives = 0;
        while reply.cmd == ChanCmd::Padding && keepalives < 10 {
            keepalives += 1;
            reply = with.read_cell(Duration::from_secs(10)).await.unwrap();
        }
        eprintln!("{keepalives} keepalives on the client channel with a circuit");
        assert_eq!(
            reply.cmd,
            ChanCmd::CreatedFast,
            "open past the idle timeout: {reply:?}"
        );
        for c in [circ, CircId(0x8000_0002)] {
            with.send(c, &ChanMsg::Destroy(DestroyReason::Finished))
                .await
                .unwrap();
        }
        let ended = Instant::now();
        closed_after(with, idle * 3).await;
        let took = ended.elapsed();
        eprintln!("the client channel closed {took:?} after its circuits ended");
        assert!(
            took >= idle.saturating_sub(Duration::from_secs(1))
                && took <= idle * 3 / 2 + Duration::from_secs(5),
            "closed {took:?} after its circuits; idle timeout {idle:?}"
        );
    });
    drop(net);
}
